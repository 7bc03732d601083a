"""Reading SecurityGroupPolicies from the real API server, with the VPC resource controller's
real CRD (namespaced): policies of every namespace, named "namespace/name"; the CRD not
installed, or being deleted; a read that is refused is an error, never "none"."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from devtools import vpc_resources
from devtools.k8s.controlplane import ControlPlane
from sgmesh.api import models
from sgmesh.engine import cluster_members
from sgmesh.engine.topology import MemberKind, ProblemKind
from sgmesh.kube import sources

pytestmark = pytest.mark.kube

SG_A = "sg-0123456789abcdef0"
SG_B = "sg-0fedcba9876543210"
POLICIES = cluster_members.SECURITY_GROUP_POLICY
FINALIZER = "sgmesh.io/test-holds-it"


def api_for(kubeconfig: Path) -> kubernetes.client.ApiClient:
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(
        config_file=str(kubeconfig)
    )
    return client


def create(cluster: ControlPlane, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("create", "-f", "-", "-o", "json", stdin=json.dumps(manifest))


def created(cluster: ControlPlane, manifest: dict[str, Any]) -> dict[str, Any]:
    result = create(cluster, manifest)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def namespace(cluster: ControlPlane, base: str) -> str:
    """A second namespace of the test's (`kube_namespace` is the first)."""
    name = f"{base[:40]}-other"
    cluster.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    return name


@pytest.fixture
def policies(kube_cluster: ControlPlane, securitygrouppolicy_crd: str) -> Iterator[list[str]]:
    """Namespaces whose SecurityGroupPolicies go after the test (a mesh of another test that
    lists "*" would take them as members)."""
    made: list[str] = []
    yield made
    for each in made:
        kube_cluster.kubectl(
            "delete", vpc_resources.RESOURCE, "--all", "-n", each, "--ignore-not-found"
        )


def test_the_crd_is_served_namespaced_at_the_version_sgmesh_reads(
    kube_cluster: ControlPlane, securitygrouppolicy_crd: str
) -> None:
    got = kube_cluster.kubectl("get", "crd", securitygrouppolicy_crd, "-o", "json")
    assert got.returncode == 0, got.stderr
    spec = json.loads(got.stdout)["spec"]

    assert spec["scope"] == "Namespaced"
    assert [v["name"] for v in spec["versions"] if v["served"]] == [POLICIES.version]
    assert f"{spec['names']['plural']}.{spec['group']}" == POLICIES.crd_name


def test_the_real_schema_accepts_the_tests_policies_and_refuses_an_empty_group_list(
    kube_cluster: ControlPlane, kube_namespace: str, policies: list[str]
) -> None:
    policies.append(kube_namespace)
    manifest = vpc_resources.security_group_policy(kube_namespace, "db-clients", [SG_A])

    stored = created(kube_cluster, manifest)

    assert stored["spec"]["securityGroups"] == {"groupIds": [SG_A]}
    assert stored["metadata"]["namespace"] == kube_namespace
    empty = vpc_resources.security_group_policy(kube_namespace, "empty", [])
    refused = create(kube_cluster, empty)
    assert refused.returncode != 0
    assert "spec.securityGroups.groupIds" in refused.stderr


def test_policies_of_every_namespace_are_read_by_namespace_and_name(
    kube_cluster: ControlPlane, kube_namespace: str, policies: list[str]
) -> None:
    other = namespace(kube_cluster, kube_namespace)
    policies.extend([kube_namespace, other])
    created(kube_cluster, vpc_resources.security_group_policy(kube_namespace, "dns", [SG_A]))
    created(kube_cluster, vpc_resources.security_group_policy(other, "db", [SG_B]))
    created(kube_cluster, vpc_resources.security_group_policy(other, "cache", [SG_A, SG_B]))
    spec = models.NodeGroupMeshSpec.model_validate(
        {
            "podSecurityGroups": {
                "policies": [f"{kube_namespace}/dns", f"{kube_namespace}/missing", f"{other}/*"]
            },
            "cniPolicy": {"attach": False},
        }
    )

    objects = sources.read(spec, api_for(kube_cluster.kubeconfig))

    assert objects.security_group_policies is not None
    assert {f"{kube_namespace}/dns", f"{other}/db", f"{other}/cache"} <= set(
        objects.security_group_policies.objects
    )
    found = cluster_members.resolve(spec, objects)
    assert {(m.kind, m.name, m.security_group_ids) for m in found.members} == {
        (MemberKind.SECURITY_GROUP_POLICY, f"{kube_namespace}/dns", (SG_A,)),
        (MemberKind.SECURITY_GROUP_POLICY, f"{other}/cache", (SG_A, SG_B)),
        (MemberKind.SECURITY_GROUP_POLICY, f"{other}/db", (SG_B,)),
    }
    assert [(p.kind, p.subject) for p in found.problems] == [
        (ProblemKind.SECURITY_GROUP_POLICY_NOT_FOUND, f"{kube_namespace}/missing")
    ]


def test_the_crd_not_installed_or_being_deleted_is_not_installed(
    kube_cluster: ControlPlane,
    kube_namespace: str,
    securitygrouppolicy_crd: str,
    reinstall_crd: Callable[[str], None],
) -> None:
    api = api_for(kube_cluster.kubeconfig)
    held = vpc_resources.security_group_policy(kube_namespace, "held", [SG_A])
    held["metadata"]["finalizers"] = [FINALIZER]
    created(kube_cluster, held)
    try:
        deleting = kube_cluster.kubectl("delete", "crd", securitygrouppolicy_crd, "--wait=false")
        assert deleting.returncode == 0, deleting.stderr

        going = sources.list_objects(POLICIES, api)

        assert going == cluster_members.Listing(installed=False, why="its CRD is being deleted")
    finally:
        kube_cluster.kubectl(
            "patch",
            vpc_resources.RESOURCE,
            "held",
            "-n",
            kube_namespace,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
        )
    gone = kube_cluster.kubectl(
        "wait", "--for=delete", f"crd/{securitygrouppolicy_crd}", "--timeout=60s"
    )
    assert gone.returncode == 0, gone.stderr

    assert sources.list_objects(POLICIES, api) == cluster_members.Listing(installed=False)
    spec = models.NodeGroupMeshSpec.model_validate(
        {"podSecurityGroups": {"policies": ["*"]}, "cniPolicy": {"attach": False}}
    )
    [problem] = cluster_members.resolve(spec, sources.read(spec, api)).problems
    assert problem.kind is ProblemKind.SOURCE_NOT_INSTALLED
    assert securitygrouppolicy_crd in problem.message

    reinstall_crd(securitygrouppolicy_crd)
    assert sources.list_objects(POLICIES, api).installed


def test_a_refused_read_is_an_error_naming_it_never_none(
    kube_cluster: ControlPlane, kube_namespace: str, securitygrouppolicy_crd: str
) -> None:
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "nobody", "namespace": kube_namespace},
    }
    applied = kube_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(account))
    assert applied.returncode == 0, applied.stderr
    api = api_for(kube_cluster.kubeconfig_for(kube_namespace, "nobody"))

    with pytest.raises(sources.ClusterReadError, match=r"securitygrouppolicies.*403"):
        sources.list_objects(POLICIES, api)

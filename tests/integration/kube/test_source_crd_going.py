"""A source's CRD that is being deleted, against the real API server: it still serves the kind
(its objects go one by one, once their finalizers let them), yet it counts as not installed;
and a failure to read the CRD is an error, never "installed" or "not installed"."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from devtools import karpenter, vpc_cni
from devtools.k8s.controlplane import ControlPlane
from sgmesh.api import models
from sgmesh.engine import cluster_members
from sgmesh.engine.topology import MemberKind, ProblemKind
from sgmesh.kube import sources

pytestmark = pytest.mark.kube

SG = "sg-0123456789abcdef0"
SUBNET = "subnet-0123456789abcdef0"
# Stands for Karpenter's finalizer on its classes: the object, and so its CRD, stay until it goes.
FINALIZER = "sgmesh.io/test-holds-it"


def api_for(kubeconfig: Path) -> kubernetes.client.ApiClient:
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(
        config_file=str(kubeconfig)
    )
    return client


def apply(cluster: ControlPlane, manifest: dict[str, Any]) -> None:
    applied = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    assert applied.returncode == 0, applied.stderr


@pytest.fixture
def crd_going(
    kube_cluster: ControlPlane, reinstall_crd: Callable[[str], None]
) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """Delete a source's CRD while one of its objects, carrying a finalizer, holds it
    terminating; afterwards the finalizer is released, the CRD goes and is installed again."""
    held: list[tuple[str, str]] = []

    def going(crd: str, manifest: dict[str, Any]) -> None:
        manifest["metadata"]["finalizers"] = [FINALIZER]
        apply(kube_cluster, manifest)
        held.append((crd, manifest["metadata"]["name"]))
        deleted = kube_cluster.kubectl("delete", "crd", crd, "--wait=false")
        assert deleted.returncode == 0, deleted.stderr

    yield going
    for crd, name in held:
        kube_cluster.kubectl(
            "patch", crd, name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
        )
        gone = kube_cluster.kubectl("wait", "--for=delete", f"crd/{crd}", "--timeout=60s")
        assert gone.returncode == 0, gone.stderr
        reinstall_crd(crd)


def test_an_eni_config_crd_being_deleted_counts_as_not_installed(
    kube_cluster: ControlPlane,
    crd_going: Callable[[str, dict[str, Any]], None],
) -> None:
    api = api_for(kube_cluster.kubeconfig)
    crd_going(vpc_cni.RESOURCE, vpc_cni.eniconfig("held-az1", [SG], SUBNET))

    listing = sources.list_objects(cluster_members.ENI_CONFIG, api)

    assert listing == cluster_members.Listing(installed=False, why="its CRD is being deleted")
    spec = models.NodeGroupMeshSpec.model_validate(
        {"customNetworking": {"eniConfigs": ["*"]}, "cniPolicy": {"attach": False}}
    )
    [problem] = cluster_members.resolve(spec, sources.read(spec, api)).problems
    assert problem.kind is ProblemKind.SOURCE_NOT_INSTALLED
    assert "its CRD is being deleted" in problem.message


def test_an_ec2nodeclass_crd_held_by_a_class_finalizer_counts_as_not_installed(
    kube_cluster: ControlPlane,
    crd_going: Callable[[str, dict[str, Any]], None],
) -> None:
    api = api_for(kube_cluster.kubeconfig)
    crd_going(karpenter.RESOURCE, karpenter.ec2nodeclass("held-default", role="Nodes"))

    listing = sources.list_objects(cluster_members.NODE_CLASS, api)

    assert listing == cluster_members.Listing(installed=False, why="its CRD is being deleted")


def test_a_crd_that_is_gone_counts_as_not_installed(kube_cluster: ControlPlane) -> None:
    never = cluster_members.SourceKind(
        MemberKind.ENI_CONFIG,
        "eniconfigs.example.com",
        "v1",
        "eniconfigs",
        "spec.customNetworking.eniConfigs",
        ProblemKind.ENI_CONFIG_NOT_FOUND,
    )

    assert sources.crd_going(never, api_for(kube_cluster.kubeconfig)) == "its CRD was deleted"


def test_a_crd_that_is_installed_and_staying_counts_as_installed(
    kube_cluster: ControlPlane, eniconfig_crd: str
) -> None:
    assert sources.crd_going(cluster_members.ENI_CONFIG, api_for(kube_cluster.kubeconfig)) == ""


def test_a_crd_that_cannot_be_read_is_an_error_never_installed(
    kube_cluster: ControlPlane, kube_namespace: str, eniconfig_crd: str
) -> None:
    """May list ENIConfigs, may not list CRDs: the list alone says nothing of the CRD."""
    account = "reads-eniconfigs-only"
    role = f"{kube_namespace}-eniconfigs"
    apply(
        kube_cluster,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": [
                {
                    "apiGroups": ["crd.k8s.amazonaws.com"],
                    "resources": ["eniconfigs"],
                    "verbs": ["list"],
                }
            ],
        },
    )
    apply(
        kube_cluster,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": kube_namespace}],
        },
    )
    api = api_for(kube_cluster.kubeconfig_for(kube_namespace, account))

    with pytest.raises(sources.ClusterReadError, match=r"CRD eniconfigs.*403"):
        sources.list_objects(cluster_members.ENI_CONFIG, api)

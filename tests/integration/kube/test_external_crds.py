"""Karpenter's EC2NodeClass and the VPC CNI's ENIConfig CRDs, as their projects publish them,
served by the API server: the objects the tests build (devtools/karpenter.py,
devtools/vpc_cni.py) are ones those schemas accept, and Karpenter's status is written the
way Karpenter writes it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools import karpenter, vpc_cni
from devtools.k8s.controlplane import ControlPlane

pytestmark = pytest.mark.kube

SECURITY_GROUPS = {"sg-0a1b2c3d4e5f60001": "eks-karpenter-node", "sg-0a1b2c3d4e5f60002": "pods"}


@pytest.fixture(autouse=True)
def _leave_no_object(kube_cluster: ControlPlane) -> Iterator[None]:
    """Every EC2NodeClass and ENIConfig these tests make goes after each test: the cluster is
    the session's, and a mesh of another test that lists "*" would take them as members."""
    yield
    for resource in (karpenter.RESOURCE, vpc_cni.RESOURCE):
        kube_cluster.kubectl("delete", resource, "--all", "--ignore-not-found", "--wait=false")


def _create(cluster: ControlPlane, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("create", "-f", "-", "-o", "json", stdin=json.dumps(manifest))


def _created(cluster: ControlPlane, manifest: dict[str, Any]) -> dict[str, Any]:
    result = _create(cluster, manifest)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _get(cluster: ControlPlane, resource: str, name: str) -> dict[str, Any]:
    result = cluster.kubectl("get", resource, name, "-o", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_both_crds_are_served_cluster_scoped_at_the_versions_sgmesh_reads(
    kube_cluster: ControlPlane, ec2nodeclass_crd: str, eniconfig_crd: str
) -> None:
    served = {
        crd: _get(kube_cluster, "crd", crd)["spec"] for crd in (ec2nodeclass_crd, eniconfig_crd)
    }

    for crd, spec in served.items():
        assert spec["scope"] == "Cluster", crd
    assert [v["name"] for v in served[ec2nodeclass_crd]["versions"] if v["served"]] == ["v1"]
    assert [v["name"] for v in served[eniconfig_crd]["versions"] if v["served"]] == ["v1alpha1"]
    assert kube_cluster.kubectl("get", karpenter.RESOURCE).returncode == 0
    assert kube_cluster.kubectl("get", vpc_cni.RESOURCE).returncode == 0


@pytest.mark.parametrize(
    ("name", "identity"),
    [("with-role", {"role": "KarpenterNodeRole"}), ("with-profile", {"instance_profile": "nodes"})],
)
def test_ec2nodeclass_with_a_role_or_an_instance_profile_is_accepted(
    kube_cluster: ControlPlane, ec2nodeclass_crd: str, name: str, identity: dict[str, str]
) -> None:
    manifest = karpenter.ec2nodeclass(name, **identity)

    stored = _created(kube_cluster, manifest)

    # The server adds its defaults (metadataOptions) and keeps what was given.
    assert stored["spec"].items() >= manifest["spec"].items()


def test_ec2nodeclass_selecting_by_ids_is_accepted(
    kube_cluster: ControlPlane, ec2nodeclass_crd: str
) -> None:
    manifest = karpenter.ec2nodeclass(
        "by-ids",
        role="KarpenterNodeRole",
        security_group_ids=list(SECURITY_GROUPS),
        subnet_ids=["subnet-0a1b2c3d4e5f60001"],
    )

    stored = _created(kube_cluster, manifest)

    assert stored["spec"]["securityGroupSelectorTerms"] == [{"id": id_} for id_ in SECURITY_GROUPS]


def _without(field: str) -> Callable[[dict[str, Any]], None]:
    return lambda spec: spec.pop(field)


def _set(field: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda spec: spec.update({field: value})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            _set("instanceProfile", "nodes"),
            "must specify exactly one of ['role', 'instanceProfile']",
            id="role-and-instance-profile",
        ),
        pytest.param(
            _without("role"),
            "must specify exactly one of ['role', 'instanceProfile']",
            id="neither-role-nor-instance-profile",
        ),
        pytest.param(
            _without("subnetSelectorTerms"), "spec.subnetSelectorTerms: Required", id="no-subnets"
        ),
        pytest.param(
            _set("securityGroupSelectorTerms", []),
            "securityGroupSelectorTerms cannot be empty",
            id="no-security-group-terms",
        ),
        pytest.param(
            _set("securityGroupSelectorTerms", [{"id": "not-an-sg"}]),
            "should match 'sg-[0-9a-z]+'",
            id="malformed-security-group-id",
        ),
        pytest.param(
            _set("amiSelectorTerms", [{"tags": {"team": "data"}}]),
            "must specify amiFamily if amiSelectorTerms does not contain an alias",
            id="ami-by-tags-without-family",
        ),
    ],
)
def test_ec2nodeclass_breaking_karpenters_schema_is_refused(
    kube_cluster: ControlPlane,
    ec2nodeclass_crd: str,
    change: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    manifest = karpenter.ec2nodeclass("refused", role="KarpenterNodeRole")
    change(manifest["spec"])

    refused = _create(kube_cluster, manifest)

    assert refused.returncode != 0
    assert message in refused.stderr


def test_ec2nodeclass_status_is_written_through_its_subresource(
    kube_cluster: ControlPlane, ec2nodeclass_crd: str
) -> None:
    created = _created(kube_cluster, karpenter.ec2nodeclass("resolved", role="KarpenterNodeRole"))
    status = karpenter.ec2nodeclass_status(
        SECURITY_GROUPS,
        instance_profile="eks_prod_resolved_1234567890",
        subnets={"subnet-0a1b2c3d4e5f60001": "us-east-1a"},
    )

    written = karpenter.write_ec2nodeclass_status(kube_cluster.kubectl, "resolved", status)

    assert written["status"] == status
    assert written["status"]["securityGroups"] == [
        {"id": "sg-0a1b2c3d4e5f60001", "name": "eks-karpenter-node"},
        {"id": "sg-0a1b2c3d4e5f60002", "name": "pods"},
    ]
    # A status write is not a spec change: nothing watching the spec sees a new generation.
    assert written["metadata"]["generation"] == created["metadata"]["generation"] == 1


def test_ec2nodeclass_status_sent_with_the_object_is_dropped(
    kube_cluster: ControlPlane, ec2nodeclass_crd: str
) -> None:
    manifest = karpenter.ec2nodeclass("status-dropped", instance_profile="nodes")
    manifest["status"] = karpenter.ec2nodeclass_status(SECURITY_GROUPS, "nodes")

    stored = _created(kube_cluster, manifest)

    assert "status" not in stored


def test_ec2nodeclass_status_security_group_needs_an_id(
    kube_cluster: ControlPlane, ec2nodeclass_crd: str
) -> None:
    _created(kube_cluster, karpenter.ec2nodeclass("sg-without-id", role="KarpenterNodeRole"))

    refused = kube_cluster.kubectl(
        "patch",
        karpenter.RESOURCE,
        "sg-without-id",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"securityGroups": [{"name": "nameless"}]}}),
    )

    assert refused.returncode != 0
    assert "status.securityGroups[0].id: Required value" in refused.stderr


def test_eniconfig_with_security_groups_and_a_subnet_is_accepted(
    kube_cluster: ControlPlane, eniconfig_crd: str
) -> None:
    manifest = vpc_cni.eniconfig("us-east-1a", list(SECURITY_GROUPS), "subnet-0a1b2c3d4e5f60003")

    stored = _created(kube_cluster, manifest)

    assert stored["spec"] == {
        "securityGroups": list(SECURITY_GROUPS),
        "subnet": "subnet-0a1b2c3d4e5f60003",
    }


def test_eniconfig_without_a_subnet_is_refused(
    kube_cluster: ControlPlane, eniconfig_crd: str
) -> None:
    manifest = vpc_cni.eniconfig("no-subnet", list(SECURITY_GROUPS), "subnet-unused")
    del manifest["spec"]["subnet"]

    refused = _create(kube_cluster, manifest)

    assert refused.returncode != 0
    assert "spec.subnet: Required value" in refused.stderr

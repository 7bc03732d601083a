"""The API server itself enforces the NodeGroupMesh schema: a bad manifest never gets stored."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from devtools.k8s.controlplane import ControlPlane
from tests.integration.kube.meshes import create, get_mesh, mesh_manifest

pytestmark = pytest.mark.kube

FULL_SPEC: dict[str, Any] = {
    "region": "us-east-1",
    "autoScalingGroups": {
        "names": ["eks-a", "eks-b"],
        "selectors": [{"tags": {"team": "data"}, "namePrefix": "eks-"}],
    },
    "traffic": [
        {"protocol": "all"},
        {"protocol": "udp", "fromPort": 53, "toPort": 53},
        {"protocol": "tcp", "fromPort": 0, "toPort": 65535},
        {"protocol": "icmp"},
    ],
    "extraSecurityGroupIds": [],
    "cniPolicy": {
        "attach": True,
        "policyArn": "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
        "retainOnRemoval": True,
    },
    "mode": "Enforce",
    "deletionPolicy": "Delete",
    "resyncSeconds": 60,
}


def _spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(FULL_SPEC)
    spec.update(changes)
    return spec


def test_crd_is_established(kube_cluster: ControlPlane, nodegroupmesh_crd: str) -> None:
    result = kube_cluster.kubectl("get", "ngm")
    assert result.returncode == 0, result.stderr


def test_valid_mesh_is_accepted(kube_cluster: ControlPlane, nodegroupmesh_crd: str) -> None:
    result = create(kube_cluster, mesh_manifest("valid-full", FULL_SPEC))
    assert result.returncode == 0, result.stderr
    stored = get_mesh(kube_cluster, "valid-full")
    assert stored["spec"]["autoScalingGroups"] == FULL_SPEC["autoScalingGroups"]
    assert stored["spec"]["traffic"] == FULL_SPEC["traffic"]


def test_selectors_alone_are_enough(kube_cluster: ControlPlane, nodegroupmesh_crd: str) -> None:
    spec = {"autoScalingGroups": {"selectors": [{"tags": {"team": "data"}}]}}
    result = create(kube_cluster, mesh_manifest("valid-selectors", spec))
    assert result.returncode == 0, result.stderr


def test_every_new_member_source_alone_is_enough(
    kube_cluster: ControlPlane, nodegroupmesh_crd: str
) -> None:
    sources: dict[str, dict[str, Any]] = {
        "sg-ids": {"securityGroups": {"ids": ["sg-0123456789abcdef0"]}},
        "sg-selector": {"securityGroups": {"selectors": [{"tags": {"aws:eks:cluster-name": "*"}}]}},
        "karpenter": {"karpenter": {"nodeClasses": ["*"]}},
        "eniconfigs": {"customNetworking": {"eniConfigs": ["us-east-1a", "us-east-1b"]}},
        "extra-ids": {"extraSecurityGroupIds": ["sg-0123456789abcdef0"]},
    }
    for name, spec in sources.items():
        result = create(kube_cluster, mesh_manifest(f"valid-source-{name}", spec))
        assert result.returncode == 0, result.stderr
        assert get_mesh(kube_cluster, f"valid-source-{name}")["spec"].items() >= spec.items()


def test_traffic_defaults_to_all_protocols(
    kube_cluster: ControlPlane, nodegroupmesh_crd: str
) -> None:
    result = create(
        kube_cluster, mesh_manifest("valid-minimal", {"autoScalingGroups": {"names": ["eks-a"]}})
    )
    assert result.returncode == 0, result.stderr
    assert get_mesh(kube_cluster, "valid-minimal")["spec"]["traffic"] == [{"protocol": "all"}]


INVALID_SPECS = [
    pytest.param(
        _spec(traffic=[{"protocol": "sctp"}]), "spec.traffic[0].protocol", id="bad-protocol"
    ),
    pytest.param(
        _spec(traffic=[{"protocol": "tcp", "fromPort": 80, "toPort": 70000}]),
        "spec.traffic[0].toPort",
        id="port-above-65535",
    ),
    pytest.param(
        _spec(traffic=[{"protocol": "udp", "fromPort": -1, "toPort": 53}]),
        "spec.traffic[0].fromPort",
        id="negative-port",
    ),
    pytest.param(
        _spec(traffic=[{"protocol": "all"}, {"protocol": "tcp", "fromPort": 443, "toPort": 80}]),
        "spec.traffic[1].fromPort",
        id="from-port-above-to-port",
    ),
    pytest.param(
        _spec(traffic=[{"protocol": "tcp"}]), "spec.traffic[0].fromPort", id="tcp-without-ports"
    ),
    pytest.param(
        _spec(traffic=[{"protocol": "udp", "fromPort": 53}]),
        "spec.traffic[0].fromPort",
        id="udp-without-to-port",
    ),
    pytest.param(
        _spec(traffic=[{"protocol": "all", "fromPort": 1, "toPort": 2}]),
        "spec.traffic[0].protocol",
        id="ports-on-all-protocols",
    ),
    pytest.param(_spec(autoScalingGroups={}), "spec.autoScalingGroups", id="no-names-no-selectors"),
    pytest.param(
        _spec(autoScalingGroups={"names": [], "selectors": []}),
        "spec.autoScalingGroups",
        id="empty-names-and-selectors",
    ),
    pytest.param(
        {"traffic": [{"protocol": "all"}], "extraSecurityGroupIds": []},
        "a mesh needs at least one member source",
        id="no-member-source",
    ),
    pytest.param(_spec(securityGroups={}), "spec.securityGroups", id="security-groups-empty"),
    pytest.param(
        _spec(securityGroups={"selectors": [{"tags": {}}]}),
        "spec.securityGroups.selectors[0].tags",
        id="security-group-selector-without-tags",
    ),
    pytest.param(
        _spec(karpenter={"nodeClasses": ["*", "gpu"]}),
        "spec.karpenter.nodeClasses",
        id="every-node-class-and-a-name",
    ),
    pytest.param(
        _spec(customNetworking={"eniConfigs": []}),
        "spec.customNetworking.eniConfigs",
        id="no-eni-config-names",
    ),
    pytest.param(_spec(mode="Audit"), "spec.mode", id="bad-mode"),
    pytest.param(_spec(deletionPolicy="Orphan"), "spec.deletionPolicy", id="bad-deletion-policy"),
    pytest.param(_spec(resyncSeconds=5), "spec.resyncSeconds", id="resync-below-10"),
    # The policy ARN becomes an IAM tag value: IAM refuses a comma, and more than 256 characters.
    pytest.param(
        _spec(cniPolicy={"policyArn": "arn:aws:iam::123456789012:policy/cni,nodes"}),
        "spec.cniPolicy.policyArn",
        id="policy-arn-with-a-comma",
    ),
    pytest.param(
        _spec(cniPolicy={"policyArn": "arn:aws:iam::123456789012:policy/" + "p" * 224}),
        "spec.cniPolicy.policyArn",
        id="policy-arn-longer-than-a-tag-value",
    ),
]


@pytest.mark.parametrize("region", ["eu-isoe-west-1", "us-isof-south-1", "eusc-de-east-1"])
def test_regions_of_every_partition_are_accepted(
    kube_cluster: ControlPlane, nodegroupmesh_crd: str, region: str
) -> None:
    name = f"region-{region}"
    result = create(kube_cluster, mesh_manifest(name, _spec(region=region)))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("spec", "field"), INVALID_SPECS)
def test_invalid_mesh_is_refused_naming_the_field(
    kube_cluster: ControlPlane,
    nodegroupmesh_crd: str,
    request: pytest.FixtureRequest,
    spec: dict[str, Any],
    field: str,
) -> None:
    name = f"invalid-{request.node.callspec.id}"
    result = create(kube_cluster, mesh_manifest(name, spec))
    assert result.returncode != 0, f"the API server accepted {spec}"
    assert f'The NodeGroupMesh "{name}" is invalid: ' in result.stderr
    assert field in result.stderr, result.stderr
    assert kube_cluster.kubectl("get", "ngm", name).returncode != 0, "refused but stored"

"""The spec's validation: every bad input is refused with the field and the value named."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import botocore
import pytest

from sgmesh.api import models


def mesh(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sgmesh.io/v1alpha1",
        "kind": "NodeGroupMesh",
        "metadata": {"name": "airflow"},
        "spec": {"autoScalingGroups": {"names": ["eks-a"]}, **spec},
    }


def test_minimal_mesh_gets_the_documented_defaults() -> None:
    spec = models.NodeGroupMesh.parse(mesh()).spec

    assert spec.traffic == [models.Traffic(protocol=models.Protocol.ALL)]
    assert spec.cni_policy == models.CniPolicy(attach=True, retain_on_removal=True)
    assert spec.mode is models.Mode.ENFORCE
    assert spec.deletion_policy is models.DeletionPolicy.DELETE
    assert spec.resync_seconds is None  # the operator's --default-resync-seconds applies
    assert models.cni_policy_arn(spec, "us-east-1") == (
        "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"
    )


def _regions_of_every_partition() -> list[tuple[str, str]]:
    """(region, partition) for every region botocore knows, from its partitions data."""
    document = json.loads((Path(botocore.__file__).parent / "data" / "partitions.json").read_text())
    return [
        (region, partition["id"])
        for partition in document["partitions"]
        for region in partition["regions"]
        if re.fullmatch(partition["regionRegex"], region)  # not the "<partition>-global" entries
    ]


REGIONS = _regions_of_every_partition()


def test_every_partition_botocore_knows_is_covered() -> None:
    partitions = {partition for _, partition in REGIONS}
    assert {"aws", "aws-cn", "aws-us-gov", "aws-iso-e", "aws-iso-f", "aws-eusc"} <= partitions


@pytest.mark.parametrize(("region", "partition"), REGIONS, ids=[r for r, _ in REGIONS])
def test_default_cni_policy_follows_the_partition_of_the_region(
    region: str, partition: str
) -> None:
    spec = models.NodeGroupMesh.parse(mesh(region=region)).spec
    assert models.cni_policy_arn(spec, region) == (
        f"arn:{partition}:iam::aws:policy/AmazonEKS_CNI_Policy"
    )


@pytest.mark.parametrize(
    ("spec", "field", "value"),
    [
        ({"traffic": [{"protocol": "gre"}]}, "spec.traffic[0].protocol", "'gre'"),
        ({"traffic": [{"protocol": "tcp"}]}, "spec.traffic[0]", "required for protocol 'tcp'"),
        (
            {"traffic": [{"protocol": "udp", "fromPort": 60, "toPort": 53}]},
            "spec.traffic[0]",
            "fromPort 60 is greater than toPort 53",
        ),
        (
            {"traffic": [{"protocol": "tcp", "fromPort": 1, "toPort": 70000}]},
            "spec.traffic[0].toPort",
            "70000",
        ),
        (
            {"traffic": [{"protocol": "all", "fromPort": 1, "toPort": 2}]},
            "spec.traffic[0]",
            "'all'",
        ),
        ({"autoScalingGroups": {}}, "spec.autoScalingGroups", "at least one ASG name"),
        ({"autoScalingGroups": {"selectors": [{}]}}, "spec.autoScalingGroups.selectors[0]", "tags"),
        ({"autoScalingGroups": {"names": ["a", "a"]}}, "spec.autoScalingGroups.names", "twice"),
        ({"mode": "Yolo"}, "spec.mode", "'Yolo'"),
        ({"deletionPolicy": "Orphan"}, "spec.deletionPolicy", "'Orphan'"),
        ({"resyncSeconds": 5}, "spec.resyncSeconds", "5"),
        ({"extraSecurityGroupIds": ["sg-xyz"]}, "spec.extraSecurityGroupIds[0]", "'sg-xyz'"),
        ({"region": "mars-1"}, "spec.region", "'mars-1'"),
        (
            {"cniPolicy": {"policyArn": "AmazonEKS_CNI_Policy"}},
            "spec.cniPolicy.policyArn",
            "Amazon",
        ),
        ({"trafic": []}, "spec.trafic", "Extra inputs"),
        ({"securityGroups": {}}, "spec.securityGroups", "at least one security group"),
        ({"securityGroups": {"ids": ["sg-1"]}}, "spec.securityGroups.ids[0]", "'sg-1'"),
        (
            {"securityGroups": {"ids": ["sg-0123456789abcdef0"] * 2}},
            "spec.securityGroups.ids",
            "listed twice",
        ),
        (
            {"securityGroups": {"selectors": [{"tags": {}}]}},
            "spec.securityGroups.selectors[0]",
            "tags",
        ),
        ({"karpenter": {"nodeClasses": []}}, "spec.karpenter.nodeClasses", "at least 1"),
        ({"karpenter": {"nodeClasses": ["Default"]}}, "spec.karpenter.nodeClasses[0]", "'Default'"),
        (
            {"karpenter": {"nodeClasses": ["*", "gpu"]}},
            "spec.karpenter.nodeClasses",
            "stands alone",
        ),
        (
            {"customNetworking": {"eniConfigs": ["us-east-1a", "us-east-1a"]}},
            "spec.customNetworking.eniConfigs",
            "listed twice",
        ),
        # It becomes an IAM tag value: no comma, at most 256 characters.
        (
            {"cniPolicy": {"policyArn": "arn:aws:iam::123456789012:policy/cni,nodes"}},
            "spec.cniPolicy.policyArn",
            "cni,nodes",
        ),
        (
            {"cniPolicy": {"policyArn": "arn:aws:iam::123456789012:policy/" + "p" * 224}},
            "spec.cniPolicy.policyArn",
            "256",
        ),
    ],
)
def test_bad_spec_is_refused_naming_field_and_value(
    spec: dict[str, Any], field: str, value: str
) -> None:
    with pytest.raises(models.InvalidSpecError) as refused:
        models.NodeGroupMesh.parse(mesh(**spec), "mesh.yaml")

    message = str(refused.value)
    assert message.startswith("invalid mesh.yaml: ")
    assert field in message
    assert value in message


def test_a_mesh_without_any_member_source_is_refused_naming_the_sources() -> None:
    document = mesh()
    del document["spec"]["autoScalingGroups"]

    with pytest.raises(models.InvalidSpecError) as refused:
        models.NodeGroupMesh.parse(document, "mesh.yaml")

    for source in ("autoScalingGroups", "securityGroups", "karpenter", "customNetworking"):
        assert source in str(refused.value)


@pytest.mark.parametrize(
    "sources",
    [
        {"securityGroups": {"selectors": [{"tags": {"aws:eks:cluster-name": "prod"}}]}},
        {"karpenter": {"nodeClasses": ["*"]}},
        {"customNetworking": {"eniConfigs": ["us-east-1a"]}},
        {"extraSecurityGroupIds": ["sg-0123456789abcdef0"]},
    ],
)
def test_any_one_member_source_makes_a_mesh(sources: dict[str, Any]) -> None:
    document = mesh(**sources)
    del document["spec"]["autoScalingGroups"]

    spec = models.NodeGroupMesh.parse(document).spec

    assert spec.auto_scaling_groups is None


def test_deprecated_extra_ids_and_security_group_ids_mean_the_same() -> None:
    listed = "sg-0123456789abcdef0"
    old = models.NodeGroupMesh.parse(mesh(extraSecurityGroupIds=[listed])).spec
    new = models.NodeGroupMesh.parse(mesh(securityGroups={"ids": [listed]})).spec

    assert old.security_group_ids == new.security_group_ids == [listed]


def test_mesh_name_must_be_a_short_dns_label() -> None:
    document = mesh()
    document["metadata"]["name"] = "Air_Flow"
    with pytest.raises(models.InvalidSpecError, match=r"metadata\.name \(value: 'Air_Flow'\)"):
        models.NodeGroupMesh.parse(document)


def test_selector_matches_all_tags_and_the_prefix() -> None:
    selector = models.Selector(tags={"team": "data", "env": "*"}, name_prefix="eks-")

    assert selector.matches("eks-a", {"team": "data", "env": "prod"})
    assert not selector.matches("eks-a", {"team": "data"})
    assert not selector.matches("eks-a", {"team": "web", "env": "prod"})
    assert not selector.matches("gke-a", {"team": "data", "env": "prod"})


def test_cluster_name_is_bounded_so_the_ownership_tag_fits() -> None:
    models.validate_cluster_name("prod-eu.1")
    with pytest.raises(models.InvalidSpecError, match="cluster name"):
        models.validate_cluster_name("x" * 51)
    with pytest.raises(models.InvalidSpecError, match="cluster name"):
        models.validate_cluster_name("has/slash")


def test_a_policy_arn_accepted_by_the_spec_is_a_valid_iam_tag_value() -> None:
    # IAM tag values: letters, separators, digits and _.:/=+-@, at most 256 characters.
    longest = "arn:aws-iso-e:iam::123456789012:policy/path/" + "p" * 212
    spec = models.NodeGroupMesh.parse(mesh(cniPolicy={"policyArn": longest})).spec
    value = models.cni_policy_arn(spec, "eu-isoe-west-1")
    assert len(value) == 256
    assert re.fullmatch(r"[\w\s.:/=+\-@]*", value)


def test_chunks_keep_order_and_cut_at_the_size() -> None:
    from sgmesh.engine import chunking

    assert list(chunking.chunks(list(range(5)), 2)) == [[0, 1], [2, 3], [4]]
    assert list(chunking.chunks([], 200)) == []
    with pytest.raises(ValueError, match="at least one"):
        list(chunking.chunks([1], 0))

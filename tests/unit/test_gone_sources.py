"""EC2NodeClasses and ENIConfigs that are gone, or whose kind is not served: what stays a
member, which problem holds removals, and when the memory of the last reconcile ends."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sgmesh.api import models
from sgmesh.engine import cluster_members, planning
from sgmesh.engine.cluster_members import ClusterMember, ClusterObjects, Listing
from sgmesh.engine.topology import MemberKind, Problem, ProblemKind
from tests.unit.builders import OWNER, intent, kinds, member, rule, world

SG_A = "sg-0aaaaaaaaaaaaaaaa"
SG_B = "sg-0bbbbbbbbbbbbbbbb"
SG_P = "sg-0ccccccccccccccc0"
GENERATION = 3


def spec(**sources: Any) -> models.NodeGroupMeshSpec:
    return models.NodeGroupMeshSpec.model_validate({"cniPolicy": {"attach": False}, **sources})


def eni_config(name: str, groups: list[str]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"securityGroups": groups, "subnet": "subnet-1"}}


def listing(*bodies: dict[str, Any]) -> Listing:
    return Listing(installed=True, objects={b["metadata"]["name"]: b for b in bodies})


def status(*members: dict[str, Any], generation: int = GENERATION) -> dict[str, Any]:
    """A mesh's status as the API server holds it (camelCase)."""
    return {"observedGeneration": generation, "members": list(members)}


def listed(
    kind: str, name: str, groups: list[str], roles: list[str] | None = None
) -> dict[str, Any]:
    return {"kind": kind, "name": name, "securityGroupIds": groups, "roleNames": roles or []}


AZ1 = listed("ENIConfig", "az1", [SG_P])
DEFAULT_CLASS = listed("EC2NodeClass", "default", [SG_A], ["KarpenterNodeRole"])


@pytest.mark.parametrize(
    "kind", [ProblemKind.EC2_NODE_CLASS_NOT_FOUND, ProblemKind.ENI_CONFIG_NOT_FOUND]
)
def test_a_missing_source_object_holds_every_removal(kind: ProblemKind) -> None:
    current = dataclasses.replace(
        world(member("a", "sg-a"), rules=[rule("sgr-old", "sg-a", "sg-pods", OWNER)]),
        problems=(Problem(kind, "az1", "az1 is gone"),),
    )

    plan = planning.plan(current, intent())

    assert kinds(plan) == ["authorize"]
    assert [a.kind for a in plan.held] == ["revoke"]


def test_the_status_remembers_node_classes_and_eni_configs_with_their_groups() -> None:
    previous = status(
        listed("AutoScalingGroup", "eks-a", [SG_B]),
        DEFAULT_CLASS,
        AZ1,
        listed("ENIConfig", "empty", []),  # contributed nothing: nothing to keep
        listed("ENIConfig", "odd", ["not-a-group", SG_B]),
    )

    remembered = cluster_members.last_members(previous, GENERATION)

    assert remembered == (
        ClusterMember(MemberKind.EC2_NODE_CLASS, "default", (SG_A,), ("KarpenterNodeRole",)),
        ClusterMember(MemberKind.ENI_CONFIG, "az1", (SG_P,)),
        ClusterMember(MemberKind.ENI_CONFIG, "odd", (SG_B,)),
    )


@pytest.mark.parametrize(
    ("previous", "generation"),
    [
        (status(AZ1, generation=GENERATION - 1), GENERATION),  # a person changed the spec
        (status(AZ1), None),
        ({}, GENERATION),
        (None, GENERATION),
    ],
    ids=["spec-changed", "no-generation", "no-status", "none"],
)
def test_nothing_is_remembered_across_a_spec_change_or_without_a_status(
    previous: dict[str, Any] | None, generation: int | None
) -> None:
    assert cluster_members.last_members(previous, generation) == ()


def test_an_eni_config_gone_under_star_stays_a_member_with_its_groups_and_holds() -> None:
    found = cluster_members.resolve(
        spec(customNetworking={"eniConfigs": ["*"]}),
        ClusterObjects(eni_configs=listing(eni_config("az2", [SG_B]))),
        cluster_members.last_members(status(AZ1), GENERATION),
    )

    assert [(m.name, m.security_group_ids) for m in found.members] == [
        ("az2", (SG_B,)),
        ("az1", (SG_P,)),
    ]
    [problem] = found.problems
    assert (problem.kind, problem.subject) == (ProblemKind.ENI_CONFIG_NOT_FOUND, "az1")
    assert "was a member at the last reconcile and is gone" in problem.message
    assert SG_P in problem.message
    assert "spec changes" in problem.message


def test_a_node_class_gone_under_star_keeps_its_role_and_only_what_instances_carry() -> None:
    found = cluster_members.resolve(
        spec(karpenter={"nodeClasses": ["*"]}),
        ClusterObjects(node_classes=listing()),
        cluster_members.last_members(status(DEFAULT_CLASS), GENERATION),
    )

    # No SG of its own: discovery adds those its running instances still carry.
    assert found.members == (
        ClusterMember(MemberKind.EC2_NODE_CLASS, "default", (), ("KarpenterNodeRole",)),
    )
    [problem] = found.problems
    assert (problem.kind, problem.subject) == (ProblemKind.EC2_NODE_CLASS_NOT_FOUND, "default")
    assert "no instance launched from it runs" in problem.message


def test_a_remembered_object_that_is_back_is_read_as_it_is_now() -> None:
    found = cluster_members.resolve(
        spec(customNetworking={"eniConfigs": ["*"]}),
        ClusterObjects(eni_configs=listing(eni_config("az1", [SG_B]))),
        cluster_members.last_members(status(AZ1), GENERATION),
    )

    assert [(m.name, m.security_group_ids) for m in found.members] == [("az1", (SG_B,))]
    assert found.problems == ()


def test_a_named_object_that_is_missing_holds_and_stays_when_remembered() -> None:
    found = cluster_members.resolve(
        spec(customNetworking={"eniConfigs": ["az1", "typo"]}),
        ClusterObjects(eni_configs=listing()),
        cluster_members.last_members(status(AZ1), GENERATION),
    )

    assert [(m.name, m.security_group_ids) for m in found.members] == [("az1", (SG_P,))]
    assert [(p.kind, p.subject) for p in found.problems] == [
        (ProblemKind.ENI_CONFIG_NOT_FOUND, "az1"),
        (ProblemKind.ENI_CONFIG_NOT_FOUND, "typo"),
    ]
    assert all("removals are held" in p.message for p in found.problems)


def test_a_remembered_object_the_spec_no_longer_selects_is_let_go() -> None:
    remembered = cluster_members.last_members(status(AZ1, DEFAULT_CLASS), GENERATION)

    named_other = cluster_members.resolve(
        spec(customNetworking={"eniConfigs": ["az2"]}),
        ClusterObjects(eni_configs=listing(eni_config("az2", [SG_B]))),
        remembered,
    )
    kind_unused = cluster_members.resolve(
        spec(securityGroups={"ids": [SG_A]}), ClusterObjects(), remembered
    )

    assert [m.name for m in named_other.members] == ["az2"]
    assert named_other.problems == ()
    assert kind_unused == cluster_members.NO_CLUSTER_MEMBERS


def test_a_kind_whose_crd_is_going_keeps_its_last_members_and_says_why() -> None:
    found = cluster_members.resolve(
        spec(customNetworking={"eniConfigs": ["*"]}),
        ClusterObjects(eni_configs=Listing(installed=False, why="its CRD is being deleted")),
        cluster_members.last_members(status(AZ1), GENERATION),
    )

    assert [(m.name, m.security_group_ids) for m in found.members] == [("az1", (SG_P,))]
    [problem] = found.problems
    assert problem.kind is ProblemKind.SOURCE_NOT_INSTALLED
    assert "its CRD is being deleted" in problem.message

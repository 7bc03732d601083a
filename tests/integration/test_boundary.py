"""The cluster's VPC bounds every mesh, against a moto server: an SG of another VPC, named by id,
selected by tag or carried by an ASG, is a problem naming the SG and its VPC, nothing is written
to or about it, and the other members converge; with --member-tag, only SGs carrying the tag
are members. And where the VPC comes from: EKS's DescribeCluster, or --vpc-id."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.aws.world import World
from sgmesh.aws import client, identity, reconcile
from sgmesh.engine import planning
from sgmesh.engine.topology import MemberKind, ProblemKind
from tests.support.meshes import node_group_mesh as mesh

OWNER_KEY = "sgmesh.io/test-cluster/mesh"


def bounded(world: World, member_tag: tuple[str, str | None] | None = None) -> reconcile.Settings:
    boundary = planning.Boundary(vpc_id=world.main_vpc.id, member_tag=member_tag)
    return reconcile.Settings(cluster="test-cluster", boundary=boundary)


def rules_on(world: World, group_id: str) -> list[dict[str, Any]]:
    return world.describe_ingress(group_id)


def test_an_sg_of_another_vpc_named_by_id_is_left_alone_and_the_rest_converges(
    world: World, clients: client.AwsClients
) -> None:
    nodes = world.node_group("eks-a")
    elsewhere = world.vpc()
    database = world.security_group("database", vpc=elsewhere)
    named = mesh(autoScalingGroups={"names": ["eks-a"]}, securityGroups={"ids": [database]})

    outcome = reconcile.converge(clients, named, bounded(world))

    [problem] = [p for p in outcome.plan.problems if p.subject == database]
    assert problem.kind is ProblemKind.MEMBER_OUTSIDE_CLUSTER
    assert database in problem.message
    assert elsewhere.id in problem.message
    assert world.main_vpc.id in problem.message
    assert rules_on(world, database) == []
    # The in-VPC member converged: its SG admits itself, and only itself.
    assert world.owned_pairs({nodes.security_group_id}, OWNER_KEY) == {
        (nodes.security_group_id, nodes.security_group_id)
    }
    member_groups = {g for m in outcome.topology.members for g in m.security_group_ids}
    assert database not in member_groups


def test_a_selector_looks_inside_the_cluster_s_vpc_only(
    world: World, clients: client.AwsClients
) -> None:
    inside = world.security_group("inside", tags={"team": "data"})
    outside = world.security_group("outside", vpc=world.vpc(), tags={"team": "data"})
    selected = mesh(securityGroups={"selectors": [{"tags": {"team": "data"}}]})

    outcome = reconcile.converge(clients, selected, bounded(world))

    assert [(m.kind, m.name) for m in outcome.topology.members] == [
        (MemberKind.SECURITY_GROUP, inside)
    ]
    assert outcome.plan.problems == ()  # the server-side filter never even returns it
    assert rules_on(world, outside) == []
    assert world.owned_pairs({inside}, OWNER_KEY) == {(inside, inside)}


def test_an_asg_whose_sg_is_in_another_vpc_is_left_alone(
    world: World, clients: client.AwsClients
) -> None:
    inside = world.node_group("eks-a")
    elsewhere = world.vpc()
    outside_group = world.security_group("eks-b-nodes", vpc=elsewhere)
    template = world.launch_template("eks-b", security_group_ids=[outside_group])
    world.asg("eks-b", launch_template=template, vpc=elsewhere)

    outcome = reconcile.converge(
        clients, mesh(autoScalingGroups={"names": ["eks-a", "eks-b"]}), bounded(world)
    )

    kinds = {p.kind for p in outcome.plan.problems if p.subject == outside_group}
    assert kinds == {ProblemKind.MEMBER_OUTSIDE_CLUSTER}
    assert rules_on(world, outside_group) == []
    assert (inside.security_group_id, inside.security_group_id) in world.owned_pairs(
        {inside.security_group_id}, OWNER_KEY
    )


@pytest.mark.parametrize(("value", "allowed"), [(None, True), ("owned", True), ("shared", False)])
def test_with_a_member_tag_only_sgs_carrying_it_are_members(
    world: World, clients: client.AwsClients, value: str | None, allowed: bool
) -> None:
    tagged = world.security_group("tagged", tags={"kubernetes.io/cluster/prod": "owned"})
    untagged = world.security_group("untagged")
    listed = mesh(securityGroups={"ids": [tagged, untagged]})

    outcome = reconcile.converge(
        clients, listed, bounded(world, member_tag=("kubernetes.io/cluster/prod", value))
    )

    problems = {p.subject: p for p in outcome.plan.problems}
    assert problems[untagged].kind is ProblemKind.MEMBER_NOT_ALLOWED
    assert "kubernetes.io/cluster/prod" in problems[untagged].message
    assert rules_on(world, untagged) == []
    if allowed:
        assert tagged not in problems
        assert world.owned_pairs({tagged}, OWNER_KEY) == {(tagged, tagged)}
    else:
        assert problems[tagged].kind is ProblemKind.MEMBER_NOT_ALLOWED
        assert rules_on(world, tagged) == []


# ---- where the VPC comes from --------------------------------------------------------------


def test_the_vpc_of_an_eks_cluster_comes_from_describe_cluster(
    world: World, clients: client.AwsClients
) -> None:
    world.eks_cluster("prod")

    found = identity.resolve(clients, "prod")

    assert (found.vpc_id, found.source) == (world.main_vpc.id, "eks:DescribeCluster")
    assert found.ip_family == "ipv4"
    assert identity.resolve(clients, "prod", world.main_vpc.id) == found


def test_a_vpc_id_that_is_not_the_eks_cluster_s_is_refused(
    world: World, clients: client.AwsClients
) -> None:
    world.eks_cluster("prod")
    other = world.vpc()

    with pytest.raises(identity.UnknownCluster, match=f"{other.id} is not the VPC"):
        identity.resolve(clients, "prod", other.id)


def test_a_cluster_eks_does_not_know_takes_its_vpc_from_the_setting(
    world: World, clients: client.AwsClients
) -> None:
    found = identity.resolve(clients, "self-managed", world.main_vpc.id)

    assert (found.vpc_id, found.source) == (world.main_vpc.id, "--vpc-id")


def test_without_a_vpc_sgmesh_refuses_and_names_both_settings(clients: client.AwsClients) -> None:
    with pytest.raises(identity.UnknownCluster) as refused:
        identity.resolve(clients, "self-managed")

    assert "--vpc-id (env SGMESH_VPC_ID)" in str(refused.value)
    assert "--cluster (env SGMESH_CLUSTER_NAME)" in str(refused.value)

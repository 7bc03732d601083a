"""SecurityGroupPolicies as members, against a moto server, through the whole pipeline: their
SGs join like any member SG with no role (no CNI policy for them), one named and missing holds
removals while the rest converges, one gone under "*" keeps its rules, and one whose SG is in
another VPC is left alone."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.aws.world import CNI_POLICY_ARN, World
from sgmesh.aws import client, reconcile
from sgmesh.controller import status
from sgmesh.engine import cluster_members, planning
from sgmesh.engine.topology import MemberKind, ProblemKind
from tests.support.meshes import node_group_mesh as mesh

SETTINGS = reconcile.Settings(cluster="test-cluster")
OWNER_KEY = "sgmesh.io/test-cluster/mesh"


def owned_pairs(world: World, group_ids: set[str]) -> set[tuple[str, str]]:
    return world.owned_pairs(group_ids, OWNER_KEY)


def full_mesh(group_ids: set[str]) -> set[tuple[str, str]]:
    return {(target, source) for target in group_ids for source in group_ids}


def policies(*bodies: tuple[str, list[str]]) -> cluster_members.ClusterObjects:
    """A listing of SecurityGroupPolicies by "namespace/name", as `sgmesh.kube.sources`
    returns it."""
    objects: dict[str, Any] = {}
    for reference, groups in bodies:
        namespace, name = reference.split("/")
        objects[reference] = {
            "metadata": {"namespace": namespace, "name": name},
            "spec": {"podSelector": {}, "securityGroups": {"groupIds": groups}},
        }
    return cluster_members.ClusterObjects(
        security_group_policies=cluster_members.Listing(installed=True, objects=objects)
    )


def last_status(outcome: reconcile.Outcome, generation: int = 1) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "members": [
            status.member_status(member).model_dump(mode="json", by_alias=True)
            for member in outcome.topology.members
        ],
    }


def test_a_policys_groups_join_the_mesh_and_get_no_cni_policy(
    world: World, clients: client.AwsClients
) -> None:
    nodes = world.node_group("eks-a")
    pods = world.security_group("db-clients")
    meshed = mesh(
        autoScalingGroups={"names": ["eks-a"]},
        podSecurityGroups={"policies": ["payments/db-clients"]},
    )
    cluster = cluster_members.resolve(meshed.spec, policies(("payments/db-clients", [pods])))

    outcome = reconcile.converge(clients, meshed, SETTINGS, cluster=cluster)

    assert outcome.plan.problems == ()
    joined = {nodes.security_group_id, pods}
    assert owned_pairs(world, joined) == full_mesh(joined)
    [member] = [m for m in outcome.topology.members if m.kind is MemberKind.SECURITY_GROUP_POLICY]
    assert (member.name, member.security_group_ids, member.role_names) == (
        "payments/db-clients",
        (pods,),
        (),
    )
    assert CNI_POLICY_ARN in world.attached_policy_arns(nodes.role)
    assert status.member_status(member).kind == "SecurityGroupPolicy"


def test_a_named_policy_missing_holds_removals_and_the_rest_converges(
    world: World, clients: client.AwsClients
) -> None:
    a, b, pods = world.security_group("a"), world.security_group("b"), world.security_group("p")
    reconcile.converge(clients, mesh(securityGroups={"ids": [a, b]}), SETTINGS)
    spread = mesh(
        securityGroups={"ids": [a]},
        podSecurityGroups={"policies": ["dns/coredns", "dns/missing"]},
    )
    cluster = cluster_members.resolve(spread.spec, policies(("dns/coredns", [pods])))

    outcome = reconcile.converge(clients, spread, SETTINGS, cluster=cluster)

    assert [(p.kind, p.subject) for p in outcome.plan.problems] == [
        (ProblemKind.SECURITY_GROUP_POLICY_NOT_FOUND, "dns/missing")
    ]
    assert {each.kind for each in outcome.plan.held} == {"revoke"}
    # b's rules stay (held), and the policy's SG joined.
    assert full_mesh({a, b}) | full_mesh({a, pods}) <= owned_pairs(world, {a, b, pods})


@pytest.mark.parametrize("listed", [["*"], ["dns/*"]], ids=["star", "namespace-star"])
def test_a_policy_deleted_under_a_star_keeps_its_rules_until_the_spec_changes(
    world: World, clients: client.AwsClients, listed: list[str]
) -> None:
    a, pods = world.security_group("a"), world.security_group("pods")
    spread = mesh(securityGroups={"ids": [a]}, podSecurityGroups={"policies": listed})
    meshed = reconcile.converge(
        clients,
        spread,
        SETTINGS,
        cluster=cluster_members.resolve(spread.spec, policies(("dns/coredns", [pods]))),
    )
    joined = {a, pods}
    assert owned_pairs(world, joined) == full_mesh(joined)

    deleted = cluster_members.resolve(
        spread.spec, policies(), cluster_members.last_members(last_status(meshed), 1)
    )
    outcome = reconcile.converge(clients, spread, SETTINGS, cluster=deleted)

    assert [(p.kind, p.subject) for p in outcome.plan.problems] == [
        (ProblemKind.SECURITY_GROUP_POLICY_NOT_FOUND, "dns/coredns")
    ]
    assert owned_pairs(world, joined) == full_mesh(joined)
    assert ("dns/coredns", (pods,)) in {
        (m.name, m.security_group_ids) for m in outcome.topology.members
    }

    # The spec changed (generation 2): the memory goes, and so do the policy's rules.
    changed = cluster_members.resolve(
        spread.spec, policies(), cluster_members.last_members(last_status(outcome), 2)
    )
    after = reconcile.converge(clients, spread, SETTINGS, cluster=changed)

    assert after.plan.problems == ()
    assert owned_pairs(world, joined) == {(a, a)}


def test_a_policy_sg_of_another_vpc_is_left_alone_and_the_rest_converges(
    world: World, clients: client.AwsClients
) -> None:
    nodes = world.node_group("eks-a")
    inside = world.security_group("pods-inside")
    elsewhere = world.vpc()
    outside = world.security_group("pods-outside", vpc=elsewhere)
    spread = mesh(autoScalingGroups={"names": ["eks-a"]}, podSecurityGroups={"policies": ["*"]})
    cluster = cluster_members.resolve(
        spread.spec, policies(("apps/web", [inside]), ("apps/legacy", [outside]))
    )
    bounded = reconcile.Settings(
        cluster="test-cluster", boundary=planning.Boundary(vpc_id=world.main_vpc.id)
    )

    outcome = reconcile.converge(clients, spread, bounded, cluster=cluster)

    [problem] = outcome.plan.problems
    assert problem.kind is ProblemKind.MEMBER_OUTSIDE_CLUSTER
    assert problem.subject == outside
    assert "SecurityGroupPolicy apps/legacy" in problem.message
    assert elsewhere.id in problem.message
    assert world.describe_ingress(outside) == []
    joined = {nodes.security_group_id, inside}
    assert owned_pairs(world, joined) == full_mesh(joined)

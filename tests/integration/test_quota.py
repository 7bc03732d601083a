"""The rules-per-security-group quota counted the AWS way, from rules read at a moto server:
per IP family, SG references in both, a prefix list as its maximum entries, and the applied
quota read from Service Quotas when the operator may, its own setting otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from devtools.aws.world import World
from sgmesh.api import models
from sgmesh.aws import client, reconcile
from sgmesh.engine import planning
from sgmesh.engine.topology import ProblemKind
from tests.support.fault_proxy import ThrottlingProxy

CLUSTER = "test-cluster"


def mesh(names: Sequence[str]) -> models.NodeGroupMesh:
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": "mesh"},
            "spec": {"autoScalingGroups": {"names": list(names)}, "cniPolicy": {"attach": False}},
        }
    )


def plan_only(
    clients: client.AwsClients, names: Sequence[str], quota: int = 60
) -> reconcile.Outcome:
    settings = reconcile.Settings(cluster=CLUSTER, rules_per_security_group=quota)
    return reconcile.converge(clients, mesh(names), settings, write=False)


def authorized_groups(outcome: reconcile.Outcome) -> set[str]:
    return {a.group_id for a in outcome.plan.actions if isinstance(a, planning.Authorize)}


def cidr_rules(world: World, group_id: str, ipv4: int, ipv6: int) -> None:
    ipv4_ranges = [{"CidrIp": f"10.200.{i}.0/24"} for i in range(ipv4)]
    ipv6_ranges = [{"CidrIpv6": f"2001:db8:{i:x}::/48"} for i in range(ipv6)]
    permissions: list[Any] = [
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, **ranges}
        for ranges in ({"IpRanges": ipv4_ranges}, {"Ipv6Ranges": ipv6_ranges})
        if any(ranges.values())
    ]
    for permission in permissions:
        world.clients.ec2.authorize_security_group_ingress(
            GroupId=group_id, IpPermissions=[permission]
        )


def test_ipv4_and_ipv6_rules_are_counted_apart(world: World, clients: client.AwsClients) -> None:
    a, b = world.node_group("eks-a"), world.node_group("eks-b")
    cidr_rules(world, a.security_group_id, ipv4=30, ipv6=29)  # 59 rules, neither family full

    outcome = plan_only(clients, ["eks-a", "eks-b"])

    assert outcome.plan.problems == ()
    assert authorized_groups(outcome) == {a.security_group_id, b.security_group_id}


def test_a_full_ip_family_leaves_the_group_untouched(world: World, clients: client.AwsClients):
    a, b = world.node_group("eks-a"), world.node_group("eks-b")
    cidr_rules(world, a.security_group_id, ipv4=0, ipv6=59)

    outcome = plan_only(clients, ["eks-a", "eks-b"])

    [problem] = outcome.plan.problems
    assert (problem.kind, problem.subject) == (ProblemKind.QUOTA_EXCEEDED, a.security_group_id)
    assert "61 IPv6" in problem.message
    assert authorized_groups(outcome) == {b.security_group_id}


def test_a_prefix_list_counts_as_its_maximum_entries(world: World, clients: client.AwsClients):
    a = world.node_group("eks-a")
    world.node_group("eks-b")
    prefix_list = clients.ec2.create_managed_prefix_list(
        PrefixListName="offices", AddressFamily="IPv4", MaxEntries=50
    )["PrefixList"]["PrefixListId"]
    clients.ec2.authorize_security_group_ingress(
        GroupId=a.security_group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "PrefixListIds": [{"PrefixListId": prefix_list}],
            }
        ],
    )
    cidr_rules(world, a.security_group_id, ipv4=9, ipv6=0)  # 50 + 9 + 2 SG references = 61

    outcome = plan_only(clients, ["eks-a", "eks-b"])

    [problem] = outcome.plan.problems
    assert (problem.kind, problem.subject) == (ProblemKind.QUOTA_EXCEEDED, a.security_group_id)
    assert "61 IPv4" in problem.message


def test_the_applied_quota_from_service_quotas_replaces_the_setting(
    world: World, clients: client.AwsClients
) -> None:
    a = world.node_group("eks-a")
    world.node_group("eks-b")
    cidr_rules(world, a.security_group_id, ipv4=45, ipv6=0)

    # moto answers the default 60, above the 40 the operator was told.
    outcome = plan_only(clients, ["eks-a", "eks-b"], quota=40)

    assert outcome.plan.problems == ()
    assert clients.calls["GetServiceQuota"] == 1


def test_without_permission_to_read_the_quota_the_setting_applies(
    world: World, fault_proxy: ThrottlingProxy
) -> None:
    a = world.node_group("eks-a")
    world.node_group("eks-b")
    cidr_rules(world, a.security_group_id, ipv4=45, ipv6=0)
    # Service Quotas refuses over HTTP, as AWS words it (moto cannot be made to).
    fault_proxy.refuse["GetServiceQuota"] = ("AccessDeniedException", 400)

    outcome = plan_only(client.make_clients(), ["eks-a", "eks-b"], quota=40)

    [problem] = outcome.plan.problems
    assert problem.kind is ProblemKind.QUOTA_EXCEEDED
    assert "the quota is 40" in problem.message
    assert fault_proxy.refused["GetServiceQuota"] == 1


def test_a_mesh_that_lacks_no_rule_does_not_read_the_quota(
    world: World, clients: client.AwsClients
):
    world.node_group("eks-a")
    world.node_group("eks-b")
    reconcile.converge(clients, mesh(["eks-a", "eks-b"]), reconcile.Settings(cluster=CLUSTER))
    clients.calls.clear()

    outcome = plan_only(clients, ["eks-a", "eks-b"])

    assert outcome.plan.empty
    assert clients.calls["GetServiceQuota"] == 0

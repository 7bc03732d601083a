"""Members that are not ASGs, against a moto server: security groups by id and by tag, and the
members EC2NodeClasses and ENIConfigs name (as `sgmesh.engine.cluster_members` reads them), through
the whole pipeline."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.aws.world import CNI_POLICY_ARN, World
from sgmesh.api import models
from sgmesh.aws import client, reconcile
from sgmesh.engine import cluster_members
from sgmesh.engine.cluster_members import ClusterMember, ClusterMembers
from sgmesh.engine.topology import MemberKind, ProblemKind

SETTINGS = reconcile.Settings(cluster="test-cluster")
OWNER_KEY = "sgmesh.io/test-cluster/mesh"


def mesh(**spec: Any) -> models.NodeGroupMesh:
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": "mesh"},
            "spec": spec,
        }
    )


def owned_pairs(world: World, group_ids: set[str]) -> set[tuple[str, str]]:
    """(target, source) of every rule on `group_ids` carrying the mesh's tag."""
    return world.owned_pairs(group_ids, OWNER_KEY)


def full_mesh(group_ids: set[str]) -> set[tuple[str, str]]:
    return {(target, source) for target in group_ids for source in group_ids}


def node_class(name: str, groups: list[str], role: str | None = None, profile: str | None = None):
    return ClusterMember(
        MemberKind.EC2_NODE_CLASS,
        name,
        tuple(groups),
        role_names=(role,) if role else (),
        instance_profile_names=(profile,) if profile else (),
    )


def test_security_groups_selected_by_tag_join_and_others_stay_out(
    world: World, clients: client.AwsClients
) -> None:
    cluster_sg = world.security_group("eks-cluster-sg", tags={"aws:eks:cluster-name": "prod"})
    shared = world.security_group("shared-nodes", tags={"kubernetes.io/cluster/prod": "owned"})
    other_cluster = world.security_group("other", tags={"aws:eks:cluster-name": "staging"})
    untagged = world.security_group("untagged")
    asg = world.node_group("eks-a")
    selected = mesh(
        autoScalingGroups={"names": ["eks-a"]},
        securityGroups={
            "selectors": [
                {"tags": {"aws:eks:cluster-name": "prod"}},
                {"tags": {"kubernetes.io/cluster/prod": "*"}},
            ]
        },
    )

    outcome = reconcile.converge(clients, selected, SETTINGS)

    members = {(m.kind, m.name) for m in outcome.topology.members}
    assert members == {
        (MemberKind.AUTO_SCALING_GROUP, "eks-a"),
        (MemberKind.SECURITY_GROUP, cluster_sg),
        (MemberKind.SECURITY_GROUP, shared),
    }
    joined = {cluster_sg, shared, asg.security_group_id}
    assert owned_pairs(world, joined | {other_cluster, untagged}) == full_mesh(joined)
    assert outcome.converged


def test_security_group_ids_and_deprecated_extra_ids_are_one_member_each(
    world: World, clients: client.AwsClients
) -> None:
    a, b = world.security_group("a"), world.security_group("b")
    listed = mesh(securityGroups={"ids": [a, b]}, extraSecurityGroupIds=[b])

    outcome = reconcile.converge(clients, listed, SETTINGS)

    assert [(m.kind, m.name) for m in outcome.topology.members] == sorted(
        [(MemberKind.SECURITY_GROUP, a), (MemberKind.SECURITY_GROUP, b)]
    )
    assert owned_pairs(world, {a, b}) == full_mesh({a, b})


def test_a_node_class_brings_its_groups_and_gets_the_cni_policy_on_its_role(
    world: World, clients: client.AwsClients
) -> None:
    asg = world.node_group("eks-a")
    karpenter_sg = world.security_group("karpenter-nodes")
    world.role("KarpenterNodeRole-prod")
    profiled_sg = world.security_group("karpenter-profiled")
    world.role_with_profile("karpenter-profiled", profile_name="karpenter-made-profile")
    cluster = ClusterMembers(
        members=(
            node_class("default", [karpenter_sg], role="KarpenterNodeRole-prod"),
            node_class("gpu", [profiled_sg], profile="karpenter-made-profile"),
        )
    )

    outcome = reconcile.converge(
        clients,
        mesh(autoScalingGroups={"names": ["eks-a"]}, karpenter={"nodeClasses": ["*"]}),
        SETTINGS,
        cluster=cluster,
    )

    assert outcome.converged, outcome.plan.problems
    by_name = {m.name: m for m in outcome.topology.members}
    assert by_name["default"].kind is MemberKind.EC2_NODE_CLASS
    assert by_name["default"].role_names == ("KarpenterNodeRole-prod",)
    assert by_name["gpu"].role_names == ("karpenter-profiled",)
    joined = {asg.security_group_id, karpenter_sg, profiled_sg}
    assert owned_pairs(world, joined) == full_mesh(joined)
    for role in ("eks-a", "KarpenterNodeRole-prod", "karpenter-profiled"):
        assert CNI_POLICY_ARN in world.attached_policy_arns(role)


def test_a_node_class_role_that_does_not_exist_leaves_it_unresolved(
    world: World, clients: client.AwsClients
) -> None:
    group = world.security_group("karpenter-nodes")
    cluster = ClusterMembers(members=(node_class("default", [group], role="NoSuchRole"),))

    outcome = reconcile.converge(
        clients, mesh(karpenter={"nodeClasses": ["default"]}), SETTINGS, cluster=cluster
    )

    [problem] = outcome.plan.problems
    assert problem.kind is ProblemKind.UNRESOLVED
    assert "EC2NodeClass default" in problem.message
    assert "role NoSuchRole" in problem.message


def test_an_eni_config_naming_a_missing_group_is_reported_by_name(
    world: World, clients: client.AwsClients
) -> None:
    pods = world.security_group("pods")
    missing = "sg-0123456789abcdef0"
    cluster = ClusterMembers(
        members=(ClusterMember(MemberKind.ENI_CONFIG, "us-east-1a", (pods, missing)),)
    )

    outcome = reconcile.converge(
        clients, mesh(customNetworking={"eniConfigs": ["*"]}), SETTINGS, cluster=cluster
    )

    [problem] = outcome.plan.problems
    assert problem.kind is ProblemKind.SECURITY_GROUP_NOT_FOUND
    assert "ENIConfig us-east-1a" in problem.message
    assert owned_pairs(world, {pods}) == {(pods, pods)}


@pytest.mark.parametrize(
    "credentials",
    [
        cluster_members.irsa(
            {cluster_members.IRSA_ANNOTATION: "arn:aws:iam::123456789012:role/vpc-cni"}
        ),
        cluster_members.AwsNodeCredentials(
            cluster_members.CredentialKind.POD_IDENTITY,
            None,
            "association a-1 for kube-system/aws-node in EKS cluster prod",
            association_id="a-1",
        ),
    ],
    ids=["irsa", "pod-identity"],
)
def test_irsa_or_pod_identity_on_aws_node_keeps_the_policy_off_every_node_role(
    world: World, clients: client.AwsClients, credentials: cluster_members.AwsNodeCredentials
) -> None:
    world.node_group("eks-a")
    group = world.security_group("karpenter-nodes")
    world.role("KarpenterNodeRole-prod")
    cluster = ClusterMembers(
        members=(node_class("default", [group], role="KarpenterNodeRole-prod"),),
        aws_node_credentials=credentials,
    )

    outcome = reconcile.converge(
        clients,
        mesh(autoScalingGroups={"names": ["eks-a"]}, karpenter={"nodeClasses": ["*"]}),
        SETTINGS,
        cluster=cluster,
    )

    assert outcome.converged
    assert not [a for a in outcome.plan.actions if a.kind in {"attach", "tag-role"}]
    for role in ("eks-a", "KarpenterNodeRole-prod"):
        assert CNI_POLICY_ARN not in world.attached_policy_arns(role)
    assert clients.calls["ListEntitiesForPolicy"] == 0  # no role is even read for the policy


def test_a_source_not_installed_holds_removals(world: World, clients: client.AwsClients) -> None:
    a, b = world.security_group("a"), world.security_group("b")
    reconcile.converge(clients, mesh(securityGroups={"ids": [a, b]}), SETTINGS)
    not_installed = cluster_members.resolve(
        mesh(securityGroups={"ids": [a]}, karpenter={"nodeClasses": ["*"]}).spec,
        cluster_members.ClusterObjects(node_classes=cluster_members.Listing(installed=False)),
    )

    outcome = reconcile.converge(
        clients,
        mesh(securityGroups={"ids": [a]}, karpenter={"nodeClasses": ["*"]}),
        SETTINGS,
        cluster=not_installed,
    )

    assert [p.kind for p in outcome.plan.problems] == [ProblemKind.SOURCE_NOT_INSTALLED]
    assert {a.kind for a in outcome.plan.held} == {"revoke"}
    assert owned_pairs(world, {a, b}) == full_mesh({a, b})  # nothing revoked


# ---- coverage: rules somebody else made that already admit ---------------------------------


def test_wider_rules_of_somebody_else_s_add_nothing_and_are_never_touched(
    world: World, clients: client.AwsClients
) -> None:
    groups = [world.node_group(f"eks-{n}").security_group_id for n in ("a", "b")]
    # A person's rules: all tcp between the groups, and all traffic of each group to itself.
    hand_made = {
        world.ingress_from_group(t, s, "tcp", 0, 65535, description="by hand")
        for t in groups
        for s in groups
        if t != s
    } | {world.ingress_from_group(g, g, description="by hand") for g in groups}
    https = mesh(
        autoScalingGroups={"names": ["eks-a", "eks-b"]},
        traffic=[{"protocol": "tcp", "fromPort": 443, "toPort": 443}],
        cniPolicy={"attach": False},
    )

    outcome = reconcile.converge(clients, https, SETTINGS)

    assert outcome.plan.actions == ()
    rules = outcome.rules()
    assert (rules.desired, rules.present, rules.owned) == (4, 4, 0)
    held = {r["SecurityGroupRuleId"] for g in groups for r in world.describe_ingress(g)}
    assert held == hand_made  # nothing added, nothing tagged, nothing revoked
    assert owned_pairs(world, set(groups)) == set()

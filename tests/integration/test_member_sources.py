"""Members that are not ASGs, against a moto server: security groups by id and by tag, and the
members EC2NodeClasses and ENIConfigs name (as `sgmesh.engine.cluster_members` reads them), through
the whole pipeline."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.aws.world import CNI_POLICY_ARN, World
from sgmesh.aws import client, reconcile
from sgmesh.controller import status
from sgmesh.engine import cluster_members
from sgmesh.engine.cluster_members import ClusterMember, ClusterMembers
from sgmesh.engine.topology import MemberKind, ProblemKind
from tests.support.meshes import node_group_mesh as mesh

SETTINGS = reconcile.Settings(cluster="test-cluster")
NODE_CLASS_TAG = "karpenter.k8s.aws/ec2nodeclass"
OWNER_KEY = "sgmesh.io/test-cluster/mesh"


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


def last_status(outcome: reconcile.Outcome, generation: int = 1) -> dict[str, Any]:
    """The members part of the status the operator writes after `outcome`, as the API server
    holds it."""
    return {
        "observedGeneration": generation,
        "members": [
            status.member_status(member).model_dump(mode="json", by_alias=True)
            for member in outcome.topology.members
        ],
    }


def eni_configs(*bodies: tuple[str, list[str]]) -> cluster_members.ClusterObjects:
    return cluster_members.ClusterObjects(
        eni_configs=cluster_members.Listing(
            installed=True,
            objects={
                name: {"metadata": {"name": name}, "spec": {"securityGroups": groups}}
                for name, groups in bodies
            },
        )
    )


@pytest.mark.parametrize("listed", [["az1"], ["*"]], ids=["named", "star"])
def test_an_eni_config_deleted_holds_removals_and_its_rules_stay(
    world: World, clients: client.AwsClients, listed: list[str]
) -> None:
    asg = world.node_group("eks-a")
    pods = world.security_group("pods")
    spread = mesh(autoScalingGroups={"names": ["eks-a"]}, customNetworking={"eniConfigs": listed})
    meshed = reconcile.converge(
        clients,
        spread,
        SETTINGS,
        cluster=cluster_members.resolve(spread.spec, eni_configs(("az1", [pods]))),
    )
    joined = {asg.security_group_id, pods}
    assert owned_pairs(world, joined) == full_mesh(joined)

    deleted = cluster_members.resolve(
        spread.spec, eni_configs(), cluster_members.last_members(last_status(meshed), 1)
    )
    outcome = reconcile.converge(clients, spread, SETTINGS, cluster=deleted)

    assert [(p.kind, p.subject) for p in outcome.plan.problems] == [
        (ProblemKind.ENI_CONFIG_NOT_FOUND, "az1")
    ]
    assert not [a for a in outcome.plan.actions if a.kind == "revoke"]
    assert owned_pairs(world, joined) == full_mesh(joined)  # nothing revoked
    # Still listed: the next reconcile remembers it too.
    assert ("az1", (pods,)) in {(m.name, m.security_group_ids) for m in outcome.topology.members}


def test_an_eni_config_gone_under_star_is_let_go_when_the_spec_changes(
    world: World, clients: client.AwsClients
) -> None:
    asg = world.node_group("eks-a")
    pods = world.security_group("pods")
    spread = mesh(autoScalingGroups={"names": ["eks-a"]}, customNetworking={"eniConfigs": ["*"]})
    meshed = reconcile.converge(
        clients,
        spread,
        SETTINGS,
        cluster=cluster_members.resolve(spread.spec, eni_configs(("az1", [pods]))),
    )
    held = reconcile.converge(
        clients,
        spread,
        SETTINGS,
        cluster=cluster_members.resolve(
            spread.spec, eni_configs(), cluster_members.last_members(last_status(meshed), 1)
        ),
    )
    assert [p.kind for p in held.plan.problems] == [ProblemKind.ENI_CONFIG_NOT_FOUND]

    # A person changed the spec (generation 2): the mesh starts from what the cluster holds.
    outcome = reconcile.converge(
        clients,
        spread,
        SETTINGS,
        cluster=cluster_members.resolve(
            spread.spec, eni_configs(), cluster_members.last_members(last_status(held), 2)
        ),
    )

    assert outcome.converged, outcome.plan.problems
    assert owned_pairs(world, {asg.security_group_id, pods}) == {
        (asg.security_group_id, asg.security_group_id)
    }


def test_a_node_class_gone_under_star_stays_meshed_while_its_instances_run(
    world: World, clients: client.AwsClients
) -> None:
    asg = world.node_group("eks-a")
    karpenter_sg = world.security_group("karpenter-nodes")
    instance = world.instance([karpenter_sg], tags={NODE_CLASS_TAG: "default"})
    spread = mesh(
        autoScalingGroups={"names": ["eks-a"]},
        karpenter={"nodeClasses": ["*"]},
        cniPolicy={"attach": False},
    )
    present = cluster_members.ClusterObjects(
        node_classes=cluster_members.Listing(
            installed=True,
            objects={
                "default": {
                    "metadata": {"name": "default"},
                    "spec": {"role": "KarpenterNodeRole"},
                    "status": {"securityGroups": [{"id": karpenter_sg}]},
                }
            },
        )
    )
    gone = cluster_members.ClusterObjects(node_classes=cluster_members.Listing(installed=True))

    def converge_after(previous: reconcile.Outcome, objects: Any) -> reconcile.Outcome:
        remembered = cluster_members.last_members(last_status(previous), 1)
        return reconcile.converge(
            clients,
            spread,
            SETTINGS,
            cluster=cluster_members.resolve(spread.spec, objects, remembered),
        )

    meshed = reconcile.converge(
        clients, spread, SETTINGS, cluster=cluster_members.resolve(spread.spec, present)
    )
    joined = {asg.security_group_id, karpenter_sg}
    assert owned_pairs(world, joined) == full_mesh(joined)

    # Gone while its instance runs: the SG the instance carries stays meshed (draining).
    running = converge_after(meshed, gone)
    assert [p.kind for p in running.plan.problems] == [ProblemKind.EC2_NODE_CLASS_NOT_FOUND]
    [kept] = [m for m in running.topology.members if m.name == "default"]
    assert kept.draining == {karpenter_sg: 1}
    assert owned_pairs(world, joined) == full_mesh(joined)

    # Its last instance terminated: it leaves; this reconcile still holds, the next lets go.
    world.terminate_instances([instance])
    stopped = converge_after(running, gone)
    assert "default" not in {m.name for m in stopped.topology.members}
    assert {a.kind for a in stopped.plan.held} == {"revoke"}
    assert owned_pairs(world, joined) == full_mesh(joined)

    released = converge_after(stopped, gone)
    assert released.converged, released.plan.problems
    assert owned_pairs(world, joined) == full_mesh({asg.security_group_id})


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

"""A rollout against a moto server: a member's launch data (or node class) moves its nodes to a
new security group, but its running instances keep the old one until they are replaced. The old
SG stays meshed, shown as draining with the number of instances that carry it, while the new one
joins at once; once no running instance carries it, its rules go at the next reconcile. The
node role of the instance profile running instances were launched with keeps the CNI policy
the same way. A member
removed from the spec leaves at once, whatever still runs. All of it for one read more per
reconcile, whatever the number of members."""

from __future__ import annotations

from collections import Counter
from typing import Any

from devtools.aws.world import CNI_POLICY_ARN, World
from sgmesh.api import models
from sgmesh.aws import client, reconcile
from sgmesh.cli import render
from sgmesh.controller import status
from sgmesh.engine import planning, topology
from sgmesh.engine.cluster_members import ClusterMember, ClusterMembers
from sgmesh.engine.topology import MemberKind, ProblemKind
from tests.support.meshes import node_group_mesh

OWNER_KEY = "sgmesh.io/test-cluster/mesh"
SETTINGS = reconcile.Settings(cluster="test-cluster")
NODE_CLASS_TAG = "karpenter.k8s.aws/ec2nodeclass"


def mesh(**spec: Any) -> models.NodeGroupMesh:
    return node_group_mesh(**{"cniPolicy": {"attach": False}, **spec})


def full_mesh(group_ids: set[str]) -> set[tuple[str, str]]:
    return {(target, source) for target in group_ids for source in group_ids}


def member(outcome: reconcile.Outcome, name: str) -> topology.Member:
    (found,) = [m for m in outcome.topology.members if m.name == name]
    return found


def rolling_group(world: World, name: str, capacity: int) -> tuple[str, str]:
    """An ASG at $Latest of its template, running `capacity` instances on SG `old`, whose
    template then moves to SG `new`: (old, new)."""
    old = world.security_group(f"{name}-v1")
    template = world.launch_template(name, security_group_ids=[old])
    world.asg(name, launch_template=template, version="$Latest", capacity=capacity)
    new = world.security_group(f"{name}-v2")
    world.launch_template_version(template, security_group_ids=[new])
    return old, new


def test_an_sg_running_instances_still_carry_stays_meshed_until_they_are_gone(
    world: World, clients: client.AwsClients
) -> None:
    other = world.node_group("eks-b").security_group_id
    old_group = world.security_group("eks-a-v1")
    template = world.launch_template("eks-a", security_group_ids=[old_group])
    world.asg("eks-a", launch_template=template, version="$Latest", capacity=2)
    rollout = mesh(autoScalingGroups={"names": ["eks-a", "eks-b"]})
    reconcile.converge(clients, rollout, SETTINGS)
    assert world.owned_pairs({old_group, other}, OWNER_KEY) == full_mesh({old_group, other})

    # The template moves the group's nodes to a new SG; the two instances still run on the old.
    new_group = world.security_group("eks-a-v2")
    world.launch_template_version(template, security_group_ids=[new_group])
    during = reconcile.converge(clients, rollout, SETTINGS)

    assert during.converged, during.plan.problems
    meshed = {old_group, new_group, other}
    assert world.owned_pairs(meshed, OWNER_KEY) == full_mesh(meshed)
    rolling = member(during, "eks-a")
    assert rolling.security_group_ids == tuple(sorted((old_group, new_group)))
    assert rolling.draining == {old_group: 2}
    assert member(during, "eks-b").draining == {}
    shown = status.outcome_status(during, rollout, 1, None)
    by_name = {each["name"]: each for each in shown["members"]}
    assert by_name["eks-a"]["drainingSecurityGroups"] == [{"id": old_group, "instances": 2}]
    assert by_name["eks-b"]["drainingSecurityGroups"] == []
    # `sgmesh plan` and `apply` show it too, as JSON and as text.
    report = render.outcome_report(during, rollout, clients.region, clients)
    assert {each["name"]: each["drainingSecurityGroups"] for each in report["members"]} == {
        "eks-a": [{"id": old_group, "instances": 2}],
        "eks-b": [],
    }
    text = "\n".join(render.text_lines(report))
    assert f"{old_group} (draining: still on 2 running instances)" in text

    # The instances are replaced: the next reconcile takes the old SG's rules away.
    world.set_capacity("eks-a", 0)
    after = reconcile.converge(clients, rollout, SETTINGS)

    assert after.converged, after.plan.problems
    assert member(after, "eks-a").security_group_ids == (new_group,)
    assert member(after, "eks-a").draining == {}
    assert world.owned_pairs(meshed, OWNER_KEY) == full_mesh({new_group, other})
    assert world.describe_ingress(old_group) == []


def test_the_old_sg_drains_by_count_as_instances_go(
    world: World, clients: client.AwsClients
) -> None:
    old_group, new_group = rolling_group(world, "eks-a", capacity=3)
    rollout = mesh(autoScalingGroups={"names": ["eks-a"]})

    assert member(reconcile.converge(clients, rollout, SETTINGS), "eks-a").draining == {
        old_group: 3
    }
    world.set_capacity("eks-a", 1)
    assert member(reconcile.converge(clients, rollout, SETTINGS), "eks-a").draining == {
        old_group: 1
    }
    assert world.owned_pairs({old_group, new_group}, OWNER_KEY) == full_mesh({old_group, new_group})
    world.set_capacity("eks-a", 0)
    assert member(reconcile.converge(clients, rollout, SETTINGS), "eks-a").draining == {}
    assert world.owned_pairs({old_group, new_group}, OWNER_KEY) == {(new_group, new_group)}


def test_a_member_removed_from_the_spec_leaves_at_once_though_its_instances_run(
    world: World, clients: client.AwsClients
) -> None:
    old_group, new_group = rolling_group(world, "eks-a", capacity=2)
    other = world.node_group("eks-b").security_group_id
    reconcile.converge(clients, mesh(autoScalingGroups={"names": ["eks-a", "eks-b"]}), SETTINGS)
    assert world.owned_pairs({old_group, new_group, other}, OWNER_KEY) == full_mesh(
        {old_group, new_group, other}
    )

    outcome = reconcile.converge(clients, mesh(autoScalingGroups={"names": ["eks-b"]}), SETTINGS)

    assert [m.name for m in outcome.topology.members] == ["eks-b"]
    assert world.owned_pairs({old_group, new_group, other}, OWNER_KEY) == {(other, other)}
    assert len(world.asg_instances("eks-a")) == 2  # still running, and out of the mesh


def test_a_node_class_keeps_the_sgs_its_drifted_instances_carry(
    world: World, clients: client.AwsClients
) -> None:
    """Karpenter tags its instances with their EC2NodeClass; after the class's selector moves
    to a new SG, the nodes launched before keep the old one until drift replaces them."""
    old_group = world.security_group("karpenter-v1")
    new_group = world.security_group("karpenter-v2")
    elsewhere = world.security_group("karpenter-other-class")
    for _ in range(2):
        world.instance([old_group], tags={NODE_CLASS_TAG: "default"})
    other_class = world.instance([elsewhere], tags={NODE_CLASS_TAG: "other"})
    cluster = ClusterMembers(
        members=(ClusterMember(MemberKind.EC2_NODE_CLASS, "default", (new_group,)),)
    )
    karpenter = mesh(karpenter={"nodeClasses": ["default"]})

    outcome = reconcile.converge(clients, karpenter, SETTINGS, cluster=cluster)

    assert outcome.converged, outcome.plan.problems
    default = member(outcome, "default")
    assert default.security_group_ids == tuple(sorted((old_group, new_group)))
    assert default.draining == {old_group: 2}
    assert world.owned_pairs({old_group, new_group, elsewhere}, OWNER_KEY) == full_mesh(
        {old_group, new_group}
    )
    assert other_class  # an instance of a class the mesh does not name brings nothing

    world.terminate_instances(_instances_with(world, NODE_CLASS_TAG, "default"))
    drained = reconcile.converge(clients, karpenter, SETTINGS, cluster=cluster)
    assert member(drained, "default").draining == {}
    assert world.owned_pairs({old_group, new_group}, OWNER_KEY) == {(new_group, new_group)}


def test_interfaces_attached_for_pods_do_not_add_their_sgs(
    world: World, clients: client.AwsClients
) -> None:
    """With custom networking the VPC CNI attaches ENIs carrying an ENIConfig's SGs (and
    describes them `aws-K8S-<instance>`): those are pods' SGs, a member of their own or none."""
    nodes = world.node_group("eks-a", capacity=1)
    pods = world.security_group("eni-config-pods")
    (instance_id,) = world.asg_instances("eks-a")
    world.attach_network_interface(
        world.network_interface([pods], description=f"aws-K8S-{instance_id}"), instance_id
    )

    outcome = reconcile.converge(clients, mesh(autoScalingGroups={"names": ["eks-a"]}), SETTINGS)

    assert member(outcome, "eks-a").security_group_ids == (nodes.security_group_id,)
    assert member(outcome, "eks-a").draining == {}
    assert world.describe_ingress(pods) == []


def test_an_sg_on_running_instances_is_bounded_like_every_member_sg(
    world: World, clients: client.AwsClients
) -> None:
    """With --member-tag, an SG that instances carry but that lacks the tag is no member: it is
    reported, naming the instances it comes from, and nothing is written to or about it."""
    allowed = {"kubernetes.io/cluster/prod": "owned"}
    old_group = world.security_group("eks-a-v1")  # before the tag was required
    template = world.launch_template("eks-a", security_group_ids=[old_group])
    world.asg("eks-a", launch_template=template, version="$Latest", capacity=1)
    new_group = world.security_group("eks-a-v2", tags=allowed)
    world.launch_template_version(template, security_group_ids=[new_group])
    bounded = reconcile.Settings(
        cluster="test-cluster",
        boundary=planning.Boundary(
            vpc_id=world.main_vpc.id, member_tag=("kubernetes.io/cluster/prod", None)
        ),
    )

    outcome = reconcile.converge(clients, mesh(autoScalingGroups={"names": ["eks-a"]}), bounded)

    [problem] = outcome.plan.problems
    assert (problem.kind, problem.subject) == (ProblemKind.MEMBER_NOT_ALLOWED, old_group)
    assert "instances of ASG eks-a" in problem.message
    assert member(outcome, "eks-a").security_group_ids == (new_group,)
    assert member(outcome, "eks-a").draining == {}
    assert world.describe_ingress(old_group) == []
    assert world.owned_pairs({new_group}, OWNER_KEY) == {(new_group, new_group)}


def test_instances_outside_the_cluster_s_vpc_are_not_read(
    world: World, clients: client.AwsClients
) -> None:
    """An instance of a member ASG in another VPC (as an ASG moved to the cluster's subnets
    leaves its old instances for a while) carries SGs beyond the boundary: the read leaves it
    out altogether, and nothing is written to or about its SGs."""
    nodes = world.node_group("eks-a", capacity=1)
    elsewhere = world.vpc()
    outside_group = world.security_group("eks-a-old-vpc", vpc=elsewhere)
    world.instance([outside_group], tags={"aws:autoscaling:groupName": "eks-a"}, vpc=elsewhere)
    bounded = reconcile.Settings(
        cluster="test-cluster", boundary=planning.Boundary(vpc_id=world.main_vpc.id)
    )

    outcome = reconcile.converge(clients, mesh(autoScalingGroups={"names": ["eks-a"]}), bounded)

    assert outcome.converged, outcome.plan.problems
    assert member(outcome, "eks-a").security_group_ids == (nodes.security_group_id,)
    assert world.describe_ingress(outside_group) == []


# ---- what it costs -------------------------------------------------------------------------


def steady_calls(
    clients: client.AwsClients, named: models.NodeGroupMesh, cluster: ClusterMembers
) -> Counter[str]:
    reconcile.converge(clients, named, SETTINGS, cluster=cluster)
    clients.calls.clear()
    outcome = reconcile.converge(clients, named, SETTINGS, cluster=cluster)
    assert outcome.converged, outcome.plan.problems
    assert outcome.plan.empty
    return Counter(clients.calls)


def test_a_steady_reconcile_reads_every_member_s_instances_in_one_call(
    world: World, clients: client.AwsClients
) -> None:
    """Before instances were read, this steady reconcile took one DescribeAutoScalingGroups,
    one DescribeLaunchTemplateVersions, one DescribeSecurityGroups and two
    DescribeSecurityGroupRules: one DescribeInstances more serves every ASG and node class,
    and a rollout in progress costs nothing beyond it."""
    groups = [world.node_group(f"ng-{i}", capacity=2, version="$Latest") for i in range(6)]
    names = [group.asg for group in groups]
    karpenter_group = world.security_group("karpenter")
    world.instance([karpenter_group], tags={NODE_CLASS_TAG: "default"})
    cluster = ClusterMembers(
        members=(ClusterMember(MemberKind.EC2_NODE_CLASS, "default", (karpenter_group,)),)
    )
    named = mesh(autoScalingGroups={"names": names}, karpenter={"nodeClasses": ["default"]})
    expected = Counter(
        {
            "DescribeAutoScalingGroups": 1,
            "DescribeLaunchTemplateVersions": 1,
            "DescribeSecurityGroups": 1,
            "DescribeSecurityGroupRules": 2,
            "DescribeInstances": 1,
        }
    )

    assert steady_calls(clients, named, cluster) == expected

    rolled = world.security_group("ng-0-v2")
    world.launch_template_version(groups[0].template, security_group_ids=[rolled])
    assert steady_calls(clients, named, cluster) == expected


def test_a_mesh_without_asgs_or_node_classes_reads_no_instance(
    world: World, clients: client.AwsClients
) -> None:
    group = world.security_group("listed")

    calls = steady_calls(clients, mesh(securityGroups={"ids": [group]}), ClusterMembers())

    assert calls["DescribeInstances"] == 0


def _instances_with(world: World, key: str, value: str) -> list[str]:
    answer = world.clients.ec2.describe_instances(
        Filters=[
            {"Name": f"tag:{key}", "Values": [value]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )
    return [i["InstanceId"] for r in answer["Reservations"] for i in r["Instances"]]


def test_a_role_running_instances_were_launched_with_keeps_the_cni_policy_until_they_are_gone(
    world: World, clients: client.AwsClients
) -> None:
    """A rollout to another instance profile: the instances still running carry the old one,
    and their ipamd needs the CNI policy on its role until they are replaced."""
    group = world.security_group("eks-a")
    old, new = world.role_with_profile("eks-a-v1"), world.role_with_profile("eks-a-v2")
    template = world.launch_template("eks-a", security_group_ids=[group], profile_arn=old.arn)
    world.asg("eks-a", launch_template=template, version="$Latest", capacity=2)
    running = world.asg_instances("eks-a")
    for instance_id in running:  # what AWS shows of an instance launched from the template
        world.clients.ec2.associate_iam_instance_profile(
            IamInstanceProfile={"Arn": old.arn}, InstanceId=instance_id
        )
    rollout = node_group_mesh(
        autoScalingGroups={"names": ["eks-a"]}, cniPolicy={"retainOnRemoval": False}
    )
    reconcile.converge(clients, rollout, SETTINGS)
    assert CNI_POLICY_ARN in world.attached_policy_arns("eks-a-v1")

    world.launch_template_version(template, security_group_ids=[group], profile_arn=new.arn)
    during = reconcile.converge(clients, rollout, SETTINGS)

    assert during.converged, during.plan.problems
    assert member(during, "eks-a").role_names == ("eks-a-v1", "eks-a-v2")
    for role in ("eks-a-v1", "eks-a-v2"):
        assert CNI_POLICY_ARN in world.attached_policy_arns(role)
        assert world.role_tags(role)[OWNER_KEY] == CNI_POLICY_ARN

    world.terminate_instances(running)
    after = reconcile.converge(clients, rollout, SETTINGS)

    assert after.converged, after.plan.problems
    assert member(after, "eks-a").role_names == ("eks-a-v2",)
    assert CNI_POLICY_ARN not in world.attached_policy_arns("eks-a-v1")
    assert OWNER_KEY not in world.role_tags("eks-a-v1")
    assert CNI_POLICY_ARN in world.attached_policy_arns("eks-a-v2")

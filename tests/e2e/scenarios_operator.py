"""The operator against a real API server and a moto server: what a cluster admin sees.

These scenarios are collected by tests/deploy/test_e2e_as_service_account.py, which runs every
one with the operator authenticated as deploy/'s ServiceAccount (as a cluster runs it), and
checks its AWS requests against deploy/iam-policy.json. tests/e2e/test_operator.py runs the
first one again with an admin operator, as a smoke test: when it passes there and fails as the
ServiceAccount, the fault is in deploy/'s rights, not in the operator. Each scenario thus runs
once more at most, not twice over.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from devtools.aws.world import CNI_POLICY_ARN, NodeGroup, World
from devtools.k8s.controlplane import ControlPlane
from devtools.operator_harness import Meshes, Operator, quick_resync, wait_until
from sgmesh.aws import client
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.kube

OWNER_KEY = "sgmesh.io/e2e/{}"
DEADLINE = 60


def owned_sources(world: World, group_id: str, mesh: str) -> set[str]:
    """Source SGs of the rules on `group_id` that carry `mesh`'s ownership tag."""
    key = OWNER_KEY.format(mesh)
    return {
        rule["ReferencedGroupInfo"]["GroupId"]
        for rule in world.describe_ingress(group_id)
        if "ReferencedGroupInfo" in rule and any(t["Key"] == key for t in rule.get("Tags", []))
    }


def full_mesh(world: World, groups: list[NodeGroup], mesh: str) -> bool:
    ids = {group.security_group_id for group in groups}
    return all(owned_sources(world, gid, mesh) == ids for gid in ids)


def spec(*names: str, **extra: Any) -> dict[str, Any]:
    return {"autoScalingGroups": {"names": list(names)}, "resyncSeconds": 10, **extra}


def test_new_mesh_becomes_ready_with_aws_converged(
    world: World, meshes: Meshes, operator: Operator, kube_cluster: ControlPlane
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]

    meshes.create("airflow", spec("eks-a", "eks-b"))
    mesh = meshes.wait_ready("airflow", DEADLINE, operator.log_tail)

    assert full_mesh(world, groups, "airflow")
    for group in groups:
        assert CNI_POLICY_ARN in world.attached_policy_arns(group.role)
    status = mesh["status"]
    assert status["memberCount"] == 2
    assert status["rules"] == {"desired": 4, "present": 4, "owned": 4}
    roles = sorted(group.role for group in groups)
    assert status["cniPolicy"] == {
        "policyArn": CNI_POLICY_ARN,
        "attachedRoles": roles,
        "ownedRoles": roles,
    }
    assert sorted(m["name"] for m in status["members"]) == ["eks-a", "eks-b"]
    assert status["members"][0]["securityGroupIds"] == [groups[0].security_group_id]
    assert status["conditions"][0]["reason"] == "Reconciled"
    table = kube_cluster.kubectl("get", "ngm", "airflow").stdout
    assert table.split("\n")[0].split() == ["NAME", "MEMBERS", "RULES", "PRESENT", "READY", "AGE"]
    assert table.split("\n")[1].split()[:5] == ["airflow", "2", "4", "4", "True"]
    meshes.wait_events(
        "airflow",
        lambda events: {"RulesAuthorized", "PolicyAttached"} <= {e.reason for e in events},
        "RulesAuthorized and PolicyAttached",
        context=operator.log_tail,
    )


def test_asg_tagged_to_match_joins_within_one_resync(
    world: World, meshes: Meshes, start_operator: Any
) -> None:
    operator = start_operator(**quick_resync())
    first = world.node_group("eks-data-1", tags={"team": "data"})
    world.node_group("eks-web", tags={"team": "web"})
    meshes.create("data", {"autoScalingGroups": {"selectors": [{"tags": {"team": "data"}}]}})
    meshes.wait_ready("data", DEADLINE, operator.log_tail)

    second = world.node_group("eks-data-2", tags={"team": "data"})

    wait_until(
        lambda: full_mesh(world, [first, second], "data"),
        30,
        "the new ASG's SG is meshed",
        operator.log_tail,
    )
    wait_until(
        lambda: (meshes.get("data") or {})["status"].get("memberCount") == 2,
        10,
        "status shows two members",
    )


def test_rule_deleted_out_of_band_is_restored(
    world: World, meshes: Meshes, start_operator: Any
) -> None:
    operator = start_operator(**quick_resync())
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create("airflow", {"autoScalingGroups": {"names": ["eks-a", "eks-b"]}})
    meshes.wait_ready("airflow", DEADLINE, operator.log_tail)
    target, source = groups[0].security_group_id, groups[1].security_group_id

    [rule_id] = [
        rule["SecurityGroupRuleId"]
        for rule in world.describe_ingress(target)
        if rule.get("ReferencedGroupInfo", {}).get("GroupId") == source
    ]
    world.clients.ec2.revoke_security_group_ingress(GroupId=target, SecurityGroupRuleIds=[rule_id])
    assert source not in owned_sources(world, target, "airflow")

    wait_until(
        lambda: full_mesh(world, groups, "airflow"), 30, "the rule is back", operator.log_tail
    )


def test_spec_change_converges_and_revokes_what_is_no_longer_wanted(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    a, b, c = (world.node_group(name) for name in ("eks-a", "eks-b", "eks-c"))
    meshes.create("airflow", spec("eks-a", "eks-b", "eks-c"))
    meshes.wait_ready("airflow", DEADLINE, operator.log_tail)

    meshes.patch_spec(
        "airflow",
        {
            "autoScalingGroups": {"names": ["eks-a", "eks-b"]},
            "traffic": [{"protocol": "udp", "fromPort": 53, "toPort": 53}],
        },
    )
    mesh = meshes.wait_ready("airflow", DEADLINE, operator.log_tail)

    assert owned_sources(world, c.security_group_id, "airflow") == set()
    assert owned_sources(world, a.security_group_id, "airflow") == {
        a.security_group_id,
        b.security_group_id,
    }
    protocols = {
        rule["IpProtocol"]
        for rule in world.describe_ingress(a.security_group_id)
        if "ReferencedGroupInfo" in rule
    }
    assert protocols == {"udp"}
    assert mesh["status"]["rules"] == {"desired": 4, "present": 4, "owned": 4}


def test_asg_deleted_in_aws_leaves_within_the_operators_default_resync(
    world: World, meshes: Meshes, start_operator: Any
) -> None:
    operator = start_operator(**quick_resync())
    a, b = (
        world.node_group("eks-a", tags={"team": "data"}),
        world.node_group("eks-b", tags={"team": "data"}),
    )
    meshes.create("data", {"autoScalingGroups": {"selectors": [{"tags": {"team": "data"}}]}})
    meshes.wait_ready("data", DEADLINE, operator.log_tail)

    world.delete_asg("eks-b")

    wait_until(
        lambda: (
            owned_sources(world, a.security_group_id, "data") == {a.security_group_id}
            and owned_sources(world, b.security_group_id, "data") == set()
        ),
        30,
        "the rules of the deleted ASG are revoked",
        operator.log_tail,
    )


def test_dry_run_writes_nothing_and_lists_pending_actions(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    a, b = world.node_group("eks-a"), world.node_group("eks-b")
    meshes.create("preview", spec("eks-a", "eks-b", mode="DryRun"))

    ready = meshes.wait_condition("preview", "True", "DryRun", DEADLINE, operator.log_tail)

    pending = (meshes.get("preview") or {})["status"]["pendingActions"]
    assert len(pending) == 4 + 2 * 2  # four rules; per role: record and attach
    assert any(f"authorize {a.security_group_id}" in line for line in pending)
    assert "8 actions pending" in ready["message"]
    assert owned_sources(world, a.security_group_id, "preview") == set()
    assert CNI_POLICY_ARN not in world.attached_policy_arns(b.role)
    for operation in sorted(client.MUTATING_OPERATIONS):
        assert operator.metric("sgmesh_aws_calls_total", operation=operation) == 0, operation


def test_delete_with_delete_policy_revokes_rules_then_the_object_goes(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    a, b = world.node_group("eks-a"), world.node_group("eks-b")
    handmade = world.ingress_from_group(a.security_group_id, b.security_group_id, "tcp", 22, 22)
    meshes.create("airflow", spec("eks-a", "eks-b", cniPolicy={"retainOnRemoval": False}))
    meshes.wait_ready("airflow", DEADLINE, operator.log_tail)

    meshes.delete("airflow")

    wait_until(
        lambda: meshes.get("airflow") is None, DEADLINE, "the mesh is gone", operator.log_tail
    )
    assert owned_sources(world, a.security_group_id, "airflow") == set()
    assert owned_sources(world, b.security_group_id, "airflow") == set()
    assert CNI_POLICY_ARN not in world.attached_policy_arns(a.role)
    assert any(
        rule["SecurityGroupRuleId"] == handmade
        for rule in world.describe_ingress(a.security_group_id)
    )


def test_delete_with_retain_policy_keeps_the_rules(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create("airflow", spec("eks-a", "eks-b", deletionPolicy="Retain"))
    meshes.wait_ready("airflow", DEADLINE, operator.log_tail)

    meshes.delete("airflow")

    wait_until(lambda: meshes.get("airflow") is None, DEADLINE, "the mesh is gone")
    assert full_mesh(world, groups, "airflow")


def test_unknown_asg_is_reported_by_name_and_the_rest_converges(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create("airflow", spec("eks-a", "eks-b", "eks-typo"))

    ready = meshes.wait_condition(
        "airflow", "False", "AutoScalingGroupNotFound", DEADLINE, operator.log_tail
    )

    assert "eks-typo" in ready["message"]
    wait_until(lambda: full_mesh(world, groups, "airflow"), 10, "the rest converged")
    events = meshes.wait_events(
        "airflow",
        lambda events: any(e.type == "Warning" for e in events),
        "a Warning",
        context=operator.log_tail,
    )
    assert [e.reason for e in events if e.type == "Warning"] == ["AutoScalingGroupNotFound"]


def test_aws_outage_is_reported_then_recovered_without_revoking_anything(
    world: World, meshes: Meshes, start_operator: Any, aws_proxy: TcpProxy
) -> None:
    # Resyncs find the outage, and its end.
    operator = start_operator(**quick_resync())
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create("airflow", {"autoScalingGroups": {"names": ["eks-a", "eks-b"]}})
    meshes.wait_ready("airflow", DEADLINE, operator.log_tail)

    aws_proxy.cut()
    # Synced says the reconciles cannot finish; Ready stays as AWS was last seen.
    down = meshes.wait_condition(
        "airflow", "False", "AwsUnavailable", 40, operator.log_tail, kind="Synced"
    )
    assert (meshes.ready("airflow") or {}).get("status") == "True"
    assert full_mesh(world, groups, "airflow")
    aws_proxy.restore()

    meshes.wait_condition(
        "airflow", "True", "ReconcileSucceeded", 60, operator.log_tail, kind="Synced"
    )
    meshes.wait_condition("airflow", "True", "Reconciled", 60, operator.log_tail)
    assert full_mesh(world, groups, "airflow")
    assert "connection" in down["message"].lower() or "endpoint" in down["message"].lower()
    assert operator.metric("sgmesh_aws_calls_total", operation="RevokeSecurityGroupIngress") == 0
    assert operator.metric("sgmesh_aws_errors_total") >= 1  # every code: a connection error


def test_operator_killed_and_restarted_converges_without_duplicates(
    world: World, meshes: Meshes, start_operator: Any
) -> None:
    first = start_operator()
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create("airflow", spec("eks-a", "eks-b"))
    meshes.wait_ready("airflow", DEADLINE, first.log_tail)
    first.stop(kill=True)

    third = world.node_group("eks-c")
    meshes.patch_spec("airflow", {"autoScalingGroups": {"names": ["eks-a", "eks-b", "eks-c"]}})
    second = start_operator()
    meshes.wait_ready("airflow", DEADLINE, second.log_tail)

    assert full_mesh(world, [*groups, third], "airflow")
    for group in [*groups, third]:
        sources = [
            rule["ReferencedGroupInfo"]["GroupId"]
            for rule in world.describe_ingress(group.security_group_id)
            if "ReferencedGroupInfo" in rule
        ]
        assert len(sources) == len(set(sources)) == 3


def test_operator_writes_no_annotation_and_only_its_finalizer(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    world.node_group("eks-a")
    meshes.create("airflow", spec("eks-a"))
    mesh = meshes.wait_ready("airflow", DEADLINE, operator.log_tail)

    assert not mesh["metadata"].get("annotations")
    assert mesh["metadata"]["finalizers"] == ["sgmesh.io/finalizer"]
    assert "kopf" in mesh["status"]


def test_two_meshes_sharing_rules_agree_and_one_leaving_keeps_the_others(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create("first", spec("eks-a", "eks-b"))
    meshes.wait_ready("first", DEADLINE, operator.log_tail)
    meshes.create("second", spec("eks-a", "eks-b"))
    meshes.wait_ready("second", DEADLINE, operator.log_tail)
    assert full_mesh(world, groups, "first")
    assert full_mesh(world, groups, "second")

    meshes.delete("first")
    wait_until(lambda: meshes.get("first") is None, DEADLINE, "first is gone")

    assert full_mesh(world, groups, "second")
    assert owned_sources(world, groups[0].security_group_id, "first") == set()
    assert meshes.wait_ready("second", DEADLINE)["status"]["rules"]["owned"] == 4


def test_an_operator_without_a_region_refuses_to_start_naming_the_settings(
    world: World, meshes: Meshes, start_operator: Any
) -> None:
    # The cluster is found in the operator's region: without one it has no VPC to bound meshes.
    with pytest.raises(AssertionError, match="the operator exited") as refused:
        start_operator(region=None)

    assert "no region to find the cluster in" in str(refused.value)
    assert "SGMESH_REGION" in str(refused.value)
    assert "Traceback" not in str(refused.value)


def test_one_failing_mesh_does_not_hold_up_another(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create("broken", spec("eks-missing"))
    meshes.create("airflow", spec("eks-a", "eks-b"))

    meshes.wait_ready("airflow", DEADLINE, operator.log_tail)
    meshes.wait_condition("broken", "False", "AutoScalingGroupNotFound", DEADLINE)
    assert full_mesh(world, groups, "airflow")


def test_metrics_count_reconciles_calls_actions_and_describe_each_mesh(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    world.node_group("eks-a")
    world.node_group("eks-b")
    meshes.create("airflow", spec("eks-a", "eks-b"))
    meshes.wait_ready("airflow", DEADLINE, operator.log_tail)
    meshes.create("broken", spec("eks-missing"))
    meshes.wait_condition("broken", "False", "AutoScalingGroupNotFound", DEADLINE)

    assert operator.metric("sgmesh_reconciles_total", mesh="airflow", result="converged") >= 1
    assert operator.metric("sgmesh_reconciles_total", mesh="broken", result="problem") >= 1
    assert operator.metric("sgmesh_aws_calls_total", operation="DescribeAutoScalingGroups") >= 2
    assert operator.metric("sgmesh_actions_total", kind="authorize") == 4
    assert operator.metric("sgmesh_actions_total", kind="attach") == 2
    assert operator.metric("sgmesh_members", mesh="airflow") == 2
    assert operator.metric("sgmesh_rules", mesh="airflow", state="owned") == 4
    assert operator.metric("sgmesh_reconcile_duration_seconds_count", mesh="airflow") >= 1


def test_a_member_sg_of_another_vpc_is_left_alone_and_the_rest_converges(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    elsewhere = world.vpc()
    database = world.security_group("database", vpc=elsewhere)
    selected_elsewhere = world.security_group("shared", vpc=elsewhere, tags={"mesh": "yes"})

    meshes.create(
        "airflow",
        spec(
            "eks-a",
            "eks-b",
            securityGroups={"ids": [database], "selectors": [{"tags": {"mesh": "yes"}}]},
        ),
    )
    ready = meshes.wait_condition(
        "airflow", "False", "MemberOutsideCluster", DEADLINE, operator.log_tail
    )

    assert database in ready["message"]
    assert elsewhere.id in ready["message"]
    wait_until(lambda: full_mesh(world, groups, "airflow"), DEADLINE, "the in-VPC members mesh")
    # Nothing is written to or about the SGs of the other VPC, by id or by selector.
    assert world.describe_ingress(database) == []
    assert world.describe_ingress(selected_elsewhere) == []
    for group in groups:
        assert database not in owned_sources(world, group.security_group_id, "airflow")


# ---- spec.region changes: the mesh owns something in each region its status lists ----------
# The cluster's VPC, which bounds every mesh, is the us-east-1 world's main VPC: in eu-west-1 a
# mesh can never write, and what it owned in us-east-1 is all there is to clean up.

WEST = "eu-west-1"


def listed_regions(meshes: Meshes, name: str) -> list[str] | None:
    return ((meshes.get(name) or {}).get("status") or {}).get("regions")


def test_a_mesh_moved_to_where_it_converges_cleans_up_the_region_it_left(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    groups = [world.node_group(name, tags={"team": "data"}) for name in ("eks-a", "eks-b")]
    meshes.create("data", {"autoScalingGroups": {"selectors": [{"tags": {"team": "data"}}]}})
    created = meshes.wait_ready("data", DEADLINE, operator.log_tail)
    assert created["status"]["regions"] == ["us-east-1"]
    assert full_mesh(world, groups, "data")

    # No ASG of eu-west-1 carries the tag: there the mesh converges with no member, as it
    # would in its own region once the last tagged ASG went.
    meshes.patch_spec("data", {"region": WEST})

    wait_until(
        lambda: listed_regions(meshes, "data") == [WEST],
        DEADLINE,
        "only eu-west-1 is listed",
        operator.log_tail,
    )
    for group in groups:
        assert owned_sources(world, group.security_group_id, "data") == set()
        # Roles are global: the reconcile in eu-west-1 released the records on the roles it
        # no longer meshes, and kept their attachments (retainOnRemoval).
        assert OWNER_KEY.format("data") not in world.role_tags(group.role)
        assert CNI_POLICY_ARN in world.attached_policy_arns(group.role)
    events = meshes.wait_events(
        "data",
        lambda events: any(e.reason == "RegionCleanedUp" for e in events),
        "RegionCleanedUp",
        context=operator.log_tail,
    )
    [cleaned] = [e.message for e in events if e.reason == "RegionCleanedUp"]
    assert "4 rules the mesh owned in us-east-1" in cleaned

    meshes.delete("data")
    wait_until(lambda: meshes.get("data") is None, DEADLINE, "the mesh is gone", operator.log_tail)


def test_a_mesh_moved_where_it_cannot_converge_keeps_its_rules_and_deletion_cleans_both(
    world: World, meshes: Meshes, operator: Operator, aws_session: boto3.Session
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create("airflow", spec("eks-a", "eks-b"))
    meshes.wait_ready("airflow", DEADLINE, operator.log_tail)
    west = World(client.make_clients(WEST, session=aws_session))
    elsewhere = west.node_group("west-a")

    # A region set by mistake: its node groups are outside the cluster, the mesh cannot
    # converge there, so what it serves in us-east-1 stays.
    meshes.patch_spec("airflow", {"region": WEST, "autoScalingGroups": {"names": ["west-a"]}})
    meshes.wait_condition("airflow", "False", "MemberOutsideCluster", DEADLINE, operator.log_tail)

    assert listed_regions(meshes, "airflow") == [WEST, "us-east-1"]
    assert full_mesh(world, groups, "airflow")
    assert west.describe_ingress(elsewhere.security_group_id) == []

    meshes.delete("airflow")

    wait_until(
        lambda: meshes.get("airflow") is None, DEADLINE, "the mesh is gone", operator.log_tail
    )
    for group in groups:
        assert owned_sources(world, group.security_group_id, "airflow") == set()
        assert OWNER_KEY.format("airflow") not in world.role_tags(group.role)


def test_a_region_set_by_mistake_then_corrected_is_no_longer_listed(
    world: World, meshes: Meshes, operator: Operator, aws_session: boto3.Session
) -> None:
    west = World(client.make_clients(WEST, session=aws_session))
    west.node_group("west-a")
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create("airflow", spec("west-a", region=WEST))
    meshes.wait_condition("airflow", "False", "MemberOutsideCluster", DEADLINE, operator.log_tail)
    assert listed_regions(meshes, "airflow") == [WEST]

    meshes.patch_spec(
        "airflow", {"region": "us-east-1", "autoScalingGroups": {"names": ["eks-a", "eks-b"]}}
    )
    meshes.wait_ready("airflow", DEADLINE, operator.log_tail)

    assert full_mesh(world, groups, "airflow")
    wait_until(
        lambda: listed_regions(meshes, "airflow") == ["us-east-1"],
        DEADLINE,
        "only us-east-1 is listed",
        operator.log_tail,
    )
    meshes.wait_events(
        "airflow",
        lambda events: any(
            e.reason == "RegionCleanedUp" and f"owned nothing in {WEST}" in e.message
            for e in events
        ),
        "RegionCleanedUp for eu-west-1",
        context=operator.log_tail,
    )


def test_the_operator_sweeps_rules_abandoned_by_a_mesh_that_is_gone(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    """Rules sgmesh made for a mesh of this cluster that no longer exists, with nobody's tag on
    them (an operator stopped mid-release, tags removed by hand) are revoked soon after the
    operator starts; the same rule of another cluster, and somebody else's rule, stay."""
    a, b = world.node_group("eks-a"), world.node_group("eks-b")
    target, source = a.security_group_id, b.security_group_id
    abandoned = world.ingress_from_group(
        target, source, "tcp", 53, 53, description="sgmesh e2e/gone: node group mesh traffic"
    )
    elsewhere = world.ingress_from_group(
        target, source, "udp", 53, 53, description="sgmesh other/gone: node group mesh traffic"
    )
    handmade = world.ingress_from_group(target, source, "tcp", 22, 22, description="by hand")

    def rule_ids() -> set[str]:
        return {rule["SecurityGroupRuleId"] for rule in world.describe_ingress(target)}

    wait_until(
        lambda: abandoned not in rule_ids(),
        DEADLINE,
        "the abandoned rule is revoked",
        operator.log_tail,
    )
    assert {elsewhere, handmade} <= rule_ids()
    assert "revoked rule " + abandoned in operator.log_tail(400)

"""The operator through AWS's bad days and bad input that only AWS can judge: unparseable 5xx
answers and throttling (also during a deletion), 500 missing ASGs, a selector over the rules
quota, a region that does not exist, a CNI policy that does not exist.

Each test states its pass criterion on AWS state, status and events, and ends with AWS exact:
no rule lost, duplicated or orphaned, and the rules sgmesh does not own untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devtools.aws.world import World
from devtools.operator_harness import Meshes, Operator, wait_until
from sgmesh.controller import status
from tests.e2e.invariants import HandMade, assert_exact, exact, rule_writes
from tests.support.fault_proxy import ThrottlingProxy

pytestmark = pytest.mark.kube

DEADLINE = 60
MESSAGE_BYTES = status.MAX_MESSAGE_BYTES  # the API server's limit on event messages


def spec(*names: str, **extra: Any) -> dict[str, Any]:
    return {"autoScalingGroups": {"names": list(names)}, "resyncSeconds": 10, **extra}


def test_unparseable_5xx_answers_are_an_outage_then_the_mesh_converges(
    world: World,
    meshes: Meshes,
    start_operator: Callable[..., Operator],
    faulty_aws: ThrottlingProxy,
) -> None:
    groups = [world.node_group(f"eks-{name}") for name in "abc"]
    hand_made = HandMade.on(world, groups[0], groups[1])
    faulty_aws.unparseable["DescribeSecurityGroupRules"] = 10**6
    operator = start_operator(aws_endpoint=faulty_aws.url)
    meshes.create("mesh", spec("eks-a", "eks-b", "eks-c"))

    down = meshes.wait_condition("mesh", "False", "AwsUnavailable", DEADLINE, operator.log_tail)
    assert len(down["message"].encode()) <= MESSAGE_BYTES
    assert rule_writes(operator.metric) == 0
    faulty_aws.unparseable.clear()

    meshes.wait_ready("mesh", DEADLINE, operator.log_tail)
    assert_exact(world, groups, {"mesh": groups}, hand_made, operator.log_tail())


def test_throttled_writes_are_retried_and_converge_exactly(
    world: World,
    meshes: Meshes,
    start_operator: Callable[..., Operator],
    faulty_aws: ThrottlingProxy,
) -> None:
    groups = [world.node_group(f"eks-{name}") for name in "abcd"]
    hand_made = HandMade.on(world, groups[0], groups[1])
    # More throttled answers than one call's retries: some authorizes fail, the rest pass.
    faulty_aws.throttle["AuthorizeSecurityGroupIngress"] = 6
    faulty_aws.throttle["CreateTags"] = 6
    faulty_aws.throttle["AttachRolePolicy"] = 6
    operator = start_operator(aws_endpoint=faulty_aws.url)
    meshes.create("mesh", spec("eks-a", "eks-b", "eks-c", "eks-d"))

    meshes.wait_ready("mesh", 90, operator.log_tail)
    assert faulty_aws.throttled["AuthorizeSecurityGroupIngress"] == 6
    assert_exact(world, groups, {"mesh": groups}, hand_made, operator.log_tail())


def test_deletion_through_5xx_and_throttling_revokes_exactly_what_the_mesh_owns(
    world: World,
    meshes: Meshes,
    start_operator: Callable[..., Operator],
    faulty_aws: ThrottlingProxy,
) -> None:
    groups = [world.node_group(f"eks-{name}") for name in "abc"]
    hand_made = HandMade.on(world, groups[0], groups[1])
    operator = start_operator(aws_endpoint=faulty_aws.url)
    meshes.create("stays", spec("eks-a", "eks-b"))
    meshes.create("goes", spec("eks-a", "eks-b", "eks-c"))
    meshes.wait_ready("stays", DEADLINE, operator.log_tail)
    meshes.wait_ready("goes", DEADLINE, operator.log_tail)

    # One unparseable answer each costs the deletion a retry (10 s, then 20 s): the point is
    # that it goes on through them, not how long kopf's backoff grows.
    faulty_aws.unparseable["RevokeSecurityGroupIngress"] = 1
    faulty_aws.throttle["DeleteTags"] = 6
    faulty_aws.unparseable["DescribeSecurityGroupRules"] = 1
    meshes.delete("goes")

    wait_until(lambda: meshes.get("goes") is None, 120, "the mesh is gone", operator.log_tail)
    assert faulty_aws.throttled["RevokeSecurityGroupIngress"] == 1
    assert faulty_aws.throttled["DescribeSecurityGroupRules"] == 1
    assert faulty_aws.throttled["DeleteTags"] == 6
    assert_exact(world, groups, {"stays": groups[:2]}, hand_made, operator.log_tail())


def test_500_missing_asgs_are_named_clipped_and_nothing_is_revoked(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    hand_made = HandMade.on(world, groups[0], groups[1])
    meshes.create("mesh", spec("eks-a", "eks-b"))
    meshes.wait_ready("mesh", DEADLINE, operator.log_tail)
    missing = [f"gone-{index:03}" for index in range(498)]

    meshes.patch_spec("mesh", spec("eks-a", "eks-b", *missing))

    ready = meshes.wait_condition(
        "mesh", "False", "AutoScalingGroupNotFound", DEADLINE, operator.log_tail
    )
    assert "gone-000" in ready["message"]
    assert len(ready["message"].encode()) <= MESSAGE_BYTES
    assert ready["message"].endswith("…")
    warnings = meshes.wait_events(
        "mesh",
        lambda events: any(e.reason == "AutoScalingGroupNotFound" for e in events),
        "AutoScalingGroupNotFound",
        context=operator.log_tail,
    )
    assert all(len(e.message.encode()) <= MESSAGE_BYTES for e in warnings)
    assert operator.metric("sgmesh_aws_calls_total", operation="RevokeSecurityGroupIngress") == 0
    assert_exact(world, groups, {"mesh": groups}, hand_made, operator.log_tail())


def test_selector_of_300_groups_over_the_quota_leaves_every_group_untouched(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    groups = [world.node_group(f"wide-{index:03}", tags={"mesh": "wide"}) for index in range(300)]
    hand_made = HandMade.on(world, groups[0], groups[1])

    meshes.create("wide", {"autoScalingGroups": {"selectors": [{"tags": {"mesh": "wide"}}]}})

    ready = meshes.wait_condition("wide", "False", "QuotaExceeded", 120, operator.log_tail)
    assert "300" in ready["message"]
    assert len(ready["message"].encode()) <= MESSAGE_BYTES
    assert operator.metric("sgmesh_aws_calls_total", operation="AuthorizeSecurityGroupIngress") == 0
    assert_exact(world, groups[:10], {}, hand_made, operator.log_tail())
    assert (meshes.get("wide") or {})["status"]["memberCount"] == 300


def test_a_region_that_does_not_exist_is_a_clear_error_retried_and_nothing_is_written(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    hand_made = HandMade.on(world, groups[0], groups[1])

    meshes.create("nowhere", spec("eks-a", "eks-b", region="zz-nowhere-1"))

    ready = meshes.wait_condition("nowhere", "False", "AwsUnavailable", DEADLINE, operator.log_tail)
    assert "zz-nowhere-1" in ready["message"]
    # Retried: a second attempt fails the same way (kopf's backoff, not a permanent error).
    wait_until(
        lambda: operator.metric("sgmesh_reconciles_total", mesh="nowhere") >= 2,
        DEADLINE,
        "the mesh is reconciled again",
        operator.log_tail,
    )
    assert rule_writes(operator.metric) == 0
    assert_exact(world, groups, {}, hand_made, operator.log_tail())


def test_a_cni_policy_that_does_not_exist_is_a_clear_condition_and_rules_still_converge(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    hand_made = HandMade.on(world, groups[0], groups[1])
    policy = "arn:aws:iam::123456789012:policy/NoSuchCniPolicy"

    meshes.create("custom", spec("eks-a", "eks-b", cniPolicy={"policyArn": policy}))

    ready = meshes.wait_condition(
        "custom", "False", "PartiallyApplied", DEADLINE, operator.log_tail
    )
    assert f"spec.cniPolicy.policyArn {policy!r} does not exist" in ready["message"]
    wait_until(
        lambda: (meshes.get("custom") or {}).get("status", {}).get("rules", {}).get("present") == 4,
        DEADLINE,
        "the rules converge",
        operator.log_tail,
    )
    # Exact but for the attachment, which cannot be made.
    assert exact(world, groups, {"custom": groups}) == []
    hand_made.assert_untouched()

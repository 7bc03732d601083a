"""The operator through concurrency: two operators without peering on the same meshes, thirty
meshes created, changed and deleted together, a spec edited while its apply is writing.

Each test states its pass criterion on AWS state, status and events, and ends with AWS exact:
no rule lost, duplicated or orphaned, and the rules sgmesh does not own untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devtools.aws.world import NodeGroup, World
from devtools.operator_harness import Meshes, Operator, quick_resync, wait_until
from tests.e2e.invariants import HandMade, assert_exact, rule_writes
from tests.support.fault_proxy import ThrottlingProxy

pytestmark = pytest.mark.kube

DEADLINE = 60


def spec(*names: str, **extra: Any) -> dict[str, Any]:
    return {"autoScalingGroups": {"names": list(names)}, "resyncSeconds": 10, **extra}


def rule_ids(world: World, groups: list[NodeGroup]) -> set[str]:
    return {
        rule["SecurityGroupRuleId"]
        for group in groups
        for rule in world.describe_ingress(group.security_group_id)
    }


def test_two_operators_without_peering_race_to_the_same_rule_and_the_loser_co_owns_it(
    world: World,
    meshes: Meshes,
    start_operator: Callable[..., Operator],
    faulty_aws: ThrottlingProxy,
) -> None:
    groups = [world.node_group(f"eks-{index}") for index in range(4)]
    hand_made = HandMade.on(world, groups[0], groups[1])
    first = start_operator(aws_endpoint=faulty_aws.url)
    second = start_operator(aws_endpoint=faulty_aws.url)
    # The first authorize of each operator reaches AWS together: both create the same rules
    # on the same group, and AWS refuses one of them as a duplicate.
    faulty_aws.gather("AuthorizeSecurityGroupIngress", 2)
    meshes.create("one", spec(*(group.asg for group in groups)))
    meshes.create("two", spec(*(group.asg for group in groups[:2])))

    meshes.wait_ready("one", DEADLINE, first.log_tail)
    meshes.wait_ready("two", DEADLINE, first.log_tail)
    assert faulty_aws.answers[("AuthorizeSecurityGroupIngress", 400)] >= 1  # the race was lost
    wait_until(
        lambda: all(
            operator.metric("sgmesh_reconciles_total", mesh=name) >= 1
            for operator in (first, second)
            for name in ("one", "two")
        ),
        DEADLINE,
        "both operators reconciled both meshes",
    )
    assert_exact(
        world,
        groups,
        {"one": groups, "two": groups[:2]},
        hand_made,
        first.log_tail() + second.log_tail(),
    )


def test_two_operators_without_peering_do_not_flap(
    world: World, meshes: Meshes, start_operator: Callable[..., Operator]
) -> None:
    groups = [world.node_group(f"eks-{name}") for name in "abc"]
    hand_made = HandMade.on(world, groups[0], groups[1])
    first, second = start_operator(**quick_resync()), start_operator(**quick_resync())
    meshes.create("shared", {"autoScalingGroups": {"names": ["eks-a", "eks-b", "eks-c"]}})
    meshes.wait_ready("shared", DEADLINE, first.log_tail)

    def reconciles() -> tuple[float, float]:
        return (
            first.metric("sgmesh_reconciles_total", mesh="shared"),
            second.metric("sgmesh_reconciles_total", mesh="shared"),
        )

    wait_until(lambda: min(reconciles()) >= 1, DEADLINE, "both reconciled the mesh")
    settled = rule_ids(world, groups)
    writes = rule_writes(first.metric) + rule_writes(second.metric)
    counted = reconciles()
    # Two more resyncs by each operator (every 2 s: see `quick_resync`).
    wait_until(
        lambda: all(now >= then + 2 for now, then in zip(reconciles(), counted, strict=True)),
        DEADLINE,
        "each operator resynced twice more",
    )

    assert rule_ids(world, groups) == settled  # no rule replaced
    assert rule_writes(first.metric) + rule_writes(second.metric) == writes  # no churn
    assert_exact(world, groups, {"shared": groups}, hand_made, first.log_tail())


def test_thirty_meshes_created_changed_and_deleted_together_leave_exact_tags(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    groups = [world.node_group(f"eks-{index}") for index in range(6)]
    hand_made = HandMade.on(world, groups[0], groups[1])

    def members(index: int, shift: int = 0) -> list[NodeGroup]:
        return [groups[(index + shift) % 6], groups[(index + shift + 1) % 6]]

    for index in range(30):
        meshes.create(f"m{index:02}", spec(*(g.asg for g in members(index))))
    for index in range(30):
        meshes.wait_ready(f"m{index:02}", 120, operator.log_tail)

    # Together: 10 deleted, 10 changed to other groups, 10 new ones created.
    for index in range(10):
        meshes.delete(f"m{index:02}")
        meshes.patch_spec(f"m{index + 10:02}", spec(*(g.asg for g in members(index, shift=2))))
        meshes.create(f"n{index:02}", spec(*(g.asg for g in members(index, shift=3))))

    wanted = {f"m{index + 10:02}": members(index, shift=2) for index in range(10)}
    wanted |= {f"m{index:02}": members(index) for index in range(20, 30)}
    wanted |= {f"n{index:02}": members(index, shift=3) for index in range(10)}
    for name in wanted:
        meshes.wait_ready(name, 120, operator.log_tail)
    wait_until(
        lambda: not any(meshes.get(f"m{index:02}") for index in range(10)),
        DEADLINE,
        "the deleted meshes are gone",
        operator.log_tail,
    )
    assert_exact(world, groups, wanted, hand_made, operator.log_tail())


def test_spec_edited_while_its_apply_writes_converges_to_the_new_spec(
    world: World,
    meshes: Meshes,
    start_operator: Callable[..., Operator],
    faulty_aws: ThrottlingProxy,
) -> None:
    groups = [world.node_group(f"edit-{index:02}") for index in range(20)]
    hand_made = HandMade.on(world, groups[0], groups[1])
    # Each of the 20 authorizations takes a while, so the edit lands in the middle of the
    # apply however fast the machine and the moto server are.
    faulty_aws.slow["AuthorizeSecurityGroupIngress"] = 0.2
    operator = start_operator(aws_endpoint=faulty_aws.url)
    meshes.create("edited", spec(*(group.asg for group in groups)))
    wait_until(
        lambda: (
            operator.metric("sgmesh_aws_calls_total", operation="AuthorizeSecurityGroupIngress")
            >= 1
        ),
        DEADLINE,
        "the apply is writing",
        operator.log_tail,
    )

    kept = groups[5:12]
    meshes.patch_spec("edited", spec(*(group.asg for group in kept)))
    authorized = operator.metric(
        "sgmesh_aws_calls_total", operation="AuthorizeSecurityGroupIngress"
    )
    assert authorized < len(groups), "the edit came after the apply (one authorize per group)"

    mesh = meshes.wait_ready("edited", DEADLINE, operator.log_tail)
    assert mesh["status"]["rules"] == {"desired": 49, "present": 49, "owned": 49}
    assert_exact(world, groups, {"edited": kept}, hand_made, operator.log_tail())

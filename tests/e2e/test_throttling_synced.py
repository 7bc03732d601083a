"""AWS throttling half of the operator's EC2 calls for a while, with several meshes: Ready stays
as AWS was last seen, Synced says that reconciles could not finish (AwsThrottled), and once AWS
lets the calls through again every mesh is Synced again, nothing revoked."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from devtools.aws.world import World
from devtools.operator_harness import Meshes, Operator, quick_resync, wait_until
from tests.e2e.invariants import HandMade, assert_exact, rule_writes
from tests.support.fault_proxy import ThrottlingProxy

pytestmark = pytest.mark.kube

MESHES = 4
DEADLINE = 120
REFUSED_SHARE = 0.75
UNSYNCED_MESHES = 2


def test_throttling_keeps_ready_says_so_in_synced_and_recovers(
    world: World,
    meshes: Meshes,
    start_operator: Callable[..., Operator],
    faulty_aws: ThrottlingProxy,
) -> None:
    groups = {
        f"mesh-{index}": [world.node_group(f"eks-{index}-{side}") for side in "ab"]
        for index in range(MESHES)
    }
    hand_made = HandMade.on(world, groups["mesh-0"][0], groups["mesh-0"][1])
    operator = start_operator(aws_endpoint=faulty_aws.url, **quick_resync())
    for name, members in groups.items():
        meshes.create(name, {"autoScalingGroups": {"names": [g.asg for g in members]}})
    for name in groups:
        meshes.wait_ready(name, DEADLINE, operator.log_tail)
    writes = rule_writes(operator.metric)

    # Most EC2 calls refused, so that some reconciles fail even after their retries (with
    # half refused, botocore's adaptive mode slows the calls down and their retries mostly
    # pass: the meshes just reconcile slower).
    faulty_aws.refuse_share["ec2"] = ("RequestLimitExceeded", 400, REFUSED_SHARE)
    not_ready: list[tuple[str, object]] = []
    unsynced: set[str] = set()

    def some_unsynced() -> bool:
        for name in groups:
            mesh = meshes.get(name) or {}
            conditions = {c["type"]: c for c in mesh.get("status", {}).get("conditions", [])}
            if conditions.get("Ready", {}).get("status") != "True":
                not_ready.append((name, conditions.get("Ready")))
            synced = conditions.get("Synced", {})
            if synced.get("status") == "False" and synced.get("reason") == "AwsThrottled":
                unsynced.add(name)
        return len(unsynced) >= UNSYNCED_MESHES

    wait_until(
        some_unsynced,
        DEADLINE,
        f"{UNSYNCED_MESHES} meshes say Synced=False (AwsThrottled)",
        lambda: f"{unsynced} {not_ready}\n{operator.log_tail()}",
        interval=0.5,
    )
    refused = sum(faulty_aws.refused.values())
    faulty_aws.refuse_share.clear()

    assert refused > 0
    assert not_ready == []  # Ready never flipped while AWS throttled
    throttled = next(iter(sorted(unsynced)))
    events = meshes.events(throttled)
    assert any(e.reason == "AwsThrottled" for e in events), [e.reason for e in events]

    def all_synced() -> bool:
        return all(
            (meshes.condition(name, "Synced") or {}).get("reason") == "ReconcileSucceeded"
            for name in groups
        )

    wait_until(all_synced, DEADLINE, "every mesh is Synced again", operator.log_tail)
    for name in groups:
        assert (meshes.ready(name) or {}).get("status") == "True"
    assert rule_writes(operator.metric) == writes
    assert operator.metric("sgmesh_unfinished_reconciles_total") >= 1
    assert_exact(
        world,
        [group for members in groups.values() for group in members],
        groups,
        hand_made,
        operator.log_tail(),
    )

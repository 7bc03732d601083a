"""`make bench` cannot rot: the call budget bench, run as `make bench` runs it but on a small
world (three ASGs, on the moto server it starts), exits 0 and prints the rows its report is
made of. Whether an OVER verdict fails it is tested without AWS, in
tests/unit/test_call_budget_verdict.py. And what the budget is about, on the test's moto
server: the IAM calls of a steady reconcile do not grow with the number of node groups."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import botocore.session

from devtools.aws.world import World
from sgmesh.api import models
from sgmesh.aws import client, reconcile

REPO_ROOT = Path(__file__).resolve().parents[2]
ASGS = 3
PHASES = ("cold", "after writes", "steady", "IAM refresh", "steady, attach: false")
STEADY_PHASES = ("after writes", "steady", "IAM refresh", "steady, attach: false")
IAM_OPERATIONS = frozenset(botocore.session.get_session().get_service_model("iam").operation_names)


def table_rows(report: str, first_cell: str) -> list[list[str]]:
    """The cells of the markdown rows whose first cell is `first_cell`."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in report.splitlines()
        if line.startswith("|")
    ]
    return [row for row in rows if row[0] == first_cell]


def test_the_call_budget_bench_on_a_small_world_exits_0_with_every_apply_reported() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.call_budget", "--sizes", str(ASGS)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    report = done.stdout

    # The summary: ASGs, SGs, apply, calls, mutating, IAM, minimum, ratio, ... One row per
    # apply; the cold apply writes, the others do not.
    summary = {row[2]: row for row in table_rows(report, str(ASGS)) if len(row) == 12}
    assert set(summary) == set(PHASES)
    assert all(row[1] == str(ASGS) for row in summary.values())  # one SG per ASG
    assert int(summary["cold"][4]) > 0
    assert all(summary[phase][4] == "0" for phase in STEADY_PHASES)
    # IAM: one listing of the CNI policy's roles in a steady resync; none with attach: false.
    assert (summary["steady"][5], summary["steady, attach: false"][5]) == ("1", "0")

    # Calls made / minimum per operation, one column per apply: the writes of the cold apply.
    ((_, cold_authorizations, *steady),) = table_rows(report, "AuthorizeSecurityGroupIngress")
    assert cold_authorizations == f"{ASGS}/{ASGS}"
    assert steady == ["0/0"] * len(STEADY_PHASES)
    ((_, *describe_groups),) = table_rows(report, "DescribeAutoScalingGroups")
    assert describe_groups == ["1/1"] * len(PHASES)
    # The SGs running instances still carry: one read for every member, in every apply.
    ((_, *describe_instances),) = table_rows(report, "DescribeInstances")
    assert describe_instances == ["1/1"] * len(PHASES)
    # Each role's tags: read by a process that just started, after it wrote to them, and once
    # per IAM refresh; never in a steady resync.
    ((_, *role_tags),) = table_rows(report, "ListRoleTags")
    assert role_tags == [f"{ASGS}/{ASGS}", f"{ASGS}/{ASGS}", "0/0", f"{ASGS}/{ASGS}", "0/0"]

    assert "Page sizes asked:" in report
    assert f"IAM calls per steady resync: 1 at {ASGS} ASGs." in report
    assert f"Steady apply at {ASGS} ASGs:" in report
    assert "within the target of 1.2." in report


def selected_mesh() -> models.NodeGroupMesh:
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": "budget"},
            "spec": {"autoScalingGroups": {"selectors": [{"tags": {"budget": "yes"}}]}},
        }
    )


def steady_iam_calls(clients: client.AwsClients, settings: reconcile.Settings) -> Counter[str]:
    """Converge until nothing is left to do, then the IAM calls of one more (steady) resync."""
    for _ in range(2):  # writes what is missing; then reads back the roles it wrote to
        assert reconcile.converge(clients, selected_mesh(), settings).converged
    clients.calls.clear()
    outcome = reconcile.converge(clients, selected_mesh(), settings)
    assert outcome.converged
    assert outcome.plan.empty
    return Counter({op: n for op, n in clients.calls.items() if op in IAM_OPERATIONS})


def test_the_iam_calls_of_a_steady_reconcile_do_not_grow_with_the_node_groups(
    world: World, clients: client.AwsClients
) -> None:
    settings = reconcile.Settings(cluster="test-cluster")  # one operator process
    for index in range(10):
        world.node_group(f"ng-{index:03d}", tags={"budget": "yes"})
    at_10 = steady_iam_calls(clients, settings)

    for index in range(10, 50):
        world.node_group(f"ng-{index:03d}", tags={"budget": "yes"})
    at_50 = steady_iam_calls(clients, settings)

    assert at_10 == at_50 == Counter({"ListEntitiesForPolicy": 1})

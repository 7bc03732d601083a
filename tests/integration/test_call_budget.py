"""`make bench` cannot rot: the call budget bench, run as `make bench` runs it but on a small
world (three ASGs, on the moto server it starts), exits 0 and prints the rows its report is
made of. Whether an OVER verdict fails it is tested without AWS, in
tests/unit/test_call_budget_verdict.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ASGS = 3
PHASES = ("cold", "steady", "steady, attach: false")


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

    # The summary: ASGs, SGs, apply, calls, mutating, minimum, ratio, ... One row per apply;
    # the cold apply writes, the steady ones do not.
    summary = {row[2]: row for row in table_rows(report, str(ASGS)) if len(row) == 11}
    assert set(summary) == set(PHASES)
    assert all(row[1] == str(ASGS) for row in summary.values())  # one SG per ASG
    assert int(summary["cold"][4]) > 0
    assert summary["steady"][4] == summary["steady, attach: false"][4] == "0"

    # Calls made / minimum per operation, one column per apply: the writes of the cold apply.
    ((_, cold_authorizations, *steady),) = table_rows(report, "AuthorizeSecurityGroupIngress")
    assert cold_authorizations == f"{ASGS}/{ASGS}"
    assert steady == ["0/0", "0/0"]
    ((_, *describe_groups),) = table_rows(report, "DescribeAutoScalingGroups")
    assert describe_groups == ["1/1"] * len(PHASES)
    # The SGs running instances still carry: one read for every member, in every apply.
    ((_, *describe_instances),) = table_rows(report, "DescribeInstances")
    assert describe_instances == ["1/1"] * len(PHASES)

    assert "Page sizes asked:" in report
    assert f"Steady apply at {ASGS} ASGs:" in report
    assert "within the target of 1.2." in report

"""The scale bench at its smallest size, so that it cannot rot: it starts its own control plane,
moto server and operator, and prints figures that come from the running operator.

No figure is held to a goal here (goals are the bench's `--check`); the test asserts that what
the bench reports was measured: memory from /proc, calls and reconciles from /metrics.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kube

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench" / "operator_scale.py"
WINDOW_SECONDS = 20


def test_the_scale_bench_measures_one_mesh_through_the_running_operator() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--meshes",
            "1",
            "--window",
            str(WINDOW_SECONDS),
            "--fleet",
            "0",
            "--json",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    (measured,) = printed["measurements"]
    assert printed["perExtraRegionMiB"] > 0

    assert measured["meshes"] == 1
    assert measured["window_seconds"] >= WINDOW_SECONDS
    assert 0 < measured["rss_start_mib"] <= measured["rss_peak_mib"]
    assert 0 < measured["rss_end_mib"] <= measured["rss_peak_mib"]
    assert measured["cpu_per_10s"] > 0
    # A resync of a mesh over 3 ASGs reads ASGs, templates, SGs and rules, and which of its
    # roles hold the CNI policy (roles' tags are read only where the process knows none).
    calls = measured["calls_per_window"]
    for operation in (
        "DescribeAutoScalingGroups",
        "DescribeLaunchTemplateVersions",
        "DescribeSecurityGroupRules",
        "ListEntitiesForPolicy",
    ):
        assert calls.get(operation, 0) > 0, calls
    # Steady state: every rule and attachment was made before the window.
    assert not {"AuthorizeSecurityGroupIngress", "AttachRolePolicy", "TagRole"} & calls.keys()
    # resyncSeconds is 10: a window of two periods sees the mesh reconciled.
    assert measured["periods"]["scale-000"] is not None, measured


FLEET_RESYNC_SECONDS = 10
FLEET_WINDOW_SECONDS = 25


def test_the_scale_bench_measures_a_small_fleet_created_at_once_and_restarted() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--meshes",
            "",
            "--fleet",
            "2",
            "--fleet-resync",
            str(FLEET_RESYNC_SECONDS),
            "--fleet-window",
            str(FLEET_WINDOW_SECONDS),
            "--json",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["measurements"] == []
    fleet = printed["fleet"]

    assert fleet["meshes"] == 2
    for phase in ("created", "restart"):
        burst = fleet[phase]
        assert burst["seconds"] > 0
        assert burst["calls"] > 0
        assert max(burst["per_second"]) > 0, burst
    # Calls once steady, by service, from the operator's own counters.
    assert fleet["calls_per_minute"]["ec2"] > 0
    assert fleet["calls_per_minute"]["iam"] > 0
    assert fleet["operations_per_minute"]["ListEntitiesForPolicy"] > 0
    assert fleet["steady_calls_per_reconcile"] > 0
    assert all(period is not None for period in fleet["periods"].values()), fleet["periods"]
    # A restart with nothing to change writes nothing and reconciles each mesh.
    assert fleet["restart_reconciles"] >= 2
    assert fleet["restart_writes"] == 0
    # Creating attached the CNI policy to each mesh's roles: the creation's writes are counted.
    assert fleet["created_operations"]["AttachRolePolicy"] == 2 * 3
    assert 0 < fleet["rss_end_mib"] <= fleet["rss_peak_mib"]


def test_the_scale_bench_refuses_a_window_shorter_than_two_resync_periods() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--meshes", "1", "--window", "5"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--window" in done.stderr
    assert "5.0" in done.stderr

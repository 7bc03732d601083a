"""The reaction bench at its smallest, so that it cannot rot: one run of each reaction through
its own control plane, moto server and operator.

No figure is held to a goal here (goals are the bench's `--check`); the test asserts that each
reaction was measured and came well within the bench's own deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kube

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench" / "reaction.py"


def test_the_reaction_bench_measures_every_reaction() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--runs", "1", "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    reactions = json.loads(done.stdout)
    assert [r["goal_seconds"] for r in reactions] == [5.0, 2.0, 2.0]
    assert "SecurityGroupPolicy" in reactions[2]["what"]
    for reaction in reactions:
        [seconds] = reaction["seconds"]
        assert 0 < seconds < 60, reaction
        assert reaction["worst"] == reaction["median"] == seconds


def test_the_reaction_bench_refuses_zero_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--runs", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert "--runs must be at least 1, not 0" in done.stderr

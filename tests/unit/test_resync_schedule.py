"""The resync timer's schedule: a mesh is reconciled again once its period has passed since its
last reconcile, on the operator's clock (`Runtime.clock`).

Everything runs on a fake clock that moves only when a test moves it: no time passes, and every
time compared is exact."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import kopf

from sgmesh.aws import reconcile
from sgmesh.controller import meshes, metrics, schedule, shared

PERIOD = 60.0
TICK = 5.0


class FakeClock:
    """A monotonic clock that reads what the test last set."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_mesh_is_not_due_before_its_period_has_passed() -> None:
    clock = FakeClock()
    last = clock()
    clock.advance(PERIOD - 0.5)
    assert not schedule.due(last, clock(), PERIOD)


def test_mesh_is_due_once_its_period_has_passed() -> None:
    clock = FakeClock()
    last = clock()
    clock.advance(PERIOD)
    assert schedule.due(last, clock(), PERIOD)
    clock.advance(TICK)
    assert schedule.due(last, clock(), PERIOD)


def test_timer_ticks_reconcile_a_mesh_once_per_period() -> None:
    clock = FakeClock()
    started = last = clock()
    reconciled_after: list[float] = []
    for _ in range(int(10 * PERIOD / TICK)):
        clock.advance(TICK)
        if schedule.due(last, clock(), PERIOD):
            last = clock()
            reconciled_after.append(clock() - started)
    assert reconciled_after == [PERIOD * n for n in range(1, 11)]


def test_period_is_the_mesh_resync_seconds() -> None:
    assert schedule.period({"resyncSeconds": 30}, PERIOD) == 30.0


def test_period_without_a_valid_resync_seconds_is_the_default() -> None:
    for spec in ({}, {"resyncSeconds": 5}, {"resyncSeconds": "30"}, {"resyncSeconds": None}):
        assert schedule.period(spec, PERIOD) == PERIOD, spec


def test_resync_timer_counts_time_on_the_runtime_clock() -> None:
    clock = FakeClock()
    # Being deleted: a due tick reconciles nothing (no AWS, no API server), so what the test
    # reads is the timer's own bookkeeping, the time it counts the mesh as synced.
    mesh = kopf.Body(
        {
            "metadata": {
                "name": "web",
                "uid": "uid-web",
                "deletionTimestamp": "2025-01-01T00:00:00Z",
            },
            "spec": {},
        }
    )
    with ThreadPoolExecutor(1) as executor, asyncio.Runner() as loop:
        runtime = shared.Runtime(
            settings=shared.OperatorSettings(
                pipeline=reconcile.Settings(), region=None, default_resync_seconds=int(PERIOD)
            ),
            metrics=metrics.Metrics(),
            executor=executor,
            clock=clock,
        )
        memo = kopf.Memo(runtime=runtime)

        def tick() -> float:
            loop.run(meshes.resync(body=mesh, memo=memo))
            return runtime.last_sync["uid-web"]

        first_seen = clock()
        assert tick() == first_seen  # the first tick starts the mesh's period
        clock.advance(PERIOD - TICK)
        assert tick() == first_seen
        clock.advance(TICK)
        assert tick() == first_seen + PERIOD

"""Nudges: which meshes an event concerns, and how a burst of events becomes few reconciles.

The debounce runs on a fake clock: time moves only when a test advances it, so the tests take
no real time and state the exact time at which each batch started."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sgmesh.controller import nudges
from sgmesh.engine import cluster_members
from tests.unit.fake_clock import FakeClock

# A batch starts DELAY after the first request for it, and no sooner than GAP after the
# previous batch. Both are exact in binary, as are the times below: sums are exact too.
DELAY, GAP = 1.0, 2.0


class Batches:
    """Runs a debounce's batches by noting when each started and what it held."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.started: list[tuple[float, frozenset[str]]] = []

    async def run(self, batch: frozenset[str]) -> None:
        self.started.append((self.clock.now(), batch))


def body(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


def index(*bodies: dict[str, Any]) -> nudges.MeshIndex:
    meshes = nudges.MeshIndex()
    for each in bodies:
        meshes.update(each)
    return meshes


def test_nodes_concern_the_meshes_that_list_asgs() -> None:
    meshes = index(
        body("asgs", autoScalingGroups={"selectors": [{"tags": {"team": "data"}}]}),
        body("karpenter", karpenter={"nodeClasses": ["*"]}),
        body("both", autoScalingGroups={"names": ["a"]}, customNetworking={"eniConfigs": ["x"]}),
    )

    assert meshes.with_auto_scaling_groups() == ["asgs", "both"]


def test_an_object_concerns_the_meshes_naming_it_or_every_one() -> None:
    meshes = index(
        body("gpu", karpenter={"nodeClasses": ["gpu"]}),
        body("all", karpenter={"nodeClasses": ["*"]}),
        body("other", karpenter={"nodeClasses": ["default"]}),
        body("eni", customNetworking={"eniConfigs": ["gpu"]}),
    )

    assert meshes.naming(cluster_members.NODE_CLASS, "gpu") == ["all", "gpu"]
    assert meshes.naming(cluster_members.NODE_CLASS) == ["all", "gpu", "other"]
    assert meshes.naming(cluster_members.ENI_CONFIG, "gpu") == ["eni"]


def test_a_forgotten_mesh_is_never_nudged() -> None:
    meshes = index(body("gone", karpenter={"nodeClasses": ["*"]}))
    meshes.forget("gone")

    assert meshes.naming(cluster_members.NODE_CLASS, "a") == []
    assert meshes.get("gone") is None


def test_a_burst_of_requests_is_one_batch_after_the_delay() -> None:
    clock = FakeClock()
    batches = Batches(clock)

    async def scenario() -> None:
        debounce = nudges.Debounce(batches.run, DELAY, GAP, clock=clock)
        for node in range(100):
            debounce.request(["a", "b"] if node % 2 else ["a"])
        await clock.advance(60)
        await debounce.close()
        assert debounce.batches == 1

    asyncio.run(scenario())

    assert batches.started == [(DELAY, frozenset({"a", "b"}))]


def test_requests_made_during_the_delay_join_the_batch() -> None:
    clock = FakeClock()
    batches = Batches(clock)

    async def scenario() -> None:
        debounce = nudges.Debounce(batches.run, DELAY, GAP, clock=clock)
        debounce.request(["a"])
        await clock.advance(DELAY / 2)
        debounce.request(["b"])
        await clock.advance(60)
        await debounce.close()

    asyncio.run(scenario())

    assert batches.started == [(DELAY, frozenset({"a", "b"}))]


def test_the_next_batch_starts_exactly_the_gap_after_the_previous_one() -> None:
    clock = FakeClock()
    batches = Batches(clock)

    async def scenario() -> None:
        debounce = nudges.Debounce(batches.run, DELAY, GAP, clock=clock)
        debounce.request(["first"])
        await clock.advance(1.5)  # the first batch started at DELAY
        debounce.request(["second"])
        await clock.advance(1.0)
        debounce.request(["third"])
        await clock.advance(7.5)  # long after the gap: the delay alone holds the next one
        debounce.request(["fourth"])
        await clock.advance(60)
        await debounce.close()

    asyncio.run(scenario())

    assert batches.started == [
        (DELAY, frozenset({"first"})),
        (DELAY + GAP, frozenset({"second", "third"})),
        (10.0 + DELAY, frozenset({"fourth"})),
    ]


def test_a_request_made_while_a_batch_starts_is_in_the_next_batch() -> None:
    """No request is lost, and a mesh is in one batch at a time: a request for a mesh of the
    batch that is starting waits for the next batch."""
    clock = FakeClock()
    started: list[tuple[float, frozenset[str]]] = []
    starting: list[frozenset[str]] = []

    async def slow_run(batch: frozenset[str]) -> None:
        assert not starting, "two batches at once"
        starting.append(batch)
        started.append((clock.now(), batch))
        await clock.sleep(0.5)
        starting.remove(batch)

    async def scenario() -> None:
        debounce = nudges.Debounce(slow_run, DELAY, GAP, clock=clock)
        debounce.request(["first"])
        await clock.advance(DELAY + 0.25)  # the first batch is starting
        debounce.request(["first", "late"])
        await clock.advance(60)
        await debounce.close()

    asyncio.run(scenario())

    assert started == [
        (DELAY, frozenset({"first"})),
        (DELAY + GAP, frozenset({"first", "late"})),
    ]


def test_a_failing_batch_is_logged_and_later_requests_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    batches = Batches(clock)

    async def run(batch: frozenset[str]) -> None:
        await batches.run(batch)
        if "bad" in batch:
            raise RuntimeError("boom")

    async def scenario() -> None:
        debounce = nudges.Debounce(run, DELAY, clock=clock)
        debounce.request(["bad"])
        await clock.advance(DELAY + 0.5)
        debounce.request(["good"])
        await clock.advance(60)
        await debounce.close()

    asyncio.run(scenario())

    assert batches.started == [
        (DELAY, frozenset({"bad"})),
        (DELAY + 0.5 + DELAY, frozenset({"good"})),
    ]
    assert "nudged reconciles of bad did not start" in caplog.text


def test_closing_drops_the_batch_still_waiting() -> None:
    clock = FakeClock()
    batches = Batches(clock)

    async def scenario() -> None:
        debounce = nudges.Debounce(batches.run, DELAY, GAP, clock=clock)
        await debounce.close()  # nothing requested yet: nothing to stop
        debounce.request(["a"])
        await clock.advance(DELAY / 2)
        await debounce.close()
        await clock.advance(60)

    asyncio.run(scenario())

    assert batches.started == []


def test_without_a_clock_of_its_own_a_debounce_runs_on_the_event_loops() -> None:
    async def scenario() -> frozenset[str]:
        batches: asyncio.Queue[frozenset[str]] = asyncio.Queue()
        debounce = nudges.Debounce(batches.put, delay=0)
        debounce.request(["a"])
        # A deadline for a broken debounce, not a time the test counts on.
        batch = await asyncio.wait_for(batches.get(), timeout=30)
        await debounce.close()
        return batch

    assert asyncio.run(scenario()) == frozenset({"a"})

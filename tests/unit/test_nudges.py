"""Nudges: which meshes an event concerns, and how a burst of events becomes few reconciles."""

from __future__ import annotations

import asyncio
from typing import Any

from sgmesh.controller import nudges
from sgmesh.engine import cluster_members


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


def test_a_burst_of_requests_is_one_batch() -> None:
    batches: list[frozenset[str]] = []

    async def scenario() -> None:
        async def run(batch: frozenset[str]) -> None:
            batches.append(batch)

        debounce = nudges.Debounce(run, delay=0.05, gap=0.2)
        for node in range(100):
            debounce.request(["a", "b"] if node % 2 else ["a"])
        await asyncio.sleep(0.15)
        await debounce.close()

    asyncio.run(scenario())

    assert batches == [frozenset({"a", "b"})]


def test_batches_keep_their_gap_and_lose_no_request() -> None:
    batches: list[tuple[float, frozenset[str]]] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def run(batch: frozenset[str]) -> None:
            batches.append((loop.time() - started, batch))

        debounce = nudges.Debounce(run, delay=0.02, gap=0.3)
        debounce.request(["first"])
        await asyncio.sleep(0.1)  # the first batch has run
        debounce.request(["second"])
        debounce.request(["third"])
        await asyncio.sleep(0.5)
        await debounce.close()

    asyncio.run(scenario())

    assert [batch for _, batch in batches] == [
        frozenset({"first"}),
        frozenset({"second", "third"}),
    ]
    assert batches[1][0] - batches[0][0] >= 0.3 - 0.01


def test_a_failing_batch_is_logged_and_later_requests_still_run(
    caplog: Any,
) -> None:
    batches: list[frozenset[str]] = []

    async def scenario() -> None:
        async def run(batch: frozenset[str]) -> None:
            batches.append(batch)
            if "bad" in batch:
                raise RuntimeError("boom")

        debounce = nudges.Debounce(run, delay=0.01)
        debounce.request(["bad"])
        await asyncio.sleep(0.05)
        debounce.request(["good"])
        await asyncio.sleep(0.05)
        await debounce.close()

    asyncio.run(scenario())

    assert batches == [frozenset({"bad"}), frozenset({"good"})]
    assert "did not start" in caplog.text

"""kopf serves a kind once its CRD is established, even when API discovery lags behind the CRD
(`sgmesh.controller.serving`), and a source's CRD that becomes established asks for it
(`sgmesh.controller.watches.source_crd_changed`). Discovery is played by a stand-in here; the
end-to-end tests that install a source's CRD and re-create the NodeGroupMesh CRD while the
operator runs use kopf's own routine against the real API server. The waits between reads run
on a fake clock: no real time passes, and each read's time is exact."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from sgmesh.controller import nudges, serving, watches
from sgmesh.engine import cluster_members
from tests.unit.fake_clock import FakeClock


@dataclass(frozen=True)
class Resource:
    group: str
    plural: str


@dataclass
class Discovery:
    """Lists the kind only from the `lag`-th read on, as an API server whose discovery lags;
    notes the time of each read."""

    lag: int
    watched_resources: set[Resource] = field(default_factory=set)
    clock: FakeClock = field(default_factory=FakeClock)
    read_at: list[float] = field(default_factory=list)

    @property
    def reads(self) -> int:
        return len(self.read_at)

    async def rescan(self, crd: Mapping[str, Any]) -> None:
        self.read_at.append(self.clock.now())
        if self.reads >= self.lag:
            spec = crd["spec"]
            self.watched_resources.add(Resource(spec["group"], spec["names"]["plural"]))


def crd(*, established: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": "eniconfigs.crd.k8s.amazonaws.com"},
        "spec": {"group": "crd.k8s.amazonaws.com", "names": {"plural": "eniconfigs"}},
        "status": {
            "conditions": [{"type": "Established", "status": "True" if established else "False"}]
        },
    }


def serve(discovery: Discovery, body: Mapping[str, Any], attempts: int = 60) -> tuple[bool, float]:
    """Whether kopf serves the kind in the end, and the time `serve_once_established` said so:
    it waits between reads (`serving.INTERVAL_SECONDS`) on the discovery's fake clock."""
    clock = discovery.clock

    async def serve_and_note_when() -> tuple[bool, float]:
        served = await serving.serve_once_established(
            body, discovery, discovery.rescan, attempts=attempts, sleep=clock.sleep
        )
        return served, clock.now()

    async def scenario() -> tuple[bool, float]:
        serving_task = asyncio.create_task(serve_and_note_when())
        await clock.advance(3600)
        return serving_task.result()

    return asyncio.run(scenario())


def test_discovery_is_read_again_every_interval_until_kopf_serves_the_established_kind() -> None:
    discovery = Discovery(lag=3)

    assert serve(discovery, crd()) == (True, 3 * serving.INTERVAL_SECONDS)

    assert discovery.read_at == [n * serving.INTERVAL_SECONDS for n in (1, 2, 3)]


def test_a_kind_already_served_or_not_established_costs_no_read() -> None:
    served = Discovery(lag=1, watched_resources={Resource("crd.k8s.amazonaws.com", "eniconfigs")})
    not_established = Discovery(lag=1)

    assert serve(served, crd()) == (True, 0.0)
    assert serve(not_established, crd(established=False)) == (False, 0.0)

    assert (served.reads, not_established.reads) == (0, 0)


def test_discovery_that_never_lists_the_kind_is_given_up_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    discovery = Discovery(lag=10**6)

    with caplog.at_level(logging.WARNING, logger=serving.__name__):
        # Given up at the last read, with no wait after it.
        assert serve(discovery, crd(), attempts=5) == (False, 5 * serving.INTERVAL_SECONDS)

    assert discovery.reads == 5
    assert "eniconfigs.crd.k8s.amazonaws.com" in caplog.text


def test_a_source_crd_that_becomes_established_is_served_and_its_meshes_nudged() -> None:
    clock = FakeClock()
    asked: list[str] = []
    nudged: list[frozenset[str]] = []

    async def scenario() -> None:
        async def serve_kind(body: Mapping[str, Any]) -> bool:
            asked.append(body["metadata"]["name"])
            return True

        async def nudge(names: frozenset[str]) -> None:
            nudged.append(names)

        meshes = nudges.MeshIndex()
        meshes.update(
            {"metadata": {"name": "eni"}, "spec": {"customNetworking": {"eniConfigs": ["*"]}}}
        )
        watching = watches.Watching(
            meshes=meshes,
            nodes=nudges.Debounce(nudge, 0, clock=clock),
            sources=nudges.Debounce(nudge, 0, clock=clock),
            serve=serve_kind,
        )
        name = cluster_members.ENI_CONFIG.crd_name
        for established in (False, True, True):
            await watches.source_crd_event(watching, name, "MODIFIED", crd(established=established))
        await clock.advance(60)

    asyncio.run(scenario())

    assert asked == [cluster_members.ENI_CONFIG.crd_name]
    assert nudged == [frozenset({"eni"})]

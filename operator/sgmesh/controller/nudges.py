"""Reconciles started by what happens in the cluster, not by the resync timer.

A mesh learns of a new ASG at its next resync (`resyncSeconds`, 60 s by default), which is a
minute too late for a node that just registered. The operator therefore watches Nodes,
EC2NodeClasses, ENIConfigs, SecurityGroupPolicies and their CRDs (`sgmesh.controller.watches`)
and *nudges* the meshes an event could change: it asks for their reconcile now. This module
holds what that needs and no kopf:

- `MeshIndex`: the latest body of every mesh (from the watch on meshes), and which meshes a
  Node, an EC2NodeClass, an ENIConfig or a SecurityGroupPolicy can concern;
- `Debounce`: gathers the nudges of a burst (100 nodes joining) into a few batches: the first
  request waits `delay` seconds for others to join, and a batch starts no sooner than `gap`
  seconds after the previous one. A mesh is in at most one batch at a time. It reads and waits
  on a `Clock`: the running event loop's unless told otherwise, so that tests can run it on
  fake time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from sgmesh.engine import cluster_members

__all__ = ["LOOP_CLOCK", "Clock", "Debounce", "LoopClock", "MeshIndex"]

log = logging.getLogger("sgmesh")


class Clock(Protocol):
    """Where code that waits reads the time and sleeps, in seconds: one clock for both, so
    that a fake one (in tests) keeps the two in step."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's clock, the one asyncio's own timers keep."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


LOOP_CLOCK = LoopClock()


class MeshIndex:
    """Every mesh's latest body, by name, as the watch on meshes last saw it."""

    def __init__(self) -> None:
        self._bodies: dict[str, Mapping[str, Any]] = {}

    def update(self, body: Mapping[str, Any]) -> None:
        name = (body.get("metadata") or {}).get("name")
        if name:
            self._bodies[name] = body

    def forget(self, name: str) -> None:
        self._bodies.pop(name, None)

    def get(self, name: str) -> Mapping[str, Any] | None:
        return self._bodies.get(name)

    def bodies(self) -> list[Mapping[str, Any]]:
        """Every mesh's latest body (what the metrics of meshes are read from)."""
        return list(self._bodies.values())

    def with_auto_scaling_groups(self) -> list[str]:
        """Meshes a new node can concern: those listing ASGs (a new ASG may match)."""
        return sorted(
            name for name, body in self._bodies.items() if _spec(body).get("autoScalingGroups")
        )

    def naming(self, kind: cluster_members.SourceKind, object_name: str | None = None) -> list[str]:
        """Meshes that list `object_name` of `kind` (or "*", or its "namespace/*"); every mesh
        using `kind` when no name is given (its CRD changed)."""
        found = []
        for name, body in self._bodies.items():
            listed = _listed(_spec(body), kind)
            if listed and (object_name is None or cluster_members.selects(listed, object_name)):
                found.append(name)
        return sorted(found)


def _spec(body: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = body.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _listed(spec: Mapping[str, Any], kind: cluster_members.SourceKind) -> list[str]:
    """The names a spec lists for `kind`, read as the API server holds the spec (camelCase)."""
    section, field = {
        cluster_members.NODE_CLASS.plural: ("karpenter", "nodeClasses"),
        cluster_members.ENI_CONFIG.plural: ("customNetworking", "eniConfigs"),
        cluster_members.SECURITY_GROUP_POLICY.plural: ("podSecurityGroups", "policies"),
    }[kind.plural]
    source = spec.get(section)
    names = source.get(field) if isinstance(source, Mapping) else None
    return [name for name in names if isinstance(name, str)] if isinstance(names, list) else []


class Debounce:
    """Gather requests to reconcile meshes into batches (see the module's docstring).

    `run` receives each batch and must return quickly (it starts the reconciles); its
    exceptions are logged, never lost.
    """

    def __init__(
        self,
        run: Callable[[frozenset[str]], Awaitable[None]],
        delay: float,
        gap: float = 0.0,
        *,
        clock: Clock = LOOP_CLOCK,
    ) -> None:
        self._run = run
        self._delay = delay
        self._gap = gap
        self._clock = clock
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_batch: float | None = None
        self.batches = 0  # batches run, for tests and benchmarks

    def request(self, names: Iterable[str]) -> None:
        """Ask for these meshes to be reconciled soon; safe to call at any rate."""
        self._pending.update(names)
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        wait = self._delay
        if self._last_batch is not None:
            wait = max(wait, self._last_batch + self._gap - self._clock.now())
        await self._clock.sleep(wait)
        batch, self._pending = frozenset(self._pending), set()
        self._last_batch = self._clock.now()
        self.batches += 1
        try:
            await self._run(batch)
        except Exception:
            log.exception("nudged reconciles of %s did not start", ", ".join(sorted(batch)))
        if self._pending:  # requests that came while this batch started
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

"""Make sure kopf serves a custom resource once its CRD is established.

kopf follows CRDs (the operator sets `scanning.disabled = False`): on each CRD event it re-reads
API discovery and starts or stops watching the kinds it finds. Discovery can lag behind a new
CRD's last event (Established); kopf then finds nothing to serve ("Unresolved resources cannot
be served") and does not look again until the next CRD event, which may never come. A kind
kopf does not watch is a kind whose changes nudge nothing (EC2NodeClasses, ENIConfigs), or
whose objects are not reconciled at all (NodeGroupMeshes), until the operator restarts.

So while a CRD is established and kopf does not serve its kind, discovery is read again,
through kopf's own routine, until it does. kopf's `Insights` and that routine are not public
API: `sgmesh.controller.kopf_compat` fences them, and the end-to-end tests that re-create the
NodeGroupMesh CRD and install a source's CRD while the operator runs cover them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import kopf

from sgmesh.controller import kopf_compat

__all__ = [
    "Insights",
    "Rescan",
    "Sleep",
    "established",
    "kopf_rescan",
    "serve_once_established",
    "served_already",
]

log = logging.getLogger(__name__)

ATTEMPTS = 60
INTERVAL_SECONDS = 1.0


class Insights(Protocol):
    """What kopf knows it serves (`kopf._cogs.structs.references.Insights`)."""

    @property
    def watched_resources(self) -> set[Any]: ...


# Read API discovery again for this CRD (its body), as kopf does on a CRD event.
Rescan = Callable[[Mapping[str, Any]], Awaitable[None]]
# Wait this many seconds.
Sleep = Callable[[float], Awaitable[None]]


def established(crd: Mapping[str, Any]) -> bool:
    """Whether a CRD's status says it is Established."""
    return any(
        condition.get("type") == "Established" and condition.get("status") == "True"
        for condition in (crd.get("status") or {}).get("conditions") or []
    )


def serves(insights: Insights, group: str, plural: str) -> bool:
    return any(
        (resource.group, resource.plural) == (group, plural)
        for resource in insights.watched_resources
    )


async def serve_once_established(
    crd: Mapping[str, Any],
    insights: Insights,
    rescan: Rescan,
    *,
    attempts: int = ATTEMPTS,
    interval: float = INTERVAL_SECONDS,
    sleep: Sleep = asyncio.sleep,
) -> bool:
    """Whether kopf serves the CRD's kind, after reading discovery again (every `interval`
    seconds, `attempts` times at most) while the CRD is established and kopf does not.

    It waits on `sleep` (a clock's, as `nudges.Clock.sleep`; asyncio's by default) and reads
    no time, so that tests can run it on fake time."""
    spec = crd.get("spec") or {}
    group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
    for _ in range(attempts):
        if serves(insights, group, plural):
            return True
        if not established(crd):
            return False
        await sleep(interval)
        await rescan(crd)
    if serves(insights, group, plural):
        return True
    log.warning(
        "%s.%s is established but API discovery does not list it yet; changes to its objects "
        "are seen after the next change of its CRD or a restart",
        plural,
        group,
    )
    return False


async def served_already(_: Mapping[str, Any]) -> bool:
    """A stand-in for `serve_once_established` before the operator has started."""
    return True


def kopf_rescan(settings: kopf.OperatorSettings, insights: Any) -> Rescan:
    """kopf's own reaction to a CRD event: read discovery, start or stop watching kinds."""

    async def rescan(crd: Mapping[str, Any]) -> None:
        await kopf_compat.rescan_discovery(
            crd, settings=settings, registry=kopf.get_default_registry(), insights=insights
        )

    return rescan

"""Whether this replica works: `sgmesh_active_replica` is 1 while it does, 0 while kopf's
peering pauses it, so that an alert can tell "replicas up, none working" (every replica paused:
two of equal priority, or none able to renew its record) from "operator down".

Without `--peering` the replica always works. With it, the ClusterKopfPeering object is read
every third of a peer's lifetime and judged by kopf's own rule (`peering.working`); a failed
read leaves the gauge as it was (the API server unreachable pauses nothing by itself).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any, cast

import kubernetes
import urllib3

from sgmesh.controller import peering, shared

__all__ = ["PEERING_GROUP", "PEERING_PLURAL", "follow_peering", "read_peers"]

PEERING_GROUP, PEERING_VERSION, PEERING_PLURAL = "kopf.dev", "v1", "clusterkopfpeerings"
_REQUEST_TIMEOUT_SECONDS = 10

log = logging.getLogger("sgmesh")


def read_peers(api: kubernetes.client.ApiClient, name: str) -> dict[str, Any]:
    """The peering object's status (peer identity → record); {} when the object is not there.
    Listed by name: deploy/ grants what kopf needs (list, watch, patch), not get. Raises on any
    failure to read."""
    objects = kubernetes.client.CustomObjectsApi(api)
    listed = cast(
        dict[str, Any],
        objects.list_cluster_custom_object(
            PEERING_GROUP,
            PEERING_VERSION,
            PEERING_PLURAL,
            field_selector=f"metadata.name={name}",
            _request_timeout=_REQUEST_TIMEOUT_SECONDS,
        ),
    )
    for item in listed.get("items") or []:
        return dict(item.get("status") or {})
    return {}


async def follow_peering(
    runtime: shared.Runtime, name: str | None, me: str, my_priority: int
) -> None:
    """Keep `sgmesh_active_replica` true to what peering does with this replica."""
    if name is None:
        runtime.set_working(True)
        return
    runtime.set_working(False)
    interval = peering.LIFETIME_SECONDS / 3
    loop = asyncio.get_running_loop()
    await runtime.until_ready()
    while True:
        try:
            status = await loop.run_in_executor(
                runtime.executor, read_peers, runtime.kube_api(), name
            )
        except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            log.warning("peering %s could not be read: %s", name, error)
        else:
            now = datetime.datetime.now(datetime.UTC)
            runtime.set_working(peering.working(status, me, my_priority, now))
        await asyncio.sleep(interval)

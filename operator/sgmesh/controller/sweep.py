"""The operator's sweep of abandoned rules (`sgmesh.aws.orphans`): once soon after the start,
then every `SWEEP_EVERY_RESYNCS` default resync periods, in the operator's region and the
cluster's VPC.

The names of the cluster's meshes are read from the API server first; when that read fails,
the round is skipped (a failed read is never "no meshes"). Only a replica that works sweeps: one
that kopf's peering pauses writes nothing to AWS (`shared.Runtime.working`).
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, cast

import kubernetes
import urllib3

from sgmesh.api import models
from sgmesh.aws import errors, orphans
from sgmesh.controller import shared

__all__ = ["SWEEP_EVERY_RESYNCS", "mesh_names", "sweep_forever", "sweep_once"]

SWEEP_EVERY_RESYNCS = 5
_PAGE = 500
_REQUEST_TIMEOUT_SECONDS = 30

log = logging.getLogger("sgmesh")


def mesh_names(api: kubernetes.client.ApiClient) -> set[str]:
    """Every NodeGroupMesh of the cluster, deleting ones included (they clean up after
    themselves); raises on any failure to read them."""
    objects = kubernetes.client.CustomObjectsApi(api)
    names: set[str] = set()
    token = ""
    while True:
        listed = cast(
            dict[str, Any],
            objects.list_cluster_custom_object(
                models.API_GROUP,
                models.API_VERSION,
                models.PLURAL,
                limit=_PAGE,
                _continue=token,
                _request_timeout=_REQUEST_TIMEOUT_SECONDS,
            ),
        )
        names.update(item["metadata"]["name"] for item in listed.get("items", []))
        token = str((listed.get("metadata") or {}).get("continue") or "")
        if not token:
            return names


async def sweep_once(runtime: shared.Runtime) -> int | None:
    """One round; how many rules it revoked, or None when it could not tell or, paused by
    peering, must not act."""
    settings = runtime.settings
    vpc_id, region = settings.pipeline.boundary.vpc_id, settings.region
    if not vpc_id or not region or not runtime.working:
        return None
    loop = asyncio.get_running_loop()
    try:
        living = await loop.run_in_executor(runtime.executor, mesh_names, runtime.kube_api())
    except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError) as error:
        log.warning("orphan sweep skipped: the cluster's meshes could not be listed: %s", error)
        return None
    clients = runtime.clients_for(region)
    swept = partial(
        orphans.sweep,
        clients,
        settings.pipeline.cluster,
        vpc_id,
        frozenset(living),
        settings.pipeline.settling,
    )
    try:
        revoked = await loop.run_in_executor(runtime.executor, swept)
    except errors.ERRORS as error:
        log.warning("orphan sweep skipped: %s", clients.classify(error).describe())
        return None
    for rule in revoked:
        log.warning(
            "revoked rule %s of %s: sgmesh made it (%s), no mesh owns it, and that mesh is gone",
            rule.rule_id,
            rule.group_id,
            rule.description,
        )
    return len(revoked)


async def sweep_forever(runtime: shared.Runtime, first_delay: float) -> None:
    interval = SWEEP_EVERY_RESYNCS * runtime.settings.default_resync_seconds
    await runtime.until_ready()
    await asyncio.sleep(first_delay)
    while True:
        await sweep_once(runtime)
        await asyncio.sleep(interval)

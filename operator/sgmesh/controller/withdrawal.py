"""kopf's handlers that take a deleted NodeGroupMesh out of AWS, as its `deletionPolicy` says:
one mesh behind the operator's finalizer, or every mesh when the NodeGroupMesh CRD is deleted;
and `clean_region`, which takes a mesh out of one region (deletion, or a region it left).

A mesh is cleaned up in every region its status lists (`status.regions`) and in its current
one. The finalizer goes only when cleanup succeeded in all of them: an AWS outage delays
deletion, it never skips cleanup. Nothing here converges a mesh (`sgmesh.controller.meshes`),
and nothing writes metadata beyond the operator's own finalizer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, cast

import kopf
import kubernetes

from sgmesh.api import models
from sgmesh.aws import errors, reconcile
from sgmesh.controller import report, shared, status
from sgmesh.engine import ownership

__all__ = [
    "CRD_NAME",
    "RegionWaits",
    "clean_region",
    "listed_regions",
    "withdraw_on_delete",
    "withdraw_with_the_crd",
]

CRD_NAME = f"{models.PLURAL}.{models.API_GROUP}"

log = logging.getLogger("sgmesh")


@kopf.on.delete(*shared.RESOURCE, retries=None, backoff=10, timeout=None)
async def withdraw_on_delete(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    """Clean up behind the finalizer as `deletionPolicy` says. The finalizer goes only when
    cleanup succeeded: an AWS outage delays deletion, it never skips cleanup."""
    waiting = await _withdraw(memo.runtime, body)
    if waiting:
        _deletion_waits(body, patch, waiting)
        raise kopf.TemporaryError(
            "cleanup: " + "; ".join(each.describe() for each in waiting),
            delay=shared.retry_delay(waiting[0].failure, retry),
        )


@kopf.on.event(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    when=lambda name, **_: name == CRD_NAME,
)
async def withdraw_with_the_crd(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The NodeGroupMesh CRD changed: when it is back, make sure meshes are served again; when
    it is being deleted, every mesh goes with it.

    kopf stops serving meshes the moment their CRD starts terminating (the API no longer offers
    `patch` on them), so their delete handlers never run and their finalizers would hold the CRD
    forever. Each mesh is cleaned up here exactly as its deletion would be, then its finalizer
    is removed; an AWS failure is retried with backoff until every mesh is done.
    """
    runtime: shared.Runtime = memo.runtime
    if not body.metadata.deletion_timestamp:
        # Once it is back, kopf must serve meshes again, without a restart.
        await memo.watching.serve(body)
        return
    loop = asyncio.get_running_loop()
    meshes = kubernetes.client.CustomObjectsApi()
    for attempt in itertools.count():
        waiting: list[str] = []
        try:
            listed = cast(
                dict[str, Any],
                await loop.run_in_executor(
                    runtime.executor, partial(meshes.list_cluster_custom_object, *shared.RESOURCE)
                ),
            )
        except kubernetes.client.exceptions.ApiException as error:
            if error.status == 404:
                return  # the CRD, and every mesh with it, is gone
            listed, waiting = {}, [f"listing meshes failed: {error.status} {error.reason}"]
        for item in listed.get("items", []):
            finalizers: list[str] = item["metadata"].get("finalizers") or []
            if shared.FINALIZER not in finalizers:
                continue
            regions_waiting = await _withdraw(runtime, kopf.Body(item))
            if regions_waiting:
                name = item["metadata"]["name"]
                waiting.extend(f"{name}: {each.describe()}" for each in regions_waiting)
                continue
            release = [
                # Only if nobody changed the finalizers meanwhile; else the next round re-reads.
                {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                {
                    "op": "replace",
                    "path": "/metadata/finalizers",
                    "value": [f for f in finalizers if f != shared.FINALIZER],
                },
            ]
            try:
                await loop.run_in_executor(
                    runtime.executor,
                    partial(
                        meshes.patch_cluster_custom_object,
                        *shared.RESOURCE,
                        item["metadata"]["name"],
                        release,
                        # Said outright: the client sends a merge patch by default, which
                        # the API server refuses for a list of operations (400).
                        _content_type="application/json-patch+json",
                    ),
                )
            except kubernetes.client.exceptions.ApiException as error:
                if error.status != 404:
                    waiting.append(f"releasing {item['metadata']['name']}: {error.status}")
        if not waiting:
            return
        delay = shared.backoff(shared.RETRY_DELAY_SECONDS[errors.ErrorKind.UNAVAILABLE], attempt)
        log.warning(
            "the NodeGroupMesh CRD is being deleted; cleanup waits %.0fs: %s",
            delay,
            "; ".join(waiting),
        )
        await asyncio.sleep(delay)


@dataclasses.dataclass(frozen=True)
class RegionWaits:
    """A region whose cleanup did not finish, and the failure that stopped it."""

    region: str
    failure: errors.AwsFailure

    def describe(self) -> str:
        # Named once, first, for every kind of failure (an access denied names no region).
        return f"in {self.region}: {dataclasses.replace(self.failure, region=None).describe()}"


def listed_regions(status: Mapping[str, Any]) -> list[str]:
    """The regions a mesh's status lists as where it may own rules."""
    return [str(region) for region in status.get("regions") or [] if region]


async def clean_region(
    runtime: shared.Runtime,
    body: kopf.Body,
    owner: ownership.Owner,
    region: str,
    *,
    with_roles: bool,
    retain_cni: bool = True,
    policy_arns: tuple[str, ...] = (),
) -> reconcile.Outcome | errors.AwsFailure:
    """Take away what `owner` holds in `region`: its rules there and, `with_roles`, its CNI
    records (IAM is global: they go with one region's cleanup, the mesh's own region's).

    What was done, when nothing the mesh owns is left there; else the failure that stopped
    it: then nothing was taken as gone, and the caller retries."""
    clients = runtime.clients_for(region)
    withdraw = partial(
        reconcile.withdraw,
        clients,
        owner,
        retain_cni,
        policy_arns=policy_arns,
        role_memory=runtime.settings.pipeline.role_memory,
        with_roles=with_roles,
        settling=runtime.settings.pipeline.settling,
    )
    try:
        outcome = await asyncio.get_running_loop().run_in_executor(runtime.executor, withdraw)
    except errors.ERRORS as error:
        failure = clients.classify(error)
        runtime.metrics.aws_errors.labels(failure.code).inc()
        return failure
    report.changes(runtime, body, outcome)
    return outcome.failures[0].failure if outcome.failures else outcome


async def _withdraw(runtime: shared.Runtime, body: kopf.Body) -> list[RegionWaits]:
    """Take away what a deleted mesh owns, as its `deletionPolicy` says, in its region and in
    every region its status lists; the regions whose cleanup failed (then nothing there was
    taken as gone, and the caller retries)."""
    uid = body.metadata.uid or ""
    name = body.metadata.name or ""
    spec: Mapping[str, Any] = body.spec
    async with runtime.lock(uid):
        runtime.withdrawing.add(uid)
        policy = spec.get("deletionPolicy", models.DeletionPolicy.DELETE.value)
        mode = spec.get("mode", models.Mode.ENFORCE.value)
        if policy == models.DeletionPolicy.RETAIN.value or mode == models.Mode.DRY_RUN.value:
            why = "deletionPolicy Retain" if mode != models.Mode.DRY_RUN.value else "DryRun"
            report.event(
                body,
                "Normal",
                "Retained",
                f"{why}: the rules and attachments the mesh made are left in AWS",
            )
            runtime.forget(uid, name)
            return []
        current = spec.get("region") or runtime.settings.region
        # The current region first: the mesh's roles are cleaned up with it.
        regions = _in_order(current, listed_regions(body.status))
        if not regions:
            # Without a region this mesh could never reconcile, so it wrote nothing; blocking
            # its deletion forever would help nobody.
            report.event(
                body,
                "Warning",
                status.INVALID_SPEC,
                "no region (spec.region or the operator's --region): nothing to clean up",
            )
            runtime.forget(uid, name)
            return []
        owner = ownership.Owner(runtime.settings.pipeline.cluster, name)
        retain_cni = bool((spec.get("cniPolicy") or {}).get("retainOnRemoval", True))
        policy_arn = (spec.get("cniPolicy") or {}).get("policyArn")
        waiting: list[RegionWaits] = []
        for index, region in enumerate(regions):
            cleaned = await clean_region(
                runtime,
                body,
                owner,
                region,
                with_roles=index == 0,
                retain_cni=retain_cni,
                policy_arns=(str(policy_arn),) if policy_arn else (),
            )
            if isinstance(cleaned, errors.AwsFailure):
                waiting.append(RegionWaits(region, cleaned))
        if waiting:
            return waiting
    runtime.forget(uid, name)
    return []


def _in_order(current: str | None, listed: Sequence[str]) -> list[str]:
    """`current` (when there is one), then the other listed regions, each once."""
    return list(dict.fromkeys([*([current] if current else []), *sorted(listed)]))


def _deletion_waits(body: kopf.Body, patch: kopf.Patch, waiting: Sequence[RegionWaits]) -> None:
    """A mesh whose cleanup cannot finish says so, and in which regions, instead of the Ready
    it had before; the status lists only the regions still to clean up."""
    message = "deleting: cleanup waits until AWS answers " + "; ".join(
        f"({each.describe()})" for each in waiting
    )
    report.set_status(
        body,
        patch,
        status.failure_status(
            status.DELETING,
            message,
            body.metadata.get("generation"),
            body.status,
            regions=[each.region for each in waiting],
        ),
    )

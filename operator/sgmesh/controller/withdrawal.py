"""kopf's handlers that take a deleted NodeGroupMesh out of AWS, as its `deletionPolicy` says:
one mesh behind the operator's finalizer, or every mesh when the NodeGroupMesh CRD is deleted.

The finalizer goes only when cleanup succeeded: an AWS outage delays deletion, it never skips
cleanup. Nothing here converges a mesh (`sgmesh.controller.meshes`), and nothing writes
metadata beyond the operator's own finalizer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any, cast

import kopf
import kubernetes

from sgmesh.api import models
from sgmesh.aws import errors, reconcile
from sgmesh.controller import report, shared, status
from sgmesh.engine import ownership

__all__ = ["CRD_NAME", "withdraw_on_delete", "withdraw_with_the_crd"]

CRD_NAME = f"{models.PLURAL}.{models.API_GROUP}"

log = logging.getLogger("sgmesh")


@kopf.on.delete(*shared.RESOURCE, retries=None, backoff=10, timeout=None)
async def withdraw_on_delete(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    """Clean up behind the finalizer as `deletionPolicy` says. The finalizer goes only when
    cleanup succeeded: an AWS outage delays deletion, it never skips cleanup."""
    failure = await _withdraw(memo.runtime, body)
    if failure is not None:
        _deletion_waits(body, patch, failure)
        raise kopf.TemporaryError(
            f"cleanup: {failure.describe()}", delay=shared.retry_delay(failure, retry)
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
            failure = await _withdraw(runtime, kopf.Body(item))
            if failure is not None:
                waiting.append(failure.describe())
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
        delay = min(10.0 * 2 ** min(attempt, 5), shared.MAX_RETRY_DELAY_SECONDS)
        log.warning(
            "the NodeGroupMesh CRD is being deleted; cleanup waits %.0fs: %s",
            delay,
            "; ".join(waiting),
        )
        await asyncio.sleep(delay)


async def _withdraw(runtime: shared.Runtime, body: kopf.Body) -> errors.AwsFailure | None:
    """Take away what a deleted mesh owns, as its `deletionPolicy` says; the failure that
    stopped it, if any (then nothing was taken as gone, and the caller retries)."""
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
            return None
        region = spec.get("region") or runtime.settings.region
        if not region:
            # Without a region this mesh could never reconcile, so it wrote nothing; blocking
            # its deletion forever would help nobody.
            report.event(
                body,
                "Warning",
                status.INVALID_SPEC,
                "no region (spec.region or the operator's --region): nothing to clean up",
            )
            runtime.forget(uid, name)
            return None
        owner = ownership.Owner(runtime.settings.pipeline.cluster, name)
        retain_cni = bool((spec.get("cniPolicy") or {}).get("retainOnRemoval", True))
        policy_arn = (spec.get("cniPolicy") or {}).get("policyArn")
        withdraw = partial(
            reconcile.withdraw,
            policy_arns=(str(policy_arn),) if policy_arn else (),
            role_memory=runtime.settings.pipeline.role_memory,
        )
        clients = runtime.clients_for(region)
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                runtime.executor, withdraw, clients, owner, retain_cni
            )
        except errors.ERRORS as error:
            failure = clients.classify(error)
            runtime.metrics.aws_errors.labels(failure.code).inc()
            return failure
        report.changes(runtime, body, outcome)
        if outcome.failures:
            return outcome.failures[0].failure
    runtime.forget(uid, name)
    return None


def _deletion_waits(body: kopf.Body, patch: kopf.Patch, failure: errors.AwsFailure) -> None:
    """A mesh whose cleanup cannot finish says so, instead of the Ready it had before."""
    message = f"deleting: cleanup waits until AWS answers ({failure.describe()})"
    report.set_status(
        body,
        patch,
        status.failure_status(
            status.DELETING, message, body.metadata.get("generation"), body.status
        ),
    )

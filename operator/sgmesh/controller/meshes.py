"""kopf's handlers that converge a NodeGroupMesh: when it appears, its spec changes or the
operator restarts, at every resync, and when the cluster nudges it.

Handlers are thin: validate the body into the pydantic model, run `reconcile.converge` in a
worker thread, write status, post events for what changed, count metrics. Errors follow one
taxonomy: an invalid spec is permanent (`InvalidSpec`); AWS outages and throttling are
temporary and retried with backoff, and never lead to a removal; missing permissions say
which. Change handlers watch `spec` only, so the operator's own writes never trigger them.

`status.regions` lists where the mesh may own rules, before anything is written there; once
the mesh converges in its region, the regions it left are cleaned up and unlisted. A mesh
being deleted is never converged again: `sgmesh.controller.withdrawal` takes it out of AWS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, cast

import kopf
import kubernetes
import urllib3

from sgmesh.api import models
from sgmesh.aws import client, errors, reconcile
from sgmesh.controller import report, schedule, shared, status, withdrawal
from sgmesh.engine import cluster_members, ownership
from sgmesh.kube import sources

__all__ = ["STATUS_WRITE_TIMEOUT_SECONDS", "converge_on_change", "nudge", "resync"]

STATUS_WRITE_TIMEOUT_SECONDS = 10

log = logging.getLogger("sgmesh")


@kopf.on.resume(*shared.RESOURCE, retries=None, backoff=10, timeout=None)
@kopf.on.create(*shared.RESOURCE, retries=None, backoff=10, timeout=None)
@kopf.on.update(*shared.RESOURCE, field="spec", retries=None, backoff=10, timeout=None)
async def converge_on_change(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    """A mesh appeared, changed its spec, or the operator restarted: reconcile now.

    Failures raise kopf errors so that kopf retries with backoff (temporary) or stops
    (invalid spec); the status says why either way.
    """
    if body.spec.get("extraSecurityGroupIds"):
        report.event(
            body,
            "Warning",
            "DeprecatedField",
            "spec.extraSecurityGroupIds is deprecated: list the same ids under "
            "spec.securityGroups.ids (same meaning)",
        )
    await _converge(memo.runtime, body, patch, retry=retry, raise_on_failure=True)


async def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Re-resolve selectors and repair drift every `spec.resyncSeconds`.

    The timer ticks every few seconds (registered by `sgmesh.controller.lifecycle.run`, which
    knows the tick); a tick does nothing until the mesh's resync period has passed since its
    last reconcile. Failures are written to status and tried again at the next period, so a
    mesh failing in AWS never holds anything else up.
    """
    runtime: shared.Runtime = memo.runtime
    uid = body.metadata.uid or ""
    period = schedule.period(body.spec, runtime.settings.default_resync_seconds)
    now = runtime.clock()
    # A mesh the timer has not seen yet waits a period: its create or resume handler reconciles
    # it meanwhile.
    last = runtime.last_sync.setdefault(uid, now)
    if not schedule.due(last, now, period):
        return
    runtime.last_sync[uid] = now
    await _reconcile_apart(runtime, body)


async def nudge(runtime: shared.Runtime, names: frozenset[str]) -> None:
    """Start a reconcile of each mesh now, reading AWS afresh (something new appeared)."""
    for name in sorted(names - runtime.nudged):
        if runtime.watching is None or runtime.watching.meshes.get(name) is None:
            continue
        runtime.nudged.add(name)
        task = asyncio.create_task(_reconcile_nudged(runtime, name))
        runtime.background.add(task)
        task.add_done_callback(runtime.background.discard)


async def _reconcile_apart(
    runtime: shared.Runtime,
    body: kopf.Body,
    *,
    fresh: bool = False,
    current: Callable[[], kopf.Body | None] | None = None,
) -> None:
    """Reconcile outside kopf's change handlers (resync, nudge); the status is written apart:
    through kopf's patch, a write during an API-server outage would hold the timer (and then
    end it) while AWS drift waits."""
    written = kopf.Patch()
    await _converge(
        runtime, body, written, retry=0, raise_on_failure=False, fresh=fresh, current=current
    )
    if written:
        task = asyncio.create_task(_write_status(runtime, body.metadata.name or "", dict(written)))
        runtime.background.add(task)
        task.add_done_callback(runtime.background.discard)


async def _reconcile_nudged(runtime: shared.Runtime, name: str) -> None:
    started = False

    def current() -> kopf.Body | None:
        # Called once the mesh's lock is held: a nudge from now on needs another reconcile.
        nonlocal started
        started = True
        runtime.nudged.discard(name)
        latest = runtime.watching.meshes.get(name) if runtime.watching else None
        return kopf.Body(cast(kopf.RawBody, dict(latest))) if latest is not None else None

    latest = runtime.watching.meshes.get(name) if runtime.watching else None
    try:
        if latest is not None:
            runtime.metrics.nudges.inc()
            body = kopf.Body(cast(kopf.RawBody, dict(latest)))
            await _reconcile_apart(runtime, body, fresh=True, current=current)
    finally:
        if not started:
            runtime.nudged.discard(name)


async def _write_status(runtime: shared.Runtime, name: str, written: dict[str, Any]) -> None:
    """Merge-patch a resync's status; if the API server cannot take it now, the next resync
    writes a newer one (nothing else waits on it)."""
    loop = asyncio.get_running_loop()
    meshes = kubernetes.client.CustomObjectsApi()
    try:
        await loop.run_in_executor(
            runtime.executor,
            partial(
                meshes.patch_cluster_custom_object_status,
                *shared.RESOURCE,
                name,
                written,
                _content_type="application/merge-patch+json",
                _request_timeout=STATUS_WRITE_TIMEOUT_SECONDS,
            ),
        )
    except (kubernetes.client.exceptions.ApiException, urllib3.exceptions.HTTPError) as error:
        log.warning("status of mesh %s not written, the next resync writes it: %s", name, error)


async def _converge(
    runtime: shared.Runtime,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    raise_on_failure: bool,
    *,
    fresh: bool = False,
    current: Callable[[], kopf.Body | None] | None = None,
) -> None:
    """Reconcile one mesh under its lock. `current`: the mesh's latest body, asked once the
    lock is held (a nudge may have waited for it while the spec changed); `fresh`: read AWS
    as it is now."""
    uid = body.metadata.uid or ""
    async with runtime.lock(uid):
        if current is not None:
            latest = current()
            if latest is None or latest.metadata.uid != uid:
                return  # deleted (or deleted and created again) meanwhile
            body = latest
        name = body.metadata.name or ""
        generation = body.metadata.get("generation")
        previous: Mapping[str, Any] = body.status
        if uid in runtime.withdrawing or body.metadata.deletion_timestamp:
            return  # a deleted mesh is withdrawn, never converged again
        started = runtime.clock()
        try:
            mesh, region = _mesh_and_region(runtime, body)
        except models.InvalidSpecError as error:
            _failed(
                runtime,
                body,
                patch,
                previous,
                result="invalid",
                reason=status.INVALID_SPEC,
                message=str(error),
            )
            if raise_on_failure:
                raise kopf.PermanentError(str(error)) from error
            return

        if not await _listed_before_writing(
            runtime, mesh, region, previous, raise_on_failure=raise_on_failure
        ):
            return

        clients = runtime.clients_for(region)
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                runtime.executor,
                partial(
                    _pipeline,
                    runtime,
                    clients,
                    mesh,
                    fresh=fresh,
                    previous=previous,
                    generation=generation,
                ),
            )
        except sources.ClusterReadError as error:
            _failed(
                runtime,
                body,
                patch,
                previous,
                result="failed",
                reason=sources.READ_FAILED,
                message=str(error),
                transient=True,
            )
            if raise_on_failure:
                delay = shared.backoff(shared.CLUSTER_READ_RETRY_SECONDS, retry)
                raise kopf.TemporaryError(str(error), delay=delay) from error
            return
        except errors.ERRORS as error:
            failure = clients.classify(error)
            runtime.metrics.aws_errors.labels(failure.code).inc()
            _failed(
                runtime,
                body,
                patch,
                previous,
                result="failed",
                reason=failure.kind.value,
                message=failure.describe(),
                transient=failure.retryable,
                synced_reason=status.failure_reason(failure),
            )
            if raise_on_failure:
                raise kopf.TemporaryError(
                    failure.describe(), delay=shared.retry_delay(failure, retry)
                ) from error
            return
        finally:
            runtime.metrics.duration.labels(name).observe(runtime.clock() - started)

        runtime.last_sync[uid] = runtime.clock()
        regions = await _regions_after(
            runtime, body, mesh, outcome, region=region, previous=previous
        )
        report.set_status(
            body, patch, status.outcome_status(outcome, mesh, generation, previous, regions=regions)
        )
        report.changes(runtime, body, outcome)
        runtime.metrics.describe_mesh(name, len(outcome.topology.members), outcome.rules())
        for failed in outcome.failures:
            runtime.metrics.aws_errors.labels(failed.failure.code).inc()
        result = (
            "failed" if outcome.failures else "problem" if outcome.plan.problems else "converged"
        )
        runtime.metrics.reconciles.labels(name, result).inc()
        retryable = [f.failure for f in outcome.failures if f.failure.retryable]
        if raise_on_failure and retryable:
            raise kopf.TemporaryError(
                retryable[0].describe(), delay=shared.retry_delay(retryable[0], retry)
            )


def _mesh_and_region(runtime: shared.Runtime, body: kopf.Body) -> tuple[models.NodeGroupMesh, str]:
    """The mesh, validated, and the region it is reconciled in; `InvalidSpecError` when it
    has none."""
    mesh = models.NodeGroupMesh.parse(dict(body), f"NodeGroupMesh {body.metadata.name or ''}")
    region = mesh.spec.region or runtime.settings.region
    if not region:
        raise models.InvalidSpecError(
            "spec.region is not set and the operator has no default region (--region)"
        )
    return mesh, region


async def _listed_before_writing(
    runtime: shared.Runtime,
    mesh: models.NodeGroupMesh,
    region: str,
    previous: Mapping[str, Any],
    *,
    raise_on_failure: bool,
) -> bool:
    """Whether the reconcile may go on: `status.regions` lists `region` before anything is
    written there, so that an operator stopped between a write and the status that follows
    never forgets where the mesh owns something. DryRun writes nothing, so it lists nothing.

    The list is written now, ahead of the reconcile's status; when the API server does not
    take it, nothing is written in AWS (kopf retries a change; a resync waits a period)."""
    listed = withdrawal.listed_regions(previous)
    if mesh.spec.mode is not models.Mode.ENFORCE or region in listed:
        return True
    meshes = kubernetes.client.CustomObjectsApi()
    try:
        await asyncio.get_running_loop().run_in_executor(
            runtime.executor,
            partial(
                meshes.patch_cluster_custom_object_status,
                *shared.RESOURCE,
                mesh.name,
                {"status": {"regions": sorted({*listed, region})}},
                _content_type="application/merge-patch+json",
                _request_timeout=STATUS_WRITE_TIMEOUT_SECONDS,
            ),
        )
    except (kubernetes.client.exceptions.ApiException, urllib3.exceptions.HTTPError) as error:
        message = f"nothing is written in {region} before status.regions lists it: {error}"
        log.warning("mesh %s: %s", mesh.name, message)
        runtime.metrics.reconciles.labels(mesh.name, "failed").inc()
        if raise_on_failure:
            delay = shared.RETRY_DELAY_SECONDS[errors.ErrorKind.UNAVAILABLE]
            raise kopf.TemporaryError(message, delay=delay) from error
        return False
    return True


async def _regions_after(
    runtime: shared.Runtime,
    body: kopf.Body,
    mesh: models.NodeGroupMesh,
    outcome: reconcile.Outcome,
    *,
    region: str,
    previous: Mapping[str, Any],
) -> set[str] | None:
    """The regions where the mesh may own rules after a reconcile in `region`, having cleaned
    up the others it left; None in DryRun, which writes nothing anywhere (the list stays).

    The others are cleaned up only once the mesh converged in `region`: a wrong region, where
    its members cannot be resolved, must never take down what it serves in the right one."""
    if mesh.spec.mode is not models.Mode.ENFORCE:
        return None
    listed = withdrawal.listed_regions(previous)
    left = [other for other in listed if other != region]
    cleaned = (
        await _leave(runtime, body, outcome.owner, region, left) if outcome.converged else set()
    )
    return {*listed, region} - cleaned


async def _leave(
    runtime: shared.Runtime,
    body: kopf.Body,
    owner: ownership.Owner,
    region: str,
    left: list[str],
) -> set[str]:
    """Clean up the regions the mesh left for `region`: their rules (its roles, global, are
    the reconcile's in `region`). Those now clean; a region whose cleanup failed stays listed
    and is tried again at the next reconcile.

    Neither `deletionPolicy` (Retain is about the mesh's deletion; the mesh lives on and its
    rules moved) nor `cniPolicy.retainOnRemoval` (roles are not a region's) matters here."""
    cleaned: set[str] = set()
    for old in left:
        withdrawn = await withdrawal.clean_region(runtime, body, owner, old, with_roles=False)
        if isinstance(withdrawn, errors.AwsFailure):
            report.event(
                body,
                "Warning",
                "RegionCleanupFailed",
                f"spec.region is {region}; what the mesh owns in {old} stays listed in "
                f"status.regions and is cleaned up at the next reconcile: "
                f"{withdrawn.describe()}",
            )
            continue
        cleaned.add(old)
        taken = len(withdrawn.applied.done) if withdrawn.applied else 0
        report.event(
            body,
            "Normal",
            "RegionCleanedUp",
            f"spec.region is {region}: {taken} rules the mesh owned in {old} are revoked or "
            "released; nothing of it is left there"
            if taken
            else f"spec.region is {region}: the mesh owned nothing in {old}",
        )
    return cleaned


def _failed(
    runtime: shared.Runtime,
    body: kopf.Body,
    patch: kopf.Patch,
    previous: Mapping[str, Any],
    *,
    result: str,
    reason: str,
    message: str,
    transient: bool = False,
    synced_reason: str | None = None,
) -> None:
    """Count a reconcile that did not reach a plan, and say why in the status. `transient`:
    the failure says nothing of AWS's state, so Ready stays as AWS was last seen
    (`status.failure_status`)."""
    runtime.metrics.reconciles.labels(body.metadata.name or "", result).inc()
    if transient:
        runtime.metrics.unsynced.labels(reason).inc()
    generation = body.metadata.get("generation")
    report.set_status(
        body,
        patch,
        status.failure_status(
            reason,
            message,
            generation,
            previous,
            transient=transient,
            synced_reason=synced_reason,
        ),
    )


def _pipeline(
    runtime: shared.Runtime,
    clients: client.AwsClients,
    mesh: models.NodeGroupMesh,
    *,
    fresh: bool,
    previous: Mapping[str, Any] | None = None,
    generation: int | None = None,
) -> reconcile.Outcome:
    """Read the mesh's Kubernetes sources (and aws-node's own credentials, IRSA or EKS Pod
    Identity) and reconcile; in a worker thread. `previous`: the mesh's status, whose members
    of this `generation` of the spec stay meshed while their objects are gone
    (`cluster_members.last_members`), and whose roles recorded as the mesh's get back a
    record tag removed by hand."""
    cluster = cluster_members.NO_CLUSTER_MEMBERS
    if mesh.spec.uses_cluster or mesh.spec.cni_policy.attach:
        objects = sources.read(
            mesh.spec, runtime.kube_api(), aws_node_credentials=runtime.aws_node_role
        )
        cluster = cluster_members.resolve(
            mesh.spec, objects, cluster_members.last_members(previous, generation)
        )
    return reconcile.converge(
        clients,
        mesh,
        runtime.settings.pipeline,
        cluster=cluster,
        fresh=fresh,
        recorded_cni=models.recorded_cni_policy(previous),
    )

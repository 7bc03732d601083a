"""The operator: kopf handlers that run the reconcile pipeline for NodeGroupMesh resources.

Handlers are thin: validate the body into the pydantic model, run `reconcile.converge` (or
`reconcile.withdraw` on deletion) in a worker thread, write status through kopf's patch, post
events for what changed, count metrics. Errors follow one taxonomy: an invalid spec is
permanent (`InvalidSpec`); AWS outages and throttling are temporary and retried with backoff,
and never lead to a removal; missing permissions say which.

GitOps-quiet: kopf's progress and diff base live in `status.kopf`, our finalizer is
`sgmesh.io/finalizer`, change handlers watch `spec` only. The operator never writes metadata
beyond its finalizer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import kopf
import kubernetes
import urllib3
from aiohttp import web

from sgmesh.api import models
from sgmesh.aws import client, discovery, errors, reconcile, shared_reads
from sgmesh.controller import kopf_compat, metrics, nudges, serving, status, watches
from sgmesh.engine import cluster_members, ownership, planning
from sgmesh.kube import sources

__all__ = ["FINALIZER", "OperatorSettings", "run"]

FINALIZER = "sgmesh.io/finalizer"
RESOURCE = (models.API_GROUP, models.API_VERSION, "nodegroupmeshes")
CRD_NAME = f"nodegroupmeshes.{models.API_GROUP}"
DEFAULT_RESYNC_SECONDS = 60
# The resync timer ticks often and reconciles each mesh when its own resyncSeconds have passed.
TIMER_TICK_SECONDS = 5.0
# Operator clients fail fast and let kopf's backoff retry: a thread is never held for long.
AWS_ATTEMPTS = 4
WORKER_THREADS = 32
RETRY_DELAY_SECONDS = {
    errors.ErrorKind.UNAVAILABLE: 10.0,
    errors.ErrorKind.CONCURRENT_CHANGE: 5.0,
    errors.ErrorKind.ACCESS_DENIED: 60.0,
    errors.ErrorKind.REJECTED: 60.0,
}
MAX_RETRY_DELAY_SECONDS = 300.0
PEERING_LIFETIME_SECONDS = 30
STATUS_WRITE_TIMEOUT_SECONDS = 10
_QUIET_LIBRARIES = ("botocore", "boto3", "urllib3", "s3transfer")
EVENT_REASONS = {
    "authorize": "RulesAuthorized",
    "revoke": "RulesRevoked",
    "tag-rule": "RulesCoOwned",
    "untag-rule": "RulesReleased",
    "tag-role": "AttachmentRecorded",
    "attach": "PolicyAttached",
    "detach": "PolicyDetached",
    "untag-role": "AttachmentReleased",
}
_EVENT_ITEMS = 10

log = logging.getLogger("sgmesh")


@dataclass(frozen=True)
class OperatorSettings:
    pipeline: reconcile.Settings
    region: str | None
    metrics_port: int = 8080
    default_resync_seconds: int = DEFAULT_RESYNC_SECONDS
    log_format: str = "plain"
    peering: str | None = None
    verbose: bool = False
    # How often the resync timer looks at each mesh (the test suite's end-to-end tests that
    # wait on a resync set it lower).
    timer_tick_seconds: float = TIMER_TICK_SECONDS


@dataclass
class Runtime:
    """What the handlers share, created at start-up and kept in kopf's memo."""

    settings: OperatorSettings
    metrics: metrics.Metrics
    executor: ThreadPoolExecutor
    # One for every region: meshes reconciled together read AWS once (never across a write).
    shared_reads: shared_reads.SharedReads = field(default_factory=shared_reads.SharedReads)
    _clients: client.ClientsByRegion | None = None
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    last_sync: dict[str, float] = field(default_factory=dict)
    withdrawing: set[str] = field(default_factory=set)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    web_runner: web.AppRunner | None = None
    # aws-node's IRSA role, read at most once a minute for every mesh (set at start-up).
    aws_node_role: sources.AwsNodeRole = field(default_factory=sources.AwsNodeRole)
    # One Kubernetes client, so one connection pool, for every worker's reads of the cluster.
    _kube_api: kubernetes.client.ApiClient | None = None
    _kube_api_lock: threading.Lock = field(default_factory=threading.Lock)
    # What the cluster watches keep, and their nudges (`sgmesh.controller.watches`).
    watching: watches.Watching | None = None
    # Meshes nudged whose reconcile has not started yet: one more nudge would add nothing.
    nudged: set[str] = field(default_factory=set)

    def kube_api(self) -> kubernetes.client.ApiClient:
        """Made on first use: by then kopf has loaded the cluster's configuration."""
        with self._kube_api_lock:
            if self._kube_api is None:
                self._kube_api = kubernetes.client.ApiClient()
            return self._kube_api

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    def clients_for(self, region: str) -> client.AwsClients:
        if self._clients is None:
            self._clients = client.ClientsByRegion(
                max_attempts=AWS_ATTEMPTS,
                listener=self.metrics.count_call,
                max_pool_connections=WORKER_THREADS,
                shared_reads=self.shared_reads,
            )
        return self._clients(region)


def run(settings: OperatorSettings) -> None:
    """Run the operator until it is stopped (SIGTERM/SIGINT)."""
    log_format = {
        "plain": kopf.LogFormat.PLAIN,
        "full": kopf.LogFormat.FULL,
        "json": kopf.LogFormat.JSON,
    }[settings.log_format]
    kopf.configure(verbose=settings.verbose, log_format=log_format)
    # --verbose sets the root logger to DEBUG; the AWS SDK's debug records carry request
    # signatures, session tokens and whole response bodies (launch templates' user data among
    # them). They never reach the operator's log, whatever its verbosity.
    for library in _QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(logging.INFO)
    # kopf raises it once the start-up handlers have run; /readyz reports it.
    started = threading.Event()
    # Bound now: a port in use is an error naming the setting, before anything starts.
    listening = None
    if settings.metrics_port:
        try:
            listening = metrics.listen(settings.metrics_port)
        except OSError as error:
            raise SystemExit(
                f"error: --metrics-port {settings.metrics_port} (env SGMESH_METRICS_PORT): "
                f"cannot listen on it: {error.strerror or error}"
            ) from None
    # What kopf serves; kept so that a re-created CRD is served again (`withdraw_with_the_crd`).
    insights = kopf_compat.new_insights()
    tick = settings.timer_tick_seconds
    kopf.timer(*RESOURCE, interval=tick, initial_delay=tick)(resync)
    kopf.run(
        clusterwide=True,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        identity=kopf_compat.identity(operator_identity()),
        priority=peering_priority(time.time()),
        ready_flag=started,
        insights=insights,
        memo=kopf.Memo(
            operator_settings=settings, started=started, insights=insights, listening=listening
        ),
    )


def operator_identity() -> str:
    """Who this process is among peers: the pod's name when deploy/ passes it.

    kopf's own guess calls `getpass.getuser()`, which fails for a uid without a passwd entry
    (the image runs as 65532 and has none), so the operator always names itself.
    """
    name = os.environ.get("POD_NAME") or os.environ.get("POD_ID") or socket.gethostname()
    suffix = "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=5))
    return f"sgmesh@{name}/{os.getpid()}/{suffix}"


# Peering priorities: kopf pauses every operator that sees a peer of higher or *equal*
# priority, so equal priorities leave no replica working. The oldest replica wins (a new
# replica never takes work from a healthy one), and a random tail breaks a tie between
# replicas started in the same second.
_PRIORITY_EPOCH_LIMIT = 2**33
_PRIORITY_TIEBREAK = 1_000_000


def peering_priority(started_at: float) -> int:
    """Higher for replicas started earlier; distinct for replicas started together."""
    age_rank = _PRIORITY_EPOCH_LIMIT - int(started_at)
    return age_rank * _PRIORITY_TIEBREAK + random.randrange(_PRIORITY_TIEBREAK)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator_settings: OperatorSettings = memo.operator_settings
    settings.persistence.finalizer = FINALIZER
    # kopf follows CustomResourceDefinitions (read-only rights in deploy/): when the
    # NodeGroupMesh CRD goes it stops watching meshes instead of failing on the watch's 404 and
    # exiting, and serves them again as soon as the CRD is back, without a restart. While the
    # CRD terminates kopf no longer serves meshes; `withdraw_with_the_crd` finishes them.
    settings.scanning.disabled = False
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
    # A watch that the network silently dropped ends by itself and is re-established.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf's own per-handler events would repeat on every retry; ours say what changed.
    settings.posting.level = logging.WARNING
    if operator_settings.peering is not None:
        settings.peering.clusterwide = True
        settings.peering.mandatory = True
        # A replica that died without saying so (SIGKILL, node lost) is presumed dead when its
        # record is this old, and a paused replica takes over: well within a minute.
        settings.peering.lifetime = PEERING_LIFETIME_SECONDS
    runtime = Runtime(
        settings=operator_settings,
        metrics=metrics.Metrics(),
        executor=ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="sgmesh-aws"),
    )
    runtime.aws_node_role = sources.AwsNodeRole(
        lambda: sources.read_aws_node_role(runtime.kube_api())
    )
    runtime.watching = memo.watching = watches.Watching(
        meshes=nudges.MeshIndex(),
        nodes=nudges.Debounce(
            partial(_nudge, runtime),
            watches.NODE_DELAY_SECONDS,
            watches.NODE_GAP_SECONDS,
        ),
        sources=nudges.Debounce(partial(_nudge, runtime), watches.SOURCE_DELAY_SECONDS),
        count_nodes=runtime.metrics.watched_nodes.set,
        # Also serves the NodeGroupMesh CRD's return (`withdraw_with_the_crd`).
        serve=partial(
            serving.serve_once_established,
            insights=memo.insights,
            rescan=serving.kopf_rescan(settings, memo.insights),
        ),
    )
    if memo.listening is not None:
        runtime.web_runner = await metrics.serve(
            runtime.metrics, memo.listening, is_ready=memo.started.is_set
        )
    memo.runtime = runtime
    log.info(
        "sgmesh operator started: cluster %s, default region %s, metrics port %s",
        operator_settings.pipeline.cluster,
        operator_settings.region or "(from each mesh)",
        operator_settings.metrics_port or "off",
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    if runtime.watching is not None:
        await runtime.watching.nodes.close()
        await runtime.watching.sources.close()
    if runtime.web_runner is not None:
        await runtime.web_runner.cleanup()
    runtime.executor.shutdown(wait=False, cancel_futures=True)


@kopf.on.resume(*RESOURCE, retries=None, backoff=10, timeout=None)
@kopf.on.create(*RESOURCE, retries=None, backoff=10, timeout=None)
@kopf.on.update(*RESOURCE, field="spec", retries=None, backoff=10, timeout=None)
async def converge_on_change(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    """A mesh appeared, changed its spec, or the operator restarted: reconcile now.

    Failures raise kopf errors so that kopf retries with backoff (temporary) or stops
    (invalid spec); the status says why either way.
    """
    if body.spec.get("extraSecurityGroupIds"):
        _event(
            body,
            "Warning",
            "DeprecatedField",
            "spec.extraSecurityGroupIds is deprecated: list the same ids under "
            "spec.securityGroups.ids (same meaning)",
        )
    await _converge(memo.runtime, body, patch, retry=retry, raise_on_failure=True)


async def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Re-resolve selectors and repair drift every `spec.resyncSeconds`.

    The timer ticks every few seconds; a tick does nothing until the mesh's resync period has
    passed since its last reconcile. Failures are written to status and tried again at the
    next period, so a mesh failing in AWS never holds anything else up.
    """
    runtime: Runtime = memo.runtime
    uid = body.metadata.uid or ""
    resync_seconds = _resync_seconds(body.spec, runtime.settings.default_resync_seconds)
    last = runtime.last_sync.setdefault(uid, time.monotonic())
    if time.monotonic() - last < resync_seconds:
        return
    runtime.last_sync[uid] = time.monotonic()
    await _reconcile_apart(runtime, body)


async def _reconcile_apart(
    runtime: Runtime,
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


async def _nudge(runtime: Runtime, names: frozenset[str]) -> None:
    """Start a reconcile of each mesh now, reading AWS afresh (something new appeared)."""
    for name in sorted(names - runtime.nudged):
        if runtime.watching is None or runtime.watching.meshes.get(name) is None:
            continue
        runtime.nudged.add(name)
        task = asyncio.create_task(_reconcile_nudged(runtime, name))
        runtime.background.add(task)
        task.add_done_callback(runtime.background.discard)


async def _reconcile_nudged(runtime: Runtime, name: str) -> None:
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


async def _write_status(runtime: Runtime, name: str, written: dict[str, Any]) -> None:
    """Merge-patch a resync's status; if the API server cannot take it now, the next resync
    writes a newer one (nothing else waits on it)."""
    loop = asyncio.get_running_loop()
    meshes = kubernetes.client.CustomObjectsApi()
    try:
        await loop.run_in_executor(
            runtime.executor,
            partial(
                meshes.patch_cluster_custom_object_status,
                *RESOURCE,
                name,
                written,
                _content_type="application/merge-patch+json",
                _request_timeout=STATUS_WRITE_TIMEOUT_SECONDS,
            ),
        )
    except (kubernetes.client.exceptions.ApiException, urllib3.exceptions.HTTPError) as error:
        log.warning("status of mesh %s not written, the next resync writes it: %s", name, error)


@kopf.on.delete(*RESOURCE, retries=None, backoff=10, timeout=None)
async def withdraw_on_delete(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    """Clean up behind the finalizer as `deletionPolicy` says. The finalizer goes only when
    cleanup succeeded: an AWS outage delays deletion, it never skips cleanup."""
    failure = await _withdraw(memo.runtime, body)
    if failure is not None:
        _deletion_waits(body, patch, failure)
        raise kopf.TemporaryError(f"cleanup: {failure.describe()}", delay=_delay(failure, retry))


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
    runtime: Runtime = memo.runtime
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
                    runtime.executor, partial(meshes.list_cluster_custom_object, *RESOURCE)
                ),
            )
        except kubernetes.client.exceptions.ApiException as error:
            if error.status == 404:
                return  # the CRD, and every mesh with it, is gone
            listed, waiting = {}, [f"listing meshes failed: {error.status} {error.reason}"]
        for item in listed.get("items", []):
            finalizers: list[str] = item["metadata"].get("finalizers") or []
            if FINALIZER not in finalizers:
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
                    "value": [f for f in finalizers if f != FINALIZER],
                },
            ]
            try:
                await loop.run_in_executor(
                    runtime.executor,
                    partial(
                        meshes.patch_cluster_custom_object,
                        *RESOURCE,
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
        delay = min(10.0 * 2 ** min(attempt, 5), MAX_RETRY_DELAY_SECONDS)
        log.warning(
            "the NodeGroupMesh CRD is being deleted; cleanup waits %.0fs: %s",
            delay,
            "; ".join(waiting),
        )
        await asyncio.sleep(delay)


async def _withdraw(runtime: Runtime, body: kopf.Body) -> errors.AwsFailure | None:
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
            _event(
                body,
                "Normal",
                "Retained",
                f"{why}: the rules and attachments the mesh made are left in AWS",
            )
            _forget(runtime, uid, name)
            return None
        region = spec.get("region") or runtime.settings.region
        if not region:
            # Without a region this mesh could never reconcile, so it wrote nothing; blocking
            # its deletion forever would help nobody.
            _event(
                body,
                "Warning",
                status.INVALID_SPEC,
                "no region (spec.region or the operator's --region): nothing to clean up",
            )
            _forget(runtime, uid, name)
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
        _report_changes(runtime, body, outcome)
        if outcome.failures:
            return outcome.failures[0].failure
    _forget(runtime, uid, name)
    return None


def _deletion_waits(body: kopf.Body, patch: kopf.Patch, failure: errors.AwsFailure) -> None:
    """A mesh whose cleanup cannot finish says so, instead of the Ready it had before."""
    message = f"deleting: cleanup waits until AWS answers ({failure.describe()})"
    _set_status(
        body,
        patch,
        status.failure_status(
            status.DELETING, message, body.metadata.get("generation"), body.status
        ),
    )


def _event(body: kopf.Body, type_: str, reason: str, message: str) -> None:
    """Post an event; Kubernetes refuses messages over 1,024 bytes, so they are clipped."""
    kopf.event(body, type=type_, reason=reason, message=status.clip(message))


def _forget(runtime: Runtime, uid: str, name: str) -> None:
    runtime.last_sync.pop(uid, None)
    runtime.locks.pop(uid, None)
    runtime.metrics.forget(name)


def _resync_seconds(spec: Mapping[str, Any], default: float) -> float:
    value = spec.get("resyncSeconds")
    return float(value) if isinstance(value, int | float) and value >= 10 else default


def _delay(failure: errors.AwsFailure, retry: int) -> float:
    base = RETRY_DELAY_SECONDS[failure.kind]
    return float(min(base * 2 ** min(retry, 5), MAX_RETRY_DELAY_SECONDS))


async def _converge(
    runtime: Runtime,
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
        started = time.monotonic()
        try:
            mesh = models.NodeGroupMesh.parse(dict(body), f"NodeGroupMesh {name}")
            region = mesh.spec.region or runtime.settings.region
            if not region:
                raise models.InvalidSpecError(
                    "spec.region is not set and the operator has no default region (--region)"
                )
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

        clients = runtime.clients_for(region)
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                runtime.executor, partial(_pipeline, runtime, clients, mesh, fresh=fresh)
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
            )
            if raise_on_failure:
                delay = min(10.0 * 2 ** min(retry, 5), MAX_RETRY_DELAY_SECONDS)
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
            )
            if raise_on_failure:
                raise kopf.TemporaryError(
                    failure.describe(), delay=_delay(failure, retry)
                ) from error
            return
        finally:
            runtime.metrics.duration.labels(name).observe(time.monotonic() - started)

        runtime.last_sync[uid] = time.monotonic()
        _set_status(body, patch, status.outcome_status(outcome, mesh, generation, previous))
        _report_changes(runtime, body, outcome)
        runtime.metrics.describe_mesh(name, len(outcome.topology.members), outcome.rules())
        for failed in outcome.failures:
            runtime.metrics.aws_errors.labels(failed.failure.code).inc()
        result = (
            "failed" if outcome.failures else "problem" if outcome.plan.problems else "converged"
        )
        runtime.metrics.reconciles.labels(name, result).inc()
        retryable = [f.failure for f in outcome.failures if f.failure.retryable]
        if raise_on_failure and retryable:
            raise kopf.TemporaryError(retryable[0].describe(), delay=_delay(retryable[0], retry))


def _failed(
    runtime: Runtime,
    body: kopf.Body,
    patch: kopf.Patch,
    previous: Mapping[str, Any],
    *,
    result: str,
    reason: str,
    message: str,
) -> None:
    """Count a reconcile that did not reach a plan, and say why in the status."""
    runtime.metrics.reconciles.labels(body.metadata.name or "", result).inc()
    generation = body.metadata.get("generation")
    _set_status(body, patch, status.failure_status(reason, message, generation, previous))


def _pipeline(
    runtime: Runtime, clients: client.AwsClients, mesh: models.NodeGroupMesh, *, fresh: bool
) -> reconcile.Outcome:
    """Read the mesh's Kubernetes sources (and aws-node's IRSA role) and reconcile; in a
    worker thread."""
    cluster = discovery.NO_CLUSTER_MEMBERS
    if mesh.spec.uses_cluster or mesh.spec.cni_policy.attach:
        objects = sources.read(mesh.spec, runtime.kube_api(), aws_node_role=runtime.aws_node_role)
        cluster = cluster_members.resolve(mesh.spec, objects)
    return reconcile.converge(
        clients, mesh, runtime.settings.pipeline, cluster=cluster, fresh=fresh
    )


def _set_status(body: kopf.Body, patch: kopf.Patch, new_status: dict[str, Any]) -> None:
    """Write the status and, when Ready changed to a failure, say so once in an event."""
    for key, value in new_status.items():
        patch.status[key] = value
    ready = new_status["conditions"][0]
    before = status.find_condition(body.status, "Ready") or {}
    changed = (before.get("reason"), before.get("message")) != (ready["reason"], ready["message"])
    if ready["status"] == "False" and changed:
        _event(body, "Warning", ready["reason"], ready["message"])


def _report_changes(runtime: Runtime, body: kopf.Body, outcome: reconcile.Outcome) -> None:
    """One event per kind of change made in AWS, and one per failure; none when idle."""
    if outcome.applied is None:
        return
    done: dict[str, list[planning.Action]] = {}
    for action in outcome.applied.done:
        done.setdefault(action.kind, []).append(action)
    runtime.metrics.count_actions(action.kind for action in outcome.applied.done)
    for kind, actions in done.items():
        shown = "; ".join(action.describe() for action in actions[:_EVENT_ITEMS])
        more = f" (+{len(actions) - _EVENT_ITEMS} more)" if len(actions) > _EVENT_ITEMS else ""
        _event(body, "Normal", EVENT_REASONS[kind], f"{len(actions)}: {shown}{more}")
    for failure in outcome.applied.failures:
        _event(
            body,
            "Warning",
            failure.failure.kind.value,
            f"{failure.failure.describe()}; not done: "
            + "; ".join(action.describe() for action in failure.actions[:_EVENT_ITEMS]),
        )

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
import logging
import os
import random
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions
import kopf
from aiohttp import web

from sgmesh import aws, metrics, models, ownership, planning, reconcile, status

__all__ = ["FINALIZER", "OperatorSettings", "run"]

FINALIZER = "sgmesh.io/finalizer"
RESOURCE = (models.API_GROUP, models.API_VERSION, "nodegroupmeshes")
DEFAULT_RESYNC_SECONDS = 60
# The timer ticks often and reconciles each mesh when its own resyncSeconds have passed.
TIMER_TICK_SECONDS = 5.0
# Operator clients fail fast and let kopf's backoff retry: a thread is never held for long.
AWS_ATTEMPTS = 4
WORKER_THREADS = 32
RETRY_DELAY_SECONDS = {
    aws.ErrorKind.UNAVAILABLE: 10.0,
    aws.ErrorKind.ACCESS_DENIED: 60.0,
    aws.ErrorKind.REJECTED: 60.0,
}
MAX_RETRY_DELAY_SECONDS = 300.0
PEERING_LIFETIME_SECONDS = 30
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


@dataclass
class Runtime:
    """What the handlers share, created at start-up and kept in kopf's memo."""

    settings: OperatorSettings
    metrics: metrics.Metrics
    executor: ThreadPoolExecutor
    clients: dict[str, aws.AwsClients] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    last_sync: dict[str, float] = field(default_factory=dict)
    withdrawing: set[str] = field(default_factory=set)
    web_runner: web.AppRunner | None = None

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    def clients_for(self, region: str) -> aws.AwsClients:
        if region not in self.clients:
            self.clients[region] = aws.make_clients(
                region, max_attempts=AWS_ATTEMPTS, listener=self.metrics.count_call
            )
        return self.clients[region]


def run(settings: OperatorSettings) -> None:
    """Run the operator until it is stopped (SIGTERM/SIGINT)."""
    log_format = {
        "plain": kopf.LogFormat.PLAIN,
        "full": kopf.LogFormat.FULL,
        "json": kopf.LogFormat.JSON,
    }[settings.log_format]
    kopf.configure(verbose=settings.verbose, log_format=log_format)
    kopf.run(
        clusterwide=True,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        # kopf types this as its Identity, a NewType of str it does not export.
        identity=operator_identity(),  # type: ignore[arg-type]
        priority=peering_priority(time.time()),
        memo=kopf.Memo(operator_settings=settings),
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
    # deploy/ installs the CRD before the operator and grants no access to CRDs: kopf's
    # discovery at start-up is enough, so it does not watch for CRDs appearing later.
    settings.scanning.disabled = True
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
    if operator_settings.metrics_port:
        runtime.web_runner = await metrics.serve(runtime.metrics, operator_settings.metrics_port)
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
    await _converge(memo.runtime, body, patch, retry=retry, raise_on_failure=True)


@kopf.timer(*RESOURCE, interval=TIMER_TICK_SECONDS, initial_delay=TIMER_TICK_SECONDS)
async def resync(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Re-resolve selectors and repair drift every `spec.resyncSeconds`.

    The timer ticks every few seconds; a tick does nothing until the mesh's resync period has
    passed since its last successful reconcile. Failures are written to status and tried again
    at the next period, so a mesh failing in AWS never holds anything else up.
    """
    runtime: Runtime = memo.runtime
    uid = body.metadata.uid or ""
    resync_seconds = _resync_seconds(body.spec, runtime.settings.default_resync_seconds)
    last = runtime.last_sync.setdefault(uid, time.monotonic())
    if time.monotonic() - last < resync_seconds:
        return
    runtime.last_sync[uid] = time.monotonic()
    await _converge(runtime, body, patch, retry=0, raise_on_failure=False)


@kopf.on.delete(*RESOURCE, retries=None, backoff=10, timeout=None)
async def withdraw_on_delete(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Clean up behind the finalizer as `deletionPolicy` says. The finalizer goes only when
    cleanup succeeded: an AWS outage delays deletion, it never skips cleanup."""
    runtime: Runtime = memo.runtime
    uid = body.metadata.uid or ""
    name = body.metadata.name or ""
    spec: Mapping[str, Any] = body.spec
    async with runtime.lock(uid):
        runtime.withdrawing.add(uid)
        policy = spec.get("deletionPolicy", models.DeletionPolicy.DELETE.value)
        mode = spec.get("mode", models.Mode.ENFORCE.value)
        if policy == models.DeletionPolicy.RETAIN.value or mode == models.Mode.DRY_RUN.value:
            why = "deletionPolicy Retain" if mode != models.Mode.DRY_RUN.value else "DryRun"
            kopf.event(
                body,
                type="Normal",
                reason="Retained",
                message=f"{why}: the rules and attachments the mesh made are left in AWS",
            )
            _forget(runtime, uid, name)
            return
        region = spec.get("region") or runtime.settings.region
        if not region:
            # Without a region this mesh could never reconcile, so it wrote nothing; blocking
            # its deletion forever would help nobody.
            kopf.warn(
                body,
                reason=status.INVALID_SPEC,
                message="no region (spec.region or the operator's --region): nothing to clean up",
            )
            _forget(runtime, uid, name)
            return
        owner = ownership.Owner(runtime.settings.pipeline.cluster, name)
        retain_cni = bool((spec.get("cniPolicy") or {}).get("retainOnRemoval", True))
        clients = runtime.clients_for(region)
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                runtime.executor, reconcile.withdraw, clients, owner, retain_cni
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            failure = aws.classify(error)
            runtime.metrics.aws_errors.labels(failure.code).inc()
            kopf.warn(body, reason=failure.kind.value, message=f"cleanup: {failure.describe()}")
            raise kopf.TemporaryError(failure.describe(), delay=_delay(failure, retry)) from error
        _report_changes(runtime, body, outcome)
        if outcome.failures:
            failure = outcome.failures[0].failure
            raise kopf.TemporaryError(
                f"cleanup: {failure.describe()}", delay=_delay(failure, retry)
            )
    _forget(runtime, uid, name)


def _forget(runtime: Runtime, uid: str, name: str) -> None:
    runtime.last_sync.pop(uid, None)
    runtime.locks.pop(uid, None)
    runtime.metrics.forget(name)


def _resync_seconds(spec: Mapping[str, Any], default: float) -> float:
    value = spec.get("resyncSeconds")
    return float(value) if isinstance(value, int | float) and value >= 10 else default


def _delay(failure: aws.AwsFailure, retry: int) -> float:
    base = RETRY_DELAY_SECONDS[failure.kind]
    return float(min(base * 2 ** min(retry, 5), MAX_RETRY_DELAY_SECONDS))


async def _converge(
    runtime: Runtime, body: kopf.Body, patch: kopf.Patch, retry: int, raise_on_failure: bool
) -> None:
    uid = body.metadata.uid or ""
    name = body.metadata.name or ""
    generation = body.metadata.get("generation")
    previous: Mapping[str, Any] = body.status
    async with runtime.lock(uid):
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
            runtime.metrics.reconciles.labels(name, "invalid").inc()
            _set_status(
                body,
                patch,
                status.failure_status(status.INVALID_SPEC, str(error), generation, previous),
            )
            if raise_on_failure:
                raise kopf.PermanentError(str(error)) from error
            return

        clients = runtime.clients_for(region)
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                runtime.executor,
                reconcile.converge,
                clients,
                mesh,
                runtime.settings.pipeline,
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            failure = aws.classify(error)
            runtime.metrics.aws_errors.labels(failure.code).inc()
            runtime.metrics.reconciles.labels(name, "failed").inc()
            _set_status(
                body,
                patch,
                status.failure_status(failure.kind.value, failure.describe(), generation, previous),
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


def _set_status(body: kopf.Body, patch: kopf.Patch, new_status: dict[str, Any]) -> None:
    """Write the status and, when Ready changed to a failure, say so once in an event."""
    for key, value in new_status.items():
        patch.status[key] = value
    ready = new_status["conditions"][0]
    before = status.find_condition(body.status, "Ready") or {}
    changed = (before.get("reason"), before.get("message")) != (ready["reason"], ready["message"])
    if ready["status"] == "False" and changed:
        kopf.warn(body, reason=ready["reason"], message=ready["message"])


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
        kopf.event(
            body,
            type="Normal",
            reason=EVENT_REASONS[kind],
            message=f"{len(actions)}: {shown}{more}",
        )
    for failure in outcome.applied.failures:
        kopf.warn(
            body,
            reason=failure.failure.kind.value,
            message=f"{failure.failure.describe()}; not done: "
            + "; ".join(action.describe() for action in failure.actions[:_EVENT_ITEMS]),
        )

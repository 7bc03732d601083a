"""Prometheus metrics of the operator, and the HTTP endpoint that serves them with /healthz
(alive) and /readyz (started).

The collectors live in their own registry, created at start-up and kept in kopf's memo. The
endpoint only reports: it never changes what the operator does.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import prometheus_client
import prometheus_client.core
import prometheus_client.registry
from aiohttp import web

from sgmesh.api import models
from sgmesh.controller import schedule

__all__ = ["MeshCollector", "Metrics", "serve"]


class Metrics:
    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        registry = self.registry
        self.reconciles = prometheus_client.Counter(
            "sgmesh_reconciles_total",
            "Reconciles by mesh and result (converged, problem, failed, invalid).",
            ["mesh", "result"],
            registry=registry,
        )
        self.aws_calls = prometheus_client.Counter(
            "sgmesh_aws_calls_total",
            "AWS API calls by operation.",
            ["operation"],
            registry=registry,
        )
        # Apart from sgmesh_aws_calls_total (by operation): some operations exist in several
        # services, and AWS throttles each service (IAM: the whole account) on its own.
        self.aws_service_calls = prometheus_client.Counter(
            "sgmesh_aws_service_calls_total",
            "AWS API calls by service (ec2, iam, autoscaling, ...).",
            ["service"],
            registry=registry,
        )
        self.aws_paced = prometheus_client.Counter(
            "sgmesh_aws_paced_seconds_total",
            "Seconds AWS requests waited for the operator's own pace (one token bucket per "
            "service and region), by service.",
            ["service"],
            registry=registry,
        )
        self.aws_errors = prometheus_client.Counter(
            "sgmesh_aws_errors_total", "AWS errors by error code.", ["code"], registry=registry
        )
        # Apart from sgmesh_aws_errors_total (the failures that stopped a reconcile, by code):
        # every call whose answer was an error, by operation, whatever the reconcile made of it
        # (a rule already there, a launch template gone) — what to look at during an incident.
        self.aws_call_errors = prometheus_client.Counter(
            "sgmesh_aws_call_errors_total",
            "AWS API calls that failed after botocore's retries, by service, operation and "
            "error code (a call that got no answer: the exception's name).",
            ["service", "operation", "code"],
            registry=registry,
        )
        self.unsynced = prometheus_client.Counter(
            "sgmesh_unfinished_reconciles_total",
            "Reconciles that could not finish for a transient reason (AWS throttling or "
            "outage, the cluster unreadable), by reason: Synced=False while Ready stays.",
            ["reason"],
            registry=registry,
        )
        self.actions = prometheus_client.Counter(
            "sgmesh_actions_total",
            "Changes made in AWS by kind (authorize, revoke, attach, ...).",
            ["kind"],
            registry=registry,
        )
        self.nudges = prometheus_client.Counter(
            "sgmesh_nudged_reconciles_total",
            "Reconciles started by a Node, EC2NodeClass, ENIConfig or CRD event.",
            registry=registry,
        )
        self.active_replica = prometheus_client.Gauge(
            "sgmesh_active_replica",
            "1 while this replica works, 0 while kopf's peering pauses it (--peering).",
            registry=registry,
        )
        self.active_replica.set(1)
        self.watched_nodes = prometheus_client.Gauge(
            "sgmesh_watched_nodes",
            "Nodes with a spec.providerID the operator's watch has seen.",
            registry=registry,
        )
        self.duration = prometheus_client.Histogram(
            "sgmesh_reconcile_duration_seconds",
            "Wall time of one reconcile (discover, plan, apply).",
            ["mesh"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.members = prometheus_client.Gauge(
            "sgmesh_members", "Members of each mesh.", ["mesh"], registry=registry
        )
        self.rules = prometheus_client.Gauge(
            "sgmesh_rules",
            "Ingress rules of each mesh: desired, present, owned.",
            ["mesh", "state"],
            registry=registry,
        )

    def follow_meshes(
        self,
        bodies: Callable[[], Iterable[Mapping[str, Any]]],
        default_resync_seconds: float,
        working: Callable[[], bool] = lambda: True,
    ) -> None:
        """Export, at each scrape, what the meshes' objects say (`MeshCollector`), while this
        replica `working`: a replica peering paused keeps bodies it no longer follows."""
        self.registry.register(
            MeshCollector(lambda: bodies() if working() else (), default_resync_seconds)
        )

    def count_call(self, service: str, operation: str) -> None:
        self.aws_calls.labels(operation).inc()
        self.aws_service_calls.labels(service).inc()

    def count_call_error(self, service: str, operation: str, code: str) -> None:
        self.aws_call_errors.labels(service, operation, code).inc()

    def count_paced(self, service: str, seconds: float) -> None:
        self.aws_paced.labels(service).inc(seconds)

    def count_actions(self, kinds: Iterable[str]) -> None:
        for kind in kinds:
            self.actions.labels(kind).inc()

    def describe_mesh(self, mesh: str, members: int, rules: models.RuleCounts) -> None:
        self.members.labels(mesh).set(members)
        for state, value in rules.model_dump().items():
            self.rules.labels(mesh, state).set(value)

    def forget(self, mesh: str) -> None:
        """Drop a deleted mesh's gauges: its members and rules are no longer true. Its reconcile
        counter and duration histogram stay until the process restarts, as counters do: a
        counter series that vanished would read as a reset to Prometheus' rate()."""
        series: list[tuple[prometheus_client.Gauge, tuple[str, ...]]] = [(self.members, (mesh,))]
        series += [(self.rules, (mesh, state)) for state in models.RuleCounts.model_fields]
        for gauge, labels in series:
            with contextlib.suppress(KeyError):  # never reconciled in this process
                gauge.remove(*labels)


class MeshCollector(prometheus_client.registry.Collector):
    """The meshes as their objects say, read at scrape time from the bodies the watch on meshes
    last delivered (as kube-state-metrics reads objects): each status condition with its
    reason, when it last changed status, when a reconcile last reached AWS
    (`status.lastSyncTime`), and the resync period. The alerts are written on these: a
    condition's transition time survives restarts of the operator and of Prometheus, where an
    alert's `for:` does not.

    Only a replica that works exports these series (`Metrics.follow_meshes`): kopf's peering
    pauses the others' watches, and what they were last told grows stale.
    """

    def __init__(
        self, bodies: Callable[[], Iterable[Mapping[str, Any]]], default_resync_seconds: float
    ) -> None:
        self._bodies = bodies
        self._default_resync_seconds = default_resync_seconds

    def collect(self) -> Iterator[prometheus_client.core.Metric]:
        condition = prometheus_client.core.GaugeMetricFamily(
            "sgmesh_mesh_condition",
            "1 for each status condition of each mesh, with its status and reason.",
            labels=["mesh", "condition", "status", "reason"],
        )
        transition = prometheus_client.core.GaugeMetricFamily(
            "sgmesh_mesh_condition_transition_timestamp_seconds",
            "When each condition of each mesh last changed status (its lastTransitionTime).",
            labels=["mesh", "condition"],
        )
        last_sync = prometheus_client.core.GaugeMetricFamily(
            "sgmesh_mesh_last_sync_timestamp_seconds",
            "When a reconcile of each mesh last reached AWS (status.lastSyncTime).",
            labels=["mesh"],
        )
        resync = prometheus_client.core.GaugeMetricFamily(
            "sgmesh_mesh_resync_period_seconds",
            "Seconds between the resyncs of each mesh (spec.resyncSeconds or the default).",
            labels=["mesh"],
        )
        for body in list(self._bodies()):
            mesh = str((body.get("metadata") or {}).get("name") or "")
            spec = body.get("spec")
            status = body.get("status")
            status = status if isinstance(status, Mapping) else {}
            period = schedule.period(
                spec if isinstance(spec, Mapping) else {}, self._default_resync_seconds
            )
            resync.add_metric([mesh], period)
            synced_at = _timestamp(status.get("lastSyncTime"))
            if synced_at is not None:
                last_sync.add_metric([mesh], synced_at)
            for found in status.get("conditions") or ():
                if not isinstance(found, Mapping) or not found.get("type"):
                    continue
                kind = str(found["type"])
                labels = [mesh, kind, str(found.get("status", "")), str(found.get("reason", ""))]
                condition.add_metric(labels, 1)
                changed_at = _timestamp(found.get("lastTransitionTime"))
                if changed_at is not None:
                    transition.add_metric([mesh, kind], changed_at)
        yield from (condition, transition, last_sync, resync)


def _timestamp(value: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 time as the API server stores it; None for
    anything else (a series left out, never a wrong time)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def listen(port: int, host: str = "0.0.0.0") -> socket.socket:
    """The socket /metrics, /healthz and /readyz are served on, bound before the operator
    starts: a port in use is an `OSError` at once, never a start-up that kopf retries."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(
    metrics: Metrics,
    sock: socket.socket,
    is_ready: Callable[[], bool] = lambda: True,
) -> web.AppRunner:
    """Serve /metrics, /healthz and /readyz (200 once `is_ready()`, 503 before) on a socket
    from `listen`; the caller keeps the runner and cleans it up on exit."""

    async def scrape(_: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(metrics.registry)
        return web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        # Answering at all proves the event loop that runs every handler is not stuck.
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if is_ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="starting\n")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner

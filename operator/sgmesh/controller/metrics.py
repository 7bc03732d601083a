"""Prometheus metrics of the operator, and the HTTP endpoint that serves them with /healthz
(alive) and /readyz (started).

The collectors live in their own registry, created at start-up and kept in kopf's memo. The
endpoint only reports: it never changes what the operator does.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterable

import prometheus_client
from aiohttp import web

from sgmesh.api import models

__all__ = ["Metrics", "serve"]


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
        self.aws_errors = prometheus_client.Counter(
            "sgmesh_aws_errors_total", "AWS errors by error code.", ["code"], registry=registry
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

    def count_call(self, _service: str, operation: str) -> None:
        self.aws_calls.labels(operation).inc()

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

"""What the operator's handlers share: its settings, the `Runtime` kept in kopf's memo, the
resource they serve, and the limits every handler works within (worker threads, AWS attempts,
retry delays).

It registers no handler and makes no call; clients are made on first use, by the handlers that
need them. Handlers read monotonic time through `Runtime.clock`, so a test can pass a fake
one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import kubernetes
from aiohttp import web

from sgmesh.api import models
from sgmesh.aws import client, errors, reconcile, shared_reads
from sgmesh.controller import metrics, schedule, watches
from sgmesh.kube import sources

__all__ = [
    "AWS_ATTEMPTS",
    "FINALIZER",
    "MAX_RETRY_DELAY_SECONDS",
    "RESOURCE",
    "RETRY_DELAY_SECONDS",
    "WORKER_THREADS",
    "OperatorSettings",
    "Runtime",
    "retry_delay",
]

FINALIZER = "sgmesh.io/finalizer"
RESOURCE = (models.API_GROUP, models.API_VERSION, models.PLURAL)
# Operator clients fail fast and let kopf's backoff retry: a thread is never held for long.
AWS_ATTEMPTS = 4
# Threads for AWS and cluster reads. The operator paces its AWS calls (`client.Pacing`, about
# 20 a second per service): a few threads keep that pace whatever AWS's latency, and more
# would only wait on the pace, or on the shared sweep of IAM, holding memory meanwhile.
WORKER_THREADS = 16
RETRY_DELAY_SECONDS = {
    errors.ErrorKind.UNAVAILABLE: 10.0,
    errors.ErrorKind.CONCURRENT_CHANGE: 5.0,
    errors.ErrorKind.ACCESS_DENIED: 60.0,
    errors.ErrorKind.REJECTED: 60.0,
}
MAX_RETRY_DELAY_SECONDS = 300.0


@dataclass(frozen=True)
class OperatorSettings:
    pipeline: reconcile.Settings
    region: str | None
    metrics_port: int = 8080
    default_resync_seconds: int = schedule.DEFAULT_RESYNC_SECONDS
    log_format: str = "plain"
    peering: str | None = None
    verbose: bool = False
    # How often the resync timer looks at each mesh (the test suite's end-to-end tests that
    # wait on a resync set it lower).
    timer_tick_seconds: float = schedule.TIMER_TICK_SECONDS


@dataclass
class Runtime:
    """What the handlers share, created at start-up and kept in kopf's memo."""

    settings: OperatorSettings
    metrics: metrics.Metrics
    executor: ThreadPoolExecutor
    # The monotonic clock of `last_sync` and of reconcile durations; a test passes a fake one.
    clock: Callable[[], float] = time.monotonic
    # One for every region: meshes reconciled together read AWS once (never across a write).
    shared_reads: shared_reads.SharedReads = field(default_factory=shared_reads.SharedReads)
    _clients: client.ClientsByRegion | None = None
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # Mesh uid → when (on `clock`) it was last reconciled, or first seen by the resync timer.
    last_sync: dict[str, float] = field(default_factory=dict)
    withdrawing: set[str] = field(default_factory=set)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    web_runner: web.AppRunner | None = None
    # aws-node's own credentials (IRSA, EKS Pod Identity), read at most once a minute for every
    # mesh (set at start-up).
    aws_node_role: sources.AwsNodeCredentialsCache = field(
        default_factory=sources.AwsNodeCredentialsCache
    )
    # One Kubernetes client, so one connection pool, for every worker's reads of the cluster.
    _kube_api: kubernetes.client.ApiClient | None = None
    _kube_api_lock: threading.Lock = field(default_factory=threading.Lock)
    # What the cluster watches keep, and their nudges (`sgmesh.controller.watches`).
    watching: watches.Watching | None = None
    # Meshes nudged whose reconcile has not started yet: one more nudge would add nothing.
    nudged: set[str] = field(default_factory=set)
    # Whether kopf has logged in (`lifecycle.login`): the cluster's configuration is loaded.
    ready: Callable[[], bool] = lambda: True
    # Whether kopf's peering leaves this replica working (`activity`; always without peering).
    # A paused replica writes nothing to AWS of its own accord (the orphan sweep) and exports
    # no mesh series.
    working: bool = True

    def set_working(self, working: bool) -> None:
        self.working = working
        self.metrics.active_replica.set(1 if working else 0)

    async def until_ready(self, poll_seconds: float = 0.2) -> None:
        """Wait until kopf has logged in: what the start-up handler sets going reads the
        cluster only then (`kube_api` made earlier would have no configuration, for good)."""
        while not self.ready():
            await asyncio.sleep(poll_seconds)

    def kube_api(self) -> kubernetes.client.ApiClient:
        """One client for every read, made once kopf has logged in (`until_ready`; handlers of
        resources run only after it): by then the cluster's configuration is loaded. A client
        asked for sooner is not kept, so it cannot leave the process without a configuration
        for good."""
        with self._kube_api_lock:
            if self._kube_api is not None:
                return self._kube_api
            made = kubernetes.client.ApiClient()
            if self.ready():
                self._kube_api = made
            return made

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    def clients_for(self, region: str) -> client.AwsClients:
        if self._clients is None:
            self._clients = client.ClientsByRegion(
                max_attempts=AWS_ATTEMPTS,
                listener=self.metrics.count_call,
                error_listener=self.metrics.count_call_error,
                max_pool_connections=WORKER_THREADS,
                shared_reads=self.shared_reads,
                pacing=client.Pacing(waited=self.metrics.count_paced),
            )
        return self._clients(region)

    def forget(self, uid: str, name: str) -> None:
        """Drop what is kept for a mesh that is gone (withdrawn or retained)."""
        self.last_sync.pop(uid, None)
        self.locks.pop(uid, None)
        self.metrics.forget(name)


# A failure to read the cluster (the API server) is retried like an AWS outage.
CLUSTER_READ_RETRY_SECONDS = 10.0


def backoff(base: float, retry: int) -> float:
    """`base` seconds doubled with each retry (up to 5 doublings), at most
    MAX_RETRY_DELAY_SECONDS."""
    return float(min(base * 2 ** min(retry, 5), MAX_RETRY_DELAY_SECONDS))


def retry_delay(failure: errors.AwsFailure, retry: int) -> float:
    """How long kopf waits before retrying after `failure`, doubling with each retry."""
    return backoff(RETRY_DELAY_SECONDS[failure.kind], retry)

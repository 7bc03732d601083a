"""The operator's life: `run` configures kopf, binds the metrics port and runs kopf until it is
stopped; kopf's start-up handler builds the `Runtime` every handler shares, and its clean-up
handler takes it down.

GitOps-quiet: kopf's progress and diff base live in `status.kopf`, the finalizer is
`sgmesh.io/finalizer`, and the operator never writes metadata beyond it. Nothing here
reconciles a mesh: the modules in `HANDLER_MODULES` do.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import kopf

from sgmesh.aws import errors, pod_identity
from sgmesh.controller import (
    activity,
    kopf_compat,
    memory,
    meshes,
    metrics,
    nudges,
    peering,
    serving,
    shared,
    sweep,
    watches,
    withdrawal,
)
from sgmesh.kube import sources

__all__ = ["HANDLER_MODULES", "run"]

# kopf registers a handler when the module defining it is imported: these are every module
# whose handlers the operator runs (the resync timer is registered by `run`, which knows its
# tick).
HANDLER_MODULES = (meshes, watches, withdrawal)
_QUIET_LIBRARIES = ("botocore", "boto3", "urllib3", "s3transfer")

log = logging.getLogger("sgmesh")


def run(settings: shared.OperatorSettings) -> None:
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
    # What kopf serves; kept so that a re-created CRD is served again
    # (`withdrawal.withdraw_with_the_crd`).
    insights = kopf_compat.new_insights()
    tick = settings.timer_tick_seconds
    kopf.timer(*shared.RESOURCE, interval=tick, initial_delay=tick)(meshes.resync)
    me, my_priority = peering.identity(), peering.priority(time.time())
    kopf.run(
        clusterwide=True,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        identity=kopf_compat.identity(me),
        priority=my_priority,
        ready_flag=started,
        insights=insights,
        memo=kopf.Memo(
            operator_settings=settings,
            started=started,
            insights=insights,
            listening=listening,
            peer=(me, my_priority),
            logged_in=threading.Event(),
        ),
    )


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own login through the Kubernetes client: it loads the client's configuration,
    which every read of the operator uses (`shared.Runtime.kube_api`). Noted in the memo, so
    that what the start-up handler sets going (the sweep, the peering follower) reads the
    cluster only after it: kopf logs in after its start-up handlers have run."""
    info = kopf.login_via_client(**kwargs)
    memo.logged_in.set()
    return info


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator_settings: shared.OperatorSettings = memo.operator_settings
    settings.persistence.finalizer = shared.FINALIZER
    # kopf follows CustomResourceDefinitions (read-only rights in deploy/): when the
    # NodeGroupMesh CRD goes it stops watching meshes instead of failing on the watch's 404 and
    # exiting, and serves them again as soon as the CRD is back, without a restart. While the
    # CRD terminates kopf no longer serves meshes; `withdrawal.withdraw_with_the_crd` finishes
    # them.
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
        settings.peering.lifetime = peering.LIFETIME_SECONDS
    runtime = shared.Runtime(
        settings=operator_settings,
        metrics=metrics.Metrics(),
        executor=ThreadPoolExecutor(shared.WORKER_THREADS, thread_name_prefix="sgmesh-aws"),
        ready=memo.logged_in.is_set,
    )
    runtime.aws_node_role = _aws_node_credentials(runtime)
    runtime.watching = memo.watching = watches.Watching(
        meshes=nudges.MeshIndex(),
        nodes=nudges.Debounce(
            partial(meshes.nudge, runtime),
            watches.NODE_DELAY_SECONDS,
            watches.NODE_GAP_SECONDS,
        ),
        sources=nudges.Debounce(partial(meshes.nudge, runtime), watches.SOURCE_DELAY_SECONDS),
        count_nodes=runtime.metrics.watched_nodes.set,
        # Also serves the NodeGroupMesh CRD's return (`withdrawal.withdraw_with_the_crd`).
        serve=partial(
            serving.serve_once_established,
            insights=memo.insights,
            rescan=serving.kopf_rescan(settings, memo.insights),
        ),
    )
    runtime.metrics.follow_meshes(
        runtime.watching.meshes.bodies,
        operator_settings.default_resync_seconds,
        working=lambda: runtime.working,
    )
    if memo.listening is not None:
        runtime.web_runner = await metrics.serve(
            runtime.metrics, memo.listening, is_ready=memo.started.is_set
        )
    memo.runtime = runtime
    # The safety net under releases (`sgmesh.controller.sweep`): soon after the start, then
    # every few resyncs.
    memo.sweeping = asyncio.create_task(
        sweep.sweep_forever(runtime, first_delay=operator_settings.timer_tick_seconds)
    )
    # Whether peering leaves this replica working (`sgmesh_active_replica`).
    memo.following = asyncio.create_task(
        activity.follow_peering(runtime, operator_settings.peering, *memo.peer)
    )
    # RSS that follows the load: freed memory goes back to the system (`memory`).
    memo.trimming = asyncio.create_task(memory.trim_forever())
    log.info(
        "sgmesh operator started: cluster %s, default region %s, metrics port %s",
        operator_settings.pipeline.cluster,
        operator_settings.region or "(from each mesh)",
        operator_settings.metrics_port or "off",
    )


def _aws_node_credentials(runtime: shared.Runtime) -> sources.AwsNodeCredentialsCache:
    """aws-node's own credentials for every mesh: IRSA, else an EKS Pod Identity association
    of the cluster, asked in the operator's region (`--region`, the cluster's; without it EKS
    is not asked), else its pods. A failed read, of the API server or of EKS, keeps the last
    answer. The clients are made here, on the event loop, as they must be."""
    region = runtime.settings.region
    association: sources.AssociationReader | None = None
    if region:
        association = partial(
            pod_identity.find_association,
            runtime.clients_for(region),
            runtime.settings.pipeline.cluster,
        )
    return sources.AwsNodeCredentialsCache(
        lambda: sources.read_aws_node_credentials(runtime.kube_api(), association),
        failures=(sources.ClusterReadError, *errors.ERRORS),
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    runtime: shared.Runtime = memo.runtime
    memo.sweeping.cancel()
    memo.following.cancel()
    memo.trimming.cancel()
    if runtime.watching is not None:
        await runtime.watching.nodes.close()
        await runtime.watching.sources.close()
    if runtime.web_runner is not None:
        await runtime.web_runner.cleanup()
    runtime.executor.shutdown(wait=False, cancel_futures=True)

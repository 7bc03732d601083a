"""What the operator's handlers share (`shared.Runtime`): one Kubernetes client, kept only once
kopf has logged in (before it, the client library has no configuration to give it)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sgmesh.aws import reconcile
from sgmesh.controller import metrics, shared


def test_a_client_asked_for_before_the_login_is_not_kept() -> None:
    logged_in = [False]
    with ThreadPoolExecutor(1) as executor:
        runtime = shared.Runtime(
            settings=shared.OperatorSettings(pipeline=reconcile.Settings(), region=None),
            metrics=metrics.Metrics(),
            executor=executor,
            ready=lambda: logged_in[0],
        )

        early = runtime.kube_api()
        assert runtime.kube_api() is not early  # made again: the early one is not kept

        logged_in[0] = True
        kept = runtime.kube_api()
        assert runtime.kube_api() is kept

"""The operator's sweep when it cannot tell which meshes exist: a failed read of the API server
is never "no meshes", so nothing is swept that round (error paths, patched in process)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import kubernetes
import pytest
import urllib3

from sgmesh.aws import orphans, reconcile
from sgmesh.controller import metrics, shared, sweep
from sgmesh.engine import planning


def runtime(executor: ThreadPoolExecutor) -> shared.Runtime:
    pipeline = reconcile.Settings(
        cluster="sweeping", boundary=planning.Boundary(vpc_id="vpc-0123456789abcdef0")
    )
    return shared.Runtime(
        settings=shared.OperatorSettings(pipeline=pipeline, region="us-east-1"),
        metrics=metrics.Metrics(),
        executor=executor,
    )


@pytest.mark.parametrize(
    "failure",
    [
        kubernetes.client.ApiException(status=503, reason="Service Unavailable"),
        kubernetes.client.ApiException(status=403, reason="Forbidden"),
        urllib3.exceptions.ProtocolError("connection reset"),
        ConnectionRefusedError("the API server is down"),
    ],
)
def test_a_failed_list_of_meshes_skips_the_round_and_touches_no_aws(
    failure: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cannot_list(_: object) -> set[str]:
        raise failure

    def must_not_sweep(*_: object) -> list[object]:
        raise AssertionError("AWS was swept although the meshes could not be listed")

    monkeypatch.setattr(sweep, "mesh_names", cannot_list)
    monkeypatch.setattr(orphans, "sweep", must_not_sweep)
    with ThreadPoolExecutor(1) as executor:
        operator = runtime(executor)
        monkeypatch.setattr(operator, "kube_api", lambda: None)

        assert asyncio.run(sweep.sweep_once(operator)) is None


def test_without_a_vpc_nothing_is_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_list(_: object) -> set[str]:
        raise AssertionError("listed the meshes without a VPC to sweep")

    monkeypatch.setattr(sweep, "mesh_names", must_not_list)
    with ThreadPoolExecutor(1) as executor:
        operator = runtime(executor)
        unbounded = shared.OperatorSettings(pipeline=reconcile.Settings(), region="us-east-1")
        operator.settings = unbounded

        assert asyncio.run(sweep.sweep_once(operator)) is None


def test_a_replica_paused_by_peering_sweeps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_list(_: object) -> set[str]:
        raise AssertionError("a paused replica listed the meshes to sweep AWS")

    monkeypatch.setattr(sweep, "mesh_names", must_not_list)
    with ThreadPoolExecutor(1) as executor:
        operator = runtime(executor)
        operator.set_working(False)

        assert asyncio.run(sweep.sweep_once(operator)) is None
        assert operator.metrics.registry.get_sample_value("sgmesh_active_replica") == 0

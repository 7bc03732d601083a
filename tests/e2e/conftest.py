"""The operator end to end: the real API server, a moto server behind a cuttable proxy, and
`sgmesh run` as a separate process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.aws.moto_server import MotoServer
from devtools.aws.world import World
from devtools.k8s.controlplane import ControlPlane
from devtools.operator_harness import OPERATOR_CLUSTER, Meshes, Operator
from tests.support.fault_proxy import ThrottlingProxy
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def faulty_aws(moto_server: MotoServer, aws_env: dict[str, str]) -> Iterator[ThrottlingProxy]:
    """moto behind a proxy that throttles, answers unparseable 5xx or makes requests collide;
    an operator goes through it when started with `aws_endpoint=faulty_aws.url`."""
    proxy = ThrottlingProxy(moto_server.port)
    yield proxy
    proxy.close()


@pytest.fixture
def meshes(kube_cluster: ControlPlane, nodegroupmesh_crd: str) -> Iterator[Meshes]:
    api = Meshes(kube_cluster.kubeconfig)
    yield api
    api.remove_all()


@pytest.fixture
def start_operator(
    kube_cluster: ControlPlane,
    nodegroupmesh_crd: str,
    aws_env: dict[str, str],
    aws_proxy: TcpProxy,
    meshes: Meshes,
    world: World,
    tmp_path: Path,
) -> Iterator[Callable[..., Operator]]:
    """Start `sgmesh run`; every operator started is stopped before the meshes are removed.

    The operator's cluster is an EKS cluster over the world's main VPC, as DescribeCluster
    answers for it: that VPC bounds every mesh.

    By default it reaches AWS through `aws_proxy` and the API server directly; `aws_endpoint`
    and `kubeconfig` put something else in between."""
    started: list[Operator] = []

    def start(
        aws_endpoint: str | None = None, kubeconfig: Path | None = None, **options: Any
    ) -> Operator:
        env = {**aws_env, "AWS_ENDPOINT_URL": aws_endpoint or aws_proxy.url}
        world.eks_cluster(options.get("cluster", OPERATOR_CLUSTER))
        operator = Operator(
            kubeconfig or kube_cluster.kubeconfig,
            env,
            tmp_path / f"operator-{len(started)}.log",
            **options,
        )
        started.append(operator)
        return operator.start()

    yield start
    for operator in started:
        operator.stop()


@pytest.fixture
def operator(start_operator: Callable[..., Operator]) -> Operator:
    return start_operator()

"""`sgmesh run` that cannot start: a metrics port taken is a clear error naming the setting and
the port, at once, instead of an operator that retries its start every minute and serves
nothing (and the test harness, whose chosen port another process may take before the operator
binds it, starts the operator again on another); a cluster whose VPC cannot be known is refused,
naming both ways to give one."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.aws import moto_server
from devtools.k8s.controlplane import ControlPlane
from devtools.operator_harness import Operator

pytestmark = pytest.mark.kube

# AWS does not answer in these tests: the cluster's VPC is given, so the operator starts.
UNREACHABLE_CLUSTER_VPC = "vpc-0123456789abcdef0"


def test_a_metrics_port_in_use_is_an_error_naming_it(kube_cluster: ControlPlane) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]

        finished = subprocess.run(
            [sys.executable, "-m", "sgmesh", "run", "--metrics-port", str(port)],
            env={
                "KUBECONFIG": str(kube_cluster.kubeconfig),
                **moto_server.aws_env("http://127.0.0.1:9"),  # nothing answers: the VPC is given
                "SGMESH_CLUSTER_NAME": "start-test",
                "SGMESH_VPC_ID": UNREACHABLE_CLUSTER_VPC,
            },
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    assert finished.returncode == 1
    assert f"--metrics-port {port}" in finished.stderr
    assert "SGMESH_METRICS_PORT" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_the_harness_starts_the_operator_again_when_its_port_was_taken(
    kube_cluster: ControlPlane, tmp_path: Path
) -> None:
    operator = Operator(
        kube_cluster.kubeconfig,
        moto_server.aws_env("http://127.0.0.1:9"),
        tmp_path / "log",
        extra_args=("--vpc-id", UNREACHABLE_CLUSTER_VPC),
    )
    chosen = operator.metrics_port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("0.0.0.0", chosen))
        taken.listen()

        operator.start()
        try:
            assert operator.metrics_port != chosen
            assert operator.healthy()
        finally:
            operator.stop()

    assert f"--metrics-port {chosen} " in operator.log_path.read_text()


@pytest.mark.parametrize(
    ("environment", "said"),
    [
        ({}, "the cluster's name is required"),
        ({"SGMESH_CLUSTER_NAME": "self-managed"}, "EKS has no cluster named 'self-managed'"),
    ],
)
def test_without_a_cluster_and_its_vpc_the_operator_refuses_to_start_saying_how(
    kube_cluster: ControlPlane, aws_env: dict[str, str], environment: dict[str, str], said: str
) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "sgmesh", "run", "--metrics-port", "0"],
        env={"KUBECONFIG": str(kube_cluster.kubeconfig), **aws_env, **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert finished.returncode in {1, 64}, finished.stderr
    assert said in finished.stderr
    assert "SGMESH_CLUSTER_NAME" in finished.stderr
    assert "Traceback" not in finished.stderr
    if environment:  # a name EKS does not know: the VPC is the other way
        assert "--vpc-id (env SGMESH_VPC_ID)" in finished.stderr

"""Fixtures for the tests of what ships in deploy/: renderings of the kustomize base and the
Helm chart, the base applied to the real API server, and the operator run as the deploy
ServiceAccount with its AWS requests recorded at the moto server.

The e2e fixtures (`meshes`, `aws_proxy`, `start_operator`, `operator`) are redefined here with
the same contract as tests/e2e/conftest.py, so that the e2e scenarios run unchanged against an
operator that has only the rights of deploy/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.aws.moto_server import MotoServer, start_moto_server
from devtools.aws.world import World
from devtools.helm import build as helm_build
from devtools.k8s import build
from devtools.k8s.controlplane import ControlPlane
from devtools.operator_harness import OPERATOR_CLUSTER, Meshes, Operator
from tests.cluster.fixtures import apply_established
from tests.deploy import iam
from tests.deploy.render import DEPLOY, Objects, kustomize, load_objects
from tests.support.tcp_proxy import TcpProxy

NAMESPACE = "sgmesh-system"
SERVICE_ACCOUNT = "sgmesh"
CRD_NAME = "nodegroupmeshes.sgmesh.io"


@pytest.fixture(scope="session")
def kubectl(kube_binaries: build.Binaries) -> Path:
    return kube_binaries.kubectl


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm, built from Go modules on first use (devtools/helm/build.py)."""
    try:
        return helm_build.ensure_helm()
    except helm_build.HelmBuildError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def base_objects(kubectl: Path) -> Objects:
    """`kubectl kustomize deploy/`: what `kubectl apply -k deploy/` applies."""
    return load_objects(kustomize(kubectl, DEPLOY))


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """The session's moto server for these tests, with moto's request recorder on, so that
    what the operator asks of AWS is counted where AWS would see it."""
    recording = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_RECORDER_FILEPATH", str(recording))
        server = start_moto_server()
    try:
        iam.MotoRecording(server.endpoint_url).start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_recording(moto_server: MotoServer) -> iam.MotoRecording:
    """The recording, emptied for this test."""
    recording = iam.MotoRecording(moto_server.endpoint_url)
    recording.reset()
    return recording


@pytest.fixture(scope="session")
def deployed(kube_cluster: ControlPlane) -> Path:
    """`kubectl apply -k deploy/` for real — CRD, namespace, ServiceAccount, RBAC, Deployment
    (no kubelet runs its pod) — with the CRD Established; the directory applied."""
    apply_established(kube_cluster, "-k", str(DEPLOY), crds=[CRD_NAME])
    return DEPLOY


@pytest.fixture
def service_account_kubeconfig(kube_cluster: ControlPlane, deployed: Path) -> Path:
    """A kubeconfig holding a TokenRequest token of deploy/'s ServiceAccount, nothing else."""
    return kube_cluster.kubeconfig_for(NAMESPACE, SERVICE_ACCOUNT)


@pytest.fixture
def meshes(kube_cluster: ControlPlane, deployed: Path) -> Iterator[Meshes]:
    """Meshes as the cluster admin handles them (the operator is the one with fewer rights)."""
    api = Meshes(kube_cluster.kubeconfig)
    yield api
    api.remove_all()


@pytest.fixture
def start_operator(
    service_account_kubeconfig: Path,
    aws_env: dict[str, str],
    aws_proxy: TcpProxy,
    aws_recording: iam.MotoRecording,
    meshes: Meshes,
    world: World,
    tmp_path: Path,
) -> Iterator[Callable[..., Operator]]:
    """Start `sgmesh run` authenticated only as deploy/'s ServiceAccount, for an EKS cluster
    over the world's main VPC.

    After the test, every AWS request those operators made (read at the moto server) must be
    allowed by deploy/iam-policy.json: a request outside the policy fails the test here.
    """
    started: list[Operator] = []

    def start(**options: Any) -> Operator:
        env = {**aws_env, "AWS_ENDPOINT_URL": aws_proxy.url}
        extra_env = {"AWS_SDK_UA_APP_ID": iam.OPERATOR_APP_ID, **options.pop("extra_env", {})}
        world.eks_cluster(options.get("cluster", OPERATOR_CLUSTER))
        operator = Operator(
            service_account_kubeconfig,
            env,
            tmp_path / f"operator-{len(started)}.log",
            extra_env=extra_env,
            **options,
        )
        started.append(operator)
        return operator.start()

    yield start
    for operator in started:
        operator.stop()
    # The policy of the cluster the operators served: its VPC is the world's main VPC.
    policy = iam.operator_policy(world.main_vpc.id)
    refused = policy.refused(aws_recording.operator_requests())
    assert not refused, (
        f"the operator made AWS requests that {iam.POLICY_FILE.relative_to(DEPLOY.parent)} "
        "does not allow:\n" + "\n".join(refused)
    )


@pytest.fixture
def operator(start_operator: Callable[..., Operator]) -> Operator:
    return start_operator()

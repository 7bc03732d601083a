"""pytest plugin: a real control plane for the whole session (register it in tests/conftest.py).

The binaries are built on first use (minutes, once per machine) and reused from the user cache
afterwards. A test that needs the API server and cannot have it ERRORS: a missing control plane
must never pass as a skipped test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import pytest

from devtools import external_crds
from devtools.aws.world import World
from devtools.k8s import build
from devtools.k8s.controlplane import ControlPlane, ControlPlaneError
from devtools.nodes import ClusterNodes
from devtools.operator_harness import CRD_FILE, CRD_NAME

__all__ = [
    "apply_established",
    "cluster_nodes",
    "ec2nodeclass_crd",
    "eniconfig_crd",
    "kube_binaries",
    "kube_cluster",
    "kube_namespace",
    "nodegroupmesh_crd",
    "reinstall_crd",
    "securitygrouppolicy_crd",
]

_namespace_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def kube_binaries() -> build.Binaries:
    return build.ensure_binaries()


SESSION_END_GRACE_SECONDS = 2.0


@pytest.fixture(scope="session")
def kube_cluster(
    kube_binaries: build.Binaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """The started control plane: `.kubeconfig` (admin), `.server`, `.admin_token`,
    `.mint_token(namespace, service_account)`, `.kubeconfig_for(namespace, service_account)`,
    `.request(method, path, body, token=...)` and `.kubectl(*args, kubeconfig=...)`.

    Logs and certificates stay in pytest's temporary directory for the last few runs.
    """
    workdir = tmp_path_factory.mktemp("kube-control-plane")
    plane = ControlPlane(binaries=kube_binaries, workdir=workdir).start()
    try:
        yield plane
    finally:
        # Its data goes with it: nothing is gained by waiting long for a graceful stop.
        plane.stop(grace=SESSION_END_GRACE_SECONDS)


@pytest.fixture
def kube_namespace(kube_cluster: ControlPlane, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test. It is left behind: with no kube-controller-manager here,
    namespace deletion would never finish, and the control plane dies with the session anyway.
    """
    stem = request.node.name.lower().replace("_", "-")
    name = "".join(ch for ch in stem if ch.isalnum() or ch == "-")[:50].strip("-")
    name = f"{name}-{next(_namespace_numbers)}"
    kube_cluster.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    return name


def apply_established(cluster: ControlPlane, *kubectl_args: str, crds: Sequence[str]) -> str:
    """`kubectl apply` what the arguments name, wait until `crds` are Established and their
    objects can be listed (`ControlPlane.apply_established`); what kubectl said."""
    try:
        return cluster.apply_established(*kubectl_args, crds=crds)
    except ControlPlaneError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def nodegroupmesh_crd(kube_cluster: ControlPlane) -> str:
    """The CRD from crds/, applied and Established, once per session; its name."""
    if not CRD_FILE.is_file():
        pytest.fail("crds/nodegroupmesh.yaml is missing: generate it with `make crd`")
    apply_established(kube_cluster, "-f", str(CRD_FILE), crds=[CRD_NAME])
    return CRD_NAME


def _install_external(cluster: ControlPlane, crd: external_crds.ExternalCrd) -> str:
    try:
        external_crds.load(crd)  # fetched if needed, and checked to be that CRD
    except external_crds.CrdFetchError as error:
        pytest.fail(f"{error}\n(`make crds-external` fetches it)")
    apply_established(cluster, "-f", str(crd.cached_file), crds=[crd.name])
    return crd.name


@pytest.fixture(scope="session")
def ec2nodeclass_crd(kube_cluster: ControlPlane) -> str:
    """Karpenter's EC2NodeClass CRD as Karpenter publishes it (devtools/external_crds.py),
    applied and Established, once per session; its name."""
    return _install_external(kube_cluster, external_crds.EC2NODECLASS)


@pytest.fixture(scope="session")
def eniconfig_crd(kube_cluster: ControlPlane) -> str:
    """The VPC CNI's ENIConfig CRD as the VPC CNI publishes it, applied and Established, once
    per session; its name."""
    return _install_external(kube_cluster, external_crds.ENICONFIG)


@pytest.fixture(scope="session")
def securitygrouppolicy_crd(kube_cluster: ControlPlane) -> str:
    """The VPC resource controller's SecurityGroupPolicy CRD as it publishes it (namespaced),
    applied and Established, once per session; its name."""
    return _install_external(kube_cluster, external_crds.SECURITYGROUPPOLICY)


@pytest.fixture
def reinstall_crd(
    kube_cluster: ControlPlane, ec2nodeclass_crd: str, eniconfig_crd: str
) -> Iterator[Callable[[str], None]]:
    """For tests that delete an external CRD: a function that installs it again by name.
    Whatever the test did, both are installed again after it, for the tests that follow."""
    crds = {crd.name: crd for crd in external_crds.EXTERNAL_CRDS}

    def install(name: str) -> None:
        _install_external(kube_cluster, crds[name])

    yield install
    for name in crds:
        install(name)


@pytest.fixture
def cluster_nodes(
    world: World, kube_cluster: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ClusterNodes]:
    """Nodes and pods of this test only, for doctor, which reaches the API server through
    KUBECONFIG as a person's shell does."""
    nodes = ClusterNodes(world, kube_cluster.kubectl)
    nodes.clear()
    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield nodes
    nodes.clear()

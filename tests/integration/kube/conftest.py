"""Fixtures shared by the API-server tests: the NodeGroupMesh CRD, installed once per session."""

from __future__ import annotations

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.integration.kube.meshes import CRD_FILE, CRD_NAME, REPO_ROOT


@pytest.fixture(scope="session")
def nodegroupmesh_crd(kube_cluster: ControlPlane) -> str:
    """The CRD from crds/, applied and Established; its name."""
    if not CRD_FILE.is_file():
        pytest.fail(f"{CRD_FILE.relative_to(REPO_ROOT)} is missing: generate it with `make crd`")
    applied = kube_cluster.kubectl("apply", "-f", str(CRD_FILE))
    assert applied.returncode == 0, applied.stderr
    established = kube_cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}"
    )
    assert established.returncode == 0, established.stderr
    return CRD_NAME

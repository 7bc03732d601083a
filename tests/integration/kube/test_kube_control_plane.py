"""The local control plane is the real thing: the pinned release, TLS, tokens, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import kubernetes
import pytest

from devtools.k8s.build import Binaries
from devtools.k8s.controlplane import ControlPlane

pytestmark = pytest.mark.kube

REPO_ROOT = Path(__file__).resolve().parents[3]
EXIT_DEADLINE_SECONDS = 30.0


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that has not reaped it yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_all_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + EXIT_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if _alive(pid)]


def test_version_endpoint_reports_the_pinned_release(kube_cluster: ControlPlane) -> None:
    version = kube_cluster.request("GET", "/version")
    expected = kube_cluster.binaries.version
    assert version["gitVersion"] == expected
    assert (version["major"], version["minor"]) == tuple(expected[1:].split(".")[:2])


def test_kubectl_and_server_report_the_same_release(kube_cluster: ControlPlane) -> None:
    result = kube_cluster.kubectl("version", "-o", "json")
    assert result.returncode == 0, result.stderr
    versions = json.loads(result.stdout)
    expected = kube_cluster.binaries.version
    assert versions["clientVersion"]["gitVersion"] == expected
    assert versions["serverVersion"]["gitVersion"] == expected


def test_admin_kubeconfig_works_with_the_python_client(kube_cluster: ControlPlane) -> None:
    api_client = kubernetes.config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    with api_client:
        namespace = kubernetes.client.CoreV1Api(api_client).read_namespace("default")
    assert namespace.metadata is not None
    assert namespace.metadata.name == "default"


def test_minted_token_authenticates_as_the_service_account(
    kube_cluster: ControlPlane, kube_namespace: str
) -> None:
    token = kube_cluster.mint_token(kube_namespace, "operator")
    review = kube_cluster.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        token=token,
    )
    user = review["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{kube_namespace}:operator"
    assert "system:masters" not in user["groups"]


def test_stop_leaves_no_process_behind(kube_binaries: Binaries, tmp_path: Path) -> None:
    plane = ControlPlane(binaries=kube_binaries, workdir=tmp_path).start()
    pids = list(plane.pids.values())
    assert all(_alive(pid) for pid in pids)
    plane.stop()
    assert _wait_all_gone(pids) == []
    assert not plane.etcd_data_dir.exists()


# The owner: Python's own reaction to Ctrl-C whatever SIGINT disposition it inherits (a shell
# starts background jobs with SIGINT ignored), and its stack on SIGUSR1 should it hang.
_HOLDER = """
import faulthandler, json, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
faulthandler.register(signal.SIGUSR1)
from devtools.k8s.build import ensure_binaries
from devtools.k8s.controlplane import ControlPlane
with ControlPlane(binaries=ensure_binaries(), workdir=__import__("pathlib").Path(sys.argv[1])) as p:
    print(json.dumps(list(p.pids.values())), flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_owner_takes_the_control_plane_with_it(
    kube_binaries: Binaries, tmp_path: Path, signum: signal.Signals
) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        pids = json.loads(owner.stdout.readline())
        assert len(pids) == 2
        assert all(_alive(pid) for pid in pids)
        os.kill(owner.pid, signum)
        try:
            owner.wait(timeout=EXIT_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            os.kill(owner.pid, signal.SIGUSR1)
            time.sleep(1)
            owner.kill()
            _, stderr = owner.communicate()
            raise AssertionError(
                f"the owner outlived {signum.name}; its stack:\n{stderr}"
            ) from None
        assert _wait_all_gone(pids) == []
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_after_etcd_restarted_stop_still_lets_the_api_server_exit_on_its_own(
    kube_binaries: Binaries, tmp_path: Path
) -> None:
    plane = ControlPlane(binaries=kube_binaries, workdir=tmp_path).start()
    try:
        plane.restart("etcd")
    finally:
        plane.stop()

    # kube-apiserver goes first, while etcd still answers: it finishes its graceful shutdown
    # instead of waiting on a gone etcd until it is killed.
    log = (tmp_path / "kube-apiserver.log").read_text()
    assert "[graceful-termination] apiserver is exiting" in log

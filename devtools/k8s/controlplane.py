"""A real kube-apiserver backed by etcd, as local processes on 127.0.0.1 (no kubelet).

This is what envtest does for Go operators: the API server is the real one, so OpenAPI and CEL
validation, RBAC, watches, the status subresource, finalizers and events behave as in a cluster;
only nothing runs pods. Clients reach it with a kubeconfig that verifies TLS against a throwaway
CA and authenticates with a static token in `system:masters`; ServiceAccount tokens from
TokenRequest let a test act with fewer rights.

Every process runs in a session of its own, so stopping kills its whole process group. Unless
started `detached` (the sandbox outlives the command that starts it), the processes also die
with the Python process that started them: on `stop()`, at exit, on SIGTERM/SIGHUP, and, through
the kernel's parent-death signal, even when that process is killed outright.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import functools
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Self

import yaml

from devtools.aws.moto_server import free_port
from devtools.k8s import build, pki

__all__ = [
    "ApiError",
    "ControlPlane",
    "ControlPlaneError",
    "running_control_plane",
    "stop_process_group",
    "write_kubeconfig",
]

ADMIN_USER = "sgmesh-admin"
ADMIN_GROUP = "system:masters"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
ETCD_READY_SECONDS = 60.0
APISERVER_READY_SECONDS = 180.0
STOP_GRACE_SECONDS = 15.0
START_ATTEMPTS = 3
POLL_SECONDS = 0.2
LOG_TAIL_LINES = 40

_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """The control plane did not start or answer; the message carries the logs that say why."""


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class _PortInUseError(ControlPlaneError):
    pass


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(
    pgid: int, grace: float = STOP_GRACE_SECONDS, reap: Callable[[], object] | None = None
) -> None:
    """SIGTERM a process group, SIGKILL what is left after `grace`, return once it is empty.

    `reap` (such as `Popen.poll`) collects our own child, whose zombie would keep the group
    alive; a process started by another command is reaped by init.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if reap is not None:
                reap()
            if not _group_alive(pgid):
                return
            time.sleep(0.05)
    raise ControlPlaneError(f"process group {pgid} survived SIGKILL")


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def write_kubeconfig(
    path: Path, server: str, ca_file: Path, token: str, user: str = ADMIN_USER
) -> Path:
    """A kubeconfig for `server` as the holder of `token`, with the CA embedded."""
    ca_data = base64.b64encode(ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sgmesh-local",
                "cluster": {"server": server, "certificate-authority-data": ca_data},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": "sgmesh-local", "context": {"cluster": "sgmesh-local", "user": user}}
        ],
        "current-context": "sgmesh-local",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.popen.poll() is None:
            return
        tail = _tail(self.log)
        message = (
            f"{self.name} exited with code {self.popen.returncode}; "
            f"last lines of {self.log}:\n{tail}"
        )
        if "address already in use" in tail:
            raise _PortInUseError(message)
        raise ControlPlaneError(message)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        if self.popen.returncode is None:
            stop_process_group(self.popen.pid, grace, reap=self.popen.poll)


_running: set[ControlPlane] = set()
_running_lock = threading.Lock()
_cleanup_installed = False


def _stop_all() -> None:
    with _running_lock:
        planes = list(_running)
    for plane in planes:
        with contextlib.suppress(Exception):
            plane.stop()


def _on_fatal_signal(signum: int, frame: FrameType | None, *, previous: Any) -> None:
    _stop_all()
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_cleanup() -> None:
    global _cleanup_installed  # noqa: PLW0603 - once per process, by design
    if _cleanup_installed:
        return
    _cleanup_installed = True
    atexit.register(_stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(signum)
        signal.signal(signum, functools.partial(_on_fatal_signal, previous=previous))


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports. Use as a context manager or start()/stop().

    `workdir` receives logs, certificates, the token file and the kubeconfig (a fresh temporary
    directory when omitted, removed on stop); etcd's data is always removed on stop.
    """

    def __init__(
        self,
        binaries: build.Binaries | None = None,
        workdir: Path | None = None,
        detached: bool = False,
    ) -> None:
        self._binaries = binaries
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="sgmesh-kube-"))
        self.detached = detached
        self.admin_token = secrets.token_urlsafe(32)
        self.etcd_port = 0
        self.etcd_peer_port = 0
        self.secure_port = 0
        self._processes: list[_Process] = []
        self._ssl: ssl.SSLContext | None = None
        self._pki: pki.ControlPlanePki | None = None

    # -- what clients need ---------------------------------------------------------------------
    @property
    def binaries(self) -> build.Binaries:
        if self._binaries is None:
            self._binaries = build.ensure_binaries()
        return self._binaries

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.secure_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def pids(self) -> dict[str, int]:
        return {process.name: process.popen.pid for process in self._processes}

    @property
    def etcd_data_dir(self) -> Path:
        return self.workdir / "etcd-data"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Self:
        if self._processes:
            raise ControlPlaneError("already started")
        binaries = self.binaries
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._pki = pki.write_pki(self.workdir / "pki")
        self._ssl = ssl.create_default_context(cafile=str(self._pki.ca_cert))
        token_file = self.workdir / "tokens.csv"
        token_file.write_text(f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"{ADMIN_GROUP}"\n')
        token_file.chmod(0o600)
        if not self.detached:
            _install_cleanup()
            with _running_lock:
                _running.add(self)
        try:
            for attempt in range(START_ATTEMPTS):
                try:
                    self._start_etcd(binaries)
                    self._start_apiserver(binaries, token_file)
                    break
                except _PortInUseError:  # a free port was taken between picking and binding
                    self._stop_processes()
                    if attempt == START_ATTEMPTS - 1:
                        raise
            self._wait_for_default_namespace()
            write_kubeconfig(self.kubeconfig, self.server, self._pki.ca_cert, self.admin_token)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop kube-apiserver then etcd (their whole process groups), each SIGKILLed if it
        has not exited `grace` seconds after SIGTERM; safe to call twice."""
        try:
            self._stop_processes(grace)
        finally:
            with _running_lock:
                _running.discard(self)
            shutil.rmtree(self.etcd_data_dir, ignore_errors=True)
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def restart(self, component: Literal["etcd", "kube-apiserver"]) -> None:
        """Stop one component (its whole process group) and start it again on the same ports,
        with the same data, certificates and tokens: clients see a crash and a recovery, and
        the control plane is left as it was (it is shared by every test of a session)."""
        with self.outage(component):
            pass

    @contextlib.contextmanager
    def outage(self, component: Literal["etcd", "kube-apiserver"]) -> Iterator[None]:
        """`component` is down (connections refused) inside the block, and back as it was, on
        the same ports with the same data, when the block ends, also when it fails."""
        process = next((p for p in self._processes if p.name == component), None)
        if process is None:
            raise ControlPlaneError(f"{component} is not running")
        process.stop()
        self._processes.remove(process)
        try:
            yield
        finally:
            if component == "etcd":
                self._start_etcd(self.binaries, keep_data=True)
            else:
                self._start_apiserver(self.binaries, self.workdir / "tokens.csv", keep_port=True)
            # After etcd alone comes back, the API server's readiness follows its reconnection.
            apiserver = next(p for p in self._processes if p.name == "kube-apiserver")
            self._wait_until(
                apiserver, APISERVER_READY_SECONDS, self._apiserver_ready, "kube-apiserver /readyz"
            )
            self._wait_for_default_namespace()

    def _stop_processes(self, grace: float = STOP_GRACE_SECONDS) -> None:
        errors: list[BaseException] = []
        # kube-apiserver first, whatever order restarts left the list in: without its etcd it
        # cannot finish a graceful shutdown and would wait out the whole grace.
        for process in sorted(self._processes, key=lambda p: p.name != "kube-apiserver"):
            try:
                process.stop(grace)
            except BaseException as error:  # stop the others first, then raise
                errors.append(error)
        self._processes.clear()
        if errors:
            raise errors[0]

    def _spawn(self, name: str, argv: Sequence[str]) -> _Process:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as output:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=None if self.detached else _die_with_parent,  # noqa: PLW1509
            )
        process = _Process(name, popen, log)
        self._processes.append(process)
        return process

    def _start_etcd(self, binaries: build.Binaries, keep_data: bool = False) -> None:
        if not keep_data:
            self.etcd_port, self.etcd_peer_port = free_port(), free_port()
            shutil.rmtree(self.etcd_data_dir, ignore_errors=True)
        peer_url = f"http://127.0.0.1:{self.etcd_peer_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(binaries.etcd),
                "--name=sgmesh",
                f"--data-dir={self.etcd_data_dir}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=sgmesh={peer_url}",
                "--initial-cluster-state=new",
                # Test data: durability is worthless here, fsync latency is not.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait_until(etcd, ETCD_READY_SECONDS, self._etcd_healthy, "etcd /health")

    def _start_apiserver(
        self, binaries: build.Binaries, token_file: Path, keep_port: bool = False
    ) -> None:
        assert self._pki is not None
        if not keep_port:
            self.secure_port = free_port()
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The reconciler of the `kubernetes` Service endpoints refuses loopback addresses;
                # with no kubelet nor kube-proxy, nothing would route to them anyway.
                "--endpoint-reconciler-type=none",
                f"--secure-port={self.secure_port}",
                f"--tls-cert-file={self._pki.serving_cert}",
                f"--tls-private-key-file={self._pki.serving_key}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={token_file}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={self._pki.service_account_public_key}",
                f"--service-account-signing-key-file={self._pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--v=1",
            ],
        )
        self._wait_until(
            apiserver, APISERVER_READY_SECONDS, self._apiserver_ready, "kube-apiserver /readyz"
        )

    def _wait_until(
        self, process: _Process, seconds: float, ready: Callable[[], bool], what: str
    ) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            process.check_alive()
            if ready():
                return
            time.sleep(POLL_SECONDS)
        process.check_alive()
        raise ControlPlaneError(
            f"{what} not ready within {seconds:.0f}s; last lines of {process.log}:\n"
            f"{_tail(process.log)}"
        )

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _apiserver_ready(self) -> bool:
        try:
            with self._open("GET", "/readyz", timeout=5) as response:
                return bool(response.read() == b"ok")
        except (OSError, ApiError):
            return False

    def _wait_for_default_namespace(self) -> None:
        # /readyz does not cover the namespace the API server creates right after it.
        deadline = time.monotonic() + APISERVER_READY_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(ApiError):
                self.request("GET", "/api/v1/namespaces/default")
                return
            time.sleep(POLL_SECONDS)
        raise ControlPlaneError("namespace 'default' never appeared")

    # -- talking to it -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _open(
        self,
        method: str,
        path: str,
        body: object = None,
        token: str | None = None,
        timeout: float = 30,
    ) -> Iterator[Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.server}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {token or self.admin_token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._ssl) as response:
                yield response
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, error.read().decode(errors="replace")) from None

    def apply_established(
        self, *kubectl_args: str, crds: Sequence[str], timeout: float = 60
    ) -> str:
        """`kubectl apply` what the arguments name, then wait until `crds` are Established and
        their objects can be listed; what kubectl said. `ControlPlaneError` if not in time.

        The wait polls the CRDs rather than running `kubectl wait --for=condition=Established`,
        which fails at once, instead of waiting, when it reads a CRD whose conditions the API
        server has not filled in yet (kubernetes/kubernetes#66439). For a moment after a CRD
        is Established its storage may still answer 429 "storage is (re)initializing", which
        kubectl and kopf retry but a plain request does not: the objects are listed once too.
        """
        applied = self.kubectl("apply", *kubectl_args)
        if applied.returncode != 0:
            raise ControlPlaneError(f"kubectl apply {' '.join(kubectl_args)}:\n{applied.stderr}")
        deadline = time.monotonic() + timeout
        waiting = list(crds)
        while waiting := [crd for crd in waiting if not self._listable(crd)]:
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"not Established within {timeout}s: {', '.join(waiting)}")
            time.sleep(0.1)
        return str(applied.stdout)

    def _listable(self, crd: str) -> bool:
        """Whether the CRD is Established and a list of its objects is answered."""
        try:
            found = self.request(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}"
            )
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        # Right after creation `status.conditions` may still be null.
        conditions = found.get("status", {}).get("conditions") or []
        if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return False
        spec = found["spec"]
        [version] = [v["name"] for v in spec["versions"] if v.get("storage")]
        try:
            self.request(
                "GET", f"/apis/{spec['group']}/{version}/{spec['names']['plural']}?limit=1"
            )
        except ApiError as error:
            if error.status == 429:
                return False
            raise
        return True

    def request(
        self, method: str, path: str, body: object = None, token: str | None = None
    ) -> dict[str, Any]:
        """One REST call (as admin unless `token` is given); an HTTP error raises ApiError."""
        with self._open(method, path, body, token) as response:
            payload = response.read()
        return dict(json.loads(payload)) if payload else {}

    def _create(self, path: str, body: dict[str, Any]) -> None:
        try:
            self.request("POST", path, body)
        except ApiError as error:
            if error.status != 409:  # already there is what we want
                raise

    def ensure_service_account(self, namespace: str, name: str) -> None:
        """Create the namespace and the ServiceAccount unless they exist."""
        self._create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        self._create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        )

    def mint_token(
        self, namespace: str, service_account: str, expiration_seconds: int = 3600
    ) -> str:
        """A bound token for the ServiceAccount (TokenRequest), created first if missing."""
        self.ensure_service_account(namespace, service_account)
        token_request = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        return str(token_request["status"]["token"])

    def kubeconfig_for(
        self, namespace: str, service_account: str, path: Path | None = None
    ) -> Path:
        """A kubeconfig that acts as the ServiceAccount, with a freshly minted token."""
        token = self.mint_token(namespace, service_account)
        path = path or self.workdir / f"kubeconfig-{namespace}-{service_account}"
        user = f"system:serviceaccount:{namespace}:{service_account}"
        return write_kubeconfig(path, self.server, self.ca_file, token, user=user)

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        stdin: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this server; the caller checks `returncode`."""
        return subprocess.run(
            [
                str(self.binaries.kubectl),
                f"--kubeconfig={kubeconfig or self.kubeconfig}",
                # Per control plane: a reused port must never serve another cluster's discovery.
                f"--cache-dir={self.workdir / 'kubectl-cache'}",
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@contextlib.contextmanager
def running_control_plane(workdir: Path | None = None) -> Iterator[ControlPlane]:
    plane = ControlPlane(workdir=workdir)
    with plane:
        yield plane

"""Drive the operator as users do: a separate `sgmesh run` process, meshes through the API.

`Operator` starts and stops the operator process against a kubeconfig and an AWS endpoint;
`Meshes` creates, reads, changes and deletes NodeGroupMesh objects and waits on their status
with deadlines (never fixed sleeps). The demo, the scale bench and the end-to-end tests all
drive the operator through these two, so what the tests check is what the demo shows.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, cast

import kubernetes
import prometheus_client.parser
import yaml
from kubernetes.client.exceptions import ApiException

from devtools import REPO_ROOT
from devtools.aws.moto_server import free_port
from sgmesh.cli import settings as cli_settings

GROUP, VERSION, PLURAL = "sgmesh.io", "v1alpha1", "nodegroupmeshes"
CRD_FILE = REPO_ROOT / "crds" / "nodegroupmesh.yaml"
CRD_NAME = f"{PLURAL}.{GROUP}"
FINALIZER = "sgmesh.io/finalizer"


Launcher = Callable[[Sequence[str], Mapping[str, str]], tuple[list[str], dict[str, str]]]

QUICK_RESYNC_SECONDS = 2
# Starts with a newly chosen metrics port when another process took the one chosen before.
PORT_ATTEMPTS = 5


# The cluster the operator runs for, unless told otherwise: its VPC comes from EKS's
# DescribeCluster (`World.eks_cluster` makes one over the world's main VPC) or --vpc-id.
OPERATOR_CLUSTER = "e2e"


def quick_resync(seconds: int = QUICK_RESYNC_SECONDS) -> dict[str, Any]:
    """Options of `Operator` (and of the tests' `start_operator`) for a test that waits on a
    resync: meshes that set no spec.resyncSeconds are reconciled again every `seconds`, checked
    twice a second, instead of at the 10 s the CRD allows at least and the timer's 5 s tick.

    Only for tests that wait on resyncs: what they show (drift repaired, a new ASG joining, a
    deleted one leaving) takes a resync, and how long one lasts is no part of it. A mesh started
    this way must leave resyncSeconds out of its spec."""
    return {
        "extra_args": ("--default-resync-seconds", str(seconds)),
        "extra_env": {
            cli_settings.TEST_TIMER_TICK: "0.5",
            cli_settings.TEST_RESYNC_FLOOR: str(seconds),
        },
    }


@functools.cache
def liveness_probe() -> tuple[float, int]:
    """deploy/'s livenessProbe of the operator: its timeout (seconds) and failure threshold."""
    manifest = yaml.safe_load((REPO_ROOT / "deploy" / "manager" / "deployment.yaml").read_text())
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    probe = container["livenessProbe"]
    return float(probe["timeoutSeconds"]), int(probe["failureThreshold"])


def local_process(
    run_options: Sequence[str], environment: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """`sgmesh run` with this interpreter, in this machine's environment minus AWS, sgmesh and
    Kubernetes settings: the command line and the process environment."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "SGMESH_", "KUBECONFIG"))
    }
    return [sys.executable, "-m", "sgmesh", "run", *run_options], {**inherited, **environment}


class Operator:
    """`sgmesh run` in its own process group; logs go to `log_path`.

    `launcher` turns the options of `sgmesh run` and the environment the operator is given
    into a command line and a process environment: by default a local process
    (`local_process`); the image tests run it inside the image."""

    def __init__(
        self,
        kubeconfig: Path,
        aws_env: Mapping[str, str],
        log_path: Path,
        cluster: str = OPERATOR_CLUSTER,
        region: str | None = "us-east-1",
        extra_args: tuple[str, ...] = (),
        extra_env: Mapping[str, str] | None = None,
        launcher: Launcher = local_process,
    ) -> None:
        self.metrics_port = free_port()
        self.log_path = log_path
        # The options of `sgmesh run` but --metrics-port (`metrics_port`, chosen at start).
        self.run_options = [
            "--cluster",
            cluster,
            "--log-format",
            "full",
            "--verbose",
            *(["--region", region] if region else []),
            *extra_args,
        ]
        self.environment = {
            **aws_env,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "KUBECONFIG": str(kubeconfig),
            **(extra_env or {}),
        }
        if region is None:
            self.environment.pop("AWS_REGION", None)
            self.environment.pop("AWS_DEFAULT_REGION", None)
        self._launcher = launcher
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, deadline: float = 60) -> Self:
        """Start the process and wait until /healthz answers. A metrics port that another
        process took since `free_port` chose it (the operator exits naming it) is chosen
        again."""
        for _ in range(PORT_ATTEMPTS):
            with open(self.log_path, "ab") as log:
                argv, env = self._launcher(self._options(), self.environment)
                self._process = subprocess.Popen(
                    argv,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            wait_until(
                self._exited_or_answers, deadline, "the operator answers /healthz", self.log_tail
            )
            if self._process.poll() is None:
                return self
            if f"--metrics-port {self.metrics_port} " not in self.log_tail():
                raise AssertionError(f"the operator exited:\n{self.log_tail()}")
            self.metrics_port = free_port()
        raise AssertionError(f"no free metrics port in {PORT_ATTEMPTS} tries:\n{self.log_tail()}")

    def _exited_or_answers(self) -> bool:
        return (
            self._process is None
            or self._process.poll() is not None
            or self._answers("/healthz", 2)
        )

    def _options(self) -> list[str]:
        return ["--metrics-port", str(self.metrics_port), *self.run_options]

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def healthy(self) -> bool:
        """Alive as deploy/'s livenessProbe judges it: /healthz answers within the probe's
        timeout at least once in its failure threshold of tries (the kubelet restarts the pod
        only after that many failures in a row). Raises if the process has exited."""
        timeout, tries = liveness_probe()
        for attempt in range(tries):
            if self._process is None or self._process.poll() is not None:
                raise AssertionError(f"the operator exited:\n{self.log_tail()}")
            if attempt:
                time.sleep(1)
            if self._answers("/healthz", timeout):
                return True
        return False

    def ready(self) -> bool:
        """Whether /readyz says the operator has started."""
        return self._answers("/readyz", 2)

    def _answers(self, path: str, timeout: float) -> bool:
        """Whether `path` answers 200 within `timeout` seconds, once."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 if none)."""
        return sum(
            float(sample.value)
            for family in prometheus_client.parser.text_string_to_metric_families(self.metrics())
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def stop(self, kill: bool = False) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def wait_until(
    check: Callable[[], Any],
    deadline: float,
    what: str,
    context: Callable[[], str] = lambda: "",
    interval: float = 0.25,
) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `deadline` s."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline}s waiting until {what}\n{context()}")
        time.sleep(interval)


class Meshes:
    """NodeGroupMesh objects through the API server, as kubectl would handle them."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig)
        )
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)

    def create(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "NodeGroupMesh",
            "metadata": {"name": name},
            "spec": dict(spec),
        }
        return cast(
            dict[str, Any], self.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        )

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            found = cast(
                dict[str, Any], self.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    def patch_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.custom.patch_cluster_custom_object(
                GROUP, VERSION, PLURAL, name, {"spec": dict(spec)}
            ),
        )

    def delete(self, name: str) -> None:
        self.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)

    def names(self) -> list[str]:
        listed = cast(
            dict[str, Any], self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        )
        return [item["metadata"]["name"] for item in listed["items"]]

    def remove_all(self) -> None:
        """Tear-down: forget every mesh without the operator (finalizers stripped)."""
        for name in self.names():
            with contextlib.suppress(ApiException):
                self.custom.patch_cluster_custom_object(
                    GROUP, VERSION, PLURAL, name, {"metadata": {"finalizers": None}}
                )
            with contextlib.suppress(ApiException):
                self.delete(name)
        wait_until(lambda: not self.names(), 30, "every mesh is gone")

    def ready(self, name: str) -> dict[str, Any] | None:
        return self.condition(name, "Ready")

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        return condition_of(self.get(name) or {}, kind)

    def wait_ready(
        self, name: str, deadline: float = 60, context: Callable[[], str] = lambda: ""
    ) -> dict[str, Any]:
        """Ready=True for the current generation; returns the whole object. Generation,
        observedGeneration and the condition are read from one answer of the API server."""

        def done() -> dict[str, Any] | None:
            mesh = self.get(name) or {}
            status = mesh.get("status") or {}
            generation = mesh.get("metadata", {}).get("generation")
            ready = condition_of(mesh, "Ready") or {}
            if status.get("observedGeneration") == generation and ready.get("status") == "True":
                return mesh
            return None

        result: dict[str, Any] = wait_until(
            done, deadline, f"mesh {name} is Ready", lambda: f"{self.get(name)}\n{context()}"
        )
        return result

    def wait_condition(
        self,
        name: str,
        status: str,
        reason: str,
        deadline: float = 60,
        context: Callable[[], str] = lambda: "",
        kind: str = "Ready",
    ) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            found = self.condition(name, kind)
            if found and found.get("status") == status and found.get("reason") == reason:
                return found
            return None

        result: dict[str, Any] = wait_until(
            matches,
            deadline,
            f"mesh {name} has {kind}={status} ({reason})",
            lambda: f"{self.condition(name, kind)}\n{context()}",
        )
        return result

    def wait_events(
        self,
        name: str,
        wanted: Callable[[list[Any]], bool],
        what: str,
        deadline: float = 30,
        context: Callable[[], str] = lambda: "",
    ) -> list[Any]:
        """The mesh's events once `wanted(events)` holds. Events are posted apart from the
        status (kopf posts them after the handler returns), so a status that shows a reconcile
        does not mean its events are there yet: they are polled with a deadline."""
        found: list[Any] = []

        def arrived() -> bool:
            found[:] = self.events(name)
            return wanted(found)

        wait_until(
            arrived,
            deadline,
            f"mesh {name} has events: {what}",
            lambda: f"{[(e.type, e.reason) for e in found]}\n{context()}",
        )
        return found

    def events(self, name: str) -> list[Any]:
        """Events of the mesh now called `name` (by uid: not those of an earlier namesake)."""
        uid = ((self.get(name) or {}).get("metadata") or {}).get("uid")
        if uid is None:
            return []
        listed = self.core.list_event_for_all_namespaces(
            field_selector=f"involvedObject.uid={uid},involvedObject.kind=NodeGroupMesh"
        )
        return list(listed.items)


def condition_of(mesh: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The condition of type `kind` in a mesh's status, if it has one."""
    for condition in (mesh.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None

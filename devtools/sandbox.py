"""`make sandbox`: a control plane and a moto server that outlive the command that starts them.

`python -m devtools.sandbox up|down|status`. Everything lives under `.sandbox/` at the
repository root: `kubeconfig` (admin), `aws.env` (sourceable: `source .sandbox/aws.env`), the
pid files and logs. `up` when the sandbox already runs only says so; `down` stops exactly the
processes `up` recorded, after checking each pid still runs the program it was started as.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import ssl
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools import REPO_ROOT
from devtools.aws import moto_server
from devtools.aws.moto_server import MotoServer, start_moto_server
from devtools.k8s import build
from devtools.k8s.controlplane import ControlPlane, stop_process_group

__all__ = ["Sandbox", "main"]

SANDBOX_DIR = REPO_ROOT / ".sandbox"


@dataclass(frozen=True)
class _Component:
    name: str
    pid: int
    marker: str  # a piece of its command line, so a recycled pid is never mistaken for ours

    def running(self) -> bool:
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z" and self.marker.encode() in cmdline


class Sandbox:
    def __init__(self, directory: Path = SANDBOX_DIR) -> None:
        self.directory = directory
        self.state_file = directory / "state.json"
        self.kubeconfig = directory / "kubeconfig"
        self.aws_env = directory / "aws.env"
        self.kube_dir = directory / "kube"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _state(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _components(self) -> list[_Component]:
        entries = self._state().get("components", [])
        assert isinstance(entries, list)
        return [_Component(**entry) for entry in entries]

    def _apiserver_ready(self) -> bool:
        state = self._state()
        server, ca_file = state.get("server"), state.get("ca_file")
        if not (isinstance(server, str) and isinstance(ca_file, str)):
            return False
        try:
            context = ssl.create_default_context(cafile=ca_file)
            with urllib.request.urlopen(f"{server}/readyz", timeout=5, context=context) as reply:
                return bool(reply.read() == b"ok")
        except OSError:  # refused, TLS or HTTP errors alike: not ready
            return False

    def up(self) -> None:
        with self._locked():
            components = self._components()
            if components and all(c.running() for c in components) and self._apiserver_ready():
                print("sandbox already running")
                self._print_usage()
                return
            if components:
                print("sandbox partly running: restarting it")
                self._stop(components)
            self._start()
        self._print_usage()

    def _start(self) -> None:
        binaries = build.ensure_binaries()
        shutil.rmtree(self.kube_dir, ignore_errors=True)
        plane = ControlPlane(binaries=binaries, workdir=self.kube_dir, detached=True)
        plane.start()
        moto: MotoServer | None = None
        try:
            moto = start_moto_server(log_path=self.directory / "moto.log", detach=True)
            self._record(binaries, plane, moto)
        except BaseException:  # detached processes outlive us: never leave them unrecorded
            if moto is not None:
                moto.stop()
            plane.stop()
            raise
        print(
            f"sandbox up: kube-apiserver {binaries.version} at {plane.server}, "
            f"moto at {moto.endpoint_url}"
        )

    def _record(self, binaries: build.Binaries, plane: ControlPlane, moto: MotoServer) -> None:
        pids = plane.pids
        components = [
            _Component("etcd", pids["etcd"], str(binaries.etcd)),
            _Component("kube-apiserver", pids["kube-apiserver"], str(binaries.kube_apiserver)),
            _Component("moto", moto.process.pid, moto_server.MODULE),
        ]
        for component in components:
            (self.directory / f"{component.name}.pid").write_text(f"{component.pid}\n")
        shutil.copyfile(plane.kubeconfig, self.kubeconfig)
        self.kubeconfig.chmod(0o600)
        self.aws_env.write_text(
            "".join(f"export {k}={shlex.quote(v)}\n" for k, v in moto.aws_env().items())
        )
        state = {
            "kubernetes": binaries.version,
            "server": plane.server,
            "ca_file": str(plane.ca_file),
            "aws_endpoint_url": moto.endpoint_url,
            "components": [c.__dict__ for c in components],
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def aws_environment(self) -> dict[str, str]:
        """What `.sandbox/aws.env` exports, for a program that runs against the sandbox."""
        endpoint = self._state().get("aws_endpoint_url")
        if not isinstance(endpoint, str):
            raise RuntimeError("the sandbox is not running: `make sandbox` starts it")
        return moto_server.aws_env(endpoint)

    def down(self) -> None:
        with self._locked():
            components = self._components()
            if not components:
                print("sandbox not running")
            self._stop(components)

    def _stop(self, components: list[_Component]) -> None:
        # API server first, so it never sees etcd vanish under it; moto is independent.
        order = {"kube-apiserver": 0, "moto": 1, "etcd": 2}
        for component in sorted(components, key=lambda c: order.get(c.name, 3)):
            if component.running():
                stop_process_group(component.pid)
                print(f"stopped {component.name} (pid {component.pid})")
        for name in (
            "state.json",
            "kubeconfig",
            "aws.env",
            "etcd.pid",
            "kube-apiserver.pid",
            "moto.pid",
        ):
            (self.directory / name).unlink(missing_ok=True)
        # Keep the logs for a post-mortem; the data, keys and admin token go.
        if self.kube_dir.is_dir():
            for path in self.kube_dir.iterdir():
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.suffix != ".log":
                    path.unlink()

    def status(self) -> bool:
        components = self._components()
        if not components:
            print("sandbox not running")
            return False
        healthy = True
        for component in components:
            running = component.running()
            healthy &= running
            print(f"{component.name:15} pid {component.pid:<8} {'running' if running else 'GONE'}")
        ready = self._apiserver_ready()
        healthy &= ready
        state = self._state()
        print(f"{'kube-apiserver':15} {state.get('server')} {'ready' if ready else 'NOT READY'}")
        print(f"{'moto':15} {state.get('aws_endpoint_url')}")
        return healthy

    def _print_usage(self) -> None:
        here = Path.cwd()

        def shown(path: Path) -> str:
            with contextlib.suppress(ValueError):
                return str(path.relative_to(here))
            return str(path)

        print(f"  export KUBECONFIG={shown(self.kubeconfig)}")
        print(f"  source {shown(self.aws_env)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.sandbox", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    sandbox = Sandbox()
    if args.command == "up":
        sandbox.up()
    elif args.command == "down":
        sandbox.down()
    elif not sandbox.status():
        return 1
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())

"""A moto server on a free loopback port, as a separate process.

Integration tests, the sandbox and the benchmark talk to AWS through it over HTTP
(`AWS_ENDPOINT_URL`), exactly as the operator talks to AWS; nothing of sgmesh is patched. The
server is moto's own, with AWS's semantics for security-group rules (`devtools.aws.moto_aws`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devtools import REPO_ROOT

__all__ = ["MODULE", "MotoServer", "aws_env", "free_port", "reset", "start_moto_server"]

STARTUP_DEADLINE_SECONDS = 60.0
MODULE = "devtools.aws.moto_aws"  # what runs the server: moto's, with AWS's rule semantics


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def aws_env(endpoint_url: str, region: str = "us-east-1") -> dict[str, str]:
    """The standard AWS environment that points any SDK at a moto server."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }


def reset(endpoint_url: str) -> None:
    """Forget every resource (moto's own reset API)."""
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


@dataclass
class MotoServer:
    """Handle on a running moto server."""

    port: int
    process: subprocess.Popen[bytes]
    region: str = "us-east-1"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def aws_env(self) -> dict[str, str]:
        return aws_env(self.endpoint_url, self.region)

    def reset(self) -> None:
        reset(self.endpoint_url)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _wait_ready(server: MotoServer, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"moto server exited with code {server.process.returncode}")
        try:
            with urllib.request.urlopen(f"{server.endpoint_url}/moto-api/", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise TimeoutError(f"moto server on port {server.port} not ready in time")


def start_moto_server(
    port: int | None = None, log_path: Path | None = None, detach: bool = False
) -> MotoServer:
    """Start moto's server with AWS's rule semantics (`devtools.aws.moto_aws`); managed IAM
    policies are loaded so AmazonEKS_CNI_Policy exists."""
    port = port or free_port()
    env = dict(os.environ, MOTO_IAM_LOAD_MANAGED_POLICIES="true")
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", MODULE, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=detach,
    )
    server = MotoServer(port=port, process=process)
    try:
        _wait_ready(server, time.monotonic() + STARTUP_DEADLINE_SECONDS)
    except BaseException:
        server.stop()
        raise
    return server

"""pytest plugin: AWS for tests — one moto server per session (per worker in a parallel run),
wiped before each test — and the operator image, built once per session."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import boto3
import botocore.loaders
import botocore.session
import pytest

from devtools import image
from devtools.aws.moto_server import MotoServer, start_moto_server
from devtools.aws.world import World
from sgmesh.aws import client
from tests.support.fault_proxy import ThrottlingProxy
from tests.support.tcp_proxy import TcpProxy

__all__ = [
    "aws_env",
    "aws_proxy",
    "aws_session",
    "clients",
    "fault_proxy",
    "moto_server",
    "operator_image",
    "service_models",
    "world",
]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = start_moto_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An empty AWS behind the standard environment variables, as the operator would see it."""
    moto_server.reset()
    env = moto_server.aws_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # No shared config or profile of the machine may redirect or sign the calls.
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return env


@pytest.fixture(scope="session")
def service_models() -> botocore.loaders.Loader:
    """botocore's reader of service models, shared by the sessions of a test process: each
    model (EC2's is megabytes of JSON) is read once, not for every set of clients (0.2 s)."""
    return botocore.loaders.create_loader()


@pytest.fixture
def aws_session(aws_env: dict[str, str], service_models: botocore.loaders.Loader) -> boto3.Session:
    """A fresh boto3 session for this test (credentials, region and endpoint from the
    environment `aws_env` set), reading service models through the shared loader."""
    core = botocore.session.Session()
    core.register_component("data_loader", service_models)
    return boto3.Session(botocore_session=core)


@pytest.fixture
def clients(aws_session: boto3.Session) -> client.AwsClients:
    """The clients under test; `clients.calls` counts only what the code under test asks."""
    return client.make_clients(session=aws_session)


@pytest.fixture
def world(aws_session: boto3.Session) -> World:
    """Builds AWS resources through clients of its own, so that they do not count as calls."""
    return World(client.make_clients(session=aws_session))


@pytest.fixture
def fault_proxy(
    moto_server: MotoServer, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[ThrottlingProxy]:
    """The environment's AWS reached through the HTTP fault proxy (throttling, 5xx...)."""
    proxy = ThrottlingProxy(moto_server.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.close()


@pytest.fixture
def aws_proxy(moto_server: MotoServer, aws_env: dict[str, str]) -> Iterator[TcpProxy]:
    """A way to moto that a test can cut, to play an AWS outage (the operator goes through it)."""
    proxy = TcpProxy(moto_server.port)
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def operator_image(request: pytest.FixtureRequest) -> str:
    """The Dockerfile built into `localhost/sgmesh:dev` with buildah on the local base (see
    devtools/image.py); layers cached by an earlier build are reused. Its build time and
    size are printed (not by a worker of a parallel run, whose output pytest does not show:
    there `make image`, run before the tests, printed them). A machine that cannot build it
    fails the tests that need it."""
    try:
        built = image.build_image()
        summary = image.report(built)
    except image.ImageBuildError as error:
        pytest.fail(str(error))
    # Printed past pytest's output capture, so that every run shows it.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{summary}", flush=True)
    return built.name

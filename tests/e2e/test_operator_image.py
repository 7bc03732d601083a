"""The operator run from its image as a cluster runs it: the image's entrypoint, as the uid
deploy/ sets (which has no passwd entry), against the real API server and the moto server.

The container is started with `buildah run` on the host's network; it is given a copy of the
kubeconfig it may read and the AWS endpoint, nothing of this machine's environment."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane
from tests.deploy.render import DEPLOY
from tests.e2e.harness import Meshes, Operator, wait_until
from tests.e2e.test_operator import full_mesh, owned_sources
from tests.support import image
from tests.support.tcp_proxy import TcpProxy
from tests.support.world import CNI_POLICY_ARN, World

pytestmark = pytest.mark.kube

DEADLINE = 90
KUBECONFIG_IN_IMAGE = "/tmp/kubeconfig"


def _deployment_user() -> str:
    """runAsUser:runAsGroup of deploy/'s Deployment: the uid and gid the pod runs as."""
    deployment = yaml.safe_load((DEPLOY / "manager" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    return f"{pod['runAsUser']}:{pod['runAsGroup']}"


class ImageLauncher:
    """Starts `sgmesh run` in a fresh container of the image, through the image's entrypoint;
    removes every container it made on `close()`."""

    def __init__(self, image_name: str, user: str) -> None:
        self.image_name = image_name
        self.user = user
        self.entrypoint: list[str] = image.image_config(image_name)["Entrypoint"]
        self.containers: list[str] = []

    def __call__(
        self, run_options: Sequence[str], environment: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str]]:
        if self.entrypoint[-1:] != ["run"]:
            raise AssertionError(f"the image's entrypoint {self.entrypoint} is not `sgmesh run`")
        container = subprocess.run(
            ["buildah", "from", "--pull=never", self.image_name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.containers.append(container)
        # The kubeconfig, readable by the operator's uid inside the container only.
        subprocess.run(
            [
                "buildah",
                "copy",
                "--chown",
                self.user,
                container,
                environment["KUBECONFIG"],
                KUBECONFIG_IN_IMAGE,
            ],
            capture_output=True,
            check=True,
        )
        inside = {**environment, "KUBECONFIG": KUBECONFIG_IN_IMAGE}
        # The entrypoint already says `run`: the options follow it.
        argv = [*image.run_command(container, self.user, inside), *self.entrypoint, *run_options]
        return argv, {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

    def close(self) -> None:
        for container in self.containers:
            subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


@pytest.fixture
def operator_from_image(
    operator_image: str,
    kube_cluster: ControlPlane,
    nodegroupmesh_crd: str,
    aws_env: dict[str, str],
    aws_proxy: TcpProxy,
    meshes: Meshes,
    tmp_path: Path,
) -> Iterator[Callable[..., Operator]]:
    launcher = ImageLauncher(operator_image, _deployment_user())
    started: list[Operator] = []

    def start(**options: Any) -> Operator:
        env = {**aws_env, "AWS_ENDPOINT_URL": aws_proxy.url}
        operator = Operator(
            kube_cluster.kubeconfig,
            env,
            tmp_path / f"operator-image-{len(started)}.log",
            launcher=launcher,
            **options,
        )
        started.append(operator)
        return operator.start(deadline=DEADLINE)

    try:
        yield start
    finally:
        for operator in started:
            with contextlib.suppress(Exception):
                operator.stop()
        launcher.close()


def test_operator_from_the_image_converges_joins_and_cleans_up(
    world: World, meshes: Meshes, operator_from_image: Callable[..., Operator]
) -> None:
    operator = operator_from_image()
    wait_until(operator.ready, DEADLINE, "the operator says it is ready", operator.log_tail)
    first = world.node_group("eks-data-1", tags={"team": "data"})
    second = world.node_group("eks-data-2", tags={"team": "data"})
    world.node_group("eks-web", tags={"team": "web"})

    # A mesh converges.
    meshes.create(
        "data",
        {"autoScalingGroups": {"selectors": [{"tags": {"team": "data"}}]}, "resyncSeconds": 10},
    )
    meshes.wait_ready("data", DEADLINE, operator.log_tail)
    assert full_mesh(world, [first, second], "data")
    for group in (first, second):
        assert CNI_POLICY_ARN in world.attached_policy_arns(group.role)

    # An ASG tagged to match joins at the next resync.
    third = world.node_group("eks-data-3", tags={"team": "data"})
    wait_until(
        lambda: full_mesh(world, [first, second, third], "data"),
        DEADLINE,
        "the new ASG's SG is meshed",
        operator.log_tail,
    )

    # Deleting the mesh revokes what it owns, then the object goes.
    meshes.delete("data")
    wait_until(lambda: meshes.get("data") is None, DEADLINE, "the mesh is gone", operator.log_tail)
    for group in (first, second, third):
        assert owned_sources(world, group.security_group_id, "data") == set()
    assert operator.healthy()

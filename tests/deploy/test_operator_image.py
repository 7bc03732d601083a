"""The operator run from its image as a cluster runs it: through the image's entrypoint, as
the uid and gid deploy/ sets (no passwd entry has them), with the Deployment's environment,
authenticated as deploy/'s ServiceAccount, against the real API server and the moto server;
every AWS request it makes must be allowed by deploy/iam-policy.json (see conftest.py).

The container is started with `buildah run` on the host's network (devtools/image.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from devtools import image
from devtools.aws.world import CNI_POLICY_ARN, World
from devtools.operator_harness import Meshes, Operator, wait_until
from tests.deploy.render import Objects, find, operator_environment
from tests.e2e.scenarios_operator import full_mesh, owned_sources

# One worker builds the image and runs every test that uses it (see tests/deploy/test_image.py).
pytestmark = [pytest.mark.kube, pytest.mark.image, pytest.mark.xdist_group("image")]

DEADLINE = 90


@pytest.fixture
def image_launcher(operator_image: str, base_objects: Objects) -> Iterator[image.ImageLauncher]:
    pod = find(base_objects, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    launcher = image.ImageLauncher(operator_image, f"{pod['runAsUser']}:{pod['runAsGroup']}")
    yield launcher
    launcher.close()


def test_operator_from_the_image_converges_joins_and_cleans_up(
    # The launcher comes first so that it outlives the operators it started.
    image_launcher: image.ImageLauncher,
    start_operator: Callable[..., Operator],
    base_objects: Objects,
    world: World,
    meshes: Meshes,
) -> None:
    deployment_env = operator_environment(find(base_objects, "Deployment"))
    operator = start_operator(
        launcher=image_launcher,
        extra_env={**deployment_env, "POD_NAME": "sgmesh-5d8f7b9c4-x2x7k"},
    )
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

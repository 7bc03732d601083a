"""The sweep of the roles the CNI policy is attached to, shared by the meshes an operator starts
with (`sgmesh.aws.roles.RoleMemory.shared_sweep`), against a moto server: a restart with many
meshes reads each role's tags once, not once per mesh, and still releases what a mesh recorded
on a role that left it while the operator was down."""

from __future__ import annotations

from collections.abc import Sequence

from devtools.aws.world import CNI_POLICY_ARN, World
from sgmesh.api import models
from sgmesh.aws import client, reconcile, roles
from sgmesh.engine import planning

CLUSTER = "test-cluster"
MESHES = 6
GROUPS_PER_MESH = 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def mesh(name: str, groups: Sequence[str]) -> models.NodeGroupMesh:
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": name},
            "spec": {
                "autoScalingGroups": {"names": list(groups)},
                "cniPolicy": {"retainOnRemoval": False},
            },
        }
    )


def process(clock: Clock) -> reconcile.Settings:
    """What one operator process keeps for its life."""
    return reconcile.Settings(cluster=CLUSTER, role_memory=roles.RoleMemory(600.0, clock=clock))


def fleet(world: World) -> dict[str, list[str]]:
    groups = {
        f"mesh-{index}": [f"ng-{index}-{group}" for group in range(GROUPS_PER_MESH)]
        for index in range(MESHES)
    }
    for names in groups.values():
        for name in names:
            world.node_group(name)
    return groups


def converge_all(
    clients: client.AwsClients, settings: reconcile.Settings, groups: dict[str, list[str]]
) -> None:
    for name, names in groups.items():
        outcome = reconcile.converge(clients, mesh(name, names), settings)
        assert outcome.converged, (name, outcome.plan.problems, outcome.failures)


def test_a_restart_reads_each_roles_tags_once_whatever_the_number_of_meshes(
    world: World, clients: client.AwsClients
) -> None:
    clock = Clock()
    groups = fleet(world)
    converge_all(clients, process(clock), groups)  # every role attached and tagged
    roles_attached = MESHES * GROUPS_PER_MESH

    clients.calls.clear()
    converge_all(clients, process(clock), groups)  # a new process: nothing remembered

    assert clients.mutating_calls == 0
    # One sweep for all: every role's tags once; each mesh's own roles come from it.
    assert clients.calls["ListRoleTags"] == roles_attached
    # One listing of the account's instance profiles answers for every mesh's profiles.
    assert clients.calls["ListInstanceProfiles"] == 1
    assert clients.calls["GetInstanceProfile"] == 0
    # The sweep's listing once, and each mesh's own policy afresh, as at every reconcile
    # (meshes reconciled together share that one through shared reads; these clients have none).
    assert clients.calls["ListEntitiesForPolicy"] == 1 + MESHES


def test_a_shared_sweep_still_releases_a_role_that_left_while_the_operator_was_down(
    world: World, clients: client.AwsClients
) -> None:
    clock = Clock()
    groups = fleet(world)
    converge_all(clients, process(clock), groups)
    left = groups["mesh-3"].pop()  # mesh-3 no longer names it; the operator was down
    assert any(key.endswith("/mesh-3") for key in world.role_tags(left))

    restarted = process(clock)
    converge_all(clients, restarted, {"mesh-0": groups["mesh-0"]})  # takes the sweep
    clients.calls.clear()
    outcome = reconcile.converge(clients, mesh("mesh-3", groups["mesh-3"]), restarted)

    assert outcome.converged
    assert any(isinstance(action, planning.DetachPolicy) for action in outcome.plan.actions)
    assert CNI_POLICY_ARN not in world.attached_policy_arns(left)
    assert not any(key.endswith("/mesh-3") for key in world.role_tags(left))
    # The role's release was planned from a read of this reconcile, not from the sweep.
    assert clients.calls["ListRoleTags"] >= 1


def test_a_sweep_is_read_again_once_its_share_has_passed(
    world: World, clients: client.AwsClients
) -> None:
    clock = Clock()
    groups = fleet(world)
    converge_all(clients, process(clock), groups)
    restarted = process(clock)
    converge_all(clients, restarted, {"mesh-0": groups["mesh-0"]})

    clock.now += roles.SWEEP_SHARE_SECONDS
    clients.calls.clear()
    converge_all(clients, restarted, {"mesh-1": groups["mesh-1"]})

    # The sweep is read again, and the mesh's own policy listed afresh.
    assert clients.calls["ListEntitiesForPolicy"] == 2


def test_a_policy_detached_after_the_shared_sweep_is_attached_again_at_the_first_reconcile(
    world: World, clients: client.AwsClients
) -> None:
    """The sweep answers which roles a mesh recorded, not whether its roles hold the policy
    now: a detach made after the sweep (by hand, or by another mesh of this process) is seen
    by the mesh's own listing."""
    clock = Clock()
    groups = fleet(world)
    converge_all(clients, process(clock), groups)
    restarted = process(clock)
    converge_all(clients, restarted, {"mesh-0": groups["mesh-0"]})  # takes the sweep
    detached = groups["mesh-1"][0]
    world.clients.iam.detach_role_policy(RoleName=detached, PolicyArn=CNI_POLICY_ARN)

    converge_all(clients, restarted, {"mesh-1": groups["mesh-1"]})

    assert CNI_POLICY_ARN in world.attached_policy_arns(detached)

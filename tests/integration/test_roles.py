"""IAM reads against a moto server: roles read by name, one listing of the CNI policy's roles
in steady state, no IAM call with `attach: false`, and roles the mesh tagged found again when
they leave the mesh, when the operator restarts and when the mesh is deleted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import botocore.session

from devtools.aws.world import CNI_POLICY_ARN, World
from sgmesh.api import models
from sgmesh.aws import client, reconcile

IAM_OPERATIONS = frozenset(botocore.session.get_session().get_service_model("iam").operation_names)
# Reads of the account's roles and their policies, which the operator's IAM policy does not
# allow. (Its instance profiles are listed: one page answers a thousand profiles.)
ACCOUNT_WIDE = frozenset({"GetAccountAuthorizationDetails", "ListRoles", "ListPolicies"})
SWEEP = "ListEntitiesForPolicy"
CLUSTER = "test-cluster"


def mesh(names: Sequence[str], name: str = "mesh", **cni: Any) -> models.NodeGroupMesh:
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": name},
            "spec": {
                "autoScalingGroups": {"names": list(names)},
                "cniPolicy": {"retainOnRemoval": False, **cni},
            },
        }
    )


def iam_calls(clients: client.AwsClients) -> Counter[str]:
    return Counter({op: n for op, n in clients.calls.items() if op in IAM_OPERATIONS})


def converge(
    clients: client.AwsClients, settings: reconcile.Settings, spec: models.NodeGroupMesh
) -> Counter[str]:
    """Converge and return the IAM calls it made."""
    clients.calls.clear()
    outcome = reconcile.converge(clients, spec, settings)
    assert outcome.converged, (outcome.plan.problems, outcome.failures)
    return iam_calls(clients)


def key(name: str = "mesh") -> str:
    return f"sgmesh.io/{CLUSTER}/{name}"


def test_attach_false_makes_no_iam_call(world: World, clients: client.AwsClients) -> None:
    world.node_group("eks-a")
    world.node_group("eks-b")
    settings = reconcile.Settings(cluster=CLUSTER)

    assert converge(clients, settings, mesh(["eks-a", "eks-b"], attach=False)) == Counter()
    assert converge(clients, settings, mesh(["eks-a", "eks-b"], attach=False)) == Counter()


def test_a_steady_reconcile_reads_only_which_roles_hold_the_policy(
    world: World, clients: client.AwsClients
) -> None:
    world.node_group("eks-a")
    world.node_group("eks-b")
    settings = reconcile.Settings(cluster=CLUSTER)
    cold = converge(clients, settings, mesh(["eks-a", "eks-b"]))
    assert world.role_tags("eks-a")[key()] == CNI_POLICY_ARN

    after_the_writes = converge(clients, settings, mesh(["eks-a", "eks-b"]))
    steady = converge(clients, settings, mesh(["eks-a", "eks-b"]))

    assert not (cold.keys() & ACCOUNT_WIDE)
    # Nothing remembered yet: the instance profiles listed, each role read, the CNI policy's
    # roles swept, and listed afresh for this mesh's own roles.
    assert cold == Counter(
        {
            "ListInstanceProfiles": 1,
            "ListRoleTags": 2,
            SWEEP: 2,
            "TagRole": 2,
            "AttachRolePolicy": 2,
        }
    )
    # The process forgot the roles it wrote to: their tags are read back once.
    assert after_the_writes == Counter({"ListRoleTags": 2, SWEEP: 1})
    assert steady == Counter({SWEEP: 1})


def test_a_role_that_leaves_is_released_without_a_sweep(
    world: World, clients: client.AwsClients
) -> None:
    world.node_group("eks-a")
    world.node_group("eks-b")
    settings = reconcile.Settings(cluster=CLUSTER)
    converge(clients, settings, mesh(["eks-a", "eks-b"]))
    converge(clients, settings, mesh(["eks-a", "eks-b"]))

    shrunk = converge(clients, settings, mesh(["eks-a"]))

    assert not (shrunk.keys() & ACCOUNT_WIDE)
    assert shrunk[SWEEP] == 1  # the mesh's policy only: which member roles hold it
    # The role that left is read afresh, its attachments too, before it is released.
    assert shrunk["ListRoleTags"] == shrunk["ListAttachedRolePolicies"] == 1
    assert shrunk["DetachRolePolicy"] == 1
    assert key() not in world.role_tags("eks-b")
    assert CNI_POLICY_ARN not in world.attached_policy_arns("eks-b")
    assert world.role_tags("eks-a")[key()] == CNI_POLICY_ARN
    # Released: read once more (its tag is gone), then forgotten.
    assert converge(clients, settings, mesh(["eks-a"]))["ListRoleTags"] == 1
    assert converge(clients, settings, mesh(["eks-a"]))["ListRoleTags"] == 0


def test_after_a_restart_a_role_that_left_is_found_by_the_sweep(
    world: World, clients: client.AwsClients
) -> None:
    world.node_group("eks-a")
    world.node_group("eks-b")
    world.node_group("unrelated", policy_arns=[CNI_POLICY_ARN])  # attached by someone else
    converge(clients, reconcile.Settings(cluster=CLUSTER), mesh(["eks-a", "eks-b"]))

    restarted = reconcile.Settings(cluster=CLUSTER)  # nothing remembered
    calls = converge(clients, restarted, mesh(["eks-a"]))

    assert calls[SWEEP] == 2  # the sweep, and the mesh's own policy listed afresh
    assert key() not in world.role_tags("eks-b")
    assert CNI_POLICY_ARN not in world.attached_policy_arns("eks-b")
    assert CNI_POLICY_ARN in world.attached_policy_arns("unrelated")


def test_turning_attach_off_releases_remembered_roles_then_makes_no_iam_call(
    world: World, clients: client.AwsClients
) -> None:
    world.node_group("eks-a")
    settings = reconcile.Settings(cluster=CLUSTER)
    converge(clients, settings, mesh(["eks-a"]))

    releasing = converge(clients, settings, mesh(["eks-a"], attach=False))

    assert releasing["UntagRole"] == 1
    assert key() not in world.role_tags("eks-a")
    # Read once more (its tag is gone), then forgotten: no IAM call any more.
    assert converge(clients, settings, mesh(["eks-a"], attach=False)) == Counter(
        {"ListRoleTags": 1}
    )
    assert converge(clients, settings, mesh(["eks-a"], attach=False)) == Counter()


def test_a_deleted_mesh_finds_its_roles_after_a_restart_with_a_custom_policy(
    world: World, clients: client.AwsClients
) -> None:
    custom = clients.iam.create_policy(
        PolicyName="custom-cni",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
        '"Action":"ec2:DescribeNetworkInterfaces","Resource":"*"}]}',
    )["Policy"]["Arn"]
    world.node_group("eks-a")
    world.node_group("eks-b")
    converge(clients, reconcile.Settings(cluster=CLUSTER), mesh(["eks-a"], policyArn=custom))
    converge(clients, reconcile.Settings(cluster=CLUSTER), mesh(["eks-b"], name="other"))

    outcome = reconcile.withdraw(
        clients,
        reconcile.owner_of(mesh(["eks-a"]), reconcile.Settings(cluster=CLUSTER)),
        retain_cni=False,
        policy_arns=(custom,),
    )

    assert not outcome.failures
    assert key() not in world.role_tags("eks-a")
    assert custom not in world.attached_policy_arns("eks-a")
    assert world.role_tags("eks-b")[key("other")] == CNI_POLICY_ARN  # another mesh's

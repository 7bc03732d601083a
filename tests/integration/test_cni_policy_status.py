"""What a mesh says of its CNI policy attachments (`status.cniPolicy`), against the moto server:
which member roles hold the policy and which attachments are the mesh's — and that an
attachment kept by `retainOnRemoval` after a release is never adopted again."""

from __future__ import annotations

from typing import Any

from devtools.aws.world import CNI_POLICY_ARN, World
from sgmesh.aws import client, reconcile
from tests.support.meshes import node_group_mesh

SETTINGS = reconcile.Settings(cluster="status")


def converge(clients: client.AwsClients, **cni: Any) -> reconcile.Outcome:
    mesh = node_group_mesh(
        "web", region="us-east-1", autoScalingGroups={"names": ["eks-a", "eks-b"]}, cniPolicy=cni
    )
    outcome = reconcile.converge(clients, mesh, SETTINGS)
    assert outcome.failures == []
    return outcome


def test_status_names_the_attachments_the_mesh_made_and_never_adopts_a_retained_one(
    world: World, clients: client.AwsClients
) -> None:
    a, b = world.node_group("eks-a"), world.node_group("eks-b")
    roles = sorted([a.role, b.role])

    made = converge(clients).cni_policy()
    assert made.policy_arn == CNI_POLICY_ARN
    assert (made.attached_roles, made.owned_roles) == (roles, roles)

    # aws-node gets its permissions elsewhere now: the records go, the attachments stay.
    released = converge(clients, attach=False).cni_policy()
    assert released.owned_roles == []
    for role in roles:
        assert CNI_POLICY_ARN in world.attached_policy_arns(role)
        assert not any(key.startswith("sgmesh.io/") for key in world.role_tags(role))

    # Needed again: the kept attachments count as present; the mesh neither attaches nor
    # records them, so it will never detach them either.
    again = converge(clients, attach=True, retainOnRemoval=False)
    assert [a.kind for a in again.plan.actions if a.kind in ("tag-role", "attach")] == []
    status = again.cni_policy()
    assert (status.attached_roles, status.owned_roles) == (roles, [])

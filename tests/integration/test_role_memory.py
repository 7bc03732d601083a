"""What the process remembers of IAM (`sgmesh.aws.roles.RoleMemory`) against a moto server:
drift made by hand is still followed — a CNI policy detached, within one resync; a record tag
removed, written again within one IAM refresh (the mesh's status says the attachment is its
own); a member's new instance profile, within one resync; a profile that now holds another
role, within one refresh — profiles come from one shared listing of the account's (by name
where it does not name them, or may not be made), no removal is decided from memory, and a
process that remembers nothing decides what one that remembers does."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import botocore.session

from devtools.aws.world import CNI_POLICY_ARN, NodeGroup, World
from sgmesh.api import models
from sgmesh.aws import client, reconcile, roles
from sgmesh.engine import planning
from tests.support.fault_proxy import ThrottlingProxy

IAM_OPERATIONS = frozenset(botocore.session.get_session().get_service_model("iam").operation_names)
CLUSTER = "test-cluster"
KEY = f"sgmesh.io/{CLUSTER}/mesh"
REFRESH_SECONDS = 600.0


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def mesh(names: Sequence[str], *, name: str = "mesh", **cni: Any) -> models.NodeGroupMesh:
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


def operator_settings(clock: Clock) -> reconcile.Settings:
    """What an operator process keeps for its life, its time on `clock`."""
    return reconcile.Settings(
        cluster=CLUSTER, role_memory=roles.RoleMemory(REFRESH_SECONDS, clock=clock)
    )


def converge(
    clients: client.AwsClients, settings: reconcile.Settings, spec: models.NodeGroupMesh
) -> Counter[str]:
    """Converge and return the IAM calls it made."""
    clients.calls.clear()
    outcome = reconcile.converge(clients, spec, settings)
    assert outcome.converged, (outcome.plan.problems, outcome.failures)
    return Counter({op: n for op, n in clients.calls.items() if op in IAM_OPERATIONS})


def steady(
    world: World, clients: client.AwsClients, clock: Clock, names: Sequence[str]
) -> tuple[reconcile.Settings, dict[str, NodeGroup]]:
    """Node groups `names`, meshed, and a process that remembers them in steady state."""
    groups = {name: world.node_group(name) for name in names}
    settings = operator_settings(clock)
    converge(clients, settings, mesh(names))  # cold: attaches and tags
    converge(clients, settings, mesh(names))  # reads back the roles it wrote to
    assert converge(clients, settings, mesh(names)) == Counter({"ListEntitiesForPolicy": 1})
    clock.now += roles.PROFILE_LISTING_FRESH_SECONDS  # what was listed is only remembered now
    return settings, groups


def custom_policy(world: World) -> str:
    return world.clients.iam.create_policy(
        PolicyName="custom-cni",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
        '"Action":"ec2:DescribeNetworkInterfaces","Resource":"*"}]}',
    )["Policy"]["Arn"]


def test_a_policy_detached_by_hand_is_attached_again_at_the_next_resync(
    world: World, clients: client.AwsClients
) -> None:
    clock = Clock()
    settings, _ = steady(world, clients, clock, ["eks-a", "eks-b"])
    world.clients.iam.detach_role_policy(RoleName="eks-a", PolicyArn=CNI_POLICY_ARN)

    calls = converge(clients, settings, mesh(["eks-a", "eks-b"]))

    assert CNI_POLICY_ARN in world.attached_policy_arns("eks-a")
    assert world.role_tags("eks-a")[KEY] == CNI_POLICY_ARN
    # The listing showed it; the role and its profile were read afresh before the write (the
    # profile through the account's listing: one page costs no more than one read by name).
    assert calls == Counter(
        {
            "ListEntitiesForPolicy": 1,
            "ListRoleTags": 1,
            "ListInstanceProfiles": 1,
            "AttachRolePolicy": 1,
        }
    )


def test_a_record_tag_removed_by_hand_is_written_again_within_one_iam_refresh(
    world: World, clients: client.AwsClients
) -> None:
    """Memory hides the removal until the role's tags are read again, at the refresh at the
    latest; the mesh's status (`status.cniPolicy.ownedRoles`) says the attachment is the
    mesh's, so the record is written again. A process that just started, with the same
    status, decides the same."""
    clock = Clock()
    settings, _ = steady(world, clients, clock, ["eks-a", "eks-b"])
    spec = mesh(["eks-a", "eks-b"])
    status = reconcile.converge(clients, spec, settings).cni_policy()
    assert status.owned_roles == ["eks-a", "eks-b"]
    world.clients.iam.untag_role(RoleName="eks-a", TagKeys=[KEY])

    clock.now += REFRESH_SECONDS / 2 - 1  # every answer is kept at least half the refresh
    before = reconcile.converge(clients, spec, settings, recorded_cni=status)
    assert before.topology.roles["eks-a"].tags.get(KEY) == CNI_POLICY_ARN  # remembered
    assert before.plan.empty

    clock.now += REFRESH_SECONDS / 2 + 1
    clients.calls.clear()
    after = reconcile.converge(clients, spec, settings, recorded_cni=before.cni_policy())

    assert [(action.kind, getattr(action, "role", "")) for action in after.plan.actions] == [
        ("tag-role", "eks-a")
    ]
    assert world.role_tags("eks-a")[KEY] == CNI_POLICY_ARN
    assert after.cni_policy().owned_roles == ["eks-a", "eks-b"]
    assert clients.calls["ListRoleTags"] == 2
    # The profiles came back from one listing of the account's instance profiles.
    assert clients.calls["ListInstanceProfiles"] == 1
    assert clients.calls["GetInstanceProfile"] == 0

    world.clients.iam.untag_role(RoleName="eks-a", TagKeys=[KEY])
    restarted = reconcile.converge(
        clients, spec, operator_settings(clock), recorded_cni=after.cni_policy()
    )
    assert [(action.kind, getattr(action, "role", "")) for action in restarted.plan.actions] == [
        ("tag-role", "eks-a")
    ]
    assert world.role_tags("eks-a")[KEY] == CNI_POLICY_ARN


def test_without_the_meshs_status_a_record_removed_by_hand_is_not_claimed_again(
    world: World, clients: client.AwsClients
) -> None:
    """`sgmesh apply` has no status: after the refresh it sees the attachment without the
    mesh's record, which it never claims, so the attachment stays when its role leaves."""
    clock = Clock()
    settings, _ = steady(world, clients, clock, ["eks-a", "eks-b"])
    world.clients.iam.untag_role(RoleName="eks-a", TagKeys=[KEY])
    clock.now += REFRESH_SECONDS

    after = reconcile.converge(clients, mesh(["eks-a", "eks-b"]), settings)

    assert KEY not in after.topology.roles["eks-a"].tags
    assert after.plan.empty
    converge(clients, settings, mesh(["eks-b"]))
    assert CNI_POLICY_ARN in world.attached_policy_arns("eks-a")


def test_a_member_whose_launch_data_names_a_new_profile_is_followed_at_the_next_resync(
    world: World, clients: client.AwsClients
) -> None:
    clock = Clock()
    settings, groups = steady(world, clients, clock, ["eks-a"])
    replacement = world.role_with_profile("eks-a-v2")
    world.launch_template_version(
        groups["eks-a"].template,
        security_group_ids=[groups["eks-a"].security_group_id],
        profile_arn=replacement.arn,
        make_default=True,
    )

    calls = converge(clients, settings, mesh(["eks-a"]))

    assert calls["GetInstanceProfile"] == 1  # the new profile; the old one is not asked for
    assert world.role_tags("eks-a-v2")[KEY] == CNI_POLICY_ARN
    assert CNI_POLICY_ARN in world.attached_policy_arns("eks-a-v2")
    # The old role left the mesh: read afresh, then released.
    assert KEY not in world.role_tags("eks-a")
    assert CNI_POLICY_ARN not in world.attached_policy_arns("eks-a")


def swap_role(world: World, group: NodeGroup, new_role: str) -> None:
    """The instance profile of `group` now holds `new_role` instead of its own role."""
    world.role(new_role)
    iam = world.clients.iam
    iam.remove_role_from_instance_profile(
        InstanceProfileName=group.profile.name, RoleName=group.role
    )
    iam.add_role_to_instance_profile(InstanceProfileName=group.profile.name, RoleName=new_role)


def test_a_profile_that_now_holds_another_role_is_followed_within_one_iam_refresh(
    world: World, clients: client.AwsClients
) -> None:
    clock = Clock()
    group = world.node_group("eks-a")
    settings = operator_settings(clock)
    converge(clients, settings, mesh(["eks-a"]))
    converge(clients, settings, mesh(["eks-a"]))
    swap_role(world, group, "eks-a-new")

    # The profile is remembered and its old role still holds the policy: nothing seen yet.
    assert converge(clients, settings, mesh(["eks-a"])) == Counter({"ListEntitiesForPolicy": 1})

    clock.now += REFRESH_SECONDS
    converge(clients, settings, mesh(["eks-a"]))

    assert world.role_tags("eks-a-new")[KEY] == CNI_POLICY_ARN
    assert CNI_POLICY_ARN in world.attached_policy_arns("eks-a-new")
    assert KEY not in world.role_tags("eks-a")
    assert CNI_POLICY_ARN not in world.attached_policy_arns("eks-a")


def test_a_remembered_profile_is_read_again_when_its_role_needs_an_action(
    world: World, clients: client.AwsClients
) -> None:
    """The profile's old role lost the policy (by hand): before anything is written for it,
    the profile is read again, and the mesh follows the role it holds now."""
    clock = Clock()
    group = world.node_group("eks-a")
    settings = operator_settings(clock)
    converge(clients, settings, mesh(["eks-a"]))
    converge(clients, settings, mesh(["eks-a"]))
    clock.now += roles.PROFILE_LISTING_FRESH_SECONDS  # the listing is only remembered now
    swap_role(world, group, "eks-a-new")
    world.clients.iam.detach_role_policy(RoleName="eks-a", PolicyArn=CNI_POLICY_ARN)

    calls = converge(clients, settings, mesh(["eks-a"]))

    assert calls["ListInstanceProfiles"] == 1  # one page: no dearer than a read by name
    assert "AttachRolePolicy" in calls
    assert CNI_POLICY_ARN in world.attached_policy_arns("eks-a-new")
    assert CNI_POLICY_ARN not in world.attached_policy_arns("eks-a")  # never attached again
    assert KEY not in world.role_tags("eks-a")  # its stale record released


def test_meshes_that_doubt_remembered_profiles_together_read_them_in_one_listing(
    world: World, clients: client.AwsClients
) -> None:
    """Three meshes each find their role without the policy (detached by hand). Before each
    writes, the profile it remembers is read again: from one listing of the account's
    profiles, made for all of them and as fresh as a read by name, not one
    GetInstanceProfile per profile (100 meshes created at once doubted 297)."""
    clock = Clock()
    settings = operator_settings(clock)
    names = ["eks-a", "eks-b", "eks-c"]
    for name in names:
        world.node_group(name)
        converge(clients, settings, mesh([name], name=name))
        converge(clients, settings, mesh([name], name=name))
    clock.now += roles.PROFILE_LISTING_FRESH_SECONDS  # the listing is only remembered now
    for name in names:
        world.clients.iam.detach_role_policy(RoleName=name, PolicyArn=CNI_POLICY_ARN)

    calls = sum((converge(clients, settings, mesh([name], name=name)) for name in names), Counter())

    assert calls["ListInstanceProfiles"] == 1
    assert calls["GetInstanceProfile"] == 0
    assert calls["AttachRolePolicy"] == 3
    for name in names:
        assert CNI_POLICY_ARN in world.attached_policy_arns(name)


def test_no_removal_is_decided_from_memory(world: World, clients: client.AwsClients) -> None:
    """Memory holds a member role's tags from before another mesh (of another operator
    process) claimed the same attachment. The mesh's policy changes: its record on the role
    now names a policy it no longer wants there, so the role is read afresh before anything
    is planned, and the attachment the other mesh claims stays."""
    clock = Clock()
    settings, _ = steady(world, clients, clock, ["eks-a"])
    other = f"sgmesh.io/{CLUSTER}/other"
    world.clients.iam.tag_role(RoleName="eks-a", Tags=[{"Key": other, "Value": CNI_POLICY_ARN}])
    custom = custom_policy(world)

    clients.calls.clear()
    outcome = reconcile.converge(clients, mesh(["eks-a"], policyArn=custom), settings)

    assert outcome.converged
    assert not any(isinstance(a, planning.DetachPolicy) for a in outcome.plan.actions)
    assert world.attached_policy_arns("eks-a") == {CNI_POLICY_ARN, custom}
    assert world.role_tags("eks-a") == {other: CNI_POLICY_ARN, KEY: custom}
    assert clients.calls["ListRoleTags"] == clients.calls["ListAttachedRolePolicies"] == 1


def test_a_role_that_leaves_is_read_afresh_before_it_is_released(
    world: World, clients: client.AwsClients
) -> None:
    clock = Clock()
    settings, _ = steady(world, clients, clock, ["eks-a", "eks-b"])
    other = f"sgmesh.io/{CLUSTER}/other"
    world.clients.iam.tag_role(RoleName="eks-b", Tags=[{"Key": other, "Value": CNI_POLICY_ARN}])

    clients.calls.clear()
    outcome = reconcile.converge(clients, mesh(["eks-a"]), settings)

    assert outcome.converged
    assert not any(isinstance(a, planning.DetachPolicy) for a in outcome.plan.actions)
    assert CNI_POLICY_ARN in world.attached_policy_arns("eks-b")
    assert world.role_tags("eks-b") == {other: CNI_POLICY_ARN}
    assert clients.calls["ListRoleTags"] == clients.calls["ListAttachedRolePolicies"] == 1


def plans(
    clients: client.AwsClients, settings: reconcile.Settings, spec: models.NodeGroupMesh
) -> tuple[planning.Action, ...]:
    return reconcile.converge(clients, spec, settings, write=False).plan.actions


def test_a_restart_reads_afresh_and_decides_the_same(
    world: World, clients: client.AwsClients
) -> None:
    clock = Clock()
    settings, _ = steady(world, clients, clock, ["eks-a", "eks-b", "eks-c"])
    world.clients.iam.detach_role_policy(RoleName="eks-a", PolicyArn=CNI_POLICY_ARN)
    custom = custom_policy(world)

    # The drift alone; with a member gone too; then with the mesh's policy changed as well.
    for spec in (
        mesh(["eks-a", "eks-b", "eks-c"]),
        mesh(["eks-a", "eks-b"]),
        mesh(["eks-a", "eks-b"], policyArn=custom),
    ):
        remembering = plans(clients, settings, spec)
        restarted = plans(clients, operator_settings(clock), spec)
        assert remembering == restarted
        assert remembering  # something to decide, every time


def test_a_profile_the_shared_listing_does_not_name_is_read_by_name(
    world: World, clients: client.AwsClients
) -> None:
    """The listing is no answer about a profile it does not name: it may predate it. A node
    group made after it is read by name, and meshed."""
    clock = Clock()
    settings, _ = steady(world, clients, clock, ["eks-a"])
    world.node_group("eks-b")  # after the listing, which is still shared

    calls = converge(clients, settings, mesh(["eks-a", "eks-b"]))

    assert calls["ListInstanceProfiles"] == 0
    assert calls["GetInstanceProfile"] == 1
    assert world.role_tags("eks-b")[KEY] == CNI_POLICY_ARN
    assert CNI_POLICY_ARN in world.attached_policy_arns("eks-b")


def test_profiles_unknown_after_the_share_are_listed_again_in_one_call(
    world: World, clients: client.AwsClients
) -> None:
    clock = Clock()
    settings, _ = steady(world, clients, clock, ["eks-a"])
    world.node_group("eks-b")
    world.node_group("eks-c")
    clock.now += roles.SWEEP_SHARE_SECONDS

    calls = converge(clients, settings, mesh(["eks-a", "eks-b", "eks-c"]))

    assert calls["ListInstanceProfiles"] == 1
    assert calls["GetInstanceProfile"] == 0
    for name in ("eks-b", "eks-c"):
        assert CNI_POLICY_ARN in world.attached_policy_arns(name)


def test_an_identity_that_may_not_list_profiles_reads_them_by_name(
    world: World, fault_proxy: ThrottlingProxy
) -> None:
    """An operator upgraded before its IAM policy: the refused listing is no answer about
    any profile; each is read by name, and the listing is tried again after one refresh."""
    clock = Clock()
    for name in ("eks-a", "eks-b", "eks-c"):
        world.node_group(name)
    fault_proxy.refuse["ListInstanceProfiles"] = ("AccessDenied", 403)
    clients = client.make_clients()
    settings = operator_settings(clock)

    calls = converge(clients, settings, mesh(["eks-a", "eks-b"]))

    assert calls["ListInstanceProfiles"] == 1
    assert calls["GetInstanceProfile"] == 2
    for name in ("eks-a", "eks-b"):
        assert CNI_POLICY_ARN in world.attached_policy_arns(name)

    # Not asked again within the refresh, even when the share is over.
    clock.now += roles.SWEEP_SHARE_SECONDS
    calls = converge(clients, settings, mesh(["eks-a", "eks-b", "eks-c"]))
    assert calls["ListInstanceProfiles"] == 0
    assert calls["GetInstanceProfile"] == 1
    assert CNI_POLICY_ARN in world.attached_policy_arns("eks-c")

    # After the refresh the listing is tried again, and granted now.
    del fault_proxy.refuse["ListInstanceProfiles"]
    clock.now += REFRESH_SECONDS
    calls = converge(clients, settings, mesh(["eks-a", "eks-b", "eks-c"]))
    assert calls["ListInstanceProfiles"] == 1
    assert calls["GetInstanceProfile"] == 0
    assert fault_proxy.refused["ListInstanceProfiles"] == 1

"""Out-of-band changes in AWS, each repaired at the next resync with nothing unowned touched:
an owner tag removed, the CNI policy detached, a rule deleted, the SG of a launch template
swapped for another; and a node role's record of the attachment the mesh made, removed by
hand, written again within one IAM refresh (after a restart too).

Each test ends with AWS exact: no rule lost, duplicated or orphaned, and the rules sgmesh does
not own untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from devtools.aws.world import CNI_POLICY_ARN, NodeGroup, World
from devtools.operator_harness import Meshes, Operator, quick_resync, wait_until
from tests.e2e.invariants import HandMade, assert_exact, exact, owner_key

pytestmark = pytest.mark.kube

DEADLINE = 60
# A resync or two (the operator's, every 2 s; see `quick_resync`), with room for a loaded
# machine.
REPAIR_DEADLINE = 45
# No resyncSeconds: the operator's quick default applies.
SPEC = {"autoScalingGroups": {"names": ["eks-a", "eks-b", "eks-c"]}}


@pytest.fixture
def operator(start_operator: Callable[..., Operator]) -> Operator:
    """An operator whose resyncs come every 2 s: each test here waits for a repair."""
    return start_operator(**quick_resync())


@pytest.fixture
def mesh(world: World, meshes: Meshes, operator: Operator) -> tuple[list[NodeGroup], HandMade]:
    groups = [world.node_group(f"eks-{name}") for name in "abc"]
    hand_made = HandMade.on(world, groups[0], groups[1])
    meshes.create("mesh", SPEC)
    meshes.wait_ready("mesh", DEADLINE, operator.log_tail)
    return groups, hand_made


def mesh_rule(world: World, group: NodeGroup) -> str:
    return str(
        next(
            rule["SecurityGroupRuleId"]
            for rule in world.describe_ingress(group.security_group_id)
            if any(tag["Key"] == owner_key("mesh") for tag in rule.get("Tags", []))
        )
    )


def repaired(world: World, groups: list[NodeGroup]) -> Callable[[], bool]:
    return lambda: (
        not exact(world, groups, {"mesh": groups})
        and all(CNI_POLICY_ARN in world.attached_policy_arns(group.role) for group in groups)
    )


def test_owner_tag_removed_by_hand_is_restored(
    world: World, operator: Operator, mesh: tuple[list[NodeGroup], HandMade]
) -> None:
    groups, hand_made = mesh
    world.clients.ec2.delete_tags(
        Resources=[mesh_rule(world, groups[2])], Tags=[{"Key": owner_key("mesh")}]
    )
    assert exact(world, groups, {"mesh": groups})  # the tampering shows

    wait_until(repaired(world, groups), REPAIR_DEADLINE, "repaired", operator.log_tail)
    assert_exact(world, groups, {"mesh": groups}, hand_made, operator.log_tail())


def test_cni_policy_detached_by_hand_is_attached_again(
    world: World, operator: Operator, mesh: tuple[list[NodeGroup], HandMade]
) -> None:
    groups, hand_made = mesh
    world.clients.iam.detach_role_policy(RoleName=groups[1].role, PolicyArn=CNI_POLICY_ARN)

    wait_until(repaired(world, groups), REPAIR_DEADLINE, "repaired", operator.log_tail)
    assert_exact(world, groups, {"mesh": groups}, hand_made, operator.log_tail())


def test_rule_deleted_by_hand_is_created_again_once(
    world: World, operator: Operator, mesh: tuple[list[NodeGroup], HandMade]
) -> None:
    groups, hand_made = mesh
    world.clients.ec2.revoke_security_group_ingress(
        GroupId=groups[0].security_group_id, SecurityGroupRuleIds=[mesh_rule(world, groups[0])]
    )

    wait_until(repaired(world, groups), REPAIR_DEADLINE, "repaired", operator.log_tail)
    assert_exact(world, groups, {"mesh": groups}, hand_made, operator.log_tail())


def test_security_group_swapped_in_the_launch_template_moves_the_mesh(
    world: World, meshes: Meshes, operator: Operator, mesh: tuple[list[NodeGroup], HandMade]
) -> None:
    groups, hand_made = mesh
    old = groups[0]
    new_group_id = world.security_group("eks-a-v2")
    world.launch_template_version(
        old.template,
        security_group_ids=[new_group_id],
        profile_arn=old.profile.arn,
        make_default=True,
    )
    swapped = [NodeGroup(old.asg, new_group_id, old.role, old.profile, old.template), *groups[1:]]

    wait_until(
        lambda: not exact(world, [old, *swapped], {"mesh": swapped}),
        REPAIR_DEADLINE,
        "the mesh moved to the new group",
        operator.log_tail,
    )
    # The old group keeps only what sgmesh does not own, untouched.
    assert_exact(world, [old, *swapped], {"mesh": swapped}, hand_made, operator.log_tail())
    assert meshes.wait_ready("mesh", DEADLINE, operator.log_tail)["status"]["members"][0][
        "securityGroupIds"
    ] == [new_group_id]


# The shortest IAM refresh the operator takes: a record tag removed by hand is seen within it.
IAM_REFRESH_SECONDS = 10


def test_a_role_record_removed_by_hand_is_written_again_within_one_iam_refresh(
    world: World, meshes: Meshes, start_operator: Callable[..., Operator]
) -> None:
    quick = quick_resync()
    operator = start_operator(
        extra_args=(*quick["extra_args"], "--iam-refresh-seconds", str(IAM_REFRESH_SECONDS)),
        extra_env=quick["extra_env"],
    )
    groups = [world.node_group(f"eks-{name}") for name in "abc"]
    meshes.create("mesh", SPEC)
    meshes.wait_ready("mesh", DEADLINE, operator.log_tail)
    key, tampered = owner_key("mesh"), groups[1].role
    assert world.role_tags(tampered)[key] == CNI_POLICY_ARN

    world.clients.iam.untag_role(RoleName=tampered, TagKeys=[key])

    wait_until(
        lambda: world.role_tags(tampered).get(key) == CNI_POLICY_ARN,
        IAM_REFRESH_SECONDS + REPAIR_DEADLINE,
        "the record written again",
        operator.log_tail,
    )
    assert all(CNI_POLICY_ARN in world.attached_policy_arns(group.role) for group in groups)
    status = meshes.wait_ready("mesh", DEADLINE, operator.log_tail)["status"]["cniPolicy"]
    assert status["ownedRoles"] == sorted(group.role for group in groups)


def test_a_role_record_removed_while_the_operator_was_down_is_written_again_after_it(
    world: World, meshes: Meshes, start_operator: Callable[..., Operator]
) -> None:
    """The mesh's status, not the process's memory, says the attachment was the mesh's: a new
    process reads the role afresh and decides as the old one would have."""
    first = start_operator(**quick_resync())
    groups = [world.node_group(f"eks-{name}") for name in "abc"]
    # A member whose role held the policy before the mesh came: never the mesh's to record.
    hand_made = world.node_group("eks-d", policy_arns=[CNI_POLICY_ARN])
    meshes.create("mesh", {"autoScalingGroups": {"names": ["eks-a", "eks-b", "eks-c", "eks-d"]}})
    meshes.wait_ready("mesh", DEADLINE, first.log_tail)
    first.stop()
    key, tampered = owner_key("mesh"), groups[0].role
    world.clients.iam.untag_role(RoleName=tampered, TagKeys=[key])

    second = start_operator(**quick_resync())

    wait_until(
        lambda: world.role_tags(tampered).get(key) == CNI_POLICY_ARN,
        REPAIR_DEADLINE,
        "the record written again",
        second.log_tail,
    )
    # The attachment made before the mesh is still nobody's: the new process claimed only
    # what the mesh's status lists.
    second_status = meshes.wait_ready("mesh", DEADLINE, second.log_tail)["status"]["cniPolicy"]
    assert key not in world.role_tags(hand_made.role)
    assert second_status["ownedRoles"] == sorted(group.role for group in groups)
    assert hand_made.role in second_status["attachedRoles"]

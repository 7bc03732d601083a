"""Examples of the planner's behaviour, one rule of ownership per test."""

from __future__ import annotations

import dataclasses
from ipaddress import ip_network
from typing import Any

import pytest

from sgmesh.api import models
from sgmesh.engine import planning
from sgmesh.engine.ingress import IngressRule, Permission, PrefixList
from sgmesh.engine.topology import Problem, ProblemKind

from .builders import (
    ALL,
    CNI,
    DNS_UDP,
    OTHER,
    OWNER,
    intent,
    kinds,
    member,
    role,
    rule,
    world,
)
from .simulate import carry_out


def authorized(plan: planning.Plan) -> set[tuple[str, str]]:
    return {
        (a.group_id, a.permission.source_group_id)
        for a in plan.actions
        if isinstance(a, planning.Authorize)
    }


def test_every_member_sg_admits_every_member_sg_including_itself() -> None:
    plan = planning.plan(world(member("a", "sg-a"), member("b", "sg-b")), intent())

    assert authorized(plan) == {
        ("sg-a", "sg-a"),
        ("sg-a", "sg-b"),
        ("sg-b", "sg-a"),
        ("sg-b", "sg-b"),
    }
    assert plan.desired_rules == 4
    assert plan.present_rules == 0


def test_each_traffic_entry_is_its_own_rule() -> None:
    plan = planning.plan(world(member("a", "sg-a")), intent(traffic=(ALL, DNS_UDP)))

    permissions = {a.permission for a in plan.actions if isinstance(a, planning.Authorize)}
    assert permissions == {
        Permission("sg-a", "-1", -1, -1),
        Permission("sg-a", "udp", 53, 53),
    }


def test_second_plan_after_applying_the_first_is_empty() -> None:
    current = world(
        member("a", "sg-a", roles=["ra"]),
        member("b", "sg-b", roles=["rb"]),
        roles=[role("ra"), role("rb")],
    )
    first = planning.plan(current, intent())

    after = carry_out(current, first, OWNER)

    assert planning.plan(after, intent()).empty
    assert planning.plan(after, intent()).present_rules == 4


def test_desired_rule_that_exists_unowned_counts_as_present_and_is_left_alone() -> None:
    handmade = rule("sgr-hand", "sg-a", "sg-b")
    plan = planning.plan(
        world(member("a", "sg-a"), member("b", "sg-b"), rules=[handmade]), intent()
    )

    assert ("sg-a", "sg-b") not in authorized(plan)
    assert all(getattr(a, "rule_id", None) != "sgr-hand" for a in plan.actions)
    assert plan.present_rules == 1
    assert plan.owned_rules == 0


def test_unowned_rule_that_is_not_desired_is_never_revoked() -> None:
    handmade = rule("sgr-hand", "sg-a", "sg-z", protocol="tcp", ports=(22, 22))
    cidr = rule("sgr-cidr", "sg-a", None)
    plan = planning.plan(world(member("a", "sg-a"), rules=[handmade, cidr]), intent())

    assert kinds(plan) == ["authorize"]


def test_owned_rule_no_longer_desired_is_revoked() -> None:
    stale = rule("sgr-old", "sg-a", "sg-gone", OWNER)
    plan = planning.plan(
        world(member("a", "sg-a"), rules=[rule("sgr-aa", "sg-a", "sg-a", OWNER), stale]), intent()
    )

    assert [(a.kind, getattr(a, "rule_id", "")) for a in plan.actions] == [("revoke", "sgr-old")]
    assert "sg-gone is no longer a member SG" in plan.actions[0].reason


def test_rules_on_a_departed_members_sg_are_revoked_so_it_can_be_deleted() -> None:
    rules = [
        rule("sgr-1", "sg-a", "sg-a", OWNER),
        rule("sgr-2", "sg-a", "sg-b", OWNER),
        rule("sgr-3", "sg-b", "sg-a", OWNER),
        rule("sgr-4", "sg-b", "sg-b", OWNER),
    ]
    plan = planning.plan(world(member("a", "sg-a"), rules=rules), intent())

    revoked = {a.rule_id for a in plan.actions if isinstance(a, planning.Revoke)}
    assert revoked == {"sgr-2", "sgr-3", "sgr-4"}


def test_rule_made_by_another_mesh_is_co_owned_when_desired() -> None:
    theirs = rule("sgr-t", "sg-a", "sg-a", OTHER)
    plan = planning.plan(world(member("a", "sg-a"), rules=[theirs]), intent())

    assert kinds(plan) == ["tag-rule"]
    assert plan.actions[0].rule_id == "sgr-t"  # type: ignore[union-attr]
    assert OTHER.tag_key in plan.actions[0].reason


def test_rule_owned_by_two_meshes_is_released_not_revoked_by_the_one_leaving() -> None:
    shared = rule("sgr-s", "sg-a", "sg-b", OWNER, OTHER)
    plan = planning.plan(world(member("a", "sg-a"), rules=[shared]), intent())

    releases = [a for a in plan.actions if a.kind == "untag-rule"]
    assert [a.rule_id for a in releases if isinstance(a, planning.UntagRule)] == ["sgr-s"]
    assert not any(a.kind == "revoke" for a in plan.actions)


def test_quota_leaves_the_group_untouched_and_says_how_many_rules_it_needs() -> None:
    existing = [rule(f"sgr-{i}", "sg-a", f"sg-elsewhere-{i}") for i in range(59)]
    plan = planning.plan(world(member("a", "sg-a"), member("b", "sg-b"), rules=existing), intent())

    assert {g for g, _ in authorized(plan)} == {"sg-b"}
    [problem] = plan.problems
    assert problem.kind is ProblemKind.QUOTA_EXCEEDED
    assert problem.subject == "sg-a"
    assert "would need 61 IPv4 and 61 IPv6 inbound rules but the quota is 60" in problem.message


def _cidr_rules(group: str, ipv4: int, ipv6: int) -> list[IngressRule]:
    return [
        IngressRule(group, cidr=ip_network(f"10.0.{i}.0/24"), rule_id=f"sgr-v4-{i}")
        for i in range(ipv4)
    ] + [
        IngressRule(group, cidr=ip_network(f"2001:db8:{i:x}::/48"), rule_id=f"sgr-v6-{i}")
        for i in range(ipv6)
    ]


def test_quota_is_counted_per_ip_family_as_aws_does() -> None:
    # 30 IPv4 and 29 IPv6 rules: each family has room for the two SG references (which count
    # in both), although the group holds 59 rules.
    current = world(member("a", "sg-a"), member("b", "sg-b"), rules=_cidr_rules("sg-a", 30, 29))

    plan = planning.plan(current, intent())

    assert {g for g, _ in authorized(plan)} == {"sg-a", "sg-b"}
    assert not plan.problems


def test_a_full_ip_family_refuses_the_group_and_names_the_family() -> None:
    current = world(member("a", "sg-a"), member("b", "sg-b"), rules=_cidr_rules("sg-a", 10, 59))

    plan = planning.plan(current, intent())

    assert {g for g, _ in authorized(plan)} == {"sg-b"}
    [problem] = plan.problems
    assert (problem.kind, problem.subject) == (ProblemKind.QUOTA_EXCEEDED, "sg-a")
    assert "would need 61 IPv6 inbound rules but the quota is 60 per IP family" in problem.message


def test_a_prefix_list_rule_counts_as_the_list_s_maximum_entries() -> None:
    listed = IngressRule("sg-a", prefix_list_id="pl-0123456789abcdef0", rule_id="sgr-pl")
    current = dataclasses.replace(
        world(member("a", "sg-a"), member("b", "sg-b"), rules=[listed, *_cidr_rules("sg-a", 9, 0)]),
        prefix_lists={"pl-0123456789abcdef0": PrefixList("pl-0123456789abcdef0", 50)},
    )

    plan = planning.plan(current, intent())

    assert {g for g, _ in authorized(plan)} == {"sg-b"}
    [problem] = plan.problems
    assert "would need 61 IPv4 inbound rules" in problem.message


def test_the_applied_quota_read_from_aws_replaces_the_setting() -> None:
    current = dataclasses.replace(
        world(member("a", "sg-a"), member("b", "sg-b"), rules=_cidr_rules("sg-a", 70, 0)),
        rules_per_security_group=100,
    )

    plan = planning.plan(current, intent(quota=60))

    assert {g for g, _ in authorized(plan)} == {"sg-a", "sg-b"}
    assert not plan.problems


def test_group_at_exactly_the_quota_is_written() -> None:
    existing = [rule(f"sgr-{i}", "sg-a", None) for i in range(58)]
    plan = planning.plan(world(member("a", "sg-a"), member("b", "sg-b"), rules=existing), intent())

    assert {g for g, _ in authorized(plan)} == {"sg-a", "sg-b"}
    assert not plan.problems


def test_quota_counts_rules_freed_by_revokes_in_the_same_group() -> None:
    existing = [rule(f"sgr-{i}", "sg-a", f"sg-elsewhere-{i}") for i in range(59)]
    stale = rule("sgr-old", "sg-a", "sg-gone", OWNER)
    plan = planning.plan(world(member("a", "sg-a"), rules=[*existing, stale]), intent(quota=60))

    assert sorted(kinds(plan)) == ["authorize", "revoke"]
    assert not plan.problems


@pytest.mark.parametrize(
    "kind",
    [ProblemKind.UNRESOLVED, ProblemKind.SOURCE_NOT_INSTALLED],
    ids=["member-unresolved", "source-crd-not-installed"],
)
def test_unknown_membership_holds_every_removal(kind: ProblemKind) -> None:
    current = dataclasses.replace(
        world(member("a", "sg-a"), rules=[rule("sgr-old", "sg-a", "sg-x", OWNER)]),
        problems=(Problem(kind, "b", "what b needs is unknown"),),
    )
    plan = planning.plan(current, intent())

    assert kinds(plan) == ["authorize"]
    assert [a.kind for a in plan.held] == ["revoke"]


def test_members_in_different_vpcs_get_no_rules_between_them() -> None:
    current = world(
        member("a", "sg-a"), member("b", "sg-b"), vpcs={"sg-a": "vpc-1", "sg-b": "vpc-2"}
    )
    plan = planning.plan(current, intent())

    assert authorized(plan) == {("sg-a", "sg-a"), ("sg-b", "sg-b")}
    assert [p.kind for p in plan.problems] == [ProblemKind.VPC_MISMATCH]


def test_sg_that_was_not_found_takes_no_part() -> None:
    current = world(member("a", "sg-a"), member("b", "sg-b"), vpcs={"sg-a": "vpc-1"})
    assert authorized(planning.plan(current, intent())) == {("sg-a", "sg-a")}


def test_missing_cni_policy_is_recorded_then_attached() -> None:
    plan = planning.plan(
        world(member("a", "sg-a", roles=["ra"]), roles=[role("ra")]), intent(traffic=())
    )

    assert [(a.kind, getattr(a, "role", "")) for a in plan.actions] == [
        ("tag-role", "ra"),
        ("attach", "ra"),
    ]


def test_attachment_that_existed_before_the_mesh_is_never_recorded_or_detached() -> None:
    current = world(member("a", "sg-a", roles=["ra"]), roles=[role("ra", CNI)])
    assert not [a for a in planning.plan(current, intent()).actions if hasattr(a, "role")]

    gone = world(roles=[role("ra", CNI)])
    assert planning.plan(gone, intent(retain_cni=False)).empty


def test_attachment_made_by_the_mesh_is_detached_when_its_role_leaves_without_retain() -> None:
    current = world(roles=[role("ra", CNI, tags={OWNER.tag_key: CNI})])
    plan = planning.plan(current, intent(retain_cni=False))

    assert kinds(plan) == ["detach", "untag-role"]


def test_attachment_made_by_the_mesh_is_kept_with_retain_and_only_the_record_goes() -> None:
    current = world(roles=[role("ra", CNI, tags={OWNER.tag_key: CNI})])
    plan = planning.plan(current, intent(retain_cni=True))

    assert kinds(plan) == ["untag-role"]
    assert "retainOnRemoval" in plan.actions[0].reason


def test_attachment_claimed_by_another_mesh_is_co_owned_and_never_detached_by_us() -> None:
    claimed = role("ra", CNI, tags={OTHER.tag_key: CNI})
    joining = planning.plan(
        world(member("a", "sg-a", roles=["ra"]), roles=[claimed]), intent(traffic=())
    )
    assert kinds(joining) == ["tag-role"]

    both = role("ra", CNI, tags={OTHER.tag_key: CNI, OWNER.tag_key: CNI})
    leaving = planning.plan(world(roles=[both]), intent(retain_cni=False))
    assert kinds(leaving) == ["untag-role"]


def test_irsa_mode_attaches_nothing_and_releases_what_the_mesh_attached() -> None:
    current = world(
        member("a", "sg-a", roles=["ra", "rb"]),
        roles=[role("ra"), role("rb", CNI, tags={OWNER.tag_key: CNI})],
    )
    plan = planning.plan(current, intent(traffic=(), attach_cni=False, retain_cni=False))

    assert [(a.kind, getattr(a, "role", "")) for a in plan.actions] == [
        ("detach", "rb"),
        ("untag-role", "rb"),
    ]


def test_changed_policy_is_attached_and_the_old_one_released() -> None:
    custom = "arn:aws:iam::123456789012:policy/cni"
    current = world(
        member("a", "sg-a", roles=["ra"]), roles=[role("ra", CNI, tags={OWNER.tag_key: CNI})]
    )
    plan = planning.plan(current, intent(traffic=(), policy_arn=custom, retain_cni=False))

    assert [(a.kind, getattr(a, "policy_arn", "")) for a in plan.actions] == [
        ("detach", CNI),
        ("tag-role", custom),
        ("attach", custom),
    ]
    after = carry_out(current, plan, OWNER)
    assert after.roles["ra"].attached_policy_arns == {custom}
    assert after.roles["ra"].tags == {OWNER.tag_key: custom}


def test_recorded_attachment_detached_by_hand_is_attached_again() -> None:
    current = world(
        member("a", "sg-a", roles=["ra"]), roles=[role("ra", tags={OWNER.tag_key: CNI})]
    )
    assert kinds(planning.plan(current, intent(traffic=()))) == ["attach"]


def test_a_record_removed_by_hand_from_a_role_the_status_lists_as_owned_is_written_again() -> None:
    current = world(
        member("a", "sg-a", roles=["ra", "rb"]), roles=[role("ra", CNI), role("rb", CNI)]
    )
    recorded = dataclasses.replace(intent(traffic=()), recorded_roles=frozenset({"ra"}))

    plan = planning.plan(current, recorded)

    # Only the record: the attachment is there. rb's attachment was never the mesh's.
    assert [(a.kind, getattr(a, "role", "")) for a in plan.actions] == [("tag-role", "ra")]
    (restoring,) = plan.actions
    assert isinstance(restoring, planning.TagRole)
    assert restoring.restores
    assert "removed by hand" in restoring.reason
    after = carry_out(current, plan, OWNER)
    assert after.roles["ra"].tags == {OWNER.tag_key: CNI}
    assert planning.plan(after, recorded).empty


def test_a_role_the_status_lists_is_not_recorded_again_unless_it_still_holds_the_policy() -> None:
    recorded = dataclasses.replace(intent(traffic=()), recorded_roles=frozenset({"ra"}))
    # Detached and untagged by hand: attached again and recorded, as any member role lacking it.
    lacking = world(member("a", "sg-a", roles=["ra"]), roles=[role("ra")])
    assert [
        (a.kind, getattr(a, "restores", False)) for a in planning.plan(lacking, recorded).actions
    ] == [
        ("tag-role", False),
        ("attach", False),
    ]
    # No longer a member: nothing is claimed.
    left = world(member("a", "sg-a"), roles=[role("ra", CNI)])
    assert planning.plan(left, dataclasses.replace(recorded, traffic=())).empty
    # The mesh attaches nothing now (IRSA): nothing is claimed.
    irsa = world(member("a", "sg-a", roles=["ra"]), roles=[role("ra", CNI)])
    assert planning.plan(irsa, dataclasses.replace(recorded, attach_cni=False)).empty


def test_roles_recorded_for_another_policy_are_not_claimed_for_this_one() -> None:
    custom = "arn:aws:iam::123456789012:policy/cni"
    spec = models.NodeGroupMeshSpec.model_validate(
        {"autoScalingGroups": {"names": ["a"]}, "cniPolicy": {"policyArn": custom}}
    )
    stale = models.CniPolicyStatus(policy_arn=CNI, owned_roles=["ra"])
    same = models.CniPolicyStatus(policy_arn=custom, owned_roles=["ra"])

    assert (
        planning.Intent.from_spec(spec, OWNER, "us-east-1", recorded=stale).recorded_roles
        == frozenset()
    )
    assert planning.Intent.from_spec(spec, OWNER, "us-east-1", recorded=same).recorded_roles == {
        "ra"
    }


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"cniPolicy": None},
        {"cniPolicy": {"policyArn": CNI, "ownedRoles": "ra"}},
        {"cniPolicy": {"policyArn": CNI, "ownedRoles": ["ra"], "addedByHand": True}},
        None,
    ],
)
def test_a_status_without_a_cni_record_sgmesh_writes_records_nothing(status: Any) -> None:
    assert models.recorded_cni_policy(status) is None


def test_the_cni_record_is_read_from_the_status_as_sgmesh_writes_it() -> None:
    written = models.CniPolicyStatus(policy_arn=CNI, attached_roles=["ra"], owned_roles=["ra"])
    status = {"cniPolicy": written.model_dump(mode="json", by_alias=True)}
    assert models.recorded_cni_policy(status) == written


def orphan(rule_id: str, group: str, source: str, made_by: Any) -> IngressRule:
    """A rule sgmesh made (its description says so) that lost every owner tag."""
    return IngressRule.of(
        rule_id, group, Permission(source, "-1", -1, -1), {}, made_by.rule_description
    )


def test_a_wanted_orphan_is_adopted_not_left_without_owner() -> None:
    current = world(member("a", "sg-a"), rules=[orphan("sgr-1", "sg-a", "sg-a", OTHER)])

    plan = planning.plan(current, intent())

    assert [(a.kind, getattr(a, "rule_id", None)) for a in plan.actions] == [("tag-rule", "sgr-1")]
    assert "adopts" in plan.actions[0].reason


def test_an_orphan_this_mesh_made_and_no_longer_wants_is_revoked() -> None:
    current = world(member("a", "sg-a"), rules=[orphan("sgr-1", "sg-a", "sg-gone", OWNER)])

    plan = planning.plan(current, intent(traffic=(DNS_UDP,)))

    revoked = [a.rule_id for a in plan.actions if isinstance(a, planning.Revoke)]
    assert revoked == ["sgr-1"]


def test_an_orphan_another_mesh_made_is_left_to_that_mesh() -> None:
    current = world(member("a", "sg-a"), rules=[orphan("sgr-1", "sg-a", "sg-gone", OTHER)])

    plan = planning.plan(current, intent())

    assert not any(getattr(a, "rule_id", None) == "sgr-1" for a in plan.actions)


def test_a_rule_without_sgmesh_description_is_never_adopted() -> None:
    foreign = IngressRule.of(
        "sgr-1", "sg-a", Permission("sg-a", "-1", -1, -1), {}, "sgmesh lookalike by a person"
    )

    plan = planning.plan(world(member("a", "sg-a"), rules=[foreign]), intent())

    assert plan.empty
    assert plan.present_rules == 1
    assert plan.owned_rules == 0


# ---- coverage: a rule of somebody else's that already admits ------------------------------


def _foreign(group: str, source: str, protocol: str, ports: tuple[int, int]) -> IngressRule:
    return IngressRule.of(
        f"sgr-hand-{protocol}", group, Permission(source, protocol, *ports), {}, "by hand"
    )


HTTPS = planning.TrafficShape("tcp", 443, 443)


def test_a_wider_rule_of_somebody_else_s_admits_what_the_mesh_needs() -> None:
    wide = [_foreign(g, s, "tcp", (0, 65535)) for g in ("sg-a", "sg-b") for s in ("sg-a", "sg-b")]

    plan = planning.plan(
        world(member("a", "sg-a"), member("b", "sg-b"), rules=wide), intent(traffic=[HTTPS])
    )

    assert plan.empty
    assert (plan.desired_rules, plan.present_rules, plan.owned_rules) == (4, 4, 0)


def test_an_all_traffic_rule_of_somebody_else_s_admits_every_shape() -> None:
    everything = _foreign("sg-a", "sg-a", "-1", (-1, -1))
    wanted = intent(traffic=[HTTPS, planning.TrafficShape("udp", 53, 53)])

    plan = planning.plan(world(member("a", "sg-a"), rules=[everything]), wanted)

    assert plan.empty


def test_a_narrower_or_other_protocol_rule_does_not_admit() -> None:
    narrower = _foreign("sg-a", "sg-a", "tcp", (443, 444))
    udp = IngressRule.of("sgr-udp", "sg-a", Permission("sg-a", "udp", 0, 65535), {}, "by hand")
    wanted = intent(traffic=[planning.TrafficShape("tcp", 440, 450)])

    plan = planning.plan(world(member("a", "sg-a"), rules=[narrower, udp]), wanted)

    assert [a.kind for a in plan.actions] == ["authorize"]


def test_a_wider_rule_of_a_mesh_s_or_sgmesh_made_is_no_coverage() -> None:
    # Its owner may revoke it when it no longer wants it: the mesh keeps its own exact rule.
    owned_by_other = rule("sgr-o", "sg-a", "sg-a", OTHER, protocol="tcp", ports=(0, 65535))
    orphan_wide = IngressRule.of(
        "sgr-x", "sg-a", Permission("sg-a", "-1", -1, -1), {}, OTHER.rule_description
    )
    for existing in (owned_by_other, orphan_wide):
        plan = planning.plan(world(member("a", "sg-a"), rules=[existing]), intent(traffic=[HTTPS]))

        assert "authorize" in [a.kind for a in plan.actions], existing


def test_an_owned_exact_rule_stays_beside_a_wider_rule_of_somebody_else_s() -> None:
    mine = rule("sgr-m", "sg-a", "sg-a", OWNER, protocol="tcp", ports=(443, 443))
    wide = _foreign("sg-a", "sg-a", "-1", (-1, -1))

    plan = planning.plan(world(member("a", "sg-a"), rules=[mine, wide]), intent(traffic=[HTTPS]))

    assert plan.empty
    assert (plan.present_rules, plan.owned_rules) == (1, 1)

"""Properties of the planner over generated worlds: convergence and the safety contract."""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from sgmesh.engine import ownership, planning
from sgmesh.engine.ingress import IngressRule, Permission
from sgmesh.engine.topology import Member, RoleState, Topology

from .builders import ALL, CNI, DNS_UDP, OTHER, OWNER, intent
from .simulate import carry_out

GROUPS = [f"sg-{i:08x}" for i in range(6)]
ROLES = [f"role-{i}" for i in range(4)]
CUSTOM = "arn:aws:iam::123456789012:policy/cni"
THIRD = ownership.Owner("prod", "third")
SHAPES = [ALL, DNS_UDP, planning.TrafficShape("tcp", 443, 443)]
# Rules AWS may hold beside what meshes want: wider ranges that admit a wanted shape.
RULE_SHAPES = [*SHAPES, planning.TrafficShape("tcp", 0, 65535), planning.TrafficShape("udp", 0, 52)]

owners = st.sets(st.sampled_from([OWNER, OTHER, THIRD]), max_size=3)
# Who made a rule, as its description says: a mesh (sgmesh's description), or somebody else.
descriptions = st.sampled_from(
    ["", "hand-made", "sgmesh lookalike", *(o.rule_description for o in (OWNER, OTHER, THIRD))]
)


@st.composite
def rules(draw: st.DrawFn) -> list[IngressRule]:
    """Inbound rules as AWS could hold them: never two SG-referenced rules alike."""
    found: list[IngressRule] = []
    seen: set[tuple[str, Permission]] = set()
    for index in range(draw(st.integers(0, 25))):
        group = draw(st.sampled_from(GROUPS))
        source = draw(st.sampled_from([*GROUPS, "sg-elsewhere", None]))
        permission = (
            None if source is None else draw(st.sampled_from(RULE_SHAPES)).from_group(source)
        )
        tags = {owner.tag_key: ownership.OWNED for owner in draw(owners)}
        if draw(st.booleans()):
            tags["team"] = "data"
        if permission is not None:
            if (group, permission) in seen:
                continue
            seen.add((group, permission))
        rule_id, description = f"sgr-{index:04d}", draw(descriptions)
        if permission is None:  # a rule from a CIDR
            found.append(
                IngressRule(
                    group,
                    cidr=ipaddress.ip_network("10.0.0.0/8"),
                    rule_id=rule_id,
                    tags=tags,
                    description=description,
                )
            )
        else:
            found.append(IngressRule.of(rule_id, group, permission, tags, description))
    return found


@st.composite
def roles(draw: st.DrawFn) -> list[RoleState]:
    states = []
    for name in ROLES:
        attached = draw(st.sets(st.sampled_from([CNI, CUSTOM, "arn:aws:iam::aws:policy/X"])))
        tags = {owner.tag_key: draw(st.sampled_from([CNI, CUSTOM])) for owner in draw(owners)}
        states.append(RoleState(name, frozenset(attached), tags))
    return states


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    members = tuple(
        Member(
            f"asg-{i}",
            tuple(draw(st.sets(st.sampled_from(GROUPS), min_size=1, max_size=2))),
            tuple(draw(st.sets(st.sampled_from(ROLES), max_size=2))),
            "vpc-1",
        )
        for i in range(draw(st.integers(0, 4)))
    )
    observed = draw(rules())
    return Topology(
        members=members,
        ingress_rules=tuple(observed),
        counted_group_ids=frozenset(GROUPS),
        security_group_vpcs=dict.fromkeys(GROUPS, "vpc-1"),
        roles={role.name: role for role in draw(roles())},
    )


@st.composite
def intents(draw: st.DrawFn, owner: ownership.Owner = OWNER) -> planning.Intent:
    drawn = intent(
        owner=owner,
        traffic=draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=3, unique=True)),
        attach_cni=draw(st.booleans()),
        retain_cni=draw(st.booleans()),
        quota=draw(st.sampled_from([60, 60, 8, 30])),
        policy_arn=draw(st.sampled_from([CNI, CUSTOM])),
    )
    # The roles the mesh's status lists as its own (`status.cniPolicy.ownedRoles`), as a
    # status of any age may.
    return dataclasses.replace(
        drawn, recorded_roles=frozenset(draw(st.sets(st.sampled_from(ROLES))))
    )


def recorded_after(after: Topology, wanted: planning.Intent) -> planning.Intent:
    """`wanted` at the next reconcile: the status written after the last one lists the roles
    whose record names the mesh's policy (`reconcile.Outcome.cni_policy`)."""
    key = wanted.owner.tag_key
    owned = {name for name, role in after.roles.items() if role.tags.get(key) == wanted.policy_arn}
    return dataclasses.replace(wanted, recorded_roles=frozenset(owned))


def desired(current: Topology, wanted: planning.Intent) -> frozenset[tuple[str, Permission]]:
    return planning.desired_permissions(
        current.members, current.security_group_vpcs, wanted.traffic
    )[0]


def keys(current: Topology) -> set[tuple[str, Permission | None]]:
    return {(rule.group_id, rule.permission) for rule in current.ingress_rules}


@given(topologies(), intents())
def test_applying_a_plan_converges_so_the_next_plan_is_empty(
    current: Topology, wanted: planning.Intent
) -> None:
    after = carry_out(current, planning.plan(current, wanted), OWNER)
    assert planning.plan(after, recorded_after(after, wanted)).empty


@given(topologies(), intents())
def test_after_apply_every_desired_rule_exists_unless_its_group_is_over_quota(
    current: Topology, wanted: planning.Intent
) -> None:
    plan = planning.plan(current, wanted)
    after = carry_out(current, plan, OWNER)
    blocked = {p.subject for p in plan.problems if p.kind.value == "QuotaExceeded"}
    missing = {
        (g, p)
        for g, p in desired(current, wanted)
        if (g, p) not in keys(after) and not admitted_by_foreign_rule(after, g, p)
    }
    assert {group for group, _ in missing} <= blocked


def admitted_by_foreign_rule(current: Topology, group: str, wanted: Permission) -> bool:
    """Somebody else's rule (no mesh tag, not sgmesh's description) of `group` admits all of
    `wanted`: the same source, all traffic or the same protocol with ports around the wanted."""
    for rule in current.ingress_rules:
        if rule.group_id != group or rule.source_group_id != wanted.source_group_id:
            continue
        if any(key.startswith("sgmesh.io/") for key in rule.tags):
            continue
        if rule.description.startswith("sgmesh ") and rule.description.endswith("traffic"):
            continue
        if rule.protocol == "-1" or (
            rule.protocol == wanted.ip_protocol
            and rule.from_port <= wanted.from_port
            and wanted.to_port <= rule.to_port
        ):
            return True
    return False


@given(topologies(), intents())
def test_a_permission_somebody_else_s_rule_admits_is_never_authorized(
    current: Topology, wanted: planning.Intent
) -> None:
    plan = planning.plan(current, wanted)

    for action in plan.actions:
        if isinstance(action, planning.Authorize):
            assert not admitted_by_foreign_rule(current, action.group_id, action.permission)


@given(topologies(), intents())
def test_rules_without_this_meshs_tag_are_never_revoked_edited_or_released(
    current: Topology, wanted: planning.Intent
) -> None:
    plan = planning.plan(current, wanted)
    by_id = {rule.rule_id: rule for rule in current.ingress_rules}
    for action in plan.actions:
        if not isinstance(action, planning.Revoke | planning.UntagRule | planning.TagRule):
            continue
        rule = by_id[action.rule_id]
        orphan = ownership.is_orphan(rule.tags, rule.description)
        # Somebody else's rule (no mesh tag, no sgmesh description) is never touched at all.
        assert ownership.owned_by_any_mesh(rule.tags) or orphan
        if isinstance(action, planning.UntagRule):
            assert OWNER.owns(rule.tags)
        if isinstance(action, planning.Revoke):
            assert not ownership.other_mesh_keys(rule.tags, OWNER)
            # A rule is revoked when this mesh owns it, or made it and nobody owns it now.
            assert OWNER.owns(rule.tags) or ownership.creator(rule.description) == OWNER
        if isinstance(action, planning.TagRule):
            # Rules another mesh made are co-owned, orphans adopted; nothing else is tagged.
            assert ownership.other_mesh_keys(rule.tags, OWNER) or orphan


@given(topologies(), intents())
def test_no_orphan_of_this_mesh_outlives_its_reconcile(
    current: Topology, wanted: planning.Intent
) -> None:
    plan = planning.plan(current, wanted)
    after = carry_out(current, plan, OWNER)
    untouched = {p.subject for p in plan.problems if p.kind.value == "QuotaExceeded"}
    for rule in after.ingress_rules:
        if rule.permission is None or rule.group_id in untouched:
            continue
        assert not (
            ownership.is_orphan(rule.tags, rule.description)
            and ownership.creator(rule.description) == OWNER
        )
        if (rule.group_id, rule.permission) in desired(current, wanted):
            # Every desired rule sgmesh made has an owner after the reconcile.
            assert not ownership.is_orphan(rule.tags, rule.description)


@given(topologies(), intents())
def test_only_attachments_this_mesh_alone_recorded_are_ever_detached(
    current: Topology, wanted: planning.Intent
) -> None:
    for action in planning.plan(current, wanted).actions:
        if isinstance(action, planning.DetachPolicy):
            role = current.roles[action.role]
            assert role.tags.get(OWNER.tag_key) == action.policy_arn
            claims = {role.tags[k] for k in ownership.other_mesh_keys(role.tags, OWNER)}
            assert action.policy_arn not in claims
            assert not wanted.retain_cni


@given(topologies(), intents())
def test_an_attachment_is_claimed_only_when_the_mesh_makes_it_or_a_mesh_recorded_it(
    current: Topology, wanted: planning.Intent
) -> None:
    """An attachment that holds no record of this mesh is claimed (tagged) only when the mesh
    attaches the policy itself, another mesh records it, or the mesh's status lists the role
    as its own (a record removed by hand); one that was there before any mesh never is."""
    plan = planning.plan(current, wanted)
    attaching = {a.role for a in plan.actions if isinstance(a, planning.AttachPolicy)}
    for action in plan.actions:
        if isinstance(action, planning.TagRole):
            role = current.roles[action.role]
            claims = {role.tags[k] for k in ownership.other_mesh_keys(role.tags, OWNER)}
            assert (
                action.role in attaching
                or role.tags.get(OWNER.tag_key) is not None
                or action.policy_arn in claims
                or (action.restores and action.role in wanted.recorded_roles)
            )
            assert action.restores == (
                action.role in wanted.recorded_roles
                and role.tags.get(OWNER.tag_key) is None
                and action.policy_arn in role.attached_policy_arns
            )


@given(topologies(), intents(), st.data())
def test_shrinking_the_mesh_leaves_no_owned_rule_it_no_longer_wants(
    current: Topology, wanted: planning.Intent, data: st.DataObject
) -> None:
    grown = carry_out(current, planning.plan(current, wanted), OWNER)
    kept = (
        data.draw(st.lists(st.sampled_from(current.members), unique=True))
        if current.members
        else []
    )
    shrunk = dataclasses.replace(grown, members=tuple(kept))
    plan = planning.plan(shrunk, wanted)
    after = carry_out(shrunk, plan, OWNER)
    still_wanted = desired(shrunk, wanted)
    # A group over its quota is left untouched altogether, removals included.
    untouched = {p.subject for p in plan.problems if p.kind.value == "QuotaExceeded"}
    for rule in after.ingress_rules:
        if rule.permission is not None and OWNER.owns(rule.tags):
            assert (rule.group_id, rule.permission) in still_wanted or rule.group_id in untouched


@given(topologies(), intents(OWNER), intents(OTHER))
def test_a_mesh_leaving_never_removes_a_rule_another_mesh_still_wants(
    current: Topology, ours: planning.Intent, theirs: planning.Intent
) -> None:
    quota_free = dataclasses.replace(theirs, rules_per_security_group=10_000)
    both = carry_out(current, planning.plan(current, quota_free), OTHER)
    both = carry_out(both, planning.plan(both, ours), OWNER)
    their_rules = desired(both, quota_free)

    withdrawn = dataclasses.replace(both, members=())
    after = carry_out(withdrawn, planning.plan(withdrawn, ours), OWNER)

    assert {(g, p) for g, p in their_rules if not admitted_by_foreign_rule(after, g, p)} <= keys(
        after
    )
    assert not any(OWNER.owns(rule.tags) for rule in after.ingress_rules if rule.permission)

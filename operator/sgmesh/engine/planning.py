"""The planner: from a Topology and what the mesh wants, the actions that converge AWS.

This is where the ownership rules live (docs/architecture.md, "the safety contract"):

- a rule is removed only when it carries this mesh's tag and the mesh no longer wants it; if
  another mesh also owns it, this mesh only takes its own tag off;
- a desired rule that exists without any mesh tag belongs to somebody else: it satisfies the
  mesh, and it is never tagged, edited or revoked — unless its description says sgmesh made it
  (an orphan, `ownership.is_orphan`): a mesh that wants an orphan adopts it (tags it), and the
  mesh that made it revokes it when it does not want it, so no rule sgmesh made stays open with
  no owner;
- a CNI attachment is detached only when the role carries this mesh's tag for that policy, no
  other mesh claims it, and `retainOnRemoval` is false; an attachment that was there before
  the mesh is never touched;
- when discovery could not resolve a member, every removal is held back.

Pure: takes values, returns values; no boto3, kopf or kubernetes, no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from sgmesh.api import models
from sgmesh.engine import cluster_members, ingress, ownership, topology
from sgmesh.engine.ingress import Permission
from sgmesh.engine.topology import Problem, ProblemKind

__all__ = [
    "DEFAULT_RULES_PER_SECURITY_GROUP",
    "NO_BOUNDARY",
    "Action",
    "AttachPolicy",
    "Authorize",
    "Boundary",
    "DetachPolicy",
    "Intent",
    "Plan",
    "Revoke",
    "TagRole",
    "TagRule",
    "UntagRole",
    "UntagRule",
    "desired_permissions",
    "plan",
    "role_actions",
]

# The default EC2 quota of inbound rules per security group.
DEFAULT_RULES_PER_SECURITY_GROUP = 60


@dataclass(frozen=True)
class TrafficShape:
    """A traffic entry of the spec in EC2 terms, before a source SG is chosen."""

    ip_protocol: str
    from_port: int
    to_port: int

    @classmethod
    def from_traffic(cls, traffic: models.Traffic) -> TrafficShape:
        if traffic.protocol is models.Protocol.ALL:
            return cls(ingress.ALL_PROTOCOLS, -1, -1)
        if traffic.protocol is models.Protocol.ICMP:
            return cls("icmp", -1, -1)
        # The model guarantees both ports for tcp and udp.
        return cls(traffic.protocol.value, traffic.from_port or 0, traffic.to_port or 0)

    def from_group(self, source_group_id: str) -> Permission:
        return Permission(source_group_id, self.ip_protocol, self.from_port, self.to_port)


@dataclass(frozen=True)
class Boundary:
    """Where a mesh may act: the SGs of the cluster's VPC (`vpc_id`) and, with the operator's
    `--member-tag`, only those carrying that tag (`member_tag`: key, and value or None for any).

    `vpc_id` None is no bound at all: the library's default for tests of the pipeline alone;
    the operator and the CLI always give the cluster's VPC, and refuse to act without one."""

    vpc_id: str | None = None
    member_tag: tuple[str, str | None] | None = None

    def outside(self, group_vpc: str) -> bool:
        return self.vpc_id is not None and group_vpc != self.vpc_id

    def allows(self, tags: Mapping[str, str]) -> bool:
        if self.member_tag is None:
            return True
        key, value = self.member_tag
        return key in tags and (value is None or tags[key] == value)

    def describe_tag(self) -> str:
        if self.member_tag is None:
            return ""
        key, value = self.member_tag
        return key if value is None else f"{key}={value}"


NO_BOUNDARY = Boundary()


@dataclass(frozen=True)
class Intent:
    """What one mesh wants, independent of what AWS holds: its spec read once, with what the
    cluster said and the settings, at the pipeline's entry. Discovery reads its members from
    it, the planner its traffic, policy and quota; nothing downstream reads the spec again.

    `spec` is None for a mesh being withdrawn: it wants nothing, whatever its spec said."""

    owner: ownership.Owner
    traffic: tuple[TrafficShape, ...]
    attach_cni: bool
    policy_arn: str
    retain_cni: bool = True
    rules_per_security_group: int = DEFAULT_RULES_PER_SECURITY_GROUP
    spec: models.NodeGroupMeshSpec | None = None
    cluster: cluster_members.ClusterMembers = cluster_members.NO_CLUSTER_MEMBERS
    boundary: Boundary = NO_BOUNDARY
    # The roles whose attachment of `policy_arn` the mesh's status last listed as its own
    # (`status.cniPolicy.ownedRoles`): on such a role still holding the policy, a missing
    # record tag was removed by hand, and is written again (`role_actions`).
    recorded_roles: frozenset[str] = frozenset()

    @classmethod
    def from_spec(
        cls,
        spec: models.NodeGroupMeshSpec,
        owner: ownership.Owner,
        region: str,
        rules_per_security_group: int = DEFAULT_RULES_PER_SECURITY_GROUP,
        cluster: cluster_members.ClusterMembers = cluster_members.NO_CLUSTER_MEMBERS,
        *,
        boundary: Boundary = NO_BOUNDARY,
        recorded: models.CniPolicyStatus | None = None,
    ) -> Intent:
        """`cluster`: the members the spec's Kubernetes sources name, and whether aws-node has
        its own role (the CNI policy then stays off node roles whatever `cniPolicy.attach`).
        `recorded`: the mesh's status of the CNI policy; its owned roles count only for the
        policy the mesh attaches now."""
        shapes = dict.fromkeys(TrafficShape.from_traffic(entry) for entry in spec.traffic)
        policy_arn = models.cni_policy_arn(spec, region)
        return cls(
            owner=owner,
            traffic=tuple(shapes),
            attach_cni=cluster_members.attaches_cni(spec, cluster),
            policy_arn=policy_arn,
            retain_cni=spec.cni_policy.retain_on_removal,
            rules_per_security_group=rules_per_security_group,
            spec=spec,
            cluster=cluster,
            boundary=boundary,
            recorded_roles=frozenset(recorded.owned_roles)
            if recorded is not None and recorded.policy_arn == policy_arn
            else frozenset(),
        )


@dataclass(frozen=True)
class Authorize:
    group_id: str
    permission: Permission
    reason: str
    kind: Literal["authorize"] = "authorize"

    def describe(self) -> str:
        return f"authorize {self.group_id} ingress {self.permission.describe()}"


@dataclass(frozen=True)
class Revoke:
    group_id: str
    rule_id: str
    permission: Permission
    reason: str
    kind: Literal["revoke"] = "revoke"

    def describe(self) -> str:
        return f"revoke {self.group_id} ingress {self.permission.describe()} ({self.rule_id})"


@dataclass(frozen=True)
class TagRule:
    """Co-own a rule another mesh created, so it outlives that mesh while this one needs it."""

    group_id: str
    rule_id: str
    reason: str
    kind: Literal["tag-rule"] = "tag-rule"

    def describe(self) -> str:
        return f"co-own rule {self.rule_id} of {self.group_id}"


@dataclass(frozen=True)
class UntagRule:
    """Give up this mesh's share of a rule other meshes still own."""

    group_id: str
    rule_id: str
    reason: str
    kind: Literal["untag-rule"] = "untag-rule"

    def describe(self) -> str:
        return f"release rule {self.rule_id} of {self.group_id}"


@dataclass(frozen=True)
class TagRole:
    """Record on the role that the attachment of `policy_arn` is (also) this mesh's.
    `restores`: the record was the mesh's (its status says so) and was removed by hand."""

    role: str
    policy_arn: str
    reason: str
    kind: Literal["tag-role"] = "tag-role"
    restores: bool = False

    def describe(self) -> str:
        return f"record {self.policy_arn} on role {self.role}"


@dataclass(frozen=True)
class AttachPolicy:
    role: str
    policy_arn: str
    reason: str
    kind: Literal["attach"] = "attach"

    def describe(self) -> str:
        return f"attach {self.policy_arn} to role {self.role}"


@dataclass(frozen=True)
class DetachPolicy:
    role: str
    policy_arn: str
    reason: str
    kind: Literal["detach"] = "detach"

    def describe(self) -> str:
        return f"detach {self.policy_arn} from role {self.role}"


@dataclass(frozen=True)
class UntagRole:
    role: str
    policy_arn: str
    reason: str
    kind: Literal["untag-role"] = "untag-role"

    def describe(self) -> str:
        return f"forget {self.policy_arn} on role {self.role}"


Action = (
    Authorize | Revoke | TagRule | UntagRule | TagRole | AttachPolicy | DetachPolicy | UntagRole
)
RuleAction = Authorize | Revoke | TagRule | UntagRule
REMOVALS = (Revoke, UntagRule, DetachPolicy, UntagRole)


@dataclass(frozen=True)
class Plan:
    """The actions that converge AWS, in the order they must run, and what stands in the way.

    `held` are removals the planner would make but holds back because the topology is
    incomplete; they are reported, never applied.
    """

    actions: tuple[Action, ...] = ()
    held: tuple[Action, ...] = ()
    problems: tuple[Problem, ...] = ()
    desired_rules: int = 0
    present_rules: int = 0
    owned_rules: int = 0

    @property
    def empty(self) -> bool:
        return not self.actions


def desired_permissions(
    members: Iterable[topology.Member],
    security_group_vpcs: Mapping[str, str],
    traffic: Iterable[TrafficShape],
) -> tuple[frozenset[tuple[str, Permission]], tuple[Problem, ...]]:
    """Every member SG admits every traffic shape from every member SG of its VPC.

    SGs whose VPC is unknown (not found in AWS) take no part. Members that span VPCs are
    reported: a rule cannot reference an SG of an unpeered VPC.
    """
    groups_by_vpc: dict[str, dict[str, None]] = defaultdict(dict)
    members_by_vpc: dict[str, dict[str, None]] = defaultdict(dict)
    for member in members:
        for group_id in member.security_group_ids:
            vpc_id = security_group_vpcs.get(group_id)
            if vpc_id is not None:
                groups_by_vpc[vpc_id].setdefault(group_id, None)
                members_by_vpc[vpc_id].setdefault(member.name, None)
    shapes = tuple(traffic)
    desired = frozenset(
        (target, shape.from_group(source))
        for groups in groups_by_vpc.values()
        for target in groups
        for source in groups
        for shape in shapes
    )
    problems: tuple[Problem, ...] = ()
    if len(groups_by_vpc) > 1:
        spread = "; ".join(
            f"{vpc_id}: {', '.join(names)}" for vpc_id, names in sorted(members_by_vpc.items())
        )
        problems = (
            Problem(
                ProblemKind.VPC_MISMATCH,
                ",".join(sorted(groups_by_vpc)),
                f"members are in different VPCs ({spread}); rules only join SGs of one VPC",
            ),
        )
    return desired, problems


def covered_permissions(
    wanted: Iterable[tuple[str, Permission]], rules: Iterable[ingress.IngressRule]
) -> frozenset[tuple[str, Permission]]:
    """The wanted permissions that a rule of somebody else's (`ownership.foreign`) already
    admits in full: same source SG, all traffic or a protocol and ports that contain them.

    Only foreign rules count: a rule of a mesh's, or one sgmesh made, may be revoked when its
    owner no longer wants it, and the mesh's own rules are held to exact identity."""
    foreign_by_group: dict[str, list[ingress.IngressRule]] = defaultdict(list)
    for rule in rules:
        if rule.source_group_id is not None and ownership.foreign(rule.tags, rule.description):
            foreign_by_group[rule.group_id].append(rule)
    return frozenset(
        (group_id, permission)
        for group_id, permission in wanted
        if any(ingress.admits(rule, permission) for rule in foreign_by_group.get(group_id, ()))
    )


def present_permissions(
    desired: frozenset[tuple[str, Permission]], rules: Iterable[ingress.IngressRule]
) -> frozenset[tuple[str, Permission]]:
    """The desired permissions AWS already grants: by a rule that is exactly the permission, or
    by somebody else's rule that admits it (`covered_permissions`)."""
    rules = tuple(rules)
    exact = desired & {(r.group_id, r.permission) for r in rules if r.permission is not None}
    return exact | covered_permissions(desired - exact, rules)


def plan(current: topology.Topology, intent: Intent) -> Plan:
    """Compare what the mesh wants with what AWS holds; return the actions that converge."""
    desired, vpc_problems = desired_permissions(
        current.members, current.security_group_vpcs, intent.traffic
    )
    names_by_group = _member_names_by_group(current.members)
    existing: dict[tuple[str, Permission], ingress.IngressRule] = {}
    for observed in current.ingress_rules:
        if observed.permission is not None:
            existing.setdefault((observed.group_id, observed.permission), observed)
    covered = covered_permissions(desired - existing.keys(), current.ingress_rules)
    rule_actions, quota_problems = _within_quota(
        _rule_actions(current, intent, desired - covered, existing, names_by_group),
        current,
        intent,
        names_by_group,
    )
    role_actions = _role_actions(current, intent)
    actions: list[Action] = [*rule_actions, *role_actions]

    held: tuple[Action, ...] = ()
    if not current.complete:
        held = tuple(action for action in actions if isinstance(action, REMOVALS))
        actions = [action for action in actions if not isinstance(action, REMOVALS)]

    ours = [
        rule
        for rule in current.ingress_rules
        if rule.permission is not None and intent.owner.owns(rule.tags)
    ]
    return Plan(
        actions=tuple(actions),
        held=held,
        problems=(*current.problems, *vpc_problems, *quota_problems),
        desired_rules=len(desired),
        present_rules=len(desired & existing.keys()) + len(covered),
        owned_rules=len(ours),
    )


def _member_names_by_group(members: Iterable[topology.Member]) -> dict[str, list[str]]:
    names: dict[str, list[str]] = defaultdict(list)
    for member in members:
        for group_id in member.security_group_ids:
            names[group_id].append(member.name)
    return names


def _names(group_id: str, names_by_group: Mapping[str, list[str]]) -> str:
    """`(eks-a, eks-b)`: the members that use a group, or nothing."""
    names = names_by_group.get(group_id)
    return f"({', '.join(names)})" if names else ""


def _who(group_id: str, names_by_group: Mapping[str, list[str]]) -> str:
    return f"{group_id} {_names(group_id, names_by_group)}".rstrip()


def _rule_actions(
    current: topology.Topology,
    intent: Intent,
    desired: frozenset[tuple[str, Permission]],
    existing: Mapping[tuple[str, Permission], ingress.IngressRule],
    names_by_group: Mapping[str, list[str]],
) -> list[RuleAction]:
    owner = intent.owner
    actions: list[RuleAction] = []
    for group_id, permission in sorted(desired):
        rule = existing.get((group_id, permission))
        need = (
            f"{_who(group_id, names_by_group)} must admit "
            f"{permission.describe()} {_names(permission.source_group_id, names_by_group)}"
        ).rstrip()
        if rule is None:
            actions.append(Authorize(group_id, permission, f"missing: {need}"))
        elif owner.owns(rule.tags):
            continue
        elif others := ownership.other_mesh_keys(rule.tags, owner):
            actions.append(
                TagRule(
                    group_id,
                    rule.rule_id,
                    f"{need}; the rule was made by {', '.join(sorted(others))}, "
                    "this mesh co-owns it so it stays while this mesh needs it",
                )
            )
        elif ownership.is_orphan(rule.tags, rule.description):
            actions.append(
                TagRule(
                    group_id,
                    rule.rule_id,
                    f"{need}; sgmesh made the rule but no mesh owns it any more, "
                    "this mesh adopts it",
                )
            )
        # else: the rule belongs to somebody else and already admits the traffic.

    for rule in sorted(current.ingress_rules, key=lambda rule: rule.rule_id):
        if rule.permission is None or (rule.group_id, rule.permission) in desired:
            continue
        if ownership.orphan_made_by(owner, rule.tags, rule.description):
            why = _why_unwanted(rule, names_by_group)
            actions.append(
                Revoke(
                    rule.group_id,
                    rule.rule_id,
                    rule.permission,
                    f"{why}; this mesh made the rule and no mesh owns it any more",
                )
            )
            continue
        if not owner.owns(rule.tags):
            continue
        why = _why_unwanted(rule, names_by_group)
        if others := ownership.other_mesh_keys(rule.tags, owner):
            actions.append(
                UntagRule(
                    rule.group_id,
                    rule.rule_id,
                    f"{why}; still owned by {', '.join(sorted(others))}, so it is kept",
                )
            )
        else:
            actions.append(Revoke(rule.group_id, rule.rule_id, rule.permission, why))
    return actions


def _why_unwanted(rule: ingress.IngressRule, names_by_group: Mapping[str, list[str]]) -> str:
    assert rule.permission is not None
    if rule.group_id not in names_by_group:
        return f"{rule.group_id} is no longer a member SG"
    if rule.permission.source_group_id not in names_by_group:
        return f"{rule.permission.source_group_id} is no longer a member SG"
    return "the mesh's traffic no longer includes it"


def _within_quota(
    actions: list[RuleAction],
    current: topology.Topology,
    intent: Intent,
    names_by_group: Mapping[str, list[str]],
) -> tuple[list[RuleAction], list[Problem]]:
    """Drop every action on an SG whose inbound rules would exceed the quota in either IP
    family. The quota is the account's applied one when discovery read it, else the
    operator's setting. The mesh's rules reference SGs: each counts in both families."""
    quota = current.rules_per_security_group or intent.rules_per_security_group
    rules_by_group: dict[str, list[ingress.IngressRule]] = defaultdict(list)
    for rule in current.ingress_rules:
        rules_by_group[rule.group_id].append(rule)
    change: dict[str, int] = defaultdict(int)
    adding: set[str] = set()
    for action in actions:
        if isinstance(action, Authorize):
            change[action.group_id] += 1
            adding.add(action.group_id)
        elif isinstance(action, Revoke):
            change[action.group_id] -= 1

    over: dict[str, str] = {}
    for group_id in sorted(adding):
        if group_id not in current.counted_group_ids:
            continue
        counts = ingress.quota_counts(rules_by_group[group_id], current.prefix_lists)
        needed = {
            "IPv4": counts[4] + change[group_id],
            "IPv6": counts[6] + change[group_id],
        }
        beyond = [f"{n} {family}" for family, n in needed.items() if n > quota]
        if beyond:
            over[group_id] = " and ".join(beyond)
    problems = [
        Problem(
            ProblemKind.QUOTA_EXCEEDED,
            group_id,
            f"security group {_who(group_id, names_by_group)} would need {needed} inbound rules "
            f"but the quota is {quota} per IP family; it was left untouched",
        )
        for group_id, needed in over.items()
    ]
    return [action for action in actions if action.group_id not in over], problems


def _role_actions(current: topology.Topology, intent: Intent) -> list[Action]:
    """Per role the mesh wants or recorded an attachment on, `role_actions`."""
    owner = intent.owner
    wanted_roles = set(current.member_role_names) if intent.attach_cni else set()
    tagged_roles = {name for name, role in current.roles.items() if owner.owns(role.tags)}
    actions: list[Action] = []
    for name in sorted(wanted_roles | tagged_roles):
        role = current.roles.get(name)
        if role is None:
            continue  # discovery reports a member role it could not read as a problem
        actions.extend(role_actions(role, intent, member=name in wanted_roles))
    return actions


def role_actions(role: topology.RoleState, intent: Intent, *, member: bool) -> list[Action]:
    """What one role needs: release what the mesh recorded but no longer wants, then ensure
    what it wants (the CNI policy, on a member's role when the mesh attaches it). Discovery
    asks it too: a role it knows from memory is taken as it is only when this is empty.

    Tag before attach and detach before untag, so that a failure half-way leaves a state the
    next reconcile repairs: a tag without its attachment is re-attached, an attachment is never
    left behind without a record of who made it.
    """
    owner = intent.owner
    name = role.name
    recorded = role.tags.get(owner.tag_key)
    wanted = intent.policy_arn if member and intent.attach_cni else None
    claimed_by_others = {role.tags[key] for key in ownership.other_mesh_keys(role.tags, owner)}
    record_after = recorded
    why = fate = ""
    actions: list[Action] = []

    if recorded is not None and recorded != wanted:
        why = (
            f"role {name} no longer belongs to a member"
            if wanted is None and intent.attach_cni
            else f"this mesh no longer attaches {recorded}"
            if wanted is None
            else f"the mesh's policy changed to {wanted}"
        )
        if recorded not in role.attached_policy_arns:
            fate = "it is already detached"
        elif intent.retain_cni:
            fate = "the attachment is kept (retainOnRemoval)"
        elif recorded in claimed_by_others:
            fate = "the attachment is kept: another mesh still claims it"
        else:
            fate = "the attachment is detached"
            actions.append(DetachPolicy(name, recorded, f"{why}; the mesh attached it"))
        record_after = None

    # An attachment the mesh makes, or one a mesh made, is recorded; one that was there
    # before any mesh came is never recorded, so it is never detached. A record the mesh's
    # status lists as its own but AWS no longer shows was removed by hand: written again.
    restores = (
        wanted is not None
        and recorded is None
        and name in intent.recorded_roles
        and wanted in role.attached_policy_arns
    )
    if wanted is not None and (
        wanted not in role.attached_policy_arns
        or recorded == wanted
        or wanted in claimed_by_others
        or restores
    ):
        record_after = wanted

    if record_after is not None and record_after != recorded:
        actions.append(
            TagRole(
                name,
                record_after,
                f"the record on role {name} of the attachment of {record_after} this mesh made "
                "was removed by hand"
                if restores
                else f"role {name} of a member needs {record_after}",
                restores=restores,
            )
        )
    if wanted is not None and wanted not in role.attached_policy_arns:
        actions.append(
            AttachPolicy(
                name,
                wanted,
                f"role {name} of a member lacks {wanted}: ipamd cannot start without it",
            )
        )
    if recorded is not None and record_after is None:
        actions.append(UntagRole(name, recorded, f"{why}; {fate}"))
    return actions

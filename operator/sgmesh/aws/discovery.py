"""Discovery: read what AWS holds for a mesh and return it as a `topology.Topology`.

The reads live by concern, each in its own module; this one puts their answers together:

- `sgmesh.aws.launch`: the member ASGs and what each launches with (launch templates, launch
  configurations: SG ids and names, instance profiles);
- `sgmesh.aws.instances`: the SGs the running instances of member ASGs and EC2NodeClasses
  carry, which stay member SGs while a rollout replaces those instances;
- `sgmesh.aws.security_groups`: security groups (names → ids, VPCs) and their inbound rules;
- `sgmesh.aws.roles`: IAM (instance profiles → roles, attached policies and tags);
- `sgmesh.engine.cluster_members`: members that Kubernetes objects name (EC2NodeClasses,
  ENIConfigs), read from the cluster by the caller and passed in.

Reads are batched so that the number of calls grows with pages of results, not with the
number of ASGs.

It must never write to AWS, and never conclude that something is gone from an error. Absence
is read only from a successful answer that lacks the thing, or from a "not found" answer to a
request for exactly that thing by id or name; it becomes a `Problem`. Every other error
(throttling, 5xx, timeouts, access denied) propagates for the caller to classify with
`errors.classify`.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sgmesh.api import models
from sgmesh.aws import client, instances, launch, roles, security_groups
from sgmesh.engine import cluster_members, ingress, ownership, planning, topology

__all__ = ["discover", "discover_owned"]


def discover(
    clients: client.AwsClients,
    intent: planning.Intent,
    memory: roles.RoleMemory | None = None,
    *,
    fresh: bool = False,
) -> topology.Topology:
    """Resolve the mesh's members and read what AWS holds that concerns them.

    `intent`: the mesh's spec, the members its Kubernetes sources named (EC2NodeClasses,
    ENIConfigs, as `sgmesh.kube.sources` read them) and whether the CNI policy goes on node
    roles, decided once (`planning.Intent.from_spec`).

    `memory`: the roles each mesh tagged, and what IAM said of instance profiles and role
    tags, kept across reconciles (see `sgmesh.aws.roles`): it only ever confirms that a role
    needs nothing. Without it the roles the mesh's policy is attached to are swept, and every
    role is read, on every call.

    Its reads may be answered from another mesh's discovery of the last seconds when the
    clients share reads (`sgmesh.aws.shared_reads`: never across a write), unless `fresh` asks for
    AWS as it is now (a reconcile started because something new appeared). `fresh` leaves
    `memory` as it is: what something new brings (a node group) names a profile or role it
    does not know, which is read, and which roles hold the CNI policy is read every time.
    """
    with contextlib.nullcontext() if fresh else clients.reads_shared():
        return _discover(clients, intent, memory)


def _discover(
    clients: client.AwsClients, intent: planning.Intent, memory: roles.RoleMemory | None
) -> topology.Topology:
    spec, owner, cluster = intent.spec, intent.owner, intent.cluster
    if spec is None:
        raise ValueError("discover needs the intent of a mesh's spec (withdraw has none)")
    asgs, asg_problems = (
        launch.read_auto_scaling_groups(clients, spec.auto_scaling_groups)
        if spec.auto_scaling_groups is not None
        else ([], [])
    )
    launches = launch.read_launches(clients, asgs)
    problems: list[topology.Problem] = [*asg_problems, *cluster.problems]

    launched = _launch_groups(clients, launches)
    problems.extend(launched.problems)
    vpcs = dict(launched.vpcs)
    group_ids = launched.group_ids

    boundary = intent.boundary
    # The SGs running instances still carry (one read for every member, inside the cluster's
    # VPC): they are bounded and read below like those the launch data names.
    running = instances.read_running_groups(
        clients,
        [each.name for each in launches],
        [s.name for s in cluster.members if s.kind is topology.MemberKind.EC2_NODE_CLASS],
        boundary.vpc_id,
    )
    # Security groups that join directly: listed by id, or selected by their tags (inside the
    # cluster's VPC only).
    selected = (
        security_groups.read_selected_groups(
            clients, spec.security_groups.selectors, boundary.vpc_id
        )
        if spec.security_groups is not None
        else {}
    )
    vpcs.update({group_id: facts.vpc_id for group_id, facts in selected.items()})
    tags = {group_id: facts.tags for group_id, facts in selected.items()}
    users: dict[str, list[str]] = defaultdict(list)
    for each in launches:
        for group_id in group_ids[each.name]:
            users[group_id].append(f"ASG {each.name}")
    for group_id in spec.security_groups.ids if spec.security_groups is not None else ():
        users[group_id].append("securityGroups.ids")
    for group_id in spec.extra_security_group_ids:
        users[group_id].append("extraSecurityGroupIds")
    for group_id in selected:
        users[group_id].append("securityGroups.selectors")
    for source in cluster.members:
        for group_id in source.security_group_ids:
            users[group_id].append(source.title)
    for name, carried in running.auto_scaling_groups.items():
        for group_id in carried:
            users[group_id].append(f"instances of ASG {name}")
    for name, carried in running.node_classes.items():
        for group_id in carried:
            users[group_id].append(f"instances of {topology.MemberKind.EC2_NODE_CLASS} {name}")
    # One read for the SGs whose VPC is not known yet (and, when members must carry a tag, for
    # those whose tags are not).
    unknown = [
        g for g in users if g not in vpcs or (boundary.member_tag is not None and g not in tags)
    ]
    for group_id, facts in security_groups.read_security_groups(clients, unknown).items():
        vpcs[group_id] = facts.vpc_id
        tags[group_id] = facts.tags
    for group_id, who in users.items():
        if group_id not in vpcs:
            problems.append(
                topology.Problem(
                    topology.ProblemKind.SECURITY_GROUP_NOT_FOUND,
                    group_id,
                    f"security group {group_id} (used by {', '.join(who)}) does not exist",
                )
            )
    excluded = _outside_boundary(boundary, users, vpcs, tags, problems)
    vpcs = {group_id: vpc_id for group_id, vpc_id in vpcs.items() if group_id not in excluded}
    direct_ids = sorted({*spec.security_group_ids, *selected} - excluded)
    existing_ids = sorted(group_id for group_id in {*users, *selected} if group_id in vpcs)

    inbound = security_groups.read_ingress_rules(clients, existing_ids)
    inbound.update(security_groups.read_owned_rules(clients, owner))
    # Nothing is written to or about an SG outside the boundary, the mesh's own rules included.
    inbound = {rule_id: r for rule_id, r in inbound.items() if r.group_id not in excluded}
    counted = set(existing_ids)
    prefix_lists = security_groups.read_prefix_lists(
        clients,
        [r.prefix_list_id for r in inbound.values() if r.prefix_list_id and r.group_id in counted],
    )

    attach = intent.attach_cni
    mesh_roles = roles.read_mesh_roles(
        clients,
        owner,
        [
            *(profile for each in launches for profile in each.profile_names),
            *(profile for source in cluster.members for profile in source.instance_profile_names),
            # Roles of instances still running from an earlier instance profile keep the policy.
            # One of those profiles that no longer resolves adds no role and no problem: those
            # instances have no role the mesh could keep the policy on.
            *running.profile_names(),
        ]
        if attach
        else (),
        _sweep_policy_arns(clients, intent.policy_arn) if attach else (),
        memory=memory,
        role_names=[role for source in cluster.members for role in source.role_names]
        if attach
        else (),
        intent=intent,
    )
    members, unresolvable = _members(
        launches,
        launched,
        cluster=cluster,
        running=running,
        mesh_roles=mesh_roles,
        attach=attach,
        vpcs=vpcs,
        direct_ids=direct_ids,
        excluded=excluded,
    )
    problems.extend(unresolvable)

    return topology.Topology(
        members=tuple(members),
        prefix_lists=prefix_lists,
        rules_per_security_group=_applied_quota(clients, intent, members, vpcs, inbound.values()),
        ingress_rules=tuple(inbound[rule_id] for rule_id in sorted(inbound)),
        counted_group_ids=frozenset(existing_ids),
        security_group_vpcs={group_id: vpcs[group_id] for group_id in existing_ids},
        roles=mesh_roles.roles,
        problems=_sorted_problems(problems),
    )


@dataclass(frozen=True)
class _LaunchGroups:
    """The SGs each ASG's instances get, their VPCs where already known, why an ASG's SGs
    cannot all be told (by ASG), and the problems met."""

    group_ids: Mapping[str, tuple[str, ...]]
    unresolved: Mapping[str, Sequence[str]]
    vpcs: Mapping[str, str]
    problems: Sequence[topology.Problem]


def _launch_groups(
    clients: client.AwsClients, launches: Sequence[launch.AsgLaunch]
) -> _LaunchGroups:
    """SG names → ids, ENIs → their SGs, no SG → the VPC's default SG."""
    names = security_groups.resolve_group_names(
        clients,
        {each.name: each.group_names for each in launches if each.group_names},
        {each.name: each.subnet_ids for each in launches},
    )
    interface_groups = security_groups.read_network_interface_groups(
        clients, [eni for each in launches for eni in each.network_interface_ids]
    )
    default_groups, default_unresolved = _default_groups(clients, launches)
    vpcs = dict(names.vpcs)
    vpcs.update({group_id: vpc_id for vpc_id, group_id in default_groups.values()})
    unresolved: dict[str, list[str]] = defaultdict(list)
    group_ids: dict[str, tuple[str, ...]] = {}
    for each in launches:
        ids = [*each.group_ids, *names.ids_by_asg.get(each.name, ())]
        for eni in each.network_interface_ids:
            if eni in interface_groups:
                ids.extend(interface_groups[eni])
            else:
                unresolved[each.name].append(f"network interface {eni} does not exist")
        if each.name in default_groups:
            ids.append(default_groups[each.name][0])
        unresolved[each.name].extend(default_unresolved.get(each.name, ()))
        unresolved[each.name].extend(names.unresolved.get(each.name, ()))
        group_ids[each.name] = tuple(dict.fromkeys(ids))
    return _LaunchGroups(group_ids, unresolved, vpcs, names.problems)


def _members(
    launches: Sequence[launch.AsgLaunch],
    launched: _LaunchGroups,
    *,
    cluster: cluster_members.ClusterMembers,
    running: instances.RunningGroups,
    mesh_roles: roles.MeshRoles,
    attach: bool,
    vpcs: Mapping[str, str],
    direct_ids: Sequence[str],
    excluded: frozenset[str] = frozenset(),
) -> tuple[list[topology.Member], list[topology.Problem]]:
    """Every member with what it resolved to, and an UNRESOLVED problem for each thing a
    member's SGs or (when the mesh attaches the CNI policy) roles cannot be told from.

    A member's SGs are those its launch data names and those its running instances carry
    (`running`); the latter that the launch data no longer names are draining."""
    profiles = mesh_roles.profiles
    problems: list[topology.Problem] = []

    def member(
        name: str,
        kind: topology.MemberKind,
        groups: Iterable[str],
        role_names: Iterable[str],
        carried: Mapping[str, int] | None = None,
    ) -> topology.Member:
        named = set(groups)
        carried = carried or {}
        member_group_ids = tuple(sorted(g for g in {*named, *carried} if g not in excluded))
        member_vpcs = {vpcs[g] for g in member_group_ids if g in vpcs}
        return topology.Member(
            name=name,
            security_group_ids=member_group_ids,
            role_names=tuple(sorted(role_names)),
            vpc_id=member_vpcs.pop() if len(member_vpcs) == 1 else None,
            kind=kind,
            draining={
                group_id: count
                for group_id, count in sorted(carried.items())
                if group_id not in named and group_id not in excluded
            },
        )

    def unresolvable(kind: str, name: str, reasons: Iterable[str]) -> None:
        problems.extend(
            topology.Problem(
                topology.ProblemKind.UNRESOLVED,
                name,
                f"cannot tell the security groups and role of {kind} {name}: {reason}",
            )
            for reason in dict.fromkeys(reasons)
        )

    members: list[topology.Member] = []
    for each in launches:
        role_names = {
            role
            for profile in {
                *each.profile_names,
                *running.auto_scaling_group_profiles.get(each.name, ()),
            }
            for role in profiles.role_names.get(profile, ())
        }
        reasons = [*each.unresolved, *launched.unresolved.get(each.name, ())]
        if attach:  # roles matter only to a mesh that attaches the CNI policy
            reasons.extend(r for p in each.profile_names for r in profiles.unresolved.get(p, ()))
            reasons.extend(f"{s} names no instance profile" for s in each.sources_without_profile)
        unresolvable("ASG", each.name, reasons)
        # An ASG resolved in part stays a member with what it resolved: what that adds is
        # right, and its UNRESOLVED problem makes the planner hold every removal. One that
        # resolved nothing, and whose instances carry nothing, has nothing to contribute.
        groups = launched.group_ids[each.name]
        carried = running.auto_scaling_groups.get(each.name, {})
        if groups or carried or role_names:
            members.append(
                member(
                    each.name, topology.MemberKind.AUTO_SCALING_GROUP, groups, role_names, carried
                )
            )
    for source in cluster.members:
        role_names = {
            *(role for role in source.role_names if role not in mesh_roles.missing),
            *(
                role
                for profile in {
                    *source.instance_profile_names,
                    *(
                        running.node_class_profiles.get(source.name, ())
                        if source.kind is topology.MemberKind.EC2_NODE_CLASS
                        else ()
                    ),
                }
                for role in profiles.role_names.get(profile, ())
            ),
        }
        reasons = list(source.unresolved_groups)
        if attach:
            reasons.extend(source.unresolved_role)
            reasons.extend(
                r for p in source.instance_profile_names for r in profiles.unresolved.get(p, ())
            )
            reasons.extend(
                f"role {role} (spec.role) does not exist"
                for role in source.role_names
                if role in mesh_roles.missing
            )
        unresolvable(source.kind.value, source.name, reasons)
        carried = (
            running.node_classes.get(source.name, {})
            if source.kind is topology.MemberKind.EC2_NODE_CLASS
            else {}
        )
        if source.security_group_ids or carried or (attach and role_names):
            members.append(
                member(source.name, source.kind, source.security_group_ids, role_names, carried)
            )
    members.extend(
        member(group_id, topology.MemberKind.SECURITY_GROUP, (group_id,), ())
        for group_id in direct_ids
    )
    return members, problems


def _outside_boundary(
    boundary: planning.Boundary,
    users: Mapping[str, Sequence[str]],
    vpcs: Mapping[str, str],
    tags: Mapping[str, Mapping[str, str]],
    problems: list[topology.Problem],
) -> frozenset[str]:
    """The member SGs the mesh may not touch — outside the cluster's VPC, or without the tag
    members must carry — each reported as a problem naming the SG, who named it and why."""
    excluded: set[str] = set()
    for group_id in sorted(g for g in users if g in vpcs):
        who = ", ".join(users[group_id])
        if boundary.outside(vpcs[group_id]):
            excluded.add(group_id)
            problems.append(
                topology.Problem(
                    topology.ProblemKind.MEMBER_OUTSIDE_CLUSTER,
                    group_id,
                    f"security group {group_id} (used by {who}) is in {vpcs[group_id]}, outside "
                    f"the cluster's VPC {boundary.vpc_id}: nothing is written to or about it",
                )
            )
        elif not boundary.allows(tags.get(group_id, {})):
            excluded.add(group_id)
            problems.append(
                topology.Problem(
                    topology.ProblemKind.MEMBER_NOT_ALLOWED,
                    group_id,
                    f"security group {group_id} (used by {who}) does not carry the tag "
                    f"{boundary.describe_tag()} that members must carry (--member-tag): "
                    "nothing is written to or about it",
                )
            )
    return frozenset(excluded)


def discover_owned(
    clients: client.AwsClients,
    owner: ownership.Owner,
    memory: roles.RoleMemory | None = None,
    policy_arns: Sequence[str] = (),
    *,
    with_roles: bool = True,
) -> topology.Topology:
    """What the mesh owns anywhere, for cleanup when the mesh goes: no members, only the rules
    and roles that carry its tag. Roles are swept whatever `memory` holds (the last chance to
    release them): those of `policy_arns` and of the partition's AmazonEKS_CNI_Policy.

    `with_roles` False: the region's rules only, for a region the mesh left while it lives on.
    IAM is global, so its roles are not the region's: the reconcile in the mesh's current
    region keeps or releases them."""
    ingress = security_groups.read_owned_rules(clients, owner)
    mesh_roles = (
        roles.read_mesh_roles(
            clients,
            owner,
            (),
            _sweep_policy_arns(clients, *policy_arns),
            memory=memory,
            sweep=True,
        ).roles
        if with_roles
        else {}
    )
    return topology.Topology(
        ingress_rules=tuple(ingress[rule_id] for rule_id in sorted(ingress)),
        roles=mesh_roles,
    )


def _applied_quota(
    clients: client.AwsClients,
    intent: planning.Intent,
    members: Sequence[topology.Member],
    vpcs: Mapping[str, str],
    rules: Iterable[ingress.IngressRule],
) -> int | None:
    """The account's rules-per-SG quota, read only when the mesh lacks a rule (a plan that
    adds nothing needs no quota, so a steady state costs no call)."""
    desired, _ = planning.desired_permissions(members, vpcs, intent.traffic)
    if desired <= planning.present_permissions(desired, rules):
        return None
    return security_groups.read_rules_quota(clients)


def _sweep_policy_arns(clients: client.AwsClients, *policy_arns: str) -> tuple[str, ...]:
    """The policies whose roles are swept for the mesh's tag: its own, and the default CNI
    policy of the partition (what a mesh records unless its spec names another)."""
    default = f"arn:{models.partition_of(clients.region)}:iam::aws:policy/AmazonEKS_CNI_Policy"
    return tuple(dict.fromkeys([*policy_arns, default]))


def _default_groups(
    clients: client.AwsClients, launches: Sequence[launch.AsgLaunch]
) -> tuple[dict[str, tuple[str, str]], dict[str, tuple[str, ...]]]:
    """ASG name → (default SG, VPC) for the ASGs whose launch data names no SG, and → why it
    cannot be told: EC2 launches such instances in the default SG of the subnets' VPC."""
    users = {each.name: each.subnet_ids for each in launches if each.uses_default_group}
    asg_vpcs = security_groups.auto_scaling_group_vpcs(clients, users)
    defaults = security_groups.read_default_groups(clients, sorted(set(asg_vpcs.values())))
    found: dict[str, tuple[str, str]] = {}
    unresolved: dict[str, tuple[str, ...]] = {}
    for name in users:
        vpc_id = asg_vpcs.get(name)
        if vpc_id is None:
            unresolved[name] = (
                "its launch data names no security group, so it launches in the default one "
                "of its VPC, and the VPC of its subnets cannot be told",
            )
        elif vpc_id not in defaults:
            unresolved[name] = (f"VPC {vpc_id} has no default security group",)
        else:
            found[name] = (defaults[vpc_id], vpc_id)
    return found, unresolved


def _sorted_problems(problems: Iterable[topology.Problem]) -> tuple[topology.Problem, ...]:
    unique = dict.fromkeys(problems)
    return tuple(sorted(unique, key=lambda p: (p.kind.value, p.subject, p.message)))

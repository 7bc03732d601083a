"""Discovery: read what AWS holds for a mesh and return it as a `topology.Topology`.

The reads live by concern, each in its own module; this one puts their answers together:

- `sgmesh.launch`: the member ASGs and what each launches with (launch templates, launch
  configurations: SG ids and names, instance profiles);
- `sgmesh.security_groups`: security groups (names → ids, VPCs) and their inbound rules;
- `sgmesh.roles`: IAM (instance profiles → roles, attached policies and tags).

Reads are batched so that the number of calls grows with pages of results, not with the
number of ASGs.

It must never write to AWS, and never conclude that something is gone from an error. Absence
is read only from a successful answer that lacks the thing, or from a "not found" answer to a
request for exactly that thing by id or name; it becomes a `Problem`. Every other error
(throttling, 5xx, timeouts, access denied) propagates for the caller to classify with
`aws.classify`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sgmesh import aws, launch, models, ownership, roles, security_groups, topology

__all__ = ["discover", "discover_owned"]


def discover(
    clients: aws.AwsClients, spec: models.NodeGroupMeshSpec, owner: ownership.Owner
) -> topology.Topology:
    """Resolve the mesh's members and read what AWS holds that concerns them."""
    asgs, asg_problems = launch.read_auto_scaling_groups(clients, spec.auto_scaling_groups)
    launches = launch.read_launches(clients, asgs)
    problems: list[topology.Problem] = list(asg_problems)

    names = security_groups.resolve_group_names(
        clients,
        {each.name: each.group_names for each in launches if each.group_names},
        {each.name: each.subnet_ids for each in launches},
    )
    problems.extend(names.problems)
    group_ids = {
        each.name: tuple(dict.fromkeys([*each.group_ids, *names.ids_by_asg.get(each.name, ())]))
        for each in launches
    }

    vpcs = dict(names.vpcs)
    extra_ids = list(dict.fromkeys(spec.extra_security_group_ids))
    wanted_ids = [*(g for ids in group_ids.values() for g in ids), *extra_ids]
    vpcs.update(
        security_groups.read_security_group_vpcs(clients, [g for g in wanted_ids if g not in vpcs])
    )
    users: dict[str, list[str]] = defaultdict(list)
    for each in launches:
        for group_id in group_ids[each.name]:
            users[group_id].append(f"ASG {each.name}")
    for group_id in extra_ids:
        users[group_id].append("extraSecurityGroupIds")
    for group_id, who in users.items():
        if group_id not in vpcs:
            problems.append(
                topology.Problem(
                    topology.ProblemKind.SECURITY_GROUP_NOT_FOUND,
                    group_id,
                    f"security group {group_id} (used by {', '.join(who)}) does not exist",
                )
            )
    existing_ids = sorted(group_id for group_id in users if group_id in vpcs)

    ingress = security_groups.read_ingress_rules(clients, existing_ids)
    ingress.update(security_groups.read_owned_rules(clients, owner))

    all_roles, roles_by_profile = roles.read_roles(clients)
    profiles = roles.resolve_profiles(
        clients,
        (profile for each in launches for profile in each.profile_names),
        all_roles,
        roles_by_profile,
    )

    members: list[topology.Member] = []
    for each in launches:
        role_names = sorted(
            {
                role
                for profile in each.profile_names
                for role in profiles.role_names.get(profile, ())
            }
        )
        reasons = [
            *each.unresolved,
            *names.unresolved.get(each.name, ()),
            *(r for profile in each.profile_names for r in profiles.unresolved.get(profile, ())),
        ]
        problems.extend(
            topology.Problem(
                topology.ProblemKind.UNRESOLVED,
                each.name,
                f"cannot tell the security groups and role of ASG {each.name}: {reason}",
            )
            for reason in dict.fromkeys(reasons)
        )
        # An ASG resolved in part stays a member with what it resolved: what that adds is
        # right, and its UNRESOLVED problem makes the planner hold every removal. One that
        # resolved nothing has nothing to contribute.
        if group_ids[each.name] or role_names:
            member_group_ids = tuple(sorted(group_ids[each.name]))
            member_vpcs = {vpcs[g] for g in member_group_ids if g in vpcs}
            members.append(
                topology.Member(
                    name=each.name,
                    security_group_ids=member_group_ids,
                    role_names=tuple(role_names),
                    vpc_id=member_vpcs.pop() if len(member_vpcs) == 1 else None,
                )
            )
    members.extend(
        topology.Member(
            name=group_id,
            security_group_ids=(group_id,),
            vpc_id=vpcs.get(group_id),
            kind=topology.MemberKind.SECURITY_GROUP,
        )
        for group_id in sorted(extra_ids)
    )

    member_roles = {name for member in members for name in member.role_names}
    return topology.Topology(
        members=tuple(members),
        ingress_rules=tuple(ingress[rule_id] for rule_id in sorted(ingress)),
        counted_group_ids=frozenset(existing_ids),
        security_group_vpcs={group_id: vpcs[group_id] for group_id in existing_ids},
        roles={
            name: role
            for name, role in sorted(all_roles.items())
            if name in member_roles or owner.owns(role.tags)
        },
        problems=_sorted_problems(problems),
    )


def discover_owned(clients: aws.AwsClients, owner: ownership.Owner) -> topology.Topology:
    """What the mesh owns anywhere, for cleanup when the mesh goes: no members, only the rules
    and roles that carry its tag."""
    ingress = security_groups.read_owned_rules(clients, owner)
    all_roles, _ = roles.read_roles(clients)
    return topology.Topology(
        ingress_rules=tuple(ingress[rule_id] for rule_id in sorted(ingress)),
        roles=roles.roles_owned_by(all_roles, owner),
    )


def _sorted_problems(problems: Iterable[topology.Problem]) -> tuple[topology.Problem, ...]:
    unique = dict.fromkeys(problems)
    return tuple(sorted(unique, key=lambda p: (p.kind.value, p.subject, p.message)))

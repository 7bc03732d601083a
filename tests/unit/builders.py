"""Small constructors for planner tests."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from sgmesh.engine import ownership, planning
from sgmesh.engine.ingress import IngressRule, Permission
from sgmesh.engine.topology import Member, RoleState, Topology

CNI = "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"
ALL = planning.TrafficShape("-1", -1, -1)
DNS_UDP = planning.TrafficShape("udp", 53, 53)
OWNER = ownership.Owner("prod", "airflow")
OTHER = ownership.Owner("prod", "batch")


def intent(
    owner: ownership.Owner = OWNER,
    traffic: Iterable[planning.TrafficShape] = (ALL,),
    attach_cni: bool = True,
    retain_cni: bool = True,
    quota: int = 60,
    policy_arn: str = CNI,
) -> planning.Intent:
    return planning.Intent(owner, tuple(traffic), attach_cni, policy_arn, retain_cni, quota)


def member(name: str, *groups: str, roles: Iterable[str] = ()) -> Member:
    return Member(name, tuple(groups), tuple(roles), "vpc-1")


def world(
    *members: Member,
    rules: Iterable[IngressRule] = (),
    roles: Iterable[RoleState] = (),
    vpcs: dict[str, str] | None = None,
) -> Topology:
    groups = {g for m in members for g in m.security_group_ids}
    rules = tuple(rules)
    return Topology(
        members=members,
        ingress_rules=rules,
        counted_group_ids=frozenset(groups),
        security_group_vpcs=vpcs or dict.fromkeys(groups, "vpc-1"),
        roles={role.name: role for role in roles},
    )


ANYWHERE = ipaddress.ip_network("0.0.0.0/0")


def rule(
    rule_id: str,
    group: str,
    source: str | None,
    *owners: ownership.Owner,
    protocol: str = "-1",
    ports: tuple[int, int] = (-1, -1),
) -> IngressRule:
    tags = {o.tag_key: ownership.OWNED for o in owners}
    if source is None:  # a rule from a CIDR: never one a mesh makes
        return IngressRule(group, protocol, *ports, cidr=ANYWHERE, rule_id=rule_id, tags=tags)
    return IngressRule.of(rule_id, group, Permission(source, protocol, *ports), tags)


def role(name: str, *attached: str, tags: dict[str, str] | None = None) -> RoleState:
    return RoleState(name, frozenset(attached), tags or {})


def kinds(plan: planning.Plan) -> list[str]:
    return [action.kind for action in plan.actions]

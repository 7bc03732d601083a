"""A model of AWS for planner tests: carry a Plan out on a Topology, as apply does in AWS."""

from __future__ import annotations

import dataclasses
import itertools

from sgmesh.engine import ownership, planning
from sgmesh.engine.ingress import IngressRule
from sgmesh.engine.topology import RoleState, Topology

_rule_ids = itertools.count(1)


def carry_out(current: Topology, plan: planning.Plan, owner: ownership.Owner) -> Topology:
    rules = {rule.rule_id: rule for rule in current.ingress_rules}
    roles = dict(current.roles)
    for action in plan.actions:
        match action:
            case planning.Authorize():
                rule_id = f"sgr-sim{next(_rule_ids):012x}"
                rules[rule_id] = IngressRule.of(
                    rule_id,
                    action.group_id,
                    action.permission,
                    {owner.tag_key: ownership.OWNED},
                    owner.rule_description,
                )
            case planning.Revoke():
                del rules[action.rule_id]
            case planning.TagRule():
                rule = rules[action.rule_id]
                rules[rule.rule_id] = dataclasses.replace(
                    rule, tags={**rule.tags, owner.tag_key: ownership.OWNED}
                )
            case planning.UntagRule():
                rule = rules[action.rule_id]
                tags = {k: v for k, v in rule.tags.items() if k != owner.tag_key}
                rules[rule.rule_id] = dataclasses.replace(rule, tags=tags)
                # apply re-reads the rule after untagging: the last owner to let go revokes.
                if not ownership.owned_by_any_mesh(tags):
                    del rules[rule.rule_id]
            case planning.TagRole():
                role = roles[action.role]
                roles[action.role] = dataclasses.replace(
                    role, tags={**role.tags, owner.tag_key: action.policy_arn}
                )
            case planning.AttachPolicy():
                role = roles[action.role]
                roles[action.role] = dataclasses.replace(
                    role, attached_policy_arns=role.attached_policy_arns | {action.policy_arn}
                )
            case planning.DetachPolicy():
                role = roles[action.role]
                roles[action.role] = dataclasses.replace(
                    role, attached_policy_arns=role.attached_policy_arns - {action.policy_arn}
                )
            case planning.UntagRole():
                role = roles[action.role]
                tags = {k: v for k, v in role.tags.items() if k != owner.tag_key}
                roles[action.role] = RoleState(role.name, role.attached_policy_arns, tags)
    return dataclasses.replace(current, ingress_rules=tuple(rules.values()), roles=roles)

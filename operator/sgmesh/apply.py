"""Carry out a Plan in AWS with as few calls as the APIs allow, and idempotently.

- Per security group: one RevokeSecurityGroupIngress for all its rule ids, then one
  AuthorizeSecurityGroupIngress carrying all its new permissions, tagged at creation.
- Co-owning and releasing rules: one CreateTags / DeleteTags for all rules at once.
- Per role, in plan order; a role stops at its first failure, so an attachment is never made
  without its ownership tag and a tag is never dropped before its detachment.

A race with another writer (`InvalidPermission.Duplicate`, `...NotFound`) is resolved by
re-reading the group and retrying with what is still needed. Any other failure is recorded
for that group or role and the rest of the plan still runs. This module never decides what
to change; it only does what the plan says.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import botocore.exceptions

from sgmesh import aws, ownership, planning, security_groups
from sgmesh.topology import ALL_PROTOCOLS, Permission

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import IpPermissionTypeDef, TagTypeDef

__all__ = ["ApplyResult", "Failure", "apply"]

_DUPLICATE = "InvalidPermission.Duplicate"
_RULE_GONE = frozenset({"InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound"})
_NO_SUCH_ENTITY = "NoSuchEntity"
_TAG_BATCH = 500
_T = TypeVar("_T")


@dataclass(frozen=True)
class Failure:
    actions: tuple[planning.Action, ...]
    failure: aws.AwsFailure


@dataclass
class ApplyResult:
    done: list[planning.Action] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def apply(clients: aws.AwsClients, plan: planning.Plan, owner: ownership.Owner) -> ApplyResult:
    result = ApplyResult()
    revokes: dict[str, list[planning.Revoke]] = defaultdict(list)
    authorizations: dict[str, list[planning.Authorize]] = defaultdict(list)
    tag_rules: list[planning.TagRule] = []
    untag_rules: list[planning.UntagRule] = []
    role_actions: dict[str, list[planning.Action]] = defaultdict(list)
    for action in plan.actions:
        match action:
            case planning.Revoke():
                revokes[action.group_id].append(action)
            case planning.Authorize():
                authorizations[action.group_id].append(action)
            case planning.TagRule():
                tag_rules.append(action)
            case planning.UntagRule():
                untag_rules.append(action)
            case _:
                role_actions[action.role].append(action)

    # Revoke before authorize: freeing rules first keeps the group within its quota.
    for group_id in sorted(revokes.keys() | authorizations.keys()):
        group_revokes, group_authorizations = revokes[group_id], authorizations[group_id]
        _run(result, group_revokes, partial(_revoke, clients, group_id, group_revokes))
        _run(
            result,
            group_authorizations,
            partial(_authorize, clients, group_id, group_authorizations, owner),
        )
    owned_tag: list[TagTypeDef] = [{"Key": owner.tag_key, "Value": ownership.OWNED}]
    for tag_batch in _batches(tag_rules, _TAG_BATCH):
        rule_ids = [action.rule_id for action in tag_batch]
        _run(
            result, tag_batch, partial(clients.ec2.create_tags, Resources=rule_ids, Tags=owned_tag)
        )
    for untag_batch in _batches(untag_rules, _TAG_BATCH):
        rule_ids = [action.rule_id for action in untag_batch]
        _run(
            result,
            untag_batch,
            partial(clients.ec2.delete_tags, Resources=rule_ids, Tags=[{"Key": owner.tag_key}]),
        )
    for actions in role_actions.values():
        for action in actions:
            if not _run(result, [action], partial(_role_action, clients, action, owner)):
                break
    return result


def _run(
    result: ApplyResult, actions: Sequence[planning.Action], call: Callable[[], object]
) -> bool:
    """Make one batched call for `actions`; record them as done or as failed together."""
    if not actions:
        return True
    try:
        call()
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        result.failures.append(Failure(tuple(actions), aws.classify(error)))
        return False
    result.done.extend(actions)
    return True


def _batches(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def ip_permission(permission: Permission, description: str) -> IpPermissionTypeDef:
    """The EC2 shape of a rule that references a security group."""
    shape: IpPermissionTypeDef = {
        "IpProtocol": permission.ip_protocol,
        "UserIdGroupPairs": [{"GroupId": permission.source_group_id, "Description": description}],
    }
    if permission.ip_protocol != ALL_PROTOCOLS:
        shape["FromPort"] = permission.from_port
        shape["ToPort"] = permission.to_port
    return shape


def _authorize(
    clients: aws.AwsClients,
    group_id: str,
    actions: Sequence[planning.Authorize],
    owner: ownership.Owner,
) -> None:
    wanted = [action.permission for action in actions]
    try:
        _authorize_call(clients, group_id, wanted, owner)
    except botocore.exceptions.ClientError as error:
        if aws.error_code(error) != _DUPLICATE:
            raise
        # Someone added one of these rules since discovery read the group (AWS refuses the
        # whole call). What exists now satisfies the mesh; add only what is still missing.
        existing = _group_permissions(clients, group_id)
        missing = [permission for permission in wanted if permission not in existing]
        if missing:
            _authorize_call(clients, group_id, missing, owner)


def _authorize_call(
    clients: aws.AwsClients,
    group_id: str,
    permissions: Sequence[Permission],
    owner: ownership.Owner,
) -> None:
    clients.ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[ip_permission(p, owner.rule_description) for p in permissions],
        TagSpecifications=[
            {
                "ResourceType": "security-group-rule",
                "Tags": [{"Key": owner.tag_key, "Value": ownership.OWNED}],
            }
        ],
    )


def _revoke(clients: aws.AwsClients, group_id: str, actions: Sequence[planning.Revoke]) -> None:
    rule_ids = [action.rule_id for action in actions]
    try:
        clients.ec2.revoke_security_group_ingress(GroupId=group_id, SecurityGroupRuleIds=rule_ids)
    except botocore.exceptions.ClientError as error:
        if aws.error_code(error) not in _RULE_GONE:
            raise
        # One of the rules went away since discovery; revoke those that are still there.
        still_there = _group_rule_ids(clients, group_id) & set(rule_ids)
        if still_there:
            clients.ec2.revoke_security_group_ingress(
                GroupId=group_id, SecurityGroupRuleIds=sorted(still_there)
            )


def _group_rule_ids(clients: aws.AwsClients, group_id: str) -> set[str]:
    return set(security_groups.read_ingress_rules(clients, [group_id]))


def _group_permissions(clients: aws.AwsClients, group_id: str) -> set[Permission]:
    rules = security_groups.read_ingress_rules(clients, [group_id]).values()
    return {rule.permission for rule in rules if rule.permission is not None}


def _role_action(clients: aws.AwsClients, action: planning.Action, owner: ownership.Owner) -> None:
    match action:
        case planning.TagRole():
            clients.iam.tag_role(
                RoleName=action.role, Tags=[{"Key": owner.tag_key, "Value": action.policy_arn}]
            )
        case planning.AttachPolicy():
            clients.iam.attach_role_policy(RoleName=action.role, PolicyArn=action.policy_arn)
        case planning.DetachPolicy():
            try:
                clients.iam.detach_role_policy(RoleName=action.role, PolicyArn=action.policy_arn)
            except botocore.exceptions.ClientError as error:
                # A successful answer that the attachment is not there: already detached.
                if aws.error_code(error) != _NO_SUCH_ENTITY:
                    raise
        case planning.UntagRole():
            clients.iam.untag_role(RoleName=action.role, TagKeys=[owner.tag_key])
        case _:
            raise TypeError(f"not a role action: {action!r}")

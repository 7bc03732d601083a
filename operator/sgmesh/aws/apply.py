"""Carry out a Plan in AWS with as few calls as the APIs allow, and idempotently.

- Per security group: one RevokeSecurityGroupIngress for all its rule ids, then one
  AuthorizeSecurityGroupIngress carrying all its new permissions, tagged at creation.
- Co-owning and releasing rules: one CreateTags / DeleteTags for all rules at once.
- Per role, in plan order; a role stops at its first failure, so an attachment is never made
  without its ownership tag and a tag is never dropped before its detachment. When an
  attachment fails, whatever the failure (a quota, a denial, throttling), the tag this apply
  wrote for it just before is taken back: a tag never records an attachment that does not
  exist, and the next reconcile writes both again. A tag that was there before stays.

A race with another writer (`InvalidPermission.Duplicate`, `...NotFound`) is resolved by
re-reading the group and retrying with what is still needed. EC2's reads may lag its writes by
seconds: after releasing a rule, a mesh decides only from a read that shows its own release,
confirmed by a second read `Settling.confirm_seconds` later (see `_release`). Any other
failure is recorded for that group or role and the rest of the plan still runs. This module
never decides what to change; it only does what the plan says.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import botocore.exceptions

from sgmesh.aws import client, errors, security_groups
from sgmesh.engine import chunking, ingress, ownership, planning
from sgmesh.engine.ingress import ALL_PROTOCOLS, Permission

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import IpPermissionTypeDef

__all__ = [
    "AWS_SETTLING",
    "ApplyResult",
    "Failure",
    "Settling",
    "apply",
    "revoke_rules",
]

_TAG_BATCH = 500


@dataclass(frozen=True)
class Settling:
    """How long a release waits out EC2's eventual consistency. After removing its tag a mesh
    re-reads the rules every `interval_seconds` (at most `attempts` times) until a read shows
    its own release; a rule that other owners still hold then is read once more
    `confirm_seconds` later, and revoked if that read finds it ownerless. Without this, two
    owners released together, each reading the other's stale tag, would both keep the rule
    and leave it with nobody in charge."""

    interval_seconds: float = 1.0
    attempts: int = 15
    confirm_seconds: float = 3.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)


# What AWS needs: its reads catch up with its writes within seconds.
AWS_SETTLING = Settling()


@dataclass(frozen=True)
class Failure:
    actions: tuple[planning.Action, ...]
    failure: errors.AwsFailure


@dataclass
class ApplyResult:
    """What apply did. `found_existing`: authorizations another writer beat this mesh to (the
    rule exists; `done` holds the co-owning tag when the rule is a mesh's)."""

    done: list[planning.Action] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    found_existing: list[planning.Authorize] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def apply(
    clients: client.AwsClients,
    plan: planning.Plan,
    owner: ownership.Owner,
    settling: Settling = AWS_SETTLING,
) -> ApplyResult:
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
        _run(
            result,
            clients,
            group_revokes,
            partial(_revoke, clients, group_id, group_revokes, owner, settling),
        )
        _run(
            result,
            clients,
            group_authorizations,
            partial(_authorize, clients, group_id, group_authorizations, owner, result),
        )
    for tag_batch in chunking.chunks(tag_rules, _TAG_BATCH):
        _run(result, clients, tag_batch, partial(_co_own, clients, tag_batch, owner, result))
    for untag_batch in chunking.chunks(untag_rules, _TAG_BATCH):
        _run(
            result,
            clients,
            untag_batch,
            partial(_release, clients, untag_batch, owner, settling),
        )
    for actions in role_actions.values():
        _run_role(result, clients, actions, owner)
    return result


def _run(
    result: ApplyResult,
    clients: client.AwsClients,
    actions: Sequence[planning.Action],
    call: Callable[[], Sequence[planning.Action] | None],
) -> bool:
    """Make the calls for `actions`; record what they did (all of `actions` unless the call
    says otherwise: a race can turn an authorize into co-owning), or the failure of them all."""
    if not actions:
        return True
    try:
        done = call()
    except errors.ERRORS as error:
        result.failures.append(Failure(tuple(actions), clients.classify(error)))
        return False
    result.done.extend(actions if done is None else done)
    return True


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
    clients: client.AwsClients,
    group_id: str,
    actions: Sequence[planning.Authorize],
    owner: ownership.Owner,
    result: ApplyResult,
) -> list[planning.Action]:
    try:
        _authorize_call(clients, group_id, [action.permission for action in actions], owner)
        return list(actions)
    except botocore.exceptions.ClientError as error:
        if not errors.answered(error, errors.RULE_DUPLICATE):
            raise
    # Another writer created one of these rules since discovery read the group (AWS refuses
    # the whole call). Losing that race means joining the rule's owners: a rule another mesh
    # made, or an orphan sgmesh made, gets this mesh's tag; somebody else's rule satisfies the
    # mesh and is left alone. What is still missing is authorized.
    existing: dict[Permission, ingress.IngressRule] = {
        rule.permission: rule
        for rule in security_groups.read_ingress_rules(clients, [group_id]).values()
        if rule.permission is not None
    }
    missing = [action for action in actions if action.permission not in existing]
    if missing:
        _authorize_call(clients, group_id, [action.permission for action in missing], owner)
    joined: list[planning.TagRule] = []
    for action in actions:
        rule = existing.get(action.permission)
        if rule is None:
            continue
        result.found_existing.append(action)
        if owner.owns(rule.tags):
            continue
        if ownership.joinable(rule.tags, rule.description):
            joined.append(
                planning.TagRule(
                    group_id,
                    rule.rule_id,
                    f"{action.reason}; another writer created it first, this mesh co-owns it",
                )
            )
    if joined:
        _tag(clients, [action.rule_id for action in joined], owner)
    return [*missing, *joined]


def _authorize_call(
    clients: client.AwsClients,
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


def _revoke(
    clients: client.AwsClients,
    group_id: str,
    actions: Sequence[planning.Revoke],
    owner: ownership.Owner,
    settling: Settling,
) -> list[planning.Action]:
    """Revoke what the plan says this mesh alone owns — re-checked against AWS right now, since
    another mesh may have joined a rule's owners since discovery: such a rule is released
    (this mesh's tag removed) instead of revoked."""
    current = security_groups.read_ingress_rules(clients, [group_id])
    gone: list[planning.Action] = []
    revoke: list[planning.Revoke] = []
    release: list[planning.UntagRule] = []
    for action in actions:
        rule = current.get(action.rule_id)
        if rule is None:
            gone.append(action)  # a successful answer without it: somebody revoked it already
        elif ownership.other_mesh_keys(rule.tags, owner):
            reason = f"{action.reason}; another mesh owns it now, so it is kept"
            release.append(planning.UntagRule(group_id, rule.rule_id, reason))
        elif ownership.may_revoke(owner, rule.tags, rule.description):
            revoke.append(action)
        # else: the rule changed hands since discovery and is not this mesh's to touch.
    if revoke:
        revoke_rules(clients, group_id, [action.rule_id for action in revoke])
    released = _release(clients, release, owner, settling) if release else []
    return [*gone, *revoke, *released]


def revoke_rules(clients: client.AwsClients, group_id: str, rule_ids: Sequence[str]) -> None:
    """Revoke inbound rules of one group by id; those already gone are no failure."""
    try:
        clients.ec2.revoke_security_group_ingress(
            GroupId=group_id, SecurityGroupRuleIds=list(rule_ids)
        )
    except botocore.exceptions.ClientError as error:
        if not errors.answered(error, errors.RULE_ABSENT):
            raise
        # One of the rules went away since it was read; revoke those that are still there.
        still_there = set(security_groups.read_ingress_rules(clients, [group_id])) & set(rule_ids)
        if still_there:
            clients.ec2.revoke_security_group_ingress(
                GroupId=group_id, SecurityGroupRuleIds=sorted(still_there)
            )


def _co_own(
    clients: client.AwsClients,
    actions: Sequence[planning.TagRule],
    owner: ownership.Owner,
    result: ApplyResult,
) -> list[planning.Action]:
    """Add this mesh's tag to rules others made. A rule that vanished since discovery (its last
    owner revoked it) is not tagged; the failure says so and the retry re-creates it."""
    tagged = _tag(clients, [action.rule_id for action in actions], owner)
    vanished = [action for action in actions if action.rule_id not in tagged]
    if vanished:
        result.failures.append(_vanished(vanished, "CreateTags"))
    return [action for action in actions if action.rule_id in tagged]


def _release(
    clients: client.AwsClients,
    actions: Sequence[planning.UntagRule],
    owner: ownership.Owner,
    settling: Settling,
) -> list[planning.Action]:
    """Remove this mesh's tag, then re-read: when every other owner let go at the same time
    (several meshes deleted together), nobody would be left to revoke the rule — so whoever
    finds it ownerless after its own release revokes it. Revoking twice is harmless.

    EC2 may serve a read that predates the release by seconds, showing the other owners' tags
    as they were too; each of them, reading the same way, would keep the rule. So the decision
    waits for a read that shows this mesh's own release (a read that recent shows every
    release made before it), and a rule still held by others then is read again
    `confirm_seconds` later (a release made meanwhile by an owner whose read came earlier).
    The caller waits meanwhile: a deleting mesh keeps its finalizer until this has run."""
    rule_ids = [action.rule_id for action in actions]
    _untag(clients, rule_ids, owner)
    ownerless: dict[str, list[planning.Revoke]] = defaultdict(list)
    for rule in _ownerless_after_release(clients, rule_ids, owner, settling):
        if rule.permission is not None:
            ownerless[rule.group_id].append(
                planning.Revoke(
                    rule.group_id,
                    rule.rule_id,
                    rule.permission,
                    "its other owners let go at the same time; this mesh was the last",
                )
            )
    for group_id, revokes in sorted(ownerless.items()):
        revoke_rules(clients, group_id, [action.rule_id for action in revokes])
    return [*actions, *(revoke for revokes in ownerless.values() for revoke in revokes)]


def _ownerless_after_release(
    clients: client.AwsClients,
    rule_ids: Sequence[str],
    owner: ownership.Owner,
    settling: Settling,
) -> list[ingress.IngressRule]:
    """The released rules that no mesh owns, decided from reads that show this release."""
    rules = _read_showing_release(clients, rule_ids, owner, settling)
    found = [rule for rule in rules.values() if _left_ownerless(rule)]
    held = sorted(rule_id for rule_id, rule in rules.items() if not _left_ownerless(rule))
    if held and settling.confirm_seconds > 0:
        settling.sleep(settling.confirm_seconds)
        found.extend(
            rule
            for rule in security_groups.read_rules(clients, held).values()
            if _left_ownerless(rule)
        )
    return found


def _left_ownerless(rule: ingress.IngressRule) -> bool:
    """No mesh owns the rule, and sgmesh made it (a rule nobody ever tagged stays as it is)."""
    return not ownership.owned_by_any_mesh(rule.tags) and ownership.is_orphan(
        rule.tags, rule.description
    )


def _read_showing_release(
    clients: client.AwsClients,
    rule_ids: Sequence[str],
    owner: ownership.Owner,
    settling: Settling,
) -> dict[str, ingress.IngressRule]:
    """The rules (those that still exist) as read once the read shows `owner`'s tag gone from
    every one of them. A read that keeps showing it is stale: after `settling.attempts` reads
    the release is reported unconfirmed, a failure retried like any race."""
    for attempt in range(max(settling.attempts, 1)):
        if attempt:
            settling.sleep(settling.interval_seconds)
        rules = security_groups.read_rules(clients, rule_ids)
        if not any(owner.owns(rule.tags) for rule in rules.values()):
            return rules
    raise errors.ReleaseUnconfirmed(
        f"{len(rule_ids)} rule(s) still showed this mesh's tag after it was removed "
        f"({settling.attempts} reads): EC2's reads lag its writes; the next reconcile decides"
    )


def _tag(clients: client.AwsClients, rule_ids: Sequence[str], owner: ownership.Owner) -> set[str]:
    """Tag the rules that still exist; returns their ids."""
    return _change_tags(clients, rule_ids, owner, remove=False)


def _untag(clients: client.AwsClients, rule_ids: Sequence[str], owner: ownership.Owner) -> set[str]:
    return _change_tags(clients, rule_ids, owner, remove=True)


def _change_tags(
    clients: client.AwsClients, rule_ids: Sequence[str], owner: ownership.Owner, remove: bool
) -> set[str]:
    """One CreateTags/DeleteTags for all rules. AWS refuses the whole batch when one rule is
    gone; then the rules are re-read and those still there are tagged in a second call, so
    one vanished rule never fails the others."""
    targets = list(dict.fromkeys(rule_ids))
    for attempt in range(2):
        try:
            if remove:
                clients.ec2.delete_tags(Resources=targets, Tags=[{"Key": owner.tag_key}])
            else:
                clients.ec2.create_tags(
                    Resources=targets, Tags=[{"Key": owner.tag_key, "Value": ownership.OWNED}]
                )
            return set(targets)
        except botocore.exceptions.ClientError as error:
            if attempt or not errors.answered(error, errors.RULE_ABSENT):
                raise
            targets = sorted(security_groups.read_rules(clients, targets).keys())
            if not targets:
                return set()
    return set(targets)


def _vanished(actions: Sequence[planning.Action], operation: str) -> Failure:
    return Failure(
        tuple(actions),
        errors.AwsFailure(
            errors.ErrorKind.CONCURRENT_CHANGE,
            "RuleVanished",
            operation,
            "the rule was revoked by its last owner since it was read; the next reconcile "
            "creates it again",
        ),
    )


def _run_role(
    result: ApplyResult,
    clients: client.AwsClients,
    actions: Sequence[planning.Action],
    owner: ownership.Owner,
) -> None:
    """One role's actions in plan order, up to the first failure. The planner puts a TagRole
    right before the AttachPolicy of the same policy; when that attachment fails, the tag
    just written goes again (the mesh's own key only) and the failure covers both actions."""
    written: planning.TagRole | None = None
    for action in actions:
        try:
            _role_action(clients, action, owner)
        except errors.ERRORS as error:
            failure = clients.classify(error)
            if (
                isinstance(action, planning.AttachPolicy)
                and written is not None
                and written.policy_arn == action.policy_arn
            ):
                _take_back(result, clients, owner, written=written, attach=action, failure=failure)
            else:
                result.failures.append(Failure((action,), failure))
            return
        result.done.append(action)
        written = action if isinstance(action, planning.TagRole) else None


def _take_back(
    result: ApplyResult,
    clients: client.AwsClients,
    owner: ownership.Owner,
    *,
    written: planning.TagRole,
    attach: planning.AttachPolicy,
    failure: errors.AwsFailure,
) -> None:
    """Record that `attach` failed, and remove the tag `written` recorded for it. When the
    tag cannot be removed, that is a failure of its own (after the attachment's, which is the
    cause) and the tag stays: the next reconcile attaches again, or removes it."""
    untag = planning.UntagRole(
        attach.role, attach.policy_arn, f"attaching {attach.policy_arn} failed"
    )
    try:
        _role_action(clients, untag, owner)
    except errors.ERRORS as error:
        result.failures.append(Failure((attach,), failure))
        result.failures.append(Failure((untag,), clients.classify(error)))
        return
    result.done.remove(written)
    result.failures.append(Failure((written, attach), failure))


# IAM's answer to an attachment beyond the quota of managed policies per role (10 unless the
# account raised it). It names no role and no remedy; the message sgmesh shows does.
_POLICIES_PER_ROLE_EXCEEDED = frozenset({"LimitExceeded"})


def _role_action(
    clients: client.AwsClients, action: planning.Action, owner: ownership.Owner
) -> None:
    match action:
        case planning.TagRole():
            clients.iam.tag_role(
                RoleName=action.role, Tags=[{"Key": owner.tag_key, "Value": action.policy_arn}]
            )
        case planning.AttachPolicy():
            try:
                clients.iam.attach_role_policy(RoleName=action.role, PolicyArn=action.policy_arn)
            except botocore.exceptions.ClientError as error:
                if errors.answered(error, _POLICIES_PER_ROLE_EXCEEDED):
                    said = error.response.get("Error", {}).get("Message")
                    error.response.setdefault("Error", {})["Message"] = (
                        f"role {action.role} already has as many managed policies as IAM "
                        "allows (quota 'Managed policies per role', 10 unless raised): detach "
                        "one or raise the quota" + (f" ({said})" if said else "")
                    )
                    raise
                if not errors.answered(error, errors.IAM_ENTITY_ABSENT):
                    raise
                # Discovery just read the role, so what does not exist is the policy: bad
                # input, named by its field so that a person knows what to fix.
                error.response.setdefault("Error", {})["Message"] = (
                    f"spec.cniPolicy.policyArn {action.policy_arn!r} does not exist "
                    "or cannot be attached"
                )
                raise
        case planning.DetachPolicy():
            try:
                clients.iam.detach_role_policy(RoleName=action.role, PolicyArn=action.policy_arn)
            except botocore.exceptions.ClientError as error:
                # A successful answer that the attachment is not there: already detached.
                if not errors.answered(error, errors.IAM_ENTITY_ABSENT):
                    raise
        case planning.UntagRole():
            clients.iam.untag_role(RoleName=action.role, TagKeys=[owner.tag_key])
        case _:
            raise TypeError(f"not a role action: {action!r}")

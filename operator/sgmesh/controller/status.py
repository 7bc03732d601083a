"""A NodeGroupMesh's status, written as Kubernetes conventions ask, from a reconcile's Outcome.

`Ready` says whether AWS matches the mesh; when it does not, the reason is one a person can
act on (`AutoScalingGroupNotFound`, `QuotaExceeded`, `AccessDenied`, `AwsUnavailable`,
`InvalidSpec`, …) and the message names the thing. lastTransitionTime changes only when the
condition's status does. This module builds dicts; it does not talk to the API server.

`Synced` says whether the last reconcile finished (`ReconcileSucceeded`), apart from Ready, as
Crossplane's managed resources keep them apart: a reconcile that could not finish for a
*transient* reason — AWS throttling (`AwsThrottled`), an outage or timeout
(`AwsUnavailable`), AWS changing under it (`ConcurrentChange`), the cluster unreadable — sets
Synced=False and leaves Ready as AWS was last seen, so that alerts on Ready do not flap while
AWS throttles. A mesh never reconciled yet has no AWS-seen state: its Ready turns False with
the same reason. A failure a person must act on (AccessDenied, a request AWS rejects, an
invalid spec) sets both to False.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from sgmesh.api import models
from sgmesh.aws import errors, identity, reconcile
from sgmesh.engine import cluster_members, topology
from sgmesh.engine.topology import ProblemKind

__all__ = [
    "AWS_THROTTLED",
    "DELETING",
    "DRY_RUN",
    "INVALID_SPEC",
    "MAX_MESSAGE_BYTES",
    "MAX_PENDING_ACTIONS",
    "RECONCILED",
    "RECONCILE_SUCCEEDED",
    "SYNCED",
    "Verdict",
    "clip",
    "cni_policy_note",
    "failure_reason",
    "failure_status",
    "find_condition",
    "ip_family_note",
    "member_status",
    "notes",
    "now",
    "outcome_status",
    "ready_condition",
    "synced_condition",
    "verdict_of",
]

RECONCILED = "Reconciled"
SYNCED = "Synced"
RECONCILE_SUCCEEDED = "ReconcileSucceeded"
AWS_THROTTLED = "AwsThrottled"
DRY_RUN = "DryRun"
INVALID_SPEC = "InvalidSpec"
PARTIAL = "PartiallyApplied"
DELETING = "Deleting"
MAX_PENDING_ACTIONS = 200
# Kubernetes refuses an Event whose message exceeds 1,024 *bytes*; conditions share the limit
# so that a condition's message can always be repeated in an event.
MAX_MESSAGE_BYTES = 1024
_ELLIPSIS = "…"

# When several things are wrong, the reason shown is the one a person should fix first.
_PROBLEM_ORDER = (
    ProblemKind.MEMBER_OUTSIDE_CLUSTER,
    ProblemKind.MEMBER_NOT_ALLOWED,
    ProblemKind.SOURCE_NOT_INSTALLED,
    ProblemKind.AUTO_SCALING_GROUP_NOT_FOUND,
    ProblemKind.EC2_NODE_CLASS_NOT_FOUND,
    ProblemKind.ENI_CONFIG_NOT_FOUND,
    ProblemKind.SECURITY_GROUP_POLICY_NOT_FOUND,
    ProblemKind.SECURITY_GROUP_NOT_FOUND,
    ProblemKind.UNRESOLVED,
    ProblemKind.QUOTA_EXCEEDED,
    ProblemKind.VPC_MISMATCH,
)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Verdict:
    ready: bool
    reason: str
    message: str


def verdict_of(
    outcome: reconcile.Outcome,
    mode: models.Mode,
    spec: models.NodeGroupMeshSpec | None = None,
) -> Verdict:
    """Ready or not, and why, from what one reconcile found and did. `spec`: the mesh's, for
    the notes that depend on it (`notes`)."""
    failures = outcome.failures
    if failures:
        first = failures[0].failure
        more = f" (and {len(failures) - 1} more failures)" if len(failures) > 1 else ""
        reason = first.kind.value if first.kind is not errors.ErrorKind.REJECTED else PARTIAL
        return Verdict(False, reason, clip(first.describe() + more))
    problems = sorted(outcome.plan.problems, key=lambda p: _PROBLEM_ORDER.index(p.kind))
    if problems:
        kind = problems[0].kind
        same = [p for p in problems if p.kind is kind]
        others = len(problems) - len(same)
        message = "; ".join(p.message for p in same)
        if others:
            message += f" (and {others} other problems)"
        return Verdict(False, kind.value, clip(message))
    if outcome.plan.held:
        return Verdict(
            False, ProblemKind.UNRESOLVED.value, f"{len(outcome.plan.held)} removals held back"
        )
    if mode is models.Mode.DRY_RUN and outcome.pending:
        return Verdict(
            True,
            DRY_RUN,
            f"{len(outcome.pending)} actions pending; DryRun writes nothing "
            "(see status.pendingActions)",
        )
    rules = outcome.rules()
    members = len(outcome.topology.members)
    message = (
        f"{members} members, {rules.present}/{rules.desired} rules present, {rules.owned} owned"
    )
    return Verdict(True, RECONCILED, clip("; ".join([message, *notes(outcome, spec)])))


def notes(outcome: reconcile.Outcome, spec: models.NodeGroupMeshSpec | None) -> list[str]:
    """What a converged mesh's Ready message and the CLI's report add about the CNI policy."""
    found = [cni_policy_note(outcome)]
    if spec is not None:
        found.append(ip_family_note(outcome, spec))
    return [note for note in found if note]


def cni_policy_note(outcome: reconcile.Outcome) -> str | None:
    """Why the CNI policy is not on node roles although `cniPolicy.attach` asks for it."""
    credentials = outcome.cluster.aws_node_credentials
    if credentials is None:
        return None
    if credentials.kind is cluster_members.CredentialKind.IRSA:
        return (
            "the CNI policy is not put on node roles: aws-node uses IRSA "
            f"(kube-system/aws-node has eks.amazonaws.com/role-arn {credentials.role_arn}), "
            "so the policy belongs on that role"
        )
    role = f", role {credentials.role_arn}" if credentials.role_arn else ""
    return (
        "the CNI policy is not put on node roles: aws-node gets its credentials from EKS Pod "
        f"Identity ({credentials.evidence}{role}), so the policy belongs on the role of its "
        "association"
    )


# The default `cniPolicy.policyArn`, in any partition: it grants IPv4 addresses only.
_IPV4_CNI_POLICY = ":iam::aws:policy/AmazonEKS_CNI_Policy"


def ip_family_note(outcome: reconcile.Outcome, spec: models.NodeGroupMeshSpec) -> str | None:
    """Why the CNI policy the mesh puts on node roles is not enough in an IPv6 cluster: ipamd
    needs ec2:AssignIpv6Addresses, which AmazonEKS_CNI_Policy (the default, or named in the
    spec) does not grant. Nothing when the mesh puts no policy on node roles (aws-node has its
    own role, or `cniPolicy.attach: false`): what it does not attach is not its to name."""
    if outcome.ip_family != identity.IPV6:
        return None
    if not cluster_members.attaches_cni(spec, outcome.cluster):
        return None
    policy_arn = spec.cni_policy.policy_arn
    if policy_arn is not None and not policy_arn.endswith(_IPV4_CNI_POLICY):
        return None
    return (
        "the cluster is IPv6: AmazonEKS_CNI_Policy does not grant ec2:AssignIpv6Addresses; set "
        "spec.cniPolicy.policyArn to your IPv6 CNI policy"
    )


def clip(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`message` within `limit` bytes of UTF-8, cut on a character boundary, ending in "…"."""
    encoded = message.encode()
    if len(encoded) <= limit:
        return message
    room = limit - len(_ELLIPSIS.encode())
    return encoded[:room].decode(errors="ignore") + _ELLIPSIS


def ready_condition(
    verdict: Verdict, generation: int | None, previous: Mapping[str, Any] | None
) -> models.Condition:
    """The Ready condition; its transition time moves only when its status changes."""
    status = "True" if verdict.ready else "False"
    previous_ready = find_condition(previous, "Ready")
    transition = now()
    if previous_ready is not None and previous_ready.get("status") == status:
        transition = previous_ready.get("lastTransitionTime") or transition
    return models.Condition(
        type="Ready",
        status=status,
        reason=verdict.reason,
        message=verdict.message,
        last_transition_time=transition,
        observed_generation=generation,
    )


def synced_condition(
    failure: Verdict | None, generation: int | None, previous: Mapping[str, Any] | None
) -> models.Condition:
    """The Synced condition: True (ReconcileSucceeded) without `failure`, else False with its
    reason and message. Its transition time moves only when its status changes."""
    status = "False" if failure is not None else "True"
    previous_synced = find_condition(previous, SYNCED)
    transition = now()
    if previous_synced is not None and previous_synced.get("status") == status:
        transition = previous_synced.get("lastTransitionTime") or transition
    return models.Condition(
        type=SYNCED,
        status=status,
        reason=failure.reason if failure is not None else RECONCILE_SUCCEEDED,
        message=failure.message if failure is not None else "",
        last_transition_time=transition,
        observed_generation=generation,
    )


def failure_reason(failure: errors.AwsFailure) -> str:
    """The reason of a failed reconcile: AwsThrottled when AWS said too many requests."""
    if failure.code in errors.THROTTLING_CODES:
        return AWS_THROTTLED
    return failure.kind.value if failure.kind is not errors.ErrorKind.REJECTED else PARTIAL


def _condition(written: Mapping[str, Any] | None) -> models.Condition | None:
    """A condition as the status holds it, or None when there is none or it is unreadable
    (somebody else wrote it): then it is not kept."""
    if written is None:
        return None
    try:
        return models.Condition.model_validate(written)
    except pydantic.ValidationError:
        return None


def find_condition(status: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    """A condition of a status as the API server holds it (camelCase), or None."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def member_status(member: topology.Member) -> models.MemberStatus:
    return models.MemberStatus(
        name=member.name,
        kind=member.kind.value,
        security_group_ids=list(member.security_group_ids),
        role_names=list(member.role_names),
        vpc_id=member.vpc_id,
        draining_security_groups=[
            models.DrainingSecurityGroup(id=group_id, instances=count)
            for group_id, count in sorted(member.draining.items())
        ],
    )


def outcome_status(
    outcome: reconcile.Outcome,
    mesh: models.NodeGroupMesh,
    generation: int | None,
    previous: Mapping[str, Any] | None,
    *,
    regions: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The whole status after a reconcile that reached AWS. `regions`: where the mesh may own
    rules now; None leaves the list the status has."""
    pending = []
    if mesh.spec.mode is models.Mode.DRY_RUN:
        pending = [action.describe() for action in outcome.pending[:MAX_PENDING_ACTIONS]]
    unfinished = None
    if outcome.failures:
        first = outcome.failures[0].failure
        unfinished = Verdict(False, failure_reason(first), clip(first.describe()))
    written = models.NodeGroupMeshStatus(
        observed_generation=generation,
        conditions=[
            ready_condition(verdict_of(outcome, mesh.spec.mode, mesh.spec), generation, previous),
            synced_condition(unfinished, generation, previous),
        ],
        members=[member_status(member) for member in outcome.topology.members],
        member_count=len(outcome.topology.members),
        rules=outcome.rules(),
        cni_policy=outcome.cni_policy(),
        pending_actions=pending,
        last_sync_time=now(),
        regions=sorted(set(regions or ())),
    )
    exclude = {"regions"} if regions is None else set()
    return written.model_dump(mode="json", by_alias=True, exclude=exclude)


def failure_status(
    reason: str,
    message: str,
    generation: int | None,
    previous: Mapping[str, Any] | None,
    *,
    regions: Iterable[str] | None = None,
    transient: bool = False,
    synced_reason: str | None = None,
) -> dict[str, Any]:
    """Only the conditions change when AWS could not be read or the spec is invalid: what
    was resolved before stays visible. `regions`, when given, replaces the list of regions
    where the mesh may own rules (a deletion that cleaned some of them).

    `transient`: the failure says nothing of AWS's state (throttling, an outage): Synced
    turns False (`synced_reason`, else `reason`) and a Ready that AWS was seen to give is
    kept as it is, with the generation it was seen for; a mesh with none yet is not Ready."""
    failed = Verdict(False, reason, clip(message))
    synced = synced_condition(
        Verdict(False, synced_reason or reason, failed.message), generation, previous
    )
    kept = _condition(find_condition(previous, "Ready")) if transient else None
    if kept is not None:
        written = models.NodeGroupMeshStatus(conditions=[kept, synced])
    else:
        written = models.NodeGroupMeshStatus(
            observed_generation=generation,
            conditions=[ready_condition(failed, generation, previous), synced],
        )
    if regions is not None:
        written = written.model_copy(update={"regions": sorted(set(regions))})
    return written.model_dump(mode="json", by_alias=True, exclude_unset=True)

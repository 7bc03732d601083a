"""What `plan` and `apply` print: a mesh's outcome as a JSON-ready report, and that report as
text lines.

Formatting only: it must never call AWS or the cluster, nor decide an exit code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sgmesh.api import models
from sgmesh.aws import client, reconcile
from sgmesh.controller import status
from sgmesh.engine import planning

__all__ = ["action_report", "outcome_report", "text_lines"]


def action_report(action: planning.Action) -> dict[str, Any]:
    fields = {
        key: value.describe() if key == "permission" else value
        for key, value in vars(action).items()
        if key not in {"kind", "reason"}
    }
    return {"kind": action.kind, "summary": action.describe(), "reason": action.reason, **fields}


def outcome_report(
    outcome: reconcile.Outcome, mesh: models.NodeGroupMesh, region: str, clients: client.AwsClients
) -> dict[str, Any]:
    return {
        "mesh": mesh.name,
        "cluster": outcome.owner.cluster,
        "region": region,
        "mode": mesh.spec.mode.value,
        "members": [
            status.member_status(member).model_dump(mode="json", by_alias=True)
            for member in outcome.topology.members
        ],
        "rules": outcome.rules().model_dump(mode="json"),
        "notes": status.notes(outcome, mesh.spec),
        "actions": [action_report(action) for action in outcome.plan.actions],
        "held": [action_report(action) for action in outcome.plan.held],
        "problems": [
            {"reason": p.kind.value, "subject": p.subject, "message": p.message}
            for p in outcome.plan.problems
        ],
        "applied": None
        if outcome.applied is None
        else {
            "done": len(outcome.applied.done),
            "failures": [
                {
                    "reason": failure.failure.kind.value,
                    "code": failure.failure.code,
                    "message": failure.failure.describe(),
                    "actions": [action.describe() for action in failure.actions],
                }
                for failure in outcome.applied.failures
            ],
        },
        "awsCalls": dict(sorted(clients.calls.items())),
    }


_SIGNS = {
    "authorize": "+",
    "attach": "+",
    "tag-rule": "~",
    "tag-role": "~",
    "untag-rule": "~",
    "untag-role": "~",
    "revoke": "-",
    "detach": "-",
}


def text_lines(report: dict[str, Any]) -> Iterator[str]:
    yield (
        f"mesh {report['mesh']} (cluster {report['cluster']}, region {report['region']}, "
        f"{report['mode']}): {len(report['members'])} members"
    )
    for member in report["members"]:
        roles = ",".join(member["roleNames"]) or "-"
        draining = {each["id"]: each["instances"] for each in member["drainingSecurityGroups"]}
        groups = (
            ",".join(
                f"{group_id} (draining: still on {_instances(draining[group_id])})"
                if group_id in draining
                else group_id
                for group_id in member["securityGroupIds"]
            )
            or "-"
        )
        yield (
            f"  {member['kind']} {member['name']}: SGs {groups}; roles {roles}; "
            f"{member['vpcId'] or '-'}"
        )
    rules = report["rules"]
    applied = report["applied"]
    if not report["actions"]:
        yield "no changes: AWS matches the mesh"
    else:
        verb = "applied" if applied is not None else "planned"
        yield f"{len(report['actions'])} actions {verb}:"
        for action in report["actions"]:
            yield f"  {_SIGNS[action['kind']]} {action['summary']}"
            yield f"      because {action['reason']}"
    for action in report["held"]:
        yield f"  held (member unresolved): {action['summary']}"
    if applied is not None:
        for failure in applied["failures"]:
            yield f"failed ({failure['reason']}): {failure['message']}"
            for summary in failure["actions"]:
                yield f"  not done: {summary}"
    for problem in report["problems"]:
        yield f"problem ({problem['reason']}): {problem['message']}"
    for note in report["notes"]:
        yield f"note: {note}"
    yield f"rules: {rules['desired']} desired, {rules['present']} present, {rules['owned']} owned"


def _instances(count: int) -> str:
    return f"{count} running instance" if count == 1 else f"{count} running instances"

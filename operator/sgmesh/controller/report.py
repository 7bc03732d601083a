"""What the operator tells the people watching a mesh: its status, written through kopf's
patch, and events for what it changed in AWS, what failed, and a Ready condition that turned
to a failure.

kopf's own per-handler events are off (`sgmesh.controller.lifecycle.start`): they would repeat
on every retry. Nothing here reads AWS or decides what a mesh needs; events say what happened.
"""

from __future__ import annotations

from typing import Any

import kopf

from sgmesh.aws import reconcile
from sgmesh.controller import shared, status
from sgmesh.engine import planning

__all__ = ["EVENT_REASONS", "changes", "event", "set_status"]

EVENT_REASONS = {
    "authorize": "RulesAuthorized",
    "revoke": "RulesRevoked",
    "tag-rule": "RulesCoOwned",
    "untag-rule": "RulesReleased",
    "tag-role": "AttachmentRecorded",
    "attach": "PolicyAttached",
    "detach": "PolicyDetached",
    "untag-role": "AttachmentReleased",
}
_EVENT_ITEMS = 10


def event(body: kopf.Body, type_: str, reason: str, message: str) -> None:
    """Post an event; Kubernetes refuses messages over 1,024 bytes, so they are clipped."""
    kopf.event(body, type=type_, reason=reason, message=status.clip(message))


def set_status(body: kopf.Body, patch: kopf.Patch, new_status: dict[str, Any]) -> None:
    """Write the status and, when Ready changed to a failure, say so once in an event; a
    reconcile that stopped finishing (Synced turned False) while Ready stays says so once
    too, not at every failed reconcile after it."""
    for key, value in new_status.items():
        patch.status[key] = value
    ready = new_status["conditions"][0]
    before = status.find_condition(body.status, "Ready") or {}
    changed = (before.get("reason"), before.get("message")) != (ready["reason"], ready["message"])
    if ready["status"] == "False" and changed:
        event(body, "Warning", ready["reason"], ready["message"])
        return
    synced = next((c for c in new_status["conditions"] if c["type"] == status.SYNCED), None)
    synced_before = status.find_condition(body.status, status.SYNCED) or {}
    if (
        synced is not None
        and synced["status"] == "False"
        and synced_before.get("status") != "False"
    ):
        event(body, "Warning", synced["reason"], synced["message"])


def changes(runtime: shared.Runtime, body: kopf.Body, outcome: reconcile.Outcome) -> None:
    """One event per kind of change made in AWS, and one per failure; none when idle."""
    if outcome.applied is None:
        return
    done: dict[str, list[planning.Action]] = {}
    for action in outcome.applied.done:
        done.setdefault(action.kind, []).append(action)
    runtime.metrics.count_actions(action.kind for action in outcome.applied.done)
    for kind, actions in done.items():
        shown = "; ".join(action.describe() for action in actions[:_EVENT_ITEMS])
        more = f" (+{len(actions) - _EVENT_ITEMS} more)" if len(actions) > _EVENT_ITEMS else ""
        event(body, "Normal", EVENT_REASONS[kind], f"{len(actions)}: {shown}{more}")
    for failure in outcome.applied.failures:
        event(
            body,
            "Warning",
            failure.failure.kind.value,
            f"{failure.failure.describe()}; not done: "
            + "; ".join(action.describe() for action in failure.actions[:_EVENT_ITEMS]),
        )

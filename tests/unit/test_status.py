"""The status written to a NodeGroupMesh: built from the models the CRD's schema comes from."""

from __future__ import annotations

from sgmesh.api import models
from sgmesh.controller import status

PREVIOUS = {
    "members": [{"name": "eks-a"}],
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "AwsUnavailable",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ],
}


def test_a_failure_writes_only_the_condition_so_what_was_resolved_stays_visible() -> None:
    written = status.failure_status("AccessDenied", "grant ec2:X", 3, PREVIOUS)

    assert set(written) == {"observedGeneration", "conditions"}
    [ready] = written["conditions"]
    assert ready["reason"] == "AccessDenied"
    assert ready["observedGeneration"] == 3
    # Still not ready: the condition's transition time does not move.
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def test_transition_time_moves_when_ready_changes() -> None:
    condition = status.ready_condition(status.Verdict(True, "Reconciled", ""), 3, PREVIOUS)

    assert condition.last_transition_time != "2026-01-01T00:00:00Z"


def test_written_status_is_valid_for_the_status_model() -> None:
    written = status.failure_status("InvalidSpec", "x" * 5000, 1, None)

    parsed = models.NodeGroupMeshStatus.model_validate(written)
    assert len(parsed.conditions[0].message.encode()) == status.MAX_MESSAGE_BYTES


def test_clip_cuts_on_a_character_boundary_within_the_byte_limit() -> None:
    message = "⇄" * 400  # 1,200 bytes

    clipped = status.clip(message)

    assert len(clipped.encode()) <= status.MAX_MESSAGE_BYTES
    assert clipped.endswith("…")
    assert set(clipped[:-1]) == {"⇄"}
    assert status.clip("short") == "short"


def test_every_ready_reason_is_documented_in_the_readme() -> None:
    from pathlib import Path

    from sgmesh.aws import errors
    from sgmesh.engine.topology import ProblemKind
    from sgmesh.kube import sources

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    reasons = {
        status.RECONCILED,
        status.DRY_RUN,
        status.INVALID_SPEC,
        status.PARTIAL,
        status.DELETING,
        sources.READ_FAILED,
        *(kind.value for kind in errors.ErrorKind),
        *(kind.value for kind in ProblemKind),
    }
    undocumented = sorted(reason for reason in reasons if f"`{reason}`" not in readme)
    assert undocumented == []

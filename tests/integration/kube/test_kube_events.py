"""Event messages as the API server takes them: the limit is 1,024 bytes, not characters."""

from __future__ import annotations

import datetime
import json
import subprocess
import uuid

import pytest

from devtools.k8s.controlplane import ControlPlane
from sgmesh.controller import status

pytestmark = pytest.mark.kube

# Three bytes each in UTF-8, like the ellipsis a clipped message ends in.
LONG_MESSAGE = "security group sg-0123 ⇄ " * 200


def post_event(cluster: ControlPlane, message: str) -> subprocess.CompletedProcess[str]:
    """An event about a NodeGroupMesh shaped as kopf posts it (an `eventTime` and a reporting
    component make the API server validate it as a new-style event, with the byte limit)."""
    now = datetime.datetime.now(datetime.UTC).isoformat()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"clip-{uuid.uuid4().hex[:12]}", "namespace": "default"},
        "involvedObject": {
            "kind": "NodeGroupMesh",
            "name": "clip",
            "apiVersion": "sgmesh.io/v1alpha1",
        },
        "reason": "AwsUnavailable",
        "type": "Warning",
        "message": message,
        "action": "Action?",
        "reportingComponent": "kopf",
        "reportingInstance": "dev",
        "source": {"component": "kopf"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": now,
    }
    return cluster.kubectl("create", "-f", "-", stdin=json.dumps(event))


def test_api_server_refuses_a_message_of_1024_characters_over_1024_bytes(
    kube_cluster: ControlPlane,
) -> None:
    characters = LONG_MESSAGE[:1024]
    assert len(characters.encode()) > 1024
    refused = post_event(kube_cluster, characters)
    assert refused.returncode != 0
    assert "1024" in refused.stderr or "must have at most" in refused.stderr


def test_a_clipped_message_is_accepted_and_ends_in_an_ellipsis(
    kube_cluster: ControlPlane,
) -> None:
    clipped = status.clip(LONG_MESSAGE)
    assert len(clipped.encode()) <= status.MAX_MESSAGE_BYTES
    assert clipped.endswith("…")
    accepted = post_event(kube_cluster, clipped)
    assert accepted.returncode == 0, accepted.stderr

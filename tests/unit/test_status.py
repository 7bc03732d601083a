"""The status written to a NodeGroupMesh: built from the models the CRD's schema comes from."""

from __future__ import annotations

import boto3
import pytest

from sgmesh.api import models
from sgmesh.aws import client, reconcile
from sgmesh.cli import render
from sgmesh.controller import status
from sgmesh.engine import cluster_members, planning

from . import builders

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
    ready, synced = written["conditions"]
    assert ready["reason"] == "AccessDenied"
    assert ready["observedGeneration"] == 3
    # Still not ready: the condition's transition time does not move.
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert (synced["type"], synced["status"], synced["reason"]) == (
        "Synced",
        "False",
        "AccessDenied",
    )


SEEN_READY = {
    "type": "Ready",
    "status": "True",
    "reason": "Reconciled",
    "message": "3 members, 6/6 rules present, 6 owned",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
    "observedGeneration": 2,
}
WAS_READY: dict[str, object] = {
    "observedGeneration": 2,
    "conditions": [
        SEEN_READY,
        {
            "type": "Synced",
            "status": "True",
            "reason": "ReconcileSucceeded",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 2,
        },
    ],
}


def test_a_transient_failure_keeps_ready_as_aws_was_last_seen_and_says_so_in_synced() -> None:
    written = status.failure_status(
        "AwsUnavailable",
        "in us-east-1: RequestLimitExceeded",
        3,
        WAS_READY,
        transient=True,
        synced_reason=status.AWS_THROTTLED,
    )

    ready, synced = written["conditions"]
    assert ready == SEEN_READY  # generation 2: what AWS was seen to match
    assert "observedGeneration" not in written  # generation 3 was not reconciled
    assert (synced["status"], synced["reason"]) == ("False", "AwsThrottled")
    assert "RequestLimitExceeded" in synced["message"]
    assert synced["lastTransitionTime"] != "2026-01-01T00:00:00Z"


def test_a_transient_failure_of_a_mesh_never_reconciled_is_not_ready() -> None:
    written = status.failure_status("AwsUnavailable", "down", 1, None, transient=True)

    ready, synced = written["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "AwsUnavailable")
    assert (synced["status"], synced["reason"]) == ("False", "AwsUnavailable")


def test_a_failure_a_person_must_fix_turns_a_ready_mesh_not_ready() -> None:
    written = status.failure_status("AccessDenied", "grant ec2:X", 3, WAS_READY)

    ready, synced = written["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "AccessDenied")
    assert synced["status"] == "False"


def test_a_finished_reconcile_is_synced() -> None:
    written = status.outcome_status(_converged(), _mesh(), 3, WAS_READY)

    ready, synced = written["conditions"]
    assert ready["status"] == "True"
    assert (synced["type"], synced["status"], synced["reason"]) == (
        "Synced",
        "True",
        "ReconcileSucceeded",
    )
    assert synced["lastTransitionTime"] == "2026-01-01T00:00:00Z"  # it was True already


def test_throttling_is_told_apart_from_an_outage() -> None:
    from sgmesh.aws import errors

    throttled = errors.AwsFailure(
        errors.ErrorKind.UNAVAILABLE, "RequestLimitExceeded", "DescribeSecurityGroups", "slow"
    )
    down = errors.AwsFailure(errors.ErrorKind.UNAVAILABLE, "InternalError", "DescribeX", "down")

    assert status.failure_reason(throttled) == "AwsThrottled"
    assert status.failure_reason(down) == "AwsUnavailable"


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


# ---- the IP family of the cluster --------------------------------------------------------

IPV6_NOTE = (
    "the cluster is IPv6: AmazonEKS_CNI_Policy does not grant ec2:AssignIpv6Addresses; set "
    "spec.cniPolicy.policyArn to your IPv6 CNI policy"
)


@pytest.fixture
def clients() -> client.AwsClients:
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return client.make_clients("us-east-1", session=session)


def _mesh(**cni_policy: object) -> models.NodeGroupMesh:
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": "airflow"},
            "spec": {"autoScalingGroups": {"names": ["eks-a"]}, "cniPolicy": cni_policy},
        }
    )


def _outcome(
    ip_family: str, credentials: cluster_members.AwsNodeCredentials | None = None
) -> reconcile.Outcome:
    topology = builders.world(builders.member("eks-a", "sg-a", roles=["eks-a"]))
    intent = builders.intent(attach_cni=credentials is None)
    return reconcile.Outcome(
        builders.OWNER,
        topology,
        planning.plan(topology, intent),
        None,
        cluster_members.ClusterMembers(aws_node_credentials=credentials),
        ip_family=ip_family,
    )


def _ready_message(outcome: reconcile.Outcome, mesh: models.NodeGroupMesh) -> str:
    written = status.outcome_status(outcome, mesh, 1, None)
    ready, _ = written["conditions"]
    return str(ready["message"])


def test_an_ipv6_cluster_with_the_default_cni_policy_says_it_lacks_ipv6_rights() -> None:
    mesh = _mesh()
    outcome = _outcome("ipv6")

    assert status.ip_family_note(outcome, mesh.spec) == IPV6_NOTE
    assert _ready_message(outcome, mesh).endswith(f"; {IPV6_NOTE}")
    assert status.notes(outcome, mesh.spec) == [IPV6_NOTE]
    # The same policy named in the spec, in any partition, lacks the same right.
    named = _mesh(policyArn="arn:aws-cn:iam::aws:policy/AmazonEKS_CNI_Policy")
    assert status.ip_family_note(outcome, named.spec) == IPV6_NOTE


def test_the_ipv6_note_is_only_for_the_default_policy_put_on_node_roles_of_an_ipv6_cluster() -> (
    None
):
    ipv6_policy = "arn:aws:iam::123456789012:policy/AmazonEKS_CNI_IPv6_Policy"
    irsa = cluster_members.irsa(
        {cluster_members.IRSA_ANNOTATION: "arn:aws:iam::123456789012:role/aws-node"}
    )

    assert status.ip_family_note(_outcome("ipv4"), _mesh().spec) is None
    assert status.ip_family_note(_outcome("ipv6"), _mesh(policyArn=ipv6_policy).spec) is None
    assert status.ip_family_note(_outcome("ipv6"), _mesh(attach=False).spec) is None
    # aws-node has its own role: the mesh puts no policy on node roles; the IRSA note says where
    # the policy belongs instead.
    assert status.ip_family_note(_outcome("ipv6", irsa), _mesh().spec) is None
    assert "IPv6" not in _ready_message(_outcome("ipv6", irsa), _mesh())


def test_the_cli_report_carries_the_ipv6_note(clients: client.AwsClients) -> None:
    mesh = _mesh()

    report = render.outcome_report(_outcome("ipv6"), mesh, "us-east-1", clients)

    assert report["notes"] == [IPV6_NOTE]
    assert f"note: {IPV6_NOTE}" in list(render.text_lines(report))


def test_settings_carry_the_cluster_s_ip_family_ipv4_unless_told() -> None:
    assert reconcile.Settings().ip_family == "ipv4"
    assert reconcile.Settings(ip_family="ipv6").ip_family == "ipv6"


# ---- the regions where the mesh may own rules ----------------------------------------------


def _converged() -> reconcile.Outcome:
    topology = builders.world(builders.member("eks-a", "sg-a"))
    return reconcile.Outcome(
        builders.OWNER, topology, planning.plan(topology, builders.intent()), None
    )


def test_a_reconcile_lists_its_regions_sorted_once_in_the_status() -> None:
    written = status.outcome_status(
        _converged(), _mesh(), 1, None, regions={"us-east-1", "eu-west-1"}
    )

    assert written["regions"] == ["eu-west-1", "us-east-1"]
    assert models.NodeGroupMeshStatus.model_validate(written).regions == written["regions"]


def test_a_status_that_says_nothing_of_regions_keeps_the_list_the_mesh_has() -> None:
    # A merge patch keeps what it leaves out: a DryRun reconcile, or a failure, forgets nothing.
    assert "regions" not in status.outcome_status(_converged(), _mesh(), 1, PREVIOUS)
    assert "regions" not in status.failure_status("AwsUnavailable", "down", 1, PREVIOUS)


def test_a_deletion_that_waits_lists_only_the_regions_still_to_clean_up() -> None:
    written = status.failure_status(
        status.DELETING, "cleanup waits", 1, PREVIOUS, regions=["us-east-1"]
    )

    assert written["regions"] == ["us-east-1"]
    assert set(written) == {"observedGeneration", "conditions", "regions"}

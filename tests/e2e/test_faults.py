"""The operator through faults a real cluster has: its CRD deleted and created again, owners of
shared rules deleted together, a deletion that waits on an AWS outage.

Each test states its pass criterion on AWS state, status and events; every wait has a deadline.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from devtools.aws.world import NodeGroup, World
from devtools.k8s.controlplane import ControlPlane
from devtools.operator_harness import CRD_FILE, CRD_NAME, Meshes, Operator, wait_until
from tests.cluster.fixtures import apply_established
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.kube

DEADLINE = 60


def spec(*names: str, **extra: Any) -> dict[str, Any]:
    return {"autoScalingGroups": {"names": list(names)}, "resyncSeconds": 10, **extra}


def mesh_rules(world: World, groups: list[NodeGroup]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in world.describe_ingress(group.security_group_id)]


def owner_keys(rule: dict[str, Any]) -> set[str]:
    return {tag["Key"] for tag in rule.get("Tags", []) if tag["Key"].startswith("sgmesh.io/")}


def test_deleting_the_crd_cleans_up_and_the_operator_serves_it_again_once_back(
    world: World, meshes: Meshes, operator: Operator, kube_cluster: ControlPlane
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create("before", spec("eks-a", "eks-b"))
    meshes.wait_ready("before", DEADLINE, operator.log_tail)

    deleted = kube_cluster.kubectl("delete", "crd", CRD_NAME, "--timeout=50s", timeout=60)
    assert deleted.returncode == 0, deleted.stderr + operator.log_tail()

    # The mesh went with its CRD, and the operator cleaned up behind its finalizer first.
    assert mesh_rules(world, groups) == []
    # With AWS healthy, nothing had to wait: releasing the finalizer was not refused (whether
    # kopf's own delete handler or the CRD handler got there first is a race).
    assert "cleanup waits" not in operator.log_path.read_text(), operator.log_tail()
    # kopf says when it finds the resource gone (where a plain watch would 404 and exit).
    wait_until(
        lambda: "Unresolved resources cannot be served" in operator.log_path.read_text(),
        DEADLINE,
        "the operator notices that its CRD is gone",
        operator.log_tail,
    )
    assert operator.healthy()
    apply_established(kube_cluster, "-f", str(CRD_FILE), crds=[CRD_NAME])

    def created_after() -> bool:
        try:
            meshes.create("after", spec("eks-a", "eks-b"))
        except Exception:  # served a moment after Established
            return False
        return True

    wait_until(created_after, 30, "the re-created CRD serves meshes")
    meshes.wait_ready("after", DEADLINE, operator.log_tail)
    assert operator.healthy()
    assert len(mesh_rules(world, groups)) == 4


def test_owners_deleted_together_leave_no_rule_behind(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    names = ["owner-1", "owner-2", "owner-3", "owner-4"]
    for name in names:
        meshes.create(name, spec("eks-a", "eks-b"))
    for name in names:
        meshes.wait_ready(name, DEADLINE, operator.log_tail)
    assert all(len(owner_keys(rule)) == 4 for rule in mesh_rules(world, groups))

    for name in names:
        meshes.delete(name)

    wait_until(
        lambda: not any(meshes.get(name) for name in names),
        DEADLINE,
        "every mesh is gone",
        operator.log_tail,
    )
    assert mesh_rules(world, groups) == []


def test_deletion_waiting_on_an_aws_outage_says_so(
    world: World, meshes: Meshes, operator: Operator, aws_proxy: TcpProxy
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create("waits", spec("eks-a", "eks-b"))
    meshes.wait_ready("waits", DEADLINE, operator.log_tail)

    aws_proxy.cut()
    meshes.delete("waits")

    deleting = meshes.wait_condition("waits", "False", "Deleting", DEADLINE, operator.log_tail)
    assert "waits until AWS answers" in deleting["message"]
    assert len(mesh_rules(world, groups)) == 4  # nothing was revoked blindly

    aws_proxy.restore()
    wait_until(lambda: meshes.get("waits") is None, 120, "the mesh is gone", operator.log_tail)
    assert mesh_rules(world, groups) == []


def test_verbose_logs_carry_no_credentials_and_no_user_data(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    # The harness runs the operator with --verbose: debug logging is where secrets leak.
    secret = "bootstrap-secret-do-not-log"
    encoded = base64.b64encode(f"#!/bin/sh\necho {secret}\n".encode()).decode()
    group_id = world.security_group("eks-secret")
    profile = world.role_with_profile("eks-secret")
    template = world.launch_template(
        "eks-secret", security_group_ids=[group_id], profile_arn=profile.arn, user_data=encoded
    )
    world.asg("eks-secret", launch_template=template)
    meshes.create("quiet", spec("eks-secret"))
    meshes.wait_ready("quiet", DEADLINE, operator.log_tail)

    log = operator.log_path.read_text(errors="replace")
    assert "Handler 'converge_on_change' succeeded" in log  # the log is the verbose one
    for leaked in (encoded, secret, "x-amz-security-token", "Authorization: AWS4"):
        assert leaked not in log

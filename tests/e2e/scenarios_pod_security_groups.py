"""Security groups for pods as mesh members, end to end: the operator (as deploy/'s
ServiceAccount: these scenarios are collected by tests/deploy/test_e2e_as_service_account.py,
so that the RBAC they need is proven too) with the VPC resource controller's real
SecurityGroupPolicy CRD, and a moto server.

Policies live in the test's own namespace (`kube_namespace`), and the meshes list them as
"namespace/name" or "namespace/*".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools import vpc_resources
from devtools.aws.world import CNI_POLICY_ARN, World
from devtools.k8s.controlplane import ControlPlane
from devtools.operator_harness import Meshes, Operator, wait_until

pytestmark = pytest.mark.kube

OWNER_KEY = "sgmesh.io/e2e/{}"
DEADLINE = 60
# Long enough that only a watch can explain a reaction within seconds.
SLOW_RESYNC = 600


def owned_pairs(world: World, group_ids: set[str], mesh: str) -> set[tuple[str, str]]:
    return world.owned_pairs(group_ids, OWNER_KEY.format(mesh))


def full_mesh(group_ids: set[str]) -> set[tuple[str, str]]:
    return {(target, source) for target in group_ids for source in group_ids}


def members_by_kind(mesh: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for member in (mesh.get("status") or {}).get("members") or []:
        found.setdefault(member["kind"], set()).add(member["name"])
    return found


class Policies:
    """SecurityGroupPolicies the test puts in its namespace; all removed after it."""

    def __init__(self, kube: ControlPlane, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def ref(self, name: str) -> str:
        return f"{self.namespace}/{name}"

    def put(self, name: str, group_ids: list[str]) -> None:
        """Create the policy, or give it these SGs."""
        manifest = vpc_resources.security_group_policy(self.namespace, name, group_ids)
        applied = self.kube.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
        assert applied.returncode == 0, applied.stderr

    def relabel(self, name: str, labels: dict[str, str]) -> None:
        """Change what the policy selects, not its SGs."""
        patched = self.kube.kubectl(
            "patch",
            vpc_resources.RESOURCE,
            name,
            "-n",
            self.namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"podSelector": {"matchLabels": labels}}}),
        )
        assert patched.returncode == 0, patched.stderr

    def clear(self) -> None:
        self.kube.kubectl(
            "delete",
            vpc_resources.RESOURCE,
            "--all",
            "-n",
            self.namespace,
            "--ignore-not-found",
            "--wait=false",
        )


@pytest.fixture
def pod_policies(
    kube_cluster: ControlPlane, kube_namespace: str, securitygrouppolicy_crd: str
) -> Iterator[Policies]:
    policies = Policies(kube_cluster, kube_namespace)
    yield policies
    policies.clear()


def test_a_mesh_with_pod_security_groups_converges(
    world: World, meshes: Meshes, operator: Operator, pod_policies: Policies
) -> None:
    managed = world.node_group("eks-managed")
    clients_sg, dns_sg = world.security_group("db-clients"), world.security_group("dns-pods")
    pod_policies.put("db-clients", [clients_sg])
    pod_policies.put("dns", [dns_sg])

    meshes.create(
        "pods",
        {
            "autoScalingGroups": {"names": ["eks-managed"]},
            "podSecurityGroups": {"policies": [pod_policies.ref("*")]},
            "resyncSeconds": SLOW_RESYNC,
        },
    )
    mesh = meshes.wait_ready("pods", DEADLINE, operator.log_tail)

    joined = {managed.security_group_id, clients_sg, dns_sg}
    assert owned_pairs(world, joined, "pods") == full_mesh(joined)
    assert members_by_kind(mesh) == {
        "AutoScalingGroup": {"eks-managed"},
        "SecurityGroupPolicy": {pod_policies.ref("db-clients"), pod_policies.ref("dns")},
    }
    assert CNI_POLICY_ARN in world.attached_policy_arns(managed.role)
    policy_members = [m for m in mesh["status"]["members"] if m["kind"] == "SecurityGroupPolicy"]
    assert all(not m.get("roleNames") for m in policy_members)


def test_a_missing_policy_is_reported_by_name_and_the_rest_converges(
    world: World, meshes: Meshes, operator: Operator, pod_policies: Policies
) -> None:
    a, b = world.node_group("eks-a"), world.node_group("eks-b")
    pods_sg = world.security_group("pods")
    pod_policies.put("present", [pods_sg])
    missing = pod_policies.ref("missing")
    meshes.create(
        "partial",
        {
            "autoScalingGroups": {"names": ["eks-a", "eks-b"]},
            "podSecurityGroups": {"policies": [pod_policies.ref("present"), missing]},
        },
    )

    ready = meshes.wait_condition(
        "partial", "False", "SecurityGroupPolicyNotFound", DEADLINE, operator.log_tail
    )

    assert missing in ready["message"]
    joined = {a.security_group_id, b.security_group_id, pods_sg}
    wait_until(
        lambda: owned_pairs(world, joined, "partial") == full_mesh(joined),
        DEADLINE,
        "the ASGs and the present policy's SG are meshed",
    )


def test_a_policys_groups_changing_moves_the_rules_within_seconds(
    world: World, meshes: Meshes, operator: Operator, pod_policies: Policies
) -> None:
    managed = world.node_group("eks-managed")
    old, new = world.security_group("pods-old"), world.security_group("pods-new")
    pod_policies.put("web", [old])
    meshes.create(
        "moving",
        {
            "autoScalingGroups": {"names": ["eks-managed"]},
            "podSecurityGroups": {"policies": [pod_policies.ref("web")]},
            "resyncSeconds": SLOW_RESYNC,
        },
    )
    meshes.wait_ready("moving", DEADLINE, operator.log_tail)
    before = {managed.security_group_id, old}
    assert owned_pairs(world, before, "moving") == full_mesh(before)
    nudged = operator.metric("sgmesh_nudged_reconciles_total")

    # What the policy selects changes, not its SGs: no reconcile is nudged.
    pod_policies.relabel("web", {"app": "web-v2"})
    pod_policies.put("web", [new])

    after = {managed.security_group_id, new}
    wait_until(
        lambda: owned_pairs(world, after | {old}, "moving") == full_mesh(after),
        10,
        "the new SG is meshed and the old one's owned rules are gone",
        operator.log_tail,
    )
    assert operator.metric("sgmesh_nudged_reconciles_total") == nudged + 1


def test_the_policy_crd_installed_later_is_used_without_a_restart(
    world: World,
    meshes: Meshes,
    operator: Operator,
    pod_policies: Policies,
    reinstall_crd: Callable[[str], None],
) -> None:
    managed = world.node_group("eks-managed")
    pods_sg = world.security_group("pods")
    kube = pod_policies.kube
    deleted = kube.kubectl("delete", "crd", vpc_resources.RESOURCE, "--wait=true", timeout=60)
    assert deleted.returncode == 0, deleted.stderr
    meshes.create(
        "later",
        {
            "autoScalingGroups": {"names": ["eks-managed"]},
            "podSecurityGroups": {"policies": [pod_policies.ref("*")]},
            "resyncSeconds": SLOW_RESYNC,
        },
    )
    ready = meshes.wait_condition(
        "later", "False", "MemberSourceNotInstalled", DEADLINE, operator.log_tail
    )
    assert vpc_resources.RESOURCE in ready["message"]
    assert operator.healthy()

    reinstall_crd(vpc_resources.RESOURCE)
    # The CRD alone makes the mesh whole (no policy yet); the policy that comes after it must
    # be seen by a watch of the new kind.
    meshes.wait_ready("later", 15, operator.log_tail)
    pod_policies.put("web", [pods_sg])

    joined = {managed.security_group_id, pods_sg}
    wait_until(
        lambda: owned_pairs(world, joined, "later") == full_mesh(joined),
        15,
        "the policy's SG is meshed",
        operator.log_tail,
    )
    wait_until(
        lambda: (
            members_by_kind(meshes.get("later") or {}).get("SecurityGroupPolicy")
            == {pod_policies.ref("web")}
        ),
        15,
        "the status lists the policy",
        operator.log_tail,
    )

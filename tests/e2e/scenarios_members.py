"""Members beyond ASGs, end to end: the operator (as deploy/'s ServiceAccount: these scenarios
are collected by tests/deploy/test_e2e_as_service_account.py, so that the RBAC they need is
proven too) with Karpenter's real EC2NodeClass CRD and the VPC CNI's real ENIConfig CRD,
Nodes registered for instances moto launched, and a moto server.

Kubernetes objects are named per test (cluster-scoped names would collide on a re-run) and
removed after it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools import karpenter, vpc_cni
from devtools.aws.world import CNI_POLICY_ARN, NodeGroup, World
from devtools.k8s.controlplane import ControlPlane
from devtools.nodes import NODE_LABEL, ClusterNodes
from devtools.operator_harness import Meshes, Operator, wait_until
from tests.cluster import aws_node

pytestmark = pytest.mark.kube

OWNER_KEY = "sgmesh.io/e2e/{}"
DEADLINE = 60
# Long enough that only a watch can explain a reaction within seconds.
SLOW_RESYNC = 600
_unique = itertools.count()


def owned_pairs(world: World, group_ids: set[str], mesh: str) -> set[tuple[str, str]]:
    """(target, source) of every rule on `group_ids` that carries `mesh`'s tag."""
    return world.owned_pairs(group_ids, OWNER_KEY.format(mesh))


def full_mesh(group_ids: set[str]) -> set[tuple[str, str]]:
    return {(target, source) for target in group_ids for source in group_ids}


class Cluster:
    """Objects the test puts in the cluster: EC2NodeClasses, ENIConfigs, Nodes, the aws-node
    ServiceAccount; all removed after the test."""

    def __init__(self, kube_cluster: ControlPlane, world: World) -> None:
        self.kube = kube_cluster
        self.nodes = ClusterNodes(world, kube_cluster.kubectl)
        self.suffix = f"{next(_unique)}-{id(self) % 10_000}"
        self._made: list[tuple[str, str]] = []

    def name(self, base: str) -> str:
        """A cluster-scoped name of this test only."""
        return f"{base}-{self.suffix}"

    def apply(self, manifest: dict[str, Any], resource: str) -> None:
        self.nodes.apply(manifest)
        self._made.append((resource, manifest["metadata"]["name"]))

    def node_class(
        self, name: str, role: str, groups: dict[str, str], profile: str | None = None
    ) -> None:
        """An EC2NodeClass that Karpenter has resolved to `groups` (id → name)."""
        self.apply(karpenter.ec2nodeclass(name, role=role), karpenter.RESOURCE)
        self.resolve(name, groups, profile)

    def resolve(self, name: str, groups: dict[str, str], profile: str | None = None) -> None:
        """Write the status Karpenter writes once it has (re)resolved the class's selectors."""
        karpenter.write_ec2nodeclass_status(
            self.kube.kubectl, name, karpenter.ec2nodeclass_status(groups, profile)
        )

    def eni_config(self, name: str, groups: list[str], subnet: str) -> None:
        self.apply(vpc_cni.eniconfig(name, groups, subnet), vpc_cni.RESOURCE)

    def clear(self) -> None:
        for resource, name in reversed(self._made):
            self.kube.kubectl("delete", resource, name, "--ignore-not-found", "--wait=false")
        self.nodes.clear()


@pytest.fixture
def cluster(
    kube_cluster: ControlPlane, world: World, ec2nodeclass_crd: str, eniconfig_crd: str
) -> Iterator[Cluster]:
    objects = Cluster(kube_cluster, world)
    yield objects
    objects.clear()


def members_by_kind(mesh: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for member in (mesh.get("status") or {}).get("members") or []:
        found.setdefault(member["kind"], set()).add(member["name"])
    return found


def test_asg_tagged_sg_node_class_and_eni_config_make_one_mesh(
    world: World, meshes: Meshes, operator: Operator, cluster: Cluster
) -> None:
    managed = world.node_group("eks-managed")
    cluster_tag = cluster.name("prod")
    cluster_sg = world.security_group("eks-cluster-sg", tags={"aws:eks:cluster-name": cluster_tag})
    karpenter_sg = world.security_group("karpenter-nodes")
    node_role = world.role(cluster.name("KarpenterNodeRole"))
    pods_sg = world.security_group("pods")
    node_class, eni_config = cluster.name("default"), cluster.name("us-east-1a")
    cluster.node_class(node_class, node_role, {karpenter_sg: "karpenter-nodes"})
    cluster.eni_config(eni_config, [pods_sg], world.main_vpc.subnet_ids[0])
    unrelated = world.security_group("unrelated", tags={"aws:eks:cluster-name": "another"})

    meshes.create(
        "prod",
        {
            "autoScalingGroups": {"names": ["eks-managed"]},
            "securityGroups": {"selectors": [{"tags": {"aws:eks:cluster-name": cluster_tag}}]},
            "karpenter": {"nodeClasses": [node_class]},
            "customNetworking": {"eniConfigs": ["*"]},
            "resyncSeconds": SLOW_RESYNC,
        },
    )
    mesh = meshes.wait_ready("prod", DEADLINE, operator.log_tail)

    joined = {managed.security_group_id, cluster_sg, karpenter_sg, pods_sg}
    assert owned_pairs(world, joined | {unrelated}, "prod") == full_mesh(joined)
    assert CNI_POLICY_ARN in world.attached_policy_arns(managed.role)
    assert CNI_POLICY_ARN in world.attached_policy_arns(node_role)
    assert members_by_kind(mesh) == {
        "AutoScalingGroup": {"eks-managed"},
        "SecurityGroup": {cluster_sg},
        "EC2NodeClass": {node_class},
        "ENIConfig": {eni_config},
    }
    assert mesh["status"]["memberCount"] == 4


def test_a_node_class_switching_groups_moves_the_rules_within_seconds(
    world: World, meshes: Meshes, operator: Operator, cluster: Cluster
) -> None:
    managed = world.node_group("eks-managed")
    old, new = world.security_group("karpenter-old"), world.security_group("karpenter-new")
    node_class = cluster.name("default")
    cluster.node_class(node_class, world.role(cluster.name("nodes")), {old: "karpenter-old"})
    meshes.create(
        "moving",
        {
            "autoScalingGroups": {"names": ["eks-managed"]},
            "karpenter": {"nodeClasses": [node_class]},
            "resyncSeconds": SLOW_RESYNC,
        },
    )
    meshes.wait_ready("moving", DEADLINE, operator.log_tail)
    before = {managed.security_group_id, old}
    assert owned_pairs(world, before, "moving") == full_mesh(before)

    cluster.resolve(node_class, {new: "karpenter-new"})

    after = {managed.security_group_id, new}
    wait_until(
        lambda: owned_pairs(world, after | {old}, "moving") == full_mesh(after),
        10,
        "the new SG is meshed and the old one's owned rules are gone",
        operator.log_tail,
    )


def selector_mesh_and_a_new_asg(
    world: World, meshes: Meshes, operator: Operator, mesh: str
) -> tuple[NodeGroup, NodeGroup]:
    """A Ready mesh selecting ASGs tagged `team: data` (resync 600 s) over one ASG, and a
    second such ASG made afterwards, which only a reaction can bring in soon."""
    first = world.node_group("eks-data-1", tags={"team": "data"})
    meshes.create(
        mesh,
        {
            "autoScalingGroups": {"selectors": [{"tags": {"team": "data"}}]},
            "resyncSeconds": SLOW_RESYNC,
        },
    )
    meshes.wait_ready(mesh, DEADLINE, operator.log_tail)
    return first, world.node_group("eks-data-2", tags={"team": "data"})


def test_a_new_asg_joins_within_seconds_of_its_first_node(
    world: World, meshes: Meshes, operator: Operator, cluster: Cluster
) -> None:
    first, second = selector_mesh_and_a_new_asg(world, meshes, operator, "data")
    [instance] = cluster.nodes.launch("eks-data-2", second.profile)

    cluster.nodes.register(cluster.name("ip-10-0-0-2"), instance)

    joined = {first.security_group_id, second.security_group_id}
    wait_until(
        lambda: owned_pairs(world, joined, "data") == full_mesh(joined),
        10,
        "the new ASG's SG is meshed",
        operator.log_tail,
    )


def test_a_missing_node_class_is_reported_by_name_and_the_rest_converges(
    world: World, meshes: Meshes, operator: Operator, cluster: Cluster
) -> None:
    a, b = world.node_group("eks-a"), world.node_group("eks-b")
    missing = cluster.name("gpu")
    meshes.create(
        "partial",
        {
            "autoScalingGroups": {"names": ["eks-a", "eks-b"]},
            "karpenter": {"nodeClasses": [missing]},
        },
    )

    ready = meshes.wait_condition(
        "partial", "False", "EC2NodeClassNotFound", DEADLINE, operator.log_tail
    )

    assert missing in ready["message"]
    joined = {a.security_group_id, b.security_group_id}
    wait_until(
        lambda: owned_pairs(world, joined, "partial") == full_mesh(joined),
        DEADLINE,
        "the ASGs are meshed",
    )


def test_deleting_the_mesh_revokes_everything_it_owns(
    world: World, meshes: Meshes, operator: Operator, cluster: Cluster
) -> None:
    managed = world.node_group("eks-managed")
    karpenter_sg, pods_sg = world.security_group("karpenter"), world.security_group("pods")
    node_class = cluster.name("default")
    cluster.node_class(node_class, world.role(cluster.name("nodes")), {karpenter_sg: "karpenter"})
    cluster.eni_config(cluster.name("az1"), [pods_sg], world.main_vpc.subnet_ids[0])
    meshes.create(
        "going",
        {
            "autoScalingGroups": {"names": ["eks-managed"]},
            "karpenter": {"nodeClasses": ["*"]},
            "customNetworking": {"eniConfigs": ["*"]},
        },
    )
    meshes.wait_ready("going", DEADLINE, operator.log_tail)
    joined = {managed.security_group_id, karpenter_sg, pods_sg}
    assert owned_pairs(world, joined, "going") == full_mesh(joined)

    meshes.delete("going")

    wait_until(lambda: meshes.get("going") is None, DEADLINE, "the mesh is gone", operator.log_tail)
    assert owned_pairs(world, joined, "going") == set()
    assert all(not world.describe_ingress(group_id) for group_id in joined)


def test_irsa_on_aws_node_keeps_the_policy_off_node_roles_and_says_why(
    world: World, meshes: Meshes, operator: Operator, cluster: Cluster
) -> None:
    managed = world.node_group("eks-managed")
    irsa_role = "arn:aws:iam::123456789012:role/vpc-cni-irsa"
    cluster.nodes.service_account("aws-node", {"eks.amazonaws.com/role-arn": irsa_role})

    meshes.create(
        "irsa", {"autoScalingGroups": {"names": ["eks-managed"]}, "resyncSeconds": SLOW_RESYNC}
    )
    mesh = meshes.wait_ready("irsa", DEADLINE, operator.log_tail)

    assert CNI_POLICY_ARN not in world.attached_policy_arns(managed.role)
    message = mesh["status"]["conditions"][0]["message"]
    assert "IRSA" in message
    assert irsa_role in message


def test_pod_identity_on_aws_node_keeps_the_policy_off_node_roles_and_says_why(
    world: World, meshes: Meshes, operator: Operator, cluster: Cluster
) -> None:
    """moto serves no Pod Identity API, so EKS cannot tell: aws-node's pods, carrying the
    variables the Pod Identity webhook injects, show it (as deploy/'s ServiceAccount too)."""
    managed = world.node_group("eks-managed")
    aws_node.create_pods(cluster.kube, count=2)
    try:
        meshes.create(
            "pod-identity",
            {"autoScalingGroups": {"names": ["eks-managed"]}, "resyncSeconds": SLOW_RESYNC},
        )
        mesh = meshes.wait_ready("pod-identity", DEADLINE, operator.log_tail)
    finally:
        aws_node.remove_pods(cluster.kube)

    assert CNI_POLICY_ARN not in world.attached_policy_arns(managed.role)
    message = mesh["status"]["conditions"][0]["message"]
    assert "aws-node gets its credentials from EKS Pod Identity" in message
    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" in message


def test_a_source_crd_installed_later_is_used_without_a_restart(
    world: World,
    meshes: Meshes,
    operator: Operator,
    cluster: Cluster,
    reinstall_crd: Callable[[str], None],
) -> None:
    managed = world.node_group("eks-managed")
    pods_sg = world.security_group("pods")
    kube = cluster.kube
    deleted = kube.kubectl("delete", "crd", vpc_cni.RESOURCE, "--wait=true", timeout=60)
    assert deleted.returncode == 0, deleted.stderr
    meshes.create(
        "later",
        {
            "autoScalingGroups": {"names": ["eks-managed"]},
            "customNetworking": {"eniConfigs": ["*"]},
            "resyncSeconds": SLOW_RESYNC,
        },
    )
    ready = meshes.wait_condition(
        "later", "False", "MemberSourceNotInstalled", DEADLINE, operator.log_tail
    )
    assert vpc_cni.RESOURCE in ready["message"]
    assert operator.healthy()

    reinstall_crd(vpc_cni.RESOURCE)
    # The CRD alone makes the mesh whole (no ENIConfig yet); the ENIConfig that comes after it
    # must be seen by a watch of the new kind, whatever API discovery's lag behind the CRD.
    meshes.wait_ready("later", 15, operator.log_tail)
    cluster.eni_config(cluster.name("az1"), [pods_sg], world.main_vpc.subnet_ids[0])

    joined = {managed.security_group_id, pods_sg}
    wait_until(
        lambda: owned_pairs(world, joined, "later") == full_mesh(joined),
        15,
        "the ENIConfig's SG is meshed",
        operator.log_tail,
    )
    meshes.wait_ready("later", 15, operator.log_tail)
    wait_until(
        lambda: (
            members_by_kind(meshes.get("later") or {}).get("ENIConfig") == {cluster.name("az1")}
        ),
        15,
        "the status lists the ENIConfig",
        operator.log_tail,
    )


def test_an_eni_config_deleted_under_star_keeps_its_rules_and_says_why(
    world: World, meshes: Meshes, operator: Operator, cluster: Cluster
) -> None:
    managed = world.node_group("eks-managed")
    pods_sg = world.security_group("pods")
    eni_config, subnet = cluster.name("az1"), world.main_vpc.subnet_ids[0]
    cluster.eni_config(eni_config, [pods_sg], subnet)
    meshes.create(
        "spread",
        {
            "autoScalingGroups": {"names": ["eks-managed"]},
            "customNetworking": {"eniConfigs": ["*"]},
            "resyncSeconds": SLOW_RESYNC,
        },
    )
    mesh = meshes.wait_ready("spread", DEADLINE, operator.log_tail)
    assert members_by_kind(mesh)["ENIConfig"] == {eni_config}
    joined = {managed.security_group_id, pods_sg}
    assert owned_pairs(world, joined, "spread") == full_mesh(joined)

    deleted = cluster.kube.kubectl("delete", vpc_cni.RESOURCE, eni_config)
    assert deleted.returncode == 0, deleted.stderr

    ready = meshes.wait_condition("spread", "False", "ENIConfigNotFound", 15, operator.log_tail)
    assert eni_config in ready["message"]
    assert "was a member at the last reconcile" in ready["message"]
    assert owned_pairs(world, joined, "spread") == full_mesh(joined)
    # Still listed, so that the reconciles after this one remember it too.
    assert members_by_kind(meshes.get("spread") or {})["ENIConfig"] == {eni_config}

    cluster.eni_config(eni_config, [pods_sg], subnet)
    meshes.wait_ready("spread", 15, operator.log_tail)
    assert owned_pairs(world, joined, "spread") == full_mesh(joined)


def test_a_source_crd_being_deleted_holds_the_rules_of_its_members(
    world: World,
    meshes: Meshes,
    operator: Operator,
    cluster: Cluster,
    reinstall_crd: Callable[[str], None],
) -> None:
    """Karpenter's finalizers on its classes keep their CRD terminating; the VPC CNI's CRD and
    a finalizer of the test's stand in for them."""
    managed = world.node_group("eks-managed")
    pods_sg = world.security_group("pods")
    eni_config = cluster.name("az1")
    held = vpc_cni.eniconfig(eni_config, [pods_sg], world.main_vpc.subnet_ids[0])
    held["metadata"]["finalizers"] = ["sgmesh.io/test-holds-it"]
    cluster.apply(held, vpc_cni.RESOURCE)
    meshes.create(
        "uninstalling",
        {
            "autoScalingGroups": {"names": ["eks-managed"]},
            "customNetworking": {"eniConfigs": ["*"]},
            "resyncSeconds": SLOW_RESYNC,
        },
    )
    meshes.wait_ready("uninstalling", DEADLINE, operator.log_tail)
    joined = {managed.security_group_id, pods_sg}
    assert owned_pairs(world, joined, "uninstalling") == full_mesh(joined)
    kube = cluster.kube

    deleted = kube.kubectl("delete", "crd", vpc_cni.RESOURCE, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr

    ready = meshes.wait_condition(
        "uninstalling", "False", "MemberSourceNotInstalled", 15, operator.log_tail
    )
    assert "its CRD is being deleted" in ready["message"]
    assert owned_pairs(world, joined, "uninstalling") == full_mesh(joined)

    # The finalizer goes: the ENIConfig goes (a nudge), then the CRD.
    released = kube.kubectl(
        "patch",
        vpc_cni.RESOURCE,
        eni_config,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
    )
    assert released.returncode == 0, released.stderr
    gone = kube.kubectl("wait", "--for=delete", f"crd/{vpc_cni.RESOURCE}", "--timeout=60s")
    assert gone.returncode == 0, gone.stderr
    # A reconcile seen to run after both: the spec changes (which lets the memory go, not the
    # hold of a kind the cluster does not serve).
    generation = meshes.patch_spec("uninstalling", {"resyncSeconds": SLOW_RESYNC + 1})["metadata"][
        "generation"
    ]
    wait_until(
        lambda: (
            (meshes.get("uninstalling") or {}).get("status", {}).get("observedGeneration")
            == generation
        ),
        15,
        "the changed spec is reconciled",
        operator.log_tail,
    )
    assert (meshes.ready("uninstalling") or {}).get("reason") == "MemberSourceNotInstalled"
    assert owned_pairs(world, joined, "uninstalling") == full_mesh(joined)


def test_a_hundred_nodes_joining_at_once_cost_a_few_reconciles(
    world: World, meshes: Meshes, operator: Operator, cluster: Cluster
) -> None:
    first, second = selector_mesh_and_a_new_asg(world, meshes, operator, "burst")
    instances = cluster.nodes.launch("eks-data-2", second.profile, count=100)
    zone = f"{world.clients.region}a"
    before = operator.metric("sgmesh_nudged_reconciles_total")

    cluster.nodes.apply(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": cluster.name(f"ip-10-1-{index // 250}-{index % 250}"),
                        "labels": {NODE_LABEL: "true"},
                    },
                    "spec": {"providerID": f"aws:///{zone}/{instance}"},
                }
                for index, instance in enumerate(instances)
            ],
        }
    )

    joined = {first.security_group_id, second.security_group_id}
    wait_until(
        lambda: owned_pairs(world, joined, "burst") == full_mesh(joined),
        10,
        "the new ASG's SG is meshed",
        operator.log_tail,
    )
    wait_until(
        lambda: operator.metric("sgmesh_watched_nodes") >= 100, 10, "the operator saw every node"
    )
    # Every node event has been handled, so at most one batch may still be pending: what
    # has run, plus that one, is a handful of reconciles, not a hundred.
    nudged = operator.metric("sgmesh_nudged_reconciles_total") - before
    assert 1 <= nudged <= 4, nudged

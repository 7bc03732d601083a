"""The diagnosis of `sgmesh doctor`: from what the cluster and AWS hold, the findings and the fix.

`doctor` reads (Nodes and their instances or Fargate ENIs, pods and the ENIs that carry them,
SG rules of both directions, node roles and their policies, CoreDNS pods, aws-node's own
credentials — IRSA or EKS Pod Identity — installed meshes) into an `Inventory`; `diagnose`
turns it into findings — groups of pods that cannot reach CoreDNS on udp/53 and tcp/53, groups
whose SGs do not let each other's pod traffic out or in, roles whose policies do not grant the
VPC CNI's actions for the cluster's IP family, SGs close to their rules quota — each with its
evidence (naming the end that blocks), the fix, and whether an installed mesh will make that
fix at its next reconcile. `suggest_mesh` writes the NodeGroupMesh that would fix what was
found.

Pods are evaluated on the ENI that holds their address: a pod's own branch ENI (security
groups for pods: such pods form a group per SecurityGroupPolicy), else the ENI of its node that
holds the address (a secondary ENI under custom networking; a Fargate node's own ENI). A node
none of whose pods is known stands for its pods on every ENI it has.

Pure: values in, values out; no AWS or Kubernetes library, no I/O. It never guesses: a node
whose instance could not be read is reported as such, never as reachable or unreachable.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sgmesh.api import models
from sgmesh.engine import cluster_members, iam_actions, ingress, reachability
from sgmesh.engine.ingress import IngressRule
from sgmesh.engine.reachability import Endpoint, Flow, PathVerdict, Side

__all__ = [
    "Check",
    "DnsServer",
    "Finding",
    "GroupKind",
    "Inventory",
    "MeshCoverage",
    "Node",
    "NodeGroup",
    "Pod",
    "Report",
    "Status",
    "diagnose",
    "suggest_mesh",
]

# Below this share of the quota still free, an SG is reported even if the mesh would fit.
QUOTA_WARNING_SHARE = 0.9
DNS_FLOWS = (reachability.DNS_UDP, reachability.DNS_TCP)
SUGGESTED_MESH_NAME = "node-groups"
DNS_NAMESPACE = "kube-system"
# Enough evidence to act on; the rest of a large node group says the same.
MAX_EVIDENCE_LINES = 6


class GroupKind(enum.StrEnum):
    AUTO_SCALING_GROUP = "AutoScalingGroup"
    KARPENTER = "Karpenter"
    UNMANAGED = "Unmanaged"
    FARGATE = "Fargate"
    # Pods with their own branch ENI, grouped by the SecurityGroupPolicy that gave it.
    POD_SECURITY_GROUPS = "SecurityGroupPolicy"


# Where a group's name says what it is made of (see `_groups`).
POD_GROUP_PREFIX = "sgp/"
UNNAMED_POD_GROUP_PREFIX = "pod-sgs/"


class Check(enum.StrEnum):
    DNS = "DnsUnreachable"
    POD_TRAFFIC = "PodTrafficBlocked"
    CNI_POLICY = "CniPolicyMissing"
    QUOTA = "QuotaHeadroom"
    NO_DNS = "CoreDnsNotFound"
    UNMAPPED = "NodeNotMapped"


class Status(enum.StrEnum):
    OK = "ok"
    PARTIAL = "partial"
    BLOCKED = "blocked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Node:
    """A Kubernetes Node with its instance as AWS describes it."""

    name: str
    instance_id: str
    group: str
    group_kind: GroupKind
    interfaces: tuple[Endpoint, ...]
    asg_name: str | None = None
    instance_profile: str | None = None
    role_names: tuple[str, ...] = ()
    vpc_id: str | None = None
    node_class: str | None = None  # Karpenter's EC2NodeClass, from the node's label

    @property
    def security_group_ids(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for interface in self.interfaces:
            seen.update(dict.fromkeys(sorted(interface.security_group_ids)))
        return tuple(seen)


@dataclass(frozen=True)
class DnsServer:
    """A CoreDNS pod: where it runs, its IP when the kubelet has reported one, and its own
    branch ENI when it has one (security groups for pods)."""

    pod: str
    node: str
    pod_ip: str | None = None
    interface: Endpoint | None = None


@dataclass(frozen=True)
class Pod:
    """A pod with an address of its own (not hostNetwork). `interface`: its own branch ENI
    (security groups for pods), whose SGs alone filter its traffic; `policies`: the
    SecurityGroupPolicies (`namespace/name`) that gave it those SGs."""

    namespace: str
    name: str
    node: str
    ip: str
    interface: Endpoint | None = None
    policies: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Inventory:
    region: str
    nodes: tuple[Node, ...] = ()
    pods: tuple[Pod, ...] = ()
    unmapped_nodes: Mapping[str, str] = field(default_factory=dict)  # node → why
    # Nodes that are not a member of the VPC's traffic (hybrid nodes) → what they are.
    outside_vpc: Mapping[str, str] = field(default_factory=dict)
    # Nodes whose instance no longer runs (terminated, stopped) → its state: not counted.
    not_live: Mapping[str, str] = field(default_factory=dict)
    dns_servers: tuple[DnsServer, ...] = ()
    rules: tuple[IngressRule, ...] = ()  # inbound and outbound (`egress`)
    prefix_lists: Mapping[str, ingress.PrefixList] = field(default_factory=dict)
    role_policies: Mapping[str, frozenset[str]] = field(default_factory=dict)  # managed ARNs
    policy_documents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by ARN
    inline_policies: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(
        default_factory=dict
    )  # role → policy name → document
    ip_family: int | None = None  # the cluster's, from EKS; else told by the pods' addresses
    # IRSA or EKS Pod Identity: the node roles then need no CNI policy, that role does.
    aws_node_credentials: cluster_members.AwsNodeCredentials | None = None
    meshes: tuple[models.NodeGroupMesh, ...] = ()
    asg_tags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    rules_per_security_group: int = 60

    @functools.cached_property
    def rules_by_group(self) -> Mapping[str, tuple[IngressRule, ...]]:
        """Rules (both directions) by the SG that holds them: each check reads only its ENIs'
        rules."""
        index: dict[str, list[IngressRule]] = defaultdict(list)
        for rule in self.rules:
            index[rule.group_id].append(rule)
        return {group_id: tuple(rules) for group_id, rules in index.items()}

    @functools.cached_property
    def family(self) -> int:
        """The IP family pods use: the cluster's when EKS told it, else IPv6 when a pod or
        CoreDNS has an IPv6 address."""
        if self.ip_family is not None:
            return self.ip_family
        addresses = [server.pod_ip for server in self.dns_servers]
        addresses += [pod.ip for pod in self.pods]
        return 6 if any(_family(address) == 6 for address in addresses) else 4


@dataclass(frozen=True)
class NodeGroup:
    name: str
    kind: GroupKind
    nodes: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    role_names: tuple[str, ...]
    asg_name: str | None
    runs_dns: bool
    node_class: str | None = None
    pods: tuple[str, ...] = ()  # a SecurityGroupPolicy group's pods (`namespace/name`)
    policies: tuple[str, ...] = ()  # its SecurityGroupPolicies (`namespace/name`)


@dataclass(frozen=True)
class MeshCoverage:
    """Whether an installed mesh makes the fix at its next reconcile, and if not, why."""

    mesh: str | None
    reason: str

    @property
    def fixed(self) -> bool:
        return self.mesh is not None


@dataclass(frozen=True)
class Finding:
    check: Check
    node_group: str
    summary: str
    evidence: tuple[str, ...]
    fix: str
    peer: str | None = None
    coverage: MeshCoverage | None = None
    blocked_on: tuple[Side, ...] = ()  # reachability: the ends whose rules block
    missing_actions: tuple[str, ...] = ()  # CNI permissions: what the role is not allowed

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check.value,
            "nodeGroup": self.node_group,
            "peer": self.peer,
            "blockedOn": [side.value for side in self.blocked_on],
            "missingActions": list(self.missing_actions),
            "summary": self.summary,
            "evidence": list(self.evidence),
            "fix": self.fix,
            "mesh": None
            if self.coverage is None
            else {
                "willFix": self.coverage.fixed,
                "name": self.coverage.mesh,
                "reason": self.coverage.reason,
            },
        }


@dataclass(frozen=True)
class Report:
    region: str
    groups: tuple[NodeGroup, ...]
    dns: Mapping[str, Status]  # client group → can it reach every CoreDNS pod
    matrix: Mapping[str, Mapping[str, Status]]  # from group → to group → pod traffic
    findings: tuple[Finding, ...]
    aws_node_credentials: cluster_members.AwsNodeCredentials | None = None
    outside_vpc: Mapping[str, str] = field(default_factory=dict)
    not_live: Mapping[str, str] = field(default_factory=dict)
    ip_family: int = 4

    @property
    def healthy(self) -> bool:
        return not self.findings


# ---- groups and the ENIs that carry their pods -----------------------------------------------


@dataclass(frozen=True)
class _Sender:
    """An ENI a group's pods send from (and receive on): a node's ENI holding its pods, or a
    pod's own branch ENI."""

    name: str  # the node, or the pod (`namespace/name`)
    node: str
    endpoint: Endpoint
    own: bool = False  # a pod's own ENI: traffic to its node's other pods crosses ENIs too


def _pod_group_name(pod: Pod) -> str:
    if pod.policies:
        return POD_GROUP_PREFIX + "+".join(sorted(pod.policies))
    assert pod.interface is not None
    return UNNAMED_POD_GROUP_PREFIX + ",".join(sorted(pod.interface.security_group_ids))


def _holding(interfaces: Iterable[Endpoint], address: str) -> list[Endpoint]:
    ip = ipaddress.ip_address(address)
    return [i for i in interfaces if any(ip in network for network in i.networks)]


def _senders(inventory: Inventory) -> dict[str, list[_Sender]]:
    """Each group's ENIs, by group name: a node's ENIs that hold its pods' addresses (every ENI
    of a node none of whose pods is known), and each branch-ENI pod's own ENI."""
    pods_by_node: dict[str, list[Pod]] = defaultdict(list)
    for pod in inventory.pods:
        if pod.interface is None:
            pods_by_node[pod.node].append(pod)
    found: dict[str, list[_Sender]] = defaultdict(list)
    for node in inventory.nodes:
        carrying: dict[Endpoint, None] = {}
        for pod in pods_by_node.get(node.name, ()):
            carrying.update(dict.fromkeys(_holding(node.interfaces, pod.ip)))
        for interface in carrying or dict.fromkeys(node.interfaces):
            found[node.group].append(_Sender(node.name, node.name, interface))
    for pod in inventory.pods:
        if pod.interface is not None:
            found[_pod_group_name(pod)].append(
                _Sender(pod.reference, pod.node, pod.interface, own=True)
            )
    return found


def _groups(inventory: Inventory) -> tuple[NodeGroup, ...]:
    by_name: dict[str, list[Node]] = defaultdict(list)
    for node in inventory.nodes:
        by_name[node.group].append(node)
    dns_nodes = {server.node for server in inventory.dns_servers if server.interface is None}
    dns_pods = {server.pod for server in inventory.dns_servers if server.interface is not None}
    groups = []
    for name, nodes in sorted(by_name.items()):
        groups.append(
            NodeGroup(
                name=name,
                kind=nodes[0].group_kind,
                nodes=tuple(sorted(node.name for node in nodes)),
                security_group_ids=tuple(
                    dict.fromkeys(sg for node in nodes for sg in node.security_group_ids)
                ),
                role_names=tuple(dict.fromkeys(r for node in nodes for r in node.role_names)),
                asg_name=nodes[0].asg_name,
                runs_dns=any(node.name in dns_nodes for node in nodes),
                node_class=nodes[0].node_class,
            )
        )
    pods_by_group: dict[str, list[Pod]] = defaultdict(list)
    for pod in inventory.pods:
        if pod.interface is not None:
            pods_by_group[_pod_group_name(pod)].append(pod)
    for name, pods in sorted(pods_by_group.items()):
        groups.append(
            NodeGroup(
                name=name,
                kind=GroupKind.POD_SECURITY_GROUPS,
                nodes=(),
                security_group_ids=tuple(
                    dict.fromkeys(
                        sg
                        for pod in pods
                        if pod.interface is not None
                        for sg in sorted(pod.interface.security_group_ids)
                    )
                ),
                role_names=(),
                asg_name=None,
                runs_dns=any(pod.name in dns_pods for pod in pods),
                pods=tuple(sorted(pod.reference for pod in pods)),
                policies=tuple(sorted({p for pod in pods for p in pod.policies})),
            )
        )
    return tuple(groups)


# ---- mesh membership -----------------------------------------------------------------------


def _names_policy(reference: str, policy: str) -> bool:
    """Whether a mesh's `podSecurityGroups.policies` entry names the policy `namespace/name`."""
    if reference == models.EVERY:
        return True
    namespace, _, name = reference.partition("/")
    return policy.partition("/")[0] == namespace and name in (
        models.EVERY,
        policy.partition("/")[2],
    )


def _member_of(mesh: models.NodeGroupMesh, group: NodeGroup, inventory: Inventory) -> bool:
    asgs = mesh.spec.auto_scaling_groups
    if group.asg_name is not None:
        if asgs is None:
            return False
        tags = dict(inventory.asg_tags.get(group.asg_name, {}))
        return group.asg_name in asgs.names or any(
            selector.matches(group.asg_name, tags) for selector in asgs.selectors
        )
    karpenter = mesh.spec.karpenter
    if group.node_class is not None and karpenter is not None:
        names = karpenter.node_classes
        if names == [models.EVERY] or group.node_class in names:
            return True
    pod_sgs = mesh.spec.pod_security_groups
    if (
        group.policies
        and pod_sgs is not None
        and all(any(_names_policy(ref, p) for ref in pod_sgs.policies) for p in group.policies)
    ):
        return True
    listed = set(mesh.spec.security_group_ids)
    return bool(group.security_group_ids) and set(group.security_group_ids) <= listed


def _mesh_flows(mesh: models.NodeGroupMesh) -> tuple[Flow, ...]:
    return tuple(
        Flow(
            ingress.ALL_PROTOCOLS
            if entry.protocol is models.Protocol.ALL
            else entry.protocol.value,
            -1 if entry.from_port is None else entry.from_port,
            -1 if entry.to_port is None else entry.to_port,
        )
        for entry in mesh.spec.traffic
    )


def _mesh_admits(mesh: models.NodeGroupMesh, flow: Flow) -> bool:
    """Would the rules this mesh makes (one per traffic entry, between member SGs) admit it?"""
    rules = [
        IngressRule("dst", f.protocol, f.from_port, f.to_port, source_group_id="src")
        for f in _mesh_flows(mesh)
    ]
    source = Endpoint(frozenset({"src"}))
    return reachability.evaluate(flow, ["dst"], source, rules).admitted


def _attached_lacks(mesh: models.NodeGroupMesh, family: int) -> str | None:
    """What the policy a mesh attaches lacks in this IP family (AmazonEKS_CNI_Policy, its
    default, has no IPv6 action); None when it is another policy (not judged here)."""
    arn = mesh.spec.cni_policy.policy_arn
    if family == 6 and (arn is None or arn.rpartition("/")[2] == "AmazonEKS_CNI_Policy"):
        return (
            f"mesh {mesh.name} attaches AmazonEKS_CNI_Policy, which lacks ec2:AssignIpv6Addresses"
        )
    return None


def _coverage(
    inventory: Inventory,
    groups: Sequence[NodeGroup],
    flows: Sequence[Flow] = (),
    attaches_cni: bool = False,
    blocked_on: Iterable[Side] = (),
) -> MeshCoverage:
    """Which Enforce mesh holds every group in `groups` (and admits `flows`, or attaches the CNI
    policy); otherwise the reason none will."""
    if not inventory.meshes:
        return MeshCoverage(None, "no NodeGroupMesh is installed")
    if Side.OUTBOUND in tuple(blocked_on):
        return MeshCoverage(
            None, "a mesh writes inbound rules only: outbound rules are not its to change"
        )
    if attaches_cni and any(group.asg_name is None for group in groups):
        return MeshCoverage(None, "a mesh attaches the CNI policy only to the roles of its ASGs")
    dry_run: list[str] = []
    narrow: list[str] = []
    for mesh in inventory.meshes:
        if not all(_member_of(mesh, group, inventory) for group in groups):
            continue
        if attaches_cni and not mesh.spec.cni_policy.attach:
            narrow.append(f"mesh {mesh.name} has cniPolicy.attach: false")
            continue
        if attaches_cni and (lacks := _attached_lacks(mesh, inventory.family)):
            narrow.append(lacks)
            continue
        if not all(_mesh_admits(mesh, flow) for flow in flows):
            narrow.append(f"mesh {mesh.name} does not list that traffic")
            continue
        if mesh.spec.mode is models.Mode.DRY_RUN:
            dry_run.append(mesh.name)
            continue
        return MeshCoverage(mesh.name, f"mesh {mesh.name} fixes it at its next reconcile")
    if dry_run:
        return MeshCoverage(None, f"mesh {dry_run[0]} is in DryRun: it reports, it does not fix")
    if narrow:
        return MeshCoverage(None, "; ".join(narrow))
    outside = [
        g.name
        for g in groups
        if not any(_member_of(mesh, g, inventory) for mesh in inventory.meshes)
    ]
    if outside:
        return MeshCoverage(None, f"node group {outside[0]} is outside every mesh")
    return MeshCoverage(None, "no single mesh holds all of " + ", ".join(g.name for g in groups))


# ---- reachability --------------------------------------------------------------------------


Checked = tuple[str, PathVerdict]  # (what was checked, its verdict at both ends)


@dataclass(frozen=True)
class _Pair:
    verdicts: tuple[Checked, ...]

    @property
    def status(self) -> Status:
        if all(v.admitted for _, v in self.verdicts):
            return Status.OK
        if any(v.admitted or v.partly for _, v in self.verdicts):
            return Status.PARTIAL
        return Status.BLOCKED

    @property
    def blocked_on(self) -> tuple[Side, ...]:
        sides = {side for _, v in self.verdicts for side, _ in v.blocking}
        return tuple(side for side in (Side.OUTBOUND, Side.INBOUND) if side in sides)


def _family(address: str | None) -> int:
    return 6 if address and ":" in address else 4


class _Paths:
    """Evaluates flows between ENIs, remembering verdicts: many senders share their SGs and
    addresses' coverage, and a large cluster asks the same question thousands of times."""

    def __init__(self, inventory: Inventory) -> None:
        self._inventory = inventory
        self._outbound: dict[tuple[frozenset[str], Endpoint, Flow, int], reachability.Verdict] = {}

    def _rules(self, group_ids: Iterable[str]) -> list[IngressRule]:
        index = self._inventory.rules_by_group
        return [rule for group_id in sorted(group_ids) for rule in index.get(group_id, ())]

    def check(
        self, flow: Flow, source: Endpoint, destination: Endpoint, family: int
    ) -> PathVerdict:
        lists = self._inventory.prefix_lists
        key = (source.security_group_ids, destination, flow, family)
        outbound = self._outbound.get(key)
        if outbound is None:
            outbound = reachability.evaluate_outbound(
                flow,
                source.security_group_ids,
                destination,
                self._rules(source.security_group_ids),
                prefix_lists=lists,
                family=family,
            )
            self._outbound[key] = outbound
        inbound = reachability.evaluate(
            flow,
            destination.security_group_ids,
            source,
            self._rules(destination.security_group_ids),
            prefix_lists=lists,
            family=family,
        )
        return PathVerdict(outbound=outbound, inbound=inbound)


def _check_flows(
    paths: _Paths,
    *,
    sender: _Sender,
    server: str,
    destinations: Sequence[Endpoint],
    flows: Sequence[Flow],
    family: int,
) -> list[Checked]:
    checked = []
    for destination in destinations:
        for flow in flows:
            verdict = paths.check(flow, sender.endpoint, destination, family)
            label = (
                f"{flow.describe()} from {sender.name} ({_sgs(sender.endpoint)}) "
                f"to {server} ({_sgs(destination)})"
            )
            checked.append((label, verdict))
    return checked


def _sgs(endpoint: Endpoint) -> str:
    return ",".join(sorted(endpoint.security_group_ids)) or "no SG"


def _gaps(verdict: reachability.Verdict) -> str:
    return ", ".join(f"{low}-{high}" if low != high else str(low) for low, high in verdict.missing)


def _evidence(checked: Iterable[Checked]) -> tuple[str, ...]:
    lines: dict[str, None] = {}
    for label, path in checked:
        for side, verdict in path.blocking:
            admitted_by = "; ".join(rule.describe() for rule in verdict.rules)
            if side is Side.INBOUND:
                if verdict.partly:
                    line = (
                        f"{label}: only partly admitted ({admitted_by}); not ports {_gaps(verdict)}"
                    )
                else:
                    line = f"{label}: no inbound rule admits it"
            elif verdict.partly:
                line = (
                    f"{label}: only partly let out by the sender's outbound rules "
                    f"({admitted_by}); not ports {_gaps(verdict)}"
                )
            else:
                line = (
                    f"{label}: no outbound rule of the sender lets it out (the sending side blocks)"
                )
            lines[line] = None
    shown = list(lines)[:MAX_EVIDENCE_LINES]
    if len(lines) > len(shown):
        shown.append(f"… and {len(lines) - len(shown)} more of the same kind")
    return tuple(shown)


def _server_destinations(
    server: DnsServer, node: Node | None, senders: Mapping[str, list[_Sender]]
) -> tuple[Endpoint, ...] | None:
    """The ENI that receives a CoreDNS pod's traffic, seen at the pod's address when known;
    None when its node is not mapped."""
    if server.interface is not None:
        if server.pod_ip:
            return (server.interface.holding(ipaddress.ip_network(server.pod_ip)),)
        return (server.interface,)
    if node is None:
        return None
    if server.pod_ip:
        holding = _holding(node.interfaces, server.pod_ip)
        if holding:
            address = ipaddress.ip_network(server.pod_ip)
            return tuple(interface.holding(address) for interface in holding)
    own = [s.endpoint for s in senders.get(node.group, ()) if s.node == node.name]
    return tuple(own) or node.interfaces


def _dns_summary(group: str, targets: str, sides: Sequence[Side]) -> tuple[str, str]:
    """The finding's summary and fix for the ends that block."""
    head = f"pods on {group} cannot reliably resolve names: "
    inbound = f"CoreDNS on {targets} does not admit udp/53 and tcp/53 from them"
    outbound = (
        f"the outbound rules of their SGs do not let udp/53 and tcp/53 out to CoreDNS on {targets}"
    )
    fix_in = (
        f"let the SGs of {targets} admit udp/53 and tcp/53 (or all traffic) from the SGs of {group}"
    )
    fix_out = (
        f"let the outbound rules of the SGs of {group} allow udp/53 and tcp/53 (or all traffic) "
        f"to the SGs of {targets}"
    )
    if list(sides) == [Side.OUTBOUND]:
        return head + outbound, fix_out
    if list(sides) == [Side.INBOUND] or not sides:
        return head + inbound, fix_in
    return head + inbound + ", and " + outbound, fix_in + "; " + fix_out


def _dns_findings(
    inventory: Inventory,
    groups: Sequence[NodeGroup],
    nodes_by_name: Mapping[str, Node],
    senders: Mapping[str, list[_Sender]],
    paths: _Paths,
) -> tuple[dict[str, Status], list[Finding]]:
    findings: list[Finding] = []
    statuses: dict[str, Status] = {}
    if not inventory.dns_servers:
        findings.append(
            Finding(
                Check.NO_DNS,
                "kube-system",
                "no CoreDNS pod (label k8s-app=kube-dns in kube-system) is scheduled on a node",
                (),
                "install or schedule CoreDNS; DNS reachability could not be checked",
            )
        )
        return {g.name: Status.UNKNOWN for g in groups}, findings
    by_group = {g.name: g for g in groups}
    servers = []
    for server in inventory.dns_servers:
        node = nodes_by_name.get(server.node)
        if server.interface is not None:
            reference = f"{DNS_NAMESPACE}/{server.pod}"
            home = next((g for g in groups if reference in g.pods), None)
            group_name = home.name if home else None
        else:
            group_name = node.group if node else None
        servers.append((server, group_name, _server_destinations(server, node, senders)))
    for group in groups:
        checked: list[Checked] = []
        unknown: list[str] = []
        server_groups: dict[str, NodeGroup] = {}
        for server, server_group, destinations in servers:
            if destinations is None or server_group is None:
                unknown.append(f"CoreDNS pod {server.pod} runs on {server.node}, not mapped")
                continue
            server_groups[server_group] = by_group[server_group]
            for sender in senders.get(group.name, ()):
                if sender.node == server.node and not sender.own and server.interface is None:
                    continue  # pod to pod on one node never crosses an ENI
                checked.extend(
                    _check_flows(
                        paths,
                        sender=sender,
                        server=server.node,
                        destinations=destinations,
                        flows=DNS_FLOWS,
                        family=_family(server.pod_ip) if server.pod_ip else inventory.family,
                    )
                )
        pair = _Pair(tuple(checked))
        status = pair.status if checked else Status.OK
        if unknown and status is Status.OK:
            status = Status.UNKNOWN
        statuses[group.name] = status
        if status in (Status.OK, Status.UNKNOWN):
            continue
        targets = ", ".join(sorted(server_groups))
        summary, fix = _dns_summary(group.name, targets, pair.blocked_on)
        findings.append(
            Finding(
                Check.DNS,
                group.name,
                summary,
                _evidence(checked),
                fix,
                peer=targets,
                coverage=_coverage(
                    inventory,
                    [group, *server_groups.values()],
                    flows=list(DNS_FLOWS),
                    blocked_on=pair.blocked_on,
                ),
                blocked_on=pair.blocked_on,
            )
        )
    return statuses, findings


def _distinct_destinations(senders: Sequence[_Sender]) -> list[tuple[str, Endpoint]]:
    """One ENI per distinct set of SGs in the group, seen at every address of the group's ENIs
    with those SGs: what a receiving ENI admits depends on its SGs, what a sender lets out on
    the receiver's addresses, and every one of them must be reachable."""
    found: dict[frozenset[str], tuple[str, set[ingress.Network]]] = {}
    for sender in senders:
        _, networks = found.setdefault(sender.endpoint.security_group_ids, (sender.name, set()))
        networks.update(sender.endpoint.networks)
    return [
        (name, Endpoint(sgs, frozenset(networks), name)) for sgs, (name, networks) in found.items()
    ]


def _required_flows(inventory: Inventory, pair: Sequence[NodeGroup]) -> tuple[Flow, ...]:
    """The traffic a mesh holding both groups asks for; all traffic when none does."""
    for mesh in inventory.meshes:
        if all(_member_of(mesh, group, inventory) for group in pair):
            return _mesh_flows(mesh)
    return (reachability.ALL_TRAFFIC,)


def _pod_traffic_findings(
    inventory: Inventory,
    groups: Sequence[NodeGroup],
    senders: Mapping[str, list[_Sender]],
    paths: _Paths,
) -> tuple[dict[str, dict[str, Status]], list[Finding]]:
    """The matrix, and one finding per destination group, required traffic, blocking ends and
    mesh coverage, listing every source group it does not admit (a short list, not one finding
    per pair)."""
    matrix: dict[str, dict[str, Status]] = {}
    blocked: dict[
        tuple[str, tuple[Flow, ...], tuple[Side, ...], MeshCoverage],
        list[tuple[NodeGroup, list[Checked]]],
    ] = {}
    family = inventory.family
    destinations = {g.name: _distinct_destinations(senders.get(g.name, [])) for g in groups}
    for source_group, destination_group in itertools.product(groups, groups):
        flows = _required_flows(inventory, [source_group, destination_group])
        checked: list[Checked] = []
        for sender in senders.get(source_group.name, ()):
            for server, destination in destinations[destination_group.name]:
                # A node checked against itself stands for another node of its group.
                checked.extend(
                    _check_flows(
                        paths,
                        sender=sender,
                        server=server,
                        destinations=[destination],
                        flows=flows,
                        family=family,
                    )
                )
        pair = _Pair(tuple(checked))
        status = pair.status
        matrix.setdefault(source_group.name, {})[destination_group.name] = status
        if status is not Status.OK:
            coverage = _coverage(
                inventory,
                [source_group, destination_group],
                flows=flows,
                blocked_on=pair.blocked_on,
            )
            key = (destination_group.name, flows, pair.blocked_on, coverage)
            blocked.setdefault(key, []).append((source_group, checked))
    findings: list[Finding] = []
    for (destination_name, flows, sides, coverage), sources in blocked.items():
        wanted = ", ".join(flow.describe() for flow in flows)
        names = ", ".join(group.name for group, _ in sources)
        parts, fixes = [], []
        if Side.INBOUND in sides:
            parts.append(f"{destination_name} does not admit {wanted} from pods on {names}")
            fixes.append(
                f"let the SGs of {destination_name} admit {wanted} from the SGs of {names}"
            )
        if Side.OUTBOUND in sides:
            parts.append(
                f"the outbound rules of {names} do not let {wanted} out to {destination_name}"
            )
            fixes.append(
                f"let the outbound rules of the SGs of {names} allow {wanted} to the SGs of "
                f"{destination_name}"
            )
        findings.append(
            Finding(
                Check.POD_TRAFFIC,
                destination_name,
                "; ".join(parts),
                _evidence(line for _, checked in sources for line in checked),
                "; ".join(fixes),
                peer=names,
                coverage=coverage,
                blocked_on=sides,
            )
        )
    return matrix, findings


# ---- CNI permissions -----------------------------------------------------------------------


def _role_statements(inventory: Inventory, role: str) -> list[iam_actions.Statement]:
    found: list[iam_actions.Statement] = []
    for arn in sorted(inventory.role_policies.get(role, frozenset())):
        document = inventory.policy_documents.get(arn)
        if document is not None:
            found.extend(iam_actions.statements(document))
    for document in inventory.inline_policies.get(role, {}).values():
        found.extend(iam_actions.statements(document))
    return found


def _missing_actions(inventory: Inventory, role: str) -> tuple[str, ...]:
    return iam_actions.missing(
        _role_statements(inventory, role), iam_actions.CNI_ACTIONS[inventory.family]
    )


def _role_evidence(inventory: Inventory, role: str) -> str:
    policies = sorted(inventory.role_policies.get(role, frozenset()))
    inline = sorted(inventory.inline_policies.get(role, {}))
    held = ", ".join([*policies, *(f"inline {name}" for name in inline)]) or "no policy"
    missing = _missing_actions(inventory, role)
    required = iam_actions.CNI_ACTIONS[inventory.family]
    shown = f"any of the {len(required)}" if len(missing) == len(required) else ", ".join(missing)
    return f"role {role} has: {held}; not allowed for IPv{inventory.family}: {shown}"


def _cni_fix(inventory: Inventory, role: str) -> str:
    if inventory.family == 6:
        return (
            f"attach to role {role} a policy allowing {', '.join(iam_actions.CNI_ACTIONS[6])} "
            "(the VPC CNI's IPv6 policy, usually created as AmazonEKS_CNI_IPv6_Policy)"
        )
    policy = f"arn:{models.partition_of(inventory.region)}:iam::aws:policy/AmazonEKS_CNI_Policy"
    return f"aws iam attach-role-policy --role-name {role} --policy-arn {policy}"


def _lacking(inventory: Inventory, missing: Sequence[str]) -> str:
    family = inventory.family
    required = iam_actions.CNI_ACTIONS[family]
    if len(missing) == len(required):
        named = "AmazonEKS_CNI_Policy" if family == 4 else "the VPC CNI's IPv6 policy"
        return f"lacks the VPC CNI's IPv{family} permissions (none of the actions of {named})"
    return f"lacks the VPC CNI's IPv{family} permissions ({', '.join(missing)})"


def _own_role_findings(
    inventory: Inventory, credentials: cluster_members.AwsNodeCredentials
) -> list[Finding]:
    """aws-node's own role (IRSA, EKS Pod Identity) is the one that needs the CNI policy."""
    if credentials.role_arn is None:
        return []  # Pod Identity as its pods show it: the role is not named, nothing to check
    role = models.iam_name(credentials.role_arn)
    missing = _missing_actions(inventory, role)
    if not missing:
        return []
    if credentials.kind is cluster_members.CredentialKind.IRSA:
        how, shown, kind = (
            "IRSA",
            "ServiceAccount kube-system/aws-node: eks.amazonaws.com/role-arn = "
            f"{credentials.role_arn}",
            "an IRSA role",
        )
    else:
        how, shown, kind = (
            "EKS Pod Identity",
            f"EKS Pod Identity: {credentials.evidence}, role {credentials.role_arn}",
            "a Pod Identity role",
        )
    return [
        Finding(
            Check.CNI_POLICY,
            "aws-node",
            f"aws-node uses {how} role {role}, which {_lacking(inventory, missing)}: ipamd "
            "cannot start (`Timed out waiting for IPAM daemon`)",
            (shown, _role_evidence(inventory, role)),
            _cni_fix(inventory, role),
            coverage=MeshCoverage(None, f"a mesh attaches the policy to node roles, not to {kind}"),
            missing_actions=missing,
        )
    ]


def _cni_findings(inventory: Inventory, groups: Sequence[NodeGroup]) -> list[Finding]:
    if inventory.aws_node_credentials is not None:
        return _own_role_findings(inventory, inventory.aws_node_credentials)
    findings = []
    for group in groups:
        if group.kind in (GroupKind.FARGATE, GroupKind.POD_SECURITY_GROUPS):
            continue  # no aws-node runs on Fargate; a pod group has no role of its own
        lacking = {
            role: missing
            for role in group.role_names
            if (missing := _missing_actions(inventory, role))
        }
        without_profile = [
            node.name
            for node in inventory.nodes
            if node.group == group.name and not node.role_names
        ]
        if lacking:
            missing = tuple(dict.fromkeys(a for actions in lacking.values() for a in actions))
            findings.append(
                Finding(
                    Check.CNI_POLICY,
                    group.name,
                    f"node role {', '.join(lacking)} of {group.name} "
                    f"{_lacking(inventory, missing)} and aws-node has no IRSA role: ipamd "
                    "cannot start (`Timed out waiting for IPAM daemon`)",
                    (
                        *(_role_evidence(inventory, role) for role in lacking),
                        "ServiceAccount kube-system/aws-node has no eks.amazonaws.com/role-arn, "
                        "and aws-node gets no credentials from EKS Pod Identity",
                    ),
                    "; ".join(_cni_fix(inventory, role) for role in lacking),
                    coverage=_coverage(inventory, [group], attaches_cni=True),
                    missing_actions=missing,
                )
            )
        if without_profile:
            findings.append(
                Finding(
                    Check.CNI_POLICY,
                    group.name,
                    f"nodes of {group.name} run without an instance profile: aws-node has no "
                    "credentials at all",
                    tuple(
                        f"instance of node {name} has no IAM instance profile"
                        for name in without_profile
                    ),
                    "launch the nodes with an instance profile whose role has "
                    "AmazonEKS_CNI_Policy, or give aws-node an IRSA role or an EKS Pod Identity "
                    "association",
                    coverage=MeshCoverage(None, "a mesh cannot give an instance a profile"),
                )
            )
    return findings


# ---- quota ---------------------------------------------------------------------------------


def _quota_findings(inventory: Inventory, groups: Sequence[NodeGroup]) -> list[Finding]:
    """SGs whose inbound rules, per IP family, leave no room for what a full mesh of the node
    groups would add (one rule per node-group SG they do not admit yet), or little room."""
    rules_by_group: dict[str, list[IngressRule]] = defaultdict(list)
    for rule in inventory.rules:
        if not rule.egress:
            rules_by_group[rule.group_id].append(rule)
    all_sgs = sorted({sg for group in groups for sg in group.security_group_ids})
    quota = inventory.rules_per_security_group
    findings = []
    for group in groups:
        for sg in group.security_group_ids:
            counts = ingress.quota_counts(rules_by_group[sg], inventory.prefix_lists)
            admitted = {
                rule.source_group_id
                for rule in rules_by_group[sg]
                if rule.source_group_id and rule.protocol == ingress.ALL_PROTOCOLS
            }
            needed = len([source for source in all_sgs if source not in admitted])
            for family, used in sorted(counts.items()):
                # SG references count in both families, so the mesh needs room in both.
                if used + needed <= quota and used < QUOTA_WARNING_SHARE * quota:
                    continue
                findings.append(
                    Finding(
                        Check.QUOTA,
                        group.name,
                        f"{sg} holds {used} IPv{family} inbound rules of {quota}; "
                        f"a mesh of the node groups needs {needed} more",
                        (f"{sg}: {used} IPv{family} rules counted as the quota counts them",),
                        f"raise the quota 'Inbound or outbound rules per security group' or "
                        f"consolidate the rules of {sg}",
                        coverage=MeshCoverage(
                            None, "a mesh leaves an SG that would exceed its quota untouched"
                        ),
                    )
                )
    return findings


# ---- the whole diagnosis -------------------------------------------------------------------


def diagnose(inventory: Inventory) -> Report:
    groups = _groups(inventory)
    nodes_by_name = {node.name: node for node in inventory.nodes}
    senders = _senders(inventory)
    paths = _Paths(inventory)
    findings: list[Finding] = [
        Finding(
            Check.UNMAPPED,
            "unmanaged",
            f"node {name} could not be mapped to an instance: {why}",
            (why,),
            "check the node's spec.providerID and that the instance is in this region",
        )
        for name, why in sorted(inventory.unmapped_nodes.items())
    ]
    dns, dns_findings = _dns_findings(inventory, groups, nodes_by_name, senders, paths)
    matrix, pod_findings = _pod_traffic_findings(inventory, groups, senders, paths)
    findings += dns_findings + pod_findings
    findings += _cni_findings(inventory, groups)
    findings += _quota_findings(inventory, groups)
    return Report(
        region=inventory.region,
        groups=groups,
        dns=dns,
        matrix=matrix,
        findings=tuple(findings),
        aws_node_credentials=inventory.aws_node_credentials,
        outside_vpc=inventory.outside_vpc,
        not_live=inventory.not_live,
        ip_family=inventory.family,
    )


def suggest_mesh(report: Report, name: str = SUGGESTED_MESH_NAME) -> dict[str, Any] | None:
    """A NodeGroupMesh over every node group of the cluster: ASGs by name, the pods' security
    groups by their SecurityGroupPolicies, other groups (Karpenter, Fargate, unmanaged, pods'
    SGs no policy names) by their SGs. None when no node group is an ASG, since a mesh lists
    at least one."""
    asgs = sorted({g.asg_name for g in report.groups if g.asg_name})
    if not asgs:
        return None
    policies = sorted({p for g in report.groups for p in g.policies})
    extra = sorted(
        {
            sg
            for g in report.groups
            if g.asg_name is None and not g.policies
            for sg in g.security_group_ids
        }
    )
    spec: dict[str, Any] = {
        "region": report.region,
        "autoScalingGroups": {"names": asgs},
        "traffic": [{"protocol": "all"}],
    }
    if policies:
        spec["podSecurityGroups"] = {"policies": policies}
    if extra:
        spec["extraSecurityGroupIds"] = extra
    # With IRSA or Pod Identity the node roles need no CNI policy; aws-node's own role is not
    # the mesh's to change.
    spec["cniPolicy"] = {"attach": report.aws_node_credentials is None}
    return {
        "apiVersion": f"{models.API_GROUP}/{models.API_VERSION}",
        "kind": models.KIND,
        "metadata": {"name": name},
        "spec": spec,
    }

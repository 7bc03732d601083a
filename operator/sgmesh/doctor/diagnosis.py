"""The diagnosis of `sgmesh doctor`: from what the cluster and AWS hold, the findings and the fix.

`doctor` reads (Nodes and their instances, ENIs, SG rules, node roles, CoreDNS pods, aws-node's
own credentials — IRSA or EKS Pod Identity — installed meshes) into an `Inventory`; `diagnose`
turns it into findings — node groups that cannot reach CoreDNS on udp/53 and tcp/53, node
groups whose SGs do not admit each other's pod traffic, node roles (or aws-node's own role)
without the CNI policy, SGs close to their rules quota — each with its evidence, the fix, and
whether an installed mesh will make that fix at its next reconcile. `suggest_mesh` writes the
NodeGroupMesh that would fix what was found.

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
from sgmesh.engine import cluster_members, ingress, reachability
from sgmesh.engine.ingress import IngressRule
from sgmesh.engine.reachability import Endpoint, Flow

__all__ = [
    "CNI_POLICY_NAMES",
    "Check",
    "DnsServer",
    "Finding",
    "GroupKind",
    "Inventory",
    "MeshCoverage",
    "Node",
    "NodeGroup",
    "Report",
    "Status",
    "diagnose",
    "grants_cni_permissions",
    "suggest_mesh",
]

# AWS's managed policy, and the IPv6 policy its documentation has every account create under
# this name (there is no AWS-managed IPv6 equivalent).
CNI_POLICY_NAMES = frozenset({"AmazonEKS_CNI_Policy", "AmazonEKS_CNI_IPv6_Policy"})
# Below this share of the quota still free, an SG is reported even if the mesh would fit.
QUOTA_WARNING_SHARE = 0.9
DNS_FLOWS = (reachability.DNS_UDP, reachability.DNS_TCP)
SUGGESTED_MESH_NAME = "node-groups"
# Enough evidence to act on; the rest of a large node group says the same.
MAX_EVIDENCE_LINES = 6


class GroupKind(enum.StrEnum):
    AUTO_SCALING_GROUP = "AutoScalingGroup"
    KARPENTER = "Karpenter"
    UNMANAGED = "Unmanaged"


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
    """A CoreDNS pod: where it runs, and its IP when the kubelet has reported one."""

    pod: str
    node: str
    pod_ip: str | None = None


@dataclass(frozen=True)
class Inventory:
    region: str
    nodes: tuple[Node, ...] = ()
    unmapped_nodes: Mapping[str, str] = field(default_factory=dict)  # node → why
    dns_servers: tuple[DnsServer, ...] = ()
    rules: tuple[IngressRule, ...] = ()
    prefix_lists: Mapping[str, ingress.PrefixList] = field(default_factory=dict)
    role_policies: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # IRSA or EKS Pod Identity: the node roles then need no CNI policy, that role does.
    aws_node_credentials: cluster_members.AwsNodeCredentials | None = None
    meshes: tuple[models.NodeGroupMesh, ...] = ()
    asg_tags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    rules_per_security_group: int = 60

    @functools.cached_property
    def rules_by_group(self) -> Mapping[str, tuple[IngressRule, ...]]:
        """Inbound rules by the SG that holds them: each check reads only its ENI's rules."""
        index: dict[str, list[IngressRule]] = defaultdict(list)
        for rule in self.rules:
            index[rule.group_id].append(rule)
        return {group_id: tuple(rules) for group_id, rules in index.items()}


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check.value,
            "nodeGroup": self.node_group,
            "peer": self.peer,
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

    @property
    def healthy(self) -> bool:
        return not self.findings


def grants_cni_permissions(policy_arns: Iterable[str]) -> bool:
    return any(arn.rpartition("/")[2] in CNI_POLICY_NAMES for arn in policy_arns)


# ---- node groups ---------------------------------------------------------------------------


def _groups(inventory: Inventory) -> tuple[NodeGroup, ...]:
    by_name: dict[str, list[Node]] = defaultdict(list)
    for node in inventory.nodes:
        by_name[node.group].append(node)
    dns_nodes = {server.node for server in inventory.dns_servers}
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
    return tuple(groups)


# ---- mesh membership -----------------------------------------------------------------------


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


def _coverage(
    inventory: Inventory,
    groups: Sequence[NodeGroup],
    flows: Sequence[Flow] = (),
    attaches_cni: bool = False,
) -> MeshCoverage:
    """Which Enforce mesh holds every group in `groups` (and admits `flows`, or attaches the CNI
    policy); otherwise the reason none will."""
    if not inventory.meshes:
        return MeshCoverage(None, "no NodeGroupMesh is installed")
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


@dataclass(frozen=True)
class _Pair:
    verdicts: tuple[tuple[str, reachability.Verdict], ...]  # (what was checked, verdict)

    @property
    def status(self) -> Status:
        if all(v.admitted for _, v in self.verdicts):
            return Status.OK
        if any(v.admitted or v.partly for _, v in self.verdicts):
            return Status.PARTIAL
        return Status.BLOCKED


def _cluster_family(inventory: Inventory) -> int:
    """The IP family pods use: IPv6 when CoreDNS has an IPv6 address (an IPv6 cluster)."""
    return 6 if any(_family(server.pod_ip) == 6 for server in inventory.dns_servers) else 4


def _family(address: str | None) -> int:
    return 6 if address and ":" in address else 4


def _destination_interfaces(node: Node, pod_ip: str | None) -> tuple[Endpoint, ...]:
    """The ENI that holds the pod's IP; every ENI of the node when that is not known."""
    if pod_ip:
        address = ipaddress.ip_address(pod_ip)
        holding = tuple(
            interface
            for interface in node.interfaces
            if any(address in network for network in interface.networks)
        )
        if holding:
            return holding
    return node.interfaces


def _check_flows(
    inventory: Inventory,
    *,
    client: Node,
    server: Node,
    destinations: Sequence[Endpoint],
    flows: Sequence[Flow],
    family: int,
) -> list[tuple[str, reachability.Verdict]]:
    checked = []
    for source, destination in itertools.product(client.interfaces, destinations):
        for flow in flows:
            verdict = reachability.evaluate(
                flow,
                destination.security_group_ids,
                source,
                [
                    rule
                    for group_id in sorted(destination.security_group_ids)
                    for rule in inventory.rules_by_group.get(group_id, ())
                ],
                prefix_lists=inventory.prefix_lists,
                family=family,
            )
            label = (
                f"{flow.describe()} from {client.name} ({_sgs(source)}) "
                f"to {server.name} ({_sgs(destination)})"
            )
            checked.append((label, verdict))
    return checked


def _sgs(endpoint: Endpoint) -> str:
    return ",".join(sorted(endpoint.security_group_ids)) or "no SG"


def _evidence(checked: Iterable[tuple[str, reachability.Verdict]]) -> tuple[str, ...]:
    lines: dict[str, None] = {}
    for label, verdict in checked:
        if verdict.admitted:
            continue
        if verdict.partly:
            gaps = ", ".join(
                f"{low}-{high}" if low != high else str(low) for low, high in verdict.missing
            )
            admitted_by = "; ".join(rule.describe() for rule in verdict.rules)
            lines[f"{label}: only partly admitted ({admitted_by}); not ports {gaps}"] = None
        else:
            lines[f"{label}: no inbound rule admits it"] = None
    shown = list(lines)[:MAX_EVIDENCE_LINES]
    if len(lines) > len(shown):
        shown.append(f"… and {len(lines) - len(shown)} more of the same kind")
    return tuple(shown)


def _dns_findings(
    inventory: Inventory, groups: Sequence[NodeGroup], nodes_by_name: Mapping[str, Node]
) -> tuple[dict[str, Status], list[Finding]]:
    servers = [(s, nodes_by_name.get(s.node)) for s in inventory.dns_servers]
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
    for group in groups:
        checked: list[tuple[str, reachability.Verdict]] = []
        unknown: list[str] = []
        server_groups: dict[str, NodeGroup] = {}
        for server, server_node in servers:
            if server_node is None:
                unknown.append(f"CoreDNS pod {server.pod} runs on {server.node}, not mapped")
                continue
            server_groups[server_node.group] = by_group[server_node.group]
            destinations = _destination_interfaces(server_node, server.pod_ip)
            for client_name in group.nodes:
                client = nodes_by_name[client_name]
                if client.name == server_node.name:
                    continue  # pod to pod on one node never crosses an ENI
                checked.extend(
                    _check_flows(
                        inventory,
                        client=client,
                        server=server_node,
                        destinations=destinations,
                        flows=DNS_FLOWS,
                        family=_family(server.pod_ip),
                    )
                )
        status = _Pair(tuple(checked)).status if checked else Status.OK
        if unknown and status is Status.OK:
            status = Status.UNKNOWN
        statuses[group.name] = status
        if status in (Status.OK, Status.UNKNOWN):
            continue
        targets = sorted(server_groups)
        findings.append(
            Finding(
                Check.DNS,
                group.name,
                f"pods on {group.name} cannot reliably resolve names: CoreDNS on "
                f"{', '.join(targets)} does not admit udp/53 and tcp/53 from them",
                _evidence(checked),
                f"let the SGs of {', '.join(targets)} admit udp/53 and tcp/53 (or all traffic) "
                f"from the SGs of {group.name}",
                peer=", ".join(targets),
                coverage=_coverage(
                    inventory, [group, *server_groups.values()], flows=list(DNS_FLOWS)
                ),
            )
        )
    return statuses, findings


def _distinct_destinations(
    group: NodeGroup, nodes_by_name: Mapping[str, Node]
) -> list[tuple[Node, Endpoint]]:
    """One ENI (and its node) per distinct set of SGs in the group: what a receiving ENI
    admits depends on its SGs only, so the others would give the same verdicts."""
    found: dict[frozenset[str], tuple[Node, Endpoint]] = {}
    for name in group.nodes:
        node = nodes_by_name[name]
        for interface in node.interfaces:
            found.setdefault(interface.security_group_ids, (node, interface))
    return list(found.values())


def _required_flows(inventory: Inventory, pair: Sequence[NodeGroup]) -> tuple[Flow, ...]:
    """The traffic a mesh holding both groups asks for; all traffic when none does."""
    for mesh in inventory.meshes:
        if all(_member_of(mesh, group, inventory) for group in pair):
            return _mesh_flows(mesh)
    return (reachability.ALL_TRAFFIC,)


def _pod_traffic_findings(
    inventory: Inventory, groups: Sequence[NodeGroup], nodes_by_name: Mapping[str, Node]
) -> tuple[dict[str, dict[str, Status]], list[Finding]]:
    """The matrix, and one finding per destination group, required traffic and mesh coverage,
    listing every source group it does not admit (a short list, not one finding per pair)."""
    matrix: dict[str, dict[str, Status]] = {}
    blocked: dict[
        tuple[str, tuple[Flow, ...], MeshCoverage], list[tuple[NodeGroup, list[Any]]]
    ] = {}
    for source_group, destination_group in itertools.product(groups, groups):
        flows = _required_flows(inventory, [source_group, destination_group])
        checked: list[tuple[str, reachability.Verdict]] = []
        for client_name in source_group.nodes:
            for server, destination in _distinct_destinations(destination_group, nodes_by_name):
                # A node checked against itself stands for another node of its group.
                checked.extend(
                    _check_flows(
                        inventory,
                        client=nodes_by_name[client_name],
                        server=server,
                        destinations=[destination],
                        flows=flows,
                        family=_cluster_family(inventory),
                    )
                )
        status = _Pair(tuple(checked)).status
        matrix.setdefault(source_group.name, {})[destination_group.name] = status
        if status is not Status.OK:
            coverage = _coverage(inventory, [source_group, destination_group], flows=flows)
            key = (destination_group.name, flows, coverage)
            blocked.setdefault(key, []).append((source_group, checked))
    findings: list[Finding] = []
    for (destination_name, flows, coverage), sources in blocked.items():
        wanted = ", ".join(flow.describe() for flow in flows)
        names = ", ".join(group.name for group, _ in sources)
        findings.append(
            Finding(
                Check.POD_TRAFFIC,
                destination_name,
                f"{destination_name} does not admit {wanted} from pods on {names}",
                _evidence(line for _, checked in sources for line in checked),
                f"let the SGs of {destination_name} admit {wanted} from the SGs of {names}",
                peer=names,
                coverage=coverage,
            )
        )
    return matrix, findings


# ---- CNI permissions -----------------------------------------------------------------------


def _role_evidence(inventory: Inventory, role: str) -> str:
    policies = sorted(inventory.role_policies.get(role, frozenset()))
    return f"role {role} has: {', '.join(policies) or 'no managed policy'}"


def _own_role_findings(
    inventory: Inventory, credentials: cluster_members.AwsNodeCredentials
) -> list[Finding]:
    """aws-node's own role (IRSA, EKS Pod Identity) is the one that needs the CNI policy."""
    if credentials.role_arn is None:
        return []  # Pod Identity as its pods show it: the role is not named, nothing to check
    role = models.iam_name(credentials.role_arn)
    if grants_cni_permissions(inventory.role_policies.get(role, frozenset())):
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
            f"aws-node uses {how} role {role}, which lacks AmazonEKS_CNI_Policy: ipamd "
            "cannot start (`Timed out waiting for IPAM daemon`)",
            (shown, _role_evidence(inventory, role)),
            f"aws iam attach-role-policy --role-name {role} --policy-arn "
            f"arn:{models.partition_of(inventory.region)}:iam::aws:policy/AmazonEKS_CNI_Policy",
            coverage=MeshCoverage(None, f"a mesh attaches the policy to node roles, not to {kind}"),
        )
    ]


def _cni_findings(inventory: Inventory, groups: Sequence[NodeGroup]) -> list[Finding]:
    if inventory.aws_node_credentials is not None:
        return _own_role_findings(inventory, inventory.aws_node_credentials)
    findings = []
    policy = f"arn:{models.partition_of(inventory.region)}:iam::aws:policy/AmazonEKS_CNI_Policy"
    for group in groups:
        lacking = [
            role
            for role in group.role_names
            if not grants_cni_permissions(inventory.role_policies.get(role, frozenset()))
        ]
        without_profile = [
            node.name
            for node in inventory.nodes
            if node.group == group.name and not node.role_names
        ]
        if lacking:
            findings.append(
                Finding(
                    Check.CNI_POLICY,
                    group.name,
                    f"node role {', '.join(lacking)} of {group.name} lacks AmazonEKS_CNI_Policy "
                    "and aws-node has no IRSA role: ipamd cannot start "
                    "(`Timed out waiting for IPAM daemon`)",
                    (
                        *(_role_evidence(inventory, role) for role in lacking),
                        "ServiceAccount kube-system/aws-node has no eks.amazonaws.com/role-arn, "
                        "and aws-node gets no credentials from EKS Pod Identity",
                    ),
                    "; ".join(
                        f"aws iam attach-role-policy --role-name {role} --policy-arn {policy}"
                        for role in lacking
                    ),
                    coverage=_coverage(inventory, [group], attaches_cni=True),
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
    dns, dns_findings = _dns_findings(inventory, groups, nodes_by_name)
    matrix, pod_findings = _pod_traffic_findings(inventory, groups, nodes_by_name)
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
    )


def suggest_mesh(report: Report, name: str = SUGGESTED_MESH_NAME) -> dict[str, Any] | None:
    """A NodeGroupMesh over every node group of the cluster: ASGs by name, other groups
    (Karpenter, unmanaged) by their SGs. None when no node group is an ASG, since a mesh
    lists at least one."""
    asgs = sorted({g.asg_name for g in report.groups if g.asg_name})
    if not asgs:
        return None
    extra = sorted({sg for g in report.groups if g.asg_name is None for sg in g.security_group_ids})
    spec: dict[str, Any] = {
        "region": report.region,
        "autoScalingGroups": {"names": asgs},
        "traffic": [{"protocol": "all"}],
    }
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

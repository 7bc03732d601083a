"""`sgmesh doctor`: read the cluster and AWS as they are, and say why pods cannot network.

The readers are at the edges: Kubernetes through `sgmesh.kube.inventory` (the current
kubeconfig, else the in-cluster config), AWS through `sgmesh.aws.inventory` (the standard
environment). This module puts what they read together into a `diagnosis.Inventory` — which
Nodes run on EC2 instances, which on Fargate (mapped through their address to their ENI, in the
VPC of the cluster's instances), which are hybrid (outside the VPC) or gone (an instance
terminated or stopped); each pod with the ENI of its own when it has one (a branch ENI, named
by the SecurityGroupPolicies whose SGs it carries); the cluster's IP family from EKS — and the
findings come from the pure `diagnosis` module, the output from `render`.

It must never write, to AWS or to the cluster: every call here is a read, and
deploy/doctor-iam-policy.json lists exactly those reads. A failed read is never read as
"nothing there": it stops doctor with a message naming what failed and the permission to grant
(exit 3), except the answers that positively say "absent" (a 404 for the aws-node
ServiceAccount, the NodeGroupMesh or SecurityGroupPolicy CRD, an instance or ENI not in the
answer, EKS knowing no cluster of the name: the pods' addresses then tell the IP family), and
EKS unable to tell whether aws-node has a Pod Identity association (`sgmesh.aws.pod_identity`:
its pods then tell).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from sgmesh.api import models
from sgmesh.aws import client, errors, inventory, pod_identity
from sgmesh.doctor import diagnosis, render
from sgmesh.engine import cluster_members, planning, reachability
from sgmesh.kube import inventory as kube_inventory

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import InstanceTypeDef

__all__ = [
    "EXIT_ERROR",
    "EXIT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "DoctorError",
    "Options",
    "collect",
    "run",
]

EXIT_OK = 0
EXIT_FOUND = 1
# EX_USAGE of sysexits.h, as for every sgmesh command (2 is `plan`'s changes pending).
EXIT_USAGE = 64
EXIT_ERROR = 3

POLICY_FILE = "deploy/doctor-iam-policy.json"
ASG_TAG = "aws:autoscaling:groupName"
COMPUTE_TYPE_LABEL = "eks.amazonaws.com/compute-type"
FARGATE_PROFILE_LABEL = "eks.amazonaws.com/fargate-profile"
FARGATE_NODE_PREFIX = "fargate-ip-"
HYBRID_PROVIDER_PREFIX = "eks-hybrid://"
# What a Node whose instance is in one of these states is: not a live member.
NOT_LIVE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
KARPENTER_NODEPOOL = "karpenter.sh/nodepool"
KARPENTER_NODECLASS = "karpenter.k8s.aws/ec2nodeclass"
EKS_NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
# Where an instance names its EKS cluster: EKS managed node groups, Karpenter, and the tag the
# Kubernetes AWS cloud provider asks of every node (`kubernetes.io/cluster/<name>`).
CLUSTER_NAME_TAGS = ("eks:cluster-name", "eks:eks-cluster-name")
CLUSTER_TAG_PREFIX = "kubernetes.io/cluster/"


class DoctorError(Exception):
    """A read failed: the message says what and which permission is missing."""


@dataclass(frozen=True)
class Options:
    region: str
    rules_per_security_group: int = planning.DEFAULT_RULES_PER_SECURITY_GROUP


# ---- entry point ---------------------------------------------------------------------------


def run(options: Options, output: str, suggest: bool, out: TextIO = sys.stdout) -> int:
    """Diagnose and print; with `suggest`, text output puts the report on stderr and only the
    NodeGroupMesh on `out`. The exit code says whether anything was found."""
    try:
        inventory = collect(options)
    except DoctorError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    report = diagnosis.diagnose(inventory)
    suggestion = diagnosis.suggest_mesh(report) if suggest else None
    if output == "json":
        document = render.report_json(report)
        if suggest:
            document["suggestion"] = suggestion
        json.dump(document, out, indent=2)
        out.write("\n")
    elif suggest:
        # The manifest alone on stdout (`> mesh.yaml` is ready to apply), the report beside it.
        for line in render.render_text(report):
            print(line, file=sys.stderr)
        print(render.suggestion_text(report, suggestion), file=out, end="")
    else:
        for line in render.render_text(report):
            print(line, file=out)
    return EXIT_OK if report.healthy else EXIT_FOUND


# ---- reading -------------------------------------------------------------------------------


def collect(options: Options) -> diagnosis.Inventory:
    try:
        kube = kube_inventory.Reader()
        nodes = kube.nodes()
        pods = kube.pods()
        irsa = kube.aws_node_irsa()
        # Only without IRSA do they matter (and only when EKS cannot tell).
        aws_node_pods = kube.aws_node_pods() if irsa is None else []
        mesh_documents = kube.meshes()
        # Only pods with branch ENIs are named by them.
        policies = kube.security_group_policies() if any(p.branch_enis for p in pods) else []
    except kube_inventory.ReadError as error:
        raise DoctorError(str(error)) from None
    for pod in pods:
        if pod.branch_error:
            print(
                f"warning: pod {pod.namespace}/{pod.name}: {pod.branch_error}; judged on its "
                "node's ENI",
                file=sys.stderr,
            )
    meshes = []
    for document in mesh_documents:
        name = document.get("metadata", {}).get("name", "?")
        try:
            meshes.append(models.NodeGroupMesh.parse(document, f"NodeGroupMesh {name}"))
        except models.InvalidSpecError as error:
            # The API server validated it; a mesh the operator cannot read fixes nothing.
            print(f"warning: {error}", file=sys.stderr)

    try:
        clients = client.make_clients(options.region, max_attempts=4)
    except errors.ERRORS as error:
        raise DoctorError(_describe_aws_failure(errors.classify(error))) from None
    try:
        return _read_aws(
            clients,
            options,
            kube_nodes=nodes,
            kube_pods=pods,
            policies=policies,
            irsa=irsa,
            aws_node_pods=aws_node_pods,
            meshes=tuple(meshes),
        )
    except errors.ERRORS as error:
        raise DoctorError(_describe_aws_failure(clients.classify(error))) from None


def _describe_aws_failure(failure: errors.AwsFailure) -> str:
    if failure.kind is errors.ErrorKind.ACCESS_DENIED:
        if failure.operation == "credentials":
            return f"AWS: no usable credentials ({failure.message})"
        action = errors.iam_action(failure.operation, failure.service)
        return (
            f"AWS denied {failure.operation}: grant {action} to the "
            f"identity running doctor (all its reads: {POLICY_FILE}) ({failure.code})"
        )
    if failure.operation == "connection":
        return f"AWS could not be reached: {failure.message}"
    return f"AWS {failure.operation} failed with {failure.code}: {failure.message}"


def _instance_id(provider_id: str) -> str | None:
    """`aws:///us-east-1a/i-0123456789abcdef0` → `i-0123456789abcdef0`."""
    if not provider_id.startswith("aws://"):
        return None
    last = provider_id.rstrip("/").rpartition("/")[2]
    return last if last.startswith("i-") else None


def _node_group(
    node: kube_inventory.KubeNode, tags: Mapping[str, str]
) -> tuple[str, diagnosis.GroupKind, str | None]:
    asg = tags.get(ASG_TAG)
    if asg:
        return asg, diagnosis.GroupKind.AUTO_SCALING_GROUP, asg
    nodepool = node.labels.get(KARPENTER_NODEPOOL) or tags.get(KARPENTER_NODEPOOL)
    if nodepool:
        return f"karpenter/{nodepool}", diagnosis.GroupKind.KARPENTER, None
    nodeclass = node.labels.get(KARPENTER_NODECLASS) or tags.get(KARPENTER_NODECLASS)
    if nodeclass:
        return f"karpenter/{nodeclass}", diagnosis.GroupKind.KARPENTER, None
    managed = node.labels.get(EKS_NODEGROUP_LABEL)
    if managed:
        return f"eks-nodegroup/{managed}", diagnosis.GroupKind.UNMANAGED, None
    return "unmanaged", diagnosis.GroupKind.UNMANAGED, None


def _is_hybrid(node: kube_inventory.KubeNode) -> bool:
    return node.labels.get(COMPUTE_TYPE_LABEL) == "hybrid" or node.provider_id.startswith(
        HYBRID_PROVIDER_PREFIX
    )


def _is_fargate(node: kube_inventory.KubeNode) -> bool:
    return (
        node.labels.get(COMPUTE_TYPE_LABEL) == "fargate"
        or node.name.startswith(FARGATE_NODE_PREFIX)
        or f"/{FARGATE_NODE_PREFIX}" in node.provider_id
    )


def _policies_of(
    pod: kube_inventory.KubePod,
    interface: reachability.Endpoint,
    policies: Sequence[Mapping[str, Any]],
) -> tuple[str, ...]:
    """The SecurityGroupPolicies of the pod's namespace that gave its branch ENI its SGs: the
    VPC resource controller gives the ENI the SGs of every policy matching the pod, so those
    are the policies whose SGs the ENI carries."""
    found = []
    for policy in policies:
        metadata = policy.get("metadata", {})
        if metadata.get("namespace") != pod.namespace:
            continue
        groups = set(policy.get("spec", {}).get("securityGroups", {}).get("groupIds") or [])
        if groups and groups <= interface.security_group_ids:
            found.append(f"{pod.namespace}/{metadata.get('name', '?')}")
    return tuple(sorted(found))


def _pods(
    clients: client.AwsClients,
    kube_pods: Sequence[kube_inventory.KubePod],
    policies: Sequence[Mapping[str, Any]],
) -> tuple[list[diagnosis.Pod], list[diagnosis.DnsServer]]:
    """The pods with an address, each with its own branch ENI when it has one, and CoreDNS's."""
    branch_ids = sorted({eni.eni_id for pod in kube_pods for eni in pod.branch_enis})
    branches = inventory.read_interfaces(clients, branch_ids) if branch_ids else {}
    pods: list[diagnosis.Pod] = []
    servers: list[diagnosis.DnsServer] = []
    for pod in kube_pods:
        interface = None
        address = pod.ip
        if pod.branch_enis:
            # The first is the pod's own interface (eth0); more are for extra networks.
            eni = pod.branch_enis[0]
            found = branches.get(eni.eni_id)
            if found is None:
                print(
                    f"warning: pod {pod.namespace}/{pod.name}: its branch ENI {eni.eni_id} is "
                    "not in EC2 (the pod is going); not evaluated",
                    file=sys.stderr,
                )
                continue
            interface = dataclasses.replace(found, name=f"{pod.name}/{eni.eni_id}")
            address = address or eni.private_ip or eni.ipv6_address
        if pod.runs_dns:
            servers.append(diagnosis.DnsServer(pod.name, pod.node, address, interface))
        if address:
            pods.append(
                diagnosis.Pod(
                    pod.namespace,
                    pod.name,
                    pod.node,
                    address,
                    interface,
                    _policies_of(pod, interface, policies) if interface else (),
                )
            )
    return pods, sorted(servers, key=lambda server: server.pod)


def _fargate_nodes(
    clients: client.AwsClients,
    kube_nodes: Sequence[kube_inventory.KubeNode],
    unmapped: dict[str, str],
    vpc_id: str | None,
) -> list[diagnosis.Node]:
    """Fargate's nodes, each one pod on an ENI of its own, found by the node's address in the
    cluster's VPC `vpc_id` (None: unknown, and an address several VPCs hold maps to none)."""
    addresses = sorted({a for node in kube_nodes for a in node.addresses if ":" not in a})
    holding, shared = (
        inventory.read_interfaces_by_address(clients, addresses, vpc_id) if addresses else ({}, {})
    )
    nodes = []
    for node in kube_nodes:
        interfaces = tuple(
            dataclasses.replace(holding[a], name=f"{node.name}/{holding[a].name.partition('/')[2]}")
            for a in node.addresses
            if a in holding
        )
        reused = [f"{a} in {', '.join(shared[a])}" for a in node.addresses if a in shared]
        if not interfaces and reused:
            unmapped[node.name] = (
                f"Fargate node: ENIs of several VPCs hold its address ({'; '.join(reused)}), "
                "and no instance of the cluster tells which VPC is the cluster's"
            )
            continue
        if not interfaces:
            shown = ", ".join(node.addresses) or "none"
            unmapped[node.name] = f"Fargate node: no ENI holds its address ({shown})"
            continue
        profile = node.labels.get(FARGATE_PROFILE_LABEL)
        nodes.append(
            diagnosis.Node(
                name=node.name,
                instance_id="",
                group=f"fargate/{profile}" if profile else "fargate",
                group_kind=diagnosis.GroupKind.FARGATE,
                interfaces=interfaces,
            )
        )
    return nodes


def _running_instances(
    clients: client.AwsClients,
    kube_nodes: Sequence[kube_inventory.KubeNode],
    unmapped: dict[str, str],
    outside: dict[str, str],
    not_live: dict[str, str],
) -> list[tuple[kube_inventory.KubeNode, InstanceTypeDef]]:
    """The Nodes whose instance runs, with it; the others go to `unmapped` (no instance found),
    `outside` (hybrid nodes) or `not_live` (an instance that no longer runs). Fargate's nodes
    are neither: `_fargate_nodes` maps them."""
    ids: dict[str, str] = {}
    for node in kube_nodes:
        if _is_hybrid(node):
            outside[node.name] = "EKS hybrid node"
            continue
        if _is_fargate(node):
            continue
        instance_id = _instance_id(node.provider_id)
        if instance_id is None:
            unmapped[node.name] = f"spec.providerID {node.provider_id!r} names no EC2 instance"
        else:
            ids[node.name] = instance_id
    instances = inventory.read_instances(clients, list(ids.values())) if ids else {}

    mapped: list[tuple[kube_inventory.KubeNode, InstanceTypeDef]] = []
    for node in kube_nodes:
        if node.name not in ids:
            continue
        instance = instances.get(ids[node.name])
        if instance is None:
            unmapped[node.name] = f"instance {ids[node.name]} is not in region {clients.region}"
            continue
        state = instance.get("State", {}).get("Name", "")
        if state in NOT_LIVE_STATES:
            not_live[node.name] = f"instance {ids[node.name]} is {state}"
            continue
        mapped.append((node, instance))
    return mapped


def _read_aws(
    clients: client.AwsClients,
    options: Options,
    *,
    kube_nodes: Sequence[kube_inventory.KubeNode],
    kube_pods: Sequence[kube_inventory.KubePod],
    policies: Sequence[Mapping[str, Any]],
    irsa: cluster_members.AwsNodeCredentials | None,
    aws_node_pods: Sequence[Mapping[str, object]],
    meshes: tuple[models.NodeGroupMesh, ...],
) -> diagnosis.Inventory:
    unmapped: dict[str, str] = {}
    outside: dict[str, str] = {}
    not_live: dict[str, str] = {}
    mapped = _running_instances(clients, kube_nodes, unmapped, outside, not_live)
    profiles = {
        node.name: models.iam_name(instance["IamInstanceProfile"]["Arn"])
        for node, instance in mapped
        if "Arn" in instance.get("IamInstanceProfile", {})
    }
    roles_of_profile = inventory.read_profiles(clients, list(profiles.values()))
    nodes = []
    for node, instance in mapped:
        tags = {t["Key"]: t.get("Value", "") for t in instance.get("Tags", []) if "Key" in t}
        group, kind, asg = _node_group(node, tags)
        profile = profiles.get(node.name)
        nodes.append(
            diagnosis.Node(
                name=node.name,
                instance_id=instance["InstanceId"],
                group=group,
                group_kind=kind,
                interfaces=inventory.interfaces(instance, node.name),
                asg_name=asg,
                instance_profile=profile,
                role_names=roles_of_profile.get(profile, ()) if profile else (),
                vpc_id=instance.get("VpcId"),
                node_class=node.labels.get(KARPENTER_NODECLASS) or tags.get(KARPENTER_NODECLASS),
            )
        )
    fargate = [n for n in kube_nodes if _is_fargate(n) and not _is_hybrid(n)]
    if fargate:
        # The cluster's VPC, when its instances all run in one.
        vpcs = {instance["VpcId"] for _, instance in mapped if "VpcId" in instance}
        nodes += _fargate_nodes(clients, fargate, unmapped, vpcs.pop() if len(vpcs) == 1 else None)
    pods, dns_servers = _pods(clients, kube_pods, policies)

    group_ids = sorted(
        {sg for node in nodes for sg in node.security_group_ids}
        | {sg for pod in pods if pod.interface for sg in pod.interface.security_group_ids}
    )
    rules = inventory.read_rules(clients, group_ids) if group_ids else ()
    prefix_list_ids = sorted({rule.prefix_list_id for rule in rules if rule.prefix_list_id})
    prefix_lists = inventory.read_prefix_lists(clients, prefix_list_ids)
    cluster = _cluster_name([instance for _, instance in mapped])
    credentials = irsa or _pod_identity(clients, cluster, aws_node_pods)
    role_names = {role for node in nodes for role in node.role_names}
    if credentials is not None:
        # aws-node's own role needs the CNI policy, the node roles do not.
        role_names = {models.iam_name(credentials.role_arn)} if credentials.role_arn else set()
    role_policies = inventory.read_role_policies(clients, sorted(role_names))
    documents = inventory.read_policy_documents(
        clients, sorted({arn for arns in role_policies.values() for arn in arns})
    )
    inline = inventory.read_inline_policies(clients, sorted(role_names))
    family = inventory.read_cluster_family(clients, cluster) if cluster else None
    asg_names = sorted({node.asg_name for node in nodes if node.asg_name})
    # ASG tags matter only to match a mesh's selectors.
    asg_tags = inventory.read_asg_tags(clients, asg_names) if meshes and asg_names else {}

    return diagnosis.Inventory(
        region=clients.region,
        nodes=tuple(nodes),
        pods=tuple(pods),
        unmapped_nodes=unmapped,
        outside_vpc=outside,
        not_live=not_live,
        dns_servers=tuple(dns_servers),
        rules=rules,
        prefix_lists=prefix_lists,
        role_policies=role_policies,
        policy_documents=documents,
        inline_policies=inline,
        ip_family=family,
        aws_node_credentials=credentials,
        meshes=meshes,
        asg_tags=asg_tags,
        rules_per_security_group=options.rules_per_security_group,
    )


def _cluster_name(instances: Sequence[InstanceTypeDef]) -> str | None:
    """The one EKS cluster the nodes' instances name in their tags; None when they name none,
    or several."""
    names: set[str] = set()
    for instance in instances:
        for tag in instance.get("Tags", []):
            key, value = tag.get("Key", ""), tag.get("Value", "")
            if key in CLUSTER_NAME_TAGS and value:
                names.add(value)
            elif key.startswith(CLUSTER_TAG_PREFIX) and key != CLUSTER_TAG_PREFIX:
                names.add(key.removeprefix(CLUSTER_TAG_PREFIX))
    return names.pop() if len(names) == 1 else None


def _pod_identity(
    clients: client.AwsClients, cluster: str | None, pods: Sequence[Mapping[str, object]]
) -> cluster_members.AwsNodeCredentials | None:
    """EKS Pod Identity for aws-node, in the operator's order
    (`sgmesh.kube.sources.read_aws_node_credentials`): EKS's association, with its role so that
    the role's policies can be checked; when EKS cannot tell, aws-node's pods (no role)."""
    why = "the nodes' instances name no one EKS cluster in their tags"
    if cluster is not None:
        lookup = pod_identity.find_association(clients, cluster)
        if lookup.answered:
            found = lookup.credentials
            if found is None or found.association_id is None:
                return found
            role_arn = inventory.read_association_role(clients, cluster, found.association_id)
            return dataclasses.replace(found, role_arn=role_arn)
        why = lookup.why
    return cluster_members.pod_identity_of_pods(pods, why)


# ---- output --------------------------------------------------------------------------------

"""`sgmesh doctor`: read the cluster and AWS as they are, and say why pods cannot network.

The readers live here, at the edge: Kubernetes (Nodes, CoreDNS pods, the aws-node
ServiceAccount, NodeGroupMeshes when the CRD is installed) through the current kubeconfig or
the in-cluster config, and AWS (DescribeInstances, SG rules, prefix lists, instance profiles,
node roles' policies, ASG tags) through the standard environment. What they read becomes a
`diagnosis.Inventory`; the findings come from the pure `diagnosis` module.

It must never write, to AWS or to the cluster: every call here is a read, and
deploy/doctor-iam-policy.json lists exactly those reads. A failed read is never read as
"nothing there": it stops doctor with a message naming what failed and the permission to grant
(exit 3), except the answers that positively say "absent" (a 404 for the aws-node
ServiceAccount or the NodeGroupMesh CRD, an instance not in the DescribeInstances answer).
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import botocore.exceptions
import yaml

from sgmesh import aws, chunking, diagnosis, models, planning, reachability

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import InstanceTypeDef, SecurityGroupRuleTypeDef

__all__ = [
    "EXIT_ERROR",
    "EXIT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "DoctorError",
    "Options",
    "collect",
    "render_text",
    "report_json",
    "run",
]

EXIT_OK = 0
EXIT_FOUND = 1
EXIT_USAGE = 2
EXIT_ERROR = 3

POLICY_FILE = "deploy/doctor-iam-policy.json"
RBAC_FILE = "deploy/doctor-rbac.yaml"
DNS_NAMESPACE = "kube-system"
DNS_LABEL_SELECTOR = "k8s-app=kube-dns"
AWS_NODE_SERVICE_ACCOUNT = "aws-node"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
ASG_TAG = "aws:autoscaling:groupName"
KARPENTER_NODEPOOL = "karpenter.sh/nodepool"
KARPENTER_NODECLASS = "karpenter.k8s.aws/ec2nodeclass"
EKS_NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
FILTER_VALUES_PER_CALL = 200
ASG_NAMES_PER_CALL = 100

_KUBE_VERBS = {
    "list_node": "list nodes",
    "list_namespaced_pod": "list pods in kube-system",
    "read_namespaced_service_account": "get serviceaccounts in kube-system",
    "list_cluster_custom_object": "list nodegroupmeshes.sgmesh.io",
}


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
        document = report_json(report)
        if suggest:
            document["suggestion"] = suggestion
        json.dump(document, out, indent=2)
        out.write("\n")
    elif suggest:
        # The manifest alone on stdout (`> mesh.yaml` is ready to apply), the report beside it.
        for line in render_text(report):
            print(line, file=sys.stderr)
        print(_suggestion_text(report, suggestion), file=out, end="")
    else:
        for line in render_text(report):
            print(line, file=out)
    return EXIT_OK if report.healthy else EXIT_FOUND


def _suggestion_text(report: diagnosis.Report, suggestion: dict[str, Any] | None) -> str:
    if suggestion is None:
        return "# no NodeGroupMesh to suggest: no node group is an Auto Scaling Group\n"
    head = (
        "# a NodeGroupMesh that fixes what was found: kubectl apply -f, or commit it\n"
        if not report.healthy
        else "# nothing to fix; this NodeGroupMesh keeps the node groups as they are\n"
    )
    return head + yaml.safe_dump(suggestion, sort_keys=False)


# ---- reading -------------------------------------------------------------------------------


def collect(options: Options) -> diagnosis.Inventory:
    kube = _KubeReader()
    nodes = kube.nodes()
    dns_pods = kube.dns_pods()
    irsa_role = kube.aws_node_role_arn()
    mesh_documents = kube.meshes()
    meshes = []
    for document in mesh_documents:
        name = document.get("metadata", {}).get("name", "?")
        try:
            meshes.append(models.NodeGroupMesh.parse(document, f"NodeGroupMesh {name}"))
        except models.InvalidSpecError as error:
            # The API server validated it; a mesh the operator cannot read fixes nothing.
            print(f"warning: {error}", file=sys.stderr)

    try:
        clients = aws.make_clients(options.region, max_attempts=4)
    except aws.ERRORS as error:
        raise DoctorError(_describe_aws_failure(aws.classify(error))) from None
    try:
        return _read_aws(
            clients,
            options,
            kube_nodes=nodes,
            dns_pods=dns_pods,
            irsa_role_arn=irsa_role,
            meshes=tuple(meshes),
        )
    except aws.ERRORS as error:
        raise DoctorError(_describe_aws_failure(clients.classify(error))) from None


def _describe_aws_failure(failure: aws.AwsFailure) -> str:
    if failure.kind is aws.ErrorKind.ACCESS_DENIED:
        if failure.operation == "credentials":
            return f"AWS: no usable credentials ({failure.message})"
        action = aws.iam_action(failure.operation, failure.service)
        return (
            f"AWS denied {failure.operation}: grant {action} to the "
            f"identity running doctor (all its reads: {POLICY_FILE}) ({failure.code})"
        )
    if failure.operation == "connection":
        return f"AWS could not be reached: {failure.message}"
    return f"AWS {failure.operation} failed with {failure.code}: {failure.message}"


@dataclass(frozen=True)
class _KubeNode:
    name: str
    provider_id: str
    labels: Mapping[str, str]


class _KubeReader:
    def __init__(self) -> None:
        import kubernetes  # noqa: PLC0415 - the Kubernetes client is loaded only for doctor
        import urllib3  # noqa: PLC0415 - the Kubernetes client's transport

        self._kubernetes = kubernetes
        self._urllib3 = urllib3
        try:
            try:
                kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        except (kubernetes.config.ConfigException, OSError) as error:
            raise DoctorError(
                f"Kubernetes: no configuration found (kubeconfig or in-cluster): {error}"
            ) from None
        client = kubernetes.client.ApiClient()
        self._core = kubernetes.client.CoreV1Api(client)
        self._custom = kubernetes.client.CustomObjectsApi(client)
        self._server = client.configuration.host

    def _call(self, method: Any, *args: Any, absent_ok: bool = False, **kwargs: Any) -> Any:
        kubernetes = self._kubernetes
        what = _KUBE_VERBS.get(method.__name__, method.__name__)
        try:
            return method(*args, _request_timeout=30, **kwargs)
        except kubernetes.client.ApiException as error:
            if error.status == 404 and absent_ok:
                return None
            if error.status in (401, 403):
                raise DoctorError(
                    f"Kubernetes API refused to {what} ({error.status} {error.reason}): grant "
                    f"the identity running doctor RBAC to {what} (all its reads: {RBAC_FILE})"
                ) from None
            raise DoctorError(
                f"Kubernetes API failed to {what}: {error.status} {error.reason}"
            ) from None
        except (self._urllib3.exceptions.HTTPError, OSError) as error:
            # The Kubernetes client speaks through urllib3: refused connections, TLS and
            # timeouts arrive as its errors (retries exhausted) or as OSErrors.
            raise DoctorError(
                f"Kubernetes API server {self._server} could not be reached to {what}: {error}"
            ) from None

    def nodes(self) -> list[_KubeNode]:
        answer = self._call(self._core.list_node)
        return [
            _KubeNode(
                name=item.metadata.name,
                provider_id=(item.spec.provider_id or "") if item.spec else "",
                labels=dict(item.metadata.labels or {}),
            )
            for item in answer.items
        ]

    def dns_pods(self) -> list[diagnosis.DnsServer]:
        answer = self._call(
            self._core.list_namespaced_pod, DNS_NAMESPACE, label_selector=DNS_LABEL_SELECTOR
        )
        servers = []
        for pod in answer.items:
            node = pod.spec.node_name if pod.spec else None
            if not node:
                continue  # not scheduled: it serves nobody yet
            pod_ip = pod.status.pod_ip if pod.status else None
            servers.append(diagnosis.DnsServer(pod.metadata.name, node, pod_ip or None))
        return sorted(servers, key=lambda server: server.pod)

    def aws_node_role_arn(self) -> str | None:
        account = self._call(
            self._core.read_namespaced_service_account,
            AWS_NODE_SERVICE_ACCOUNT,
            DNS_NAMESPACE,
            absent_ok=True,
        )
        if account is None:
            return None
        role: str | None = (account.metadata.annotations or {}).get(IRSA_ANNOTATION) or None
        return role

    def meshes(self) -> list[dict[str, Any]]:
        answer = self._call(
            self._custom.list_cluster_custom_object,
            models.API_GROUP,
            models.API_VERSION,
            "nodegroupmeshes",
            absent_ok=True,  # the CRD is not installed: no mesh
        )
        return list(answer.get("items", [])) if answer else []


def _instance_id(provider_id: str) -> str | None:
    """`aws:///us-east-1a/i-0123456789abcdef0` → `i-0123456789abcdef0`."""
    if not provider_id.startswith("aws://"):
        return None
    last = provider_id.rstrip("/").rpartition("/")[2]
    return last if last.startswith("i-") else None


def _read_instances(clients: aws.AwsClients, ids: Sequence[str]) -> dict[str, InstanceTypeDef]:
    """Instances by id. An `instance-id` filter, unlike `InstanceIds`, answers for those that
    exist instead of failing the call when one is gone."""
    found: dict[str, InstanceTypeDef] = {}
    paginator = clients.ec2.get_paginator("describe_instances")
    for chunk in chunking.chunks(sorted(set(ids)), FILTER_VALUES_PER_CALL):
        for page in paginator.paginate(Filters=[{"Name": "instance-id", "Values": chunk}]):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    if "InstanceId" in instance:
                        found[instance["InstanceId"]] = instance
    return found


def _interfaces(instance: InstanceTypeDef, name: str) -> tuple[reachability.Endpoint, ...]:
    endpoints = []
    for interface in instance.get("NetworkInterfaces", []):
        networks: set[reachability.Network] = set()
        for private in interface.get("PrivateIpAddresses", []):
            if "PrivateIpAddress" in private:
                networks.add(ipaddress.ip_network(private["PrivateIpAddress"]))
        for address in interface.get("Ipv6Addresses", []):
            if "Ipv6Address" in address:
                networks.add(ipaddress.ip_network(address["Ipv6Address"]))
        # Prefix delegation: pods take their addresses from these prefixes.
        for prefix in interface.get("Ipv4Prefixes", []):
            if "Ipv4Prefix" in prefix:
                networks.add(ipaddress.ip_network(prefix["Ipv4Prefix"]))
        for prefix6 in interface.get("Ipv6Prefixes", []):
            if "Ipv6Prefix" in prefix6:
                networks.add(ipaddress.ip_network(prefix6["Ipv6Prefix"]))
        groups = frozenset(g["GroupId"] for g in interface.get("Groups", []) if "GroupId" in g)
        eni = interface.get("NetworkInterfaceId", "?")
        endpoints.append(reachability.Endpoint(groups, frozenset(networks), f"{name}/{eni}"))
    return tuple(endpoints)


def _node_group(
    node: _KubeNode, tags: Mapping[str, str]
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


def _read_rules(clients: aws.AwsClients, group_ids: Sequence[str]) -> tuple[reachability.Rule, ...]:
    rules: list[reachability.Rule] = []
    paginator = clients.ec2.get_paginator("describe_security_group_rules")
    for chunk in chunking.chunks(sorted(set(group_ids)), FILTER_VALUES_PER_CALL):
        for page in paginator.paginate(
            Filters=[{"Name": "group-id", "Values": chunk}],
            PaginationConfig={"PageSize": 1000},
        ):
            for raw in page.get("SecurityGroupRules", []):
                if not raw.get("IsEgress") and "GroupId" in raw:
                    rules.append(_rule(raw))
    return tuple(rules)


def _rule(raw: SecurityGroupRuleTypeDef) -> reachability.Rule:
    cidr = raw.get("CidrIpv4") or raw.get("CidrIpv6")
    return reachability.Rule(
        group_id=raw["GroupId"],
        protocol=str(raw.get("IpProtocol", reachability.ALL_PROTOCOLS)),
        from_port=raw.get("FromPort", -1),
        to_port=raw.get("ToPort", -1),
        source_group_id=raw.get("ReferencedGroupInfo", {}).get("GroupId") or None,
        cidr=ipaddress.ip_network(cidr, strict=False) if cidr else None,
        prefix_list_id=raw.get("PrefixListId") or None,
        rule_id=raw.get("SecurityGroupRuleId", ""),
    )


def _read_prefix_lists(
    clients: aws.AwsClients, ids: Sequence[str]
) -> tuple[dict[str, tuple[reachability.Network, ...]], dict[str, tuple[int, int]]]:
    entries: dict[str, tuple[reachability.Network, ...]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    if not ids:
        return entries, sizes
    described = clients.ec2.get_paginator("describe_managed_prefix_lists")
    for page in described.paginate(PrefixListIds=sorted(set(ids))):
        for prefix_list in page.get("PrefixLists", []):
            family = 6 if prefix_list.get("AddressFamily", "IPv4").lower() == "ipv6" else 4
            if "PrefixListId" in prefix_list:
                sizes[prefix_list["PrefixListId"]] = (family, prefix_list.get("MaxEntries", 1))
    listed = clients.ec2.get_paginator("get_managed_prefix_list_entries")
    for prefix_list_id in sorted(set(ids)):
        networks: list[reachability.Network] = []
        for entries_page in listed.paginate(PrefixListId=prefix_list_id):
            networks.extend(
                ipaddress.ip_network(entry["Cidr"], strict=False)
                for entry in entries_page.get("Entries", [])
                if "Cidr" in entry
            )
        entries[prefix_list_id] = tuple(networks)
    return entries, sizes


def _read_profiles(clients: aws.AwsClients, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    roles: dict[str, tuple[str, ...]] = {}
    for name in sorted(set(names)):
        try:
            profile = clients.iam.get_instance_profile(InstanceProfileName=name)
        except botocore.exceptions.ClientError as error:
            if aws.error_code(error) != "NoSuchEntity":
                raise
            roles[name] = ()  # IAM says it is gone: the instance runs without a role
            continue
        roles[name] = tuple(role["RoleName"] for role in profile["InstanceProfile"]["Roles"])
    return roles


def _read_role_policies(clients: aws.AwsClients, names: Sequence[str]) -> dict[str, frozenset[str]]:
    policies: dict[str, frozenset[str]] = {}
    paginator = clients.iam.get_paginator("list_attached_role_policies")
    for name in sorted(set(names)):
        arns: set[str] = set()
        for page in paginator.paginate(RoleName=name):
            arns.update(
                p["PolicyArn"] for p in page.get("AttachedPolicies", []) if "PolicyArn" in p
            )
        policies[name] = frozenset(arns)
    return policies


def _read_asg_tags(clients: aws.AwsClients, names: Sequence[str]) -> dict[str, dict[str, str]]:
    tags: dict[str, dict[str, str]] = {}
    paginator = clients.autoscaling.get_paginator("describe_auto_scaling_groups")
    for chunk in chunking.chunks(sorted(set(names)), ASG_NAMES_PER_CALL):
        for page in paginator.paginate(
            AutoScalingGroupNames=chunk, PaginationConfig={"PageSize": ASG_NAMES_PER_CALL}
        ):
            for group in page.get("AutoScalingGroups", []):
                tags[group["AutoScalingGroupName"]] = {
                    tag["Key"]: tag.get("Value", "")
                    for tag in group.get("Tags", [])
                    if "Key" in tag
                }
    return tags


def _read_aws(
    clients: aws.AwsClients,
    options: Options,
    *,
    kube_nodes: Sequence[_KubeNode],
    dns_pods: Sequence[diagnosis.DnsServer],
    irsa_role_arn: str | None,
    meshes: tuple[models.NodeGroupMesh, ...],
) -> diagnosis.Inventory:
    unmapped: dict[str, str] = {}
    ids: dict[str, str] = {}
    for node in kube_nodes:
        instance_id = _instance_id(node.provider_id)
        if instance_id is None:
            unmapped[node.name] = f"spec.providerID {node.provider_id!r} names no EC2 instance"
        else:
            ids[node.name] = instance_id
    instances = _read_instances(clients, list(ids.values())) if ids else {}

    mapped: list[tuple[_KubeNode, InstanceTypeDef]] = []
    for node in kube_nodes:
        if node.name not in ids:
            continue
        instance = instances.get(ids[node.name])
        if instance is None:
            unmapped[node.name] = f"instance {ids[node.name]} is not in region {clients.region}"
            continue
        mapped.append((node, instance))

    profiles = {
        node.name: models.iam_name(instance["IamInstanceProfile"]["Arn"])
        for node, instance in mapped
        if "Arn" in instance.get("IamInstanceProfile", {})
    }
    roles_of_profile = _read_profiles(clients, list(profiles.values()))
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
                interfaces=_interfaces(instance, node.name),
                asg_name=asg,
                instance_profile=profile,
                role_names=roles_of_profile.get(profile, ()) if profile else (),
                vpc_id=instance.get("VpcId"),
                node_class=node.labels.get(KARPENTER_NODECLASS) or tags.get(KARPENTER_NODECLASS),
            )
        )

    group_ids = sorted({sg for node in nodes for sg in node.security_group_ids})
    rules = _read_rules(clients, group_ids) if group_ids else ()
    prefix_list_ids = sorted({rule.prefix_list_id for rule in rules if rule.prefix_list_id})
    prefix_lists, prefix_list_sizes = _read_prefix_lists(clients, prefix_list_ids)
    role_names = {role for node in nodes for role in node.role_names}
    if irsa_role_arn:
        role_names = {irsa_role_arn.rpartition("/")[2]}
    role_policies = _read_role_policies(clients, sorted(role_names))
    asg_names = sorted({node.asg_name for node in nodes if node.asg_name})
    # ASG tags matter only to match a mesh's selectors.
    asg_tags = _read_asg_tags(clients, asg_names) if meshes and asg_names else {}

    return diagnosis.Inventory(
        region=clients.region,
        nodes=tuple(nodes),
        unmapped_nodes=unmapped,
        dns_servers=tuple(dns_pods),
        rules=rules,
        prefix_lists=prefix_lists,
        prefix_list_sizes=prefix_list_sizes,
        role_policies=role_policies,
        aws_node_role_arn=irsa_role_arn,
        meshes=meshes,
        asg_tags=asg_tags,
        rules_per_security_group=options.rules_per_security_group,
    )


# ---- output --------------------------------------------------------------------------------


def report_json(report: diagnosis.Report) -> dict[str, Any]:
    return {
        "region": report.region,
        "healthy": report.healthy,
        "nodeGroups": [
            {
                "name": group.name,
                "kind": group.kind.value,
                "autoScalingGroup": group.asg_name,
                "nodes": list(group.nodes),
                "securityGroupIds": list(group.security_group_ids),
                "roleNames": list(group.role_names),
                "runsCoreDns": group.runs_dns,
            }
            for group in report.groups
        ],
        "dns": {name: status.value for name, status in report.dns.items()},
        "podTraffic": {
            source: {target: status.value for target, status in row.items()}
            for source, row in report.matrix.items()
        },
        "awsNodeRoleArn": report.aws_node_role_arn,
        "findings": [finding.as_dict() for finding in report.findings],
    }


_MARKS = {
    diagnosis.Status.OK: "ok",
    diagnosis.Status.PARTIAL: "partial",
    diagnosis.Status.BLOCKED: "BLOCKED",
    diagnosis.Status.UNKNOWN: "?",
}


def render_text(report: diagnosis.Report) -> Iterator[str]:
    groups = report.groups
    yield f"sgmesh doctor: {len(groups)} node groups in {report.region}"
    for group in groups:
        dns = ", runs CoreDNS" if group.runs_dns else ""
        yield (
            f"  {group.name} ({group.kind.value}{dns}): "
            f"{len(group.nodes)} node{'' if len(group.nodes) == 1 else 's'}; "
            f"SGs {','.join(group.security_group_ids) or '-'}; "
            f"roles {','.join(group.role_names) or '-'}"
        )
    if groups:
        names = [group.name for group in groups]
        headers = ["from \\ to", "DNS", *names]
        rows = [
            [
                source,
                _MARKS[report.dns.get(source, diagnosis.Status.UNKNOWN)],
                *(_MARKS[report.matrix[source][target]] for target in names),
            ]
            for source in names
        ]
        widths = [max(len(row[i]) for row in [headers, *rows]) + 2 for i in range(len(headers))]
        yield ""
        yield "reachability (rows: pods on, columns: DNS to CoreDNS udp+tcp/53, pods on)"
        for row in [headers, *rows]:
            yield "".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
    yield ""
    if report.healthy:
        yield "no problem found"
        return
    yield f"{len(report.findings)} problems found:"
    for number, finding in enumerate(report.findings, start=1):
        yield f"{number}. [{finding.check.value}] {finding.summary}"
        for line in finding.evidence:
            yield f"     evidence: {line}"
        yield f"     fix: {finding.fix}"
        if finding.coverage is not None:
            verdict = "will fix" if finding.coverage.fixed else "cannot fix"
            yield f"     mesh: {verdict}: {finding.coverage.reason}"

"""doctor's reads of AWS: instances and their ENIs, the ENIs pods have of their own (branch
ENIs, Fargate's), SG rules of both directions, prefix lists, instance profiles, node roles'
policies and their documents (managed and inline), the cluster's IP family, ASG tags, the role
of aws-node's Pod Identity association (doctor also asks `sgmesh.aws.pod_identity`, as the
operator does). Read-only; deploy/doctor-iam-policy.json lists exactly these.

"Absent" is concluded only from a successful answer (an instance or an ENI not in the answer),
`NoSuchEntity` for one named instance profile, or EKS answering that it has no cluster of the
name; every other error propagates.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from sgmesh.aws import client, errors, identity, security_groups
from sgmesh.engine import chunking, ingress, reachability

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import FilterTypeDef, InstanceTypeDef

__all__ = [
    "endpoint",
    "interfaces",
    "read_asg_tags",
    "read_association_role",
    "read_cluster_family",
    "read_inline_policies",
    "read_instances",
    "read_interfaces",
    "read_interfaces_by_address",
    "read_policy_documents",
    "read_prefix_lists",
    "read_profiles",
    "read_role_policies",
    "read_rules",
]

FILTER_VALUES_PER_CALL = 200
ASG_NAMES_PER_CALL = 100


def read_instances(clients: client.AwsClients, ids: Sequence[str]) -> dict[str, InstanceTypeDef]:
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


def endpoint(interface: Mapping[str, Any], name: str) -> reachability.Endpoint:
    """An ENI as DescribeInstances or DescribeNetworkInterfaces describes it (the same shape):
    its SGs, and its addresses and delegated prefixes."""
    networks: set[ingress.Network] = set()
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
    return reachability.Endpoint(groups, frozenset(networks), f"{name}/{eni}")


def interfaces(instance: InstanceTypeDef, name: str) -> tuple[reachability.Endpoint, ...]:
    return tuple(
        endpoint(dict(interface), name) for interface in instance.get("NetworkInterfaces", [])
    )


def _described_interfaces(
    clients: client.AwsClients,
    filter_name: str,
    values: Sequence[str],
    vpc_id: str | None = None,
) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    paginator = clients.ec2.get_paginator("describe_network_interfaces")
    in_vpc: list[FilterTypeDef] = [{"Name": "vpc-id", "Values": [vpc_id]}] if vpc_id else []
    for chunk in chunking.chunks(sorted(set(values)), FILTER_VALUES_PER_CALL):
        for page in paginator.paginate(Filters=[{"Name": filter_name, "Values": chunk}, *in_vpc]):
            found.extend(dict(interface) for interface in page.get("NetworkInterfaces", []))
    return found


def read_interfaces(
    clients: client.AwsClients, ids: Sequence[str]
) -> dict[str, reachability.Endpoint]:
    """ENIs by id (pods' branch ENIs); one that is gone is not in the answer."""
    return {
        str(interface["NetworkInterfaceId"]): endpoint(interface, "branch")
        for interface in _described_interfaces(clients, "network-interface-id", ids)
        if "NetworkInterfaceId" in interface
    }


def read_interfaces_by_address(
    clients: client.AwsClients, addresses: Sequence[str], vpc_id: str | None = None
) -> tuple[dict[str, reachability.Endpoint], dict[str, tuple[str, ...]]]:
    """The ENI holding each private IPv4 address (a Fargate node's own ENI, found by the
    node's InternalIP), sought in VPC `vpc_id` when the cluster's VPC is known: an address is
    unique only within a VPC, and accounts reuse CIDRs. Second, the addresses that ENIs of
    several VPCs hold, with those VPCs: no one ENI is theirs. An address no ENI holds is in
    neither answer."""
    wanted = set(addresses)
    holders: dict[str, dict[str, reachability.Endpoint]] = {}  # address → VPC → its ENI
    for interface in _described_interfaces(
        clients, "addresses.private-ip-address", addresses, vpc_id
    ):
        for private in interface.get("PrivateIpAddresses", []):
            address = private.get("PrivateIpAddress")
            if address in wanted:
                vpc = str(interface.get("VpcId", ""))
                holders.setdefault(address, {})[vpc] = endpoint(interface, "fargate")
    found = {a: next(iter(by_vpc.values())) for a, by_vpc in holders.items() if len(by_vpc) == 1}
    shared = {a: tuple(sorted(by_vpc)) for a, by_vpc in holders.items() if len(by_vpc) > 1}
    return found, shared


def read_rules(
    clients: client.AwsClients, group_ids: Sequence[str]
) -> tuple[ingress.IngressRule, ...]:
    found: list[ingress.IngressRule] = []
    paginator = clients.ec2.get_paginator("describe_security_group_rules")
    for chunk in chunking.chunks(sorted(set(group_ids)), FILTER_VALUES_PER_CALL):
        for page in paginator.paginate(
            Filters=[{"Name": "group-id", "Values": chunk}],
            PaginationConfig={"PageSize": 1000},
        ):
            for raw in page.get("SecurityGroupRules", []):
                if "GroupId" in raw:  # inbound and outbound: doctor judges both ends
                    found.append(ingress.parse(raw))
    return tuple(found)


def read_prefix_lists(
    clients: client.AwsClients, ids: Sequence[str]
) -> dict[str, ingress.PrefixList]:
    """The prefix lists among `ids`, with their size, family and entries."""
    found: dict[str, ingress.PrefixList] = {}
    if not ids:
        return found
    described = clients.ec2.get_paginator("describe_managed_prefix_lists")
    for page in described.paginate(PrefixListIds=sorted(set(ids))):
        for listed in page.get("PrefixLists", []):
            if "PrefixListId" in listed:
                found[listed["PrefixListId"]] = security_groups.prefix_list(listed)
    entries = clients.ec2.get_paginator("get_managed_prefix_list_entries")
    for prefix_list_id in sorted(found):
        networks: list[ingress.Network] = []
        for entries_page in entries.paginate(PrefixListId=prefix_list_id):
            networks.extend(
                ipaddress.ip_network(entry["Cidr"], strict=False)
                for entry in entries_page.get("Entries", [])
                if "Cidr" in entry
            )
        found[prefix_list_id] = dataclasses.replace(found[prefix_list_id], entries=tuple(networks))
    return found


def read_profiles(clients: client.AwsClients, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    roles: dict[str, tuple[str, ...]] = {}
    for name in sorted(set(names)):
        try:
            profile = clients.iam.get_instance_profile(InstanceProfileName=name)
        except botocore.exceptions.ClientError as error:
            if not errors.answered(error, errors.IAM_ENTITY_ABSENT):
                raise
            roles[name] = ()  # IAM says it is gone: the instance runs without a role
            continue
        roles[name] = tuple(role["RoleName"] for role in profile["InstanceProfile"]["Roles"])
    return roles


def read_role_policies(
    clients: client.AwsClients, names: Sequence[str]
) -> dict[str, frozenset[str]]:
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


def _document(value: Any) -> dict[str, Any]:
    """A policy document as IAM answers it: botocore decodes it, but an answer it did not
    decode arrives URL-encoded JSON text."""
    if isinstance(value, str):
        decoded: dict[str, Any] = json.loads(urllib.parse.unquote(value))
        return decoded
    return dict(value)


def read_inline_policies(
    clients: client.AwsClients, roles: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Each role's inline policies: name → document."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    paginator = clients.iam.get_paginator("list_role_policies")
    for role in sorted(set(roles)):
        names = [name for page in paginator.paginate(RoleName=role) for name in page["PolicyNames"]]
        found[role] = {
            name: _document(
                clients.iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            )
            for name in names
        }
    return found


def read_policy_documents(
    clients: client.AwsClients, arns: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The default version's document of each managed policy (AWS's or the account's)."""
    found: dict[str, dict[str, Any]] = {}
    for arn in sorted(set(arns)):
        version = clients.iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        answer = clients.iam.get_policy_version(PolicyArn=arn, VersionId=version)
        found[arn] = _document(answer["PolicyVersion"].get("Document", {}))
    return found


def read_cluster_family(clients: client.AwsClients, cluster: str) -> int | None:
    """The IP family of EKS cluster `cluster` (4 or 6); None when EKS has no such cluster."""
    try:
        answer = clients.eks.describe_cluster(name=cluster)["cluster"]
    except errors.ERRORS as error:
        if errors.answered(error, errors.EKS_CLUSTER_ABSENT):
            return None
        raise
    family = str(answer.get("kubernetesNetworkConfig", {}).get("ipFamily", identity.IPV4))
    return 6 if family.lower() == identity.IPV6 else 4


def read_asg_tags(clients: client.AwsClients, names: Sequence[str]) -> dict[str, dict[str, str]]:
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


def read_association_role(clients: client.AwsClients, cluster: str, association_id: str) -> str:
    """The role whose credentials an EKS Pod Identity association gives its pods: its target
    role when it names one (the association's role only assumes it), else its role."""
    association = clients.eks.describe_pod_identity_association(
        clusterName=cluster, associationId=association_id
    )["association"]
    return association.get("targetRoleArn") or association["roleArn"]

"""Running instances: the security groups the instances of member ASGs and EC2NodeClasses carry,
and the instance profiles they were launched with.

A rollout moves a member's launch data to new SGs (a new launch template version, an EKS
managed node group update, Karpenter drift after an EC2NodeClass change) long before its
instances are replaced: until then they keep the SGs they were launched with, and their pods
(CoreDNS among them) need those SGs meshed. So a member's SGs are those its launch data names
and those its running instances carry (`sgmesh.aws.discovery` puts the two together). The same
holds for the node role: a rollout to another instance profile leaves the running instances
with the old one, whose role their ipamd still needs the CNI policy on; so a member's roles are
those of the profiles its launch data names and of those its running instances were launched
with.

One read serves every member: DescribeInstances filtered by the tag key EC2 Auto Scaling
(`aws:autoscaling:groupName`) or Karpenter (`karpenter.k8s.aws/ec2nodeclass`) puts on the
instances it launches — the key of each kind the mesh has, in one filter, since EC2 ORs the
values of a filter — by the states in which an instance holds traffic, and by the cluster's
VPC when the mesh is bounded. Instances are matched to members here, by the tag's value. Asking
by name instead (`tag:aws:autoscaling:groupName` = the member ASGs) would take a call per 200
ASGs and one more for node classes; this request is also the same for every mesh of the cluster
with the same kinds of members, so that meshes reconciled together share its answer
(`sgmesh.aws.shared_reads`).

An instance's SGs are those of its network interfaces, but not of those attached afterwards for
pods: the VPC CNI's (described `aws-K8S-<instance>`) and the VPC resource controller's trunk
interface carry the node's SGs, or with custom networking an ENIConfig's, which is a member of
its own or none.

It must never write to AWS; every error propagates for the caller to classify. An instance is
gone only when a successful answer lacks it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sgmesh.api import models
from sgmesh.aws import client

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import (
        FilterTypeDef,
        InstanceNetworkInterfaceTypeDef,
        InstanceTypeDef,
    )

__all__ = ["ASG_TAG", "LIVE_STATES", "NODE_CLASS_TAG", "RunningGroups", "read_running_groups"]

ASG_TAG = "aws:autoscaling:groupName"
NODE_CLASS_TAG = "karpenter.k8s.aws/ec2nodeclass"
# An instance holds traffic from launch until it stops or terminates.
LIVE_STATES = ("pending", "running")
INSTANCE_PAGE_SIZE = 1000  # DescribeInstances: MaxResults <= 1000
# What the VPC CNI describes the interfaces it attaches with (`eniDescriptionPrefix`).
CNI_INTERFACE_DESCRIPTION = "aws-K8S-"
# Interfaces the VPC resource controller makes for security groups for pods.
POD_INTERFACE_TYPES = frozenset({"trunk", "branch"})


@dataclass(frozen=True)
class RunningGroups:
    """SG id → how many pending or running instances carry it, per member ASG and per
    EC2NodeClass (by name); and the names of the instance profiles those instances were
    launched with. A member without running instances is absent."""

    auto_scaling_groups: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    node_classes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    auto_scaling_group_profiles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    node_class_profiles: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def profile_names(self) -> frozenset[str]:
        """Every instance profile a running instance of a member was launched with."""
        return frozenset(
            name
            for by_member in (self.auto_scaling_group_profiles, self.node_class_profiles)
            for names in by_member.values()
            for name in names
        )


def read_running_groups(
    clients: client.AwsClients,
    auto_scaling_groups: Iterable[str],
    node_classes: Iterable[str],
    vpc_id: str | None = None,
) -> RunningGroups:
    """The SGs the running instances of the named ASGs and EC2NodeClasses carry, in one
    paginated read (none when no member launches instances); inside `vpc_id` only, when given.
    """
    wanted = {ASG_TAG: set(auto_scaling_groups), NODE_CLASS_TAG: set(node_classes)}
    keys = [key for key, names in wanted.items() if names]
    if not keys:
        return RunningGroups()
    counts: dict[str, dict[str, Counter[str]]] = {key: defaultdict(Counter) for key in keys}
    profiles: dict[str, dict[str, set[str]]] = {key: defaultdict(set) for key in keys}
    for instance in _describe_instances(clients, keys, vpc_id):
        tags = {
            tag["Key"]: tag.get("Value", "") for tag in instance.get("Tags", []) if "Key" in tag
        }
        groups = _carried_groups(instance)
        profile_arn = instance.get("IamInstanceProfile", {}).get("Arn")
        for key in keys:
            if tags.get(key) in wanted[key]:
                counts[key][tags[key]].update(groups)
                if profile_arn:
                    profiles[key][tags[key]].add(models.iam_name(profile_arn))
    found = {
        key: {name: dict(sorted(groups.items())) for name, groups in sorted(by_name.items())}
        for key, by_name in counts.items()
    }
    launched_with = {
        key: {name: frozenset(names) for name, names in by_name.items()}
        for key, by_name in profiles.items()
    }
    return RunningGroups(
        found.get(ASG_TAG, {}),
        found.get(NODE_CLASS_TAG, {}),
        launched_with.get(ASG_TAG, {}),
        launched_with.get(NODE_CLASS_TAG, {}),
    )


def _carried_groups(instance: InstanceTypeDef) -> set[str]:
    """The SGs of an instance's interfaces, but those attached for pods; the instance's own
    `SecurityGroups` serve only when the answer lists no interface."""
    interfaces = instance.get("NetworkInterfaces", [])
    if not interfaces:
        return {g["GroupId"] for g in instance.get("SecurityGroups", []) if "GroupId" in g}
    return {
        group["GroupId"]
        for interface in interfaces
        if not _attached_for_pods(interface)
        for group in interface.get("Groups", [])
        if "GroupId" in group
    }


def _attached_for_pods(interface: InstanceNetworkInterfaceTypeDef) -> bool:
    return (
        interface.get("Description", "").startswith(CNI_INTERFACE_DESCRIPTION)
        or interface.get("InterfaceType", "") in POD_INTERFACE_TYPES
    )


def _describe_instances(
    clients: client.AwsClients, tag_keys: list[str], vpc_id: str | None
) -> Iterator[InstanceTypeDef]:
    filters: list[FilterTypeDef] = [
        {"Name": "tag-key", "Values": tag_keys},
        {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
    ]
    if vpc_id is not None:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    paginator = clients.ec2.get_paginator("describe_instances")
    for page in paginator.paginate(
        Filters=filters, PaginationConfig={"PageSize": INSTANCE_PAGE_SIZE}
    ):
        for reservation in page.get("Reservations", []):
            yield from reservation.get("Instances", [])

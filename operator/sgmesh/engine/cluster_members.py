"""Members read from Kubernetes objects: Karpenter's EC2NodeClasses and VPC CNI ENIConfigs.

Some nodes have no ASG: Karpenter launches them with the security groups and node role of an
`EC2NodeClass` (karpenter.k8s.aws/v1). With VPC CNI custom networking, pods' ENIs carry the
security groups of an `ENIConfig` (crd.k8s.amazonaws.com/v1alpha1), not the node's. This module
turns those objects, as the API server returned them, into members:

- an EC2NodeClass: its SGs are `status.securityGroups[*].id` (what Karpenter resolved its
  selector terms to); its node role is `spec.role`, or the role of `spec.instanceProfile` /
  `status.instanceProfile`. Without `status.securityGroups` yet it is unresolved: removals
  are held, because what it needs is unknown;
- an ENIConfig: its SGs are `spec.securityGroups`; it has no role. One that lists no SG gives
  pods the node's SGs, which the node's own member brings: it adds nothing.

It also says whether aws-node gets its permissions through IRSA (its ServiceAccount carries
`eks.amazonaws.com/role-arn`): then the CNI policy belongs on that role, not on node roles.

Pure: the objects come from `sgmesh.kube.sources` (or a test) as plain mappings; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sgmesh.api import models
from sgmesh.engine import topology

__all__ = [
    "ENI_CONFIG",
    "NODE_CLASS",
    "NO_CLUSTER_MEMBERS",
    "ClusterMember",
    "ClusterMembers",
    "ClusterObjects",
    "Listing",
    "SourceKind",
    "attaches_cni",
    "member",
    "resolve",
]


@dataclass(frozen=True)
class SourceKind:
    """A kind of Kubernetes object members come from, and where the spec lists them."""

    member_kind: topology.MemberKind
    group: str
    version: str
    plural: str
    field: str  # the spec's list of names, as written in YAML
    not_found: topology.ProblemKind

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def kind(self) -> str:
        return self.member_kind.value


NODE_CLASS = SourceKind(
    topology.MemberKind.EC2_NODE_CLASS,
    "karpenter.k8s.aws",
    "v1",
    "ec2nodeclasses",
    "spec.karpenter.nodeClasses",
    topology.ProblemKind.EC2_NODE_CLASS_NOT_FOUND,
)
ENI_CONFIG = SourceKind(
    topology.MemberKind.ENI_CONFIG,
    "crd.k8s.amazonaws.com",
    "v1alpha1",
    "eniconfigs",
    "spec.customNetworking.eniConfigs",
    topology.ProblemKind.ENI_CONFIG_NOT_FOUND,
)


@dataclass(frozen=True)
class Listing:
    """Every object of one kind in the cluster, by name; `installed` False when the API
    server does not serve the kind (its CRD, at that version, is not installed)."""

    installed: bool
    objects: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterObjects:
    """What was read from the cluster for one mesh. A listing is None when the spec does not
    use its kind (it was not read)."""

    node_classes: Listing | None = None
    eni_configs: Listing | None = None
    aws_node_role_arn: str | None = None


@dataclass(frozen=True)
class ClusterMember:
    """A member an object of the cluster names, before its SGs and roles are read in AWS."""

    kind: topology.MemberKind
    name: str
    security_group_ids: tuple[str, ...] = ()
    role_names: tuple[str, ...] = ()
    instance_profile_names: tuple[str, ...] = ()
    # Why its SGs (`groups`) or its role (`role`) cannot be told yet.
    unresolved_groups: tuple[str, ...] = ()
    unresolved_role: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return f"{self.kind.value} {self.name}"


@dataclass(frozen=True)
class ClusterMembers:
    members: tuple[ClusterMember, ...] = ()
    problems: tuple[topology.Problem, ...] = ()
    # aws-node's IRSA role: when set, the CNI policy is not put on node roles.
    aws_node_role_arn: str | None = None


# A mesh with no Kubernetes source, and a cluster that says nothing.
NO_CLUSTER_MEMBERS = ClusterMembers()


def attaches_cni(spec: models.NodeGroupMeshSpec, cluster: ClusterMembers) -> bool:
    """Whether the mesh puts the CNI policy on member node roles: as `cniPolicy.attach` says,
    unless aws-node uses IRSA (the policy then belongs on its IRSA role)."""
    return spec.cni_policy.attach and cluster.aws_node_role_arn is None


def resolve(spec: models.NodeGroupMeshSpec, objects: ClusterObjects) -> ClusterMembers:
    """The members the spec's Kubernetes sources name, and the problems that stand."""
    members: list[ClusterMember] = []
    problems: list[topology.Problem] = []
    if spec.karpenter is not None:
        found, missing = _select(NODE_CLASS, spec.karpenter.node_classes, objects.node_classes)
        members.extend(_node_class(name, body) for name, body in found)
        problems.extend(missing)
    if spec.custom_networking is not None:
        found, missing = _select(
            ENI_CONFIG, spec.custom_networking.eni_configs, objects.eni_configs
        )
        members.extend(_eni_config(name, body) for name, body in found)
        problems.extend(missing)
    return ClusterMembers(tuple(members), tuple(problems), objects.aws_node_role_arn)


def _select(
    kind: SourceKind, names: list[str], listing: Listing | None
) -> tuple[list[tuple[str, Mapping[str, Any]]], list[topology.Problem]]:
    if listing is None or not listing.installed:
        return [], [
            topology.Problem(
                topology.ProblemKind.SOURCE_NOT_INSTALLED,
                kind.crd_name,
                f"{kind.field} lists {kind.kind}s, but the cluster does not serve "
                f"{kind.crd_name}/{kind.version} (is its CRD installed?); removals are held "
                f"until it is",
            )
        ]
    if names == [models.EVERY]:
        return sorted(listing.objects.items()), []
    found = [(name, listing.objects[name]) for name in names if name in listing.objects]
    missing = [
        topology.Problem(
            kind.not_found,
            name,
            f"{kind.kind} {name} (listed in {kind.field}) does not exist",
        )
        for name in names
        if name not in listing.objects
    ]
    return found, missing


_SECURITY_GROUP_ID = re.compile(models.SECURITY_GROUP_ID)


def _group_ids(title: str, where: str, values: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The SG ids of a list read from an object, and why any entry is not one."""
    if not isinstance(values, list):
        return (), (f"{title}: {where} is not a list but {type(values).__name__}",)
    ids = [value for value in values if isinstance(value, str) and _SECURITY_GROUP_ID.match(value)]
    wrong = [
        f"{title}: {where} holds {value!r}, which is not a security group id"
        for value in values
        if value not in ids
    ]
    return tuple(dict.fromkeys(ids)), tuple(wrong)


def _node_class(name: str, body: Mapping[str, Any]) -> ClusterMember:
    title = f"{NODE_CLASS.kind} {name}"
    spec: Mapping[str, Any] = body.get("spec") or {}
    status: Mapping[str, Any] = body.get("status") or {}
    groups = status.get("securityGroups")
    if not groups:
        group_ids: tuple[str, ...] = ()
        unresolved_groups: tuple[str, ...] = (
            f"{title} has not resolved its security groups yet (status.securityGroups is empty)",
        )
    else:
        listed = (
            [group.get("id") if isinstance(group, Mapping) else group for group in groups]
            if isinstance(groups, list)
            else groups
        )
        group_ids, unresolved_groups = _group_ids(title, "status.securityGroups[*].id", listed)

    role_names: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    unresolved_role: tuple[str, ...] = ()
    role = spec.get("role")
    profile = spec.get("instanceProfile") or status.get("instanceProfile")
    if isinstance(role, str) and role:
        role_names = (models.iam_name(role),)  # an ARN is taken by its name
    elif isinstance(profile, str) and profile:
        profiles = (models.iam_name(profile),)
    else:
        unresolved_role = (
            f"{title} names no node role (spec.role) or instance profile "
            "(spec.instanceProfile, status.instanceProfile)",
        )
    return ClusterMember(
        kind=NODE_CLASS.member_kind,
        name=name,
        security_group_ids=group_ids,
        role_names=role_names,
        instance_profile_names=profiles,
        unresolved_groups=unresolved_groups,
        unresolved_role=unresolved_role,
    )


def _eni_config(name: str, body: Mapping[str, Any]) -> ClusterMember:
    title = f"{ENI_CONFIG.kind} {name}"
    spec: Mapping[str, Any] = body.get("spec") or {}
    group_ids, unresolved = _group_ids(
        title, "spec.securityGroups", spec.get("securityGroups") or []
    )
    return ClusterMember(
        kind=ENI_CONFIG.member_kind,
        name=name,
        security_group_ids=group_ids,
        unresolved_groups=unresolved,
    )


def member(kind: SourceKind, name: str, body: Mapping[str, Any]) -> ClusterMember:
    """What one EC2NodeClass or ENIConfig contributes to the meshes that list it."""
    return _node_class(name, body) if kind is NODE_CLASS else _eni_config(name, body)

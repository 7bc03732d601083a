"""The NodeGroupMesh resource as pydantic models: the single source of truth for its schema.

The CRD in `crds/` is generated from these models (see `sgmesh.api.crd`), so every constraint the
API server can enforce is declared here once: enums, ranges, patterns and CEL rules. The same
models validate a YAML file for the CLI and a custom resource body for the operator.

This module is pure: it imports no AWS or Kubernetes library and does no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "CLUSTER_NAME_PLACEHOLDER",
    "EVERY",
    "KIND",
    "MAX_CLUSTER_NAME_LENGTH",
    "MAX_MESH_NAME_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "AutoScalingGroups",
    "CniPolicy",
    "CniPolicyStatus",
    "Condition",
    "CustomNetworking",
    "DeletionPolicy",
    "DrainingSecurityGroup",
    "InvalidSpecError",
    "Karpenter",
    "MemberStatus",
    "Mode",
    "NodeGroupMesh",
    "NodeGroupMeshSpec",
    "NodeGroupMeshStatus",
    "PodSecurityGroups",
    "Protocol",
    "RuleCounts",
    "SecurityGroupSelector",
    "SecurityGroups",
    "Selector",
    "Traffic",
    "cni_policy_arn",
    "iam_name",
    "partition_of",
    "recorded_cni_policy",
    "validate_cluster_name",
]

API_GROUP = "sgmesh.io"
API_VERSION = "v1alpha1"
KIND = "NodeGroupMesh"
PLURAL = "nodegroupmeshes"

# Ownership tags are `sgmesh.io/<cluster>/<mesh>`; IAM and EC2 cap tag keys at 128 characters,
# so the two names are bounded: 10 + 50 + 1 + 63 = 124.
MAX_CLUSTER_NAME_LENGTH = 50
MAX_MESH_NAME_LENGTH = 63
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CLUSTER_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
# What deploy/'s kustomize base sets SGMESH_CLUSTER_NAME to: the one edit it requires.
CLUSTER_NAME_PLACEHOLDER = "REPLACE-WITH-CLUSTER-NAME"

SECURITY_GROUP_ID = r"^sg-[0-9a-f]{8}([0-9a-f]{9})?$"
# Regions of every partition: "us-east-1", "eu-isoe-west-1", "eusc-de-east-1".
REGION = r"^[a-z]{2,4}(-[a-z]+)+-[0-9]+$"
# The policy ARN is also written as an IAM tag value on the roles the mesh attaches it to, so
# it keeps to what both allow: IAM policy names take `,` but tag values do not (letters,
# digits, spaces and `_.:/=+-@`, at most 256 characters).
POLICY_ARN = r"^arn:aws(-[a-z]+)*:iam::(aws|[0-9]{12}):policy/[A-Za-z0-9_+=.@/-]+$"
MAX_TAG_VALUE_LENGTH = 256
# ASG names: 1-255 characters, no colon (AWS rejects names that look like ARNs).
ASG_NAME = r"^[^:]{1,255}$"

# A Kubernetes object name (DNS subdomain), or "*": every object of the kind.
EVERY = "*"
OBJECT_NAME = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?|\*)$"
MAX_OBJECT_NAME_LENGTH = 253

SecurityGroupId = Annotated[str, StringConstraints(pattern=SECURITY_GROUP_ID)]
ObjectName = Annotated[
    str, StringConstraints(pattern=OBJECT_NAME, min_length=1, max_length=MAX_OBJECT_NAME_LENGTH)
]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
TagValue = Annotated[str, StringConstraints(max_length=256)]
AsgName = Annotated[str, StringConstraints(pattern=ASG_NAME, min_length=1, max_length=255)]


class InvalidSpecError(ValueError):
    """A spec that cannot be reconciled; the message names the field and the value."""


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )


class Protocol(enum.StrEnum):
    ALL = "all"
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"


class Mode(enum.StrEnum):
    ENFORCE = "Enforce"
    DRY_RUN = "DryRun"


class DeletionPolicy(enum.StrEnum):
    DELETE = "Delete"
    RETAIN = "Retain"


PORTED_PROTOCOLS = frozenset({Protocol.TCP, Protocol.UDP})


class Traffic(_Model):
    """One kind of traffic every member SG admits from every member SG."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(self.protocol in ['tcp', 'udp']) || "
                    "(has(self.fromPort) && has(self.toPort))",
                    "message": "fromPort and toPort are required for tcp and udp",
                    "fieldPath": ".fromPort",
                },
                {
                    "rule": "self.protocol in ['tcp', 'udp'] || "
                    "(!has(self.fromPort) && !has(self.toPort))",
                    "message": "fromPort and toPort apply to tcp and udp only",
                    "fieldPath": ".protocol",
                },
                {
                    "rule": "!has(self.fromPort) || !has(self.toPort) || "
                    "self.fromPort <= self.toPort",
                    "message": "fromPort must be less than or equal to toPort",
                    "fieldPath": ".fromPort",
                },
            ]
        }
    )

    protocol: Protocol = Field(
        description="all (every protocol and port), tcp, udp, or icmp (every ICMP type). "
        "Required. Example: tcp, with fromPort 443 and toPort 443."
    )
    from_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="First port of the range, 0-65535: required for tcp and udp, refused for "
        "all and icmp. Example: 53.",
    )
    to_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Last port of the range, at least fromPort: required for tcp and udp, "
        "refused for all and icmp. Example: 53 (one port), 65535.",
    )

    @pydantic.model_validator(mode="after")
    def _ports_fit_protocol(self) -> Traffic:
        has_ports = self.from_port is not None or self.to_port is not None
        if self.protocol in PORTED_PROTOCOLS:
            if self.from_port is None or self.to_port is None:
                raise ValueError(
                    f"fromPort and toPort are required for protocol {self.protocol.value!r}"
                )
            if self.from_port > self.to_port:
                raise ValueError(f"fromPort {self.from_port} is greater than toPort {self.to_port}")
        elif has_ports:
            raise ValueError(
                f"fromPort and toPort apply to tcp and udp only, not to {self.protocol.value!r}"
            )
        return self


class Selector(_Model):
    """An ASG matches when it has every tag listed (value "*": key present) and the prefix."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.tags) && size(self.tags) > 0) || has(self.namePrefix)",
                    "message": "a selector needs tags or namePrefix; an empty one would match "
                    "every ASG of the region",
                }
            ]
        }
    )

    tags: dict[TagKey, TagValue] = Field(
        default_factory=dict,
        description='Tags the ASG must carry, every one; the value "*" means any value (the key '
        "is present). Default: none (then namePrefix is required). Example: "
        '{"team": "data", "eks:nodegroup-name": "*"}.',
    )
    name_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="The ASG's name starts with this (with tags, both must hold). Default: any "
        "name. Example: eks-airflow-.",
    )

    @pydantic.model_validator(mode="after")
    def _not_empty(self) -> Selector:
        if not self.tags and self.name_prefix is None:
            raise ValueError(
                "a selector needs tags or namePrefix; an empty one would match every ASG"
            )
        return self

    def matches(self, name: str, tags: dict[str, str]) -> bool:
        if self.name_prefix is not None and not name.startswith(self.name_prefix):
            return False
        return all(
            key in tags and (wanted == "*" or tags[key] == wanted)
            for key, wanted in self.tags.items()
        )


def _unique(values: list[str], what: str) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)
    return values


class AutoScalingGroups(_Model):
    """Member ASGs (EKS managed node groups are ASGs too), by name and by selector; at least
    one of either."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.names) && size(self.names) > 0) || "
                    "(has(self.selectors) && size(self.selectors) > 0)",
                    "message": "list at least one ASG name or one selector",
                }
            ]
        }
    )

    names: list[AsgName] = Field(
        default_factory=list,
        max_length=500,
        description="Exact ASG names of the mesh's region, each once (at most 500). Default: "
        "none. Example: [eks-system-2024, eks-data-batch].",
    )
    selectors: list[Selector] = Field(
        default_factory=list,
        max_length=50,
        description="An ASG of the region joins when it matches any selector; selectors are "
        "re-resolved at every resync, so a new matching ASG joins by itself. Default: none. "
        'Example: [{tags: {"team": "data"}}].',
    )

    @pydantic.model_validator(mode="after")
    def _something_listed(self) -> AutoScalingGroups:
        if not self.names and not self.selectors:
            raise ValueError("list at least one ASG name or one selector")
        return self

    @pydantic.field_validator("names")
    @classmethod
    def _unique_names(cls, names: list[str]) -> list[str]:
        return _unique(names, "ASG name")


class SecurityGroupSelector(_Model):
    """A security group matches when it carries every tag listed (value "*": key present)."""

    tags: dict[TagKey, TagValue] = Field(
        min_length=1,
        description='Tags the security group must carry, every one (at least one); "*" means '
        "any value. Example, the EKS cluster security group: "
        '{"aws:eks:cluster-name": "prod"}.',
    )


class SecurityGroups(_Model):
    """Security groups that join the mesh directly, with no ASG: the EKS cluster security
    group, eksctl's shared node security group, the groups of nodes no ASG launches."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.ids) && size(self.ids) > 0) || "
                    "(has(self.selectors) && size(self.selectors) > 0)",
                    "message": "list at least one security group id or one selector",
                }
            ]
        }
    )

    ids: list[SecurityGroupId] = Field(
        default_factory=list,
        max_length=50,
        description="Security group ids of the cluster's VPC, each once (at most 50). Default: "
        "none. Example: [sg-0123456789abcdef0].",
    )
    selectors: list[SecurityGroupSelector] = Field(
        default_factory=list,
        max_length=20,
        description="A security group of the region joins when it matches any selector "
        "(re-resolved at every resync). Default: none. Example: "
        '[{tags: {"aws:eks:cluster-name": "prod"}}].',
    )

    @pydantic.model_validator(mode="after")
    def _something_listed(self) -> SecurityGroups:
        if not self.ids and not self.selectors:
            raise ValueError("list at least one security group id or one selector")
        return self

    @pydantic.field_validator("ids")
    @classmethod
    def _unique_ids(cls, ids: list[str]) -> list[str]:
        return _unique(ids, "security group id")


def _names_rules(field: str) -> dict[str, Any]:
    """CEL rules of a list of object names: "*" stands alone."""
    return {
        "x-kubernetes-validations": [
            {
                "rule": f"!('*' in self.{field}) || size(self.{field}) == 1",
                "message": f'"*" (every one) stands alone in {field}',
                "fieldPath": f".{field}",
            }
        ]
    }


def _check_names(names: list[str], kind: str) -> list[str]:
    _unique(names, f"{kind} name")
    if EVERY in names and len(names) > 1:
        raise ValueError(f'"*" (every {kind}) stands alone: list it without other names')
    return names


class Karpenter(_Model):
    """Karpenter's nodes: no ASG launches them, their security groups and node role come from
    an EC2NodeClass (karpenter.k8s.aws/v1)."""

    model_config = ConfigDict(json_schema_extra=_names_rules("nodeClasses"))

    node_classes: list[ObjectName] = Field(
        min_length=1,
        max_length=100,
        description='EC2NodeClass names (at least one, at most 100), or ["*"] alone: every '
        "EC2NodeClass of the cluster, those created later included. The security groups and "
        "node role each resolves to (its status) join. Example: [default, gpu].",
    )

    @pydantic.field_validator("node_classes")
    @classmethod
    def _valid_names(cls, names: list[str]) -> list[str]:
        return _check_names(names, "EC2NodeClass")


class CustomNetworking(_Model):
    """VPC CNI custom networking: pods' ENIs carry the security groups of an ENIConfig
    (crd.k8s.amazonaws.com/v1alpha1), not the node's."""

    model_config = ConfigDict(json_schema_extra=_names_rules("eniConfigs"))

    eni_configs: list[ObjectName] = Field(
        min_length=1,
        max_length=100,
        description='ENIConfig names (at least one, at most 100), or ["*"] alone: every '
        "ENIConfig of the cluster. The security groups each names join, so that pods on "
        "custom-networking ENIs reach each other. Example: [us-east-1a, us-east-1b].",
    )

    @pydantic.field_validator("eni_configs")
    @classmethod
    def _valid_names(cls, names: list[str]) -> list[str]:
        return _check_names(names, "ENIConfig")


# A SecurityGroupPolicy reference: "namespace/name", "namespace/*" (every policy of the
# namespace) or "*" alone (every policy of the cluster).
POLICY_REFERENCE = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?/(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?))$"
PolicyReference = Annotated[
    str, StringConstraints(pattern=POLICY_REFERENCE, min_length=1, max_length=317)
]


class PodSecurityGroups(_Model):
    """Security groups for pods: the security groups a SecurityGroupPolicy
    (vpcresources.k8s.aws/v1beta1) gives the branch ENIs of its pods join the mesh. They have no
    node role, so no CNI policy is attached for them."""

    model_config = ConfigDict(json_schema_extra=_names_rules("policies"))

    policies: list[PolicyReference] = Field(
        min_length=1,
        max_length=100,
        description='SecurityGroupPolicy references: "namespace/name", "namespace/*" (every '
        'policy of the namespace), or ["*"] alone (every policy of the cluster). Example: '
        '["payments/db-clients", "dns/*"].',
    )

    @pydantic.field_validator("policies")
    @classmethod
    def _valid_references(cls, references: list[str]) -> list[str]:
        _check_names(references, "SecurityGroupPolicy")
        whole = {ref.split("/")[0] for ref in references if ref.endswith("/*")}
        for reference in references:
            namespace, _, name = reference.partition("/")
            if name not in ("", EVERY) and namespace in whole:
                raise ValueError(
                    f"{reference!r} is already covered by {namespace + '/*'!r}: list one of them"
                )
        return references


class CniPolicy(_Model):
    """The VPC CNI's IAM policy on the members' node roles, without which aws-node cannot give
    pods addresses. Default: attached, AmazonEKS_CNI_Policy, kept when a member leaves."""

    attach: bool = Field(
        default=True,
        description="Attach the policy to every member node role. Default: true. Set false "
        "when aws-node gets its permissions through IRSA or EKS Pod Identity (then the mesh "
        "attaches nothing, and reports roles that lack it).",
    )
    policy_arn: (
        Annotated[str, StringConstraints(pattern=POLICY_ARN, max_length=MAX_TAG_VALUE_LENGTH)]
        | None
    ) = Field(
        default=None,
        description="The managed policy to attach. Default: AmazonEKS_CNI_Policy in the "
        "partition of the region (arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy). Recorded as an "
        "IAM tag value on the roles it is attached to: no comma, at most 256 characters. "
        "Example, an IPv6 cluster: arn:aws:iam::123456789012:policy/AmazonEKS_CNI_IPv6_Policy.",
    )
    retain_on_removal: bool = Field(
        default=True,
        description="Keep an attachment the mesh made when its member leaves or the mesh is "
        "deleted (a node of the role may still need it). Default: true; false detaches it then.",
    )


_SOURCES = "autoScalingGroups, securityGroups, karpenter, customNetworking or podSecurityGroups"


class NodeGroupMeshSpec(_Model):
    """What the mesh holds — its members, from at least one source — and what traffic every
    member security group admits from every other (itself included)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.autoScalingGroups) || has(self.securityGroups) || "
                    "has(self.karpenter) || has(self.customNetworking) || "
                    "has(self.podSecurityGroups) || "
                    "(has(self.extraSecurityGroupIds) && size(self.extraSecurityGroupIds) > 0)",
                    "message": f"a mesh needs at least one member source: {_SOURCES}",
                }
            ]
        }
    )

    region: Annotated[str, StringConstraints(pattern=REGION)] | None = Field(
        default=None,
        description="AWS region of the members. Default: the operator's region (--region, "
        "else AWS_REGION of its pod). Example: us-east-1.",
    )
    auto_scaling_groups: AutoScalingGroups | None = Field(
        default=None,
        description="Member ASGs (EKS managed node groups included), by name and by tag "
        "selector. Default: none. Example: {names: [eks-a], selectors: [{tags: {team: data}}]}.",
    )
    security_groups: SecurityGroups | None = Field(
        default=None,
        description="Security groups that join directly, by id and by tag: the EKS cluster "
        "security group, a shared node security group, those of nodes no ASG launches. "
        "Default: none.",
    )
    karpenter: Karpenter | None = Field(
        default=None,
        description="Karpenter EC2NodeClasses whose nodes join (their security groups and node "
        "role). Default: none. Example: {nodeClasses: [default]}.",
    )
    custom_networking: CustomNetworking | None = Field(
        default=None,
        description="VPC CNI custom networking: ENIConfigs whose security groups join. "
        'Default: none. Example: {eniConfigs: ["*"]}.',
    )
    pod_security_groups: PodSecurityGroups | None = Field(
        default=None,
        description="Security groups for pods: SecurityGroupPolicies whose security groups "
        'join. Default: none. Example: {policies: ["payments/*"]}.',
    )
    traffic: list[Traffic] = Field(
        default_factory=lambda: [Traffic(protocol=Protocol.ALL)],
        min_length=1,
        max_length=20,
        description="What every member security group admits from every member security "
        "group, at most 20 entries, each once. Default: [{protocol: all}] (all traffic). "
        "Example: [{protocol: tcp, fromPort: 0, toPort: 65535}, {protocol: udp, fromPort: 53, "
        "toPort: 53}].",
        # The API server applies this default too, so `kubectl get` shows what is in force.
        json_schema_extra={"default": [{"protocol": "all"}]},
    )
    extra_security_group_ids: list[SecurityGroupId] = Field(
        default_factory=list,
        max_length=50,
        description="Deprecated: use securityGroups.ids (same meaning; the mesh's events warn "
        "of it). Security groups that join as members without an ASG. Default: none.",
    )
    cni_policy: CniPolicy = Field(
        default_factory=CniPolicy,
        description="The VPC CNI policy on the members' node roles. Default: attached "
        "(AmazonEKS_CNI_Policy), kept when a member leaves. Example, aws-node with IRSA: "
        "{attach: false}.",
    )
    mode: Mode = Field(
        default=Mode.ENFORCE,
        description="Enforce makes AWS match the mesh; DryRun reads AWS, plans and reports "
        "what Enforce would do in status.pendingActions, and writes nothing. Default: Enforce.",
    )
    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.DELETE,
        description="When the mesh is deleted: Delete revokes the rules it owns and releases "
        "its policy attachments (as cniPolicy.retainOnRemoval says); Retain leaves AWS as it is. "
        "Default: Delete.",
    )
    resync_seconds: int | None = Field(
        default=None,
        ge=10,
        le=86400,
        description="Seconds between reconciles, 10-86400: selectors re-resolved, drift in "
        "AWS repaired. Default: the operator's --default-resync-seconds (60). Example: 300.",
    )

    @pydantic.model_validator(mode="after")
    def _some_member_source(self) -> NodeGroupMeshSpec:
        if not (
            self.auto_scaling_groups
            or self.security_groups
            or self.karpenter
            or self.custom_networking
            or self.pod_security_groups
            or self.extra_security_group_ids
        ):
            raise ValueError(f"a mesh needs at least one member source: {_SOURCES}")
        return self

    @property
    def security_group_ids(self) -> list[str]:
        """The SGs listed by id: securityGroups.ids and the deprecated extraSecurityGroupIds."""
        listed = self.security_groups.ids if self.security_groups else []
        return list(dict.fromkeys([*listed, *self.extra_security_group_ids]))

    @property
    def uses_cluster(self) -> bool:
        """Whether members are read from Kubernetes objects (EC2NodeClasses, ENIConfigs,
        SecurityGroupPolicies)."""
        return (
            self.karpenter is not None
            or self.custom_networking is not None
            or self.pod_security_groups is not None
        )

    @pydantic.field_validator("traffic")
    @classmethod
    def _unique_traffic(cls, traffic: list[Traffic]) -> list[Traffic]:
        seen: set[Traffic] = set()
        for entry in traffic:
            if entry in seen:
                raise ValueError(f"traffic entry {entry.model_dump(by_alias=True)} is listed twice")
            seen.add(entry)
        return traffic


MemberKindName = Literal[
    "AutoScalingGroup", "SecurityGroup", "EC2NodeClass", "ENIConfig", "SecurityGroupPolicy"
]


class DrainingSecurityGroup(_Model):
    """A security group running instances of a member still carry, though its launch data no
    longer names it."""

    id: str = Field(description="The security group's id.")
    instances: int = Field(
        default=0, ge=0, description="Pending or running instances of the member that carry it."
    )


class MemberStatus(_Model):
    """One member of the mesh, as the last reconcile resolved it."""

    name: str = Field(
        description="The member's name, as its source names it (an ASG's name, an "
        "EC2NodeClass's; namespace/name for a SecurityGroupPolicy)."
    )
    kind: MemberKindName = Field(
        default="AutoScalingGroup", description="Where the member comes from."
    )
    security_group_ids: list[str] = Field(
        default_factory=list,
        description="Every SG the member's nodes have, draining ones included.",
    )
    role_names: list[str] = Field(
        default_factory=list,
        description="IAM roles of the member's nodes (from their instance profiles), which "
        "hold the CNI policy.",
    )
    vpc_id: str | None = Field(default=None, description="The VPC of the member's security groups.")
    draining_security_groups: list[DrainingSecurityGroup] = Field(
        default_factory=list,
        description="SGs that running instances still carry though the member's launch data "
        "(or node class) no longer names them, as during a rollout: they stay meshed until no "
        "running instance carries them.",
    )


class RuleCounts(_Model):
    """Ingress rules of the mesh: desired, those present in AWS, those it owns."""

    desired: int = Field(default=0, description="Ingress rules the mesh needs.")
    present: int = Field(default=0, description="Desired rules that exist (owned or not).")
    owned: int = Field(default=0, description="Rules that carry this mesh's ownership tag.")


class CniPolicyStatus(_Model):
    """The VPC CNI policy on the members' node roles, as the last reconcile found it."""

    policy_arn: str | None = Field(default=None, description="The policy the mesh attaches.")
    attached_roles: list[str] = Field(
        default_factory=list,
        description="Member node roles that hold the policy, whoever attached it.",
    )
    owned_roles: list[str] = Field(
        default_factory=list,
        description="Of those, the roles whose attachment this mesh made and recorded (the "
        "role's sgmesh.io tag): the only ones it ever detaches. A record removed by hand from "
        "one of them is written again (and the role stays listed until it is). An attachment "
        "someone else made, or one kept by retainOnRemoval after the mesh released it, is "
        "never adopted.",
    )


class Condition(_Model):
    """One aspect of the mesh's state, as Kubernetes conditions say it."""

    type: str = Field(
        description="Ready: whether AWS matches the mesh. Synced: whether the last reconcile "
        "finished (a transient failure sets it False and leaves Ready as AWS was last seen)."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="Why, in one CamelCase word: Reconciled (Ready) or ReconcileSucceeded "
        "(Synced) when True, else what to fix first (InvalidSpec, AccessDenied, "
        "AwsUnavailable, AwsThrottled, AutoScalingGroupNotFound, QuotaExceeded, ...)."
    )
    message: str = Field(
        default="", description="What is wrong and what to do, naming the thing (an ASG, a rule)."
    )
    last_transition_time: str | None = Field(
        default=None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation of the spec the condition is about."
    )


class NodeGroupMeshStatus(_Model):
    """What the operator last found and did; written by the operator only."""

    observed_generation: int | None = Field(
        default=None, description="The metadata.generation of the spec last reconciled."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="The mesh's conditions: Ready says whether AWS matches the mesh, Synced "
        "whether the last reconcile finished; when not, why (reason) and what to fix (message).",
    )
    members: list[MemberStatus] = Field(
        default_factory=list, description="The members the last reconcile resolved."
    )
    member_count: int | None = Field(
        default=None, description="How many members (of every kind) the mesh has."
    )
    rules: RuleCounts | None = Field(
        default=None,
        description="Ingress rules of the mesh: desired, present in AWS, owned by the mesh.",
    )
    cni_policy: CniPolicyStatus | None = Field(
        default=None,
        description="The VPC CNI policy: which member node roles hold it, and which of those "
        "attachments the mesh made.",
    )
    pending_actions: list[str] = Field(
        default_factory=list, description="DryRun: what Enforce would do."
    )
    last_sync_time: str | None = Field(
        default=None, description="When a reconcile last reached AWS (RFC 3339)."
    )
    regions: list[str] = Field(
        default_factory=list,
        description="Every region where the mesh may own rules: listed before the operator "
        "writes there, unlisted once the mesh has left the region and everything it owned "
        "there is cleaned up. Deletion cleans up each of them.",
    )


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[
        str, StringConstraints(pattern=DNS_LABEL, min_length=1, max_length=MAX_MESH_NAME_LENGTH)
    ]


class NodeGroupMesh(_Model):
    """A whole document, as in a file for `sgmesh plan -f` or a custom resource body."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["sgmesh.io/v1alpha1"]
    kind: Literal["NodeGroupMesh"]
    metadata: _Metadata
    spec: NodeGroupMeshSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @classmethod
    def parse(cls, document: Any, source: str = "the resource") -> NodeGroupMesh:
        """Validate a document, turning pydantic's errors into one clear `InvalidSpecError`."""
        try:
            return cls.model_validate(document)
        except pydantic.ValidationError as error:
            raise InvalidSpecError(describe_validation_error(error, document, source)) from None


def describe_validation_error(error: pydantic.ValidationError, document: Any, source: str) -> str:
    """One line per problem: the field path as in YAML, the value found, what is wrong."""
    lines = []
    for problem in error.errors(include_url=False):
        location = _field_path(problem["loc"])
        value = _value_at(document, problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        shown = "" if value is _MISSING else f" (value: {value!r})"
        lines.append(f"{location}{shown}: {message}")
    return f"invalid {source}: " + "; ".join(lines)


_MISSING = object()


def _field_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "(document)"


def _value_at(document: Any, location: tuple[int | str, ...]) -> Any:
    current = document
    for part in location:
        in_mapping = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and part < len(current)
        if in_mapping or in_list:
            current = current[part]
        else:
            return _MISSING
    return current


# Region prefix → partition, as botocore's partitions data has them (a test checks every
# region botocore knows); every other region is in the commercial partition "aws".
_PARTITIONS_BY_REGION_PREFIX = (
    ("cn-", "aws-cn"),
    ("us-gov-", "aws-us-gov"),
    ("us-iso-", "aws-iso"),
    ("us-isob-", "aws-iso-b"),
    ("eu-isoe-", "aws-iso-e"),
    ("us-isof-", "aws-iso-f"),
    ("eusc-", "aws-eusc"),
)


def iam_name(name_or_arn: str) -> str:
    """The name of an IAM role or instance profile given by name or by ARN
    (`arn:aws:iam::111122223333:instance-profile/path/name`: the last segment of the path)."""
    return name_or_arn.rsplit("/", 1)[-1] if name_or_arn.startswith("arn:") else name_or_arn


def partition_of(region: str) -> str:
    for prefix, partition in _PARTITIONS_BY_REGION_PREFIX:
        if region.startswith(prefix):
            return partition
    return "aws"


def recorded_cni_policy(status: Any) -> CniPolicyStatus | None:
    """The CNI policy as a mesh's status last recorded it (`status.cniPolicy`); None when the
    status holds none, or one that is not what sgmesh writes (edited by hand): no record."""
    recorded = status.get("cniPolicy") if isinstance(status, Mapping) else None
    if recorded is None:
        return None
    try:
        return CniPolicyStatus.model_validate(recorded)
    except pydantic.ValidationError:
        return None


def cni_policy_arn(spec: NodeGroupMeshSpec, region: str) -> str:
    """The policy to attach: the spec's, or AmazonEKS_CNI_Policy in the region's partition."""
    if spec.cni_policy.policy_arn is not None:
        return spec.cni_policy.policy_arn
    return f"arn:{partition_of(region)}:iam::aws:policy/AmazonEKS_CNI_Policy"


def validate_cluster_name(cluster: str) -> str:
    if cluster == CLUSTER_NAME_PLACEHOLDER:
        raise InvalidSpecError(
            f"cluster name {cluster!r} is the placeholder of deploy/manager/deployment.yaml: set "
            "SGMESH_CLUSTER_NAME to the cluster's name (the EKS cluster's, where there is one)"
        )
    if len(cluster) > MAX_CLUSTER_NAME_LENGTH or not re.fullmatch(CLUSTER_NAME, cluster):
        raise InvalidSpecError(
            f"cluster name {cluster!r} is invalid: use 1-{MAX_CLUSTER_NAME_LENGTH} letters, "
            "digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return cluster

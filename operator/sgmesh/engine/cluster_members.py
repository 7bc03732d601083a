"""Members read from Kubernetes objects: Karpenter's EC2NodeClasses, VPC CNI ENIConfigs and
the VPC resource controller's SecurityGroupPolicies.

Some nodes have no ASG: Karpenter launches them with the security groups and node role of an
`EC2NodeClass` (karpenter.k8s.aws/v1). With VPC CNI custom networking, pods' ENIs carry the
security groups of an `ENIConfig` (crd.k8s.amazonaws.com/v1alpha1), not the node's. This module
turns those objects, as the API server returned them, into members:

- an EC2NodeClass: its SGs are `status.securityGroups[*].id` (what Karpenter resolved its
  selector terms to); its node role is `spec.role`, or the role of `spec.instanceProfile` /
  `status.instanceProfile`. Without `status.securityGroups` yet it is unresolved: removals
  are held, because what it needs is unknown;
- an ENIConfig: its SGs are `spec.securityGroups`; it has no role. One that lists no SG gives
  pods the node's SGs, which the node's own member brings: it adds nothing;
- a SecurityGroupPolicy (vpcresources.k8s.aws/v1beta1, namespaced, named "namespace/name"): with
  security groups for pods, the branch ENIs of the pods it selects carry
  `spec.securityGroups.groupIds`, and those alone; it has no role. The spec lists policies as
  "namespace/name", "namespace/*" (every policy of a namespace) or "*".

An object that is gone is not taken as "its SGs are free": deleting an ENIConfig stops no pod
(their ENIs keep its SGs until their node goes), a pod keeps the branch ENI a deleted
SecurityGroupPolicy gave it, and an EC2NodeClass's instances may outlive it. A named one that
does not exist holds every removal of the mesh until it exists or is no longer listed. With
`["*"]` (or "namespace/*") nothing is named, so the mesh's status is the memory
(`last_members`): an object that was a member at the last reconcile of the spec and is gone
stays a member as it last was (`_kept`), and holds every removal, until it is back, until a
person changes the spec, or, an EC2NodeClass, once no instance launched from it runs. A kind
whose CRD is not served keeps its last members the same way.

It also says whether aws-node (the VPC CNI) gets credentials of its own instead of the node
role's: through IRSA (its ServiceAccount carries `eks.amazonaws.com/role-arn`) or through EKS
Pod Identity (an association for kube-system/aws-node, or, when EKS cannot tell, pods whose
`aws-node` container carries the credentials variables the Pod Identity webhook injects). Then
the CNI policy belongs on that role, not on node roles.

Pure: the objects come from `sgmesh.kube.sources` (or a test) as plain mappings; no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sgmesh.api import models
from sgmesh.engine import topology

__all__ = [
    "AWS_NODE_CONTAINER",
    "AWS_NODE_NAMESPACE",
    "AWS_NODE_POD_LABELS",
    "AWS_NODE_SERVICE_ACCOUNT",
    "ENI_CONFIG",
    "IRSA_ANNOTATION",
    "NODE_CLASS",
    "NO_CLUSTER_MEMBERS",
    "POD_IDENTITY_VARIABLES",
    "SECURITY_GROUP_POLICY",
    "SOURCE_KINDS",
    "AssociationLookup",
    "AwsNodeCredentials",
    "ClusterMember",
    "ClusterMembers",
    "ClusterObjects",
    "CredentialKind",
    "Listing",
    "SourceKind",
    "attaches_cni",
    "irsa",
    "last_members",
    "member",
    "pod_identity_of_pods",
    "resolve",
    "selects",
]

AWS_NODE_NAMESPACE = "kube-system"
AWS_NODE_SERVICE_ACCOUNT = "aws-node"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
# The VPC CNI's DaemonSet labels its pods so; ipamd runs in their container `aws-node`.
AWS_NODE_POD_LABELS = "k8s-app=aws-node"
AWS_NODE_CONTAINER = "aws-node"
# What the EKS Pod Identity webhook injects into the containers of a pod whose ServiceAccount
# has an association: the SDKs then take their credentials from the Pod Identity agent.
POD_IDENTITY_VARIABLES = (
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
)


@dataclass(frozen=True)
class SourceKind:
    """A kind of Kubernetes object members come from, and where the spec lists them."""

    member_kind: topology.MemberKind
    group: str
    version: str
    plural: str
    field: str  # the spec's list of names, as written in YAML
    not_found: topology.ProblemKind
    # Namespaced objects are named "namespace/name", here and in the spec.
    namespaced: bool = False

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
SECURITY_GROUP_POLICY = SourceKind(
    topology.MemberKind.SECURITY_GROUP_POLICY,
    "vpcresources.k8s.aws",
    "v1beta1",
    "securitygrouppolicies",
    "spec.podSecurityGroups.policies",
    topology.ProblemKind.SECURITY_GROUP_POLICY_NOT_FOUND,
    namespaced=True,
)
SOURCE_KINDS = (NODE_CLASS, ENI_CONFIG, SECURITY_GROUP_POLICY)


@dataclass(frozen=True)
class Listing:
    """Every object of one kind in the cluster, by name; `installed` False when the API
    server does not serve the kind (its CRD, at that version, is not installed) or its CRD is
    being deleted, as `why` says when it is not the former."""

    installed: bool
    objects: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    why: str = ""


class CredentialKind(enum.StrEnum):
    IRSA = "IRSA"
    POD_IDENTITY = "PodIdentity"


@dataclass(frozen=True)
class AwsNodeCredentials:
    """aws-node's own credentials, instead of the node role's: the CNI policy belongs on
    `role_arn` (None when what showed them does not name it), not on node roles. `evidence`
    says what showed them, for a person to check."""

    kind: CredentialKind
    role_arn: str | None
    evidence: str
    # A Pod Identity association's, when EKS named it (its role is then one more read away).
    association_id: str | None = None

    def describe(self) -> str:
        if self.kind is CredentialKind.IRSA:
            return f"IRSA ({self.evidence})"
        return f"EKS Pod Identity ({self.evidence})"


@dataclass(frozen=True)
class AssociationLookup:
    """What EKS answered when asked for a Pod Identity association of kube-system/aws-node.

    `answered` False: EKS cannot tell (the question was denied, EKS knows no cluster of that
    name, the endpoint does not serve Pod Identity), and aws-node's pods decide; `why` says
    which. Answered, `credentials` is the association found, or None: there is none, and
    the pods are not asked (without an association the webhook injects nothing).
    """

    answered: bool
    credentials: AwsNodeCredentials | None = None
    why: str = ""


@dataclass(frozen=True)
class ClusterObjects:
    """What was read from the cluster for one mesh. A listing is None when the spec does not
    use its kind (it was not read); `aws_node_credentials` is None when aws-node has none of
    its own, or when the mesh does not attach the CNI policy (they were not read)."""

    node_classes: Listing | None = None
    eni_configs: Listing | None = None
    aws_node_credentials: AwsNodeCredentials | None = None
    security_group_policies: Listing | None = None


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
    # aws-node's own credentials (IRSA, EKS Pod Identity): when set, the CNI policy is not put
    # on node roles.
    aws_node_credentials: AwsNodeCredentials | None = None


# A mesh with no Kubernetes source, and a cluster that says nothing.
NO_CLUSTER_MEMBERS = ClusterMembers()


def attaches_cni(spec: models.NodeGroupMeshSpec, cluster: ClusterMembers) -> bool:
    """Whether the mesh puts the CNI policy on member node roles: as `cniPolicy.attach` says,
    unless aws-node has credentials of its own, IRSA or EKS Pod Identity (the policy then
    belongs on that role)."""
    return spec.cni_policy.attach and cluster.aws_node_credentials is None


def irsa(annotations: Mapping[str, str] | None) -> AwsNodeCredentials | None:
    """aws-node's IRSA role, from the annotations of its ServiceAccount."""
    role_arn = (annotations or {}).get(IRSA_ANNOTATION)
    if not role_arn:
        return None
    return AwsNodeCredentials(
        CredentialKind.IRSA,
        str(role_arn),
        f"ServiceAccount {AWS_NODE_NAMESPACE}/{AWS_NODE_SERVICE_ACCOUNT} has "
        f"{IRSA_ANNOTATION} {role_arn}",
    )


def pod_identity_of_pods(
    pods: Sequence[Mapping[str, Any]], why_not_eks: str = ""
) -> AwsNodeCredentials | None:
    """EKS Pod Identity, as aws-node's pods (as the API server returned them) show it: when
    every one of them has an `aws-node` container carrying the webhook's variables.

    Every pod, not some: a pod without them takes the node role's credentials, and taking
    Pod Identity for the whole DaemonSet would release the CNI policy from node roles it still
    needs. No pod shows nothing. `why_not_eks`: why EKS was not the one to say, for the
    evidence.
    """
    if not pods:
        return None
    names = []
    for pod in pods:
        containers = (pod.get("spec") or {}).get("containers") or []
        container = next(
            (
                c
                for c in containers
                if isinstance(c, Mapping) and c.get("name") == AWS_NODE_CONTAINER
            ),
            None,
        )
        if container is None:
            return None
        variables = {
            entry.get("name") for entry in container.get("env") or [] if isinstance(entry, Mapping)
        }
        if not set(POD_IDENTITY_VARIABLES) <= variables:
            return None
        names.append(str((pod.get("metadata") or {}).get("name", "?")))
    shown = ", ".join(sorted(names)[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    evidence = (
        f"the {AWS_NODE_CONTAINER} container of every aws-node pod ({shown}) carries "
        f"{' and '.join(POD_IDENTITY_VARIABLES)}, injected by the Pod Identity webhook"
    )
    if why_not_eks:
        evidence += f" (EKS could not tell: {why_not_eks})"
    return AwsNodeCredentials(CredentialKind.POD_IDENTITY, None, evidence)


def resolve(
    spec: models.NodeGroupMeshSpec,
    objects: ClusterObjects,
    last: Sequence[ClusterMember] = (),
) -> ClusterMembers:
    """The members the spec's Kubernetes sources name, and the problems that stand.

    `last`: the EC2NodeClasses, ENIConfigs and SecurityGroupPolicies that were members at the
    mesh's last reconcile (`last_members`; none for the command line, which keeps no status).
    One the spec still selects that cannot be read now, gone or of a kind not served, stays a
    member as it last was, and a problem holds every removal.
    """
    members: list[ClusterMember] = []
    problems: list[topology.Problem] = []
    for kind, names, listing in (
        (
            NODE_CLASS,
            spec.karpenter.node_classes if spec.karpenter is not None else None,
            objects.node_classes,
        ),
        (
            ENI_CONFIG,
            spec.custom_networking.eni_configs if spec.custom_networking is not None else None,
            objects.eni_configs,
        ),
        (
            SECURITY_GROUP_POLICY,
            spec.pod_security_groups.policies if spec.pod_security_groups is not None else None,
            objects.security_group_policies,
        ),
    ):
        if names is None:
            continue
        found, standing = _select(
            kind, names, listing, [each for each in last if each.kind is kind.member_kind]
        )
        members.extend(found)
        problems.extend(standing)
    return ClusterMembers(tuple(members), tuple(problems), objects.aws_node_credentials)


def last_members(
    status: Mapping[str, Any] | None, generation: int | None
) -> tuple[ClusterMember, ...]:
    """The EC2NodeClasses, ENIConfigs and SecurityGroupPolicies a mesh's status (as the API
    server holds it) lists as members with SGs: what its last reconcile meshed of them.

    None when the status was written for another generation of the spec: a person who changes
    the spec has the mesh start again from what the cluster holds. (A reconcile that fails
    writes the new generation and leaves the members: the memory then outlives the change,
    which errs on holding.) A member listed without an SG is not remembered: nothing of it is
    left to keep meshed.
    """
    if not status or generation is None or status.get("observedGeneration") != generation:
        return ()
    kinds = {kind.kind: kind for kind in SOURCE_KINDS}
    remembered: dict[tuple[str, str], ClusterMember] = {}
    entries = status.get("members")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        kind, name = kinds.get(str(entry.get("kind"))), entry.get("name")
        if kind is None or not isinstance(name, str) or not name:
            continue
        group_ids, _ = _group_ids(name, "securityGroupIds", entry.get("securityGroupIds") or [])
        roles = entry.get("roleNames")
        if group_ids:
            remembered[(kind.kind, name)] = ClusterMember(
                kind.member_kind,
                name,
                group_ids,
                role_names=tuple(role for role in roles if isinstance(role, str) and role)
                if isinstance(roles, list)
                else (),
            )
    return tuple(remembered.values())


def selects(names: Sequence[str], name: str) -> bool:
    """Whether a spec's list of `names` selects the object `name` ("namespace/name" for a
    namespaced kind): by its name, by "*", or by "namespace/*"."""
    if models.EVERY in names or name in names:
        return True
    namespace, slash, _ = name.partition("/")
    return bool(slash) and f"{namespace}/{models.EVERY}" in names


def _select(
    kind: SourceKind, names: list[str], listing: Listing | None, last: Sequence[ClusterMember]
) -> tuple[list[ClusterMember], list[topology.Problem]]:
    """The members of one kind, with those of `last` the spec still selects that are gone
    (kept, `_kept`), and the problems. A name ending in "*" ("*", "namespace/*") selects
    what exists, and what of it is gone is known from `last` alone; any other name is looked
    for, and is a problem when it does not exist."""
    patterns = [name for name in names if name.endswith(models.EVERY)]
    named = [name for name in names if name not in patterns]
    remembered = {each.name: each for each in last if selects(names, each.name)}
    if listing is None or not listing.installed:
        why = listing.why if listing is not None and listing.why else "is its CRD installed?"
        return [_kept(kind, each) for each in remembered.values()], [
            topology.Problem(
                topology.ProblemKind.SOURCE_NOT_INSTALLED,
                kind.crd_name,
                f"{kind.field} lists {kind.kind}s, but the cluster does not serve "
                f"{kind.crd_name}/{kind.version} ({why}); removals are held until it does",
            )
        ]
    present = listing.objects
    found = dict.fromkeys(
        [
            *(name for name in sorted(present) if selects(patterns, name)),
            *(name for name in named if name in present),
        ]
    )
    members = [member(kind, name, present[name]) for name in found]
    gone = [each for name, each in sorted(remembered.items()) if name not in present]
    members.extend(_kept(kind, each) for each in gone)
    return members, [
        *(_gone(kind, each) for each in gone if selects(patterns, each.name)),
        *(
            topology.Problem(
                kind.not_found,
                name,
                f"{kind.kind} {name} (listed in {kind.field}) does not exist; removals are "
                "held until it does or it is no longer listed",
            )
            for name in named
            if name not in present
        ),
    ]


def _kept(kind: SourceKind, last: ClusterMember) -> ClusterMember:
    """A member gone from the cluster (or of a kind not served), as it stays while removals
    are held. An ENIConfig keeps the SGs it last had: pods' ENIs carry them until their node
    goes, and nothing read in AWS tells which still do. An EC2NodeClass keeps its role and no
    SG of its own: discovery adds those its running instances (tagged with its name) carry, so
    that once none runs it contributes no SG, and the status no longer remembers it."""
    return replace(last, security_group_ids=()) if kind is NODE_CLASS else last


def _gone(kind: SourceKind, last: ClusterMember) -> topology.Problem:
    if kind is NODE_CLASS:
        kept = "the SGs its running instances carry stay meshed"
        until = "it is back, no instance launched from it runs, or the mesh's spec changes"
    else:
        kept = f"its SGs ({', '.join(last.security_group_ids)}) stay meshed"
        until = "it is back or the mesh's spec changes"
    return topology.Problem(
        kind.not_found,
        last.name,
        f"{kind.kind} {last.name} was a member at the last reconcile and is gone: {kept}, "
        f"and removals are held, until {until}",
    )


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


def _security_group_policy(name: str, body: Mapping[str, Any]) -> ClusterMember:
    title = f"{SECURITY_GROUP_POLICY.kind} {name}"
    spec: Mapping[str, Any] = body.get("spec") or {}
    groups = spec.get("securityGroups")
    group_ids, unresolved = _group_ids(
        title,
        "spec.securityGroups.groupIds",
        (groups.get("groupIds") or []) if isinstance(groups, Mapping) else [],
    )
    return ClusterMember(
        kind=SECURITY_GROUP_POLICY.member_kind,
        name=name,
        security_group_ids=group_ids,
        unresolved_groups=unresolved,
    )


def member(kind: SourceKind, name: str, body: Mapping[str, Any]) -> ClusterMember:
    """What one EC2NodeClass, ENIConfig or SecurityGroupPolicy ("namespace/name") contributes
    to the meshes that list it."""
    if kind is NODE_CLASS:
        return _node_class(name, body)
    if kind is SECURITY_GROUP_POLICY:
        return _security_group_policy(name, body)
    return _eni_config(name, body)

"""What discovery found in AWS: the members of a mesh and the state the planner works from.

These are plain frozen values so that the planner stays a pure function and property tests
can build any world without AWS. Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from sgmesh.engine.ingress import IngressRule, PrefixList

__all__ = [
    "HOLDING_PROBLEMS",
    "Member",
    "MemberKind",
    "Problem",
    "ProblemKind",
    "RoleState",
    "Topology",
]


class MemberKind(enum.StrEnum):
    AUTO_SCALING_GROUP = "AutoScalingGroup"
    SECURITY_GROUP = "SecurityGroup"
    EC2_NODE_CLASS = "EC2NodeClass"
    ENI_CONFIG = "ENIConfig"
    SECURITY_GROUP_POLICY = "SecurityGroupPolicy"


@dataclass(frozen=True)
class Member:
    """A member of the mesh with what it resolved to: an ASG, a security group listed or
    selected in the spec, an EC2NodeClass, an ENIConfig or a SecurityGroupPolicy (`kind`).

    `security_group_ids` are every SG the member's nodes have: those its launch data (or node
    class, ENIConfig) names and those its running instances still carry. `draining` are the
    latter that the launch data no longer names (a rollout in progress), each with the number
    of running instances that carry it: they are member SGs like the others, until no running
    instance carries them any more."""

    name: str
    security_group_ids: tuple[str, ...]
    role_names: tuple[str, ...] = ()
    vpc_id: str | None = None
    kind: MemberKind = MemberKind.AUTO_SCALING_GROUP
    # Compared, but left out of the hash: a mapping has none, and equal members still hash
    # alike.
    draining: Mapping[str, int] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class RoleState:
    name: str
    attached_policy_arns: frozenset[str]
    tags: Mapping[str, str] = field(default_factory=dict)


class ProblemKind(enum.StrEnum):
    """Why part of a mesh cannot converge; the values are status condition reasons."""

    AUTO_SCALING_GROUP_NOT_FOUND = "AutoScalingGroupNotFound"
    SECURITY_GROUP_NOT_FOUND = "SecurityGroupNotFound"
    # An EC2NodeClass, ENIConfig or SecurityGroupPolicy the spec names, or that was a member at
    # the last reconcile, is gone. Unlike an ASG's deletion, an object's deletion stops no node:
    # pods' ENIs keep an ENIConfig's or a SecurityGroupPolicy's SGs, and instances may outlive
    # their node class. Removals are held.
    EC2_NODE_CLASS_NOT_FOUND = "EC2NodeClassNotFound"
    ENI_CONFIG_NOT_FOUND = "ENIConfigNotFound"
    SECURITY_GROUP_POLICY_NOT_FOUND = "SecurityGroupPolicyNotFound"
    # The EC2NodeClass, ENIConfig or SecurityGroupPolicy CRD is not installed, is being deleted,
    # or was uninstalled: the members it held cannot be told (their nodes may still run), so
    # removals are held as for UNRESOLVED.
    SOURCE_NOT_INSTALLED = "MemberSourceNotInstalled"
    UNRESOLVED = "MemberUnresolved"
    QUOTA_EXCEEDED = "QuotaExceeded"
    VPC_MISMATCH = "VpcMismatch"
    # A member SG outside the cluster's VPC: nothing is written to or about it.
    MEMBER_OUTSIDE_CLUSTER = "MemberOutsideCluster"
    # A member SG without the tag the operator's --member-tag requires.
    MEMBER_NOT_ALLOWED = "MemberNotAllowed"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    subject: str
    message: str


@dataclass(frozen=True)
class Topology:
    """A mesh's members and what AWS holds that concerns them.

    - `ingress_rules`: every inbound rule of every member SG, plus every rule anywhere that
      carries this mesh's ownership tag.
    - `counted_group_ids`: the SGs whose inbound rules were all read (quota counts need that).
    - `security_group_vpcs`: member SG → VPC, for the SGs that exist.
    - `prefix_lists`: the prefix lists the rules of counted SGs reference, by id.
    - `rules_per_security_group`: the account's applied quota, when it was read (Service
      Quotas); None: the operator's setting applies.
    - `roles`: every member role, plus every role found carrying this mesh's ownership tag
      (with `cniPolicy.attach: false` member roles are not read: none are needed).
    - `problems`: what discovery could not resolve. One in `HOLDING_PROBLEMS` (a member that
      is `UNRESOLVED`, a source gone or not installed) makes the planner hold every removal,
      because what the membership needs is unknown.
    """

    members: tuple[Member, ...] = ()
    ingress_rules: tuple[IngressRule, ...] = ()
    counted_group_ids: frozenset[str] = frozenset()
    security_group_vpcs: Mapping[str, str] = field(default_factory=dict)
    prefix_lists: Mapping[str, PrefixList] = field(default_factory=dict)
    rules_per_security_group: int | None = None
    roles: Mapping[str, RoleState] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()

    @property
    def member_role_names(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for member in self.members:
            for role in member.role_names:
                seen.setdefault(role, None)
        return tuple(seen)

    @property
    def complete(self) -> bool:
        return not any(problem.kind in HOLDING_PROBLEMS for problem in self.problems)


# Problems that leave part of the membership unknown: every removal is held while one stands.
HOLDING_PROBLEMS = frozenset(
    {
        ProblemKind.UNRESOLVED,
        ProblemKind.SOURCE_NOT_INSTALLED,
        ProblemKind.EC2_NODE_CLASS_NOT_FOUND,
        ProblemKind.ENI_CONFIG_NOT_FOUND,
        ProblemKind.SECURITY_GROUP_POLICY_NOT_FOUND,
    }
)

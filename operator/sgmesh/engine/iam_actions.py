"""Which IAM actions a set of identity-policy documents allows: what `doctor` asks of the role
that gives aws-node its credentials (a node role, or aws-node's own through IRSA or EKS Pod
Identity), whatever its policies are called.

An action is allowed when some `Allow` statement names it (`Action`, with IAM's `*` and `?`
wildcards, or `NotAction` that leaves it out) and no `Deny` statement does. The VPC CNI's needs
are whole actions, so this is evaluated by action:

- an `Allow` counts whatever its `Resource` and `Condition` (the CNI's own policies scope
  `ec2:CreateTags` to network interfaces; doctor does not second-guess a narrower scope);
- a `Deny` counts only when it applies everywhere (`Resource` `*`, no `Condition`): a
  narrower deny takes away part of an action, which doctor cannot weigh.

Why not a library: the well-known Python ones either expand wildcards from a bundled copy of
AWS's action list that is years old (policyuniverse, last released 2023), lint policies
(parliament), or write them (policy_sentry); none answers "which of these actions does this
set of documents allow" with Deny and NotAction, which is a screenful of code.

Pure: documents in, actions out; no I/O, no AWS library.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CNI_ACTIONS",
    "Statement",
    "allowed",
    "missing",
    "statements",
]

# The VPC CNI's permissions per IP family, as the VPC CNI documents them (docs/iam-policy.md of
# amazon-vpc-cni-k8s: "IPv4 mode" is AmazonEKS_CNI_Policy, "IPv6 mode" the policy the EKS
# guide has every IPv6 cluster create, usually as AmazonEKS_CNI_IPv6_Policy). Newer versions
# of the managed policy add reads for optional features; these are what ipamd needs to start.
CNI_ACTIONS: Mapping[int, tuple[str, ...]] = {
    4: (
        "ec2:AssignPrivateIpAddresses",
        "ec2:AttachNetworkInterface",
        "ec2:CreateNetworkInterface",
        "ec2:CreateTags",
        "ec2:DeleteNetworkInterface",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeInstances",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeTags",
        "ec2:DetachNetworkInterface",
        "ec2:ModifyNetworkInterfaceAttribute",
        "ec2:UnassignPrivateIpAddresses",
    ),
    6: (
        "ec2:AssignIpv6Addresses",
        "ec2:CreateTags",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeInstances",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeTags",
    ),
}


@dataclass(frozen=True)
class Statement:
    """One statement of an identity policy, as far as actions go."""

    allow: bool
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    everywhere: bool = True  # Resource "*" and no Condition

    def names(self, action: str) -> bool:
        if self.not_actions:
            return not any(_matches(pattern, action) for pattern in self.not_actions)
        return any(_matches(pattern, action) for pattern in self.actions)


def _matches(pattern: str, action: str) -> bool:
    """IAM matches action names case-insensitively, `*` any run of characters, `?` one."""
    return re.fullmatch(fnmatch.translate(pattern.lower()), action.lower()) is not None


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence):
        return tuple(str(item) for item in value)
    return ()


def statements(document: Mapping[str, Any]) -> tuple[Statement, ...]:
    """The statements of a policy document (as IAM returns it, decoded from JSON). A single
    statement may be written without the list, as IAM allows."""
    raw = document.get("Statement", [])
    listed = [raw] if isinstance(raw, Mapping) else list(raw)
    found = []
    for item in listed:
        if not isinstance(item, Mapping):
            continue
        resources = _strings(item.get("Resource", "*"))
        found.append(
            Statement(
                allow=str(item.get("Effect", "")) == "Allow",
                actions=_strings(item.get("Action")),
                not_actions=_strings(item.get("NotAction")),
                everywhere="*" in resources
                and "NotResource" not in item
                and not item.get("Condition"),
            )
        )
    return tuple(found)


def allowed(policy: Iterable[Statement], action: str) -> bool:
    pooled = tuple(policy)
    if any(not s.allow and s.everywhere and s.names(action) for s in pooled):
        return False
    return any(s.allow and s.names(action) for s in pooled)


def missing(policy: Iterable[Statement], actions: Iterable[str]) -> tuple[str, ...]:
    """The actions among `actions` that the statements do not allow, in their order."""
    pooled = tuple(policy)
    return tuple(action for action in actions if not allowed(pooled, action))

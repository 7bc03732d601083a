"""Karpenter's EC2NodeClass objects for tests: manifests that Karpenter's real schema
(karpenter.k8s.aws/v1, installed by the `ec2nodeclass_crd` fixture) accepts, and the status
Karpenter would write once it has resolved them.

What the schema insists on, so that a test's object is one a cluster could hold:

- `spec.amiSelectorTerms`, `spec.securityGroupSelectorTerms`, `spec.subnetSelectorTerms`:
  required, at least one term each, every term naming something (tags, an id, a name...);
- exactly one of `spec.role` and `spec.instanceProfile`, neither of them empty;
- `spec.amiFamily` unless an AMI term is an `alias` (`al2023@latest` here, which must then be
  the only AMI term);
- ids match `sg-…`, `subnet-…`, `ami-…`; tag keys and values are not empty.

Karpenter resolves the selectors into `status` (a subresource: written apart from the spec):
`status.securityGroups` (`[{id, name}]`, `id` required), `status.instanceProfile` (the one it
made from `spec.role`, or `spec.instanceProfile`), `status.subnets` (`[{id, zone, zoneID}]`,
`id` and `zone` required) and `status.conditions`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from devtools.nodes import Kubectl

__all__ = [
    "API_VERSION",
    "DISCOVERY_TAG",
    "KIND",
    "RESOURCE",
    "ec2nodeclass",
    "ec2nodeclass_status",
    "write_ec2nodeclass_status",
]

API_VERSION = "karpenter.k8s.aws/v1"
KIND = "EC2NodeClass"
# Fully qualified for kubectl, so that no other API group's short name can shadow it.
RESOURCE = "ec2nodeclasses.karpenter.k8s.aws"
# The tag Karpenter's getting-started guide selects a cluster's SGs and subnets by.
DISCOVERY_TAG = "karpenter.sh/discovery"
AMI_ALIAS = "al2023@latest"
# When Karpenter first saw the class; any fixed time will do for tests.
TRANSITION_TIME = "2025-01-01T00:00:00Z"


def ec2nodeclass(
    name: str,
    role: str | None = None,
    instance_profile: str | None = None,
    *,
    security_group_ids: Sequence[str] = (),
    subnet_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """An EC2NodeClass the schema accepts. It names exactly one of `role` (Karpenter makes an
    instance profile for it) and `instance_profile`. SGs and subnets are selected by id when
    given, else by the tag `karpenter.sh/discovery: <name>`; the AMI is the AL2023 alias."""
    if (role is None) == (instance_profile is None):
        raise ValueError("an EC2NodeClass names exactly one of role and instance_profile")
    discovery = [{"tags": {DISCOVERY_TAG: name}}]
    spec: dict[str, Any] = {
        "amiSelectorTerms": [{"alias": AMI_ALIAS}],
        "securityGroupSelectorTerms": [{"id": id_} for id_ in security_group_ids] or discovery,
        "subnetSelectorTerms": [{"id": id_} for id_ in subnet_ids] or discovery,
    }
    if role is not None:
        spec["role"] = role
    else:
        spec["instanceProfile"] = instance_profile
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


def ec2nodeclass_status(
    security_groups: Mapping[str, str],
    instance_profile: str | None = None,
    subnets: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The status Karpenter writes once it has resolved a class: its SGs (id → name), the
    instance profile its nodes launch with, its subnets (id → availability zone), and
    `Ready=True`."""
    status: dict[str, Any] = {
        "securityGroups": [{"id": id_, "name": name} for id_, name in security_groups.items()],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Ready",
                "message": "",
                "lastTransitionTime": TRANSITION_TIME,
            }
        ],
    }
    if instance_profile is not None:
        status["instanceProfile"] = instance_profile
    if subnets:
        status["subnets"] = [{"id": id_, "zone": zone} for id_, zone in subnets.items()]
    return status


def write_ec2nodeclass_status(
    kubectl: Kubectl, name: str, status: Mapping[str, Any]
) -> dict[str, Any]:
    """Write `status` through the status subresource, as Karpenter does (a merge patch: each
    list given replaces the one there); the EC2NodeClass as the server then holds it."""
    result = kubectl(
        "patch",
        RESOURCE,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        "-o",
        "json",
    )
    if result.returncode != 0:
        raise AssertionError(f"writing the status of EC2NodeClass {name}: {result.stderr}")
    return dict(json.loads(result.stdout))

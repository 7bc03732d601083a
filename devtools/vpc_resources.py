"""The VPC resource controller's SecurityGroupPolicy objects for tests, as its real schema
(vpcresources.k8s.aws/v1beta1, installed by the `securitygrouppolicy_crd` fixture) accepts them.

With security groups for pods, the controller gives each pod a policy selects (by pod labels or
ServiceAccount labels) a branch ENI carrying `spec.securityGroups.groupIds`, and those alone:
they filter the pod's traffic whatever the node's SGs say. The kind is namespaced and a policy
selects pods of its own namespace only. The schema requires at least one group id when
`spec.securityGroups` is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["API_VERSION", "KIND", "RESOURCE", "security_group_policy"]

API_VERSION = "vpcresources.k8s.aws/v1beta1"
KIND = "SecurityGroupPolicy"
# Fully qualified for kubectl, so that no other API group's short name can shadow it.
RESOURCE = "securitygrouppolicies.vpcresources.k8s.aws"


def security_group_policy(
    namespace: str,
    name: str,
    group_ids: Sequence[str],
    pod_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A SecurityGroupPolicy giving the pods of `namespace` matching `pod_labels` (default:
    `app: <name>`) branch ENIs with `group_ids`."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": dict(pod_labels or {"app": name})},
            "securityGroups": {"groupIds": list(group_ids)},
        },
    }

"""The VPC CNI's ENIConfig objects for tests, as its real schema (crd.k8s.amazonaws.com/v1alpha1,
installed by the `eniconfig_crd` fixture) accepts them.

With custom networking, aws-node gives a node's pods ENIs in the ENIConfig's subnet with its
security groups, not the node's: those SGs filter pod traffic. The schema requires
`spec.subnet`; `spec.securityGroups` is optional (without it the pods' ENIs get the node's
primary ENI's SGs). It has no status subresource and keeps unknown top-level fields. Clusters
usually name ENIConfigs after availability zones (aws-node picks one per node by the label
`ENI_CONFIG_LABEL_DEF` names, often `topology.kubernetes.io/zone`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["API_VERSION", "KIND", "RESOURCE", "eniconfig"]

API_VERSION = "crd.k8s.amazonaws.com/v1alpha1"
KIND = "ENIConfig"
# Fully qualified for kubectl, so that no other API group's short name can shadow it.
RESOURCE = "eniconfigs.crd.k8s.amazonaws.com"


def eniconfig(name: str, security_groups: Sequence[str], subnet: str) -> dict[str, Any]:
    """An ENIConfig giving pods ENIs in `subnet` with `security_groups`."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"securityGroups": list(security_groups), "subnet": subnet},
    }

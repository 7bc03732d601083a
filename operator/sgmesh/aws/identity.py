"""The cluster's identity: its name, and what EKS knows of it — the VPC that bounds every mesh,
the cluster security group, the IP family.

The name is given (`--cluster`, required: it is part of every ownership tag, and two clusters
must never share one). Where EKS's `DescribeCluster` answers for the name, the VPC comes from
its `resourcesVpcConfig` (the VPC id, else the VPC of its subnets); a `--vpc-id` given as well
must agree. Where EKS answers that it has no cluster of that name (a cluster EKS does not
manage), `--vpc-id` gives the VPC. When neither can, `resolve` says which setting to give:
sgmesh never acts in "any VPC".

Reads only. A failure other than "no such cluster" is never read as "not in EKS": it
propagates, unless `--vpc-id` already says where the cluster is (EKS would only confirm it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sgmesh.aws import client, errors

__all__ = ["ClusterIdentity", "UnknownCluster", "resolve"]

IPV4 = "ipv4"
IPV6 = "ipv6"


class UnknownCluster(Exception):
    """No VPC can be known for the cluster: the message names the settings to give."""


@dataclass(frozen=True)
class ClusterIdentity:
    """`source` says where the VPC came from: `eks:DescribeCluster` or `--vpc-id`."""

    name: str
    vpc_id: str
    source: str
    security_group_id: str | None = None
    ip_family: str = IPV4

    def describe(self) -> str:
        extra = f", cluster SG {self.security_group_id}" if self.security_group_id else ""
        return (
            f"cluster {self.name}: VPC {self.vpc_id} (from {self.source}), {self.ip_family}{extra}"
        )


def resolve(clients: client.AwsClients, name: str, vpc_id: str | None = None) -> ClusterIdentity:
    """The identity of cluster `name` in the clients' region; `vpc_id`: `--vpc-id`, if given."""
    try:
        answer = clients.eks.describe_cluster(name=name)["cluster"]
    except errors.ERRORS as error:
        if errors.answered(error, errors.EKS_CLUSTER_ABSENT):
            if vpc_id:
                return ClusterIdentity(name, vpc_id, "--vpc-id")
            raise UnknownCluster(
                f"EKS has no cluster named {name!r} in {clients.region}, so its VPC cannot be "
                "known: give the cluster's VPC with --vpc-id (env SGMESH_VPC_ID), or the EKS "
                "cluster's name with --cluster (env SGMESH_CLUSTER_NAME)"
            ) from None
        if vpc_id:
            # The VPC is given: EKS would only have confirmed it (and told the cluster SG).
            failure = clients.classify(error)
            return ClusterIdentity(name, vpc_id, f"--vpc-id; {failure.describe()}")
        raise
    config = answer.get("resourcesVpcConfig", {})
    found = config.get("vpcId") or _vpc_of_subnets(clients, config.get("subnetIds", []))
    if not found:
        raise UnknownCluster(
            f"EKS cluster {name!r} names no VPC and no subnet of one: give the cluster's VPC "
            "with --vpc-id (env SGMESH_VPC_ID)"
        )
    if vpc_id and vpc_id != found:
        raise UnknownCluster(
            f"--vpc-id (env SGMESH_VPC_ID) {vpc_id} is not the VPC of EKS cluster {name!r} "
            f"({found}): leave it out, or name the right cluster with --cluster"
        )
    family = answer.get("kubernetesNetworkConfig", {}).get("ipFamily", IPV4)
    return ClusterIdentity(
        name,
        found,
        "eks:DescribeCluster",
        security_group_id=config.get("clusterSecurityGroupId") or None,
        ip_family=IPV6 if str(family).lower() == IPV6 else IPV4,
    )


def _vpc_of_subnets(clients: client.AwsClients, subnet_ids: Sequence[str]) -> str | None:
    """The one VPC of the cluster's subnets (all of a cluster's subnets are in its VPC)."""
    if not subnet_ids:
        return None
    answer = clients.ec2.describe_subnets(
        Filters=[{"Name": "subnet-id", "Values": sorted(set(subnet_ids))}]
    )
    vpcs = {subnet["VpcId"] for subnet in answer.get("Subnets", []) if "VpcId" in subnet}
    return vpcs.pop() if len(vpcs) == 1 else None

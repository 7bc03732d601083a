"""The cluster a command acts for: its name (required) and where AWS says it is — the VPC that
bounds every mesh (`sgmesh.aws.identity`) — resolved before anything is read or written.

It must never let a command act without a VPC: no VPC is a clear error naming the two settings
that give one, never "any VPC".
"""

from __future__ import annotations

import argparse
import dataclasses

from sgmesh.aws import client, errors, identity, reconcile
from sgmesh.cli import settings
from sgmesh.engine import planning

__all__ = ["ClusterError", "bounded"]


class ClusterError(Exception):
    """The cluster's identity could not be told: the message says why and what to give."""


def bounded(
    arguments: argparse.Namespace, pipeline: reconcile.Settings
) -> tuple[reconcile.Settings, identity.ClusterIdentity]:
    """`pipeline` bounded by the cluster's VPC (and `--member-tag`), and the identity found.

    The cluster is looked up in the command's region (--region, SGMESH_REGION or AWS_REGION):
    a usage error without one."""
    region = arguments.region
    if not region:
        raise settings.UsageError(
            "no region to find the cluster in: --region, env SGMESH_REGION or AWS_REGION"
        )
    clients = client.make_clients(region, max_attempts=4)
    try:
        found = identity.resolve(clients, pipeline.cluster, arguments.vpc_id)
    except identity.UnknownCluster as error:
        raise ClusterError(str(error)) from None
    except errors.ERRORS as error:
        raise ClusterError(
            f"cannot tell where cluster {pipeline.cluster!r} is: "
            f"{clients.classify(error).describe()}"
        ) from None
    boundary = planning.Boundary(vpc_id=found.vpc_id, member_tag=arguments.member_tag)
    return dataclasses.replace(pipeline, boundary=boundary, ip_family=found.ip_family), found

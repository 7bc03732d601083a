"""`sgmesh iam-policy`: print the operator's least-privilege IAM policy for one cluster (JSON).

The document is `sgmesh.api.iam_policy`'s; this module only turns flags into its
`ClusterScope`. With `--vpc-id` the command is offline. Without it, the cluster's VPC is what
EKS's DescribeCluster answers for `--cluster` (`sgmesh.aws.identity`), in `--region` or the
environment's region, and the policy then names that region.

Exit codes (`sgmesh.cli.exit_codes`): 0 printed, 1 the VPC could not be known from AWS,
64 a bad flag. It never prints a policy that allows writes in "any VPC".
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from sgmesh.api import iam_policy, models
from sgmesh.aws import client, errors, identity
from sgmesh.cli import exit_codes, settings

__all__ = ["add_arguments", "run"]

_VPC_ID = re.compile(r"vpc-[0-9a-f]{8}([0-9a-f]{9})?")
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_PARTITION = re.compile(r"aws(-[a-z]+)*")


def _checked(pattern: re.Pattern[str], example: str) -> Callable[[str], str]:
    """An argparse `type`: a value `pattern` matches whole, else an error showing `example`."""

    def parse(text: str) -> str:
        if not pattern.fullmatch(text):
            raise argparse.ArgumentTypeError(f"must look like {example}, not {text!r}")
        return text

    return parse


def _cluster_name(text: str) -> str:
    try:
        return models.validate_cluster_name(text)
    except models.InvalidSpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--cluster", required=True, type=_cluster_name, help="the EKS cluster's name"
    )
    command.add_argument(
        "--vpc-id",
        type=_checked(_VPC_ID, "vpc-0123456789abcdef0"),
        help="the cluster's VPC; default: the VPC EKS's DescribeCluster answers for --cluster",
    )
    command.add_argument(
        "--partition",
        type=_checked(_PARTITION, "aws, aws-cn or aws-us-gov"),
        help="default: the partition of --region, else aws",
    )
    command.add_argument(
        "--region",
        type=_checked(re.compile(models.REGION), "eu-west-1"),
        help="the cluster's region; default: any (*), or, when EKS is asked for the VPC, the "
        "region asked (AWS_REGION)",
    )
    command.add_argument(
        "--account",
        type=_checked(_ACCOUNT_ID, "111122223333"),
        help="the cluster's AWS account id; default: any (*)",
    )


def _check_partition(partition: str | None, region: str | None) -> None:
    if region and partition and models.partition_of(region) != partition:
        raise settings.UsageError(
            f"--partition {partition} is not the partition of region {region} "
            f"({models.partition_of(region)})"
        )


def run(arguments: argparse.Namespace) -> int:
    region: str | None = arguments.region
    vpc_id: str | None = arguments.vpc_id
    _check_partition(arguments.partition, region)  # before AWS is asked anything
    if vpc_id is None:
        region = region or client.default_region()
        if not region:
            raise settings.UsageError(
                "no region to ask EKS for the cluster's VPC in: give --vpc-id, or --region "
                "(or AWS_REGION)"
            )
        _check_partition(arguments.partition, region)
        clients = client.make_clients(region=region)
        try:
            vpc_id = identity.resolve(clients, arguments.cluster).vpc_id
        except identity.UnknownCluster as error:
            print(f"error: {error}", file=sys.stderr)
            return exit_codes.ERROR
        except errors.ERRORS as error:
            failure = clients.classify(error)
            print(f"error: the cluster's VPC: {failure.describe()}", file=sys.stderr)
            return exit_codes.ERROR
    partition = arguments.partition or (models.partition_of(region) if region else "aws")
    scope = iam_policy.ClusterScope(
        cluster=arguments.cluster,
        vpc_id=vpc_id,
        partition=partition,
        region=region or iam_policy.ANY,
        account=arguments.account or iam_policy.ANY,
    )
    sys.stdout.write(iam_policy.render(scope))
    return exit_codes.OK

"""AWS clients for the pipeline, one set per region.

Clients come from the standard environment (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL`),
retry throttling and 5xx with botocore's standard retry mode, and count every call by
operation so that the CLI, the benchmark and the metrics report the same figures.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config

from sgmesh.aws import errors
from sgmesh.aws import shared_reads as sharing

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_eks import EKSClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_service_quotas import ServiceQuotasClient

__all__ = [
    "MUTATING_OPERATIONS",
    "AwsClients",
    "CallListener",
    "ClientsByRegion",
    "default_region",
    "make_clients",
]

# Operations that change AWS; everything else the pipeline calls only reads.
MUTATING_OPERATIONS = frozenset(
    {
        "AuthorizeSecurityGroupIngress",
        "RevokeSecurityGroupIngress",
        "CreateTags",
        "DeleteTags",
        "AttachRolePolicy",
        "DetachRolePolicy",
        "TagRole",
        "UntagRole",
    }
)

CallListener = Callable[[str, str], None]
"""Called with (service, operation) before each API call (after retries are not counted)."""


@dataclass
class AwsClients:
    ec2: EC2Client
    autoscaling: AutoScalingClient
    iam: IAMClient
    servicequotas: ServiceQuotasClient
    eks: EKSClient
    region: str
    calls: Counter[str] = field(default_factory=Counter)
    # The service of the last call each thread made: an error names an operation only, and
    # some operations exist in several services (autoscaling and ec2 both have DeleteTags).
    _last_call: threading.local = field(default_factory=threading.local, repr=False)
    # Read answers shared with the other clients of the process (the operator's), if any.
    shared_reads: sharing.SharedReads | None = None

    @property
    def mutating_calls(self) -> int:
        return sum(n for operation, n in self.calls.items() if operation in MUTATING_OPERATIONS)

    @contextlib.contextmanager
    def reads_shared(self) -> Iterator[None]:
        """Reads inside may be answered from what another discovery just read (see
        `sgmesh.aws.shared_reads`); without shared reads, a plain block."""
        if self.shared_reads is None:
            yield
            return
        with self.shared_reads.sharing():
            yield

    def classify(self, error: BaseException) -> errors.AwsFailure:
        """`classify`, knowing which service this thread's last call went to, and naming the
        region (meshes may each have their own; a wrong one must show in the message)."""
        failure = errors.classify(error, service=getattr(self._last_call, "service", None))
        return replace(failure, region=self.region)


def default_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def make_clients(
    region: str | None = None,
    session: boto3.Session | None = None,
    max_attempts: int = 8,
    listener: CallListener | None = None,
    max_pool_connections: int = 10,
    *,
    shared_reads: sharing.SharedReads | None = None,
) -> AwsClients:
    """Clients for one region; IAM is global but is reached through the region's partition.

    `shared_reads`: one instance for every region's clients of the process, so that a write
    through any of them forgets every shared answer (IAM is the same in every region)."""
    session = session or boto3.Session()
    resolved = region or session.region_name or default_region()
    if not resolved:
        raise ValueError(
            "no AWS region: set spec.region, --region, or AWS_REGION in the environment"
        )
    config = botocore.config.Config(
        region_name=resolved,
        # total_max_attempts counts the first try too ("max_attempts" would count retries only).
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        # One connection per worker thread that may call at once (botocore's default is 10).
        max_pool_connections=max_pool_connections,
        connect_timeout=5,
        read_timeout=30,
        user_agent_extra="sgmesh",
    )
    clients = AwsClients(
        ec2=session.client("ec2", config=config),
        autoscaling=session.client("autoscaling", config=config),
        iam=session.client("iam", config=config),
        # Service Quotas: the applied rules-per-security-group quota of the account.
        servicequotas=session.client("service-quotas", config=config),
        # EKS: the cluster's identity (its VPC, cluster SG, IP family) and Pod Identity.
        eks=session.client("eks", config=config),
        region=resolved,
        shared_reads=shared_reads,
    )

    def count(model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        clients._last_call.service = service
        clients.calls[model.name] += 1
        if listener is not None:
            listener(service, model.name)

    for client in (
        clients.ec2,
        clients.autoscaling,
        clients.iam,
        clients.servicequotas,
        clients.eks,
    ):
        if shared_reads is not None:
            shared_reads.register(client.meta.events)  # first: a served answer is no call
        client.meta.events.register("before-call.*.*", count)
    return clients


class ClientsByRegion:
    """The operator's clients: one set per region, made on first use, all from one session.

    One session for every region: its loader reads each service model once (about 28 MiB per
    region with a session each). Clients are made on the event loop only, one at a time, so
    the session is never used from two threads at once.
    """

    def __init__(
        self,
        *,
        max_attempts: int,
        listener: CallListener,
        max_pool_connections: int,
        shared_reads: sharing.SharedReads,
    ) -> None:
        self._session = boto3.Session()
        self._clients: dict[str, AwsClients] = {}
        self._options: dict[str, Any] = {
            "max_attempts": max_attempts,
            "listener": listener,
            "max_pool_connections": max_pool_connections,
            "shared_reads": shared_reads,
        }

    def __call__(self, region: str) -> AwsClients:
        if region not in self._clients:
            self._clients[region] = make_clients(region, session=self._session, **self._options)
        return self._clients[region]

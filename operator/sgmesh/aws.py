"""AWS clients for the pipeline, and the one place that says what an AWS error means.

Clients come from the standard environment (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL`),
retry throttling and 5xx with botocore's standard retry mode, and count every call by
operation so that the CLI, the benchmark and the metrics report the same figures.

An error is never read as "gone": `classify` tells throttling and outages (retry later) from
access denied and bad requests (a person must act); absence is only ever concluded from a
successful answer, in discovery.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers
import botocore.session

from sgmesh import shared_reads as sharing

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_service_quotas import ServiceQuotasClient

__all__ = [
    "ERRORS",
    "MUTATING_OPERATIONS",
    "AwsClients",
    "AwsFailure",
    "CallListener",
    "ErrorKind",
    "classify",
    "default_region",
    "error_code",
    "iam_action",
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

# Everything an AWS call can raise that says "AWS did not give a usable answer". botocore's
# ResponseParserError (a 5xx with a body that is not AWS's XML or JSON, as proxies and outages
# return) derives from neither of botocore's base classes, so it is listed on its own.
ERRORS: tuple[type[Exception], ...] = (
    botocore.exceptions.ClientError,
    botocore.exceptions.BotoCoreError,
    botocore.parsers.ResponseParserError,
)

CallListener = Callable[[str, str], None]
"""Called with (service, operation) before each API call (after retries are not counted)."""


@dataclass
class AwsClients:
    ec2: EC2Client
    autoscaling: AutoScalingClient
    iam: IAMClient
    servicequotas: ServiceQuotasClient
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
        `sgmesh.shared_reads`); without shared reads, a plain block."""
        if self.shared_reads is None:
            yield
            return
        with self.shared_reads.sharing():
            yield

    def classify(self, error: BaseException) -> AwsFailure:
        """`classify`, knowing which service this thread's last call went to, and naming the
        region (meshes may each have their own; a wrong one must show in the message)."""
        failure = classify(error, service=getattr(self._last_call, "service", None))
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
        region=resolved,
        shared_reads=shared_reads,
    )

    def count(model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        clients._last_call.service = service
        clients.calls[model.name] += 1
        if listener is not None:
            listener(service, model.name)

    for client in (clients.ec2, clients.autoscaling, clients.iam, clients.servicequotas):
        if shared_reads is not None:
            shared_reads.register(client.meta.events)  # first: a served answer is no call
        client.meta.events.register("before-call.*.*", count)
    return clients


class ErrorKind(enum.StrEnum):
    """What an AWS failure asks of us; the values are status condition reasons."""

    UNAVAILABLE = "AwsUnavailable"  # throttling, 5xx, timeouts, network: retry with backoff
    # AWS changed under the reconcile, or has not caught up with a write yet (eventual
    # consistency, concurrent modification): retry soon, the next read tells what is there.
    CONCURRENT_CHANGE = "ConcurrentChange"
    ACCESS_DENIED = "AccessDenied"  # a permission is missing: a person must grant it
    REJECTED = "AwsRequestRejected"  # AWS refused the request itself (limits, bad values)


@dataclass(frozen=True)
class AwsFailure:
    kind: ErrorKind
    code: str
    operation: str
    message: str
    service: str | None = None
    region: str | None = None

    @property
    def retryable(self) -> bool:
        return self.kind in (ErrorKind.UNAVAILABLE, ErrorKind.CONCURRENT_CHANGE)

    def describe(self) -> str:
        if self.kind is ErrorKind.ACCESS_DENIED:
            actions = iam_actions(self.operation, self.service)
            return (
                f"access denied: grant the operator's role {' and '.join(actions)} "
                f"({self.code}: {self.message})"
            )
        # The region first: a long message is clipped at its end.
        where = f"in {self.region}: " if self.region else ""
        return f"{where}{self.operation} failed with {self.code}: {self.message}"


_SERVICES = ("ec2", "autoscaling", "iam")


@functools.cache
def _services_of_operations() -> dict[str, tuple[str, ...]]:
    session = botocore.session.get_session()
    services: dict[str, tuple[str, ...]] = {}
    for service in _SERVICES:
        for operation in session.get_service_model(service).operation_names:
            services[operation] = (*services.get(operation, ()), service)
    return services


def iam_action(operation: str, service: str | None = None) -> str:
    """`AuthorizeSecurityGroupIngress` → `ec2:AuthorizeSecurityGroupIngress`.

    An operation that several services have (`DeleteTags`: ec2 and autoscaling) needs the
    service it was called on; without it, all candidates are named.
    """
    if service is not None:
        return f"{service}:{operation}"
    services = _services_of_operations().get(operation, ())
    return " or ".join(f"{name}:{operation}" for name in services) or operation


# Tags given at creation are authorized as a CreateTags of their own: a denied authorize that
# carries TagSpecifications may be the missing ec2:CreateTags.
_TAGGED_AT_CREATION = frozenset({"AuthorizeSecurityGroupIngress"})


def iam_actions(operation: str, service: str | None = None) -> tuple[str, ...]:
    """The permissions a denied operation may be missing, the operation's own first."""
    own = iam_action(operation, service)
    if operation in _TAGGED_AT_CREATION:
        return (own, "ec2:CreateTags (tagging at creation)")
    return (own,)


_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
        "RequestExpired",
        "IDPCommunicationError",
    }
)
_ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnauthorizedAccess",
        "AuthFailure",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
    }
)


# Answers that say AWS moved under us: another writer changed the thing since it was read, or a
# write has not reached every reader yet. A fresh read decides; a person has nothing to do.
_CONCURRENT_CHANGE_CODES = frozenset(
    {
        "ConcurrentModification",
        "ConcurrentModificationException",
        "InvalidGroup.NotFound",
        "InvalidSecurityGroupRuleId.NotFound",
        "InvalidPermission.NotFound",
        "InvalidPermission.Duplicate",
        "IncorrectState",
    }
)


def error_code(error: BaseException) -> str:
    if isinstance(error, botocore.exceptions.ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return type(error).__name__


def classify(error: BaseException, service: str | None = None) -> AwsFailure:
    """Map a boto error to what the operator must do about it."""
    if isinstance(error, botocore.exceptions.ClientError):
        code = error_code(error)
        operation = error.operation_name
        message = str(error.response.get("Error", {}).get("Message", error))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _ACCESS_DENIED_CODES or status == 403:
            return AwsFailure(ErrorKind.ACCESS_DENIED, code, operation, message, service)
        if code in _THROTTLING_CODES or status >= 500 or status == 429:
            return AwsFailure(ErrorKind.UNAVAILABLE, code, operation, message, service)
        if code in _CONCURRENT_CHANGE_CODES:
            return AwsFailure(ErrorKind.CONCURRENT_CHANGE, code, operation, message, service)
        return AwsFailure(ErrorKind.REJECTED, code, operation, message, service)
    if isinstance(
        error, botocore.exceptions.NoCredentialsError | botocore.exceptions.NoRegionError
    ):
        return AwsFailure(ErrorKind.ACCESS_DENIED, type(error).__name__, "credentials", str(error))
    # Connection errors, timeouts, bad responses: the far side is not answering properly.
    return AwsFailure(ErrorKind.UNAVAILABLE, type(error).__name__, "connection", str(error))

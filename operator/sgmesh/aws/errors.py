"""What an AWS error means: the one table of error codes, and the failure the operator reports.

An error is never read as "gone": `classify` tells throttling and outages (retry later) from
access denied and bad requests (a person must act). Absence is concluded only from a successful
answer, or from the codes in `NOT_FOUND` that AWS gives for one named thing that does not exist
(used by the readers that ask for one thing by name).
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

import botocore.exceptions
import botocore.parsers
import botocore.session

__all__ = [
    "ACCESS_DENIED_CODES",
    "EKS_CLUSTER_ABSENT",
    "ERRORS",
    "IAM_ENTITY_ABSENT",
    "LAUNCH_TEMPLATE_ABSENT",
    "LAUNCH_TEMPLATE_VERSION_ABSENT",
    "OPERATION_NOT_SERVED",
    "QUOTA_UNREADABLE",
    "RULE_ABSENT",
    "RULE_DUPLICATE",
    "THROTTLING_CODES",
    "AwsFailure",
    "ErrorKind",
    "ReleaseUnconfirmed",
    "answered",
    "classify",
    "error_code",
    "iam_action",
    "iam_actions",
]


class ReleaseUnconfirmed(Exception):
    """EC2's reads kept showing a tag this process had removed: AWS has not caught up with the
    write yet, so nothing can be decided from what it shows (`sgmesh.aws.apply`)."""

    operation = "DescribeSecurityGroupRules"


# Everything an AWS call can raise that says "AWS did not give a usable answer". botocore's
# ResponseParserError (a 5xx with a body that is not AWS's XML or JSON, as proxies and outages
# return) derives from neither of botocore's base classes, so it is listed on its own.
ERRORS: tuple[type[Exception], ...] = (
    botocore.exceptions.ClientError,
    botocore.exceptions.BotoCoreError,
    botocore.parsers.ResponseParserError,
    ReleaseUnconfirmed,
)


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


_SERVICES = ("ec2", "autoscaling", "iam", "eks")


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


# AWS's words for "too many requests": the failure is AwsUnavailable, and the operator's Synced
# condition names it AwsThrottled.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "EC2ThrottledException",
    }
)
# Throttling, and the other answers that say AWS could not serve the request now: retry.
_UNAVAILABLE_CODES = THROTTLING_CODES | frozenset(
    {
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
ACCESS_DENIED_CODES = frozenset(
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


# Answers that each reader or writer takes as a fact rather than a failure. Each positively
# says something about the one thing the request named; no other error is ever read that way.

# IAM: the role, instance profile, policy or attachment the request named does not exist.
IAM_ENTITY_ABSENT = frozenset({"NoSuchEntity"})
# EKS: no cluster of the name the request named (in this region).
EKS_CLUSTER_ABSENT = frozenset({"ResourceNotFoundException"})
# The endpoint does not serve the operation: AWS's own code for it, or an HTTP 404 that no
# error of the service explains (botocore then names the error by its status). EKS answers a
# missing cluster with ResourceNotFoundException, never a bare 404.
OPERATION_NOT_SERVED = frozenset({"UnknownOperationException", "404"})
# EC2: the launch template, or the version of it, the request named does not exist.
LAUNCH_TEMPLATE_ABSENT = frozenset(
    {"InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateName.NotFoundException"}
)
LAUNCH_TEMPLATE_VERSION_ABSENT = frozenset({"InvalidLaunchTemplateId.VersionNotFound"})
# EC2: a rule to revoke is gone already (another writer revoked it).
RULE_ABSENT = frozenset({"InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound"})
# EC2: a rule to authorize exists already (another writer created it first).
RULE_DUPLICATE = frozenset({"InvalidPermission.Duplicate"})
# Service Quotas: the applied quota cannot be read by this identity (the setting applies).
QUOTA_UNREADABLE = frozenset(
    {"AccessDenied", "AccessDeniedException", "NoSuchResourceException", "UnauthorizedOperation"}
)


def answered(error: BaseException, codes: frozenset[str]) -> bool:
    """Whether AWS answered the request with one of `codes` (a successful exchange whose
    answer is one of the facts above), as opposed to any other failure."""
    return isinstance(error, botocore.exceptions.ClientError) and error_code(error) in codes


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
        if code in ACCESS_DENIED_CODES or status == 403:
            return AwsFailure(ErrorKind.ACCESS_DENIED, code, operation, message, service)
        if code in _UNAVAILABLE_CODES or status >= 500 or status == 429:
            return AwsFailure(ErrorKind.UNAVAILABLE, code, operation, message, service)
        if code in _CONCURRENT_CHANGE_CODES:
            return AwsFailure(ErrorKind.CONCURRENT_CHANGE, code, operation, message, service)
        return AwsFailure(ErrorKind.REJECTED, code, operation, message, service)
    if isinstance(error, ReleaseUnconfirmed):
        return AwsFailure(
            ErrorKind.CONCURRENT_CHANGE,
            type(error).__name__,
            error.operation,
            str(error),
            service or "ec2",
        )
    if isinstance(
        error, botocore.exceptions.NoCredentialsError | botocore.exceptions.NoRegionError
    ):
        return AwsFailure(ErrorKind.ACCESS_DENIED, type(error).__name__, "credentials", str(error))
    # Connection errors, timeouts, bad responses: the far side is not answering properly.
    return AwsFailure(ErrorKind.UNAVAILABLE, type(error).__name__, "connection", str(error))

"""AWS clients for the pipeline, one set per region.

Clients come from the standard environment (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL`),
retry throttling and 5xx with botocore's standard retry mode, and count every call by
operation so that the CLI, the benchmark and the metrics report the same figures.

The operator's clients (`ClientsByRegion`) serve every mesh: one set per region, so that
botocore's adaptive retry mode, whose client-side rate limiter is per client, slows every mesh
down together once AWS throttles one of them; and they pace themselves before AWS has to
(`Pacing`: one token bucket per service and region, IAM's for the whole account), so that
100 meshes resumed at a start do not burst past what AWS lets an account do.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

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
    "PACE_BURST",
    "PACE_PER_SECOND",
    "AwsClients",
    "CallListener",
    "ClientsByRegion",
    "ErrorListener",
    "Pacing",
    "TokenBucket",
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
# Told (service, operation, error code) of each call whose answer, after botocore's retries,
# was an error; the code of a call that got no answer is its exception's name.
ErrorListener = Callable[[str, str, str], None]
"""Called with (service, operation) before each API call (after retries are not counted)."""

# The operator's pace, per service and region (IAM: per account): EC2 lets an account make
# 100 non-mutating requests at once and 20 a second after, and the other services publish no
# figure: each is held to the same, a little under its burst. A steady operator of 100
# meshes uses a tenth of it; only a start (every mesh resumed at once) reaches it.
PACE_BURST = 90.0
PACE_PER_SECOND = 20.0


class TokenBucket:
    """`burst` requests at once, then `per_second`: `take` waits its turn (on `clock`,
    sleeping with `sleep`) and returns the seconds it waited. Safe to share across threads;
    callers are served in the order they came."""

    def __init__(
        self,
        burst: float,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (burst >= 1 and per_second > 0):
            raise ValueError(f"a bucket needs burst >= 1 and per_second > 0: {burst}, {per_second}")
        self.burst = burst
        self.per_second = per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = burst
        self._at = clock()

    def take(self) -> float:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
            self._at = now
            self._tokens -= 1  # below zero: the turns of the callers before this one
            wait = max(0.0, -self._tokens / self.per_second)
        if wait:
            self._sleep(wait)
        return wait


class Pacing:
    """One `TokenBucket` per service and region (IAM's is global) for every client of the
    process; each call takes a token before it is sent (a read answered from shared reads
    takes none; retries are botocore's adaptive mode's to pace). `waited` is told the service
    and the seconds a call waited."""

    def __init__(
        self,
        burst: float = PACE_BURST,
        per_second: float = PACE_PER_SECOND,
        waited: Callable[[str, float], None] | None = None,
    ) -> None:
        self._burst = burst
        self._per_second = per_second
        self._waited = waited
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def register(self, events: Any, service: str, region: str) -> None:
        scope = "global" if service == "iam" else region
        with self._lock:
            bucket = self._buckets.setdefault(
                (service, scope), TokenBucket(self._burst, self._per_second)
            )

        def pace(**_: Any) -> None:
            waited = bucket.take()
            if waited and self._waited is not None:
                self._waited(service, waited)

        events.register("before-call.*.*", pace)


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
    error_listener: ErrorListener | None = None,
    shared_reads: sharing.SharedReads | None = None,
    pacing: Pacing | None = None,
    retry_mode: Literal["standard", "adaptive"] = "standard",
) -> AwsClients:
    """Clients for one region; IAM is global but is reached through the region's partition.

    `shared_reads`: one instance for every region's clients of the process, so that a write
    through any of them forgets every shared answer (IAM is the same in every region).
    `pacing`: the process's pace, shared the same way. `retry_mode`: botocore's ("adaptive"
    adds its client-side rate limiter, which slows the client down once AWS throttles it).
    `listener` is told each call as it goes, `error_listener` each one that failed."""
    session = session or boto3.Session()
    resolved = region or session.region_name or default_region()
    if not resolved:
        raise ValueError(
            "no AWS region: set spec.region, --region, or AWS_REGION in the environment"
        )
    config = botocore.config.Config(
        region_name=resolved,
        # total_max_attempts counts the first try too ("max_attempts" would count retries only).
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
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
        if pacing is not None:
            # Before the count: a call is counted when it goes, not while it waits its turn.
            pacing.register(client.meta.events, client.meta.service_model.service_name, resolved)
        client.meta.events.register("before-call.*.*", count)
        if error_listener is not None:
            _listen_for_errors(
                client.meta.events, client.meta.service_model.service_name, error_listener
            )
    return clients


def _listen_for_errors(events: Any, service: str, listener: ErrorListener) -> None:
    """botocore's events after a call: `after-call` with the answer (an error's code in it),
    `after-call-error` when no answer came (refused, timed out). Both carry the operation in
    their name (`after-call.<service>.<Operation>`)."""

    def answered(event_name: str, http_response: Any, parsed: Any, **_: Any) -> None:
        if http_response is not None and http_response.status_code >= 300:
            code = (parsed or {}).get("Error", {}).get("Code") or str(http_response.status_code)
            listener(service, event_name.rpartition(".")[2], str(code))

    def unanswered(event_name: str, exception: BaseException, **_: Any) -> None:
        listener(service, event_name.rpartition(".")[2], errors.error_code(exception))

    events.register("after-call.*.*", answered)
    events.register("after-call-error.*.*", unanswered)


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
        pacing: Pacing | None = None,
        error_listener: ErrorListener | None = None,
    ) -> None:
        self._session = boto3.Session()
        self._clients: dict[str, AwsClients] = {}
        self._options: dict[str, Any] = {
            "max_attempts": max_attempts,
            "listener": listener,
            "error_listener": error_listener,
            "max_pool_connections": max_pool_connections,
            "shared_reads": shared_reads,
            "pacing": pacing if pacing is not None else Pacing(),
            # Every mesh's calls of a region go through these clients: once AWS throttles one,
            # the limiter slows them all.
            "retry_mode": "adaptive",
        }

    def __call__(self, region: str) -> AwsClients:
        if region not in self._clients:
            self._clients[region] = make_clients(region, session=self._session, **self._options)
        return self._clients[region]

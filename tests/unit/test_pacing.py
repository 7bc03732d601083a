"""The operator's own pace (`sgmesh.aws.client.TokenBucket`, `Pacing`), on a fake clock: a
burst goes through at once, what follows waits its turn at the bucket's rate, and every client
of one service and region shares one bucket."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from sgmesh.aws import client


class Clock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_burst_goes_through_at_once_then_requests_wait_their_turn() -> None:
    clock = Clock()
    bucket = client.TokenBucket(burst=3, per_second=2, clock=clock, sleep=clock.sleep)

    waits = [bucket.take() for _ in range(5)]

    assert waits == [0.0, 0.0, 0.0, 0.5, 0.5]
    assert clock.now == pytest.approx(1.0)


def test_a_bucket_refills_while_nothing_is_asked() -> None:
    clock = Clock()
    bucket = client.TokenBucket(burst=2, per_second=1, clock=clock, sleep=clock.sleep)
    bucket.take()
    bucket.take()

    clock.now += 10  # refilled, but never beyond its burst
    waits = [bucket.take() for _ in range(3)]

    assert waits == [0.0, 0.0, 1.0]


def test_callers_waiting_together_are_served_at_the_rate_in_order() -> None:
    # Each caller reserves its turn before sleeping: three callers at once wait 1, 2 and 3 s.
    clock = Clock()
    never_sleeps: list[float] = []
    bucket = client.TokenBucket(burst=1, per_second=1, clock=clock, sleep=never_sleeps.append)

    waits = [bucket.take() for _ in range(4)]

    assert waits == [0.0, 1.0, 2.0, 3.0]


def test_a_bucket_refuses_a_rate_that_would_never_let_a_request_through() -> None:
    with pytest.raises(ValueError, match="per_second"):
        client.TokenBucket(burst=5, per_second=0)


def test_the_clients_of_a_service_and_region_share_one_bucket() -> None:
    """Calls take their token from the bucket of their service and region, whichever of the
    process's clients makes them: a second EC2 call in the same region waits, one in another
    region does not; IAM is global, so its second call waits whatever the region."""
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    waited: list[tuple[str, float]] = []
    pacing = client.Pacing(burst=1, per_second=20, waited=lambda s, w: waited.append((s, w)))
    first = client.make_clients("us-east-1", session=session, pacing=pacing)
    same_region = client.make_clients("us-east-1", session=session, pacing=pacing)
    elsewhere = client.make_clients("eu-west-1", session=session, pacing=pacing)

    def call(made: Any, operation: str) -> list[tuple[str, float]]:
        """Emit the hook botocore emits before sending `operation`: what waited meanwhile."""
        waited.clear()
        service = made.meta.service_model
        made.meta.events.emit(
            f"before-call.{service.endpoint_prefix}.{operation}",
            model=service.operation_model(operation),
            params={},
            request_signer=None,
            context={},
        )
        return list(waited)

    assert call(first.ec2, "DescribeInstances") == []  # the bucket's one token
    assert call(elsewhere.ec2, "DescribeInstances") == []  # another region's bucket
    (paced,) = call(same_region.ec2, "DescribeInstances")
    assert paced[0] == "ec2"
    assert paced[1] > 0
    assert call(first.iam, "ListRoleTags") == []
    (paced,) = call(elsewhere.iam, "ListRoleTags")  # IAM's bucket is the account's
    assert paced[0] == "iam"
    assert paced[1] > 0

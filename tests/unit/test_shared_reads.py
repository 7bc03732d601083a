"""The orderings of `sgmesh.aws.shared_reads` that a server cannot produce on demand: a read in
flight while a write is sent or answered. The hooks are called in the order botocore would
call them for two threads, with a stand-in for botocore's operation model; and how long an
answer is kept, on a clock the test sets."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sgmesh.aws import shared_reads


@dataclass(frozen=True)
class Service:
    service_name: str = "ec2"


@dataclass(frozen=True)
class Operation:
    name: str
    service_model: Service = field(default_factory=Service)


@dataclass(frozen=True)
class Response:
    status_code: int = 200
    url: str = "https://ec2.us-east-1.amazonaws.com/"
    headers: dict[str, str] = field(default_factory=dict)


READ = Operation("DescribeSecurityGroupRules")
WRITE = Operation("AuthorizeSecurityGroupIngress")
REQUEST = {"url_path": "/", "body": {"Action": "DescribeSecurityGroupRules", "GroupId": "sg-1"}}
PRE_WRITE: dict[str, list[object]] = {"SecurityGroupRules": []}


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ask(shared: shared_reads.SharedReads, operation: Operation) -> tuple[Any, dict[str, Any]]:
    """before-call; returns (what serve answered, the request's context)."""
    context: dict[str, Any] = {"client_region": "us-east-1"}
    return shared.serve(model=operation, params=dict(REQUEST), context=context), context


def answer(shared: shared_reads.SharedReads, context: dict[str, Any], status: int = 200) -> None:
    shared.remember(http_response=Response(status), parsed=dict(PRE_WRITE), context=context)


def test_an_answer_is_served_to_the_same_request_in_a_discovery() -> None:
    shared = shared_reads.SharedReads()
    with shared.sharing():
        served, context = ask(shared, READ)
        assert served is None
        answer(shared, context)
        served, _ = ask(shared, READ)
    assert served is not None
    assert served[1] == PRE_WRITE


def test_a_read_sent_before_a_write_and_answered_during_it_is_not_remembered() -> None:
    shared = shared_reads.SharedReads()
    with shared.sharing():
        _, read = ask(shared, READ)
        _, write = ask(shared, WRITE)
        answer(shared, read)  # the answer may predate the write
        answer(shared, write)
        served, _ = ask(shared, READ)
    assert served is None


def test_a_read_sent_while_a_write_is_in_flight_is_not_remembered() -> None:
    shared = shared_reads.SharedReads()
    with shared.sharing():
        _, write = ask(shared, WRITE)
        _, read = ask(shared, READ)  # AWS may not have applied the write yet
        answer(shared, write)
        answer(shared, read)
        served, _ = ask(shared, READ)
    assert served is None


def test_a_write_that_failed_without_an_answer_still_forgets() -> None:
    shared = shared_reads.SharedReads()
    with shared.sharing():
        _, read = ask(shared, READ)
        answer(shared, read)
        _, write = ask(shared, WRITE)
        shared.failed(context=write)  # a timeout: the write may have happened
        served, _ = ask(shared, READ)
        assert served is None
        # ... and the cache works again once no write is in flight.
        _, read = ask(shared, READ)
        answer(shared, read)
        served, _ = ask(shared, READ)
    assert served is not None


def test_an_error_answer_is_never_remembered() -> None:
    shared = shared_reads.SharedReads()
    with shared.sharing():
        _, read = ask(shared, READ)
        answer(shared, read, status=503)
        served, _ = ask(shared, READ)
    assert served is None


def test_any_operation_that_is_not_a_read_counts_as_a_write() -> None:
    shared = shared_reads.SharedReads()
    with shared.sharing():
        _, read = ask(shared, READ)
        answer(shared, read)
        _, unknown = ask(shared, Operation("ModifySecurityGroupRules"))
        answer(shared, unknown)
        served, _ = ask(shared, READ)
    assert served is None


def test_outside_a_discovery_nothing_is_served_or_remembered() -> None:
    shared = shared_reads.SharedReads()
    _, read = ask(shared, READ)
    answer(shared, read)
    with shared.sharing():
        served, _ = ask(shared, READ)
    assert served is None


def test_an_answer_is_kept_its_seconds_from_when_it_was_asked() -> None:
    clock = Clock()
    shared = shared_reads.SharedReads(ttl_seconds=5.0, clock=clock)
    with shared.sharing():
        _, read = ask(shared, READ)
        clock.now = 2.0  # a slow answer: its seconds still count from the question
        answer(shared, read)
        clock.now = 5.0
        served_at_the_last_second, _ = ask(shared, READ)
        clock.now = 5.25
        served_after, _ = ask(shared, READ)
    assert served_at_the_last_second is not None
    assert served_after is None


def _in_thread(
    shared: shared_reads.SharedReads, call: Callable[[], Any]
) -> tuple[threading.Thread, list[Any]]:
    """`call` in a discovery of another thread; what it returned, once it has."""
    result: list[Any] = []

    def run() -> None:
        with shared.sharing():
            result.append(call())

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_the_same_read_in_flight_in_another_thread_is_waited_for_not_asked_again() -> None:
    shared = shared_reads.SharedReads()
    with shared.sharing():
        served, leader = ask(shared, READ)
        assert served is None
        waiting, result = _in_thread(shared, lambda: ask(shared, READ)[0])
        waiting.join(0.2)
        assert waiting.is_alive()  # it waits for the leader's answer instead of asking AWS

        answer(shared, leader)
        waiting.join(5)

    assert not waiting.is_alive()
    [served_to_the_other] = result
    assert served_to_the_other is not None
    assert served_to_the_other[1] == PRE_WRITE
    assert shared.served == 1


def test_a_read_in_flight_that_fails_lets_the_waiting_thread_ask_itself() -> None:
    shared = shared_reads.SharedReads()
    with shared.sharing():
        _, leader = ask(shared, READ)
        waiting, result = _in_thread(shared, lambda: ask(shared, READ))
        waiting.join(0.2)
        assert waiting.is_alive()

        shared.failed(context=leader)  # no answer came: nothing to share
        waiting.join(5)

    [(served, context)] = result
    assert served is None  # it asks AWS itself
    assert "sgmesh_shared_read" in context


def test_a_wait_for_a_read_that_never_lands_ends_and_the_next_read_does_not_wait() -> None:
    shared = shared_reads.SharedReads(wait_seconds=0.05)
    with shared.sharing():
        ask(shared, READ)  # sent, never answered (no after-call)
        waiting, result = _in_thread(shared, lambda: ask(shared, READ))
        waiting.join(5)
        assert not waiting.is_alive()
        [(served, other)] = result
        assert served is None
        answer(shared, other)  # the thread that asked itself answers for everyone
        served, _ = ask(shared, READ)
    assert served is not None

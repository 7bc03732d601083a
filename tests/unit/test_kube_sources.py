"""Reading the cluster's sources, its error paths: retries of 429 answers and the cached
aws-node role. (Reads against the real API server: tests/integration/kube/test_kube_sources.py.)"""

from __future__ import annotations

import kubernetes
import pytest

from sgmesh.kube import sources


def too_many_requests() -> kubernetes.client.exceptions.ApiException:
    error = kubernetes.client.exceptions.ApiException(status=429, reason="Too Many Requests")
    error.headers = {"Retry-After": "0"}
    return error


def test_a_429_answer_is_asked_again_as_the_server_says(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[object] = [too_many_requests(), too_many_requests(), "listed"]
    waited: list[float] = []
    monkeypatch.setattr("sgmesh.kube.sources.time.sleep", waited.append)

    def request() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert sources._patiently(request) == "listed"
    assert waited == [0.1, 0.1]  # Retry-After 0: the shortest wait


def test_429_answers_that_go_on_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sgmesh.kube.sources.time.sleep", lambda _: None)
    calls: list[int] = []

    def request() -> object:
        calls.append(1)
        raise too_many_requests()

    with pytest.raises(kubernetes.client.exceptions.ApiException):
        sources._patiently(request)
    assert len(calls) == sources.TOO_MANY_REQUESTS_ATTEMPTS


def test_the_aws_node_role_is_cached_and_kept_through_an_outage() -> None:
    answers: list[str | Exception | None] = ["arn:1", sources.ClusterReadError("down")]
    now = [0.0]

    def read() -> str | None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    role = sources.AwsNodeRole(read, ttl_seconds=60, clock=lambda: now[0])
    assert role() == "arn:1"
    now[0] = 30
    assert role() == "arn:1"  # cached: no read
    now[0] = 61
    assert role() == "arn:1"  # the read failed: the last answer stands
    assert answers == []

    never_read = sources.AwsNodeRole(lambda: (_ for _ in ()).throw(sources.ClusterReadError("x")))
    with pytest.raises(sources.ClusterReadError):
        never_read()


def test_while_one_worker_reads_the_others_take_the_last_answer() -> None:
    import threading

    release = threading.Event()
    reads: list[str] = []
    now = [0.0]

    def slow_read() -> str | None:
        reads.append("read")
        if len(reads) > 1:
            release.wait(5)  # the API server is away: this read takes its whole timeout
        return "arn:new"

    role = sources.AwsNodeRole(slow_read, ttl_seconds=60, clock=lambda: now[0])
    assert role() == "arn:new"
    now[0] = 61
    reader = threading.Thread(target=role)
    reader.start()
    while len(reads) < 2:
        threading.Event().wait(0.01)

    assert role() == "arn:new"  # answered at once from the last read, not held by the lock
    release.set()
    reader.join(5)
    assert len(reads) == 2

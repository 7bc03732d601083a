"""Reading the cluster's sources, its error paths: retries of 429 answers and the cached
aws-node credentials. (Reads against the real API server:
tests/integration/kube/test_kube_sources.py.)"""

from __future__ import annotations

from collections.abc import Callable

import kubernetes
import pytest

from sgmesh.engine import cluster_members
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


IRSA = cluster_members.irsa({cluster_members.IRSA_ANNOTATION: "arn:aws:iam::1:role/cni"})
Answer = cluster_members.AwsNodeCredentials | Exception | None


def reader(answers: list[Answer]) -> Callable[[], cluster_members.AwsNodeCredentials | None]:
    def read() -> cluster_members.AwsNodeCredentials | None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return read


def test_the_aws_node_credentials_are_cached_and_kept_through_an_outage() -> None:
    answers: list[Answer] = [IRSA, sources.ClusterReadError("down")]
    now = [0.0]

    credentials = sources.AwsNodeCredentialsCache(
        reader(answers), ttl_seconds=60, clock=lambda: now[0]
    )
    assert credentials() == IRSA
    now[0] = 30
    assert credentials() == IRSA  # cached: no read
    now[0] = 61
    assert credentials() == IRSA  # the read failed: the last answer stands
    assert answers == []

    never_read = sources.AwsNodeCredentialsCache(reader([sources.ClusterReadError("x")]))
    with pytest.raises(sources.ClusterReadError):
        never_read()


class EksOutage(Exception):
    """Stands for an AWS error, which the operator lists among the failures to ride out."""


def test_only_the_failures_named_keep_the_last_answer() -> None:
    now = [0.0]
    riding_out = sources.AwsNodeCredentialsCache(
        reader([None, EksOutage()]), clock=lambda: now[0], failures=(EksOutage,)
    )
    by_default = sources.AwsNodeCredentialsCache(reader([None, EksOutage()]), clock=lambda: now[0])
    assert riding_out() is None
    assert by_default() is None
    now[0] = 61

    assert riding_out() is None  # EKS away: the last answer stands
    with pytest.raises(EksOutage):
        by_default()


def test_while_one_worker_reads_the_others_take_the_last_answer() -> None:
    import threading

    release = threading.Event()
    reads: list[str] = []
    now = [0.0]

    def slow_read() -> cluster_members.AwsNodeCredentials | None:
        reads.append("read")
        if len(reads) > 1:
            release.wait(5)  # the API server is away: this read takes its whole timeout
        return IRSA

    role = sources.AwsNodeCredentialsCache(slow_read, ttl_seconds=60, clock=lambda: now[0])
    assert role() == IRSA
    now[0] = 61
    reader = threading.Thread(target=role)
    reader.start()
    while len(reads) < 2:
        threading.Event().wait(0.01)

    assert role() == IRSA  # answered at once from the last read, not held by the lock
    release.set()
    reader.join(5)
    assert len(reads) == 2

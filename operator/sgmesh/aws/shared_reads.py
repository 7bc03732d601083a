"""Read answers shared between the discoveries of meshes reconciled together in one process.

Meshes over the same ASGs, SGs and roles ask AWS the same questions: with 50 meshes resynced
every 10 s, the operator read the same roles and rules dozens of times per window. A
`SharedReads` remembers the successful answer to each read request, keyed by the request
itself (service, operation, every parameter), for a few seconds, and serves it to a discovery
that asks exactly the same question meanwhile. The operator keeps one for all its regions
(IAM is global, reached through every region's clients).

What it must never do is hide a write. So:

- only discoveries share (`AwsClients.reads_shared()` marks the thread); every other read, as
  the re-reads apply makes at the write, goes to AWS;
- only reads are remembered: operations named `Describe*`, `List*` and `Get*`; any other call
  is taken as a write, and forgets every answer at once, both when it is sent and when it has
  been answered (or failed), in every region;
- a read that was in flight while a write was (sent before the write ended, answered after it
  began) is not remembered: its answer may predate the write;
- errors are never remembered: an error is never read as "gone", and is never repeated either;
- an answer is kept `ttl_seconds` from the moment it was asked, and served as a copy;
- a discovery that asks what another thread is asking AWS right now waits for that answer
  (at most `wait_seconds`) instead of asking too: meshes resumed together ask the same
  listings at the same moment. When that answer cannot be shared (an error, a write
  overlapped it), each waiting thread asks AWS itself.

Writes made outside this process (another operator, a person) are seen once the answer ages
out: the same as if the discovery had started those seconds earlier.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sgmesh.aws import botocore_compat

__all__ = ["DEFAULT_TTL_SECONDS", "DEFAULT_WAIT_SECONDS", "READ_PREFIXES", "SharedReads"]

# Long enough to cover the meshes one timer tick reconciles together, short against any resync.
DEFAULT_TTL_SECONDS = 5.0
# How long a thread waits for the same read in flight in another thread before asking itself.
DEFAULT_WAIT_SECONDS = 10.0
READ_PREFIXES = ("Describe", "List", "Get")

# Keys of botocore's per-request context where the hooks leave what `remember` needs.
_READ = "sgmesh_shared_read"
_WRITE = "sgmesh_write"


@dataclass(frozen=True)
class _Answer:
    asked_at: float
    http_response: Any
    parsed: dict[str, Any]


@dataclass(frozen=True)
class _PendingRead:
    key: str
    asked_at: float
    generation: int | None  # None: a write was in flight when it was sent
    # Set once the read is over, whatever its end, when other threads may wait for it.
    done: threading.Event | None = None


@dataclass(frozen=True)
class _InFlight:
    thread: int
    done: threading.Event


class SharedReads:
    """Hooks for botocore clients (`register`); one instance shared by every client of the
    process, so that a write through any of them forgets every answer."""

    def __init__(
        self,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.wait_seconds = wait_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[str, _Answer] = {}
        self._in_flight: dict[str, _InFlight] = {}
        self._generation = 0  # grows at every write sent and every write answered
        self._writes_in_flight = 0
        self._sharing = threading.local()
        self.served = 0  # answers served without asking AWS, for tests and benchmarks

    @contextlib.contextmanager
    def sharing(self) -> Iterator[None]:
        """Reads this thread makes inside may be served from, and stored into, the cache."""
        before = getattr(self._sharing, "active", False)
        self._sharing.active = True
        try:
            yield
        finally:
            self._sharing.active = before

    def register(self, events: Any) -> None:
        """Hook into a client's event system (`client.meta.events`). `serve` goes first, so a
        served answer is never counted as an AWS call by the hooks registered later."""
        events.register_first("before-call.*.*", self.serve)
        events.register("after-call.*.*", self.remember)
        events.register("after-call-error.*.*", self.failed)

    # ---- botocore hooks -----------------------------------------------------------------------

    def serve(
        self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> tuple[Any, dict[str, Any]] | None:
        """before-call: a remembered answer to this very request, or None to ask AWS."""
        if not model.name.startswith(READ_PREFIXES):
            with self._lock:
                self._writes_in_flight += 1
                self._forget_all()
            context[_WRITE] = True
            return None
        if not getattr(self._sharing, "active", False):
            return None
        key = _request_key(model, params, context.get("client_region"))
        me = threading.get_ident()
        waited = False
        while True:
            now = self._clock()
            with self._lock:
                answer = self._answers.get(key)
                if answer is not None and now - answer.asked_at <= self.ttl_seconds:
                    self.served += 1
                    return answer.http_response, copy.deepcopy(answer.parsed)
                generation = None if self._writes_in_flight else self._generation
                flying = self._in_flight.get(key)
                if waited or flying is None or flying.thread == me or generation is None:
                    # Others may wait for this read; after a wait that ran out, instead of a
                    # read that never landed.
                    done = None
                    if generation is not None:
                        done = threading.Event()
                        self._in_flight[key] = _InFlight(me, done)
                    context[_READ] = _PendingRead(key, now, generation, done)
                    return None
            # The same question is being asked by another thread: its answer, when it can be
            # shared, is this one's too.
            flying.done.wait(self.wait_seconds)
            waited = True

    def remember(
        self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        """after-call: keep a successful read that no write overlapped; a write forgets all."""
        if context.pop(_WRITE, False):
            self._write_ended()
            return
        pending: _PendingRead | None = context.pop(_READ, None)
        if pending is None:
            return
        try:
            if pending.generation is None or http_response.status_code >= 300:
                return
            with self._lock:
                if pending.generation != self._generation or self._writes_in_flight:
                    return
                self._drop_expired()
                self._answers[pending.key] = _Answer(
                    pending.asked_at,
                    botocore_compat.response_without_body(http_response),
                    copy.deepcopy(parsed),
                )
        finally:
            self._landed(pending)

    def failed(self, context: dict[str, Any], **_: Any) -> None:
        """after-call-error: no answer came (connection error, timeout); a write may still
        have happened."""
        pending: _PendingRead | None = context.pop(_READ, None)
        if pending is not None:
            self._landed(pending)
        if context.pop(_WRITE, False):
            self._write_ended()

    # ---- internals ----------------------------------------------------------------------------

    def _landed(self, pending: _PendingRead) -> None:
        """A read is over (answered, refused or failed): whoever waits for it looks again."""
        if pending.done is None:
            return
        with self._lock:
            flying = self._in_flight.get(pending.key)
            if flying is not None and flying.done is pending.done:
                del self._in_flight[pending.key]
        pending.done.set()

    def _write_ended(self) -> None:
        with self._lock:
            self._writes_in_flight -= 1
            self._forget_all()

    def _forget_all(self) -> None:
        # Caller holds the lock.
        self._generation += 1
        self._answers.clear()

    def _drop_expired(self) -> None:
        # Caller holds the lock. Paginated reads leave one key per page: keep the dict small.
        now = self._clock()
        for key in [k for k, a in self._answers.items() if now - a.asked_at > self.ttl_seconds]:
            del self._answers[key]


def _request_key(model: Any, params: dict[str, Any], region: str | None) -> str:
    """The whole request as sent: the client's region (one endpoint may serve several),
    endpoint, path, query and body (every parameter)."""
    return json.dumps(
        [
            region,
            model.service_model.service_name,
            model.name,
            *botocore_compat.request_fields(params),
        ],
        sort_keys=True,
        default=repr,
    )

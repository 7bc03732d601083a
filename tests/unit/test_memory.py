"""`sgmesh.controller.memory`: freed memory handed back to the system on a timer."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from sgmesh.controller import memory


def test_glibc_has_malloc_trim_and_it_answers() -> None:
    # The operator runs on glibc: this machine's and the image's Debian.
    trim = memory.malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was released, 0: there was none to release


def test_trim_is_called_at_every_interval() -> None:
    every = 0.05
    calls: list[float] = []

    async def run() -> float:
        loop = asyncio.get_running_loop()

        def trim() -> int:
            calls.append(loop.time())
            return 0

        started = loop.time()
        task = asyncio.create_task(memory.trim_forever(every, trim))
        try:
            await asyncio.wait_for(_until(lambda: len(calls) >= 3), timeout=5)
        finally:
            task.cancel()
        return started

    started = asyncio.run(run())
    # Never sooner than the interval: after it from the start, and apart from each other.
    gaps = [b - a for a, b in itertools.pairwise([started, *calls])]
    assert all(gap >= every * 0.9 for gap in gaps), gaps


async def _until(done: Callable[[], bool]) -> None:
    while not done():
        await asyncio.sleep(0.005)


def test_without_malloc_trim_the_task_ends_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "malloc_trim", lambda: None)
    asyncio.run(asyncio.wait_for(memory.trim_forever(0.01), timeout=1))

"""`sgmesh.controller.memory`: freed memory handed back to the system on a timer."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from sgmesh.controller import memory


def test_glibc_has_malloc_trim_and_it_answers() -> None:
    # The operator runs on glibc: this machine's and the image's Debian.
    trim = memory.malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was released, 0: there was none to release


def test_trim_is_called_at_every_interval() -> None:
    calls: list[float] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()

        def trim() -> int:
            calls.append(loop.time())
            return 0

        task = asyncio.create_task(memory.trim_forever(0.01, trim))
        while len(calls) < 3:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert len(calls) >= 3
    assert all(later > earlier for earlier, later in itertools.pairwise(calls))


def test_without_malloc_trim_the_task_ends_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "malloc_trim", lambda: None)
    asyncio.run(asyncio.wait_for(memory.trim_forever(0.01), timeout=1))

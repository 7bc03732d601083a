"""A fake clock for the code that waits on asyncio (`sgmesh.controller.nudges.Clock`): time
moves only when a test advances it, so the test takes no real time and knows the exact time at
which each thing happened."""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["FakeClock"]

# Loop turns a task may take to sleep on the clock again or end once woken. Far more than the
# code under test takes; what goes past it waits on something else, which time cannot move.
SETTLE_TURNS = 1000


class FakeClock:
    """A `nudges.Clock` whose time moves only in `advance`.

    `advance` wakes the sleepers that fall due, earliest first, each at its own deadline, and
    lets every task run until it sleeps on this clock again or ends before it moves on: when it
    returns, all that the code would do in those seconds has been done, at exact times. The
    test that calls it stands for the world outside (its own requests, its checks); it never
    sleeps on this clock itself."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        # (deadline, order of arrival, woken when due, the task asleep): the heap's head is due
        # first, and sleepers due together wake in the order they slept.
        self._sleepers: list[tuple[float, int, asyncio.Future[None], asyncio.Task[object]]] = []
        self._arrivals = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "sleep on a fake clock from a task"
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadline = self._now + max(seconds, 0.0)
        heapq.heappush(self._sleepers, (deadline, next(self._arrivals), woken, task))
        await woken

    async def advance(self, seconds: float) -> None:
        """Let `seconds` pass for the code under test."""
        until = self._now + seconds
        await self._settle()
        while self._sleepers and self._sleepers[0][0] <= until:
            deadline, _, woken, _ = heapq.heappop(self._sleepers)
            if woken.done():  # its task was cancelled while asleep
                continue
            self._now = deadline
            woken.set_result(None)
            await self._settle()
        self._now = until

    async def _settle(self) -> None:
        """Return once every other task has ended or sleeps on this clock."""
        driver = asyncio.current_task()
        for _ in range(SETTLE_TURNS):
            asleep = {task for _, _, woken, task in self._sleepers if not woken.done()}
            if all(task is driver or task.done() or task in asleep for task in asyncio.all_tasks()):
                return
            await asyncio.sleep(0)  # one turn of the event loop, no time
        raise RuntimeError("a task waits on something other than the fake clock")

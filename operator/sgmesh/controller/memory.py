"""Freed memory handed back to the system, so that the operator's RSS follows its load.

CPython gives the memory of freed objects back to the C allocator, and glibc's malloc keeps
it for later allocations rather than returning it to the kernel: after a burst of reconciles
(a start, a hundred meshes created at once, a storm of nudges) the RSS would stay at the
burst's height for the process's life. glibc's `malloc_trim(0)` releases the free pages of
every arena; the operator calls it every `TRIM_EVERY_SECONDS`, on the event loop (it takes
a few milliseconds). With a C library that has no `malloc_trim` (musl) nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable

__all__ = ["TRIM_EVERY_SECONDS", "malloc_trim", "trim_forever"]

TRIM_EVERY_SECONDS = 30.0

log = logging.getLogger("sgmesh")


def malloc_trim() -> Callable[[], int] | None:
    """glibc's `malloc_trim(0)` as a function, or None where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


async def trim_forever(
    every: float = TRIM_EVERY_SECONDS, trim: Callable[[], int] | None = None
) -> None:
    """Hand freed memory back every `every` seconds, for the process's life."""
    trim = trim if trim is not None else malloc_trim()
    if trim is None:
        log.info("the C library has no malloc_trim: freed memory stays with the allocator")
        return
    while True:
        await asyncio.sleep(every)
        trim()

"""Cutting a list into the batches an API takes at once (names per call, filter values...).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

__all__ = ["chunks"]

_T = TypeVar("_T")


def chunks(values: Sequence[_T], size: int) -> Iterator[list[_T]]:
    """`values` in order, `size` at a time (the last batch may be shorter)."""
    if size < 1:
        raise ValueError(f"a batch holds at least one value, not {size}")
    for start in range(0, len(values), size):
        yield list(values[start : start + size])

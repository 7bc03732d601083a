"""When a mesh's next resync is due: decisions on numbers the caller reads from its clock.

The resync timer (`sgmesh.controller.meshes.resync`) ticks every few seconds and asks, for each
mesh, whether its period has passed since its last reconcile. This module answers; it never
reads a clock, sleeps or speaks kopf, so the answer is tested on a fake clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_RESYNC_SECONDS", "MIN_RESYNC_SECONDS", "TIMER_TICK_SECONDS", "due", "period"]

DEFAULT_RESYNC_SECONDS = 60
# The CRD refuses a shorter spec.resyncSeconds; a body that bypassed it gets the default.
MIN_RESYNC_SECONDS = 10
# The resync timer ticks often and reconciles each mesh when its own resyncSeconds have passed.
TIMER_TICK_SECONDS = 5.0


def period(spec: Mapping[str, Any], default: float) -> float:
    """Seconds between a mesh's resyncs: its `resyncSeconds`, or `default` without a valid one."""
    value = spec.get("resyncSeconds")
    return (
        float(value) if isinstance(value, int | float) and value >= MIN_RESYNC_SECONDS else default
    )


def due(last: float, now: float, period: float) -> bool:
    """Whether a mesh last reconciled at `last` is due at `now` (both on one monotonic clock)."""
    return now - last >= period

"""How replicas of the operator tell each other apart and which of them works: the identity it
gives kopf's peering and its priority there.

Plain values only: `sgmesh.controller.lifecycle` hands them to kopf. Nothing here asks the OS
who the user is (see `identity`).
"""

from __future__ import annotations

import os
import random
import socket

__all__ = ["LIFETIME_SECONDS", "identity", "priority"]

# A replica that died without saying so (SIGKILL, node lost) is presumed dead when its record
# is this old, and a paused replica takes over: well within a minute.
LIFETIME_SECONDS = 30

# Peering priorities: kopf pauses every operator that sees a peer of higher or *equal*
# priority, so equal priorities leave no replica working. The oldest replica wins (a new
# replica never takes work from a healthy one), and a random tail breaks a tie between
# replicas started in the same second.
_PRIORITY_EPOCH_LIMIT = 2**33
_PRIORITY_TIEBREAK = 1_000_000


def identity() -> str:
    """Who this process is among peers: the pod's name when deploy/ passes it.

    kopf's own guess calls `getpass.getuser()`, which fails for a uid without a passwd entry
    (the image runs as 65532 and has none), so the operator always names itself.
    """
    name = os.environ.get("POD_NAME") or os.environ.get("POD_ID") or socket.gethostname()
    suffix = "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=5))
    return f"sgmesh@{name}/{os.getpid()}/{suffix}"


def priority(started_at: float) -> int:
    """Higher for replicas started earlier; distinct for replicas started together."""
    age_rank = _PRIORITY_EPOCH_LIMIT - int(started_at)
    return age_rank * _PRIORITY_TIEBREAK + random.randrange(_PRIORITY_TIEBREAK)

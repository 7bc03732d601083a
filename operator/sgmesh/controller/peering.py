"""How replicas of the operator tell each other apart and which of them works: the identity it
gives kopf's peering and its priority there, and whether the peering object leaves it working.

Plain values only: `sgmesh.controller.lifecycle` hands them to kopf, and
`sgmesh.controller.activity` reads the peering object for `working`. Nothing here asks the OS
who the user is (see `identity`).
"""

from __future__ import annotations

import datetime
import os
import random
import socket
from collections.abc import Mapping
from typing import Any

__all__ = ["LIFETIME_SECONDS", "identity", "priority", "working"]

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


def _alive_priority(record: Any, now: datetime.datetime) -> int | None:
    """A peer's priority while its record in the peering object's status (`priority`,
    `lifetime`, `lastseen`, as kopf writes them) is alive, until `lastseen` + `lifetime`; None
    once it expired, or when it cannot be read."""
    if not isinstance(record, Mapping):
        return None
    try:
        seen = datetime.datetime.fromisoformat(str(record["lastseen"]))
        lifetime = datetime.timedelta(seconds=int(record.get("lifetime", 60)))
        peer_priority = int(record.get("priority", 0))
    except (KeyError, TypeError, ValueError):
        return None
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=datetime.UTC)
    return peer_priority if seen + lifetime > now else None


def working(status: Mapping[str, Any], me: str, my_priority: int, now: datetime.datetime) -> bool:
    """Whether kopf's peering leaves this replica working, by kopf's own rule: it pauses while
    any other live peer has a higher or an equal priority. A replica whose own record is not
    alive in the status (not registered yet, or unable to renew it) is not counted as working.
    """
    if _alive_priority(status.get(me), now) is None:
        return False
    for peer, record in status.items():
        other = _alive_priority(record, now) if peer != me else None
        if other is not None and other >= my_priority:
            return False
    return True

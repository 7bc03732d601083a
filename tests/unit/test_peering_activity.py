"""Whether kopf's peering leaves a replica working (`peering.working`), judged from the peering
object's status as kopf writes it: kopf pauses a replica while another live peer has a higher
or an equal priority."""

from __future__ import annotations

import datetime

from sgmesh.controller import peering

NOW = datetime.datetime(2026, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)


def record(priority: int, seen_seconds_ago: float, lifetime: int = 30) -> dict[str, object]:
    seen = NOW - datetime.timedelta(seconds=seen_seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_the_highest_priority_works_and_the_others_are_paused() -> None:
    status = {"old": record(200, 5), "new": record(100, 5)}

    assert peering.working(status, "old", 200, NOW)
    assert not peering.working(status, "new", 100, NOW)


def test_equal_priorities_pause_every_replica() -> None:
    status = {"a": record(100, 5), "b": record(100, 5)}

    assert not peering.working(status, "a", 100, NOW)
    assert not peering.working(status, "b", 100, NOW)


def test_a_peer_whose_record_expired_pauses_nobody() -> None:
    status = {"gone": record(900, 31), "me": record(100, 1)}

    assert peering.working(status, "me", 100, NOW)


def test_a_replica_without_a_live_record_of_its_own_is_not_counted_as_working() -> None:
    assert not peering.working({}, "me", 100, NOW)
    assert not peering.working({"me": record(100, 40)}, "me", 100, NOW)
    assert not peering.working({"me": {"priority": 100}}, "me", 100, NOW)


def test_a_record_kopf_wrote_without_a_time_zone_is_read_as_utc() -> None:
    naive = (NOW - datetime.timedelta(seconds=5)).replace(tzinfo=None).isoformat()
    status = {"me": {"priority": 100, "lifetime": 30, "lastseen": naive}}

    assert peering.working(status, "me", 100, NOW)


def test_an_unreadable_peer_record_is_ignored() -> None:
    status = {"me": record(100, 1), "odd": {"priority": "high", "lastseen": "yesterday"}}

    assert peering.working(status, "me", 100, NOW)

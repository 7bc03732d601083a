"""Draining SGs without AWS: an SG a member's running instances still carry, though its launch
data no longer names it, is a member SG like any other for the planner (it gets and gives
rules), leaves through the planner's usual path once no instance carries it, and is shown with
its instance count in the status and in `sgmesh plan`'s output."""

from __future__ import annotations

import dataclasses

from sgmesh.api import models
from sgmesh.cli import render
from sgmesh.controller import status
from sgmesh.engine import planning
from sgmesh.engine.topology import Member

from .builders import OWNER, intent, world
from .simulate import carry_out

ROLLING = Member("eks-a", ("sg-new", "sg-old"), (), "vpc-1", draining={"sg-old": 3})
OTHER = Member("eks-b", ("sg-b",), (), "vpc-1")


def authorized(plan: planning.Plan) -> set[tuple[str, str]]:
    return {
        (a.group_id, a.permission.source_group_id)
        for a in plan.actions
        if isinstance(a, planning.Authorize)
    }


def test_a_draining_sg_gets_and_gives_rules_like_every_member_sg() -> None:
    plan = planning.plan(world(ROLLING, OTHER), intent(attach_cni=False))

    groups = {"sg-new", "sg-old", "sg-b"}
    assert authorized(plan) == {(target, source) for target in groups for source in groups}


def test_once_no_instance_carries_it_its_rules_are_revoked() -> None:
    meshed = carry_out(
        world(ROLLING, OTHER), planning.plan(world(ROLLING, OTHER), intent(attach_cni=False)), OWNER
    )
    drained = dataclasses.replace(ROLLING, security_group_ids=("sg-new",), draining={})

    plan = planning.plan(
        dataclasses.replace(meshed, members=(drained, OTHER)), intent(attach_cni=False)
    )

    revoked = {
        (a.group_id, a.permission.source_group_id)
        for a in plan.actions
        if isinstance(a, planning.Revoke) and a.permission is not None
    }
    assert revoked == {
        ("sg-old", "sg-old"),
        ("sg-old", "sg-new"),
        ("sg-old", "sg-b"),
        ("sg-new", "sg-old"),
        ("sg-b", "sg-old"),
    }
    assert not authorized(plan)


def test_members_with_draining_sgs_compare_by_them_and_still_hash() -> None:
    assert dataclasses.replace(ROLLING, draining={"sg-old": 2}) != ROLLING
    assert len({ROLLING, dataclasses.replace(ROLLING)}) == 1


def test_the_status_shows_each_draining_sg_with_its_instance_count() -> None:
    shown = status.member_status(ROLLING).model_dump(mode="json", by_alias=True)

    assert shown["securityGroupIds"] == ["sg-new", "sg-old"]
    assert shown["drainingSecurityGroups"] == [{"id": "sg-old", "instances": 3}]
    assert status.member_status(OTHER).draining_security_groups == []
    assert models.MemberStatus.model_validate(shown) == status.member_status(ROLLING)


def test_plan_output_marks_the_draining_sg() -> None:
    report = {
        "mesh": "mesh",
        "cluster": "prod",
        "region": "eu-west-1",
        "mode": "Enforce",
        "members": [
            status.member_status(member).model_dump(mode="json", by_alias=True)
            for member in (
                ROLLING,
                dataclasses.replace(ROLLING, name="eks-c", draining={"sg-old": 1}),
            )
        ],
        "rules": {"desired": 0, "present": 0, "owned": 0},
        "notes": [],
        "actions": [],
        "held": [],
        "problems": [],
        "applied": None,
    }

    lines = list(render.text_lines(report))

    assert (
        "  AutoScalingGroup eks-a: SGs sg-new,sg-old (draining: still on 3 running instances); "
        "roles -; vpc-1"
    ) in lines
    assert any("sg-old (draining: still on 1 running instance)" in line for line in lines)

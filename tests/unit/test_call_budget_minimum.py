"""The call budget's minimum of IAM, stated from what the data requires rather than from the
code's reads: a steady resync needs one listing of the CNI policy's roles whatever the number
of roles, and only profiles and roles the process holds no answer for are read: the profiles
in one listing of the account's, the roles by name. And
which steady applies the verdict judges: every world of at least 50 ASGs, and the largest."""

from __future__ import annotations

import dataclasses

from bench.call_budget import minimum, report, run
from bench.call_budget.minimum import RULE_PAGE, Facts, Measurement, Minimum

OPERATION = "DescribeSecurityGroupRules"


def facts(
    roles: int, *, unknown: int = 0, remembered: bool = True, account_profiles: int | None = None
) -> Facts:
    return Facts(
        asgs=roles,
        templates=roles,
        security_groups=min(roles, 50),
        rules_per_chunk=(100,),
        ingress_rules=100,
        owned_rules=100,
        roles=roles,
        roles_with_policy=roles,
        profiles=roles,
        remembered=remembered,
        attach=True,
        groups_lacking_rules=0,
        roles_lacking_policy=0,
        profiles_unknown=unknown,
        roles_unknown=unknown,
        account_profiles=account_profiles if account_profiles is not None else roles,
    )


def iam(need: dict[str, Minimum]) -> dict[str, Minimum]:
    return {op: n for op, n in need.items() if op in minimum.IAM_OPERATIONS}


def test_a_steady_resync_needs_one_listing_of_the_policys_roles_whatever_their_number() -> None:
    for roles in (10, 200, 999):
        assert iam(minimum.minimum(facts(roles))) == {"ListEntitiesForPolicy": Minimum(1, 1)}
    # AWS pages the listing by 1,000 roles; moto answers in one page.
    assert iam(minimum.minimum(facts(2500)))["ListEntitiesForPolicy"] == Minimum(3, 1)


def test_profiles_the_process_does_not_know_are_listed_and_roles_read_by_name() -> None:
    cold = iam(minimum.minimum(facts(200, unknown=200, remembered=False)))
    assert cold == {
        "ListEntitiesForPolicy": Minimum(1, 1),
        "ListInstanceProfiles": Minimum(1, 1),
        "ListRoleTags": Minimum(200, 200),
    }
    assert "ListAttachedRolePolicies" not in cold  # the listing says which roles hold it


def test_profiles_are_read_in_pages_of_the_account_or_by_name_whichever_is_fewer() -> None:
    # AWS pages the account's 4,500 profiles by 1,000; moto answers in one page.
    assert iam(minimum.minimum(facts(200, unknown=200, account_profiles=4500)))[
        "ListInstanceProfiles"
    ] == Minimum(5, 1)
    assert iam(minimum.minimum(facts(200, unknown=2, account_profiles=4500)))[
        "ListInstanceProfiles"
    ] == Minimum(2, 1)
    assert "ListInstanceProfiles" not in iam(minimum.minimum(facts(200)))


def test_attach_false_needs_no_iam_call() -> None:
    unattached = dataclasses.replace(facts(200, unknown=200), attach=False)
    assert iam(minimum.minimum(unattached)) == {}


def applied(calls: int, asgs: int, phase: str = "steady") -> Measurement:
    return Measurement(
        asgs=asgs,
        security_groups=asgs,
        phase=phase,
        calls={OPERATION: calls},
        mutating=0,
        seconds=0.1,
        cpu_seconds=0.1,
        minimum={OPERATION: Minimum(aws=10, moto=10)},
        facts=facts(asgs),
        page_sizes={OPERATION: [RULE_PAGE]},
    )


def test_every_steady_apply_from_50_asgs_is_judged_not_only_the_largest() -> None:
    over_at_50 = [applied(13, 10), applied(13, 50), applied(10, 200)]
    verdict = report.verdict(over_at_50)

    assert verdict is not None
    assert verdict.over
    assert run.exit_status(verdict) == run.EXIT_OVER
    described = verdict.describe()
    assert "Steady apply at 50 ASGs: 13/10 = 1.30" in described
    assert "Steady apply at 200 ASGs: 10/10 = 1.00" in described
    assert "at 10 ASGs" not in described  # a small world's fixed reads weigh more


def test_the_largest_world_is_judged_whatever_its_size() -> None:
    verdict = report.verdict([applied(10, 3), applied(13, 3, phase="IAM refresh")])
    assert verdict is not None
    assert not verdict.over
    assert verdict.describe().startswith("Steady apply at 3 ASGs:")

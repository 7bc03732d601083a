"""The call budget's verdict and the exit status it sets: the steady apply of the largest world
over the target ratio of calls made to the minimum fails the bench (`make bench` exits non-zero),
at or under it passes. Measurements are made by hand here; the bench's run against moto is in
tests/integration/test_call_budget.py."""

from __future__ import annotations

from bench.call_budget import report, run
from bench.call_budget.minimum import RULE_PAGE, Facts, Measurement, Minimum

OPERATION = "DescribeSecurityGroupRules"
FACTS = Facts(
    asgs=10,
    templates=10,
    security_groups=10,
    rules_per_chunk=(120,),
    ingress_rules=100,
    owned_rules=100,
    roles=10,
    roles_with_policy=10,
    profiles=10,
    remembered=True,
    attach=True,
    groups_lacking_rules=0,
    roles_lacking_policy=0,
)


def applied(calls: int, minimum: int, asgs: int = 10, phase: str = "steady") -> Measurement:
    """An apply that made `calls` calls where `minimum` would do, on moto and on AWS alike."""
    return Measurement(
        asgs=asgs,
        security_groups=asgs,
        phase=phase,
        calls={OPERATION: calls},
        mutating=0,
        seconds=0.1,
        cpu_seconds=0.1,
        minimum={OPERATION: Minimum(aws=minimum, moto=minimum)},
        facts=FACTS,
        page_sizes={OPERATION: [RULE_PAGE]},
    )


def test_a_steady_apply_over_the_target_is_over_and_fails_the_bench() -> None:
    measurements = [applied(calls=13, minimum=10)]

    verdict = report.verdict(measurements)

    assert verdict is not None
    assert verdict.over
    assert run.exit_status(verdict) == run.EXIT_OVER != 0
    assert "13/10 = 1.30 on moto, on AWS 13/10 = 1.30: OVER the target of 1.2." in (
        report.report(measurements, total_seconds=1.0, template_version="$Default")
    )


def test_a_steady_apply_at_the_target_passes() -> None:
    verdict = report.verdict([applied(calls=12, minimum=10)])

    assert verdict is not None
    assert not verdict.over
    assert run.exit_status(verdict) == 0
    assert "within the target" in verdict.describe()


def test_the_steady_apply_of_the_largest_world_decides() -> None:
    """A cold apply writes and a small world's fixed reads weigh more: neither is the budget."""
    small_over = applied(calls=20, minimum=10, asgs=10)
    large_within = applied(calls=10, minimum=10, asgs=200)
    large_cold_over = applied(calls=50, minimum=10, asgs=200, phase="cold")
    larger_over = applied(calls=20, minimum=10, asgs=500)

    assert run.exit_status(report.verdict([small_over, large_within, large_cold_over])) == 0
    assert run.exit_status(report.verdict([large_within, larger_over])) == run.EXIT_OVER


def test_no_steady_apply_gives_no_verdict_and_no_failure() -> None:
    assert report.verdict([applied(calls=50, minimum=10, phase="cold")]) is None
    assert run.exit_status(None) == 0

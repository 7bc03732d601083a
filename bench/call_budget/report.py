"""What the bench prints: the tables of calls made against the minimum, per apply and per
operation, IAM calls per resync apart, what AWS held, the page sizes asked, and the verdict on
the steady applies of the large worlds, which decides the exit status. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.call_budget.minimum import IAM_OPERATIONS, PAGE_LIMITS, Measurement, Minimum
from sgmesh.aws import client

TARGET_STEADY_RATIO = 1.2
"""The most calls a steady apply may make per call of the minimum, on moto and on AWS."""
JUDGED_FROM_ASGS = 50
"""The steady applies judged: those of every world of at least this many ASGs (and that of the
largest world measured, whatever its size). In smaller worlds a few fixed reads weigh more."""
STEADY = "steady"
IAM_REFRESH = "IAM refresh"


def summary_table(measurements: Sequence[Measurement]) -> str:
    rows = [
        [
            str(m.asgs),
            str(m.security_groups),
            m.phase,
            str(m.total),
            str(m.mutating),
            str(m.iam_calls),
            str(m.minimum_moto),
            f"{m.ratio:.2f}",
            str(m.minimum_aws),
            "?" if m.projected_aws is None else str(m.projected_aws),
            f"{m.seconds:.2f}",
            f"{m.cpu_seconds:.2f}",
        ]
        for m in measurements
    ]
    header = [
        "ASGs",
        "SGs",
        "apply",
        "calls",
        "mutating",
        "IAM",
        "minimum",
        "ratio",
        "AWS minimum",
        "AWS projected",
        "seconds",
        "client CPU",
    ]
    return _markdown(header, rows, right=range(3, 12))


def operation_table(measurements: Sequence[Measurement]) -> str:
    """Calls / minimum (on moto) per operation and apply."""
    operations = sorted(
        {operation for m in measurements for operation in (*m.calls, *m.minimum)},
        key=lambda operation: (operation in client.MUTATING_OPERATIONS, operation),
    )
    header = ["operation", *(f"{m.asgs} {m.phase}" for m in measurements)]
    rows = []
    for operation in operations:
        cells = []
        for m in measurements:
            made = m.calls.get(operation, 0)
            need = m.minimum.get(operation, Minimum(0, 0))
            cell = f"{made}/{need.moto}"
            if need.aws != need.moto:
                cell += f" (AWS {need.aws})"
            cells.append(cell)
        rows.append([operation, *cells])
    return _markdown(header, rows, right=range(1, len(header)))


def iam_table(measurements: Sequence[Measurement]) -> str:
    header = ["ASGs", "apply", "IAM calls", "account-wide IAM listings", "IAM calls by operation"]
    rows = [
        [
            str(m.asgs),
            m.phase,
            str(m.iam_calls),
            str(m.account_wide_iam_reads),
            ", ".join(
                f"{operation} {n}"
                for operation, n in sorted(m.calls.items())
                if operation in IAM_OPERATIONS
            )
            or "none",
        ]
        for m in measurements
    ]
    return _markdown(header, rows, right=range(2, 4))


def facts_table(measurements: Sequence[Measurement]) -> str:
    header = [
        "ASGs",
        "apply",
        "member SGs",
        "rules read (egress too)",
        "inbound",
        "owned",
        "roles",
        "roles with CNI",
        "SGs lacking rules",
        "roles lacking CNI",
        "unknown to the process (profiles/roles)",
    ]
    rows = [
        [
            str(m.asgs),
            m.phase,
            str(m.facts.security_groups),
            "+".join(str(rules) for rules in m.facts.rules_per_chunk),
            str(m.facts.ingress_rules),
            str(m.facts.owned_rules),
            str(m.facts.roles),
            str(m.facts.roles_with_policy),
            str(m.facts.groups_lacking_rules),
            str(m.facts.roles_lacking_policy),
            f"{m.facts.profiles_unknown}/{m.facts.roles_unknown}",
        ]
        for m in measurements
    ]
    return _markdown(header, rows, right=range(2, len(header)))


def page_size_note(measurements: Sequence[Measurement]) -> str:
    asked: dict[str, set[int | None]] = {}
    for m in measurements:
        for operation, sizes in m.page_sizes.items():
            asked.setdefault(operation, set()).update(sizes)
    parts = []
    for operation, asked_sizes in sorted(asked.items()):
        parameter, largest = PAGE_LIMITS[operation]
        shown = ",".join(
            "none" if size is None else str(size) for size in sorted(asked_sizes, key=str)
        )
        verdict = "largest" if asked_sizes == {largest} else f"NOT the largest ({largest})"
        parts.append(f"{operation} {parameter}={shown} ({verdict})")
    return "Page sizes asked: " + "; ".join(parts) + "."


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int]) -> str:
    right_aligned = set(right)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(widths[i]) if i in right_aligned else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        )
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (widths[i] - 1) + ":" if i in right_aligned else "-" * widths[i]
        for i in range(len(header))
    ]
    return "\n".join([line(header), line(rule), *(line(row) for row in rows)])


def iam_note(measurements: Sequence[Measurement]) -> str:
    """IAM calls per resync apart: IAM's control plane is the account's, shared and throttled."""
    steady = [m for m in measurements if m.phase == STEADY]
    refresh = [m for m in measurements if m.phase == IAM_REFRESH]
    if not steady:
        return ""
    parts = [
        "IAM calls per steady resync: "
        + ", ".join(f"{m.iam_calls} at {m.asgs} ASGs" for m in steady)
        + "."
    ]
    if refresh:
        parts.append(
            "Once per IAM refresh (each answer kept for between half of it and all of it): "
            + ", ".join(f"{m.iam_calls} at {m.asgs} ASGs" for m in refresh)
            + "."
        )
    return " ".join(parts)


@dataclass(frozen=True)
class Judged:
    """One steady apply against the target."""

    steady: Measurement
    ratios: tuple[float, ...]  # calls made / minimum: on moto, then on AWS when projected

    @property
    def over(self) -> bool:
        return max(self.ratios) > TARGET_STEADY_RATIO

    def describe(self) -> str:
        steady = self.steady
        on_aws = "AWS projection unknown"
        if steady.projected_aws is not None:
            on_aws = f"on AWS {steady.projected_aws}/{steady.minimum_aws} = {self.ratios[-1]:.2f}"
        word = "OVER" if self.over else "within"
        return (
            f"Steady apply at {steady.asgs} ASGs: {steady.total}/{steady.minimum_moto} = "
            f"{steady.ratio:.2f} on moto, {on_aws}: {word} the target of "
            f"{TARGET_STEADY_RATIO}."
        )


@dataclass(frozen=True)
class Verdict:
    """How the steady applies of the large worlds compare with the target: what a resync of a
    large mesh costs is what the budget is about. Any over the target fails the bench."""

    judged: tuple[Judged, ...]

    @property
    def over(self) -> bool:
        return any(each.over for each in self.judged)

    def describe(self) -> str:
        return "\n".join(each.describe() for each in self.judged)


def verdict(measurements: Sequence[Measurement]) -> Verdict | None:
    """The verdict on the steady applies of every world of `JUDGED_FROM_ASGS` ASGs or more,
    and of the largest world; None when no apply was steady."""
    steady = sorted((m for m in measurements if m.phase == STEADY), key=lambda m: m.asgs)
    if not steady:
        return None
    judged = [m for m in steady if m.asgs >= JUDGED_FROM_ASGS or m is steady[-1]]
    return Verdict(tuple(_judge(m) for m in judged))


def _judge(steady: Measurement) -> Judged:
    ratios = [steady.ratio]
    if steady.projected_aws is not None:
        ratios.append(steady.projected_aws / steady.minimum_aws)
    return Judged(steady, tuple(ratios))


def report(measurements: Sequence[Measurement], total_seconds: float, template_version: str) -> str:
    parts = [
        f"Every ASG asks for launch template version {template_version}.",
        "",
        summary_table(measurements),
        "",
        "calls/minimum per operation on the moto server; (AWS n) where AWS pages need more:",
        "",
        operation_table(measurements),
        "",
        "IAM per apply (a steady apply is an operator's resync with membership unchanged):",
        "",
        iam_table(measurements),
        "",
        iam_note(measurements),
        "",
        "What AWS held before each apply:",
        "",
        facts_table(measurements),
        "",
        page_size_note(measurements),
    ]
    found = verdict(measurements)
    if found is not None:
        parts.append(found.describe())
    parts.append(f"Whole bench: {total_seconds:.1f}s (worlds built through the API included).")
    return "\n".join(parts)

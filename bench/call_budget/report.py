"""What the bench prints: the tables of calls made against the minimum, per apply and per
operation, what AWS held, the page sizes asked, and the verdict on the steady apply of the
largest world, which decides the exit status. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.call_budget.minimum import IAM_OPERATIONS, PAGE_LIMITS, Measurement, Minimum
from sgmesh.aws import client

TARGET_STEADY_RATIO = 1.2
"""The most calls a steady apply may make per call of the minimum, on moto and on AWS."""


def summary_table(measurements: Sequence[Measurement]) -> str:
    rows = [
        [
            str(m.asgs),
            str(m.security_groups),
            m.phase,
            str(m.total),
            str(m.mutating),
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
        "minimum",
        "ratio",
        "AWS minimum",
        "AWS projected",
        "seconds",
        "client CPU",
    ]
    return _markdown(header, rows, right=range(3, 11))


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


@dataclass(frozen=True)
class Verdict:
    """How the steady apply of the largest world compares with the target: what a resync of a
    large mesh costs is what the budget is about. Over the target, the bench fails."""

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


def verdict(measurements: Sequence[Measurement]) -> Verdict | None:
    """The verdict on the steady apply of the largest world; None when no apply was steady."""
    steady = max(
        (m for m in measurements if m.phase == "steady"), key=lambda m: m.asgs, default=None
    )
    if steady is None:
        return None
    ratios = [steady.ratio]
    if steady.projected_aws is not None:
        ratios.append(steady.projected_aws / steady.minimum_aws)
    return Verdict(steady, tuple(ratios))


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

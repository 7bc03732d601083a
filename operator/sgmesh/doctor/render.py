"""What doctor prints: the report as text or JSON, and the suggested NodeGroupMesh."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from sgmesh.doctor import diagnosis

__all__ = ["render_text", "report_json", "suggestion_text"]


def report_json(report: diagnosis.Report) -> dict[str, Any]:
    credentials = report.aws_node_credentials
    return {
        "region": report.region,
        "healthy": report.healthy,
        "nodeGroups": [
            {
                "name": group.name,
                "kind": group.kind.value,
                "autoScalingGroup": group.asg_name,
                "nodes": list(group.nodes),
                "pods": list(group.pods),
                "securityGroupPolicies": list(group.policies),
                "securityGroupIds": list(group.security_group_ids),
                "roleNames": list(group.role_names),
                "runsCoreDns": group.runs_dns,
            }
            for group in report.groups
        ],
        "ipFamily": f"ipv{report.ip_family}",
        "outsideVpc": dict(report.outside_vpc),
        "notLive": dict(report.not_live),
        "dns": {name: status.value for name, status in report.dns.items()},
        "podTraffic": {
            source: {target: status.value for target, status in row.items()}
            for source, row in report.matrix.items()
        },
        "awsNodeRoleArn": credentials.role_arn if credentials else None,
        "awsNodeCredentials": None
        if credentials is None
        else {
            "kind": credentials.kind.value,
            "roleArn": credentials.role_arn,
            "evidence": credentials.evidence,
        },
        "findings": [finding.as_dict() for finding in report.findings],
    }


_MARKS = {
    diagnosis.Status.OK: "ok",
    diagnosis.Status.PARTIAL: "partial",
    diagnosis.Status.BLOCKED: "BLOCKED",
    diagnosis.Status.UNKNOWN: "?",
}


def render_text(report: diagnosis.Report) -> Iterator[str]:
    groups = report.groups
    yield f"sgmesh doctor: {len(groups)} node groups in {report.region}"
    for group in groups:
        dns = ", runs CoreDNS" if group.runs_dns else ""
        if group.kind is diagnosis.GroupKind.POD_SECURITY_GROUPS:
            members = _count(len(group.pods), "pod") + " on their own branch ENIs"
        else:
            members = _count(len(group.nodes), "node")
        yield (
            f"  {group.name} ({group.kind.value}{dns}): {members}; "
            f"SGs {','.join(group.security_group_ids) or '-'}; "
            f"roles {','.join(group.role_names) or '-'}"
        )
    for name, what in sorted(report.outside_vpc.items()):
        yield f"  {name}: {what}, outside the VPC: not evaluated"
    for name, state in sorted(report.not_live.items()):
        yield f"  {name}: {state}, not a live member: not counted"
    if report.aws_node_credentials is not None:
        yield f"  aws-node gets its credentials from {report.aws_node_credentials.describe()}"
    if groups:
        names = [group.name for group in groups]
        headers = ["from \\ to", "DNS", *names]
        rows = [
            [
                source,
                _MARKS[report.dns.get(source, diagnosis.Status.UNKNOWN)],
                *(_MARKS[report.matrix[source][target]] for target in names),
            ]
            for source in names
        ]
        widths = [max(len(row[i]) for row in [headers, *rows]) + 2 for i in range(len(headers))]
        yield ""
        yield (
            "reachability (rows: pods on, columns: DNS to CoreDNS udp+tcp/53, pods on; "
            f"IPv{report.ip_family}, outbound and inbound rules)"
        )
        for row in [headers, *rows]:
            yield "".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
    yield ""
    if report.healthy:
        yield "no problem found"
        return
    yield f"{len(report.findings)} problems found:"
    for number, finding in enumerate(report.findings, start=1):
        yield f"{number}. [{finding.check.value}] {finding.summary}"
        for line in finding.evidence:
            yield f"     evidence: {line}"
        yield f"     fix: {finding.fix}"
        if finding.coverage is not None:
            verdict = "will fix" if finding.coverage.fixed else "cannot fix"
            yield f"     mesh: {verdict}: {finding.coverage.reason}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def suggestion_text(report: diagnosis.Report, suggestion: dict[str, Any] | None) -> str:
    if suggestion is None:
        return "# no NodeGroupMesh to suggest: no node group is an Auto Scaling Group\n"
    head = (
        "# a NodeGroupMesh that fixes what was found: kubectl apply -f, or commit it\n"
        if not report.healthy
        else "# nothing to fix; this NodeGroupMesh keeps the node groups as they are\n"
    )
    return head + yaml.safe_dump(suggestion, sort_keys=False)

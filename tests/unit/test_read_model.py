"""The operator and doctor read one model: the same SG, its rules and prefix lists counted by
the planner (its quota check) and by doctor (its quota finding) give one answer.

An EC2 answer is parsed once (`ingress.parse`), whoever reads it."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any

import pytest

from sgmesh.doctor import diagnosis
from sgmesh.engine import ingress, planning
from sgmesh.engine.ingress import IngressRule, PrefixList
from sgmesh.engine.topology import ProblemKind
from tests.unit import builders
from tests.unit.test_diagnosis import SYSTEM, inventory

GROUP = "sg-system"
PEER = "sg-app"

# One SG as AWS could answer for it: SG references, CIDRs of both families, an IPv6 prefix list
# of 20 entries, an IPv4 one of 7, and one whose family and size AWS did not say.
RAW_RULES: list[dict[str, Any]] = [
    *({"IpProtocol": "-1", "ReferencedGroupInfo": {"GroupId": f"sg-peer-{i}"}} for i in range(3)),
    *(
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIpv4": f"10.{i}.0.0/16"}
        for i in range(4)
    ),
    {"IpProtocol": "6", "FromPort": 22, "ToPort": 22, "CidrIpv6": "2001:db8::/32"},
    {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "PrefixListId": "pl-v6"},
    {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "PrefixListId": "pl-v4"},
    {"IpProtocol": "all", "PrefixListId": "pl-unknown"},
]
PREFIX_LISTS = {
    "pl-v6": PrefixList("pl-v6", max_entries=20, family=6),
    "pl-v4": PrefixList("pl-v4", max_entries=7, family=4),
    "pl-unknown": PrefixList("pl-unknown"),
}
# 3 references (both), 4 IPv4 CIDRs, 1 IPv6 CIDR, 20 IPv6, 7 IPv4, 1 unknown (both).
EXPECTED = {4: 3 + 4 + 7 + 1, 6: 3 + 1 + 20 + 1}


def _rules() -> list[IngressRule]:
    return [
        ingress.parse({"GroupId": GROUP, "SecurityGroupRuleId": f"sgr-{i}", **raw})
        for i, raw in enumerate(RAW_RULES)
    ]


def _planner_counts(rules: list[IngressRule]) -> dict[int, int]:
    """What the planner counts: with a quota of 1, adding the one rule the peer needs is over
    the quota, and the problem says how many rules the SG would need in each family."""
    current = dataclasses.replace(
        builders.world(builders.member("system", GROUP), builders.member("app", PEER), rules=rules),
        prefix_lists=PREFIX_LISTS,
    )
    plan = planning.plan(current, builders.intent(quota=1))
    [problem] = [p for p in plan.problems if p.subject == GROUP]
    assert problem.kind is ProblemKind.QUOTA_EXCEEDED
    needed = {
        int(family): int(count) for count, family in re.findall(r"(\d+) IPv(\d)", problem.message)
    }
    # The plan adds the mesh's own rules from both members: one reference each, both families.
    added = 2
    return {family: count - added for family, count in needed.items()}


def _doctor_counts(rules: list[IngressRule]) -> dict[int, int]:
    report = diagnosis.diagnose(
        inventory(*rules, prefix_lists=PREFIX_LISTS, rules_per_security_group=1)
    )
    counts = {}
    for finding in report.findings:
        if finding.check is diagnosis.Check.QUOTA and finding.node_group == SYSTEM.group:
            used, family = re.match(rf"{GROUP} holds (\d+) IPv(\d)", finding.summary).groups()  # type: ignore[union-attr]
            counts[int(family)] = int(used)
    return counts


def test_the_planner_and_doctor_count_one_sg_the_same_prefix_lists_included() -> None:
    rules = _rules()

    assert ingress.quota_counts(rules, PREFIX_LISTS) == EXPECTED
    assert _planner_counts(rules) == EXPECTED
    assert _doctor_counts(rules) == EXPECTED


def test_one_parser_reads_every_source_and_protocol_spelling() -> None:
    rules = {rule.rule_id: rule for rule in _rules()}

    assert rules["sgr-0"].permission == ingress.Permission("sg-peer-0", "-1", -1, -1)
    assert rules["sgr-3"].cidr == ipaddress.ip_network("10.0.0.0/16")
    assert rules["sgr-3"].permission is None  # a CIDR rule is never one a mesh makes
    assert (rules["sgr-7"].protocol, rules["sgr-7"].from_port) == ("tcp", 22)
    assert rules["sgr-10"].protocol == ingress.ALL_PROTOCOLS


@pytest.mark.parametrize(
    ("spelled", "meaning"),
    [("6", "tcp"), ("17", "udp"), ("1", "icmp"), ("58", "icmpv6"), ("all", "-1"), ("TCP", "tcp")],
)
def test_one_protocol_table(spelled: str, meaning: str) -> None:
    assert ingress.normalise_protocol(spelled) == meaning
    assert IngressRule(GROUP, spelled, source_group_id=PEER).protocol == meaning


def test_a_rule_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="needs one source"):
        IngressRule(GROUP, "-1")
    with pytest.raises(ValueError, match="needs one source"):
        IngressRule(GROUP, "-1", source_group_id=PEER, cidr=ipaddress.ip_network("10.0.0.0/8"))

"""The operator and doctor read one model: the same SG, its rules and prefix lists counted by
the planner (its quota check) and by doctor (its quota finding) give one answer.

An EC2 answer is parsed once (`ingress.parse`), whoever reads it, and a prefix list once
(`security_groups.prefix_list`), the discovery's read and doctor's alike."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any

import pytest

from sgmesh.aws import security_groups
from sgmesh.doctor import diagnosis
from sgmesh.engine import ingress, planning
from sgmesh.engine.ingress import IngressRule
from sgmesh.engine.topology import ProblemKind
from tests.unit import builders
from tests.unit.test_diagnosis import SYSTEM, inventory

GROUP = "sg-system"
PEER = "sg-app"

# One SG as AWS could answer for it: SG references, CIDRs of both families, an IPv6 prefix list
# of 20 entries, an IPv4 one of 7, AWS-managed ones (no MaxEntries: CloudFront's IPv6 list
# weighs 55, S3's 1), and one whose family and size nobody can tell.
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
    {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "PrefixListId": "pl-cloudfront-v6"},
    {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "PrefixListId": "pl-s3"},
]
# As DescribeManagedPrefixLists answers: AWS-managed lists come without MaxEntries.
DESCRIBED: list[dict[str, Any]] = [
    {
        "PrefixListId": "pl-v6",
        "PrefixListName": "offices-v6",
        "AddressFamily": "IPv6",
        "MaxEntries": 20,
    },
    {
        "PrefixListId": "pl-v4",
        "PrefixListName": "offices",
        "AddressFamily": "IPv4",
        "MaxEntries": 7,
    },
    {"PrefixListId": "pl-unknown"},
    {
        "PrefixListId": "pl-cloudfront-v6",
        "AddressFamily": "IPv6",
        "OwnerId": "AWS",
        "PrefixListName": "com.amazonaws.global.ipv6.cloudfront.origin-facing",
    },
    {
        "PrefixListId": "pl-s3",
        "AddressFamily": "IPv4",
        "OwnerId": "AWS",
        "PrefixListName": "com.amazonaws.eu-west-1.s3",
    },
]
PREFIX_LISTS = {
    listed["PrefixListId"]: security_groups.prefix_list(listed)  # type: ignore[arg-type]
    for listed in DESCRIBED
}
UNKNOWN = ingress.MAX_RULES_PER_SECURITY_GROUP
# 3 references (both), 4 IPv4 CIDRs, 1 IPv6 CIDR, 20 IPv6, 7 IPv4, an unknown list (the whole
# quota, both), CloudFront's IPv6 list (55, IPv6), S3's (1, IPv4).
EXPECTED = {4: 3 + 4 + 7 + UNKNOWN + 1, 6: 3 + 1 + 20 + UNKNOWN + 55}


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


# The weights AWS publishes for its managed prefix lists (VPC User Guide, "AWS-managed prefix
# lists"), for a list of each name as DescribeManagedPrefixLists answers it: no MaxEntries.
PUBLISHED = [
    ("com.amazonaws.global.cloudfront.origin-facing", "IPv4", 55),
    ("com.amazonaws.global.ipv6.cloudfront.origin-facing", "IPv6", 55),
    ("com.amazonaws.eu-west-1.dynamodb", "IPv4", 1),
    ("com.amazonaws.eu-west-1.ec2-instance-connect", "IPv4", 2),
    ("com.amazonaws.eu-west-1.ipv6.ec2-instance-connect", "IPv6", 2),
    ("com.amazonaws.global.groundstation", "IPv4", 5),
    ("com.amazonaws.eu-west-1.route53-healthchecks", "IPv4", 25),
    ("com.amazonaws.eu-west-1.ipv6.route53-healthchecks", "IPv6", 25),
    ("com.amazonaws.eu-west-1.s3", "IPv4", 1),
    ("com.amazonaws.us-gov-west-1.s3express", "IPv4", 6),
    ("com.amazonaws.cn-north-1.vpc-lattice", "IPv4", 10),
    ("com.amazonaws.eu-west-1.ipv6.vpc-lattice", "IPv6", 10),
]


@pytest.mark.parametrize(("name", "family", "weight"), PUBLISHED)
def test_an_aws_managed_prefix_list_counts_as_its_published_weight(
    name: str, family: str, weight: int
) -> None:
    listed = security_groups.prefix_list(
        {"PrefixListId": "pl-aws", "PrefixListName": name, "AddressFamily": family}
    )
    rule = IngressRule(GROUP, "tcp", 443, 443, prefix_list_id="pl-aws")

    counts = ingress.quota_counts([rule], {"pl-aws": listed}, quota=60)

    own, other = (4, 6) if family == "IPv4" else (6, 4)
    assert counts == {own: weight, other: 0}


def test_a_prefix_list_of_unknown_weight_counts_as_the_whole_quota_in_its_family() -> None:
    """AWS-managed, but of a name the published table lacks (a service added since): an SG
    that references it is never thought to have room."""
    listed = security_groups.prefix_list(
        {
            "PrefixListId": "pl-new",
            "AddressFamily": "IPv4",
            "OwnerId": "AWS",
            "PrefixListName": "com.amazonaws.eu-west-1.a-service-added-since",
        }
    )
    rule = IngressRule(GROUP, "tcp", 443, 443, prefix_list_id="pl-new")

    assert ingress.quota_counts([rule], {"pl-new": listed}, quota=60) == {4: 60, 6: 0}
    assert ingress.quota_counts([rule], {"pl-new": listed}) == {4: UNKNOWN, 6: 0}
    # A list no answer described at all is as unknown, in both families.
    assert ingress.quota_counts([rule], {}, quota=60) == {4: 60, 6: 60}


def test_max_entries_wins_over_a_name_that_looks_aws_managed() -> None:
    """A customer-managed list may be given any name; its MaxEntries is what it counts as."""
    listed = security_groups.prefix_list(
        {
            "PrefixListId": "pl-mine",
            "AddressFamily": "IPv4",
            "MaxEntries": 3,
            "PrefixListName": "com.amazonaws.global.cloudfront.origin-facing",
        }
    )

    assert listed.weight == 3


def test_an_sg_with_a_list_of_unknown_weight_is_full_for_the_planner_and_doctor() -> None:
    rules = [
        ingress.parse({"GroupId": GROUP, "SecurityGroupRuleId": "sgr-pl", **RAW_RULES[-3]}),
    ]
    lists = {"pl-unknown": PREFIX_LISTS["pl-unknown"]}
    current = dataclasses.replace(
        builders.world(builders.member("system", GROUP), builders.member("app", PEER), rules=rules),
        prefix_lists=lists,
    )
    # Even with the largest quota AWS allows, adding a rule is over it.
    plan = planning.plan(current, builders.intent(quota=ingress.MAX_RULES_PER_SECURITY_GROUP))
    report = diagnosis.diagnose(
        inventory(
            *rules,
            prefix_lists=lists,
            rules_per_security_group=ingress.MAX_RULES_PER_SECURITY_GROUP,
        )
    )

    assert [p.subject for p in plan.problems if p.kind is ProblemKind.QUOTA_EXCEEDED] == [GROUP]
    assert any(
        finding.check is diagnosis.Check.QUOTA and GROUP in finding.summary
        for finding in report.findings
    )

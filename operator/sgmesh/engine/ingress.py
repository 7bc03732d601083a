"""Security-group rules as AWS holds them: one rule type, one parser, one protocol table,
one quota count — for the planner, apply and doctor alike.

A rule admits one protocol and port range from exactly one source: a security group, a CIDR
or a managed prefix list. An outbound rule (`egress`, which only doctor reads) has the same
shape, its "source" naming where the traffic may go. `parse` turns an EC2 `SecurityGroupRule`
answer into an `IngressRule`; `quota_counts` counts a group's rules as the rules-per-SG quota
counts them, a prefix list by its `PrefixList.weight`.

Pure: no I/O, no AWS or Kubernetes library. The answer `parse` reads is a plain mapping.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALL_PROTOCOLS",
    "AWS_MANAGED_PREFIX_LIST_WEIGHTS",
    "MAX_PORT",
    "MAX_RULES_PER_SECURITY_GROUP",
    "PORTED",
    "IngressRule",
    "Network",
    "Permission",
    "PrefixList",
    "admits",
    "aws_managed_weight",
    "covered_ports",
    "normalise_protocol",
    "parse",
    "quota_counts",
]

ALL_PROTOCOLS = "-1"
MAX_PORT = 65535
PORTED = frozenset({"tcp", "udp"})
# The EC2 API accepts protocol names or IANA numbers, and rules read back may carry either.
_PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6", "all": ALL_PROTOCOLS}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The largest the rules-per-SG quota can be: AWS refuses to let it times the SGs per network
# interface (at least 1) exceed 1,000 (VPC User Guide, "Amazon VPC quotas"). A prefix list
# whose weight nobody can tell counts as this much by default: no applied quota is larger, so
# an SG that references one is never thought to have room.
MAX_RULES_PER_SECURITY_GROUP = 1000

# What a reference to an AWS-managed prefix list counts as: AWS publishes a weight per list
# name, and DescribeManagedPrefixLists answers no MaxEntries for these lists. From the table
# "Available AWS-managed prefix lists" of the Amazon VPC User Guide (page
# working-with-aws-managed-prefix-lists, section "AWS-managed prefix list weight"). `{region}`
# stands for the region in a regional list's name (`com.amazonaws.eu-west-1.s3`). A name the
# table lacks (a service added since) is of unknown weight.
AWS_MANAGED_PREFIX_LIST_WEIGHTS: Mapping[str, int] = {
    "com.amazonaws.global.cloudfront.origin-facing": 55,
    "com.amazonaws.global.ipv6.cloudfront.origin-facing": 55,
    "com.amazonaws.global.groundstation": 5,
    "com.amazonaws.{region}.dynamodb": 1,
    "com.amazonaws.{region}.ec2-instance-connect": 2,
    "com.amazonaws.{region}.ipv6.ec2-instance-connect": 2,
    "com.amazonaws.{region}.route53-healthchecks": 25,
    "com.amazonaws.{region}.ipv6.route53-healthchecks": 25,
    "com.amazonaws.{region}.s3": 1,
    "com.amazonaws.{region}.s3express": 6,
    "com.amazonaws.{region}.vpc-lattice": 10,
    "com.amazonaws.{region}.ipv6.vpc-lattice": 10,
}
_REGIONAL_NAME = re.compile(r"com\.amazonaws\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.(?P<rest>.+)")


def normalise_protocol(protocol: str) -> str:
    """`6` → `tcp`, `58` → `icmpv6`, `all` → `-1`; names in lower case."""
    lowered = str(protocol).strip().lower()
    return _PROTOCOL_NAMES.get(lowered, lowered)


@dataclass(frozen=True, order=True)
class Permission:
    """What a rule referencing an SG admits: traffic of one protocol and port range from it.

    Ports follow the EC2 API: -1/-1 for all protocols and for all ICMP types.
    """

    source_group_id: str
    ip_protocol: str
    from_port: int
    to_port: int

    def describe(self) -> str:
        if self.ip_protocol == ALL_PROTOCOLS:
            what = "all traffic"
        elif self.from_port == -1:
            what = f"all {self.ip_protocol}"
        elif self.from_port == self.to_port:
            what = f"{self.ip_protocol}/{self.from_port}"
        else:
            what = f"{self.ip_protocol}/{self.from_port}-{self.to_port}"
        return f"{what} from {self.source_group_id}"


@dataclass(frozen=True)
class IngressRule:
    """One inbound rule of `group_id`, with exactly one source: `source_group_id`, `cidr` or
    `prefix_list_id`. The protocol is normalised (`normalise_protocol`); all-protocol rules
    carry ports -1/-1, as AWS reports them.

    With `egress`, an outbound rule instead: the same fields name the destination the group's
    ENIs may send to (EC2 answers both directions in one `SecurityGroupRule` shape). The
    planner and apply only ever hold inbound rules."""

    group_id: str
    protocol: str = ALL_PROTOCOLS
    from_port: int = -1
    to_port: int = -1
    source_group_id: str | None = None
    cidr: Network | None = None
    prefix_list_id: str | None = None
    rule_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict, compare=False)
    description: str = ""
    egress: bool = False

    def __post_init__(self) -> None:
        protocol = normalise_protocol(self.protocol)
        object.__setattr__(self, "protocol", protocol)
        if protocol == ALL_PROTOCOLS:
            object.__setattr__(self, "from_port", -1)
            object.__setattr__(self, "to_port", -1)
        sources = [s for s in (self.source_group_id, self.cidr, self.prefix_list_id) if s]
        if len(sources) != 1:
            raise ValueError(f"rule {self.rule_id or '?'} of {self.group_id} needs one source")

    @classmethod
    def of(
        cls,
        rule_id: str,
        group_id: str,
        permission: Permission,
        tags: Mapping[str, str] | None = None,
        description: str = "",
    ) -> IngressRule:
        """The rule of `group_id` that admits `permission` (a rule referencing an SG)."""
        return cls(
            group_id,
            permission.ip_protocol,
            permission.from_port,
            permission.to_port,
            source_group_id=permission.source_group_id,
            rule_id=rule_id,
            tags=dict(tags or {}),
            description=description,
        )

    @property
    def permission(self) -> Permission | None:
        """What the rule admits when its source is an SG (the only rules a mesh makes)."""
        if self.source_group_id is None:
            return None
        return Permission(self.source_group_id, self.protocol, self.from_port, self.to_port)

    @property
    def source(self) -> str:
        return str(self.source_group_id or self.cidr or self.prefix_list_id)

    def describe(self) -> str:
        if self.protocol == ALL_PROTOCOLS:
            what = "all traffic"
        elif self.protocol in PORTED:
            ports = (
                str(self.from_port)
                if self.from_port == self.to_port
                else f"{self.from_port}-{self.to_port}"
            )
            what = f"{self.protocol}/{ports}"
        elif self.from_port == -1:
            what = f"all {self.protocol}"
        else:
            what = f"{self.protocol} type {self.from_port}"
        rule = f" ({self.rule_id})" if self.rule_id else ""
        direction = "to" if self.egress else "from"
        return f"{self.group_id} admits {what} {direction} {self.source}{rule}"


def covered_ports(
    rule: IngressRule, protocol: str, from_port: int, to_port: int
) -> tuple[int, int] | None:
    """The part of the wanted traffic (protocol, ports) that the rule's protocol and ports
    admit, whatever its source; None when it admits none of it. The one coverage function:
    the planner asks it whether a rule already admits a permission, doctor how much of a flow
    a rule admits."""
    protocol = normalise_protocol(protocol)
    if rule.protocol == ALL_PROTOCOLS:
        return (from_port, to_port)
    if rule.protocol != protocol:
        return None
    if protocol in PORTED:
        low, high = max(rule.from_port, from_port), min(rule.to_port, to_port)
        return (low, high) if low <= high else None
    # ICMP and other protocols: a rule for every type (-1) or the wanted type itself.
    if rule.from_port in (-1, from_port):
        return (from_port, to_port)
    return None


def admits(rule: IngressRule, permission: Permission) -> bool:
    """Whether the rule admits all that `permission` asks: from the same SG, all protocols or
    the same protocol with ports that contain the wanted ones."""
    if rule.source_group_id != permission.source_group_id:
        return False
    wanted = (permission.from_port, permission.to_port)
    return covered_ports(rule, permission.ip_protocol, *wanted) == wanted


def aws_managed_weight(name: str) -> int | None:
    """The published weight of the AWS-managed prefix list named `name`, or None."""
    regional = _REGIONAL_NAME.fullmatch(name)
    if regional is not None:
        name = f"com.amazonaws.{{region}}.{regional['rest']}"
    return AWS_MANAGED_PREFIX_LIST_WEIGHTS.get(name)


@dataclass(frozen=True)
class PrefixList:
    """A managed prefix list a rule references, as DescribeManagedPrefixLists describes it.
    `max_entries`: its MaxEntries (AWS-managed lists have none); `family`: 4 or 6 (None when
    not known: counted in both); `name`: its PrefixListName; `entries`: its CIDRs, when they
    were read (doctor reads them; the planner needs none)."""

    prefix_list_id: str
    max_entries: int | None = None
    family: int | None = None
    entries: tuple[Network, ...] | None = None
    name: str | None = None

    @property
    def weight(self) -> int | None:
        """How many rules a reference to the list counts as in its family: its MaxEntries, or
        for an AWS-managed list the weight AWS publishes for its name; None when neither is
        known."""
        if self.max_entries is not None:
            return self.max_entries
        return aws_managed_weight(self.name) if self.name else None


def parse(raw: Mapping[str, Any]) -> IngressRule:
    """An EC2 `SecurityGroupRule` (DescribeSecurityGroupRules) as an `IngressRule`; an outbound
    one (`IsEgress`) as one with `egress` set."""
    cidr = raw.get("CidrIpv4") or raw.get("CidrIpv6")
    return IngressRule(
        group_id=raw["GroupId"],
        protocol=str(raw.get("IpProtocol", ALL_PROTOCOLS)),
        from_port=int(raw.get("FromPort", -1)),
        to_port=int(raw.get("ToPort", -1)),
        source_group_id=(raw.get("ReferencedGroupInfo") or {}).get("GroupId") or None,
        cidr=ipaddress.ip_network(cidr, strict=False) if cidr else None,
        prefix_list_id=raw.get("PrefixListId") or None,
        rule_id=raw.get("SecurityGroupRuleId", ""),
        tags={tag["Key"]: tag.get("Value", "") for tag in raw.get("Tags", []) if "Key" in tag},
        description=raw.get("Description", ""),
        egress=bool(raw.get("IsEgress", False)),
    )


def quota_counts(
    rules: Iterable[IngressRule],
    prefix_lists: Mapping[str, PrefixList] | None = None,
    quota: int = MAX_RULES_PER_SECURITY_GROUP,
) -> dict[int, int]:
    """The inbound rules of one SG as the rules-per-SG quota counts them, per IP family.

    AWS enforces the quota separately for IPv4 and IPv6: a CIDR rule counts in its family; a
    rule referencing an SG counts in both; a rule referencing a prefix list counts as the
    list's weight (`PrefixList.weight`) in the list's family (in both when the family is not
    known). A list whose weight is not known — not described, or AWS-managed of a name the
    published table lacks — counts as `quota`, the whole of it: pass the applied quota;
    without it, the largest there can be."""
    counts = {4: 0, 6: 0}
    lists = prefix_lists or {}
    for rule in rules:
        if rule.cidr is not None:
            counts[rule.cidr.version] += 1
        elif rule.prefix_list_id is not None:
            listed = lists.get(rule.prefix_list_id)
            weight = listed.weight if listed is not None else None
            families = (listed.family,) if listed and listed.family in counts else (4, 6)
            for family in families:
                counts[family] += quota if weight is None else weight
        else:
            counts[4] += 1
            counts[6] += 1
    return counts

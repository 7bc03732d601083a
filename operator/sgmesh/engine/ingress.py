"""Inbound security-group rules as AWS holds them: one rule type, one parser, one protocol table,
one quota count — for the planner, apply and doctor alike.

A rule admits one protocol and port range from exactly one source: a security group, a CIDR
or a managed prefix list. `parse` turns an EC2 `SecurityGroupRule` answer into an
`IngressRule`; `quota_counts` counts a group's rules as the rules-per-SG quota counts them.

Pure: no I/O, no AWS or Kubernetes library. The answer `parse` reads is a plain mapping.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALL_PROTOCOLS",
    "MAX_PORT",
    "PORTED",
    "IngressRule",
    "Network",
    "Permission",
    "PrefixList",
    "admits",
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
    carry ports -1/-1, as AWS reports them."""

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
        return f"{self.group_id} admits {what} from {self.source}{rule}"


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


@dataclass(frozen=True)
class PrefixList:
    """A managed prefix list a rule references. It counts against the quota as `max_entries`
    rules in its address family (`family`: 4 or 6; None when not known: counted in both).
    `entries`: its CIDRs, when they were read (doctor reads them; the planner needs none)."""

    prefix_list_id: str
    max_entries: int | None = None
    family: int | None = None
    entries: tuple[Network, ...] | None = None


def parse(raw: Mapping[str, Any]) -> IngressRule:
    """An EC2 `SecurityGroupRule` (DescribeSecurityGroupRules) as an `IngressRule`."""
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
    )


def quota_counts(
    rules: Iterable[IngressRule], prefix_lists: Mapping[str, PrefixList] | None = None
) -> dict[int, int]:
    """The inbound rules of one SG as the rules-per-SG quota counts them, per IP family.

    AWS enforces the quota separately for IPv4 and IPv6: a CIDR rule counts in its family; a
    rule referencing an SG counts in both; a rule referencing a prefix list counts as the
    list's maximum number of entries in the list's family (in both when the family is not
    known, and as one rule when its size is not known)."""
    counts = {4: 0, 6: 0}
    lists = prefix_lists or {}
    for rule in rules:
        if rule.cidr is not None:
            counts[rule.cidr.version] += 1
        elif rule.prefix_list_id is not None:
            listed = lists.get(rule.prefix_list_id)
            weight = listed.max_entries if listed and listed.max_entries is not None else 1
            families = (listed.family,) if listed and listed.family in counts else (4, 6)
            for family in families:
                counts[family] += weight
        else:
            counts[4] += 1
            counts[6] += 1
    return counts

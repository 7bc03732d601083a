"""Security-group semantics: do the rules of both ends admit a flow between network interfaces?

This is how AWS decides whether a new flow gets from one ENI to another: the inbound rules of
all the SGs of the receiving ENI are pooled, and the flow is admitted when some rule matches its
protocol and port and its source — an SG attached to the sending ENI, a CIDR that covers the
sender's address, or a prefix list whose entries cover it; and, on the other end, the outbound
rules of the sending ENI's SGs must admit it to the receiver the same way (an SG of the
receiving ENI, a CIDR or prefix list covering the receiver's address). Rules only allow; return
traffic of an admitted flow is tracked by the SG and needs no rule of its own. Network ACLs are
not evaluated (they are the subnet's, not the ENI's).

`doctor` uses it to tell which node groups can reach CoreDNS and each other. The rules are
`sgmesh.engine.ingress.IngressRule`s, the same the planner works from (outbound ones carry
`egress`).

Pure: no I/O, no AWS or Kubernetes library. It never decides anything about rules it was not
given: a source it cannot resolve (a prefix list whose entries are unknown) admits nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sgmesh.engine import ingress
from sgmesh.engine.ingress import ALL_PROTOCOLS, MAX_PORT, PORTED, IngressRule, Network

__all__ = [
    "ALL_TRAFFIC",
    "DNS_TCP",
    "DNS_UDP",
    "Endpoint",
    "Flow",
    "PathVerdict",
    "Side",
    "SourceKind",
    "Verdict",
    "evaluate",
    "evaluate_outbound",
    "evaluate_path",
    "missing_ranges",
    "port_range",
    "source_kind",
]


@dataclass(frozen=True, order=True)
class Flow:
    """Traffic of one protocol and port range (tcp/udp); -1/-1 means every port or type."""

    protocol: str
    from_port: int = -1
    to_port: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", ingress.normalise_protocol(self.protocol))
        if self.protocol in PORTED:
            if not 0 <= self.from_port <= self.to_port <= MAX_PORT:
                raise ValueError(
                    f"{self.protocol} ports must satisfy 0 <= from <= to <= {MAX_PORT}, "
                    f"not {self.from_port}-{self.to_port}"
                )
        elif self.protocol == ALL_PROTOCOLS:
            object.__setattr__(self, "from_port", -1)
            object.__setattr__(self, "to_port", -1)

    def describe(self) -> str:
        if self.protocol == ALL_PROTOCOLS:
            return "all traffic"
        if self.protocol in PORTED:
            if self.from_port == self.to_port:
                return f"{self.protocol}/{self.from_port}"
            return f"{self.protocol}/{self.from_port}-{self.to_port}"
        if self.from_port == -1:
            return f"all {self.protocol}"
        return f"{self.protocol} type {self.from_port}"


ALL_TRAFFIC = Flow(ALL_PROTOCOLS)
DNS_UDP = Flow("udp", 53, 53)
DNS_TCP = Flow("tcp", 53, 53)


class SourceKind(enum.StrEnum):
    SECURITY_GROUP = "security-group"
    CIDR = "cidr"
    PREFIX_LIST = "prefix-list"


def source_kind(rule: IngressRule) -> SourceKind:
    if rule.source_group_id:
        return SourceKind.SECURITY_GROUP
    if rule.cidr is not None:
        return SourceKind.CIDR
    return SourceKind.PREFIX_LIST


def port_range(rule: IngressRule, flow: Flow) -> tuple[int, int] | None:
    """The part of `flow`'s ports the rule's protocol and ports admit, if any."""
    return ingress.covered_ports(rule, flow.protocol, flow.from_port, flow.to_port)


@dataclass(frozen=True)
class Endpoint:
    """A network interface as security groups see it: its SGs and the addresses it sends from
    (its private addresses and delegated prefixes, IPv4 and IPv6)."""

    security_group_ids: frozenset[str]
    networks: frozenset[Network] = frozenset()
    name: str = ""

    def networks_of(self, family: int) -> frozenset[Network]:
        return frozenset(n for n in self.networks if n.version == family)

    def holding(self, network: Network) -> Endpoint:
        """The same ENI seen at one of its addresses (a pod's): what a rule must cover when
        traffic goes to that address only."""
        return Endpoint(self.security_group_ids, frozenset({network}), self.name)


@dataclass(frozen=True)
class Verdict:
    """Whether `flow` from `source` is admitted; `rules` are the rules that admit some of it,
    `missing` the port ranges nothing admits (the whole flow when nothing does)."""

    flow: Flow
    rules: tuple[IngressRule, ...]
    missing: tuple[tuple[int, int], ...] = field(default=())

    @property
    def admitted(self) -> bool:
        return not self.missing

    @property
    def partly(self) -> bool:
        return bool(self.rules) and bool(self.missing)


def _source_matches(
    rule: IngressRule,
    source: Endpoint,
    network: Network | None,
    prefix_lists: Mapping[str, ingress.PrefixList],
) -> bool:
    """Does `rule` admit traffic sent by `source` from `network` (None: an address of the
    family is not known, so only SG references can match)?"""
    if rule.source_group_id:
        # An SG reference admits whatever the sending ENI sends, in either family.
        return rule.source_group_id in source.security_group_ids
    if network is None:
        return False
    if rule.cidr is not None:
        covering: Sequence[Network] = (rule.cidr,)
    else:
        listed = prefix_lists.get(rule.prefix_list_id or "")
        covering = (listed.entries or ()) if listed is not None else ()
    return any(
        network.version == cover.version and network.subnet_of(cover)  # type: ignore[arg-type]
        for cover in covering
    )


def missing_ranges(
    wanted: tuple[int, int], admitted: Iterable[tuple[int, int]]
) -> tuple[tuple[int, int], ...]:
    """The parts of the inclusive range `wanted` that no admitted range covers."""
    low, high = wanted
    gaps: list[tuple[int, int]] = []
    cursor = low
    for start, end in sorted(admitted):
        if end < cursor:
            continue
        if start > high:
            break
        if start > cursor:
            gaps.append((cursor, start - 1))
        cursor = max(cursor, end + 1)
        if cursor > high:
            break
    if cursor <= high:
        gaps.append((cursor, high))
    return tuple(gaps)


def evaluate(
    flow: Flow,
    destination_group_ids: Iterable[str],
    source: Endpoint,
    rules: Iterable[IngressRule],
    *,
    prefix_lists: Mapping[str, ingress.PrefixList] | None = None,
    family: int = 4,
) -> Verdict:
    """Is `flow` (over IP `family`) from `source` admitted into an ENI with these SGs, by their
    inbound rules (outbound ones among `rules` are ignored)?

    Pods send from any address of the ENI, so the flow is admitted only when every address
    (or delegated prefix) of that family is admitted on every port, each by some rule."""
    return _evaluate(flow, destination_group_ids, source, rules, prefix_lists or {}, family, False)


def evaluate_outbound(
    flow: Flow,
    source_group_ids: Iterable[str],
    destination: Endpoint,
    rules: Iterable[IngressRule],
    *,
    prefix_lists: Mapping[str, ingress.PrefixList] | None = None,
    family: int = 4,
) -> Verdict:
    """Is `flow` to `destination` let out of an ENI with these SGs, by their outbound rules
    (inbound ones among `rules` are ignored)? Every address of `destination` of the family
    (pass `Endpoint.holding` for one pod's) must be covered on every port."""
    return _evaluate(flow, source_group_ids, destination, rules, prefix_lists or {}, family, True)


def _evaluate(  # noqa: PLR0917 - one private body for both directions
    flow: Flow,
    group_ids: Iterable[str],
    peer: Endpoint,
    rules: Iterable[IngressRule],
    lists: Mapping[str, ingress.PrefixList],
    family: int,
    egress: bool,
) -> Verdict:
    groups = frozenset(group_ids)
    candidates = [
        (rule, part)
        for rule in rules
        if rule.egress is egress
        and rule.group_id in groups
        and (part := port_range(rule, flow)) is not None
    ]
    networks: list[Network | None] = sorted(peer.networks_of(family), key=str) or [None]
    admitting: dict[IngressRule, None] = {}
    missing: set[tuple[int, int]] = set()
    for network in networks:
        ranges = []
        for rule, part in candidates:
            if _source_matches(rule, peer, network, lists):
                admitting[rule] = None
                ranges.append(part)
        if flow.protocol in PORTED:
            missing.update(missing_ranges((flow.from_port, flow.to_port), ranges))
        elif not ranges:
            missing.add((flow.from_port, flow.to_port))
    ordered = tuple(sorted(admitting, key=lambda r: (r.group_id, r.rule_id, r.source)))
    return Verdict(flow, ordered, _merged(missing))


class Side(enum.StrEnum):
    """The end of a flow whose rules decide: the sender's outbound, the receiver's inbound."""

    OUTBOUND = "outbound"
    INBOUND = "inbound"


@dataclass(frozen=True)
class PathVerdict:
    """A flow between two ENIs, judged at both ends."""

    outbound: Verdict
    inbound: Verdict

    @property
    def flow(self) -> Flow:
        return self.inbound.flow

    @property
    def admitted(self) -> bool:
        return self.outbound.admitted and self.inbound.admitted

    @property
    def partly(self) -> bool:
        """Some of the flow passes both ends, not all of it."""
        if self.admitted:
            return False
        return all(v.admitted or v.partly for v in (self.outbound, self.inbound))

    @property
    def blocking(self) -> tuple[tuple[Side, Verdict], ...]:
        """The ends that do not admit all of the flow, the sender's first."""
        sides = ((Side.OUTBOUND, self.outbound), (Side.INBOUND, self.inbound))
        return tuple((side, verdict) for side, verdict in sides if not verdict.admitted)


def evaluate_path(
    flow: Flow,
    source: Endpoint,
    destination: Endpoint,
    rules: Iterable[IngressRule],
    *,
    prefix_lists: Mapping[str, ingress.PrefixList] | None = None,
    family: int = 4,
) -> PathVerdict:
    """`flow` from `source` to `destination`: let out by the outbound rules of the source's
    SGs, and let in by the inbound rules of the destination's SGs. `rules` may hold the rules
    of both (each side reads only its own SGs' rules of its direction)."""
    pooled = tuple(rules)
    lists = prefix_lists or {}
    return PathVerdict(
        outbound=_evaluate(
            flow, source.security_group_ids, destination, pooled, lists, family, True
        ),
        inbound=_evaluate(
            flow, destination.security_group_ids, source, pooled, lists, family, False
        ),
    )


def _merged(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Overlapping or adjacent ranges as one."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)

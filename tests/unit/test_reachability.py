"""Security-group semantics: examples of each kind of source, and properties against a brute
force that checks every port and address one by one."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgmesh.engine import ingress, reachability
from sgmesh.engine.ingress import IngressRule, PrefixList
from sgmesh.engine.reachability import Endpoint, Flow

NODE_A = Endpoint(frozenset({"sg-a"}), frozenset({ipaddress.ip_network("10.0.1.5/32")}))
DST = ["sg-dns"]


def evaluate(flow: Flow, *rules: IngressRule, source: Endpoint = NODE_A, **options: object):
    return reachability.evaluate(flow, DST, source, rules, **options)  # type: ignore[arg-type]


def test_a_rule_referencing_a_group_of_the_sender_admits_it() -> None:
    rule = IngressRule("sg-dns", "udp", 53, 53, source_group_id="sg-a", rule_id="sgr-1")

    verdict = evaluate(reachability.DNS_UDP, rule)

    assert verdict.admitted
    assert verdict.rules == (rule,)


def test_a_rule_of_another_group_or_from_another_group_admits_nothing() -> None:
    elsewhere = IngressRule("sg-other", "-1", source_group_id="sg-a")
    other_source = IngressRule("sg-dns", "-1", source_group_id="sg-b")

    verdict = evaluate(reachability.DNS_UDP, elsewhere, other_source)

    assert not verdict.admitted
    assert verdict.missing == ((53, 53),)


def test_all_traffic_admits_dns_but_tcp_53_does_not_admit_udp_53() -> None:
    assert evaluate(
        reachability.DNS_UDP, IngressRule("sg-dns", "-1", source_group_id="sg-a")
    ).admitted
    assert not evaluate(
        reachability.DNS_UDP, IngressRule("sg-dns", "6", 53, 53, source_group_id="sg-a")
    ).admitted
    assert evaluate(
        reachability.DNS_TCP, IngressRule("sg-dns", "6", 0, 65535, source_group_id="sg-a")
    ).admitted


def test_cidrs_admit_a_sender_only_when_together_they_cover_each_of_its_addresses() -> None:
    subnet = IngressRule("sg-dns", "udp", 53, 53, cidr=ipaddress.ip_network("10.0.1.0/24"))
    other = IngressRule("sg-dns", "udp", 53, 53, cidr=ipaddress.ip_network("10.0.2.0/24"))
    spread = Endpoint(
        frozenset({"sg-a"}),
        frozenset({ipaddress.ip_network("10.0.1.5/32"), ipaddress.ip_network("10.0.2.9/32")}),
    )

    assert evaluate(reachability.DNS_UDP, subnet).admitted
    assert not evaluate(reachability.DNS_UDP, other).admitted
    assert not evaluate(reachability.DNS_UDP, subnet, source=spread).admitted
    assert evaluate(reachability.DNS_UDP, subnet, other, source=spread).admitted


def test_a_cidr_counts_only_in_its_ip_family() -> None:
    everything_v6 = IngressRule("sg-dns", "-1", cidr=ipaddress.ip_network("::/0"))

    assert not evaluate(reachability.DNS_UDP, everything_v6, family=4).admitted
    dual = Endpoint(
        frozenset(),
        frozenset({ipaddress.ip_network("10.0.1.5/32"), ipaddress.ip_network("2600:1f18::5/128")}),
    )
    assert evaluate(reachability.DNS_UDP, everything_v6, source=dual, family=6).admitted


def test_a_delegated_prefix_is_admitted_only_by_a_cidr_that_contains_it() -> None:
    prefixed = Endpoint(frozenset(), frozenset({ipaddress.ip_network("10.0.1.16/28")}))
    narrow = IngressRule("sg-dns", "-1", cidr=ipaddress.ip_network("10.0.1.16/29"))
    wide = IngressRule("sg-dns", "-1", cidr=ipaddress.ip_network("10.0.0.0/16"))

    assert not evaluate(reachability.DNS_UDP, narrow, source=prefixed).admitted
    assert evaluate(reachability.DNS_UDP, wide, source=prefixed).admitted


def test_a_prefix_list_admits_by_its_entries_and_an_unknown_one_admits_nothing() -> None:
    rule = IngressRule("sg-dns", "udp", 53, 53, prefix_list_id="pl-1")

    lists = {"pl-1": PrefixList("pl-1", entries=(ipaddress.ip_network("10.0.0.0/16"),))}
    assert evaluate(reachability.DNS_UDP, rule, prefix_lists=lists).admitted
    assert not evaluate(reachability.DNS_UDP, rule, prefix_lists={}).admitted


def test_partly_admitted_traffic_names_the_ports_nothing_admits() -> None:
    rules = [
        IngressRule("sg-dns", "tcp", 0, 1023, source_group_id="sg-a"),
        IngressRule("sg-dns", "tcp", 2000, 65535, cidr=ipaddress.ip_network("10.0.0.0/8")),
    ]

    verdict = evaluate(Flow("tcp", 0, 65535), *rules)

    assert verdict.partly
    assert verdict.missing == ((1024, 1999),)


def test_all_traffic_is_admitted_only_by_an_all_protocols_rule() -> None:
    ported = [
        IngressRule("sg-dns", "tcp", 0, 65535, source_group_id="sg-a"),
        IngressRule("sg-dns", "udp", 0, 65535, source_group_id="sg-a"),
    ]

    assert not evaluate(reachability.ALL_TRAFFIC, *ported).admitted
    assert evaluate(
        reachability.ALL_TRAFFIC, IngressRule("sg-dns", "all", source_group_id="sg-a")
    ).admitted


def test_icmp_types() -> None:
    echo = IngressRule("sg-dns", "icmp", 8, -1, source_group_id="sg-a")

    assert evaluate(Flow("icmp", 8, -1), echo).admitted
    assert not evaluate(Flow("icmp", -1, -1), echo).admitted
    assert evaluate(
        Flow("icmp", 8, -1), IngressRule("sg-dns", "1", -1, -1, source_group_id="sg-a")
    ).admitted


def test_bad_ports_and_rules_without_one_source_are_refused_with_the_values() -> None:
    with pytest.raises(ValueError, match="not 70000-53"):
        Flow("udp", 70000, 53)
    with pytest.raises(ValueError, match="needs one source"):
        IngressRule("sg-dns", "-1")


def test_rule_counts_per_family_as_the_quota_counts_them() -> None:
    rules = [
        IngressRule("sg-x", "-1", source_group_id="sg-a"),
        IngressRule("sg-x", "tcp", 443, 443, cidr=ipaddress.ip_network("10.0.0.0/8")),
        IngressRule("sg-x", "tcp", 443, 443, cidr=ipaddress.ip_network("::/0")),
        IngressRule("sg-x", "tcp", 443, 443, prefix_list_id="pl-1"),
    ]

    assert ingress.quota_counts(rules, {"pl-1": PrefixList("pl-1", 20, 4)}) == {4: 22, 6: 2}


# ---- properties ----------------------------------------------------------------------------

SMALL_PORT = st.integers(min_value=0, max_value=24)
GROUPS = st.sampled_from(["sg-a", "sg-b", "sg-dns"])
NETWORKS = st.sampled_from(
    [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "10.0.1.0/24", "10.0.1.5/32", "10.0.2.0/24")]
)
ADDRESSES = st.sampled_from(
    [ipaddress.ip_network(n) for n in ("10.0.1.5/32", "10.0.1.6/32", "10.0.2.7/32", "10.9.0.1/32")]
)


@st.composite
def rules(draw: st.DrawFn) -> IngressRule:
    protocol = draw(st.sampled_from(["tcp", "udp", "-1"]))
    low = draw(SMALL_PORT)
    high = draw(st.integers(min_value=low, max_value=24))
    if protocol == "-1":
        low = high = -1
    kind = draw(st.sampled_from(["group", "cidr"]))
    if kind == "group":
        return IngressRule(draw(GROUPS), protocol, low, high, source_group_id=draw(GROUPS))
    return IngressRule(draw(GROUPS), protocol, low, high, cidr=draw(NETWORKS))


def _admits_one(
    rule: IngressRule, protocol: str, port: int, source: Endpoint, address: ipaddress.IPv4Network
) -> bool:
    """Brute force: one packet from one address, one rule."""
    if rule.group_id not in DST:
        return False
    if rule.protocol not in ("-1", protocol):
        return False
    if rule.protocol != "-1" and not rule.from_port <= port <= rule.to_port:
        return False
    if rule.source_group_id:
        return rule.source_group_id in source.security_group_ids
    assert rule.cidr is not None
    return address.subnet_of(rule.cidr)  # type: ignore[arg-type]


@given(
    st.lists(rules(), max_size=6),
    st.sampled_from(["tcp", "udp"]),
    SMALL_PORT,
    SMALL_PORT,
    st.frozensets(GROUPS, max_size=2),
    st.frozensets(ADDRESSES, min_size=1, max_size=2),
)
def test_a_flow_is_admitted_exactly_when_every_port_of_it_is_admitted_by_some_rule(
    given_rules: list[IngressRule],
    protocol: str,
    first: int,
    second: int,
    groups: frozenset[str],
    addresses: frozenset[ipaddress.IPv4Network],
) -> None:
    low, high = min(first, second), max(first, second)
    source = Endpoint(groups, frozenset(addresses))

    verdict = reachability.evaluate(Flow(protocol, low, high), DST, source, given_rules)

    uncovered = [
        port
        for port in range(low, high + 1)
        if any(
            not any(_admits_one(rule, protocol, port, source, a) for rule in given_rules)
            for a in addresses
        )
    ]
    assert verdict.admitted == (not uncovered)
    assert [p for lo, hi in verdict.missing for p in range(lo, hi + 1)] == uncovered
    assert all(
        any(
            _admits_one(rule, protocol, p, source, a)
            for p in range(low, high + 1)
            for a in addresses
        )
        for rule in verdict.rules
    )


@given(
    st.tuples(SMALL_PORT, SMALL_PORT).map(sorted),
    st.lists(st.tuples(SMALL_PORT, SMALL_PORT).map(sorted), max_size=5),
)
def test_missing_ranges_are_exactly_the_uncovered_ports_in_order(
    wanted: list[int], admitted: list[list[int]]
) -> None:
    gaps = reachability.missing_ranges((wanted[0], wanted[1]), [(a, b) for a, b in admitted])

    expected = [
        p for p in range(wanted[0], wanted[1] + 1) if not any(a <= p <= b for a, b in admitted)
    ]
    assert [p for low, high in gaps for p in range(low, high + 1)] == expected
    assert all(gap[1] + 1 < following[0] for gap, following in itertools.pairwise(gaps))

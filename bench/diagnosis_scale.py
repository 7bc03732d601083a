"""How long `sgmesh doctor` takes to diagnose a large cluster once it has read it.

Builds, in memory and without any I/O, the inventory of a cluster of G node groups of N nodes
(each node with one ENI of 10 addresses, as the VPC CNI gives it; one SG per node group), two
CoreDNS pods, SG references between two thirds of the node-group pairs and 20 CIDR rules per
SG, then times `diagnosis.diagnose` (DNS, the pod-traffic matrix, CNI and quota checks).
The reads themselves are bounded by the AWS calls doctor makes (see README), not measured here.

    .venv/bin/python bench/diagnosis_scale.py [--groups 20] [--nodes 15]
"""

from __future__ import annotations

import argparse
import ipaddress
import time

from sgmesh.doctor import diagnosis
from sgmesh.engine.ingress import IngressRule
from sgmesh.engine.reachability import Endpoint

ADDRESSES_PER_NODE = 10
CIDR_RULES_PER_SG = 20


def inventory(groups: int, nodes: int) -> diagnosis.Inventory:
    members = []
    for g in range(groups):
        for n in range(nodes):
            networks = frozenset(
                ipaddress.ip_network(f"10.{g}.{n}.{k}/32") for k in range(ADDRESSES_PER_NODE)
            )
            members.append(
                diagnosis.Node(
                    name=f"node-{g}-{n}",
                    instance_id=f"i-{g}-{n}",
                    group=f"group-{g}",
                    group_kind=diagnosis.GroupKind.AUTO_SCALING_GROUP,
                    interfaces=(Endpoint(frozenset({f"sg-{g}"}), networks),),
                    asg_name=f"group-{g}",
                    role_names=(f"role-{g}",),
                )
            )
    rules = [
        IngressRule(f"sg-{g}", "-1", source_group_id=f"sg-{h}")
        for g in range(groups)
        for h in range(groups)
        if (g + h) % 3
    ]
    rules += [
        IngressRule(f"sg-{g}", "tcp", port, port, cidr=ipaddress.ip_network("192.168.0.0/16"))
        for g in range(groups)
        for port in range(CIDR_RULES_PER_SG)
    ]
    return diagnosis.Inventory(
        region="us-east-1",
        nodes=tuple(members),
        dns_servers=(
            diagnosis.DnsServer("coredns-1", "node-0-0"),
            diagnosis.DnsServer("coredns-2", "node-0-1"),
        ),
        rules=tuple(rules),
        role_policies={f"role-{g}": frozenset() for g in range(groups)},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=15, help="nodes per group")
    arguments = parser.parse_args()
    cluster = inventory(arguments.groups, arguments.nodes)
    started = time.perf_counter()
    report = diagnosis.diagnose(cluster)
    seconds = time.perf_counter() - started
    print(
        f"{len(cluster.nodes)} nodes in {arguments.groups} node groups, {len(cluster.rules)} "
        f"rules: diagnosed in {seconds:.2f} s, {len(report.findings)} findings"
    )


if __name__ == "__main__":
    main()

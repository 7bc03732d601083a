"""How long `sgmesh doctor` takes to diagnose a large cluster once it has read it.

Builds, in memory and without any I/O, the inventory of a cluster of G node groups of N nodes
(each node with one ENI of 10 addresses, as the VPC CNI gives it; one SG per node group), two
CoreDNS pods, SG references between two thirds of the node-group pairs and 20 CIDR rules per
SG (and the outbound rule every new SG has, all traffic to anywhere), then times
`diagnosis.diagnose` (DNS and the pod-traffic matrix at both ends, CNI and quota checks).
The reads themselves are bounded by the AWS calls doctor makes (see README), not measured here.

With `--pods P`, each node also runs P pods on its addresses (judged on the ENI holding
them); with `--branch-pods B`, each node group also has B pods on branch ENIs of their own
(security groups for pods: one SG and one SecurityGroupPolicy per group), which doctor judges
as groups of their own.

    .venv/bin/python bench/diagnosis_scale.py [--groups 20] [--nodes 15] [--pods 0]
        [--branch-pods 0]
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


def inventory(groups: int, nodes: int, pods: int = 0, branch_pods: int = 0) -> diagnosis.Inventory:
    members = []
    running: list[diagnosis.Pod] = []
    for g in range(groups):
        for b in range(branch_pods):
            node, address = f"node-{g}-{b % nodes}", f"10.{g}.200.{b}"
            branch = Endpoint(
                frozenset({f"sg-pods-{g}"}), frozenset({ipaddress.ip_network(address)})
            )
            running.append(
                diagnosis.Pod(f"ns-{g}", f"branch-{b}", node, address, branch, (f"ns-{g}/p",))
            )
        for n in range(nodes):
            running.extend(
                diagnosis.Pod("default", f"pod-{g}-{n}-{k}", f"node-{g}-{n}", f"10.{g}.{n}.{k}")
                for k in range(min(pods, ADDRESSES_PER_NODE))
            )
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
    rules += [
        IngressRule(sg, "-1", cidr=ipaddress.ip_network("0.0.0.0/0"), egress=True)
        for g in range(groups)
        for sg in (f"sg-{g}", f"sg-pods-{g}")
    ]
    return diagnosis.Inventory(
        region="us-east-1",
        nodes=tuple(members),
        pods=tuple(running),
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
    parser.add_argument("--pods", type=int, default=0, help="pods per node, on its addresses")
    parser.add_argument(
        "--branch-pods", type=int, default=0, help="pods per group on branch ENIs of their own"
    )
    arguments = parser.parse_args()
    cluster = inventory(arguments.groups, arguments.nodes, arguments.pods, arguments.branch_pods)
    started = time.perf_counter()
    report = diagnosis.diagnose(cluster)
    seconds = time.perf_counter() - started
    print(
        f"{len(cluster.nodes)} nodes in {arguments.groups} node groups, {len(cluster.pods)} "
        f"pods, {len(cluster.rules)} rules: diagnosed in {seconds:.2f} s, "
        f"{len(report.findings)} findings"
    )


if __name__ == "__main__":
    main()

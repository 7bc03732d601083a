"""doctor's judgement of the clusters people run, on hand-built inventories: both ends of a flow,
the ENI that carries each pod, Fargate, hybrid and gone nodes, and CNI permissions by action."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from sgmesh.api import models
from sgmesh.doctor import diagnosis, render
from sgmesh.doctor.diagnosis import Check, DnsServer, GroupKind, Inventory, Node, Pod, Status
from sgmesh.engine import iam_actions, ingress, reachability
from sgmesh.engine.ingress import IngressRule
from sgmesh.engine.reachability import Endpoint, Flow, Side
from tests.unit.test_diagnosis import (
    APP,
    CNI,
    CNI_DOCUMENT,
    SYSTEM,
    full_mesh_rules,
    inventory,
    open_egress,
)


def net(address: str) -> ingress.Network:
    return ipaddress.ip_network(address)


def checks(report: diagnosis.Report) -> list[tuple[str, str]]:
    return sorted((f.check.value, f.node_group) for f in report.findings)


# ---- the one rule model, both directions ---------------------------------------------------


def test_an_outbound_rule_is_parsed_with_egress_and_described_by_its_destination() -> None:
    raw = {
        "GroupId": "sg-a",
        "IsEgress": True,
        "IpProtocol": "udp",
        "FromPort": 53,
        "ToPort": 53,
        "CidrIpv4": "10.0.0.0/16",
        "SecurityGroupRuleId": "sgr-1",
    }

    rule = ingress.parse(raw)
    inbound = ingress.parse({**raw, "IsEgress": False})

    assert rule.egress
    assert not inbound.egress
    assert rule.describe() == "sg-a admits udp/53 to 10.0.0.0/16 (sgr-1)"
    assert inbound.describe() == "sg-a admits udp/53 from 10.0.0.0/16 (sgr-1)"


CLIENT = Endpoint(frozenset({"sg-client"}), frozenset({net("10.0.1.5/32")}), "client")
SERVER = Endpoint(frozenset({"sg-server"}), frozenset({net("10.0.0.10/32")}), "server")
ADMIT_CLIENT = IngressRule("sg-server", "-1", source_group_id="sg-client")


def test_a_path_needs_the_senders_outbound_and_the_receivers_inbound_rules() -> None:
    to_server_sg = IngressRule("sg-client", "udp", 53, 53, source_group_id="sg-server", egress=True)
    to_elsewhere = IngressRule("sg-client", "-1", cidr=net("192.168.0.0/16"), egress=True)

    admitted = reachability.evaluate_path(
        reachability.DNS_UDP, CLIENT, SERVER, [ADMIT_CLIENT, to_server_sg]
    )
    out_blocked = reachability.evaluate_path(
        reachability.DNS_UDP, CLIENT, SERVER, [ADMIT_CLIENT, to_elsewhere]
    )
    in_blocked = reachability.evaluate_path(reachability.DNS_UDP, CLIENT, SERVER, [to_server_sg])

    assert admitted.admitted
    assert [side for side, _ in out_blocked.blocking] == [Side.OUTBOUND]
    assert [side for side, _ in in_blocked.blocking] == [Side.INBOUND]


def test_an_outbound_cidr_must_cover_the_receivers_address_per_family() -> None:
    covering = IngressRule("sg-client", "tcp", 0, 65535, cidr=net("10.0.0.0/24"), egress=True)
    dual = Endpoint(SERVER.security_group_ids, frozenset({net("10.0.0.10/32"), net("2600::a/128")}))

    on_v4 = reachability.evaluate_outbound(
        reachability.DNS_TCP, ["sg-client"], dual, [covering], family=4
    )
    on_v6 = reachability.evaluate_outbound(
        reachability.DNS_TCP, ["sg-client"], dual, [covering], family=6
    )
    partly = reachability.evaluate_outbound(
        Flow("tcp", 0, 65535),
        ["sg-client"],
        SERVER,
        [IngressRule("sg-client", "tcp", 0, 1023, cidr=net("10.0.0.0/24"), egress=True)],
    )

    assert on_v4.admitted
    assert not on_v6.admitted
    assert partly.partly
    assert partly.missing == ((1024, 65535),)


def test_inbound_evaluation_ignores_outbound_rules_and_the_planner_api_is_unchanged() -> None:
    outbound_only = IngressRule("sg-server", "-1", source_group_id="sg-client", egress=True)

    verdict = reachability.evaluate(
        reachability.ALL_TRAFFIC, ["sg-server"], CLIENT, [outbound_only]
    )

    assert not verdict.admitted
    assert ingress.admits(ADMIT_CLIENT, ingress.Permission("sg-client", "tcp", 443, 443))


# ---- CNI permissions by action -------------------------------------------------------------


def statements(*items: dict[str, Any]) -> tuple[iam_actions.Statement, ...]:
    return iam_actions.statements({"Version": "2012-10-17", "Statement": list(items)})


def test_actions_are_allowed_by_wildcards_and_not_action_and_taken_by_a_deny_everywhere() -> None:
    wildcard = statements({"Effect": "Allow", "Action": "EC2:Assign*", "Resource": "*"})
    not_action = statements({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
    denied = statements(
        {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "ec2:AssignIpv6Addresses", "Resource": "*"},
    )
    narrow_deny = statements(
        {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
        {
            "Effect": "Deny",
            "Action": "ec2:*",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestedRegion": "eu-west-1"}},
        },
    )
    single = iam_actions.statements(
        {"Statement": {"Effect": "Allow", "Action": "ec2:Assign?pv6Addresses", "Resource": "*"}}
    )

    assert iam_actions.allowed(wildcard, "ec2:AssignPrivateIpAddresses")
    assert not iam_actions.allowed(wildcard, "ec2:CreateTags")
    assert iam_actions.allowed(not_action, "ec2:CreateTags")
    assert not iam_actions.allowed(not_action, "iam:PassRole")
    assert iam_actions.missing(denied, iam_actions.CNI_ACTIONS[6]) == ("ec2:AssignIpv6Addresses",)
    assert iam_actions.allowed(narrow_deny, "ec2:AssignIpv6Addresses")
    assert iam_actions.allowed(single, "ec2:AssignIpv6Addresses")


def test_the_managed_cni_policy_grants_ipv4_and_lacks_only_assign_ipv6_addresses() -> None:
    cni = iam_actions.statements(CNI_DOCUMENT)

    assert iam_actions.missing(cni, iam_actions.CNI_ACTIONS[4]) == ()
    assert iam_actions.missing(cni, iam_actions.CNI_ACTIONS[6]) == ("ec2:AssignIpv6Addresses",)


def test_an_inline_or_customer_policy_granting_the_actions_counts_and_a_deny_is_named() -> None:
    inline = inventory(
        *full_mesh_rules(),
        role_policies={"eks-system": frozenset({CNI}), "eks-app": frozenset()},
        inline_policies={"eks-app": {"cni": CNI_DOCUMENT}},
    )
    customer = "arn:aws:iam::123456789012:policy/vpc-cni"
    denying = {
        "Statement": [
            *CNI_DOCUMENT["Statement"],
            {"Effect": "Deny", "Action": "ec2:CreateNetworkInterface", "Resource": "*"},
        ]
    }
    denied = inventory(
        *full_mesh_rules(),
        role_policies={"eks-system": frozenset({CNI}), "eks-app": frozenset({customer})},
        policy_documents={CNI: CNI_DOCUMENT, customer: denying},
    )

    [finding] = diagnosis.diagnose(denied).findings
    assert diagnosis.diagnose(inline).healthy
    assert finding.missing_actions == ("ec2:CreateNetworkInterface",)
    assert "(ec2:CreateNetworkInterface)" in finding.summary
    assert f"role eks-app has: {customer}" in finding.evidence[0]


def test_in_an_ipv6_cluster_the_ipv4_policy_is_a_finding_a_default_mesh_cannot_fix() -> None:
    report = diagnosis.diagnose(
        inventory(
            *full_mesh_rules(),
            ip_family=6,
            meshes=(
                models.NodeGroupMesh.parse(
                    {
                        "apiVersion": "sgmesh.io/v1alpha1",
                        "kind": "NodeGroupMesh",
                        "metadata": {"name": "m"},
                        "spec": {"autoScalingGroups": {"names": ["eks-app", "eks-system"]}},
                    }
                ),
            ),
        )
    )

    cni = [f for f in report.findings if f.check is Check.CNI_POLICY]
    assert {f.node_group for f in cni} == {"eks-app", "eks-system"}
    assert all(f.missing_actions == ("ec2:AssignIpv6Addresses",) for f in cni)
    assert all("AmazonEKS_CNI_IPv6_Policy" in f.fix for f in cni)
    assert {f.coverage.reason for f in cni if f.coverage} == {
        "mesh m attaches AmazonEKS_CNI_Policy, which lacks ec2:AssignIpv6Addresses"
    }


# ---- both ends in the diagnosis ------------------------------------------------------------


def test_an_sg_without_outbound_rules_blocks_its_pods_dns_on_the_sending_side() -> None:
    base = inventory(*full_mesh_rules())
    without_app_egress = tuple(r for r in base.rules if not (r.egress and r.group_id == "sg-app"))

    report = diagnosis.diagnose(
        Inventory(**{**vars(base), "rules": without_app_egress, "meshes": ()})
    )

    assert report.dns["eks-app"] is Status.BLOCKED
    [dns] = [f for f in report.findings if f.check is Check.DNS]
    assert dns.blocked_on == (Side.OUTBOUND,)
    assert dns.evidence[0] == (
        "udp/53 from app-1 (sg-app) to system-1 (sg-system): no outbound rule of the sender "
        "lets it out (the sending side blocks)"
    )
    assert report.matrix["eks-app"]["eks-system"] is Status.BLOCKED
    assert report.matrix["eks-system"]["eks-app"] is Status.OK


def test_a_mesh_cannot_fix_what_outbound_rules_block() -> None:
    base = inventory(*full_mesh_rules())
    rules = tuple(r for r in base.rules if not (r.egress and r.group_id == "sg-app"))
    mesh = models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": "m"},
            "spec": {"autoScalingGroups": {"names": ["eks-app", "eks-system"]}},
        }
    )

    report = diagnosis.diagnose(Inventory(**{**vars(base), "rules": rules, "meshes": (mesh,)}))

    [dns] = [f for f in report.findings if f.check is Check.DNS]
    assert dns.coverage is not None
    assert not dns.coverage.fixed
    assert dns.coverage.reason.startswith("a mesh writes inbound rules only")


# ---- the ENI that carries the pod ----------------------------------------------------------


BRANCH = Endpoint(frozenset({"sg-payments"}), frozenset({net("10.0.1.77/32")}), "payments-1")


def test_a_pod_with_a_branch_eni_is_its_policys_group_and_judged_on_its_own_sgs() -> None:
    pod = Pod("payments", "payments-1", "app-1", "10.0.1.77", BRANCH, ("payments/db-clients",))

    report = diagnosis.diagnose(
        inventory(*full_mesh_rules(), *open_egress("sg-payments"), pods=(pod,))
    )
    suggestion = diagnosis.suggest_mesh(report)

    group = next(g for g in report.groups if g.name == "sgp/payments/db-clients")
    assert group.kind is GroupKind.POD_SECURITY_GROUPS
    assert group.pods == ("payments/payments-1",)
    assert report.dns["eks-app"] is Status.OK
    assert report.dns["sgp/payments/db-clients"] is Status.BLOCKED
    dns = next(f for f in report.findings if f.node_group == "sgp/payments/db-clients")
    assert dns.blocked_on == (Side.INBOUND,)
    assert report.matrix["sgp/payments/db-clients"]["eks-system"] is Status.BLOCKED
    assert ("DnsUnreachable", "sgp/payments/db-clients") in checks(report)
    assert not any(
        f.node_group == "sgp/payments/db-clients"
        for f in report.findings
        if f.check is Check.CNI_POLICY
    )
    assert suggestion is not None
    assert suggestion["spec"]["podSecurityGroups"] == {"policies": ["payments/db-clients"]}
    assert "extraSecurityGroupIds" not in suggestion["spec"]


def test_a_pod_on_a_secondary_eni_is_judged_there_not_on_the_primary() -> None:
    primary = Endpoint(frozenset({"sg-app"}), frozenset({net("10.0.1.10/32")}))
    secondary = Endpoint(frozenset({"sg-app-pods"}), frozenset({net("10.0.9.0/28")}))
    app = Node(**{**vars(APP), "interfaces": (primary, secondary)})
    pods = (Pod("default", "web", "app-1", "10.0.9.3"),)
    only_pods_sg = [
        IngressRule("sg-system", "-1", source_group_id="sg-app-pods"),
        IngressRule("sg-app-pods", "-1", source_group_id="sg-system"),
        IngressRule("sg-app-pods", "-1", source_group_id="sg-app-pods"),
        IngressRule("sg-system", "-1", source_group_id="sg-system"),
    ]
    egress = [
        IngressRule("sg-app-pods", "-1", cidr=net("0.0.0.0/0"), egress=True),
    ]

    without_pods = diagnosis.diagnose(inventory(*only_pods_sg, *egress, nodes=(SYSTEM, app)))
    with_pods = diagnosis.diagnose(
        inventory(*only_pods_sg, *egress, nodes=(SYSTEM, app), pods=pods)
    )

    assert without_pods.dns["eks-app"] is Status.PARTIAL
    assert with_pods.dns["eks-app"] is Status.OK
    assert with_pods.matrix["eks-app"]["eks-system"] is Status.OK


def test_coredns_on_fargate_is_evaluated_and_fargate_needs_no_cni_role() -> None:
    eni = Endpoint(frozenset({"sg-cluster"}), frozenset({net("10.0.3.4/32")}))
    fargate = Node("fargate-ip-10-0-3-4", "", "fargate", GroupKind.FARGATE, (eni,))
    rules = [
        IngressRule(dst, "-1", source_group_id=src)
        for dst in ("sg-cluster", "sg-app")
        for src in ("sg-cluster", "sg-app")
    ]

    report = diagnosis.diagnose(
        inventory(
            *rules,
            nodes=(APP, fargate),
            dns_servers=(DnsServer("coredns-1", "fargate-ip-10-0-3-4", "10.0.3.4"),),
            outside_vpc={"mi-1": "EKS hybrid node"},
            not_live={"app-2": "instance i-2 is terminated"},
        )
    )
    text = "\n".join(render.render_text(report))

    assert report.healthy, report.findings
    assert report.dns == {"eks-app": Status.OK, "fargate": Status.OK}
    assert "mi-1: EKS hybrid node, outside the VPC: not evaluated" in text
    assert "app-2: instance i-2 is terminated, not a live member: not counted" in text
    assert "fargate (Fargate, runs CoreDNS): 1 node" in text


@pytest.mark.parametrize("reference", ["*", "payments/*", "payments/db-clients"])
def test_a_mesh_over_the_policy_holds_the_pods_group(reference: str) -> None:
    pod = Pod("payments", "payments-1", "app-1", "10.0.1.77", BRANCH, ("payments/db-clients",))
    mesh = models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": "m"},
            "spec": {
                "autoScalingGroups": {"names": ["eks-app", "eks-system"]},
                "podSecurityGroups": {"policies": [reference]},
            },
        }
    )

    report = diagnosis.diagnose(
        inventory(*full_mesh_rules(), *open_egress("sg-payments"), pods=(pod,), meshes=(mesh,))
    )

    [dns] = [f for f in report.findings if f.check is Check.DNS]
    assert dns.coverage is not None
    assert dns.coverage.mesh == "m"

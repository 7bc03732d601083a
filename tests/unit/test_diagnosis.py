"""The diagnosis on hand-built inventories: which finding, its evidence, and what a mesh fixes."""

from __future__ import annotations

import ipaddress
from typing import Any

from sgmesh.api import models
from sgmesh.doctor import diagnosis
from sgmesh.doctor.diagnosis import Check, DnsServer, GroupKind, Inventory, Node
from sgmesh.engine import cluster_members
from sgmesh.engine.ingress import IngressRule
from sgmesh.engine.reachability import Endpoint

CNI = "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"
# AmazonEKS_CNI_Policy as IAM serves it: doctor judges a role by the actions it is allowed.
CNI_DOCUMENT = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "ec2:AssignPrivateIpAddresses",
                "ec2:AttachNetworkInterface",
                "ec2:CreateNetworkInterface",
                "ec2:DeleteNetworkInterface",
                "ec2:DescribeInstances",
                "ec2:DescribeTags",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeInstanceTypes",
                "ec2:DetachNetworkInterface",
                "ec2:ModifyNetworkInterfaceAttribute",
                "ec2:UnassignPrivateIpAddresses",
            ],
            "Resource": "*",
        },
        {
            "Effect": "Allow",
            "Action": ["ec2:CreateTags"],
            "Resource": ["arn:aws:ec2:*:*:network-interface/*"],
        },
    ],
}


def open_egress(*group_ids: str) -> list[IngressRule]:
    """The outbound rules a new SG has: all traffic to anywhere (IPv6 too, in an IPv6 VPC)."""
    return [
        IngressRule(sg, "-1", cidr=ipaddress.ip_network(anywhere), egress=True)
        for sg in group_ids
        for anywhere in ("0.0.0.0/0", "::/0")
    ]


def node(name: str, group: str, sg: str, address: str, role: str | None = None) -> Node:
    interface = Endpoint(frozenset({sg}), frozenset({ipaddress.ip_network(address)}))
    return Node(
        name=name,
        instance_id=f"i-{name}",
        group=group,
        group_kind=GroupKind.AUTO_SCALING_GROUP,
        interfaces=(interface,),
        asg_name=group,
        role_names=(role or group,),
    )


SYSTEM = node("system-1", "eks-system", "sg-system", "10.0.0.10/32")
APP = node("app-1", "eks-app", "sg-app", "10.0.1.10/32")


def mesh(names: list[str], **spec: Any) -> models.NodeGroupMesh:
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": "m"},
            "spec": {"autoScalingGroups": {"names": names}, **spec},
        }
    )


def inventory(*rules: IngressRule, **options: Any) -> Inventory:
    defaults: dict[str, Any] = {
        "region": "us-east-1",
        "nodes": (SYSTEM, APP),
        "dns_servers": (DnsServer("coredns-1", "system-1"),),
        "role_policies": {"eks-system": frozenset({CNI}), "eks-app": frozenset({CNI})},
        "policy_documents": {CNI: CNI_DOCUMENT},
    }
    every_sg = {sg for n in options.get("nodes", (SYSTEM, APP)) for sg in n.security_group_ids}
    return Inventory(rules=(*rules, *open_egress(*sorted(every_sg))), **(defaults | options))


def full_mesh_rules() -> list[IngressRule]:
    return [
        IngressRule(dst, "-1", source_group_id=src)
        for dst in ("sg-system", "sg-app")
        for src in ("sg-system", "sg-app")
    ]


def checks(report: diagnosis.Report) -> list[tuple[str, str]]:
    return sorted((f.check.value, f.node_group) for f in report.findings)


def test_a_cluster_whose_groups_admit_each_other_is_healthy() -> None:
    report = diagnosis.diagnose(inventory(*full_mesh_rules()))

    assert report.healthy, report.findings
    assert report.dns == {"eks-app": diagnosis.Status.OK, "eks-system": diagnosis.Status.OK}


def test_dns_needs_udp_and_tcp_and_names_what_is_missing() -> None:
    udp_only = IngressRule("sg-system", "udp", 53, 53, source_group_id="sg-app", rule_id="sgr-1")
    rules = [r for r in full_mesh_rules() if r.source_group_id != "sg-app"]

    report = diagnosis.diagnose(inventory(udp_only, *rules))

    assert report.dns["eks-app"] is diagnosis.Status.PARTIAL
    [finding] = [f for f in report.findings if f.check is Check.DNS]
    assert finding.node_group == "eks-app"
    assert finding.peer == "eks-system"
    assert finding.evidence == (
        "tcp/53 from app-1 (sg-app) to system-1 (sg-system): no inbound rule admits it",
    )


def test_the_eni_holding_the_pod_ip_is_the_one_that_must_admit() -> None:
    second = Endpoint(frozenset({"sg-dns"}), frozenset({ipaddress.ip_network("10.0.0.50/32")}))
    system = Node(**{**vars(SYSTEM), "interfaces": (*SYSTEM.interfaces, second)})
    rules = [*full_mesh_rules()]
    servers = (DnsServer("coredns-1", "system-1", "10.0.0.50"),)

    without = diagnosis.diagnose(inventory(*rules, nodes=(system, APP), dns_servers=servers))
    dns_rule = IngressRule("sg-dns", "-1", source_group_id="sg-app")
    with_rule = diagnosis.diagnose(
        inventory(dns_rule, *rules, nodes=(system, APP), dns_servers=servers)
    )

    assert without.dns["eks-app"] is diagnosis.Status.BLOCKED
    assert with_rule.dns["eks-app"] is diagnosis.Status.OK


def test_no_coredns_is_a_finding_not_a_pass() -> None:
    report = diagnosis.diagnose(inventory(*full_mesh_rules(), dns_servers=()))

    assert checks(report) == [("CoreDnsNotFound", "kube-system")]
    assert set(report.dns.values()) == {diagnosis.Status.UNKNOWN}


def test_a_role_without_the_cni_policy_is_found_unless_aws_node_uses_irsa() -> None:
    policies = {"eks-system": frozenset({CNI}), "eks-app": frozenset()}
    ipv6 = {
        "eks-system": frozenset({CNI}),
        "eks-app": frozenset({"arn:aws:iam::1:policy/AmazonEKS_CNI_IPv6_Policy"}),
    }

    found = diagnosis.diagnose(inventory(*full_mesh_rules(), role_policies=policies))
    irsa = diagnosis.diagnose(
        inventory(
            *full_mesh_rules(),
            role_policies={**policies, "cni": frozenset({CNI})},
            aws_node_credentials=cluster_members.irsa(
                {cluster_members.IRSA_ANNOTATION: "arn:aws:iam::1:role/cni"}
            ),
        )
    )

    assert checks(found) == [("CniPolicyMissing", "eks-app")]
    # By what it grants, not by its name: the IPv6 policy lacks the IPv4 actions.
    assert checks(diagnosis.diagnose(inventory(*full_mesh_rules(), role_policies=ipv6))) == [
        ("CniPolicyMissing", "eks-app")
    ]
    assert irsa.healthy
    assert diagnosis.suggest_mesh(irsa)["spec"]["cniPolicy"] == {"attach": False}  # type: ignore[index]


def pod_identity(role_arn: str | None) -> cluster_members.AwsNodeCredentials:
    return cluster_members.AwsNodeCredentials(
        cluster_members.CredentialKind.POD_IDENTITY,
        role_arn,
        "association a-1 for kube-system/aws-node in EKS cluster prod",
        association_id="a-1",
    )


def test_with_pod_identity_its_role_is_checked_instead_of_the_node_roles() -> None:
    node_roles = {"eks-system": frozenset({CNI}), "eks-app": frozenset()}

    with_policy = diagnosis.diagnose(
        inventory(
            *full_mesh_rules(),
            role_policies={**node_roles, "cni": frozenset({CNI})},
            aws_node_credentials=pod_identity("arn:aws:iam::1:role/cni"),
        )
    )
    without = diagnosis.diagnose(
        inventory(
            *full_mesh_rules(),
            role_policies={**node_roles, "cni": frozenset()},
            aws_node_credentials=pod_identity("arn:aws:iam::1:role/cni"),
        )
    )

    assert with_policy.healthy
    assert diagnosis.suggest_mesh(with_policy)["spec"]["cniPolicy"] == {"attach": False}  # type: ignore[index]
    [finding] = without.findings
    assert (finding.check, finding.node_group) == (Check.CNI_POLICY, "aws-node")
    assert finding.summary.startswith("aws-node uses EKS Pod Identity role cni, which lacks")
    assert "association a-1" in finding.evidence[0]
    assert finding.fix.startswith("aws iam attach-role-policy --role-name cni ")
    assert finding.coverage is not None
    assert not finding.coverage.fixed


def test_pod_identity_whose_role_is_not_known_leaves_nothing_to_find() -> None:
    report = diagnosis.diagnose(
        inventory(
            *full_mesh_rules(),
            role_policies={"eks-app": frozenset()},
            aws_node_credentials=pod_identity(None),
        )
    )

    assert report.healthy  # the node roles need no policy, and the role is not named


def test_what_an_installed_mesh_will_fix_and_why_it_will_not() -> None:
    blocked = inventory(role_policies={"eks-system": frozenset({CNI}), "eks-app": frozenset()})

    covering = diagnosis.diagnose(
        Inventory(**{**vars(blocked), "meshes": (mesh(["eks-app", "eks-system"]),)})
    )
    partial = diagnosis.diagnose(Inventory(**{**vars(blocked), "meshes": (mesh(["eks-system"]),)}))
    dry_run = diagnosis.diagnose(
        Inventory(**{**vars(blocked), "meshes": (mesh(["eks-app", "eks-system"], mode="DryRun"),)})
    )
    no_cni = diagnosis.diagnose(
        Inventory(
            **{
                **vars(blocked),
                "meshes": (mesh(["eks-app", "eks-system"], cniPolicy={"attach": False}),),
            }
        )
    )

    assert all(f.coverage and f.coverage.mesh == "m" for f in covering.findings)
    assert {f.coverage.reason for f in partial.findings if f.coverage} == {
        "node group eks-app is outside every mesh",
        "mesh m fixes it at its next reconcile",
    }
    assert {f.coverage.reason for f in dry_run.findings if f.coverage} == {
        "mesh m is in DryRun: it reports, it does not fix"
    }
    [cni] = [f for f in no_cni.findings if f.check is Check.CNI_POLICY]
    assert cni.coverage is not None
    assert cni.coverage.reason == "mesh m has cniPolicy.attach: false"


def test_a_mesh_of_dns_traffic_only_is_held_to_its_own_traffic() -> None:
    dns_only = mesh(
        ["eks-app", "eks-system"],
        traffic=[{"protocol": "udp", "fromPort": 53, "toPort": 53}],
    )
    udp = [
        IngressRule(dst, "udp", 53, 53, source_group_id=src)
        for dst in ("sg-system", "sg-app")
        for src in ("sg-system", "sg-app")
    ]

    report = diagnosis.diagnose(inventory(*udp, meshes=(dns_only,)))

    assert all(
        status is diagnosis.Status.OK for row in report.matrix.values() for status in row.values()
    )
    [finding] = report.findings
    assert finding.check is Check.DNS
    assert finding.coverage is not None
    assert finding.coverage.reason == "mesh m does not list that traffic"


def test_an_sg_without_room_for_the_mesh_is_reported_per_family() -> None:
    crowded = [
        IngressRule("sg-app", "tcp", port, port, cidr=ipaddress.ip_network("192.168.0.0/16"))
        for port in range(1000, 1059)
    ]

    report = diagnosis.diagnose(inventory(*full_mesh_rules(), *crowded))

    [finding] = [f for f in report.findings if f.check is Check.QUOTA]
    assert finding.summary.startswith("sg-app holds 61 IPv4 inbound rules of 60")
    assert finding.node_group == "eks-app"


def test_the_suggested_mesh_names_asgs_and_lists_the_sgs_of_other_groups() -> None:
    karpenter = Node(
        **{
            **vars(node("k-1", "karpenter/default", "sg-0123456789abcdef0", "10.0.2.9/32")),
            "asg_name": None,
            "group_kind": GroupKind.KARPENTER,
        }
    )

    report = diagnosis.diagnose(inventory(nodes=(SYSTEM, APP, karpenter)))
    suggestion = diagnosis.suggest_mesh(report)

    assert suggestion is not None
    assert suggestion["spec"] == {
        "region": "us-east-1",
        "autoScalingGroups": {"names": ["eks-app", "eks-system"]},
        "traffic": [{"protocol": "all"}],
        "extraSecurityGroupIds": ["sg-0123456789abcdef0"],
        "cniPolicy": {"attach": True},
    }
    assert models.NodeGroupMesh.parse(suggestion).name == "node-groups"


def test_an_ipv6_cluster_is_judged_on_ipv6_cidrs() -> None:
    def dual(name: str, group: str, sg: str, v4: str, v6: str) -> Node:
        networks = frozenset({ipaddress.ip_network(v4), ipaddress.ip_network(v6)})
        return Node(
            **{
                **vars(node(name, group, sg, v4)),
                "interfaces": (Endpoint(frozenset({sg}), networks),),
            }
        )

    nodes = (
        dual("system-1", "eks-system", "sg-system", "10.0.0.10/32", "2600:1f18::10/128"),
        dual("app-1", "eks-app", "sg-app", "10.0.1.10/32", "2600:1f18::1:10/128"),
    )
    v4_only = [
        IngressRule(sg, "-1", cidr=ipaddress.ip_network("10.0.0.0/16"))
        for sg in ("sg-system", "sg-app")
    ]
    v6_only = [
        IngressRule(sg, "-1", cidr=ipaddress.ip_network("2600:1f18::/56"))
        for sg in ("sg-system", "sg-app")
    ]
    servers = (DnsServer("coredns-1", "system-1", "2600:1f18::10"),)

    on_v4 = diagnosis.diagnose(inventory(*v4_only, nodes=nodes, dns_servers=servers))
    on_v6 = diagnosis.diagnose(inventory(*v6_only, nodes=nodes, dns_servers=servers))

    assert on_v4.matrix["eks-app"]["eks-system"] is diagnosis.Status.BLOCKED
    assert on_v4.dns["eks-app"] is diagnosis.Status.BLOCKED
    # Reachable; the IPv4 CNI policy the roles have is what an IPv6 cluster lacks.
    assert {f.check for f in on_v6.findings} == {Check.CNI_POLICY}, on_v6.findings


def test_a_large_node_group_gets_a_short_list_of_evidence() -> None:
    apps = tuple(node(f"app-{n}", "eks-app", "sg-app", f"10.0.1.{n}/32") for n in range(10))

    report = diagnosis.diagnose(inventory(nodes=(SYSTEM, *apps)))

    [dns] = [f for f in report.findings if f.check is Check.DNS]
    assert len(dns.evidence) == diagnosis.MAX_EVIDENCE_LINES + 1
    assert dns.evidence[-1] == "… and 14 more of the same kind"  # 10 nodes x udp and tcp

"""`sgmesh doctor` on the clusters people run, end to end: the command as a person runs it,
against the real API server and a moto server. Traffic is judged at both ends (the sender's
outbound rules, the receiver's inbound ones), on the ENI that carries each pod (a branch ENI
with security groups for pods, a secondary ENI with custom networking, a Fargate node's own
ENI); Fargate and hybrid nodes, nodes whose instance is gone, and CNI permissions judged by the
actions a role's policies (managed or inline) allow for the cluster's IP family.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.aws.world import CNI_POLICY_ARN, NodeGroup, World
from devtools.k8s.controlplane import ControlPlane
from devtools.nodes import ClusterNodes
from tests.integration.test_doctor import (
    doctor,
    doctor_json,
    findings,
    node_group,
    sgmesh_apply,
)

pytestmark = pytest.mark.kube

# The VPC CNI's IPv4 permissions, as a customer writes them in a policy of their own.
CNI_ACTIONS_V4 = [
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
    "ec2:CreateTags",
]


def admit_each_other(world: World, *group_ids: str) -> None:
    """Every SG admits all traffic from every SG (itself included): a meshed cluster."""
    for target in group_ids:
        for source in group_ids:
            world.ingress_from_group(target, source)


def revoke_open_egress(world: World, group_id: str) -> None:
    """Take away the outbound rule every new SG has (all traffic to 0.0.0.0/0)."""
    world.clients.ec2.revoke_security_group_egress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )


def healthy_pair(world: World, nodes: ClusterNodes) -> tuple[NodeGroup, NodeGroup]:
    """eks-system (CoreDNS) and eks-a, meshed by hand, both roles with the CNI policy."""
    system = node_group(world, nodes, "eks-system", policy_arns=[CNI_POLICY_ARN])
    a = node_group(world, nodes, "eks-a", policy_arns=[CNI_POLICY_ARN])
    nodes.coredns("coredns-1", "eks-system-node")
    admit_each_other(world, system.security_group_id, a.security_group_id)
    return system, a


def group_of(report: dict[str, Any], name: str) -> dict[str, Any]:
    groups: list[dict[str, Any]] = [g for g in report["nodeGroups"] if g["name"] == name]
    assert len(groups) == 1, report["nodeGroups"]
    return groups[0]


@pytest.fixture
def policies(kube_cluster: ControlPlane, securitygrouppolicy_crd: str) -> Iterator[ControlPlane]:
    """The SecurityGroupPolicy CRD installed, and no policy left by this test."""
    yield kube_cluster
    kube_cluster.kubectl(
        "delete", "securitygrouppolicies", "--all", "--all-namespaces", "--ignore-not-found"
    )


def test_outbound_rules_taken_from_one_group_block_its_dns_on_the_sending_side(
    world: World, cluster_nodes: ClusterNodes
) -> None:
    system, a = healthy_pair(world, cluster_nodes)
    b = node_group(world, cluster_nodes, "eks-b", policy_arns=[CNI_POLICY_ARN])
    for group in (system, a, b):
        world.ingress_from_group(group.security_group_id, b.security_group_id)
        if group is not b:
            world.ingress_from_group(b.security_group_id, group.security_group_id)

    code, before = doctor_json()
    revoke_open_egress(world, b.security_group_id)
    code_after, after = doctor_json()

    assert (code, before["findings"]) == (0, [])
    assert code_after == 1
    assert after["dns"] == {"eks-a": "ok", "eks-b": "blocked", "eks-system": "ok"}
    [dns] = findings(after, "DnsUnreachable")
    assert dns["nodeGroup"] == "eks-b"
    assert dns["blockedOn"] == ["outbound"]
    assert "outbound rules of their SGs do not let udp/53 and tcp/53 out" in dns["summary"]
    assert any("no outbound rule of the sender" in line for line in dns["evidence"])
    assert all(b.security_group_id in line for line in dns["evidence"][:2])
    # Nothing reaches out of eks-b, while everything still comes in.
    assert after["podTraffic"]["eks-b"]["eks-a"] == "blocked"
    assert after["podTraffic"]["eks-a"]["eks-b"] == "ok"


def test_a_pod_with_its_own_security_group_is_found_and_a_mesh_over_its_policy_fixes_it(
    world: World, cluster_nodes: ClusterNodes, policies: ControlPlane, tmp_path: Path
) -> None:
    healthy_pair(world, cluster_nodes)
    pod_sg = world.security_group("payments-pods")
    cluster_nodes.security_group_policy("payments", "db-clients", [pod_sg], {"app": "payments"})
    branch, address = cluster_nodes.branch_interface([pod_sg])
    cluster_nodes.pod(
        "payments-1",
        "eks-a-node",
        address,
        namespace="payments",
        labels={"app": "payments"},
        branch_interface=branch,
    )

    code, report = doctor_json()
    _, out, _ = doctor()
    manifest, path = suggested(tmp_path)

    assert code == 1
    group = group_of(report, "sgp/payments/db-clients")
    assert group["kind"] == "SecurityGroupPolicy"
    assert group["pods"] == ["payments/payments-1"]
    assert group["securityGroupIds"] == [pod_sg]
    assert group["securityGroupPolicies"] == ["payments/db-clients"]
    # Its branch ENI's SGs alone count, whatever eks-a's node SG is admitted.
    assert report["dns"]["sgp/payments/db-clients"] == "blocked"
    assert report["dns"]["eks-a"] == "ok"
    [dns] = findings(report, "DnsUnreachable")
    assert dns["nodeGroup"] == "sgp/payments/db-clients"
    assert dns["blockedOn"] == ["inbound"]
    assert any(f"payments/payments-1 ({pod_sg})" in line for line in dns["evidence"])
    assert "sgp/payments/db-clients (SecurityGroupPolicy): 1 pod on their own branch ENIs" in out
    assert manifest["spec"]["podSecurityGroups"] == {"policies": ["payments/db-clients"]}

    sgmesh_apply(path, world)
    fixed_code, fixed = doctor_json()

    assert fixed_code == 0, fixed["findings"]
    assert fixed["dns"]["sgp/payments/db-clients"] == "ok"


def suggested(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    code, out, err = doctor("--suggest")
    assert code in (0, 1), err
    path = tmp_path / "suggested.yaml"
    path.write_text(out)
    return yaml.safe_load(out), path


def test_custom_networking_is_judged_on_the_secondary_eni_that_holds_the_pods(
    world: World, cluster_nodes: ClusterNodes
) -> None:
    system = node_group(world, cluster_nodes, "eks-system", policy_arns=[CNI_POLICY_ARN])
    node_group(world, cluster_nodes, "eks-a", policy_arns=[CNI_POLICY_ARN])
    cluster_nodes.coredns("coredns-1", "eks-system-node")
    pods_sg = world.security_group("eks-a-pods")  # the ENIConfig's SG
    secondary = world.network_interface([pods_sg])
    (instance_id,) = world.asg_instances("eks-a")
    world.attach_network_interface(secondary, instance_id)
    # CoreDNS admits the ENIConfig's SG, not the node SG of eks-a's primary ENI.
    world.ingress_from_group(system.security_group_id, pods_sg)

    _, before_pods = doctor_json()
    cluster_nodes.pod("app-1", "eks-a-node", cluster_nodes.interface_address(secondary))
    _, with_pods = doctor_json()

    # While no pod of eks-a is known, its node stands for them on both ENIs: partly.
    assert before_pods["dns"]["eks-a"] == "partial"
    # The pods' addresses are on the secondary ENI: the primary is not their source.
    assert with_pods["dns"]["eks-a"] == "ok"
    assert findings(with_pods, "DnsUnreachable") == []


def test_fargate_and_hybrid_nodes_on_a_healthy_cluster_exit_0_with_dns_on_fargate_evaluated(
    world: World, cluster_nodes: ClusterNodes
) -> None:
    system = node_group(world, cluster_nodes, "eks-system", policy_arns=[CNI_POLICY_ARN])
    fargate_sg = world.security_group("eks-cluster-sg")
    fargate_eni = world.network_interface([fargate_sg])
    address = cluster_nodes.interface_address(fargate_eni)
    node = cluster_nodes.fargate_node(
        f"fargate-ip-{address.replace('.', '-')}.ec2.internal", address
    )
    cluster_nodes.coredns("coredns-1", node, address)  # a Fargate-only CoreDNS
    cluster_nodes.hybrid_node("mi-0123456789abcdef0")
    admit_each_other(world, system.security_group_id, fargate_sg)

    code, out, err = doctor()
    _, report = doctor_json()

    assert code == 0, out + err
    assert "no problem found" in out
    assert "mi-0123456789abcdef0: EKS hybrid node, outside the VPC: not evaluated" in out
    fargate = group_of(report, "fargate/default")
    assert fargate["kind"] == "Fargate"
    assert fargate["securityGroupIds"] == [fargate_sg]
    assert fargate["runsCoreDns"] is True
    assert report["dns"] == {"eks-system": "ok", "fargate/default": "ok"}
    assert report["outsideVpc"] == {"mi-0123456789abcdef0": "EKS hybrid node"}


def test_a_fargate_nodes_address_reused_in_another_vpc_is_looked_up_in_the_clusters_vpc(
    world: World, cluster_nodes: ClusterNodes
) -> None:
    """Accounts reuse CIDRs: another VPC holds the Fargate node's address too, on an ENI with
    other SGs. The cluster's VPC is the one its instances run in; the node's ENI is sought
    there."""
    system = node_group(world, cluster_nodes, "eks-system", policy_arns=[CNI_POLICY_ARN])
    fargate_sg = world.security_group("eks-cluster-sg")
    address = cluster_nodes.interface_address(world.network_interface([fargate_sg]))
    elsewhere = world.vpc(like=world.main_vpc)
    world.network_interface(
        [world.security_group("other-app", elsewhere)], elsewhere, address=address
    )
    node = cluster_nodes.fargate_node(
        f"fargate-ip-{address.replace('.', '-')}.ec2.internal", address
    )
    cluster_nodes.coredns("coredns-1", node, address)
    admit_each_other(world, system.security_group_id, fargate_sg)

    code, report = doctor_json()

    assert code == 0, report["findings"]
    assert group_of(report, "fargate/default")["securityGroupIds"] == [fargate_sg]
    assert report["dns"] == {"eks-system": "ok", "fargate/default": "ok"}


def test_a_fargate_node_whose_address_several_vpcs_hold_is_not_guessed(
    world: World, cluster_nodes: ClusterNodes
) -> None:
    """No instance says which VPC is the cluster's: an address ENIs of two VPCs hold names no
    one ENI, and the node is reported, not judged on either."""
    address = cluster_nodes.interface_address(
        world.network_interface([world.security_group("eks-cluster-sg")])
    )
    elsewhere = world.vpc(like=world.main_vpc)
    world.network_interface(
        [world.security_group("other-app", elsewhere)], elsewhere, address=address
    )
    name = f"fargate-ip-{address.replace('.', '-')}.ec2.internal"
    cluster_nodes.fargate_node(name, address)

    code, report = doctor_json()

    assert code == 1
    [unmapped] = findings(report, "NodeNotMapped")
    assert name in unmapped["summary"]
    for vpc in (world.main_vpc.id, elsewhere.id):
        assert vpc in unmapped["summary"]
    assert all(group["kind"] != "Fargate" for group in report["nodeGroups"])


def test_an_inline_policy_granting_the_cni_actions_is_no_finding(
    world: World, cluster_nodes: ClusterNodes
) -> None:
    system, a = healthy_pair(world, cluster_nodes)
    c = node_group(world, cluster_nodes, "eks-c")  # its role has no managed policy at all
    for target, source in [
        (c.security_group_id, c.security_group_id),
        *((c.security_group_id, g.security_group_id) for g in (system, a)),
        *((g.security_group_id, c.security_group_id) for g in (system, a)),
    ]:
        world.ingress_from_group(target, source)

    _, without = doctor_json()
    world.clients.iam.put_role_policy(
        RoleName="eks-c",
        PolicyName="vpc-cni",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": CNI_ACTIONS_V4, "Resource": "*"}],
            }
        ),
    )
    code, with_inline = doctor_json()

    assert code == 0, with_inline["findings"]
    [missing] = findings(without, "CniPolicyMissing")
    assert missing["nodeGroup"] == "eks-c"
    assert "ec2:AssignPrivateIpAddresses" in missing["missingActions"]


def test_the_ipv4_policy_in_an_ipv6_cluster_is_a_finding_naming_assign_ipv6_addresses(
    world: World, cluster_nodes: ClusterNodes
) -> None:
    world.clients.eks.create_cluster(
        name="six",
        roleArn="arn:aws:iam::123456789012:role/six-cluster",
        resourcesVpcConfig={"subnetIds": list(world.main_vpc.subnet_ids)},
        kubernetesNetworkConfig={"ipFamily": "ipv6"},
    )
    system = world.node_group(
        "eks-system", policy_arns=[CNI_POLICY_ARN], tags={"eks:cluster-name": "six"}
    )
    (instance_id,) = cluster_nodes.launch(system.asg, system.profile)
    cluster_nodes.register("eks-system-node", instance_id)
    cluster_nodes.coredns("coredns-1", "eks-system-node")

    _, report = doctor_json()

    [cni] = findings(report, "CniPolicyMissing")
    assert cni["nodeGroup"] == "eks-system"
    assert "ec2:AssignIpv6Addresses" in cni["summary"]
    assert cni["missingActions"] == ["ec2:AssignIpv6Addresses"]
    assert report["ipFamily"] == "ipv6"


def test_a_node_whose_instance_was_terminated_is_not_counted_nor_evidence(
    world: World, cluster_nodes: ClusterNodes
) -> None:
    node_group(world, cluster_nodes, "eks-system", policy_arns=[CNI_POLICY_ARN])
    cluster_nodes.coredns("coredns-1", "eks-system-node")
    a = world.node_group("eks-a", policy_arns=[CNI_POLICY_ARN])
    first, second = cluster_nodes.launch(a.asg, a.profile, count=2)
    cluster_nodes.register("eks-a-live", first)
    cluster_nodes.register("eks-a-gone", second)
    world.terminate_instances([second])

    _, out, _ = doctor()
    _, report = doctor_json()

    assert "eks-a (AutoScalingGroup): 1 node;" in out
    assert "eks-a-gone: instance " in out
    assert group_of(report, "eks-a")["nodes"] == ["eks-a-live"]
    assert report["notLive"] == {"eks-a-gone": f"instance {second} is terminated"}
    assert not any("eks-a-gone" in line for f in report["findings"] for line in f["evidence"])
    # The other group's live node is counted as before.
    assert group_of(report, "eks-system")["nodes"] == ["eks-system-node"]

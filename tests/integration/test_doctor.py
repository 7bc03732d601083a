"""`sgmesh doctor` against the real API server and a moto server: a cluster broken both ways and
its variants, read through the current kubeconfig and the standard AWS environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.aws.moto_server import aws_env, free_port, start_moto_server
from devtools.aws.world import CNI_POLICY_ARN, NodeGroup, World
from devtools.k8s.controlplane import ControlPlane, write_kubeconfig
from devtools.nodes import ClusterNodes
from devtools.operator_harness import Meshes

pytestmark = pytest.mark.kube

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCTOR_POLICY = DEPLOY / "doctor-iam-policy.json"
DOCTOR_RBAC = DEPLOY / "doctor-rbac.yaml"


def doctor(*arguments: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = subprocess.run(
        [sys.executable, "-m", "sgmesh", "doctor", *arguments],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    return process.returncode, process.stdout, process.stderr


def doctor_json(*arguments: str) -> tuple[int, dict[str, Any]]:
    code, out, err = doctor("-o", "json", *arguments)
    assert code in (0, 1), err
    return code, json.loads(out)


def findings(report: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["check"] == check]


def suggested_manifest(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    code, out, err = doctor("--suggest")
    assert code == 1, err
    assert "problems found" in err  # the report, beside the manifest
    manifest = yaml.safe_load(out)
    path = tmp_path / "suggested.yaml"
    path.write_text(out)
    return manifest, path


def sgmesh_apply(path: Path, world: World) -> None:
    """`sgmesh apply` for the test cluster, a cluster EKS does not know in the world's VPC."""
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "sgmesh",
            "apply",
            "-f",
            str(path),
            "--cluster",
            "test-cluster",
            "--vpc-id",
            world.main_vpc.id,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert process.returncode == 0, process.stdout + process.stderr


@pytest.fixture
def meshes(kube_cluster: ControlPlane, nodegroupmesh_crd: str) -> Iterator[Meshes]:
    api = Meshes(kube_cluster.kubeconfig)
    api.remove_all()
    yield api
    api.remove_all()


@dataclass
class BrokenCluster:
    """A cluster broken both ways (as the README opens): CoreDNS on eks-system, two node
    groups added later whose SGs admit nothing from each other and whose roles lack the CNI
    policy."""

    system: NodeGroup
    a: NodeGroup
    b: NodeGroup


def node_group(world: World, nodes: ClusterNodes, name: str, **options: Any) -> NodeGroup:
    group = world.node_group(name, **options)
    (instance_id,) = nodes.launch(group.asg, group.profile)
    nodes.register(f"{name}-node", instance_id)
    return group


@pytest.fixture
def broken_cluster(world: World, cluster_nodes: ClusterNodes, meshes: Meshes) -> BrokenCluster:
    """Built with no NodeGroupMesh in the cluster (other tests of one pytest run leave some)."""
    system = node_group(world, cluster_nodes, "eks-system", policy_arns=[CNI_POLICY_ARN])
    cluster_nodes.coredns("coredns-1", "eks-system-node")
    cluster_nodes.coredns("coredns-2", "eks-system-node")
    return BrokenCluster(
        system, node_group(world, cluster_nodes, "eks-a"), node_group(world, cluster_nodes, "eks-b")
    )


def test_the_broken_cluster_shows_both_causes_and_the_suggested_mesh_fixes_them(
    world: World, broken_cluster: BrokenCluster, tmp_path: Path
) -> None:
    code, report = doctor_json()

    assert code == 1
    assert report["dns"] == {"eks-a": "blocked", "eks-b": "blocked", "eks-system": "ok"}
    dns = findings(report, "DnsUnreachable")
    assert sorted(f["nodeGroup"] for f in dns) == ["eks-a", "eks-b"]
    assert all(f["peer"] == "eks-system" for f in dns)
    assert any(broken_cluster.system.security_group_id in line for line in dns[0]["evidence"])
    cni = findings(report, "CniPolicyMissing")
    assert sorted(f["nodeGroup"] for f in cni) == ["eks-a", "eks-b"]
    assert "Timed out waiting for IPAM daemon" in cni[0]["summary"]
    assert all(f["mesh"]["reason"] == "no NodeGroupMesh is installed" for f in report["findings"])
    assert report["podTraffic"]["eks-a"]["eks-b"] == "blocked"

    manifest, path = suggested_manifest(tmp_path)

    assert manifest["kind"] == "NodeGroupMesh"
    assert manifest["spec"]["autoScalingGroups"] == {"names": ["eks-a", "eks-b", "eks-system"]}
    assert manifest["spec"]["cniPolicy"] == {"attach": True}

    sgmesh_apply(path, world)
    code, out, err = doctor()

    assert code == 0, out + err
    assert "no problem found" in out


def test_text_output_is_a_matrix_then_each_finding_with_evidence_and_fix(
    broken_cluster: BrokenCluster,
) -> None:
    code, out, _ = doctor()

    assert code == 1
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("from \\ to"))
    assert header.split()[3:] == ["DNS", "eks-a", "eks-b", "eks-system"]
    row = next(line for line in lines if line.startswith("eks-a "))
    assert row.split() == ["eks-a", "BLOCKED", "BLOCKED", "BLOCKED", "BLOCKED"]
    assert "[DnsUnreachable] pods on eks-a cannot reliably resolve names" in out
    assert f"--role-name eks-a --policy-arn {CNI_POLICY_ARN}" in out


def test_a_cidr_rule_that_covers_the_client_subnet_counts_as_reachable(
    world: World, cluster_nodes: ClusterNodes
) -> None:
    system = node_group(world, cluster_nodes, "eks-system", policy_arns=[CNI_POLICY_ARN])
    node_group(world, cluster_nodes, "eks-a", policy_arns=[CNI_POLICY_ARN])
    cluster_nodes.coredns("coredns-1", "eks-system-node")
    (subnet,) = world.clients.ec2.describe_subnets(SubnetIds=list(world.main_vpc.subnet_ids))[
        "Subnets"
    ]
    world.ingress_from_cidr(system.security_group_id, subnet["CidrBlock"], "tcp", 53, 53)
    world.ingress_from_cidr(system.security_group_id, "10.99.0.0/24", "udp", 53, 53)

    _, partly = doctor_json()
    world.ingress_from_cidr(system.security_group_id, subnet["CidrBlock"], "udp", 53, 53)
    _, after = doctor_json()

    assert partly["dns"]["eks-a"] == "partial"
    [finding] = findings(partly, "DnsUnreachable")
    assert any("udp/53" in line and "no inbound rule" in line for line in finding["evidence"])
    assert not any(line.startswith("tcp/53") for line in finding["evidence"])
    assert after["dns"]["eks-a"] == "ok"
    assert findings(after, "DnsUnreachable") == []


def test_a_cni_role_through_irsa_replaces_the_node_roles_and_is_checked_instead(
    world: World, broken_cluster: BrokenCluster, cluster_nodes: ClusterNodes, tmp_path: Path
) -> None:
    world.role("eks-vpc-cni", policy_arns=[CNI_POLICY_ARN])
    world.role("eks-vpc-cni-bare")
    account = "arn:aws:iam::123456789012:role"
    cluster_nodes.service_account(
        "aws-node", {"eks.amazonaws.com/role-arn": f"{account}/eks-vpc-cni"}
    )

    _, with_policy = doctor_json()
    manifest, _ = suggested_manifest(tmp_path)
    cluster_nodes.service_account(
        "aws-node", {"eks.amazonaws.com/role-arn": f"{account}/eks-vpc-cni-bare"}
    )
    _, without_policy = doctor_json()

    assert findings(with_policy, "CniPolicyMissing") == []
    assert with_policy["awsNodeRoleArn"] == f"{account}/eks-vpc-cni"
    assert with_policy["awsNodeCredentials"]["kind"] == "IRSA"
    assert manifest["spec"]["cniPolicy"] == {"attach": False}
    [finding] = findings(without_policy, "CniPolicyMissing")
    assert finding["nodeGroup"] == "aws-node"
    assert "eks-vpc-cni-bare" in finding["summary"]
    assert finding["mesh"]["willFix"] is False


def test_a_karpenter_node_is_its_own_group_and_the_mesh_says_what_it_will_and_cannot_fix(
    world: World, cluster_nodes: ClusterNodes, meshes: Meshes, tmp_path: Path
) -> None:
    node_group(world, cluster_nodes, "eks-system", policy_arns=[CNI_POLICY_ARN])
    cluster_nodes.coredns("coredns-1", "eks-system-node")
    karpenter_sg = world.security_group("karpenter-nodes")
    profile = world.role_with_profile("karpenter-nodes", policy_arns=[CNI_POLICY_ARN])
    instance_id = cluster_nodes.run_instance(
        [karpenter_sg], profile, {"karpenter.sh/nodepool": "default"}
    )
    cluster_nodes.register(
        "karpenter-node",
        instance_id,
        {"karpenter.sh/nodepool": "default", "karpenter.k8s.aws/ec2nodeclass": "default"},
    )
    meshes.create("system", {"autoScalingGroups": {"names": ["eks-system"]}})

    _, outside = doctor_json()
    manifest, path = suggested_manifest(tmp_path)
    cluster_nodes.apply(manifest)  # installed, but no operator has reconciled it yet
    _, installed = doctor_json()
    sgmesh_apply(path, world)
    code, fixed = doctor_json()

    [group] = [g for g in outside["nodeGroups"] if g["name"] == "karpenter/default"]
    assert group["kind"] == "Karpenter"
    assert group["securityGroupIds"] == [karpenter_sg]
    assert group["roleNames"] == ["karpenter-nodes"]
    [dns] = findings(outside, "DnsUnreachable")
    assert dns["nodeGroup"] == "karpenter/default"
    assert dns["mesh"] == {
        "willFix": False,
        "name": None,
        "reason": "node group karpenter/default is outside every mesh",
    }
    assert manifest["spec"]["extraSecurityGroupIds"] == [karpenter_sg]
    assert installed["findings"]
    assert all(f["mesh"]["willFix"] for f in installed["findings"]), installed["findings"]
    assert {f["mesh"]["name"] for f in installed["findings"]} == {"node-groups"}
    assert code == 0, fixed["findings"]


@pytest.fixture
def denying_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A moto server of its own that checks IAM: the AWS environment of a user whose policy is
    doctor's, without ec2:DescribeInstances. moto authorizes every request after the first
    three, which create that user."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "3")
    server = start_moto_server()
    try:
        import boto3

        env = aws_env(server.endpoint_url)
        iam = boto3.client(
            "iam",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=env["AWS_REGION"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        policy = json.loads(DOCTOR_POLICY.read_text())
        for statement in policy["Statement"]:
            actions = statement["Action"]
            actions = [actions] if isinstance(actions, str) else actions
            statement["Action"] = [a for a in actions if a != "ec2:DescribeInstances"]
        iam.create_user(UserName="doctor")
        iam.put_user_policy(
            UserName="doctor", PolicyName="doctor", PolicyDocument=json.dumps(policy)
        )
        key = iam.create_access_key(UserName="doctor")["AccessKey"]
        env.pop("AWS_SESSION_TOKEN")
        env |= {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
        yield env
    finally:
        server.stop()


def test_access_denied_by_aws_names_the_permission_and_exits_3(
    cluster_nodes: ClusterNodes, denying_aws: dict[str, str]
) -> None:
    cluster_nodes.register("eks-a-node", "i-0123456789abcdef0")
    env = {k: v for k, v in os.environ.items() if k != "AWS_SESSION_TOKEN"} | denying_aws

    code, out, err = doctor(env=env)

    assert code == 3
    assert out == ""
    assert "Traceback" not in err
    assert "AWS denied DescribeInstances: grant ec2:DescribeInstances" in err
    assert "deploy/doctor-iam-policy.json" in err


def test_access_denied_by_the_api_server_names_what_to_grant_and_exits_3(
    cluster_nodes: ClusterNodes, kube_cluster: ControlPlane, kube_namespace: str
) -> None:
    kubeconfig = kube_cluster.kubeconfig_for(kube_namespace, "nobody")

    code, _, err = doctor(env=dict(os.environ, KUBECONFIG=str(kubeconfig)))

    assert code == 3
    assert "Traceback" not in err
    assert "Kubernetes API refused to list nodes (403" in err


def test_doctor_needs_only_the_read_rights_of_deploy_doctor_rbac(
    broken_cluster: BrokenCluster,
    kube_cluster: ControlPlane,
    kube_namespace: str,
    nodegroupmesh_crd: str,
) -> None:
    """Bound to the file's roles (through the group every ServiceAccount of the namespace is
    in), a ServiceAccount with no other right runs doctor to the end."""
    documents = list(yaml.safe_load_all(DOCTOR_RBAC.read_text()))
    group = f"system:serviceaccounts:{kube_namespace}"
    for document in documents:
        for subject in document.get("subjects", []):
            subject["name"] = group
    applied = kube_cluster.kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}),
    )
    assert applied.returncode == 0, applied.stderr
    kubeconfig = kube_cluster.kubeconfig_for(kube_namespace, "doctor")
    try:
        code, out, err = doctor("-o", "json", env=dict(os.environ, KUBECONFIG=str(kubeconfig)))
    finally:
        kube_cluster.kubectl("delete", "-f", str(DOCTOR_RBAC), "--ignore-not-found")

    assert code == 1, err
    assert findings(json.loads(out), "DnsUnreachable")


def test_usage_errors_exit_64() -> None:
    wrong_output = doctor("--output", "yaml")
    no_region = doctor(env={k: v for k, v in os.environ.items() if "REGION" not in k})
    bad_region = doctor("--region", "mars")

    assert wrong_output[0] == 64
    assert "invalid choice: 'yaml'" in wrong_output[2]
    assert no_region[0] == 64
    assert "no AWS region: pass --region or set AWS_REGION" in no_region[2]
    assert bad_region[0] == 64
    assert "--region 'mars' is not an AWS region name" in bad_region[2]


def test_an_api_server_or_aws_that_does_not_answer_is_an_error_never_an_empty_cluster(
    broken_cluster: BrokenCluster, kube_cluster: ControlPlane, tmp_path: Path
) -> None:
    nobody_listens = f"http://127.0.0.1:{free_port()}"
    dead_kube = write_kubeconfig(
        tmp_path / "dead", nobody_listens.replace("http", "https"), kube_cluster.ca_file, "x"
    )

    kube_code, kube_out, kube_err = doctor(env=dict(os.environ, KUBECONFIG=str(dead_kube)))
    aws_code, aws_out, aws_err = doctor(env=dict(os.environ, AWS_ENDPOINT_URL=nobody_listens))

    assert (kube_code, kube_out) == (3, "")
    assert "could not be reached to list nodes" in kube_err
    assert (aws_code, aws_out) == (3, "")
    assert "AWS could not be reached" in aws_err
    assert "Traceback" not in kube_err + aws_err

"""`sgmesh plan` and `sgmesh apply` on a YAML file, against a moto server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.aws.world import CNI_POLICY_ARN, NodeGroup, World
from sgmesh.cli import main as cli

OWNER_KEY = "sgmesh.io/default/airflow"


def write_mesh(path: Path, **spec: Any) -> Path:
    document = {
        "apiVersion": "sgmesh.io/v1alpha1",
        "kind": "NodeGroupMesh",
        "metadata": {"name": "airflow"},
        "spec": {"autoScalingGroups": {"names": ["eks-a", "eks-b"]}, **spec},
    }
    target = path / "mesh.yaml"
    target.write_text(yaml.safe_dump(document))
    return target


def run_process(*arguments: str) -> tuple[int, str, str]:
    """`python -m sgmesh ARGUMENTS` in a process of its own: the exit code, stdout and stderr.

    For the smoke test of the command itself, and for what only a new process shows: the
    Kubernetes client reads KUBECONFIG when it is imported, so a kubeconfig named in the
    environment is honoured by a fresh `sgmesh` only, not by this process."""
    process = subprocess.run(
        [sys.executable, "-m", "sgmesh", *arguments], capture_output=True, text=True, check=False
    )
    return process.returncode, process.stdout, process.stderr


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """`sgmesh ARGUMENTS` in this process (`cli.main`, as the console script calls it): the exit
    code, stdout and stderr. A process per test would cost a second of start-up each."""

    def sgmesh(*arguments: str) -> tuple[int, str, str]:
        capsys.readouterr()  # what the test printed before is not the command's
        code = cli.main(list(arguments))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return sgmesh


def owned_rules(world: World, group: NodeGroup, key: str = OWNER_KEY) -> list[dict[str, Any]]:
    return [
        rule
        for rule in world.describe_ingress(group.security_group_id)
        if any(tag["Key"] == key for tag in rule.get("Tags", []))
    ]


@pytest.fixture(autouse=True)
def cluster(world: World, monkeypatch: pytest.MonkeyPatch) -> str:
    """The cluster every command here acts for, as a Deployment would set it: `default` (the
    ownership tags these tests read), a cluster EKS does not know, so its VPC — the world's
    main VPC — is given by SGMESH_VPC_ID."""
    monkeypatch.setenv("SGMESH_CLUSTER_NAME", "default")
    monkeypatch.setenv("SGMESH_VPC_ID", world.main_vpc.id)
    return "default"


@pytest.fixture
def groups(world: World) -> list[NodeGroup]:
    return [world.node_group("eks-a"), world.node_group("eks-b")]


def test_plan_lists_actions_with_reasons_writes_nothing_and_exits_2(
    world: World, groups: list[NodeGroup], tmp_path: Path
) -> None:
    # The smoke test of the command itself: its exit code and output as a shell sees them.
    code, out, err = run_process("plan", "-f", str(write_mesh(tmp_path)))

    assert code == 2, err
    assert out.count("+ authorize") == 4
    assert out.count("+ attach") == 2
    assert "because missing:" in out
    assert "ipamd cannot start without it" in out
    assert owned_rules(world, groups[0]) == []
    assert CNI_POLICY_ARN not in world.attached_policy_arns(groups[0].role)


@pytest.mark.parametrize(
    ("arguments", "environment", "expected"),
    [
        (("--no-such-flag",), {}, "unrecognized arguments: --no-such-flag"),
        ((), {"SGMESH_RULES_PER_SECURITY_GROUP": "sixty"}, "SGMESH_RULES_PER_SECURITY_GROUP"),
    ],
)
def test_a_usage_error_exits_64_as_a_shell_sees_it_never_2_which_means_pending(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    arguments: tuple[str, ...],
    environment: dict[str, str],
    expected: str,
) -> None:
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)

    code, out, err = run_process("plan", "-f", str(write_mesh(tmp_path)), *arguments)

    assert code == 64, err
    assert expected in err
    assert "Traceback" not in err
    assert out == ""


def test_doctor_with_a_bad_region_is_a_usage_error_before_reading_anything(run: Run) -> None:
    code, out, err = run("doctor", "--region", "mars")

    assert code == 64
    assert "--region 'mars' is not an AWS region name" in err
    assert out == ""


def test_apply_converges_then_a_second_apply_makes_no_mutating_call(
    world: World, groups: list[NodeGroup], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mesh = write_mesh(tmp_path)
    assert cli.main(["apply", "-f", str(mesh), "-o", "json"]) == 0
    first = json.loads(capsys.readouterr().out)

    assert cli.main(["apply", "-f", str(mesh), "-o", "json"]) == 0
    second = json.loads(capsys.readouterr().out)

    assert first["applied"] == {"done": 8, "failures": []}
    assert first["rules"] == {"desired": 4, "present": 4, "owned": 4}
    assert second["actions"] == []
    mutating = {"AuthorizeSecurityGroupIngress", "AttachRolePolicy", "TagRole", "CreateTags"}
    assert not mutating & set(second["awsCalls"])
    for group in groups:
        assert len(owned_rules(world, group)) == 2
        assert CNI_POLICY_ARN in world.attached_policy_arns(group.role)
    assert cli.main(["plan", "-f", str(mesh)]) == 0


def test_rules_are_tagged_and_described_at_creation(
    world: World, groups: list[NodeGroup], tmp_path: Path, run: Run
) -> None:
    assert run("apply", "-f", str(write_mesh(tmp_path)))[0] == 0

    [rule, _] = owned_rules(world, groups[0])
    assert {"Key": OWNER_KEY, "Value": "owned"} in rule["Tags"]
    # moto leaves Description out of DescribeSecurityGroupRules for SG-referenced rules
    # (tests/MOTO_NOTES.md); DescribeSecurityGroups shows it on the group pair.
    [group] = world.clients.ec2.describe_security_groups(GroupIds=[groups[0].security_group_id])[
        "SecurityGroups"
    ]
    descriptions = {
        pair.get("Description", "")
        for permission in group["IpPermissions"]
        for pair in permission["UserIdGroupPairs"]
    }
    assert descriptions == {"sgmesh default/airflow: node group mesh traffic"}
    assert world.role_tags(groups[0].role) == {OWNER_KEY: CNI_POLICY_ARN}


def test_hand_made_rule_survives_apply_and_shrink(
    world: World, groups: list[NodeGroup], tmp_path: Path, run: Run
) -> None:
    a, b = groups
    handmade = world.ingress_from_group(a.security_group_id, b.security_group_id)
    assert run("apply", "-f", str(write_mesh(tmp_path)))[0] == 0
    # The hand-made rule already admits b: it counts as present and gets no tag.
    [kept] = [
        r
        for r in world.describe_ingress(a.security_group_id)
        if r["SecurityGroupRuleId"] == handmade
    ]
    assert not kept.get("Tags")
    assert len(owned_rules(world, a)) == 1

    shrunk = write_mesh(tmp_path, autoScalingGroups={"names": ["eks-a"]})
    assert run("apply", "-f", str(shrunk))[0] == 0

    rule_ids = {r["SecurityGroupRuleId"] for r in world.describe_ingress(a.security_group_id)}
    assert handmade in rule_ids
    assert owned_rules(world, b) == []


def test_missing_asg_is_named_the_rest_converges_and_the_exit_code_is_1(
    world: World, groups: list[NodeGroup], tmp_path: Path, run: Run
) -> None:
    mesh = write_mesh(tmp_path, autoScalingGroups={"names": ["eks-a", "eks-b", "eks-gone"]})

    code, out, _ = run("apply", "-f", str(mesh))

    assert code == 1
    assert "AutoScalingGroupNotFound" in out
    assert "eks-gone" in out
    assert len(owned_rules(world, groups[0])) == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("spec: [", "is not valid YAML"),
        ("- a\n- b\n", "is not a mapping"),
        (
            "apiVersion: sgmesh.io/v1alpha1\nkind: NodeGroupMesh\nmetadata: {name: m}\n"
            "spec:\n  autoScalingGroups: {names: [a]}\n  traffic: [{protocol: tcp, fromPort: 80,"
            " toPort: 70000}]\n",
            "spec.traffic[0].toPort (value: 70000)",
        ),
        (
            "apiVersion: sgmesh.io/v1alpha1\nkind: NodeGroupMesh\nmetadata: {name: m}\n"
            "spec:\n  autoScalingGroups: {names: [a]}\n  mode: Sometimes\n",
            "spec.mode (value: 'Sometimes')",
        ),
    ],
)
def test_bad_input_is_refused_naming_field_and_value_and_nothing_is_written(
    world: World, groups: list[NodeGroup], tmp_path: Path, content: str, expected: str, run: Run
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)

    code, out, err = run("apply", "-f", str(path))

    assert code == 1
    assert expected in err
    assert out == ""
    assert owned_rules(world, groups[0]) == []


def test_unreadable_file_is_an_error_naming_it(tmp_path: Path, run: Run) -> None:
    code, _, err = run("plan", "-f", str(tmp_path / "nope.yaml"))
    assert code == 1
    assert "nope.yaml" in err


def test_dry_run_mode_writes_nothing_and_reports_changes_pending(
    world: World, groups: list[NodeGroup], tmp_path: Path, run: Run
) -> None:
    code, out, _ = run("apply", "-f", str(write_mesh(tmp_path, mode="DryRun")))

    assert code == 2
    assert "planned" in out
    assert owned_rules(world, groups[0]) == []


def test_two_meshes_share_rules_and_the_second_leaving_keeps_them(
    world: World, groups: list[NodeGroup], tmp_path: Path, run: Run
) -> None:
    mesh = write_mesh(tmp_path)
    assert run("apply", "-f", str(mesh))[0] == 0
    second = tmp_path / "second.yaml"
    second.write_text(mesh.read_text().replace("name: airflow", "name: batch"))
    assert run("apply", "-f", str(second))[0] == 0
    [rule, _] = owned_rules(world, groups[0])
    assert {"sgmesh.io/default/airflow", "sgmesh.io/default/batch"} <= {
        tag["Key"] for tag in rule["Tags"]
    }

    leaving = tmp_path / "leaving.yaml"
    leaving.write_text(
        mesh.read_text().replace("name: airflow", "name: batch").replace("- eks-b\n", "")
    )
    assert run("apply", "-f", str(leaving))[0] == 0

    assert len(owned_rules(world, groups[1])) == 2
    assert owned_rules(world, groups[1], "sgmesh.io/default/batch") == []


def test_quota_leaves_a_full_group_untouched_and_says_how_many_rules_it_needs(
    world: World, groups: list[NodeGroup], tmp_path: Path, run: Run
) -> None:
    a = groups[0]
    world.clients.ec2.authorize_security_group_ingress(
        GroupId=a.security_group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 443,
                "ToPort": 443,
                "IpRanges": [{"CidrIp": f"10.{i}.0.0/16"} for i in range(59)],
            }
        ],
    )

    # The account's applied quota (60 at moto's Service Quotas) replaces the setting.
    code, out, _ = run("apply", "-f", str(write_mesh(tmp_path)), "--rules-per-security-group", "5")

    assert code == 1
    assert (
        f"security group {a.security_group_id} (eks-a) would need 61 IPv4 inbound rules "
        "but the quota is 60 per IP family"
    ) in out
    assert owned_rules(world, a) == []
    assert len(owned_rules(world, groups[1])) == 2


def test_a_file_with_one_bad_mesh_writes_nothing_for_any_mesh(
    world: World,
    groups: list[NodeGroup],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run: Run,
) -> None:
    good = yaml.safe_load(write_mesh(tmp_path, region="us-east-1").read_text())
    regionless = {**good, "metadata": {"name": "second"}, "spec": {**good["spec"]}}
    del regionless["spec"]["region"]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([good, regionless]))
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)

    code, _, err = run("apply", "-f", str(path))

    # Without a default region the cluster cannot be found either: that is said first.
    assert code == 64
    assert "no region to find the cluster in" in err
    assert owned_rules(world, groups[0]) == []


def unreachable_kubeconfig(path: Path) -> Path:
    """A kubeconfig whose only cluster answers nothing."""
    kubeconfig = path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "gone", "user": {"token": "x"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}],
                "current-context": "gone",
            }
        )
    )
    return kubeconfig


@pytest.mark.parametrize(
    ("members", "named"),
    [
        (
            {"karpenter": {"nodeClasses": ["default"]}},
            "mesh 'airflow' reads members from the cluster",
        ),
        ({"podSecurityGroups": {"policies": ["payments/db-clients"]}}, "spec.podSecurityGroups"),
    ],
    ids=["node-classes", "pod-security-groups"],
)
def test_a_mesh_reading_the_cluster_fails_clearly_when_none_is_reachable(
    world: World,
    groups: list[NodeGroup],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    members: dict[str, Any],
    named: str,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(unreachable_kubeconfig(tmp_path)))
    mesh = write_mesh(tmp_path, **members)

    code, _, err = run_process("apply", "-f", str(mesh))

    assert code == 1
    assert named in err
    assert "did not answer" in err
    assert "Traceback" not in err
    assert owned_rules(world, groups[0]) == []  # nothing applied


@pytest.mark.kube
def test_plan_reads_node_classes_from_the_current_kubeconfig(
    world: World,
    groups: list[NodeGroup],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kube_cluster: Any,
    ec2nodeclass_crd: str,
) -> None:
    from devtools import karpenter

    karpenter_sg = world.security_group("karpenter-nodes")
    node_role = world.role("KarpenterNodeRole-cli")
    name = f"cli-{os.getpid()}"
    applied = kube_cluster.kubectl(
        "apply", "-f", "-", stdin=json.dumps(karpenter.ec2nodeclass(name, role=node_role))
    )
    assert applied.returncode == 0, applied.stderr
    try:
        karpenter.write_ec2nodeclass_status(
            kube_cluster.kubectl, name, karpenter.ec2nodeclass_status({karpenter_sg: "k"})
        )
        monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
        mesh = write_mesh(tmp_path, karpenter={"nodeClasses": [name]})

        code, out, err = run_process("plan", "-f", str(mesh), "-o", "json")
    finally:
        kube_cluster.kubectl("delete", karpenter.RESOURCE, name, "--ignore-not-found")

    assert code == 2, err
    report = json.loads(out)
    [member] = [m for m in report["members"] if m["kind"] == "EC2NodeClass"]
    assert member == {
        "name": name,
        "kind": "EC2NodeClass",
        "securityGroupIds": [karpenter_sg],
        "roleNames": [node_role],
        "vpcId": world.main_vpc.id,
        "drainingSecurityGroups": [],
    }
    attached = {a["role"] for a in report["actions"] if a["kind"] == "attach"}
    assert attached == {"eks-a", "eks-b", node_role}


# ---- cluster identity and the boundary -----------------------------------------------------


def test_without_a_cluster_name_apply_refuses_saying_why(
    world: World,
    groups: list[NodeGroup],
    tmp_path: Path,
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SGMESH_CLUSTER_NAME")
    mesh = write_mesh(tmp_path, autoScalingGroups={"names": ["eks-a"]})

    code, out, err = run("apply", "-f", str(mesh))

    assert code == 64
    assert "--cluster or env SGMESH_CLUSTER_NAME" in err
    assert "two clusters must never share one" in err
    assert out == ""
    assert owned_rules(world, groups[0]) == []  # nothing applied


@pytest.mark.parametrize("name", ["REPLACE-WITH-CLUSTER-NAME", "bad name!"])
def test_a_placeholder_or_bad_cluster_name_is_a_usage_error(
    tmp_path: Path, run: Run, name: str
) -> None:
    mesh = write_mesh(tmp_path, autoScalingGroups={"names": ["eks-a"]})

    code, _, err = run("plan", "-f", str(mesh), "--cluster", name)

    assert code == 64
    assert name in err


def test_without_a_vpc_plan_refuses_naming_both_settings(
    tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SGMESH_VPC_ID")
    mesh = write_mesh(tmp_path, autoScalingGroups={"names": ["eks-a"]})

    code, _, err = run("plan", "-f", str(mesh))

    assert code == 1
    assert "--vpc-id (env SGMESH_VPC_ID)" in err
    assert "--cluster (env SGMESH_CLUSTER_NAME)" in err


def test_an_eks_cluster_s_vpc_bounds_the_mesh_and_an_sg_of_another_vpc_is_left_alone(
    world: World,
    groups: list[NodeGroup],
    tmp_path: Path,
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SGMESH_VPC_ID")
    world.eks_cluster("prod")
    other_vpc = world.vpc()
    database = world.security_group("database", vpc=other_vpc)
    mesh = write_mesh(
        tmp_path,
        autoScalingGroups={"names": ["eks-a", "eks-b"]},
        securityGroups={"ids": [database]},
    )

    code, out, _ = run("apply", "-f", str(mesh), "--cluster", "prod")

    assert code == 1  # a problem stands: the SG outside the cluster
    assert "problem (MemberOutsideCluster)" in out
    assert database in out
    assert other_vpc.id in out
    assert world.describe_ingress(database) == []
    pairs = world.owned_pairs({g.security_group_id for g in groups}, "sgmesh.io/prod/airflow")
    assert len(pairs) == 4  # the in-VPC members converged


def test_with_a_member_tag_an_untagged_sg_is_not_allowed(
    world: World, tmp_path: Path, run: Run
) -> None:
    tagged = world.security_group("tagged", tags={"kubernetes.io/cluster/prod": "owned"})
    untagged = world.security_group("untagged")
    mesh = write_mesh(tmp_path, securityGroups={"ids": [tagged, untagged]})

    code, out, _ = run("apply", "-f", str(mesh), "--member-tag", "kubernetes.io/cluster/prod")

    assert code == 1
    assert "problem (MemberNotAllowed)" in out
    assert world.describe_ingress(untagged) == []
    assert world.owned_pairs({tagged}, OWNER_KEY) == {(tagged, tagged)}


@pytest.mark.parametrize("flag", [("--vpc-id", "vpc-nope"), ("--member-tag", "=x")])
def test_a_bad_boundary_setting_is_a_usage_error_naming_it(
    tmp_path: Path, run: Run, flag: tuple[str, str]
) -> None:
    mesh = write_mesh(tmp_path, autoScalingGroups={"names": ["eks-a"]})

    code, _, err = run("plan", "-f", str(mesh), *flag)

    assert code == 64
    assert flag[1] in err

"""`sgmesh iam-policy` with `--vpc-id`, offline: the policy of the cluster it names, each value
where the flags put it and `*` where none was given; a bad flag is a usage error (64), and the
command never prints a policy without a VPC."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sgmesh.api import iam_policy
from sgmesh.cli import exit_codes, main

VPC = "vpc-0123456789abcdef0"


def run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = main.main(["iam-policy", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def statement(document: dict[str, Any], sid: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [s for s in document["Statement"] if s["Sid"] == sid]
    [found] = matches
    return found


def test_the_policy_names_the_cluster_its_vpc_region_account_and_partition(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys,
        *("--cluster", "prod", "--vpc-id", VPC, "--region", "us-gov-west-1"),
        *("--account", "111122223333"),
    )

    assert code == exit_codes.OK
    document = json.loads(out)
    assert statement(document, "ReadTheCluster")["Resource"] == (
        "arn:aws-us-gov:eks:us-gov-west-1:111122223333:cluster/prod"
    )
    on_groups = statement(document, "MeshIngressRulesOnClusterVpcGroups")
    assert on_groups["Resource"] == (
        "arn:aws-us-gov:ec2:us-gov-west-1:111122223333:security-group/*"
    )
    assert on_groups["Condition"] == {
        "ArnEquals": {"ec2:Vpc": f"arn:aws-us-gov:ec2:us-gov-west-1:111122223333:vpc/{VPC}"}
    }
    assert statement(document, "CniPolicyOnNodeRoles")["Condition"] == {
        "ArnEquals": {"iam:PolicyARN": "arn:aws-us-gov:iam::aws:policy/AmazonEKS_CNI_Policy"}
    }
    assert out == iam_policy.render(
        iam_policy.ClusterScope("prod", VPC, "aws-us-gov", "us-gov-west-1", "111122223333")
    )


def test_without_region_and_account_they_are_any_and_the_partition_is_aws(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "--cluster", "prod", "--vpc-id", VPC)

    assert code == exit_codes.OK
    document = json.loads(out)
    assert statement(document, "ReadTheCluster")["Resource"] == "arn:aws:eks:*:*:cluster/prod"
    assert statement(document, "MeshIngressRulesOnClusterVpcGroups")["Condition"] == {
        "ArnEquals": {"ec2:Vpc": f"arn:aws:ec2:*:*:vpc/{VPC}"}
    }


def test_the_ingress_writes_are_bounded_to_the_vpc_on_groups_and_nowhere_unconditioned(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The only unconditioned grant of the writes is on rules, which every write reaches only
    together with its group."""
    _, out, _ = run(capsys, "--cluster", "prod", "--vpc-id", VPC)
    writes = {"ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"}

    granting = [s for s in json.loads(out)["Statement"] if writes & set(_as_list(s["Action"]))]

    assert {s["Sid"]: (s["Resource"], "Condition" in s) for s in granting} == {
        "MeshIngressRulesOnClusterVpcGroups": ("arn:aws:ec2:*:*:security-group/*", True),
        "MeshIngressRulesOnRules": ("arn:aws:ec2:*:*:security-group-rule/*", False),
    }


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--vpc-id", VPC], "--cluster"),
        (["--cluster", "no/slashes", "--vpc-id", VPC], "cluster name"),
        (["--cluster", "prod", "--vpc-id", "vpc-1"], "--vpc-id"),
        (["--cluster", "prod", "--vpc-id", VPC, "--account", "1234"], "--account"),
        (["--cluster", "prod", "--vpc-id", VPC, "--region", "Europe"], "--region"),
        (["--cluster", "prod", "--vpc-id", VPC, "--partition", "azure"], "--partition"),
        (
            ["--cluster", "prod", "--vpc-id", VPC, "--region", "cn-north-1", "--partition", "aws"],
            "aws-cn",
        ),
    ],
)
def test_a_bad_flag_is_a_usage_error_naming_it(
    capsys: pytest.CaptureFixture[str], arguments: list[str], expected: str
) -> None:
    code, out, err = run(capsys, *arguments)

    assert code == exit_codes.USAGE
    assert out == ""
    assert expected in err
    assert "Traceback" not in err


def test_without_a_vpc_or_a_region_to_ask_eks_in_it_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)

    code, out, err = run(capsys, "--cluster", "prod")

    assert code == exit_codes.USAGE
    assert out == ""
    assert "--vpc-id" in err
    assert "--region" in err

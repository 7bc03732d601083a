"""`sgmesh iam-policy` without `--vpc-id`, against a moto server: the VPC in the policy is the
one EKS's DescribeCluster answers for the cluster, in the region asked, which the policy then
names; a cluster EKS does not know is an error (1) that says to give `--vpc-id`, and no policy is
printed."""

from __future__ import annotations

import json

import pytest

from devtools.aws.world import World
from sgmesh.api import iam_policy
from sgmesh.cli import exit_codes, main
from tests.deploy import iam


def test_the_vpc_comes_from_eks_and_the_policy_names_the_region_asked(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.eks_cluster("prod")

    code = main.main(["iam-policy", "--cluster", "prod", "--account", iam.ACCOUNT])

    captured = capsys.readouterr()
    assert code == exit_codes.OK, captured.err
    scope = iam_policy.ClusterScope(
        "prod", world.main_vpc.id, region=iam.REGION, account=iam.ACCOUNT
    )
    assert captured.out == iam_policy.render(scope)
    [on_groups] = [
        s
        for s in json.loads(captured.out)["Statement"]
        if s["Sid"] == "MeshIngressRulesOnClusterVpcGroups"
    ]
    assert on_groups["Condition"]["ArnEquals"]["ec2:Vpc"].endswith(f":vpc/{world.main_vpc.id}")


def test_a_cluster_eks_does_not_know_is_an_error_asking_for_the_vpc(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.eks_cluster("prod")

    code = main.main(["iam-policy", "--cluster", "staging"])

    captured = capsys.readouterr()
    assert code == exit_codes.ERROR
    assert captured.out == ""
    assert "staging" in captured.err
    assert "--vpc-id" in captured.err
    assert "Traceback" not in captured.err

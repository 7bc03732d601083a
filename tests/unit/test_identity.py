"""The cluster's identity from EKS answers moto does not give (botocore Stubber): AWS's own
`vpcId` and cluster SG, an IPv6 cluster, and a DescribeCluster that fails."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber

from sgmesh.aws import client, identity

VPC = "vpc-0123456789abcdef0"


@pytest.fixture
def clients() -> client.AwsClients:
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return client.make_clients("us-east-1", session=session, max_attempts=1)


@pytest.fixture
def eks(clients: client.AwsClients) -> Iterator[Stubber]:
    with Stubber(clients.eks) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def _cluster(**network: object) -> dict[str, object]:
    return {
        "cluster": {
            "name": "prod",
            "resourcesVpcConfig": {"subnetIds": ["subnet-1"], **network},
            "kubernetesNetworkConfig": {"ipFamily": "ipv6"},
        }
    }


def test_aws_s_vpc_id_and_cluster_sg_are_taken_as_eks_says(
    clients: client.AwsClients, eks: Stubber
) -> None:
    eks.add_response(
        "describe_cluster",
        _cluster(vpcId=VPC, clusterSecurityGroupId="sg-0123456789abcdef0"),
        {"name": "prod"},
    )

    found = identity.resolve(clients, "prod")

    assert found == identity.ClusterIdentity(
        "prod", VPC, "eks:DescribeCluster", "sg-0123456789abcdef0", "ipv6"
    )


@pytest.mark.parametrize("code", ["AccessDeniedException", "ThrottlingException"])
def test_a_failing_describe_cluster_is_never_read_as_not_in_eks(
    clients: client.AwsClients, eks: Stubber, code: str
) -> None:
    eks.add_client_error("describe_cluster", code, http_status_code=400)

    with pytest.raises(Exception, match=code) as raised:
        identity.resolve(clients, "prod")

    assert not isinstance(raised.value, identity.UnknownCluster)


def test_with_the_vpc_given_a_failing_describe_cluster_does_not_stop_the_operator(
    clients: client.AwsClients, eks: Stubber
) -> None:
    eks.add_client_error("describe_cluster", "AccessDeniedException", http_status_code=400)

    found = identity.resolve(clients, "prod", VPC)

    assert found.vpc_id == VPC
    assert found.source.startswith("--vpc-id")
    assert "eks:DescribeCluster" in found.source  # the permission a person may want to grant

"""The operator's AWS clients (`shared.Runtime.clients_for`) against a moto server: one set per
region, all sharing one `SharedReads`, each talking to its region."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import botocore.exceptions
import pytest

from sgmesh.aws import client, reconcile
from sgmesh.controller import metrics, shared


@pytest.fixture
def runtime(aws_env: dict[str, str]) -> Iterator[shared.Runtime]:
    with ThreadPoolExecutor(1) as executor:
        yield shared.Runtime(
            settings=shared.OperatorSettings(pipeline=reconcile.Settings(), region=None),
            metrics=metrics.Metrics(),
            executor=executor,
        )


def test_each_region_has_its_clients_and_every_region_shares_reads(
    runtime: shared.Runtime,
) -> None:
    east, west = runtime.clients_for("us-east-1"), runtime.clients_for("eu-west-1")
    assert runtime.clients_for("us-east-1") is east
    assert (east.region, west.region) == ("us-east-1", "eu-west-1")
    assert east.ec2.meta.region_name == "us-east-1"
    assert west.ec2.meta.region_name == "eu-west-1"
    # A write in one region forgets the IAM answers read through the other (IAM is global).
    assert east.shared_reads is west.shared_reads is runtime.shared_reads

    # Each set talks to its own region: a VPC made in eu-west-1 is not in us-east-1.
    vpc_id = west.ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    in_west = {vpc["VpcId"] for vpc in west.ec2.describe_vpcs()["Vpcs"]}
    in_east = {vpc["VpcId"] for vpc in east.ec2.describe_vpcs()["Vpcs"]}
    assert vpc_id in in_west
    assert vpc_id not in in_east
    # Counted per region, as the metrics count every call the operator makes.
    assert west.calls["CreateVpc"] == 1
    registry = runtime.metrics.registry
    assert registry.get_sample_value("sgmesh_aws_calls_total", {"operation": "DescribeVpcs"}) == 2


def test_operator_clients_pool_a_connection_per_worker_thread(runtime: shared.Runtime) -> None:
    clients = runtime.clients_for("us-east-1")

    for service in (clients.ec2, clients.autoscaling, clients.iam):
        config: Any = service.meta.config  # botocore's Config declares its options dynamically
        assert config.max_pool_connections == shared.WORKER_THREADS


def test_every_failed_call_is_counted_by_service_operation_and_code(
    runtime: shared.Runtime,
) -> None:
    clients = runtime.clients_for("us-east-1")

    with pytest.raises(botocore.exceptions.ClientError):
        clients.ec2.describe_security_groups(GroupIds=["sg-0000000000000dead"])
    clients.ec2.describe_vpcs()  # an answer that is no error counts nowhere

    registry = runtime.metrics.registry
    labels = {"service": "ec2", "operation": "DescribeSecurityGroups"}
    code = {"code": "InvalidGroup.NotFound"}
    assert registry.get_sample_value("sgmesh_aws_call_errors_total", labels | code) == 1
    assert (
        registry.get_sample_value(
            "sgmesh_aws_call_errors_total", {"service": "ec2", "operation": "DescribeVpcs"} | code
        )
        is None
    )


def test_a_call_that_gets_no_answer_is_counted_by_its_exception(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:  # a port nothing listens on once the socket is closed
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    failed: list[tuple[str, str, str]] = []
    clients = client.make_clients(
        "us-east-1", max_attempts=1, error_listener=lambda *call: failed.append(call)
    )

    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        clients.iam.list_role_tags(RoleName="eks-a")

    assert failed == [("iam", "ListRoleTags", "EndpointConnectionError")]

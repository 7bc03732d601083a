"""Throttling answered over HTTP: botocore's retries absorb it, and when they cannot, nothing is
written and the error is classified as "try again later", never as "gone"."""

from __future__ import annotations

import botocore.exceptions
import pytest

from devtools.aws.world import World
from sgmesh.api import models
from sgmesh.aws import client, errors, reconcile
from tests.support.fault_proxy import ThrottlingProxy

MESH = models.NodeGroupMesh.parse(
    {
        "apiVersion": "sgmesh.io/v1alpha1",
        "kind": "NodeGroupMesh",
        "metadata": {"name": "airflow"},
        "spec": {"autoScalingGroups": {"names": ["eks-a", "eks-b"]}},
    }
)


def test_throttled_reads_are_retried_and_the_mesh_still_converges(
    world: World, fault_proxy: ThrottlingProxy
) -> None:
    world.node_group("eks-a")
    world.node_group("eks-b")
    fault_proxy.throttle.update({"DescribeAutoScalingGroups": 2, "ListInstanceProfiles": 2})
    clients = client.make_clients()

    outcome = reconcile.converge(clients, MESH, reconcile.Settings())

    assert outcome.converged
    assert fault_proxy.throttled == {
        "DescribeAutoScalingGroups": 2,
        "ListInstanceProfiles": 2,
    }
    assert fault_proxy.requests["DescribeAutoScalingGroups"] == 3  # two throttled, then answered
    assert clients.calls["DescribeAutoScalingGroups"] == 1  # one call, retried inside botocore


def test_throttling_beyond_the_retries_stops_before_any_write_and_is_unavailable(
    world: World, fault_proxy: ThrottlingProxy
) -> None:
    world.node_group("eks-a")
    world.node_group("eks-b")
    fault_proxy.throttle["ListInstanceProfiles"] = 100
    clients = client.make_clients(max_attempts=3)

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        reconcile.converge(clients, MESH, reconcile.Settings())

    failure = errors.classify(raised.value)
    assert failure.kind is errors.ErrorKind.UNAVAILABLE
    assert failure.code == "Throttling"
    assert fault_proxy.throttled["ListInstanceProfiles"] == 3
    assert "GetInstanceProfile" not in fault_proxy.requests  # a refused listing is no answer
    writes = {action for action in fault_proxy.requests if action in client.MUTATING_OPERATIONS}
    assert writes == set()


def test_an_unparseable_5xx_answer_is_unavailable_and_nothing_is_written(
    world: World, fault_proxy: ThrottlingProxy
) -> None:
    world.node_group("eks-a")
    world.node_group("eks-b")
    fault_proxy.unparseable["DescribeSecurityGroupRules"] = 100
    clients = client.make_clients(max_attempts=2)

    with pytest.raises(errors.ERRORS) as raised:
        reconcile.converge(clients, MESH, reconcile.Settings())

    # botocore cannot parse the answer: a ResponseParserError, which is no BotoCoreError.
    assert not isinstance(
        raised.value, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError
    )
    failure = clients.classify(raised.value)
    assert failure.kind is errors.ErrorKind.UNAVAILABLE
    assert failure.retryable
    writes = {action for action in fault_proxy.requests if action in client.MUTATING_OPERATIONS}
    assert writes == set()

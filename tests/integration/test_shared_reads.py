"""Reads shared between discoveries (`sgmesh.aws.shared_reads`) against a moto server over HTTP:
an answer is served again only to the same request, inside a discovery, within its seconds,
and never across a write made through any client of the process, in any region."""

from __future__ import annotations

from collections.abc import Sequence

import botocore.exceptions
import pytest

from devtools.aws.world import World
from sgmesh.api import models
from sgmesh.aws import client, errors, reconcile, shared_reads
from sgmesh.engine import planning

CLUSTER = "test-cluster"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def shared(clock: Clock) -> shared_reads.SharedReads:
    return shared_reads.SharedReads(ttl_seconds=5.0, clock=clock)


@pytest.fixture
def sharing_clients(aws_env: dict[str, str], shared: shared_reads.SharedReads) -> client.AwsClients:
    return client.make_clients("us-east-1", shared_reads=shared)


def sources(clients: client.AwsClients, group_id: str) -> set[str]:
    answer = clients.ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}]
    )
    return {
        rule["ReferencedGroupInfo"]["GroupId"]
        for rule in answer["SecurityGroupRules"]
        if not rule["IsEgress"] and "ReferencedGroupInfo" in rule
    }


def authorize_from(clients: client.AwsClients, group_id: str, source_id: str) -> None:
    clients.ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": source_id}]}],
    )


def test_the_same_read_inside_discoveries_is_asked_once(
    world: World, sharing_clients: client.AwsClients, shared: shared_reads.SharedReads
) -> None:
    group = world.security_group("nodes")
    with sharing_clients.reads_shared():
        first = sources(sharing_clients, group)
        second = sources(sharing_clients, group)
    assert first == second == set()
    assert sharing_clients.calls["DescribeSecurityGroupRules"] == 1
    assert shared.served == 1


def test_a_read_after_a_write_never_returns_the_pre_write_answer(
    world: World, sharing_clients: client.AwsClients, aws_env: dict[str, str]
) -> None:
    group, source = world.security_group("nodes"), world.security_group("peers")
    # Another mesh's apply: other clients of the same process, writing outside any discovery.
    other = client.make_clients("us-east-1", shared_reads=sharing_clients.shared_reads)
    with sharing_clients.reads_shared():
        assert sources(sharing_clients, group) == set()
    authorize_from(other, group, source)
    with sharing_clients.reads_shared():
        assert sources(sharing_clients, group) == {source}
    assert sharing_clients.calls["DescribeSecurityGroupRules"] == 2


def test_a_write_in_another_region_forgets_the_iam_answers_of_every_region(
    world: World, sharing_clients: client.AwsClients
) -> None:
    world.role("node-role")
    elsewhere = client.make_clients("eu-west-1", shared_reads=sharing_clients.shared_reads)
    with sharing_clients.reads_shared():
        assert sharing_clients.iam.list_role_tags(RoleName="node-role")["Tags"] == []
    elsewhere.iam.tag_role(RoleName="node-role", Tags=[{"Key": "sgmesh.io/c/m", "Value": "x"}])
    with sharing_clients.reads_shared():
        tags = sharing_clients.iam.list_role_tags(RoleName="node-role")["Tags"]
    assert tags == [{"Key": "sgmesh.io/c/m", "Value": "x"}]


def test_reads_outside_a_discovery_always_ask_aws(
    world: World, sharing_clients: client.AwsClients, shared: shared_reads.SharedReads
) -> None:
    group = world.security_group("nodes")
    with sharing_clients.reads_shared():
        sources(sharing_clients, group)
    # Apply's re-read at the write: never an answer another discovery read.
    sources(sharing_clients, group)
    sources(sharing_clients, group)
    assert sharing_clients.calls["DescribeSecurityGroupRules"] == 3
    assert shared.served == 0


def test_errors_are_never_remembered(sharing_clients: client.AwsClients) -> None:
    with sharing_clients.reads_shared():
        for _ in range(2):
            with pytest.raises(botocore.exceptions.ClientError) as raised:
                sharing_clients.ec2.describe_security_groups(GroupIds=["sg-0123456789abcdef0"])
            assert errors.error_code(raised.value) == "InvalidGroup.NotFound"
    assert sharing_clients.calls["DescribeSecurityGroups"] == 2


def test_a_write_outside_the_process_is_seen_once_the_answer_ages_out(
    world: World, sharing_clients: client.AwsClients, clock: Clock
) -> None:
    group, source = world.security_group("nodes"), world.security_group("peers")
    with sharing_clients.reads_shared():
        assert sources(sharing_clients, group) == set()
    authorize_from(world.clients, group, source)  # a person, or another process
    clock.now += 5.0
    with sharing_clients.reads_shared():
        assert sources(sharing_clients, group) == set()  # the answer of 5 s ago, as documented
    clock.now += 0.1
    with sharing_clients.reads_shared():
        assert sources(sharing_clients, group) == {source}


def mesh(name: str, asgs: Sequence[str]) -> models.NodeGroupMesh:
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": name},
            "spec": {"autoScalingGroups": {"names": list(asgs)}},
        }
    )


def test_meshes_reconciled_together_share_reads_and_see_each_others_writes(
    world: World,
    sharing_clients: client.AwsClients,
    shared: shared_reads.SharedReads,
    clock: Clock,
) -> None:
    asgs = [world.node_group(f"eks-{index}").asg for index in range(3)]
    settings = reconcile.Settings(cluster=CLUSTER)
    first = reconcile.converge(sharing_clients, mesh("first", asgs), settings)
    assert first.converged
    assert first.applied is not None
    # 3 SGs, each admitting all 3: 9 rules.
    assert sum(isinstance(a, planning.Authorize) for a in first.applied.done) == 9

    # The second mesh reads right after the first one wrote: it finds the rules the first
    # made and joins them as co-owner, instead of planning them again from a stale answer.
    second = reconcile.converge(sharing_clients, mesh("second", asgs), settings)
    assert second.converged
    assert second.applied is not None
    done = second.applied.done
    assert not any(isinstance(a, planning.Authorize) for a in done)
    assert sum(isinstance(a, planning.TagRule) for a in done) == 9

    # Each resyncs once after the other's writes: the roles the second tagged are read again
    # (`sgmesh.aws.roles` forgets what the process wrote to), after which both remember alike.
    for name in ("first", "second"):
        assert reconcile.converge(sharing_clients, mesh(name, asgs), settings).converged
    clock.now += 10.0  # the next window

    # Steady state: both resync in one window; the second asks AWS only what names it.
    sharing_clients.calls.clear()
    served_before = shared.served
    assert reconcile.converge(sharing_clients, mesh("first", asgs), settings).converged
    alone = sum(sharing_clients.calls.values())
    sharing_clients.calls.clear()
    assert reconcile.converge(sharing_clients, mesh("second", asgs), settings).converged
    together = sum(sharing_clients.calls.values())
    assert together < alone
    assert shared.served - served_before == alone - together

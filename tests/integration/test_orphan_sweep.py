"""The sweep of abandoned rules (`sgmesh.aws.orphans`) against the moto server, behind a proxy
whose reads show rules' tags as they were 2 s earlier: it revokes only what sgmesh made for
this cluster, in its VPC, that no mesh owns and whose mesh is gone — and nothing a mesh tagged
a moment ago."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from devtools.aws.moto_server import MotoServer
from devtools.aws.world import World
from sgmesh.aws import apply, client, orphans
from sgmesh.engine import ownership
from tests.support.lagging_proxy import LaggingTagsProxy

CLUSTER = "sweeping"
GONE = ownership.Owner(CLUSTER, "gone")
ALIVE = ownership.Owner(CLUSTER, "alive")
ELSEWHERE = ownership.Owner("another-cluster", "gone")
SETTLING = apply.Settling(interval_seconds=0.5, attempts=12, confirm_seconds=2.5)


@pytest.fixture
def lagging(
    moto_server: MotoServer, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[LaggingTagsProxy]:
    proxy = LaggingTagsProxy(moto_server.port, lag_seconds=2.0)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.close()


@pytest.fixture
def through_proxy(lagging: LaggingTagsProxy) -> client.AwsClients:
    return client.make_clients(session=boto3.Session())


def rule_ids(world: World, group_id: str) -> set[str]:
    return {rule["SecurityGroupRuleId"] for rule in world.describe_ingress(group_id)}


def test_the_sweep_revokes_only_abandoned_rules_of_this_cluster_in_its_vpc(
    world: World, through_proxy: client.AwsClients
) -> None:
    target, source, other = (world.security_group(name) for name in ("nodes", "pods", "other"))
    abandoned = world.ingress_from_group(
        target, source, "tcp", 53, 53, description=GONE.rule_description
    )
    # The same mesh's rule still tagged by another mesh that co-owns it: not abandoned.
    co_owned = world.ingress_from_group(
        target,
        source,
        "udp",
        53,
        53,
        tags={ALIVE.tag_key: ownership.OWNED},
        description=GONE.rule_description,
    )
    # An ownerless rule of a mesh that exists: that mesh deals with it.
    living_mesh = world.ingress_from_group(
        target, other, "tcp", 443, 443, description=ALIVE.rule_description
    )
    # Another cluster's abandoned rule, somebody else's rule, and a rule outside the VPC.
    other_cluster = world.ingress_from_group(
        target, other, "tcp", 10250, 10250, description=ELSEWHERE.rule_description
    )
    by_hand = world.ingress_from_group(target, other, "-1", description="opened by hand")
    outside_vpc = world.vpc()
    far, far_source = (world.security_group(n, vpc=outside_vpc) for n in ("far", "far-src"))
    far_rule = world.ingress_from_group(far, far_source, description=GONE.rule_description)

    revoked = orphans.sweep(through_proxy, CLUSTER, world.main_vpc.id, {"alive"}, SETTLING)

    assert [rule.rule_id for rule in revoked] == [abandoned]
    assert rule_ids(world, target) == {co_owned, living_mesh, other_cluster, by_hand}
    assert rule_ids(world, far) == {far_rule}


def test_a_rule_a_mesh_tagged_a_moment_ago_is_not_swept_on_a_stale_read(
    world: World, lagging: LaggingTagsProxy, through_proxy: client.AwsClients
) -> None:
    target, source = world.security_group("nodes"), world.security_group("pods")
    joined = world.ingress_from_group(target, source, description=GONE.rule_description)
    # A mesh of the cluster adopts the orphan now; for 2 s reads still show it ownerless.
    through_proxy.ec2.create_tags(
        Resources=[joined], Tags=[{"Key": ALIVE.tag_key, "Value": ownership.OWNED}]
    )
    assert [
        rule.rule_id for rule in orphans.find(through_proxy, CLUSTER, world.main_vpc.id, {"alive"})
    ] == [joined]
    assert lagging.stale_answers > 0

    revoked = orphans.sweep(through_proxy, CLUSTER, world.main_vpc.id, {"alive"}, SETTLING)

    assert revoked == []
    assert rule_ids(world, target) == {joined}


def test_a_sweep_with_nothing_abandoned_reads_twice_and_writes_nothing(
    world: World, through_proxy: client.AwsClients
) -> None:
    target, source = world.security_group("nodes"), world.security_group("pods")
    world.ingress_from_group(
        target, source, tags={ALIVE.tag_key: ownership.OWNED}, description=ALIVE.rule_description
    )

    assert orphans.sweep(through_proxy, CLUSTER, world.main_vpc.id, {"alive"}, SETTLING) == []
    assert through_proxy.calls == {"DescribeSecurityGroups": 1, "DescribeSecurityGroupRules": 1}

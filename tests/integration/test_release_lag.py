"""Co-owners that let go together, when EC2's reads lag its writes (moto behind a proxy whose
reads show rules' tags as they were 2 s earlier): nothing may stay behind with nobody in charge,
and nothing another mesh still holds may go."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import boto3
import pytest

from devtools.aws.moto_server import MotoServer
from devtools.aws.world import World
from sgmesh.api import models
from sgmesh.aws import apply, client, errors, reconcile
from sgmesh.engine import ownership, planning
from tests.support.lagging_proxy import LaggingTagsProxy

LAG_SECONDS = 2.0
SETTINGS = reconcile.Settings(cluster="lagging")
# A real-sized wait for the confirmation, shortened only by what the test can spare.
SETTLING = apply.Settling(interval_seconds=0.5, attempts=12, confirm_seconds=2.5)


def mesh(name: str) -> models.NodeGroupMesh:
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": name},
            "spec": {
                "region": "us-east-1",
                "autoScalingGroups": {"names": ["eks-a", "eks-b"]},
                "cniPolicy": {"attach": False},
            },
        },
        name,
    )


def owner(name: str) -> ownership.Owner:
    return ownership.Owner(SETTINGS.cluster, name)


@pytest.fixture
def lagging(
    moto_server: MotoServer, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[LaggingTagsProxy]:
    proxy = LaggingTagsProxy(moto_server.port, LAG_SECONDS)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.close()


def lagging_clients(proxy: LaggingTagsProxy) -> client.AwsClients:
    assert proxy.url  # the environment points at the proxy (fixture `lagging`)
    return client.make_clients(session=boto3.Session())


@pytest.fixture
def groups(world: World) -> list[str]:
    """The security groups of the two node groups every mesh here lists."""
    return [world.node_group(name).security_group_id for name in ("eks-a", "eks-b")]


def mesh_rules(world: World, groups: list[str]) -> list[dict[str, object]]:
    return [
        rule
        for group_id in groups
        for rule in world.describe_ingress(group_id)
        if str(rule.get("Description", "")).startswith("sgmesh ")
    ]


def co_owned_by(world: World, groups: list[str], names: tuple[str, ...]) -> None:
    for name in names:
        reconcile.converge(world.clients, mesh(name), SETTINGS)
    for rule in mesh_rules(world, groups):
        keys = {tag["Key"] for tag in rule.get("Tags", [])}  # type: ignore[attr-defined]
        assert keys >= {owner(name).tag_key for name in names}


def withdraw_together(proxy: LaggingTagsProxy, names: tuple[str, ...]) -> dict[str, object]:
    outcomes: dict[str, object] = {}
    start = threading.Barrier(len(names))

    def withdraw(name: str) -> None:
        clients = lagging_clients(proxy)
        start.wait()
        try:
            outcomes[name] = reconcile.withdraw(clients, owner(name), settling=SETTLING)
        except Exception as error:
            outcomes[name] = error

    threads = [threading.Thread(target=withdraw, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_owners_deleted_together_leave_no_rule_when_reads_lag(
    world: World, groups: list[str], lagging: LaggingTagsProxy
) -> None:
    co_owned_by(world, groups, ("alpha", "bravo"))
    assert len(mesh_rules(world, groups)) == 4

    outcomes = withdraw_together(lagging, ("alpha", "bravo"))

    for name, outcome in outcomes.items():
        assert isinstance(outcome, reconcile.Outcome), (name, outcome)
        assert outcome.failures == [], (name, outcome.failures)
    assert lagging.stale_answers > 0, "the proxy should have served tags older than moto's"
    assert mesh_rules(world, groups) == []


def test_a_release_keeps_the_rule_another_mesh_still_holds_when_reads_lag(
    world: World, groups: list[str], lagging: LaggingTagsProxy
) -> None:
    co_owned_by(world, groups, ("alpha", "bravo"))

    [outcome] = withdraw_together(lagging, ("alpha",)).values()

    assert isinstance(outcome, reconcile.Outcome)
    assert outcome.failures == []
    rules = mesh_rules(world, groups)
    assert len(rules) == 4
    for rule in rules:
        keys = {tag["Key"] for tag in rule.get("Tags", [])}  # type: ignore[attr-defined]
        assert keys == {owner("bravo").tag_key}


def test_a_release_no_read_confirms_is_a_retried_failure_never_a_decision(
    world: World, groups: list[str], lagging: LaggingTagsProxy
) -> None:
    co_owned_by(world, groups, ("alpha", "bravo"))
    lagging.lag_seconds = 600.0  # reads never catch up with the release
    impatient = apply.Settling(interval_seconds=0.1, attempts=3, confirm_seconds=0.1)

    outcome = reconcile.withdraw(lagging_clients(lagging), owner("alpha"), settling=impatient)

    [failure] = outcome.failures
    assert failure.failure.kind is errors.ErrorKind.CONCURRENT_CHANGE
    assert failure.failure.code == "ReleaseUnconfirmed"
    assert {action.kind for action in failure.actions} == {"untag-rule"}
    # Nothing was revoked on a stale read: bravo still holds every rule.
    assert len(mesh_rules(world, groups)) == 4
    assert not any(isinstance(action, planning.Revoke) for action in outcome.applied.done)  # type: ignore[union-attr]

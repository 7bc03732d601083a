"""Several meshes acting on the same rules at once, against the moto server with AWS's rule
semantics: each mesh reads AWS first, then they all write — the interleaving that leaves rules
open with no owner when a decision taken at discovery is not re-checked after the write.
"""

from __future__ import annotations

from typing import Any

from devtools.aws.world import NodeGroup, World
from sgmesh.api import models
from sgmesh.aws import apply, client, discovery, reconcile
from sgmesh.engine import ownership, planning

SETTINGS = reconcile.Settings(cluster="default")
MESH_NAMES = ("alpha", "bravo", "charlie", "delta")


def mesh(name: str, asg_names: tuple[str, ...] = ("eks-a", "eks-b")) -> models.NodeGroupMesh:
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": name},
            "spec": {
                "region": "us-east-1",
                "autoScalingGroups": {"names": list(asg_names)},
                "cniPolicy": {"attach": False},
            },
        },
        name,
    )


def owner(name: str) -> ownership.Owner:
    return ownership.Owner(SETTINGS.cluster, name)


def stale_plan(clients: client.AwsClients, name: str) -> planning.Plan:
    """What mesh `name` decides from what AWS holds now, to be applied after others wrote."""
    intent = planning.Intent.from_spec(mesh(name).spec, owner(name), clients.region)
    return planning.plan(discovery.discover(clients, intent), intent)


def stale_withdrawal(clients: client.AwsClients, name: str) -> planning.Plan:
    topology = discovery.discover_owned(clients, owner(name))
    return planning.plan(
        topology,
        planning.Intent(owner=owner(name), traffic=(), attach_cni=False, policy_arn=""),
    )


def mesh_rules(world: World, groups: list[NodeGroup]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in world.describe_ingress(group.security_group_id)]


def owners_of(rule: dict[str, Any]) -> set[str]:
    return {tag["Key"] for tag in rule.get("Tags", []) if tag["Key"].startswith("sgmesh.io/")}


def test_mesh_that_loses_the_race_to_create_a_rule_co_owns_it(
    world: World, clients: client.AwsClients
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    late = stale_plan(clients, "bravo")  # bravo read AWS before alpha wrote
    reconcile.converge(clients, mesh("alpha"), SETTINGS)

    result = apply.apply(clients, late, owner("bravo"))

    assert result.ok, result.failures
    rules = mesh_rules(world, groups)
    assert len(rules) == 4  # no duplicate rule was created
    for rule in rules:
        assert owners_of(rule) == {owner("alpha").tag_key, owner("bravo").tag_key}
    again = reconcile.converge(clients, mesh("bravo"), SETTINGS, write=False)
    assert again.plan.empty
    assert again.rules() == models.RuleCounts(desired=4, present=4, owned=4)


def test_loser_of_the_race_counts_only_rules_carrying_its_tag_as_owned(
    world: World, clients: client.AwsClients
) -> None:
    a, b = world.node_group("eks-a"), world.node_group("eks-b")
    late = stale_plan(clients, "bravo")
    # Somebody (not a mesh) made one of the rules in the meantime: it satisfies bravo, but it is
    # not bravo's, and bravo must neither tag it nor count it as owned.
    world.ingress_from_group(a.security_group_id, b.security_group_id, description="by hand")
    outcome = reconcile.Outcome(
        owner("bravo"),
        discovery.discover(
            clients, planning.Intent.from_spec(mesh("bravo").spec, owner("bravo"), clients.region)
        ),
        late,
        None,
    )

    result = apply.apply(clients, late, owner("bravo"))
    counted = reconcile.Outcome(outcome.owner, outcome.topology, late, result).rules()

    assert result.ok, result.failures
    hand_made = [r for r in mesh_rules(world, [a]) if r.get("Description") == "by hand"]
    assert len(hand_made) == 1
    assert owners_of(hand_made[0]) == set()
    assert counted == models.RuleCounts(desired=4, present=4, owned=3)


def test_owners_deleted_together_leave_no_rule_behind(
    world: World, clients: client.AwsClients
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    for name in MESH_NAMES:
        reconcile.converge(clients, mesh(name), SETTINGS)
    assert all(len(owners_of(rule)) == 4 for rule in mesh_rules(world, groups))

    # All four are deleted at the same moment: each sees the other three as owners.
    withdrawals = {name: stale_withdrawal(clients, name) for name in MESH_NAMES}
    assert all(
        {action.kind for action in plan.actions} == {"untag-rule"} for plan in withdrawals.values()
    )
    for name, plan in withdrawals.items():
        assert apply.apply(clients, plan, owner(name)).ok

    assert mesh_rules(world, groups) == []


def test_a_revoke_decided_alone_is_a_release_when_another_mesh_joined_since(
    world: World, clients: client.AwsClients
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    reconcile.converge(clients, mesh("alpha"), SETTINGS)
    leaving = stale_withdrawal(clients, "alpha")  # alpha alone owns the rules: revoke them
    assert {action.kind for action in leaving.actions} == {"revoke"}
    reconcile.converge(clients, mesh("bravo"), SETTINGS)  # bravo joins the owners meanwhile

    assert apply.apply(clients, leaving, owner("alpha")).ok

    rules = mesh_rules(world, groups)
    assert len(rules) == 4
    assert all(owners_of(rule) == {owner("bravo").tag_key} for rule in rules)


def test_a_tag_removed_by_hand_is_restored(world: World, clients: client.AwsClients) -> None:
    a = world.node_group("eks-a")
    world.node_group("eks-b")
    reconcile.converge(clients, mesh("alpha"), SETTINGS)
    rule = world.describe_ingress(a.security_group_id)[0]
    world.clients.ec2.delete_tags(
        Resources=[rule["SecurityGroupRuleId"]], Tags=[{"Key": owner("alpha").tag_key}]
    )

    outcome = reconcile.converge(clients, mesh("alpha"), SETTINGS)

    assert [action.kind for action in outcome.plan.actions] == ["tag-rule"]
    restored = {r["SecurityGroupRuleId"]: r for r in world.describe_ingress(a.security_group_id)}
    assert owners_of(restored[rule["SecurityGroupRuleId"]]) == {owner("alpha").tag_key}


def test_an_orphan_left_when_its_mesh_shrank_is_revoked(
    world: World, clients: client.AwsClients
) -> None:
    a, b = world.node_group("eks-a"), world.node_group("eks-b")
    reconcile.converge(clients, mesh("alpha"), SETTINGS)
    from_b = next(
        rule
        for rule in world.describe_ingress(a.security_group_id)
        if rule["ReferencedGroupInfo"]["GroupId"] == b.security_group_id
    )
    world.clients.ec2.delete_tags(
        Resources=[from_b["SecurityGroupRuleId"]], Tags=[{"Key": owner("alpha").tag_key}]
    )

    reconcile.converge(clients, mesh("alpha", ("eks-a",)), SETTINGS)

    sources = [
        r["ReferencedGroupInfo"]["GroupId"] for r in world.describe_ingress(a.security_group_id)
    ]
    assert sources == [a.security_group_id]


def test_a_rule_gone_from_a_tag_batch_does_not_fail_the_others(
    world: World, clients: client.AwsClients
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    reconcile.converge(clients, mesh("alpha"), SETTINGS)
    joining = stale_plan(clients, "bravo")  # bravo will co-own alpha's four rules
    assert [action.kind for action in joining.actions] == ["tag-rule"] * 4
    gone = joining.actions[0]
    assert isinstance(gone, planning.TagRule)
    world.clients.ec2.revoke_security_group_ingress(
        GroupId=gone.group_id, SecurityGroupRuleIds=[gone.rule_id]
    )

    result = apply.apply(clients, joining, owner("bravo"))

    assert [failure.actions for failure in result.failures] == [(gone,)]
    assert result.failures[0].failure.retryable
    assert sorted(
        action.rule_id for action in result.done if isinstance(action, planning.TagRule)
    ) == sorted(
        action.rule_id for action in joining.actions[1:] if isinstance(action, planning.TagRule)
    )
    assert all(len(owners_of(rule)) == 2 for rule in mesh_rules(world, groups))

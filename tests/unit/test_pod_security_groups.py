"""SecurityGroupPolicies as members: what each contributes, how the spec's references select
them ("namespace/name", "namespace/*", "*"), what stands in the way, and which meshes a change
to one nudges."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import kopf

from sgmesh.api import models
from sgmesh.controller import nudges, watches
from sgmesh.engine import cluster_members
from sgmesh.engine.cluster_members import ClusterMember, ClusterObjects, Listing
from sgmesh.engine.topology import HOLDING_PROBLEMS, MemberKind, ProblemKind
from tests.unit.fake_clock import FakeClock

SG_A = "sg-0aaaaaaaaaaaaaaaa"
SG_B = "sg-0bbbbbbbbbbbbbbbb"
SG_C = "sg-0cccccccccccccccc"
POLICIES = cluster_members.SECURITY_GROUP_POLICY


def spec(*policies: str) -> models.NodeGroupMeshSpec:
    return models.NodeGroupMeshSpec.model_validate(
        {"podSecurityGroups": {"policies": list(policies)}}
    )


def policy(namespace: str, name: str, groups: Any, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": name}},
            "securityGroups": {"groupIds": groups},
            **extra,
        },
    }


def listing(*bodies: dict[str, Any]) -> Listing:
    return Listing(
        installed=True,
        objects={f"{b['metadata']['namespace']}/{b['metadata']['name']}": b for b in bodies},
    )


def resolve(
    mesh: models.NodeGroupMeshSpec,
    policies: Listing | None,
    last: tuple[ClusterMember, ...] = (),
) -> cluster_members.ClusterMembers:
    return cluster_members.resolve(mesh, ClusterObjects(security_group_policies=policies), last)


def status(*members: tuple[str, list[str]], generation: int = 1) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "members": [
            {"kind": "SecurityGroupPolicy", "name": name, "securityGroupIds": groups}
            for name, groups in members
        ],
    }


def test_a_policy_brings_its_group_ids_and_no_role() -> None:
    found = resolve(
        spec("payments/db-clients"), listing(policy("payments", "db-clients", [SG_A, SG_B]))
    )

    assert found.problems == ()
    [member] = found.members
    assert member.kind is MemberKind.SECURITY_GROUP_POLICY
    assert member.name == "payments/db-clients"
    assert member.title == "SecurityGroupPolicy payments/db-clients"
    assert member.security_group_ids == (SG_A, SG_B)
    assert member.role_names == member.instance_profile_names == ()
    assert member.unresolved_groups == member.unresolved_role == ()


def test_a_group_id_that_is_no_security_group_id_is_named() -> None:
    member = cluster_members.member(POLICIES, "a/b", policy("a", "b", [SG_A, "default"]))

    assert member.security_group_ids == (SG_A,)
    assert member.unresolved_groups == (
        "SecurityGroupPolicy a/b: spec.securityGroups.groupIds holds 'default', which is not a "
        "security group id",
    )


def test_a_namespace_star_selects_every_policy_of_that_namespace_only() -> None:
    found = resolve(
        spec("dns/*", "payments/db-clients"),
        listing(
            policy("dns", "resolvers", [SG_B]),
            policy("dns", "coredns", [SG_A]),
            policy("payments", "db-clients", [SG_C]),
            policy("payments", "other", [SG_A]),
            policy("dnsx", "lookalike", [SG_A]),
        ),
    )

    assert [m.name for m in found.members] == [
        "dns/coredns",
        "dns/resolvers",
        "payments/db-clients",
    ]
    assert found.problems == ()


def test_star_selects_every_policy_of_the_cluster() -> None:
    found = resolve(spec("*"), listing(policy("b", "x", [SG_B]), policy("a", "y", [SG_A])))

    assert [m.name for m in found.members] == ["a/y", "b/x"]
    assert found.problems == ()


def test_a_named_policy_that_does_not_exist_holds_removals_and_the_rest_converges() -> None:
    found = resolve(
        spec("payments/db-clients", "payments/missing"),
        listing(policy("payments", "db-clients", [SG_A])),
    )

    assert [m.name for m in found.members] == ["payments/db-clients"]
    [problem] = found.problems
    assert problem.kind is ProblemKind.SECURITY_GROUP_POLICY_NOT_FOUND
    assert problem.kind in HOLDING_PROBLEMS
    assert problem.subject == "payments/missing"
    assert "SecurityGroupPolicy payments/missing" in problem.message
    assert "spec.podSecurityGroups.policies" in problem.message


def test_an_empty_namespace_star_is_no_member_and_no_problem() -> None:
    found = resolve(spec("empty/*"), listing(policy("other", "x", [SG_A])))

    assert found.members == ()
    assert found.problems == ()


def test_the_crd_not_served_is_a_holding_problem_naming_it() -> None:
    found = resolve(spec("payments/db-clients"), Listing(installed=False))

    [problem] = found.problems
    assert problem.kind is ProblemKind.SOURCE_NOT_INSTALLED
    assert "securitygrouppolicies.vpcresources.k8s.aws/v1beta1" in problem.message
    assert "spec.podSecurityGroups.policies" in problem.message


def test_a_policy_gone_under_star_stays_a_member_as_it_last_was() -> None:
    last = cluster_members.last_members(status(("dns/coredns", [SG_A])), 1)

    found = resolve(spec("*"), listing(), last)

    [member] = found.members
    assert (member.kind, member.name, member.security_group_ids) == (
        MemberKind.SECURITY_GROUP_POLICY,
        "dns/coredns",
        (SG_A,),
    )
    [problem] = found.problems
    assert problem.kind is ProblemKind.SECURITY_GROUP_POLICY_NOT_FOUND
    assert "was a member at the last reconcile" in problem.message
    assert SG_A in problem.message


def test_a_policy_gone_under_its_namespace_star_is_remembered_and_others_are_not() -> None:
    last = cluster_members.last_members(status(("dns/coredns", [SG_A]), ("payments/db", [SG_B])), 1)

    found = resolve(spec("dns/*"), listing(), last)

    assert [m.name for m in found.members] == ["dns/coredns"]
    assert [p.subject for p in found.problems] == ["dns/coredns"]


def test_a_spec_changed_since_lets_the_memory_go() -> None:
    assert cluster_members.last_members(status(("dns/coredns", [SG_A])), 2) == ()


def test_references_select_by_name_namespace_or_star() -> None:
    assert cluster_members.selects(["dns/*"], "dns/coredns")
    assert cluster_members.selects(["*"], "dns/coredns")
    assert cluster_members.selects(["a/b"], "a/b")
    assert not cluster_members.selects(["dns/*"], "dnsx/coredns")
    assert not cluster_members.selects(["a/b"], "a/c")
    # Cluster-scoped names hold no namespace.
    assert not cluster_members.selects(["x/*"], "x")


def test_a_policy_concerns_the_meshes_listing_it_its_namespace_or_every_one() -> None:
    meshes = nudges.MeshIndex()
    for name, policies in (
        ("named", ["dns/coredns"]),
        ("namespace", ["dns/*"]),
        ("every", ["*"]),
        ("other", ["payments/*"]),
    ):
        meshes.update(
            {"metadata": {"name": name}, "spec": {"podSecurityGroups": {"policies": policies}}}
        )
    meshes.update(
        {"metadata": {"name": "eni"}, "spec": {"customNetworking": {"eniConfigs": ["*"]}}}
    )

    assert meshes.naming(POLICIES, "dns/coredns") == ["every", "named", "namespace"]
    assert meshes.naming(POLICIES) == ["every", "named", "namespace", "other"]


def test_a_change_to_a_policys_groups_nudges_and_any_other_change_does_not() -> None:
    clock = FakeClock()
    nudged: list[frozenset[str]] = []

    async def scenario() -> None:
        async def nudge(names: frozenset[str]) -> None:
            nudged.append(names)

        meshes = nudges.MeshIndex()
        meshes.update(
            {"metadata": {"name": "dns"}, "spec": {"podSecurityGroups": {"policies": ["dns/*"]}}}
        )
        memo = kopf.Memo()
        memo.watching = watches.Watching(
            meshes=meshes,
            nodes=nudges.Debounce(nudge, 0, clock=clock),
            sources=nudges.Debounce(nudge, 0, clock=clock),
        )

        async def event(type: str, body: dict[str, Any], namespace: str = "dns") -> None:
            # As kopf calls it, with the arguments it uses (kopf types its handlers as taking
            # every argument kopf can give).
            handler = cast(Callable[..., Awaitable[None]], watches.security_group_policy_changed)
            await handler(body=body, type=type, name="coredns", namespace=namespace, memo=memo)
            await clock.advance(1)

        await event("ADDED", policy("dns", "coredns", [SG_A]))
        labelled = policy("dns", "coredns", [SG_A])
        labelled["spec"]["podSelector"] = {"matchLabels": {"k8s-app": "kube-dns"}}
        await event("MODIFIED", labelled)
        await event("MODIFIED", policy("dns", "coredns", [SG_A, SG_B]))
        await event("ADDED", policy("payments", "coredns", [SG_C]), namespace="payments")
        await event("DELETED", policy("dns", "coredns", [SG_A, SG_B]))

    asyncio.run(scenario())

    assert nudged == [frozenset({"dns"})] * 3

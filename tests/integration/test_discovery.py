"""Discovery against a moto server over HTTP: every way an ASG names its SGs and role, the
selectors, what is reported when something is missing, and how many calls it takes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import botocore.exceptions
import botocore.session
import pytest

from devtools.aws.moto_server import free_port
from devtools.aws.world import CNI_POLICY_ARN, Mixed, Override, World
from sgmesh.api import models
from sgmesh.aws import client, discovery, errors
from sgmesh.engine import ownership, planning, topology
from sgmesh.engine.ingress import Permission
from sgmesh.engine.topology import MemberKind, ProblemKind
from tests.support.fault_proxy import ThrottlingProxy

OWNER = ownership.Owner("test-cluster", "mesh")


def discover(clients: client.AwsClients, mesh_spec: models.NodeGroupMeshSpec) -> topology.Topology:
    """What discovery finds for a mesh of OWNER's with this spec."""
    return discovery.discover(clients, planning.Intent.from_spec(mesh_spec, OWNER, clients.region))


IAM_OPERATIONS = frozenset(botocore.session.get_session().get_service_model("iam").operation_names)
OTHER_OWNER = ownership.Owner("test-cluster", "other-mesh")


def spec(
    names: Sequence[str] = (),
    selectors: Sequence[dict[str, Any]] = (),
    extra_security_group_ids: Sequence[str] = (),
) -> models.NodeGroupMeshSpec:
    return models.NodeGroupMeshSpec.model_validate(
        {
            "autoScalingGroups": {"names": list(names), "selectors": list(selectors)},
            "extraSecurityGroupIds": list(extra_security_group_ids),
        }
    )


def member(found: topology.Topology, name: str) -> topology.Member:
    matches = [m for m in found.members if m.name == name]
    assert matches, f"{name} is not a member; members: {[m.name for m in found.members]}"
    return matches[0]


def problems(found: topology.Topology, kind: ProblemKind) -> list[topology.Problem]:
    return [problem for problem in found.problems if problem.kind is kind]


def names_of(found: topology.Topology) -> list[str]:
    return [m.name for m in found.members]


# ---- launch templates ------------------------------------------------------------------------


def test_template_by_id_at_latest_uses_the_newest_version(world: World, clients: client.AwsClients):
    old, new = world.security_group("old"), world.security_group("new")
    profile = world.role_with_profile("nodes")
    template = world.launch_template("nodes-lt", security_group_ids=[old], profile_arn=profile.arn)
    world.launch_template_version(template, security_group_ids=[new], profile_arn=profile.arn)
    world.asg("asg", launch_template=template, version="$Latest")

    found = discover(clients, spec(["asg"]))

    assert found.members == (topology.Member("asg", (new,), ("nodes",), world.main_vpc.id),)
    assert found.problems == ()
    assert found.security_group_vpcs == {new: world.main_vpc.id}


def test_template_by_name_without_version_uses_the_default_version(
    world: World, clients: client.AwsClients
):
    default, latest = world.security_group("default-v"), world.security_group("latest-v")
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", security_group_ids=[default], profile_arn=profile.arn
    )
    world.launch_template_version(template, security_group_ids=[latest], profile_arn=profile.arn)
    world.asg("implicit", launch_template=template, by="name")
    world.asg("explicit", launch_template=template, version="$Default", by="name")

    found = discover(clients, spec(["implicit", "explicit"]))

    assert member(found, "implicit").security_group_ids == (default,)
    assert member(found, "explicit").security_group_ids == (default,)
    assert found.problems == ()


def test_default_version_moved_by_the_owner_of_the_template_is_followed(
    world: World, clients: client.AwsClients
):
    first, second = world.security_group("first"), world.security_group("second")
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", security_group_ids=[first], profile_arn=profile.arn
    )
    world.launch_template_version(
        template, security_group_ids=[second], profile_arn=profile.arn, make_default=True
    )
    world.launch_template_version(template, security_group_ids=[first], profile_arn=profile.arn)
    other = world.node_group("other")  # a second template: the bulk listing is used
    world.asg("asg", launch_template=template, version="$Default")

    found = discover(clients, spec(["asg", other.asg]))

    assert member(found, "asg").security_group_ids == (second,)


def test_numbered_version_is_read_though_it_is_neither_latest_nor_default(
    world: World, clients: client.AwsClients
):
    pinned, newer = world.security_group("pinned"), world.security_group("newer")
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", security_group_ids=[pinned], profile_arn=profile.arn
    )
    world.launch_template_version(
        template, security_group_ids=[newer], profile_arn=profile.arn, make_default=True
    )
    world.launch_template_version(template, security_group_ids=[newer], profile_arn=profile.arn)
    world.asg("asg", launch_template=template, version="1")
    others = [world.node_group(name).asg for name in ("other-a", "other-b")]

    found = discover(clients, spec(["asg", *others]))

    assert member(found, "asg").security_group_ids == (pinned,)
    assert found.problems == ()
    # The listing of every template's default version, then the pinned version by itself.
    assert clients.calls["DescribeLaunchTemplateVersions"] == 2


def test_security_group_names_in_a_template_resolve_to_ids(
    world: World, clients: client.AwsClients
):
    by_name = world.security_group("named-nodes")
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", security_group_names=["named-nodes"], profile_name=profile.name
    )
    world.asg("asg", launch_template=template)

    found = discover(clients, spec(["asg"]))

    assert member(found, "asg").security_group_ids == (by_name,)
    assert found.security_group_vpcs == {by_name: world.main_vpc.id}
    assert found.problems == ()


def test_a_group_name_found_in_several_vpcs_is_taken_from_the_asgs_vpc(
    world: World, clients: client.AwsClients
):
    world.security_group("shared-name")  # in the main VPC
    elsewhere = world.vpc()
    wanted = world.security_group("shared-name", vpc=elsewhere)
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", security_group_names=["shared-name"], profile_arn=profile.arn
    )
    world.asg("asg", launch_template=template, vpc=elsewhere)

    found = discover(clients, spec(["asg"]))

    assert member(found, "asg").security_group_ids == (wanted,)
    assert member(found, "asg").vpc_id == elsewhere.id


def test_groups_of_every_network_interface_are_member_groups(
    world: World, clients: client.AwsClients
):
    primary, secondary, pods = (world.security_group(n) for n in ("primary", "second", "pods"))
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", interface_groups=[[primary, pods], [secondary]], profile_arn=profile.arn
    )
    world.asg("asg", launch_template=template)

    found = discover(clients, spec(["asg"]))

    assert member(found, "asg").security_group_ids == tuple(sorted([primary, secondary, pods]))


@pytest.mark.parametrize("reference", ["arn", "name"])
def test_instance_profile_by_arn_or_name_resolves_to_its_role(
    world: World, clients: client.AwsClients, reference: str
):
    group = world.security_group("nodes")
    profile = world.role_with_profile("node-role", profile_name="node-profile", path="/eks/")
    template = world.launch_template(
        "lt",
        security_group_ids=[group],
        profile_arn=profile.arn if reference == "arn" else None,
        profile_name=profile.name if reference == "name" else None,
    )
    world.asg("asg", launch_template=template)

    found = discover(clients, spec(["asg"]))

    assert member(found, "asg").role_names == ("node-role",)
    assert found.roles["node-role"] == topology.RoleState("node-role", frozenset(), {})


def test_mixed_instances_policy_joins_the_groups_of_every_override_template(
    world: World, clients: client.AwsClients
):
    base_group, arm_group = world.security_group("base"), world.security_group("arm")
    base_profile = world.role_with_profile("base-role")
    arm_profile = world.role_with_profile("arm-role")
    base = world.launch_template(
        "base", security_group_ids=[base_group], profile_arn=base_profile.arn
    )
    arm = world.launch_template(
        "arm", security_group_ids=[arm_group], profile_name=arm_profile.name
    )
    world.asg(
        "asg",
        mixed=Mixed(
            base,
            version="$Latest",
            overrides=(
                Override("m5.large"),
                Override("m6g.large", template=arm, version="1", by_name=True),
            ),
        ),
    )

    found = discover(clients, spec(["asg"]))

    assert member(found, "asg").security_group_ids == tuple(sorted([base_group, arm_group]))
    assert member(found, "asg").role_names == ("arm-role", "base-role")
    assert found.problems == ()


# ---- launch configurations -------------------------------------------------------------------


def test_launch_configuration_groups_by_id_and_name_and_profile_by_name(
    world: World, clients: client.AwsClients
):
    by_id, by_name = world.security_group("by-id"), world.security_group("by-name")
    profile = world.role_with_profile("legacy-role", profile_name="legacy-profile")
    world.launch_configuration("lc", security_groups=[by_id, "by-name"], profile=profile.name)
    world.asg("asg", launch_configuration="lc")

    found = discover(clients, spec(["asg"]))

    assert member(found, "asg") == topology.Member(
        "asg", tuple(sorted([by_id, by_name])), ("legacy-role",), world.main_vpc.id
    )
    assert found.problems == ()


def test_launch_configuration_profile_by_arn_resolves_to_its_role(
    world: World, clients: client.AwsClients
):
    group = world.security_group("nodes")
    profile = world.role_with_profile("legacy-role", path="/legacy/")
    world.launch_configuration("lc", security_groups=[group], profile=profile.arn)
    world.asg("asg", launch_configuration="lc")

    found = discover(clients, spec(["asg"]))

    assert member(found, "asg").role_names == ("legacy-role",)


# ---- selectors -------------------------------------------------------------------------------


def _tagged_groups(world: World) -> None:
    world.node_group("blue-a", tags={"team": "blue", "mesh": "yes"})
    world.node_group("blue-b", tags={"team": "blue"})
    world.node_group("red-a", tags={"team": "red", "mesh": "no"})
    world.node_group("untagged")


def test_selector_with_tag_values_needs_every_tag(world: World, clients: client.AwsClients):
    _tagged_groups(world)

    found = discovery.discover(
        clients,
        planning.Intent.from_spec(
            spec(selectors=[{"tags": {"team": "blue", "mesh": "yes"}}]), OWNER, clients.region
        ),
    )

    assert names_of(found) == ["blue-a"]


def test_selector_star_value_means_the_key_is_present(world: World, clients: client.AwsClients):
    _tagged_groups(world)

    found = discover(clients, spec(selectors=[{"tags": {"mesh": "*"}}]))

    assert names_of(found) == ["blue-a", "red-a"]


def test_selector_name_prefix_narrows_the_tag_match(world: World, clients: client.AwsClients):
    _tagged_groups(world)

    tagged_and_prefixed = discovery.discover(
        clients,
        planning.Intent.from_spec(
            spec(selectors=[{"tags": {"team": "*"}, "namePrefix": "blue-"}]), OWNER, clients.region
        ),
    )
    prefix_only = discover(clients, spec(selectors=[{"namePrefix": "red"}]))

    assert names_of(tagged_and_prefixed) == ["blue-a", "blue-b"]
    assert names_of(prefix_only) == ["red-a"]


def test_an_asg_joins_when_it_matches_any_selector(world: World, clients: client.AwsClients):
    _tagged_groups(world)

    found = discovery.discover(
        clients,
        planning.Intent.from_spec(
            spec(selectors=[{"tags": {"team": "red"}}, {"tags": {"mesh": "yes"}}]),
            OWNER,
            clients.region,
        ),
    )

    assert names_of(found) == ["blue-a", "red-a"]


@pytest.mark.parametrize(
    "selector", [{"tags": {"team": "red"}}, {"namePrefix": "red"}], ids=["tags", "prefix"]
)
def test_names_and_selectors_together_give_the_union(
    world: World, clients: client.AwsClients, selector: dict[str, Any]
):
    _tagged_groups(world)

    found = discover(clients, spec(["untagged", "red-a"], [selector]))

    assert names_of(found) == ["red-a", "untagged"]
    assert found.problems == ()


def test_missing_named_asg_is_a_problem_and_the_others_are_still_members(
    world: World, clients: client.AwsClients
):
    present = world.node_group("present")

    found = discover(clients, spec(["present", "gone"]))

    assert names_of(found) == ["present"]
    assert member(found, "present").security_group_ids == (present.security_group_id,)
    (problem,) = found.problems
    assert problem.kind is ProblemKind.AUTO_SCALING_GROUP_NOT_FOUND
    assert problem.subject == "gone"
    assert "gone" in problem.message
    assert found.complete


# ---- extra security groups -------------------------------------------------------------------


def test_extra_groups_are_members_and_a_missing_one_is_reported(
    world: World, clients: client.AwsClients
):
    nodes = world.node_group("nodes")
    extra = world.security_group("extra")
    missing = "sg-0123456789abcdef0"

    found = discovery.discover(
        clients,
        planning.Intent.from_spec(
            spec(["nodes"], extra_security_group_ids=[extra, missing]), OWNER, clients.region
        ),
    )

    assert member(found, extra) == topology.Member(
        extra, (extra,), vpc_id=world.main_vpc.id, kind=MemberKind.SECURITY_GROUP
    )
    assert member(found, missing).vpc_id is None
    assert found.security_group_vpcs == {
        nodes.security_group_id: world.main_vpc.id,
        extra: world.main_vpc.id,
    }
    assert found.counted_group_ids == {nodes.security_group_id, extra}
    (problem,) = found.problems
    assert (problem.kind, problem.subject) == (ProblemKind.SECURITY_GROUP_NOT_FOUND, missing)
    assert found.complete


def test_a_group_id_in_a_template_that_does_not_exist_is_reported(
    world: World, clients: client.AwsClients
):
    group = world.security_group("kept")
    doomed = world.security_group("doomed")
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", security_group_ids=[group, doomed], profile_arn=profile.arn
    )
    world.asg("asg", launch_template=template)
    world.delete_security_group(doomed)

    found = discover(clients, spec(["asg"]))

    assert member(found, "asg").security_group_ids == tuple(sorted([group, doomed]))
    assert found.security_group_vpcs == {group: world.main_vpc.id}
    assert [(p.kind, p.subject) for p in found.problems] == [
        (ProblemKind.SECURITY_GROUP_NOT_FOUND, doomed)
    ]
    assert "asg" in found.problems[0].message


# ---- rules -----------------------------------------------------------------------------------


def test_inbound_rules_of_member_groups_are_read_and_normalised(
    world: World, clients: client.AwsClients
):
    nodes = world.node_group("nodes")
    other = world.security_group("other")
    sg = nodes.security_group_id
    everything = world.ingress_from_group(sg, other, protocol="-1")
    dns = world.ingress_from_group(sg, sg, protocol="udp", from_port=53, to_port=53)
    by_number = world.ingress_from_group(sg, other, protocol="6", from_port=10, to_port=20)
    ping = world.ingress_from_group(sg, sg, protocol="icmp", from_port=-1, to_port=-1)
    cidr = world.ingress_from_cidr(sg, "10.0.0.0/8")

    found = discover(clients, spec(["nodes"]))

    permissions = {rule.rule_id: rule.permission for rule in found.ingress_rules}
    assert permissions == {
        everything: Permission(other, "-1", -1, -1),
        dns: Permission(sg, "udp", 53, 53),
        by_number: Permission(other, "tcp", 10, 20),
        ping: Permission(sg, "icmp", -1, -1),
        cidr: None,
    }
    assert {rule.group_id for rule in found.ingress_rules} == {sg}
    assert found.counted_group_ids == {sg}


def test_rules_owned_by_the_mesh_are_found_on_groups_that_left_it(
    world: World, clients: client.AwsClients
):
    world.node_group("nodes")
    former = world.security_group("former-member")
    owned = world.ingress_from_group(
        former, former, tags={OWNER.tag_key: ownership.OWNED}, description="mesh rule"
    )
    world.ingress_from_group(former, former, protocol="tcp", from_port=22, to_port=22)
    world.ingress_from_group(
        former,
        former,
        protocol="tcp",
        from_port=443,
        to_port=443,
        tags={OTHER_OWNER.tag_key: ownership.OWNED},
    )

    found = discover(clients, spec(["nodes"]))

    (rule,) = [rule for rule in found.ingress_rules if rule.group_id == former]
    assert rule.rule_id == owned
    assert rule.tags == {OWNER.tag_key: ownership.OWNED}
    assert rule.permission == Permission(former, "-1", -1, -1)
    assert former not in found.counted_group_ids


def test_an_owned_rule_on_a_member_group_is_listed_once(world: World, clients: client.AwsClients):
    nodes = world.node_group("nodes")
    sg = nodes.security_group_id
    owned = world.ingress_from_group(sg, sg, tags={OWNER.tag_key: ownership.OWNED})

    found = discover(clients, spec(["nodes"]))

    assert [rule.rule_id for rule in found.ingress_rules] == [owned]


# ---- roles -----------------------------------------------------------------------------------


def test_member_roles_carry_their_policies_and_tags(world: World, clients: client.AwsClients):
    world.node_group(
        "nodes", role_tags={OTHER_OWNER.tag_key: CNI_POLICY_ARN}, policy_arns=[CNI_POLICY_ARN]
    )

    found = discover(clients, spec(["nodes"]))

    assert found.roles == {
        "nodes": topology.RoleState(
            "nodes", frozenset({CNI_POLICY_ARN}), {OTHER_OWNER.tag_key: CNI_POLICY_ARN}
        )
    }


def test_a_role_the_mesh_tagged_is_found_though_no_member_uses_it(
    world: World, clients: client.AwsClients
):
    world.node_group("nodes")
    world.role("former-nodes", tags={OWNER.tag_key: CNI_POLICY_ARN}, policy_arns=[CNI_POLICY_ARN])
    world.role("unrelated", tags={OTHER_OWNER.tag_key: CNI_POLICY_ARN})

    found = discover(clients, spec(["nodes"]))

    assert sorted(found.roles) == ["former-nodes", "nodes"]
    assert found.roles["former-nodes"].attached_policy_arns == {CNI_POLICY_ARN}
    assert found.member_role_names == ("nodes",)


# ---- what cannot be resolved -----------------------------------------------------------------


def test_a_deleted_launch_template_leaves_the_asg_unresolved_and_not_a_member(
    world: World, clients: client.AwsClients
):
    kept = world.node_group("kept")
    lost = world.node_group("lost")
    world.delete_launch_template(lost.template)

    found = discover(clients, spec(["kept", "lost"]))

    assert names_of(found) == ["kept"]
    (problem,) = found.problems
    assert (problem.kind, problem.subject) == (ProblemKind.UNRESOLVED, "lost")
    assert lost.template.id in problem.message
    assert not found.complete
    assert kept.security_group_id in found.counted_group_ids


def test_a_deleted_override_template_keeps_what_the_others_resolved(
    world: World, clients: client.AwsClients
):
    base_group, gone_group = world.security_group("base"), world.security_group("gone")
    profile = world.role_with_profile("nodes")
    base = world.launch_template("base", security_group_ids=[base_group], profile_arn=profile.arn)
    gone = world.launch_template("gone", security_group_ids=[gone_group], profile_arn=profile.arn)
    world.asg("asg", mixed=Mixed(base, overrides=(Override(), Override(template=gone))))
    world.delete_launch_template(gone)

    found = discover(clients, spec(["asg"]))

    assert member(found, "asg").security_group_ids == (base_group,)
    assert member(found, "asg").role_names == ("nodes",)
    assert [(p.kind, p.subject) for p in found.problems] == [(ProblemKind.UNRESOLVED, "asg")]


def test_a_version_that_no_longer_exists_is_unresolved_and_the_others_still_resolve(
    world: World, clients: client.AwsClients
):
    first, second = world.security_group("first"), world.security_group("second")
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", security_group_ids=[first], profile_arn=profile.arn
    )
    world.launch_template_version(template, security_group_ids=[second], profile_arn=profile.arn)
    world.asg("on-two", launch_template=template, version="2")
    # AWS lets a version in use be deleted; an ASG pinned to version 9 is the same situation.
    world.asg("on-nine", launch_template=template, version="9")

    found = discover(clients, spec(["on-two", "on-nine"]))

    assert names_of(found) == ["on-two"]
    assert member(found, "on-two").security_group_ids == (second,)
    (problem,) = found.problems
    assert (problem.kind, problem.subject) == (ProblemKind.UNRESOLVED, "on-nine")
    assert "version 9" in problem.message


def test_a_missing_instance_profile_leaves_the_role_unresolved(
    world: World, clients: client.AwsClients
):
    group = world.security_group("nodes")
    template = world.launch_template(
        "nodes-lt", security_group_ids=[group], profile_name="no-such-profile"
    )
    world.asg("asg", launch_template=template)

    found = discover(clients, spec(["asg"]))

    assert member(found, "asg") == topology.Member("asg", (group,), (), world.main_vpc.id)
    (problem,) = found.problems
    assert (problem.kind, problem.subject) == (ProblemKind.UNRESOLVED, "asg")
    assert "no-such-profile" in problem.message


def test_a_profile_without_a_role_is_unresolved(world: World, clients: client.AwsClients):
    group = world.security_group("nodes")
    empty = world.instance_profile("empty-profile")
    template = world.launch_template("nodes-lt", security_group_ids=[group], profile_arn=empty.arn)
    world.asg("asg", launch_template=template)

    found = discover(clients, spec(["asg"]))

    (problem,) = problems(found, ProblemKind.UNRESOLVED)
    assert "empty-profile holds no role" in problem.message


def test_a_deleted_launch_configuration_leaves_the_asg_unresolved(
    world: World, clients: client.AwsClients
):
    group = world.security_group("nodes")
    world.launch_configuration("lc", security_groups=[group], profile="whatever")
    world.asg("asg", launch_configuration="lc")
    world.delete_launch_configuration("lc")  # AWS refuses while in use; moto allows it

    found = discover(clients, spec(["asg"]))

    assert names_of(found) == []
    (problem,) = found.problems
    assert (problem.kind, problem.subject) == (ProblemKind.UNRESOLVED, "asg")
    assert "launch configuration lc does not exist" in problem.message


def test_a_group_name_that_does_not_exist_is_reported(world: World, clients: client.AwsClients):
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", security_group_names=["never-made"], profile_arn=profile.arn
    )
    world.asg("asg", launch_template=template)

    found = discover(clients, spec(["asg"]))

    assert [(p.kind, p.subject) for p in found.problems] == [
        (ProblemKind.SECURITY_GROUP_NOT_FOUND, "never-made")
    ]


# ---- errors are never absence ----------------------------------------------------------------


# AWS's errors reach the client over HTTP from the fault proxy, in the service's own error shape
# (moto cannot be made to say them). One attempt per call: what is under test is discovery's
# reading of the error, not the client's retries (tests/integration/test_throttling.py).


@pytest.mark.parametrize(
    ("code", "status"), [("AccessDenied", 403), ("Throttling", 400), ("ServiceUnavailable", 503)]
)
def test_an_error_reading_a_profile_propagates_instead_of_meaning_absent(
    world: World, fault_proxy: ThrottlingProxy, code: str, status: int
):
    group = world.security_group("nodes")
    template = world.launch_template(
        "nodes-lt", security_group_ids=[group], profile_name="unlisted"
    )
    world.asg("asg", launch_template=template)
    fault_proxy.refuse["GetInstanceProfile"] = (code, status)
    clients = client.make_clients(max_attempts=1)

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        discover(clients, spec(["asg"]))

    assert errors.error_code(raised.value) == code
    assert fault_proxy.refused["GetInstanceProfile"] == 1


def test_an_error_reading_a_template_propagates_instead_of_meaning_absent(
    world: World, fault_proxy: ThrottlingProxy
):
    world.node_group("nodes")
    fault_proxy.refuse["DescribeLaunchTemplateVersions"] = ("RequestLimitExceeded", 503)
    clients = client.make_clients(max_attempts=1)

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        discover(clients, spec(["nodes"]))

    assert errors.error_code(raised.value) == "RequestLimitExceeded"
    assert errors.classify(raised.value).retryable


def test_an_unreachable_endpoint_propagates(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    unreachable = client.make_clients(max_attempts=1)

    with pytest.raises(botocore.exceptions.BotoCoreError):
        discovery.discover(
            unreachable, planning.Intent.from_spec(spec(["nodes"]), OWNER, unreachable.region)
        )


# ---- cleanup view ----------------------------------------------------------------------------


def test_discover_owned_finds_only_what_carries_the_mesh_tag(
    world: World, clients: client.AwsClients
):
    nodes = world.node_group(
        "nodes", role_tags={OWNER.tag_key: CNI_POLICY_ARN}, policy_arns=[CNI_POLICY_ARN]
    )
    sg = nodes.security_group_id
    owned = world.ingress_from_group(sg, sg, tags={OWNER.tag_key: ownership.OWNED})
    world.ingress_from_group(sg, sg, protocol="tcp", from_port=22, to_port=22)
    world.role(
        "someone-elses", tags={OTHER_OWNER.tag_key: CNI_POLICY_ARN}, policy_arns=[CNI_POLICY_ARN]
    )

    found = discovery.discover_owned(clients, OWNER)

    assert found.members == ()
    assert [rule.rule_id for rule in found.ingress_rules] == [owned]
    assert sorted(found.roles) == ["nodes"]
    assert found.problems == ()


# ---- batching --------------------------------------------------------------------------------


def _mixed_world(world: World, count: int) -> list[str]:
    """`count` node groups cycling through the ways an ASG can name its template, plus a
    legacy group; only their number changes between calls."""
    names = []
    shared = world.security_group("shared")
    for index in range(count):
        name = f"ng-{index:03d}"
        group = world.security_group(name)
        profile = world.role_with_profile(name)
        template = world.launch_template(
            name, security_group_ids=[group, shared], profile_arn=profile.arn
        )
        variant = index % 4
        if variant == 0:
            world.asg(name, launch_template=template, version="$Latest", tags={"mesh": "yes"})
        elif variant == 1:
            world.asg(name, launch_template=template, by="name", tags={"mesh": "yes"})
        elif variant == 2:
            world.asg(name, launch_template=template, version="1", tags={"mesh": "yes"})
        else:
            world.asg(name, mixed=Mixed(template, version="$Latest"), tags={"mesh": "yes"})
        world.ingress_from_group(group, shared, tags={OWNER.tag_key: ownership.OWNED})
        names.append(name)
    world.launch_configuration("legacy", security_groups=[shared], profile="ng-000")
    world.asg("legacy", launch_configuration="legacy", tags={"mesh": "yes"})
    return names


def _calls_to_discover(clients: client.AwsClients, mesh: models.NodeGroupMeshSpec) -> Counter[str]:
    clients.calls.clear()
    found = discovery.discover(clients, planning.Intent.from_spec(mesh, OWNER, clients.region))
    assert found.problems == ()
    return Counter(clients.calls)


def test_calls_per_discovery_do_not_grow_with_the_number_of_asgs(
    world: World, clients: client.AwsClients
):
    names = _mixed_world(world, 12)
    by_name = spec([*names, "legacy"])
    by_selector = spec(selectors=[{"tags": {"mesh": "yes"}}])
    small = (_calls_to_discover(clients, by_name), _calls_to_discover(clients, by_selector))

    for index in range(12, 36):
        world.node_group(f"ng-{index:03d}", tags={"mesh": "yes"})
        names.append(f"ng-{index:03d}")
    by_name = spec([*names, "legacy"])
    large = (_calls_to_discover(clients, by_name), _calls_to_discover(clients, by_selector))

    # One listing of every template at $Latest, one at $Default; the pinned "1" is also each
    # template's default version, so the listing has it.
    expected = Counter(
        {
            "DescribeAutoScalingGroups": 1,
            "DescribeLaunchTemplateVersions": 2,
            "DescribeLaunchConfigurations": 1,
            "DescribeSecurityGroups": 1,
            "DescribeSecurityGroupRules": 2,
            "DescribeInstances": 1,  # the SGs running instances carry, for every ASG
            "GetServiceQuota": 1,  # the mesh lacks rules: the applied quota is read
        }
    )
    assert [_without_iam(calls) for calls in (*small, *large)] == [expected] * 4
    # Without memory, IAM is read by name: one call per instance profile and one per role (its
    # tags), plus one listing of the CNI policy's roles, which says which roles hold it and
    # sweeps for roles the mesh tagged.
    for calls, roles in ((small, 12), (large, 36)):  # the legacy group shares ng-000's role
        assert [_iam_only(each) for each in calls] == [
            Counter(
                {"GetInstanceProfile": roles, "ListRoleTags": roles, "ListEntitiesForPolicy": 1}
            )
        ] * 2


def _iam_only(calls: Counter[str]) -> Counter[str]:
    return Counter({operation: n for operation, n in calls.items() if operation in IAM_OPERATIONS})


def _without_iam(calls: Counter[str]) -> Counter[str]:
    return Counter(
        {operation: n for operation, n in calls.items() if operation not in IAM_OPERATIONS}
    )


def test_asgs_pinned_to_version_numbers_are_resolved_from_one_listing(
    world: World, clients: client.AwsClients
):
    names = []
    for index in range(6):
        name = f"pinned-{index}"
        group = world.security_group(name)
        profile = world.role_with_profile(name)
        template = world.launch_template(name, security_group_ids=[group], profile_arn=profile.arn)
        world.asg(name, launch_template=template, version="1")
        names.append(name)

    clients.calls.clear()
    found = discover(clients, spec(names))

    assert found.problems == ()
    assert len(found.members) == 6
    assert clients.calls["DescribeLaunchTemplateVersions"] == 1


def test_more_than_a_page_of_names_takes_one_call_per_hundred(
    world: World, clients: client.AwsClients
):
    group = world.security_group("nodes")
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", security_group_ids=[group], profile_arn=profile.arn
    )
    names = [world.asg(f"asg-{index:03d}", launch_template=template) for index in range(150)]

    clients.calls.clear()
    found = discover(clients, spec(names))

    assert len(found.members) == 150
    assert clients.calls["DescribeAutoScalingGroups"] == 2
    assert clients.calls["DescribeLaunchTemplateVersions"] == 1

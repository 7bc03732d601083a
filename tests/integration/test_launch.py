"""What an ASG launches with, where AWS decides more than the launch data says: instances
launched without a security group run in the default SG of their VPC, an existing network
interface brings its own SGs, and ASGs are listed without their instances."""

from __future__ import annotations

from collections.abc import Sequence

from devtools.aws.world import Mixed, Override, World
from sgmesh.api import models
from sgmesh.aws import client, discovery, launch
from sgmesh.engine import ownership, planning, topology
from sgmesh.engine.topology import ProblemKind
from tests.support.fault_proxy import ThrottlingProxy

OWNER = ownership.Owner("test-cluster", "mesh")


def spec(names: Sequence[str] = (), prefix: str | None = None) -> models.NodeGroupMeshSpec:
    selectors = [{"namePrefix": prefix}] if prefix is not None else []
    return models.NodeGroupMeshSpec.model_validate(
        {"autoScalingGroups": {"names": list(names), "selectors": selectors}}
    )


def member(found: topology.Topology, name: str) -> topology.Member:
    matches = [m for m in found.members if m.name == name]
    assert matches, f"{name} is not a member; problems: {found.problems}"
    return matches[0]


# ---- no security group in the launch data: the default SG of the VPC -------------------------


def test_a_template_that_names_no_group_launches_in_the_default_group_of_the_asg_vpc(
    world: World, clients: client.AwsClients
):
    other_vpc = world.vpc()
    profile = world.role_with_profile("nodes")
    template = world.launch_template("nodes-lt", profile_arn=profile.arn)
    world.asg("main", launch_template=template)
    world.asg("other", launch_template=template, vpc=other_vpc)

    found = discovery.discover(
        clients, planning.Intent.from_spec(spec(["main", "other"]), OWNER, clients.region)
    )

    assert found.problems == ()
    assert member(found, "main") == topology.Member(
        "main", (world.default_security_group(),), ("nodes",), world.main_vpc.id
    )
    assert member(found, "other").security_group_ids == (world.default_security_group(other_vpc),)
    assert member(found, "other").vpc_id == other_vpc.id


def test_a_launch_configuration_without_groups_launches_in_the_default_group(
    world: World, clients: client.AwsClients
):
    world.role_with_profile("nodes")
    world.launch_configuration("lc", profile="nodes")
    world.asg("asg", launch_configuration="lc")

    found = discovery.discover(
        clients, planning.Intent.from_spec(spec(["asg"]), OWNER, clients.region)
    )

    assert found.problems == ()
    assert member(found, "asg").security_group_ids == (world.default_security_group(),)


def test_an_override_without_groups_adds_the_default_group_to_those_of_the_others(
    world: World, clients: client.AwsClients
):
    group = world.security_group("nodes")
    profile = world.role_with_profile("nodes")
    with_group = world.launch_template(
        "with-group", security_group_ids=[group], profile_arn=profile.arn
    )
    without = world.launch_template("without-group", profile_arn=profile.arn)
    world.asg("asg", mixed=Mixed(with_group, overrides=(Override(), Override(template=without))))

    found = discovery.discover(
        clients, planning.Intent.from_spec(spec(["asg"]), OWNER, clients.region)
    )

    assert found.problems == ()
    assert member(found, "asg").security_group_ids == tuple(
        sorted([group, world.default_security_group()])
    )


# ---- an existing network interface: its groups --------------------------------------------------


def test_a_template_attaching_an_existing_interface_launches_with_its_groups(
    world: World, clients: client.AwsClients
):
    first, second = world.security_group("eni-a"), world.security_group("eni-b")
    interface = world.network_interface([first, second])
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", network_interface_id=interface, profile_arn=profile.arn
    )
    world.asg("asg", launch_template=template)

    found = discovery.discover(
        clients, planning.Intent.from_spec(spec(["asg"]), OWNER, clients.region)
    )

    assert found.problems == ()
    assert member(found, "asg").security_group_ids == tuple(sorted([first, second]))
    assert found.security_group_vpcs == {first: world.main_vpc.id, second: world.main_vpc.id}


def test_an_interface_that_does_not_exist_leaves_the_asg_unresolved(
    world: World, clients: client.AwsClients
):
    group = world.security_group("eni")
    interface = world.network_interface([group])
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", network_interface_id=interface, profile_arn=profile.arn
    )
    world.asg("asg", launch_template=template)
    world.delete_network_interface(interface)

    found = discovery.discover(
        clients, planning.Intent.from_spec(spec(["asg"]), OWNER, clients.region)
    )

    (problem,) = found.problems
    assert (problem.kind, problem.subject) == (ProblemKind.UNRESOLVED, "asg")
    assert f"network interface {interface} does not exist" in problem.message
    assert not found.complete  # every removal is held back


# ---- what is read and kept ---------------------------------------------------------------------


def test_asgs_are_listed_without_their_instances(world: World, fault_proxy: ThrottlingProxy):
    world.node_group("eks-a")
    world.node_group("eks-b")
    clients = client.make_clients()

    found = discovery.discover(
        clients, planning.Intent.from_spec(spec(["eks-a"], prefix="eks-"), OWNER, clients.region)
    )

    assert [m.name for m in found.members] == ["eks-a", "eks-b"]
    asked = [
        form for form in fault_proxy.forms if form.get("Action") == "DescribeAutoScalingGroups"
    ]
    assert asked, "no DescribeAutoScalingGroups went through the proxy"
    assert [form.get("IncludeInstances") for form in asked] == ["false"] * len(asked)


def test_user_data_of_a_template_does_not_reach_the_topology(
    world: World, clients: client.AwsClients
):
    secret = "c2VjcmV0LXRva2VuLWluLXVzZXItZGF0YQ=="  # base64 of a made-up secret
    group = world.security_group("nodes")
    profile = world.role_with_profile("nodes")
    template = world.launch_template(
        "nodes-lt", security_group_ids=[group], profile_arn=profile.arn, user_data=secret
    )
    world.asg("asg", launch_template=template)

    found = discovery.discover(
        clients, planning.Intent.from_spec(spec(["asg"]), OWNER, clients.region)
    )

    assert member(found, "asg").security_group_ids == (group,)
    assert secret not in repr(found)


# ---- the account's listing of template versions ----------------------------------------------


def test_a_members_template_beyond_the_first_page_is_still_found(
    world: World, fault_proxy: ThrottlingProxy
):
    # More templates in the account than one page of the listing ($Default of every template,
    # as the members' ASGs name no version; 200 a page): the listing asks for the next page
    # with the NextToken of the first. The test AWS lists templates in the order they were
    # made, so the members' templates, made last, are on that second page; none is asked for
    # by itself.
    group = world.security_group("nodes")
    for index in range(launch.TEMPLATE_VERSION_PAGE_SIZE + 20):
        world.launch_template(f"other-{index:03d}", security_group_ids=[group])
    late = world.security_group("late")
    profile = world.role_with_profile("nodes").arn
    for name in ("eks-a", "eks-b"):
        template = world.launch_template(name, security_group_ids=[late], profile_arn=profile)
        world.asg(name, launch_template=template)
    clients = client.make_clients()

    found = discovery.discover(
        clients, planning.Intent.from_spec(spec(["eks-a", "eks-b"]), OWNER, clients.region)
    )

    assert found.problems == ()
    assert member(found, "eks-a").security_group_ids == (late,)
    assert member(found, "eks-b").security_group_ids == (late,)
    asked = [
        form for form in fault_proxy.forms if form.get("Action") == "DescribeLaunchTemplateVersions"
    ]
    # One listing in two pages, the second asked for with the first's NextToken; no template
    # asked for by id.
    assert [
        (form.get("LaunchTemplateVersion.1"), form.get("MaxResults"), form.get("LaunchTemplateId"))
        for form in asked
    ] == [("$Default", "200", None)] * 2
    assert "NextToken" not in asked[0]
    assert asked[1].get("NextToken")
    assert clients.calls["DescribeLaunchTemplateVersions"] == 2

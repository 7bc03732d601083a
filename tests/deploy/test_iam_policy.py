"""deploy/iam-policy.json: the operator's own AWS permissions, least privilege.

It allows exactly the operations the operator's code calls; its write actions are scoped to
the resources and tags the operator owns; and when the operator runs every path it has (read
at the moto server), each request is allowed and each action of the policy is used.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import pytest

from devtools.aws.world import Vpc, World
from devtools.operator_harness import Meshes, Operator, wait_until
from sgmesh.api import models
from sgmesh.aws import client
from tests.deploy import iam

POLICY = iam.Policy.load()
PARTITION_REGIONS = (
    "us-east-1",
    "cn-north-1",
    "us-gov-west-1",
    "us-iso-east-1",
    "us-isob-east-1",
    "eu-isoe-west-1",
    "us-isof-south-1",
    "eusc-de-east-1",
)
DEADLINE = 60


def test_policy_allows_exactly_the_operations_the_operator_code_calls() -> None:
    called = iam.operations_in_code()

    assert called, "no AWS call found in the operator's source"
    assert sorted(POLICY.actions - called) == [], "allowed but never called"
    assert sorted(called - POLICY.actions) == [], "called but not allowed"


def test_policy_is_plain_allow_statements_without_wildcard_actions() -> None:
    document = json.loads(iam.POLICY_FILE.read_text())
    assert document["Version"] == "2012-10-17"
    for statement in POLICY.statements:
        assert statement.effect == "Allow"
        assert all("*" not in action for action in statement.actions), statement.sid


def test_every_write_action_is_scoped_to_resources_and_where_aws_allows_by_conditions() -> None:
    conditioned = {"CreateTags", "DeleteTags", "AttachRolePolicy", "DetachRolePolicy"}
    conditioned |= {"TagRole", "UntagRole"}
    for statement in POLICY.statements:
        operations = {action.partition(":")[2] for action in statement.actions}
        writes = operations & client.MUTATING_OPERATIONS
        if not writes:
            continue
        assert "*" not in statement.resources, statement.sid
        if writes & conditioned:
            assert statement.conditions, f"{statement.sid} allows {writes} unconditionally"


def test_cni_policy_may_be_attached_in_every_partition_and_no_other_policy() -> None:
    [statement] = [s for s in POLICY.statements if "iam:AttachRolePolicy" in s.actions]
    allowed = set(statement.conditions["ArnEquals"]["iam:PolicyARN"])

    expected = {
        f"arn:{models.partition_of(region)}:iam::aws:policy/AmazonEKS_CNI_Policy"
        for region in PARTITION_REGIONS
    }

    assert allowed == expected
    [sweep] = [s for s in POLICY.statements if "iam:ListEntitiesForPolicy" in s.actions]
    assert set(sweep.resources) == expected


def _request(action: str, region: str = "us-east-1", **params: str) -> iam.AwsRequest:
    service, _, operation = action.partition(":")
    return iam.AwsRequest(service, operation, region, {"Action": operation, **params}, "")


OWNER_KEY = "sgmesh.io/prod/airflow"
GRANTED = [
    _request(
        "ec2:AuthorizeSecurityGroupIngress",
        GroupId="sg-0123456789abcdef0",
        **{
            "TagSpecification.1.ResourceType": "security-group-rule",
            "TagSpecification.1.Tag.1.Key": OWNER_KEY,
            "TagSpecification.1.Tag.1.Value": "owned",
        },
    ),
    _request(
        "ec2:CreateTags",
        **{"ResourceId.1": "sgr-0123456789abcdef0", "Tag.1.Key": OWNER_KEY, "Tag.1.Value": "owned"},
    ),
    _request("ec2:DeleteTags", **{"ResourceId.1": "sgr-0123456789abcdef0", "Tag.1.Key": OWNER_KEY}),
    _request(
        "iam:AttachRolePolicy",
        region="cn-north-1",
        RoleName="eks-nodes",
        PolicyArn="arn:aws-cn:iam::aws:policy/AmazonEKS_CNI_Policy",
    ),
    _request(
        "iam:TagRole",
        RoleName="eks-nodes",
        **{"Tags.member.1.Key": OWNER_KEY, "Tags.member.1.Value": "arn:aws:iam::aws:policy/x"},
    ),
    _request("iam:UntagRole", RoleName="eks-nodes", **{"TagKeys.member.1": OWNER_KEY}),
    _request("iam:ListRoleTags", RoleName="eks-nodes"),
    _request("iam:ListAttachedRolePolicies", RoleName="eks-nodes"),
    _request(
        "iam:ListEntitiesForPolicy",
        region="eu-isoe-west-1",
        PolicyArn="arn:aws-iso-e:iam::aws:policy/AmazonEKS_CNI_Policy",
        EntityFilter="Role",
    ),
    _request("servicequotas:GetServiceQuota", ServiceCode="vpc", QuotaCode="L-0EA8095F"),
]
REFUSED = {
    "tag-a-rule-with-a-foreign-key": _request(
        "ec2:CreateTags",
        **{"ResourceId.1": "sgr-0123456789abcdef0", "Tag.1.Key": "Name", "Tag.1.Value": "x"},
    ),
    "untag-a-security-group": _request(
        "ec2:DeleteTags", **{"ResourceId.1": "sg-0123456789abcdef0", "Tag.1.Key": OWNER_KEY}
    ),
    "tag-a-rule-at-creation-with-a-foreign-key": _request(
        "ec2:AuthorizeSecurityGroupIngress",
        GroupId="sg-0123456789abcdef0",
        **{
            "TagSpecification.1.ResourceType": "security-group-rule",
            "TagSpecification.1.Tag.1.Key": "team",
            "TagSpecification.1.Tag.1.Value": "data",
        },
    ),
    "attach-another-policy": _request(
        "iam:AttachRolePolicy",
        RoleName="eks-nodes",
        PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess",
    ),
    "detach-a-policy-of-the-account": _request(
        "iam:DetachRolePolicy",
        RoleName="eks-nodes",
        PolicyArn="arn:aws:iam::123456789012:policy/AmazonEKS_CNI_Policy",
    ),
    "tag-a-role-with-a-foreign-key": _request(
        "iam:TagRole",
        RoleName="eks-nodes",
        **{"Tags.member.1.Key": "owner", "Tags.member.1.Value": "me"},
    ),
    "untag-a-foreign-key": _request(
        "iam:UntagRole", RoleName="eks-nodes", **{"TagKeys.member.1": "owner"}
    ),
    "authorize-egress": _request("ec2:AuthorizeSecurityGroupEgress", GroupId="sg-1"),
    "delete-a-security-group": _request("ec2:DeleteSecurityGroup", GroupId="sg-1"),
    "create-a-role": _request("iam:CreateRole", RoleName="x"),
    "read-every-role-and-its-policies": _request("iam:GetAccountAuthorizationDetails"),
    "list-the-roles-of-another-policy": _request(
        "iam:ListEntitiesForPolicy", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"
    ),
    "read-a-role-s-trust-policy": _request("iam:GetRole", RoleName="eks-nodes"),
}


@pytest.mark.parametrize("request_", GRANTED, ids=lambda r: r.action)
def test_policy_allows_what_the_operator_does(request_: iam.AwsRequest) -> None:
    assert POLICY.refused([request_]) == []


@pytest.mark.parametrize("request_", REFUSED.values(), ids=REFUSED.keys())
def test_policy_refuses_what_the_operator_never_does(request_: iam.AwsRequest) -> None:
    assert POLICY.refused([request_]) != []


# ---- every path of the operator, recorded at the moto server -------------------------------


def _default_vpc(world: World) -> Vpc:
    answer = world.clients.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])
    return Vpc(answer["Vpcs"][0]["VpcId"], ())


def _legacy_node_groups(world: World) -> list[str]:
    """Node groups discovery reads the long way: a launch configuration naming its SG by a name
    two VPCs use (resolved through the ASG's subnets, or the default VPC for an ASG with none),
    an instance profile that holds no role, and a template attaching an existing ENI."""
    world.security_group("legacy-nodes")
    world.security_group("legacy-nodes", vpc=_default_vpc(world))
    world.instance_profile("legacy-nodes")
    configuration = world.launch_configuration(
        "legacy-nodes", security_groups=["legacy-nodes"], profile="legacy-nodes"
    )
    world.asg("eks-legacy", launch_configuration=configuration)
    # A launch template attaching an existing ENI (its SGs are read from the ENI), and a
    # prefix-list rule on a member SG (it counts as the list's maximum entries).
    eni_group = world.security_group("eni-nodes")
    offices = world.clients.ec2.create_managed_prefix_list(
        PrefixListName="offices", AddressFamily="IPv4", MaxEntries=5
    )["PrefixList"]["PrefixListId"]
    world.clients.ec2.authorize_security_group_ingress(
        GroupId=eni_group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "PrefixListIds": [{"PrefixListId": offices}],
            }
        ],
    )
    profile = world.role_with_profile("eni-nodes")
    template = world.launch_template(
        "eni-nodes",
        network_interface_id=world.network_interface([eni_group]),
        profile_arn=profile.arn,
    )
    world.asg("eks-eni", launch_template=template)
    world.clients.autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="eks-classic",
        LaunchConfigurationName=configuration,
        MinSize=0,
        MaxSize=0,
        DesiredCapacity=0,
        AvailabilityZones=[f"{world.clients.region}a"],
    )
    return ["eks-legacy", "eks-classic", "eks-eni"]


@pytest.mark.kube
def test_every_operator_request_is_allowed_and_every_allowed_action_is_used(
    world: World,
    meshes: Meshes,
    start_operator: Callable[..., Operator],
    aws_recording: iam.MotoRecording,
) -> None:
    operator = start_operator()
    world.node_group("eks-a")
    world.node_group("eks-b")
    spec: dict[str, Any] = {
        "autoScalingGroups": {"names": ["eks-a", "eks-b"]},
        "cniPolicy": {"retainOnRemoval": False},
        "resyncSeconds": 10,
    }
    meshes.create("first", spec)
    meshes.wait_ready("first", DEADLINE, operator.log_tail)
    meshes.create("second", spec)  # co-owns the rules and the attachment of "first"
    meshes.wait_ready("second", DEADLINE, operator.log_tail)
    for name in ("first", "second"):  # releases, then revokes and detaches
        meshes.delete(name)
        gone = functools.partial(lambda mesh: meshes.get(mesh) is None, name)
        wait_until(gone, DEADLINE, f"{name} is gone", operator.log_tail)
    meshes.create("legacy", {"autoScalingGroups": {"names": _legacy_node_groups(world)}})
    wait_until(lambda: meshes.ready("legacy"), DEADLINE, "legacy is reconciled", operator.log_tail)

    requests = aws_recording.operator_requests()

    assert requests, "no request of the operator was recorded at the moto server"
    assert POLICY.refused(requests) == []
    made = {request.action for request in requests}
    assert sorted(POLICY.actions - made) == [], "allowed, but the operator never asked"

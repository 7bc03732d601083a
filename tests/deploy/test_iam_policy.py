"""deploy/iam-policy.json: the operator's own AWS permissions, least privilege, per cluster.

The file is what `sgmesh iam-policy` prints, with a placeholder for each value of the cluster.
Filled in for a cluster, it allows exactly the operations the operator's code calls; its write
actions are scoped to the resources and tags the operator owns, the ingress writes to the
security groups of the cluster's VPC; and when the operator runs every path it has (read at the
moto server), each request is allowed and each action of the policy is used.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any

import pytest

from devtools.aws.world import Vpc, World
from devtools.operator_harness import Meshes, Operator, wait_until
from sgmesh.api import iam_policy, models
from sgmesh.aws import client
from sgmesh.cli import exit_codes, main
from tests.deploy import iam
from tests.deploy.render import DEPLOY

CLUSTER_VPC = "vpc-0123456789abcdef0"
OTHER_VPC = "vpc-0fedcba9876543210"
POLICY = iam.operator_policy(CLUSTER_VPC)
INGRESS_WRITES = {"ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"}
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


def test_ingress_writes_on_a_group_are_bounded_by_its_vpc_and_on_rules_by_the_group() -> None:
    """`ec2:Vpc` exists on the security-group resource only: the statement with the condition
    names only groups; the one on rules (which lack the key) has none, and grants nothing alone
    (see the requests refused below)."""
    ec2 = f"arn:aws:ec2:{iam.REGION}:{iam.ACCOUNT}"

    statements = [s for s in POLICY.statements if INGRESS_WRITES & set(s.actions)]

    assert {(s.resources, json.dumps(s.conditions)) for s in statements} == {
        (
            (f"{ec2}:security-group/*",),
            json.dumps({"ArnEquals": {"ec2:Vpc": f"{ec2}:vpc/{CLUSTER_VPC}"}}),
        ),
        ((f"{ec2}:security-group-rule/*",), json.dumps({})),
    }
    assert all(set(s.actions) == INGRESS_WRITES for s in statements)


@pytest.mark.parametrize("region", PARTITION_REGIONS)
def test_the_cni_policy_of_the_cluster_s_partition_may_be_attached_and_no_other(
    region: str,
) -> None:
    partition = models.partition_of(region)
    policy = iam.operator_policy(CLUSTER_VPC, region=region, partition=partition)
    [statement] = [s for s in policy.statements if "iam:AttachRolePolicy" in s.actions]
    [sweep] = [s for s in policy.statements if "iam:ListEntitiesForPolicy" in s.actions]

    expected = f"arn:{partition}:iam::aws:policy/AmazonEKS_CNI_Policy"

    assert statement.conditions["ArnEquals"]["iam:PolicyARN"] == expected
    assert sweep.resources == (expected,)
    for other in {models.partition_of(r) for r in PARTITION_REGIONS} - {partition}:
        attach = _request(
            "iam:AttachRolePolicy",
            region=region,
            RoleName="eks-nodes",
            PolicyArn=f"arn:{other}:iam::aws:policy/AmazonEKS_CNI_Policy",
        )
        assert policy.refused([attach]) != [], other


def _request(action: str, region: str = "us-east-1", **params: str) -> iam.AwsRequest:
    service, _, operation = action.partition(":")
    return iam.AwsRequest(service, operation, region, {"Action": operation, **params}, "")


def _in(vpcs: dict[str, str], request: iam.AwsRequest) -> iam.AwsRequest:
    """`request` as the recording reads it, with the VPC of each security group it names."""
    return dataclasses.replace(request, security_group_vpcs=vpcs)


def _policy_of_a_cluster_in(region: str) -> iam.Policy:
    return iam.operator_policy(CLUSTER_VPC, region=region, partition=models.partition_of(region))


OWNER_KEY = "sgmesh.io/prod/airflow"
GROUP = "sg-0123456789abcdef0"
IN_THE_CLUSTER_VPC = {GROUP: CLUSTER_VPC}
IN_ANOTHER_VPC = {GROUP: OTHER_VPC}
TAGGED_AT_CREATION = {
    "TagSpecification.1.ResourceType": "security-group-rule",
    "TagSpecification.1.Tag.1.Key": OWNER_KEY,
    "TagSpecification.1.Tag.1.Value": "owned",
}
GRANTED = [
    _in(
        IN_THE_CLUSTER_VPC,
        _request(
            "ec2:AuthorizeSecurityGroupIngress",
            GroupId=GROUP,
            **TAGGED_AT_CREATION,
        ),
    ),
    _in(
        IN_THE_CLUSTER_VPC,
        _request(
            "ec2:RevokeSecurityGroupIngress",
            GroupId=GROUP,
            **{"SecurityGroupRuleId.1": "sgr-0123456789abcdef0"},
        ),
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
    _request("eks:DescribeCluster", name=iam.CLUSTER),
    _request("eks:ListPodIdentityAssociations", name=iam.CLUSTER, namespace="kube-system"),
]
REFUSED = {
    "authorize-ingress-on-a-group-of-another-vpc": _in(
        IN_ANOTHER_VPC,
        _request(
            "ec2:AuthorizeSecurityGroupIngress",
            GroupId=GROUP,
            **TAGGED_AT_CREATION,
        ),
    ),
    "revoke-ingress-on-a-group-of-another-vpc": _in(
        IN_ANOTHER_VPC,
        _request(
            "ec2:RevokeSecurityGroupIngress",
            GroupId=GROUP,
            **{"SecurityGroupRuleId.1": "sgr-0123456789abcdef0"},
        ),
    ),
    "authorize-ingress-on-a-group-whose-vpc-is-unknown": _request(
        "ec2:AuthorizeSecurityGroupIngress", GroupId=GROUP, **TAGGED_AT_CREATION
    ),
    "authorize-ingress-in-another-region": _in(
        IN_THE_CLUSTER_VPC,
        _request("ec2:AuthorizeSecurityGroupIngress", region="eu-west-1", GroupId=GROUP),
    ),
    "read-another-cluster": _request("eks:DescribeCluster", name="prod"),
    "list-the-pod-identities-of-another-cluster": _request(
        "eks:ListPodIdentityAssociations", name="prod"
    ),
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
    assert _policy_of_a_cluster_in(request_.region).refused([request_]) == []


@pytest.mark.parametrize("request_", REFUSED.values(), ids=REFUSED.keys())
def test_policy_refuses_what_the_operator_never_does(request_: iam.AwsRequest) -> None:
    assert POLICY.refused([request_]) != []


def test_a_vpc_condition_on_the_rules_too_would_refuse_every_rule_tagged_at_creation() -> None:
    """Why the ingress writes are two statements: the rule a write tags at creation is a
    resource of the request, and it has no `ec2:Vpc` to match."""
    document = iam_policy.policy(
        iam_policy.ClusterScope(iam.CLUSTER, CLUSTER_VPC, region=iam.REGION, account=iam.ACCOUNT)
    )
    statements = document["Statement"]
    [on_groups] = [s for s in statements if s["Sid"] == "MeshIngressRulesOnClusterVpcGroups"]
    [on_rules] = [s for s in statements if s["Sid"] == "MeshIngressRulesOnRules"]
    merged = {**on_groups, "Resource": [on_groups["Resource"], on_rules["Resource"]]}
    one_statement = [s for s in statements if s not in (on_groups, on_rules)] + [merged]
    write = GRANTED[0]

    assert iam.Policy.parse(document).refused([write]) == []
    [refused] = iam.Policy.parse({**document, "Statement": one_statement}).refused([write])
    assert ":security-group-rule/*" in refused


def test_an_ingress_write_is_allowed_on_a_group_of_the_cluster_vpc_only(
    world: World, aws_recording: iam.MotoRecording
) -> None:
    """Requests on groups AWS holds, the VPC of each read from the server as the recording of
    the operator's requests reads it."""
    policy = iam.operator_policy(world.main_vpc.id)
    inside = world.security_group("nodes")
    outside = world.security_group("nodes", vpc=world.vpc())

    def writes_on(group_id: str) -> list[iam.AwsRequest]:
        requests = [
            _request(
                "ec2:AuthorizeSecurityGroupIngress",
                region=iam.REGION,
                GroupId=group_id,
                **TAGGED_AT_CREATION,
            ),
            _request(
                "ec2:RevokeSecurityGroupIngress",
                region=iam.REGION,
                GroupId=group_id,
                **{"SecurityGroupRuleId.1": "sgr-0123456789abcdef0"},
            ),
        ]
        return aws_recording.with_security_group_vpcs(requests)

    assert policy.refused(writes_on(inside)) == []
    refused = policy.refused(writes_on(outside))
    assert [check.split(" on ")[0] for check in refused] == sorted(INGRESS_WRITES)
    assert all(f"security-group/{outside}" in check for check in refused)
    gone = world.security_group("gone")
    world.delete_security_group(gone)
    assert policy.refused(writes_on(gone)) != []  # no VPC known: refused, as by IAM


def test_the_file_is_what_sgmesh_iam_policy_prints_with_the_placeholders_filled_in(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sample = iam_policy.ClusterScope(
        cluster="prod",
        vpc_id="vpc-0a1b2c3d4e5f60718",
        partition="aws-cn",
        region="cn-north-1",
        account="111122223333",
    )
    filled = iam.POLICY_FILE.read_text()
    for field in dataclasses.fields(iam_policy.ClusterScope):
        filled = filled.replace(
            getattr(iam_policy.PLACEHOLDERS, field.name), getattr(sample, field.name)
        )

    code = main.main(
        [
            "iam-policy",
            *("--cluster", sample.cluster, "--vpc-id", sample.vpc_id),
            *("--partition", sample.partition, "--region", sample.region),
            *("--account", sample.account),
        ]
    )

    assert code == exit_codes.OK
    assert capsys.readouterr().out == filled
    assert iam.POLICY_FILE.read_text() == iam_policy.render(iam_policy.PLACEHOLDERS), (
        "regenerate it: python -c 'from sgmesh.api import iam_policy as p; "
        'print(p.render(p.PLACEHOLDERS), end="")\' > deploy/iam-policy.json'
    )


def test_every_placeholder_of_the_file_is_documented_in_deploy_readme() -> None:
    readme = (DEPLOY / "README.md").read_text()
    placeholders = dataclasses.astuple(iam_policy.PLACEHOLDERS)

    assert all(placeholder in iam.POLICY_FILE.read_text() for placeholder in placeholders)
    assert [p for p in placeholders if f"`{p}`" not in readme] == []


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
    policy = iam.operator_policy(world.main_vpc.id)

    assert requests, "no request of the operator was recorded at the moto server"
    assert policy.refused(requests) == []
    made = {request.action for request in requests}
    # moto serves no EKS Pod Identity API (a 404 it does not record): the operator's read of it
    # is shown on recorded answers (tests/unit/test_pod_identity.py).
    not_served_by_moto = {"eks:ListPodIdentityAssociations"}
    assert sorted(policy.actions - not_served_by_moto - made) == [], (
        "allowed, but the operator never asked"
    )
    # Each ingress write was checked against the VPC of its group, the cluster's.
    writes = [r for r in requests if r.action in INGRESS_WRITES]
    assert {vpc for r in writes for vpc in r.security_group_vpcs.values()} == {world.main_vpc.id}
    assert all(r.params["GroupId"] in r.security_group_vpcs for r in writes)

"""The test AWS answers as AWS does where sgmesh's races hinge on it, and pages the listing of
launch template versions, and reads an EC2 resource's tags from its own entry
(`devtools.aws.moto_aws`).

If a moto upgrade moves the code those fixes replace, these fail instead of the suite silently
testing moto's semantics.
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest

from devtools.aws.world import World


def test_same_rule_with_another_description_is_a_duplicate(world: World) -> None:
    target, source = world.security_group("target"), world.security_group("source")
    world.ingress_from_group(target, source, description="sgmesh default/a: node group mesh")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        world.ingress_from_group(target, source, description="sgmesh default/b: node group mesh")
    assert refused.value.response["Error"]["Code"] == "InvalidPermission.Duplicate"
    assert len(world.describe_ingress(target)) == 1


def test_rules_referencing_a_group_keep_their_description(world: World) -> None:
    target, source = world.security_group("target"), world.security_group("source")
    world.ingress_from_group(target, source, description="made by somebody")
    (rule,) = world.describe_ingress(target)
    assert rule["Description"] == "made by somebody"


def test_authorize_with_one_duplicate_adds_nothing(world: World) -> None:
    target, first, second = (world.security_group(name) for name in ("target", "one", "two"))
    world.ingress_from_group(target, second)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        world.clients.ec2.authorize_security_group_ingress(
            GroupId=target,
            IpPermissions=[
                {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": first}]},
                {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": second}]},
            ],
        )
    assert refused.value.response["Error"]["Code"] == "InvalidPermission.Duplicate"
    sources = [rule["ReferencedGroupInfo"]["GroupId"] for rule in world.describe_ingress(target)]
    assert sources == [second]


def test_other_ports_from_the_same_group_are_another_rule(world: World) -> None:
    target, source = world.security_group("target"), world.security_group("source")
    world.ingress_from_group(target, source, protocol="udp", from_port=53, to_port=53)
    world.ingress_from_group(target, source, protocol="tcp", from_port=53, to_port=53)
    assert len(world.describe_ingress(target)) == 2


def test_tagging_a_rule_that_is_gone_fails_as_in_aws(world: World) -> None:
    target, source = world.security_group("target"), world.security_group("source")
    rule_id = world.ingress_from_group(target, source)
    world.clients.ec2.revoke_security_group_ingress(GroupId=target, SecurityGroupRuleIds=[rule_id])
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        world.clients.ec2.create_tags(Resources=[rule_id], Tags=[{"Key": "k", "Value": "v"}])
    assert refused.value.response["Error"]["Code"] == "InvalidSecurityGroupRuleId.NotFound"


def test_a_tag_filter_finds_the_rules_carrying_the_tag_and_nothing_else(world: World) -> None:
    """Tags are read from each resource's own entry (`_read_tags_by_resource`): a filter on a
    tag (the one DescribeSecurityGroupRules documents) and DescribeTags of a rule still answer
    exactly what was written."""
    target, first, second = (world.security_group(name) for name in ("target", "one", "two"))
    tagged, untagged = (
        world.ingress_from_group(target, first),
        world.ingress_from_group(target, second),
    )
    ec2 = world.clients.ec2
    ec2.create_tags(Resources=[tagged], Tags=[{"Key": "sgmesh.io/c/m", "Value": "owned"}])
    ec2.create_tags(Resources=[untagged], Tags=[{"Key": "sgmesh.io/c/m", "Value": "other"}])

    def found(name: str, values: list[str]) -> dict[str, dict[str, str]]:
        rules = ec2.describe_security_group_rules(Filters=[{"Name": name, "Values": values}])
        return {
            rule["SecurityGroupRuleId"]: {tag["Key"]: tag["Value"] for tag in rule["Tags"]}
            for rule in rules["SecurityGroupRules"]
        }

    assert found("tag:sgmesh.io/c/m", ["owned"]) == {tagged: {"sgmesh.io/c/m": "owned"}}
    described = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [tagged]}])["Tags"]
    assert [(tag["Key"], tag["Value"], tag["ResourceType"]) for tag in described] == [
        ("sgmesh.io/c/m", "owned", "security-group-rule")
    ]
    ec2.delete_tags(Resources=[tagged], Tags=[{"Key": "sgmesh.io/c/m"}])
    assert found("tag:sgmesh.io/c/m", ["owned"]) == {}


# ---- DescribeLaunchTemplateVersions in pages -------------------------------------------------


def template_ids(*answers: Any) -> list[str]:
    return [v["LaunchTemplateId"] for answer in answers for v in answer["LaunchTemplateVersions"]]


def test_template_versions_are_listed_in_pages_with_a_next_token(world: World) -> None:
    made = [world.launch_template(f"lt-{index:03d}").id for index in range(250)]
    ec2 = world.clients.ec2

    first = ec2.describe_launch_template_versions(Versions=["$Latest"], MaxResults=200)
    second = ec2.describe_launch_template_versions(
        Versions=["$Latest"], MaxResults=200, NextToken=first["NextToken"]
    )

    assert len(template_ids(first)) == 200
    assert len(template_ids(second)) == 50
    assert "NextToken" not in second
    assert sorted(template_ids(first, second)) == sorted(made)  # every template exactly once
    paginator = ec2.get_paginator("describe_launch_template_versions")
    pages = list(paginator.paginate(Versions=["$Latest"], PaginationConfig={"PageSize": 200}))
    assert [len(template_ids(page)) for page in pages] == [200, 50]
    assert template_ids(*pages) == template_ids(first, second)


def test_template_versions_without_max_results_come_in_one_answer(world: World) -> None:
    made = [world.launch_template(f"lt-{index:02d}").id for index in range(20)]

    answer = world.clients.ec2.describe_launch_template_versions(Versions=["$Default"])

    assert template_ids(answer) == made  # beyond the 15 moto stops at
    assert "NextToken" not in answer


def test_a_page_boundary_between_latest_and_default_of_one_template_loses_nothing(
    world: World,
) -> None:
    for index in range(3):
        world.launch_template(f"lt-{index}")
    ec2 = world.clients.ec2
    whole = ec2.describe_launch_template_versions(Versions=["$Latest", "$Default"])

    pages = list(
        ec2.get_paginator("describe_launch_template_versions").paginate(
            Versions=["$Latest", "$Default"], PaginationConfig={"PageSize": 3}
        )
    )

    # Two entries per template: the second template's are split between the pages.
    assert [len(template_ids(page)) for page in pages] == [3, 3]
    assert template_ids(pages[0])[-1] == template_ids(pages[1])[0]
    assert [v for page in pages for v in page["LaunchTemplateVersions"]] == (
        whole["LaunchTemplateVersions"]
    )


def test_templates_made_or_deleted_between_pages_move_no_other_to_another_page(
    world: World,
) -> None:
    templates = [world.launch_template(f"lt-{index}") for index in range(5)]
    ec2 = world.clients.ec2
    first = ec2.describe_launch_template_versions(Versions=["$Latest"], MaxResults=2)
    assert template_ids(first) == [template.id for template in templates[:2]]

    world.delete_launch_template(templates[1])  # the last the first page gave
    made = world.launch_template("lt-made")
    rest = ec2.describe_launch_template_versions(
        Versions=["$Latest"], MaxResults=200, NextToken=first["NextToken"]
    )

    assert template_ids(rest) == [template.id for template in (*templates[2:], made)]


def test_a_next_token_no_answer_gave_is_refused(world: World) -> None:
    world.launch_template("lt")
    for token in ("not-a-token", "WzEsMiwzXQ=="):  # the second is base64 of [1,2,3]
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            world.clients.ec2.describe_launch_template_versions(
                Versions=["$Latest"], MaxResults=5, NextToken=token
            )
        assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"


@pytest.mark.parametrize("max_results", [0, 201])
def test_max_results_beyond_aws_bounds_is_refused(world: World, max_results: int) -> None:
    world.launch_template("lt")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        world.clients.ec2.describe_launch_template_versions(
            Versions=["$Latest"], MaxResults=max_results
        )
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"

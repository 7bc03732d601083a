"""The test AWS answers as AWS does where sgmesh's races hinge on it (`devtools.aws.moto_aws`).

If a moto upgrade moves the code those fixes replace, these fail instead of the suite silently
testing moto's semantics.
"""

from __future__ import annotations

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

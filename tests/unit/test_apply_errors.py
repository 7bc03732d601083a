"""Error paths of apply and of the pipeline that a moto server cannot produce (botocore Stubber).

What they pin down: a race with another writer is resolved by re-reading, a failure on one
group or role never stops the others, an AWS error is never taken as "gone", and a role's
attachment is never made without its ownership record.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import botocore.exceptions
import pytest
from botocore.stub import ANY, Stubber

from sgmesh.api import models
from sgmesh.aws import apply, client, errors, reconcile
from sgmesh.controller import status
from sgmesh.engine import ingress, ownership, planning
from sgmesh.engine.ingress import Permission
from sgmesh.engine.topology import Topology

from . import builders
from .builders import CNI, OTHER, OWNER

ALL_FROM_A = Permission("sg-a", "-1", -1, -1)
ALL_FROM_B = Permission("sg-b", "-1", -1, -1)


@pytest.fixture
def clients() -> client.AwsClients:
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return client.make_clients("us-east-1", session=session)


@pytest.fixture
def stubs(clients: client.AwsClients) -> Iterator[dict[str, Stubber]]:
    stubbers = {
        "ec2": Stubber(clients.ec2),
        "autoscaling": Stubber(clients.autoscaling),
        "iam": Stubber(clients.iam),
    }
    for stubber in stubbers.values():
        stubber.activate()
    yield stubbers
    for stubber in stubbers.values():
        stubber.assert_no_pending_responses()
        stubber.deactivate()


def authorize(group: str, permission: Permission) -> planning.Authorize:
    return planning.Authorize(group, permission, "test")


def rule_answer(
    group: str, source: str, rule_id: str, owners: tuple[ownership.Owner, ...] = ()
) -> dict[str, object]:
    return {
        "SecurityGroupRuleId": rule_id,
        "GroupId": group,
        "IsEgress": False,
        "IpProtocol": "-1",
        "FromPort": -1,
        "ToPort": -1,
        "ReferencedGroupInfo": {"GroupId": source},
        "Tags": [{"Key": owner.tag_key, "Value": ownership.OWNED} for owner in owners],
    }


def test_duplicate_on_authorize_rereads_the_group_and_adds_only_what_is_missing(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    ec2 = stubs["ec2"]
    ec2.add_client_error(
        "authorize_security_group_ingress", "InvalidPermission.Duplicate", http_status_code=400
    )
    ec2.add_response(
        "describe_security_group_rules",
        {"SecurityGroupRules": [rule_answer("sg-t", "sg-a", "sgr-theirs")]},
        {"Filters": [{"Name": "group-id", "Values": ["sg-t"]}], "MaxResults": 1000},
    )
    ec2.add_response(
        "authorize_security_group_ingress",
        {"Return": True},
        {
            "GroupId": "sg-t",
            "IpPermissions": [apply.ip_permission(ALL_FROM_B, OWNER.rule_description)],
            "TagSpecifications": ANY,
        },
    )
    plan = planning.Plan(actions=(authorize("sg-t", ALL_FROM_A), authorize("sg-t", ALL_FROM_B)))

    result = apply.apply(clients, plan, OWNER)

    assert result.ok
    # The rule somebody else made satisfies the mesh but is not the mesh's: never tagged.
    assert result.done == [authorize("sg-t", ALL_FROM_B)]
    assert result.found_existing == [authorize("sg-t", ALL_FROM_A)]


def test_revoke_of_a_rule_already_gone_revokes_the_rest(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    ec2 = stubs["ec2"]
    ec2.add_response(
        "describe_security_group_rules",
        {
            "SecurityGroupRules": [
                rule_answer("sg-t", "sg-a", "sgr-1", (OWNER,)),
                rule_answer("sg-t", "sg-b", "sgr-2", (OWNER,)),
            ]
        },
    )
    ec2.add_client_error(
        "revoke_security_group_ingress", "InvalidSecurityGroupRuleId.NotFound", http_status_code=400
    )
    ec2.add_response(
        "describe_security_group_rules",
        {"SecurityGroupRules": [rule_answer("sg-t", "sg-b", "sgr-2", (OWNER,))]},
    )
    ec2.add_response(
        "revoke_security_group_ingress",
        {"Return": True},
        {"GroupId": "sg-t", "SecurityGroupRuleIds": ["sgr-2"]},
    )
    plan = planning.Plan(
        actions=(
            planning.Revoke("sg-t", "sgr-1", ALL_FROM_A, "test"),
            planning.Revoke("sg-t", "sgr-2", ALL_FROM_B, "test"),
        )
    )

    assert apply.apply(clients, plan, OWNER).ok


def test_throttled_group_is_reported_and_the_other_groups_still_converge(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    ec2 = stubs["ec2"]
    ec2.add_client_error(
        "authorize_security_group_ingress", "RequestLimitExceeded", http_status_code=503
    )
    ec2.add_response("authorize_security_group_ingress", {"Return": True})
    plan = planning.Plan(actions=(authorize("sg-1", ALL_FROM_A), authorize("sg-2", ALL_FROM_A)))

    result = apply.apply(clients, plan, OWNER)

    [failure] = result.failures
    assert failure.failure.kind is errors.ErrorKind.UNAVAILABLE
    assert failure.actions[0].group_id == "sg-1"  # type: ignore[union-attr]
    assert [a.group_id for a in result.done] == ["sg-2"]  # type: ignore[union-attr]


def test_role_is_not_attached_when_its_ownership_record_could_not_be_written(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    stubs["iam"].add_client_error("tag_role", "AccessDenied", http_status_code=403)
    plan = planning.Plan(
        actions=(
            planning.TagRole("role-a", CNI, "test"),
            planning.AttachPolicy("role-a", CNI, "test"),
        )
    )

    result = apply.apply(clients, plan, OWNER)

    [failure] = result.failures
    assert failure.failure.kind is errors.ErrorKind.ACCESS_DENIED
    assert "grant the operator's role iam:TagRole" in failure.failure.describe()
    assert result.done == []  # and the stubber saw no AttachRolePolicy


def test_detach_of_an_attachment_already_gone_still_releases_the_record(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    iam = stubs["iam"]
    iam.add_client_error("detach_role_policy", "NoSuchEntity", http_status_code=404)
    iam.add_response("untag_role", {}, {"RoleName": "role-a", "TagKeys": [OWNER.tag_key]})
    plan = planning.Plan(
        actions=(
            planning.DetachPolicy("role-a", CNI, "test"),
            planning.UntagRole("role-a", CNI, "test"),
        )
    )

    assert apply.apply(clients, plan, OWNER).ok


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("Throttling", 400, errors.ErrorKind.UNAVAILABLE),
        ("InternalError", 500, errors.ErrorKind.UNAVAILABLE),
        ("AccessDenied", 403, errors.ErrorKind.ACCESS_DENIED),
        ("UnauthorizedOperation", 403, errors.ErrorKind.ACCESS_DENIED),
        ("ValidationError", 400, errors.ErrorKind.REJECTED),
    ],
)
def test_an_aws_error_during_discovery_stops_the_reconcile_before_any_write(
    clients: client.AwsClients,
    stubs: dict[str, Stubber],
    code: str,
    status: int,
    kind: errors.ErrorKind,
) -> None:
    stubs["autoscaling"].add_client_error(
        "describe_auto_scaling_groups", code, http_status_code=status
    )
    mesh = models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": "airflow"},
            "spec": {"autoScalingGroups": {"names": ["eks-a"]}},
        }
    )

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        reconcile.converge(clients, mesh, reconcile.Settings(cluster="prod"))

    assert errors.classify(raised.value).kind is kind
    assert clients.mutating_calls == 0


def test_connection_errors_are_unavailable_not_gone() -> None:
    error = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert errors.classify(error).kind is errors.ErrorKind.UNAVAILABLE
    assert errors.classify(error).retryable


@pytest.mark.parametrize(
    ("service", "operation", "code"),
    [
        ("iam", "attach_role_policy", "ConcurrentModification"),
        ("iam", "tag_role", "ConcurrentModification"),
        ("ec2", "authorize_security_group_ingress", "InvalidGroup.NotFound"),
    ],
)
def test_transient_answers_are_retried_not_reported_as_rejected(
    clients: client.AwsClients, stubs: dict[str, Stubber], service: str, operation: str, code: str
) -> None:
    stubs[service].add_client_error(operation, code, http_status_code=400)
    action: planning.Action = (
        planning.Authorize("sg-t", ALL_FROM_A, "test")
        if service == "ec2"
        else planning.AttachPolicy("role-a", CNI, "test")
        if operation == "attach_role_policy"
        else planning.TagRole("role-a", CNI, "test")
    )

    result = apply.apply(clients, planning.Plan(actions=(action,)), OWNER)

    (failure,) = result.failures
    assert failure.failure.kind is errors.ErrorKind.CONCURRENT_CHANGE
    assert failure.failure.retryable


def test_a_re_read_that_lags_the_write_is_retried_later(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    ec2 = stubs["ec2"]
    ec2.add_client_error(
        "authorize_security_group_ingress", "InvalidPermission.Duplicate", http_status_code=400
    )
    ec2.add_response("describe_security_group_rules", {"SecurityGroupRules": []})  # lags
    ec2.add_client_error(
        "authorize_security_group_ingress", "InvalidPermission.Duplicate", http_status_code=400
    )

    result = apply.apply(clients, planning.Plan(actions=(authorize("sg-t", ALL_FROM_A),)), OWNER)

    (failure,) = result.failures
    assert failure.failure.kind is errors.ErrorKind.CONCURRENT_CHANGE
    assert failure.failure.retryable


def test_access_denied_names_the_service_the_operation_was_called_on(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    stubs["autoscaling"].add_client_error("delete_tags", "AccessDenied", http_status_code=403)

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        clients.autoscaling.delete_tags(Tags=[{"Key": "k", "ResourceId": "asg"}])

    described = clients.classify(raised.value).describe()
    assert "autoscaling:DeleteTags" in described
    assert "ec2:DeleteTags" not in described


def test_an_operation_of_several_services_names_them_all_without_a_service() -> None:
    assert errors.iam_action("DeleteTags") == "ec2:DeleteTags or autoscaling:DeleteTags"
    assert errors.iam_action("AttachRolePolicy") == "iam:AttachRolePolicy"


def test_a_denied_authorize_may_be_the_missing_create_tags(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    stubs["ec2"].add_client_error(
        "authorize_security_group_ingress", "UnauthorizedOperation", http_status_code=403
    )

    result = apply.apply(clients, planning.Plan(actions=(authorize("sg-t", ALL_FROM_A),)), OWNER)

    described = result.failures[0].failure.describe()
    assert "ec2:AuthorizeSecurityGroupIngress" in described
    assert "ec2:CreateTags" in described


def test_a_failure_names_the_region_first_so_that_clipping_keeps_it(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    stubs["ec2"].add_client_error(
        "describe_security_groups", "InvalidParameterValue", service_message="x" * 2000
    )

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        clients.ec2.describe_security_groups()

    clipped = status.clip(clients.classify(raised.value).describe())
    assert clipped.startswith("in us-east-1: DescribeSecurityGroups failed with")


def test_a_cni_policy_that_does_not_exist_is_named_by_its_field(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    policy = "arn:aws:iam::123456789012:policy/Missing"
    stubs["iam"].add_client_error(
        "attach_role_policy", "NoSuchEntity", service_message="gone", http_status_code=404
    )

    result = apply.apply(
        clients, planning.Plan(actions=(planning.AttachPolicy("node", policy, "test"),)), OWNER
    )

    (failure,) = result.failures
    assert f"spec.cniPolicy.policyArn {policy!r} does not exist" in failure.failure.describe()
    assert failure.failure.kind is errors.ErrorKind.REJECTED


def record_then_attach(role: str = "role-a") -> planning.Plan:
    return planning.Plan(
        actions=(
            planning.TagRole(role, CNI, "test"),
            planning.AttachPolicy(role, CNI, "test"),
        )
    )


def test_an_attachment_over_the_role_s_policy_quota_takes_its_record_back(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    iam = stubs["iam"]
    iam.add_response(
        "tag_role", {}, {"RoleName": "role-a", "Tags": [{"Key": OWNER.tag_key, "Value": CNI}]}
    )
    iam.add_client_error(
        "attach_role_policy",
        "LimitExceeded",
        service_message="Cannot exceed quota for PoliciesPerRole: 10",
        http_status_code=409,
    )
    # Only the mesh's own key goes: the record this apply has just written.
    iam.add_response("untag_role", {}, {"RoleName": "role-a", "TagKeys": [OWNER.tag_key]})

    result = apply.apply(clients, record_then_attach(), OWNER)

    assert result.done == []
    [failure] = result.failures
    assert [action.kind for action in failure.actions] == ["tag-role", "attach"]
    assert failure.failure.kind is errors.ErrorKind.REJECTED
    described = failure.failure.describe()
    assert "role role-a already has as many managed policies as IAM allows" in described
    assert "quota 'Managed policies per role'" in described
    assert "detach one or raise the quota" in described


def test_a_throttled_attachment_takes_its_record_back_too(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    """Every failed attachment drops the record this apply wrote for it, not only the ones a
    person must act on: a record never claims an attachment that does not exist, and the next
    reconcile writes both again."""
    iam = stubs["iam"]
    iam.add_response("tag_role", {})
    iam.add_client_error("attach_role_policy", "Throttling", http_status_code=400)
    iam.add_response("untag_role", {}, {"RoleName": "role-a", "TagKeys": [OWNER.tag_key]})

    result = apply.apply(clients, record_then_attach(), OWNER)

    [failure] = result.failures
    assert failure.failure.kind is errors.ErrorKind.UNAVAILABLE
    assert failure.failure.retryable
    assert [action.kind for action in failure.actions] == ["tag-role", "attach"]
    assert result.done == []


def test_a_failed_attachment_leaves_a_record_this_apply_did_not_write(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    """The role already carried the mesh's record (the planner wrote no TagRole): it was there
    before this apply, so it stays, and the stubber sees no UntagRole."""
    stubs["iam"].add_client_error("attach_role_policy", "Throttling", http_status_code=400)

    result = apply.apply(
        clients, planning.Plan(actions=(planning.AttachPolicy("role-a", CNI, "test"),)), OWNER
    )

    [failure] = result.failures
    assert [action.kind for action in failure.actions] == ["attach"]


def test_a_record_that_cannot_be_taken_back_is_a_failure_of_its_own(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    iam = stubs["iam"]
    iam.add_response("tag_role", {})
    iam.add_client_error("attach_role_policy", "LimitExceeded", http_status_code=409)
    iam.add_client_error("untag_role", "AccessDenied", http_status_code=403)

    result = apply.apply(clients, record_then_attach(), OWNER)

    attached, untagged = result.failures
    assert [action.kind for action in attached.actions] == ["attach"]
    assert "quota 'Managed policies per role'" in attached.failure.describe()
    assert [action.kind for action in untagged.actions] == ["untag-role"]
    assert "grant the operator's role iam:UntagRole" in untagged.failure.describe()
    assert [action.kind for action in result.done] == ["tag-role"]  # the record is still there


def mesh_of_two(*extra: ingress.IngressRule) -> Topology:
    """Members a and b; the mesh owns the 4 rules that join their SGs, plus `extra`."""
    wanted = [
        builders.rule(f"sgr-{target}{source}", f"sg-{target}", f"sg-{source}", OWNER)
        for target in "ab"
        for source in "ab"
    ]
    return builders.world(
        builders.member("a", "sg-a"), builders.member("b", "sg-b"), rules=[*wanted, *extra]
    )


def test_a_release_that_ends_in_a_revoke_counts_each_rule_once(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    """Three rules from an SG that left the mesh, co-owned with another mesh, are released;
    the other mesh let go at the same moment, so this mesh revokes them. Each was one owned
    rule, and none was a desired one: 4/4 present and 4 owned, never 4/4 present and 1 owned."""
    left = [
        builders.rule(
            f"sgr-old-{port}", "sg-a", "sg-old", OWNER, OTHER, protocol="tcp", ports=(port, port)
        )
        for port in (1, 2, 3)
    ]
    topology = mesh_of_two(*left)
    plan = planning.plan(topology, builders.intent(attach_cni=False))
    assert {action.kind for action in plan.actions} == {"untag-rule"}
    assert (plan.present_rules, plan.owned_rules) == (4, 7)
    ec2 = stubs["ec2"]
    ec2.add_response("delete_tags", {})
    ec2.add_response(
        "describe_security_group_rules",
        {
            "SecurityGroupRules": [
                dict(
                    rule_answer("sg-a", "sg-old", r.rule_id),
                    IpProtocol="tcp",
                    FromPort=r.from_port,
                    ToPort=r.to_port,
                    Description=OTHER.rule_description,
                )
                for r in left
            ]
        },
    )
    ec2.add_response(
        "revoke_security_group_ingress",
        {"Return": True},
        {"GroupId": "sg-a", "SecurityGroupRuleIds": [r.rule_id for r in left]},
    )

    result = apply.apply(clients, plan, OWNER)

    assert result.ok, result.failures
    assert sorted(action.kind for action in result.done) == ["revoke"] * 3 + ["untag-rule"] * 3
    counted = reconcile.Outcome(OWNER, topology, plan, result).rules()
    assert counted == models.RuleCounts(desired=4, present=4, owned=4)


def test_revoking_an_orphan_this_mesh_made_does_not_count_as_an_owned_rule_gone(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    """An orphan (sgmesh's description, no tag) was never counted as owned."""
    orphan = ingress.IngressRule.of(
        "sgr-orphan",
        "sg-a",
        Permission("sg-old", "-1", -1, -1),
        description=OWNER.rule_description,
    )
    topology = mesh_of_two(orphan)
    plan = planning.plan(topology, builders.intent(attach_cni=False))
    assert [action.kind for action in plan.actions] == ["revoke"]
    ec2 = stubs["ec2"]
    ec2.add_response(
        "describe_security_group_rules",
        {
            "SecurityGroupRules": [
                dict(
                    rule_answer("sg-a", "sg-old", "sgr-orphan"), Description=OWNER.rule_description
                )
            ]
        },
    )
    ec2.add_response("revoke_security_group_ingress", {"Return": True})

    result = apply.apply(clients, plan, OWNER)

    assert result.ok, result.failures
    counted = reconcile.Outcome(OWNER, topology, plan, result).rules()
    assert counted == models.RuleCounts(desired=4, present=4, owned=4)


def test_a_release_decides_only_from_a_read_that_shows_it_and_confirms_a_held_rule(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    """The first read after the release is stale (this mesh's tag still shows), the second
    shows the release and OTHER still holding the rule; the confirming read, later, finds
    OTHER gone too: the rule is revoked, and only then."""
    held = builders.rule("sgr-old", "sg-a", "sg-old", OWNER, OTHER)
    plan = planning.plan(mesh_of_two(held), builders.intent(attach_cni=False))
    assert [action.kind for action in plan.actions] == ["untag-rule"]
    waited: list[float] = []
    settling = apply.Settling(
        interval_seconds=1.0, attempts=5, confirm_seconds=3.0, sleep=waited.append
    )

    def read(*owners: ownership.Owner) -> dict[str, object]:
        answer = dict(rule_answer("sg-a", "sg-old", "sgr-old", owners))
        answer["Description"] = OTHER.rule_description
        return {"SecurityGroupRules": [answer]}

    ec2 = stubs["ec2"]
    ec2.add_response("delete_tags", {})
    ec2.add_response("describe_security_group_rules", read(OWNER, OTHER))  # stale
    ec2.add_response("describe_security_group_rules", read(OTHER))  # shows the release
    ec2.add_response("describe_security_group_rules", read())  # OTHER let go meanwhile
    ec2.add_response(
        "revoke_security_group_ingress",
        {"Return": True},
        {"GroupId": "sg-a", "SecurityGroupRuleIds": ["sgr-old"]},
    )

    result = apply.apply(clients, plan, OWNER, settling)

    assert result.ok, result.failures
    assert sorted(action.kind for action in result.done) == ["revoke", "untag-rule"]
    assert waited == [1.0, 3.0]


def test_a_rule_nobody_made_is_never_revoked_after_a_release(
    clients: client.AwsClients, stubs: dict[str, Stubber]
) -> None:
    """A rule without sgmesh's description that reads as ownerless after the release (its
    tags were edited by hand) is left as it is: only what sgmesh made is revoked."""
    held = builders.rule("sgr-old", "sg-a", "sg-old", OWNER, OTHER)
    plan = planning.plan(mesh_of_two(held), builders.intent(attach_cni=False))
    ec2 = stubs["ec2"]
    ec2.add_response("delete_tags", {})
    ec2.add_response(
        "describe_security_group_rules",
        {"SecurityGroupRules": [rule_answer("sg-a", "sg-old", "sgr-old")]},
    )
    ec2.add_response(
        "describe_security_group_rules",
        {"SecurityGroupRules": [rule_answer("sg-a", "sg-old", "sgr-old")]},
    )

    result = apply.apply(clients, plan, OWNER, apply.Settling(sleep=lambda _: None))

    assert result.ok, result.failures
    assert [action.kind for action in result.done] == ["untag-rule"]

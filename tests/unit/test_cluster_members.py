"""EC2NodeClasses and ENIConfigs as members: what each contributes, and what stands in the way."""

from __future__ import annotations

from typing import Any

from sgmesh.api import models
from sgmesh.engine import cluster_members
from sgmesh.engine.cluster_members import ClusterObjects, Listing
from sgmesh.engine.topology import MemberKind, ProblemKind

SG_A = "sg-0aaaaaaaaaaaaaaaa"
SG_B = "sg-0bbbbbbbbbbbbbbbb"


def spec(**sources: Any) -> models.NodeGroupMeshSpec:
    return models.NodeGroupMeshSpec.model_validate(sources)


def node_class(
    name: str,
    groups: list[str] | None = None,
    role: str | None = None,
    profile: str | None = None,
    status_profile: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name}, "spec": {}, "status": {}}
    if role is not None:
        body["spec"]["role"] = role
    if profile is not None:
        body["spec"]["instanceProfile"] = profile
    if groups is not None:
        body["status"]["securityGroups"] = [{"id": g, "name": f"name-{g}"} for g in groups]
    if status_profile is not None:
        body["status"]["instanceProfile"] = status_profile
    return body


def eni_config(name: str, groups: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"securityGroups": groups, "subnet": "subnet-1"}}


def listing(*bodies: dict[str, Any]) -> Listing:
    return Listing(installed=True, objects={b["metadata"]["name"]: b for b in bodies})


def test_a_node_class_brings_its_resolved_groups_and_its_role() -> None:
    found = cluster_members.resolve(
        spec(karpenter={"nodeClasses": ["default"]}),
        ClusterObjects(node_classes=listing(node_class("default", [SG_A, SG_B], role="nodes"))),
    )

    assert found.problems == ()
    [member] = found.members
    assert member.kind is MemberKind.EC2_NODE_CLASS
    assert member.security_group_ids == (SG_A, SG_B)
    assert member.role_names == ("nodes",)
    assert member.unresolved_groups == member.unresolved_role == ()


def test_a_role_given_as_an_arn_is_taken_by_its_name() -> None:
    member = cluster_members.member(
        cluster_members.NODE_CLASS,
        "default",
        node_class("default", [SG_A], role="arn:aws:iam::111122223333:role/karpenter/nodes"),
    )

    assert member.role_names == ("nodes",)


def test_without_a_role_the_instance_profile_of_spec_or_status_names_it() -> None:
    from_spec = cluster_members.member(
        cluster_members.NODE_CLASS, "a", node_class("a", [SG_A], profile="spec-profile")
    )
    from_status = cluster_members.member(
        cluster_members.NODE_CLASS, "b", node_class("b", [SG_A], status_profile="made-by-karpenter")
    )

    assert from_spec.instance_profile_names == ("spec-profile",)
    assert from_status.instance_profile_names == ("made-by-karpenter",)
    assert from_spec.role_names == from_status.role_names == ()


def test_a_node_class_not_resolved_yet_is_unresolved_and_names_why() -> None:
    member = cluster_members.member(
        cluster_members.NODE_CLASS, "gpu", node_class("gpu", None, role="nodes")
    )

    assert member.security_group_ids == ()
    assert "status.securityGroups" in member.unresolved_groups[0]
    assert "gpu" in member.unresolved_groups[0]


def test_a_node_class_with_no_role_or_profile_says_so() -> None:
    member = cluster_members.member(cluster_members.NODE_CLASS, "a", node_class("a", [SG_A]))

    assert member.unresolved_role
    assert "spec.role" in member.unresolved_role[0]


def test_a_named_node_class_that_does_not_exist_is_a_problem_naming_it() -> None:
    found = cluster_members.resolve(
        spec(karpenter={"nodeClasses": ["default", "gpu"]}),
        ClusterObjects(node_classes=listing(node_class("default", [SG_A], role="nodes"))),
    )

    assert [m.name for m in found.members] == ["default"]
    [problem] = found.problems
    assert problem.kind is ProblemKind.EC2_NODE_CLASS_NOT_FOUND
    assert problem.subject == "gpu"
    assert "EC2NodeClass gpu" in problem.message


def test_every_node_class_is_a_member_with_star() -> None:
    found = cluster_members.resolve(
        spec(karpenter={"nodeClasses": ["*"]}),
        ClusterObjects(
            node_classes=listing(
                node_class("b", [SG_B], role="r"), node_class("a", [SG_A], role="r")
            )
        ),
    )

    assert [m.name for m in found.members] == ["a", "b"]
    assert found.problems == ()


def test_star_with_no_object_is_no_member_and_no_problem() -> None:
    found = cluster_members.resolve(
        spec(customNetworking={"eniConfigs": ["*"]}), ClusterObjects(eni_configs=listing())
    )

    assert found.members == ()
    assert found.problems == ()


def test_a_kind_the_cluster_does_not_serve_is_a_holding_problem() -> None:
    found = cluster_members.resolve(
        spec(karpenter={"nodeClasses": ["*"]}),
        ClusterObjects(node_classes=Listing(installed=False)),
    )

    [problem] = found.problems
    assert problem.kind is ProblemKind.SOURCE_NOT_INSTALLED
    assert "ec2nodeclasses.karpenter.k8s.aws" in problem.message
    assert "spec.karpenter.nodeClasses" in problem.message


def test_an_eni_config_brings_its_groups_and_no_role() -> None:
    found = cluster_members.resolve(
        spec(customNetworking={"eniConfigs": ["us-east-1a"]}),
        ClusterObjects(eni_configs=listing(eni_config("us-east-1a", [SG_A, SG_A]))),
    )

    [member] = found.members
    assert member.kind is MemberKind.ENI_CONFIG
    assert member.security_group_ids == (SG_A,)
    assert member.role_names == member.instance_profile_names == ()
    assert member.unresolved_role == ()


def test_an_eni_config_entry_that_is_no_security_group_id_is_named() -> None:
    member = cluster_members.member(
        cluster_members.ENI_CONFIG, "az1", eni_config("az1", [SG_A, "default", 7])
    )

    assert member.security_group_ids == (SG_A,)
    assert any("'default'" in reason for reason in member.unresolved_groups)
    assert any("7" in reason for reason in member.unresolved_groups)


def test_irsa_or_pod_identity_on_aws_node_keeps_the_policy_off_node_roles() -> None:
    wants = spec(karpenter={"nodeClasses": ["*"]})
    irsa = cluster_members.ClusterMembers(
        aws_node_credentials=cluster_members.irsa(
            {cluster_members.IRSA_ANNOTATION: "arn:aws:iam::1:role/cni"}
        )
    )
    pod_identity = cluster_members.ClusterMembers(
        aws_node_credentials=cluster_members.pod_identity_of_pods([aws_node_pod("aws-node-1")])
    )
    plain = cluster_members.ClusterMembers()

    assert cluster_members.attaches_cni(wants, plain)
    assert not cluster_members.attaches_cni(wants, irsa)
    assert not cluster_members.attaches_cni(wants, pod_identity)
    refused = spec(karpenter={"nodeClasses": ["*"]}, cniPolicy={"attach": False})
    assert not cluster_members.attaches_cni(refused, plain)


def aws_node_pod(name: str, variables: tuple[str, ...] | None = None) -> dict[str, Any]:
    """An aws-node pod as the API server returns it; by default as the Pod Identity webhook
    leaves it."""
    names = cluster_members.POD_IDENTITY_VARIABLES if variables is None else variables
    return {
        "metadata": {"name": name, "namespace": "kube-system"},
        "spec": {
            "containers": [
                {
                    "name": "aws-node",
                    "env": [{"name": "ADDITIONAL_ENI_TAGS", "value": "{}"}]
                    + [{"name": variable, "value": "x"} for variable in names],
                },
                {"name": "aws-eks-nodeagent"},
            ]
        },
    }


def test_irsa_is_the_role_arn_annotation_of_the_service_account() -> None:
    found = cluster_members.irsa({cluster_members.IRSA_ANNOTATION: "arn:aws:iam::1:role/cni"})

    assert found is not None
    assert found.kind is cluster_members.CredentialKind.IRSA
    assert found.role_arn == "arn:aws:iam::1:role/cni"
    assert cluster_members.irsa({}) is None
    assert cluster_members.irsa(None) is None
    assert cluster_members.irsa({cluster_members.IRSA_ANNOTATION: ""}) is None


def test_pod_identity_is_every_aws_node_pod_carrying_the_webhook_variables() -> None:
    found = cluster_members.pod_identity_of_pods(
        [aws_node_pod("aws-node-b"), aws_node_pod("aws-node-a")],
        "eks:ListPodIdentityAssociations is denied",
    )

    assert found is not None
    assert found.kind is cluster_members.CredentialKind.POD_IDENTITY
    assert found.role_arn is None  # the pods do not name it
    assert "(aws-node-a, aws-node-b)" in found.evidence
    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" in (
        found.evidence
    )
    assert found.evidence.endswith(
        "(EKS could not tell: eks:ListPodIdentityAssociations is denied)"
    )


def test_a_pod_without_the_variables_or_no_pod_at_all_is_no_pod_identity() -> None:
    # A pod still running without them takes the node role's credentials: the policy stays.
    rolling = [aws_node_pod("aws-node-a"), aws_node_pod("aws-node-b", variables=())]
    token_only = [aws_node_pod("aws-node-a", ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",))]
    elsewhere = aws_node_pod("aws-node-a")
    elsewhere["spec"]["containers"][0]["name"] = "aws-eks-nodeagent-sidecar"

    assert cluster_members.pod_identity_of_pods(rolling) is None
    assert cluster_members.pod_identity_of_pods(token_only) is None
    assert cluster_members.pod_identity_of_pods([elsewhere]) is None
    assert cluster_members.pod_identity_of_pods([]) is None

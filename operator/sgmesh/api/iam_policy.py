"""The operator's least-privilege IAM policy for one cluster, generated like the CRD.

What the operator may do in AWS depends on the cluster it serves: it reads that cluster in EKS,
and writes inbound rules only on the security groups of that cluster's VPC. `policy` builds the
document for a `ClusterScope`; `deploy/iam-policy.json` is `render(PLACEHOLDERS)`, the same
document with a placeholder where each value of the cluster goes, and `sgmesh iam-policy`
prints it for a given cluster. A test fails when the file and this module drift.

Why each statement has the shape it has:

- Reads that AWS cannot scope to a resource (every Describe*, GetServiceQuota) are on `*`.
- The EKS reads name the cluster's ARN.
- The ingress writes are split in two, as AWS's resource types require: on the security group
  they are allowed only where the group's VPC (condition key `ec2:Vpc`, which only the
  `security-group` resource type carries) is the cluster's VPC; on `security-group-rule` (the
  rules a request names or tags at creation), which has no `ec2:Vpc` key, they are allowed
  without that condition — a condition on a key the resource lacks would refuse every request.
  Every Authorize or Revoke also needs the group itself, so no rule outside the VPC can change.
- Tags are written only under `sgmesh.io/`, on rules and roles; only the partition's
  AmazonEKS_CNI_Policy is attached or detached, and only its roles are listed.

`doctor_policy` is the read-only policy of the person (or CI job) running `sgmesh doctor`,
`deploy/doctor-iam-policy.json` (`render_doctor()`): not scoped to one cluster, since doctor is
pointed at whichever cluster the kubeconfig names.

Pure: no I/O, no AWS. It must never grant an action the operator's (or doctor's) code does not
call (the tests of deploy/ hold the two together).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANY",
    "CNI_POLICY_NAME",
    "PLACEHOLDERS",
    "ClusterScope",
    "cni_policy_arn",
    "doctor_policy",
    "policy",
    "render",
    "render_doctor",
]

ANY = "*"
CNI_POLICY_NAME = "AmazonEKS_CNI_Policy"
OWNERSHIP_TAG_KEYS = "sgmesh.io/*"
INGRESS_WRITES = ("ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress")


@dataclass(frozen=True)
class ClusterScope:
    """Where the operator acts: the EKS cluster `cluster`, whose VPC is `vpc_id`, in a
    partition, and in a region and account (`ANY`, `*`, when not known)."""

    cluster: str
    vpc_id: str
    partition: str = "aws"
    region: str = ANY
    account: str = ANY

    def ec2_arn(self, resource: str) -> str:
        return f"arn:{self.partition}:ec2:{self.region}:{self.account}:{resource}"

    def iam_arn(self, resource: str) -> str:
        return f"arn:{self.partition}:iam::{self.account}:{resource}"

    @property
    def cluster_arn(self) -> str:
        return f"arn:{self.partition}:eks:{self.region}:{self.account}:cluster/{self.cluster}"

    @property
    def vpc_arn(self) -> str:
        return self.ec2_arn(f"vpc/{self.vpc_id}")


# deploy/iam-policy.json: each value of the cluster as a placeholder to fill in (documented in
# deploy/README.md), or the document `sgmesh iam-policy` prints.
PLACEHOLDERS = ClusterScope(
    cluster="<CLUSTER_NAME>",
    vpc_id="<VPC_ID>",
    partition="<PARTITION>",
    region="<REGION>",
    account="<ACCOUNT_ID>",
)


def cni_policy_arn(partition: str) -> str:
    return f"arn:{partition}:iam::aws:policy/{CNI_POLICY_NAME}"


def _statement(
    sid: str, actions: list[str], resources: list[str], condition: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One Allow statement; a single action or resource is written as a string, as AWS's own
    documents (and the console) write it."""
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": actions[0] if len(actions) == 1 else actions,
        "Resource": resources[0] if len(resources) == 1 else resources,
    }
    if condition:
        statement["Condition"] = condition
    return statement


def _only_ownership_tags() -> dict[str, Any]:
    # ForAllValues alone holds for a request without tags; Null false requires some.
    return {
        "ForAllValues:StringLike": {"aws:TagKeys": OWNERSHIP_TAG_KEYS},
        "Null": {"aws:TagKeys": "false"},
    }


def policy(scope: ClusterScope) -> dict[str, Any]:
    """The identity policy of the operator of `scope`'s cluster."""
    roles = scope.iam_arn("role/*")
    cni_policy = cni_policy_arn(scope.partition)
    return {
        "Version": "2012-10-17",
        "Statement": [
            _statement(
                "ReadNodeGroupsAndRules",
                [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeLaunchConfigurations",
                    "ec2:DescribeInstances",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:DescribeManagedPrefixLists",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSecurityGroupRules",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeVpcs",
                    "servicequotas:GetServiceQuota",
                ],
                [ANY],
            ),
            _statement(
                "ReadTheCluster",
                ["eks:DescribeCluster", "eks:ListPodIdentityAssociations"],
                [scope.cluster_arn],
            ),
            _statement(
                "ReadNodeRoles", ["iam:ListAttachedRolePolicies", "iam:ListRoleTags"], [roles]
            ),
            _statement("FindRolesOfTheCniPolicy", ["iam:ListEntitiesForPolicy"], [cni_policy]),
            _statement(
                "ReadInstanceProfiles",
                ["iam:GetInstanceProfile", "iam:ListInstanceProfiles"],
                [scope.iam_arn("instance-profile/*")],
            ),
            _statement(
                "MeshIngressRulesOnClusterVpcGroups",
                list(INGRESS_WRITES),
                [scope.ec2_arn("security-group/*")],
                {"ArnEquals": {"ec2:Vpc": scope.vpc_arn}},
            ),
            _statement(
                "MeshIngressRulesOnRules",
                list(INGRESS_WRITES),
                [scope.ec2_arn("security-group-rule/*")],
            ),
            _statement(
                "OwnershipTagsOnRules",
                ["ec2:CreateTags", "ec2:DeleteTags"],
                [scope.ec2_arn("security-group-rule/*")],
                _only_ownership_tags(),
            ),
            _statement(
                "CniPolicyOnNodeRoles",
                ["iam:AttachRolePolicy", "iam:DetachRolePolicy"],
                [roles],
                {"ArnEquals": {"iam:PolicyARN": cni_policy}},
            ),
            _statement(
                "OwnershipTagsOnNodeRoles",
                ["iam:TagRole", "iam:UntagRole"],
                [roles],
                _only_ownership_tags(),
            ),
        ],
    }


def render(scope: ClusterScope) -> str:
    """`policy(scope)` as the JSON text of deploy/iam-policy.json and `sgmesh iam-policy`."""
    return json.dumps(policy(scope), indent=2) + "\n"


def doctor_policy() -> dict[str, Any]:
    """What `sgmesh doctor` reads, in any cluster of any account: instances and ENIs (a pod's
    own branch ENI, a Fargate node's), SG rules of both directions and the prefix lists they
    name, instance profiles, node roles' managed and inline policies and the documents of the
    managed ones (to tell which actions they allow), the EKS cluster (its IP family) and
    aws-node's Pod Identity association and its role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            _statement(
                "ReadNodesAndTheirRules",
                [
                    "autoscaling:DescribeAutoScalingGroups",
                    "ec2:DescribeInstances",
                    "ec2:DescribeManagedPrefixLists",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSecurityGroupRules",
                    "ec2:GetManagedPrefixListEntries",
                ],
                [ANY],
            ),
            _statement(
                "ReadInstanceProfiles",
                ["iam:GetInstanceProfile"],
                ["arn:*:iam::*:instance-profile/*"],
            ),
            _statement(
                "ReadRolePolicies",
                ["iam:GetRolePolicy", "iam:ListAttachedRolePolicies", "iam:ListRolePolicies"],
                ["arn:*:iam::*:role/*"],
            ),
            _statement(
                "ReadPolicyDocuments",
                ["iam:GetPolicy", "iam:GetPolicyVersion"],
                ["arn:*:iam::*:policy/*"],
            ),
            _statement(
                "ReadTheClusterAndItsCniPodIdentityAssociation",
                ["eks:DescribeCluster", "eks:ListPodIdentityAssociations"],
                ["arn:*:eks:*:*:cluster/*"],
            ),
            _statement(
                "ReadTheCniPodIdentityRole",
                ["eks:DescribePodIdentityAssociation"],
                ["arn:*:eks:*:*:podidentityassociation/*"],
            ),
        ],
    }


def render_doctor() -> str:
    """`doctor_policy()` as the JSON text of deploy/doctor-iam-policy.json."""
    return json.dumps(doctor_policy(), indent=2) + "\n"

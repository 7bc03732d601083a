"""AWS-managed prefix lists against a moto server, which has them as AWS does: answered by
DescribeManagedPrefixLists without `MaxEntries`. A rule that references one counts as the
weight AWS publishes for the list's name, for the planner and for doctor alike."""

from __future__ import annotations

from devtools.aws.world import World
from sgmesh.api import models
from sgmesh.aws import client, inventory, reconcile, security_groups
from sgmesh.engine import planning
from sgmesh.engine.topology import ProblemKind

CLOUDFRONT = "com.amazonaws.global.cloudfront.origin-facing"


def aws_managed(clients: client.AwsClients, name: str) -> str:
    [listed] = clients.ec2.describe_managed_prefix_lists(
        Filters=[{"Name": "prefix-list-name", "Values": [name]}]
    )["PrefixLists"]
    assert "MaxEntries" not in listed  # as AWS answers for its own lists
    return listed["PrefixListId"]


def test_an_aws_managed_list_counts_as_its_published_weight(
    world: World, clients: client.AwsClients
) -> None:
    a = world.node_group("eks-a")
    b = world.node_group("eks-b")
    cloudfront = aws_managed(clients, CLOUDFRONT)
    clients.ec2.authorize_security_group_ingress(
        GroupId=a.security_group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 443,
                "ToPort": 443,
                "PrefixListIds": [{"PrefixListId": cloudfront}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 443,
                "ToPort": 443,
                "IpRanges": [{"CidrIp": f"10.200.{i}.0/24"} for i in range(4)],
            },
        ],
    )
    mesh = models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": "mesh"},
            "spec": {
                "autoScalingGroups": {"names": ["eks-a", "eks-b"]},
                "cniPolicy": {"attach": False},
            },
        }
    )

    outcome = reconcile.converge(
        clients, mesh, reconcile.Settings(cluster="test-cluster"), write=False
    )

    # CloudFront's list weighs 55 (IPv4): 55 + 4 CIDRs + the mesh's 2 references = 61 > 60.
    [problem] = outcome.plan.problems
    assert (problem.kind, problem.subject) == (ProblemKind.QUOTA_EXCEEDED, a.security_group_id)
    assert "61 IPv4" in problem.message
    authorized = {a.group_id for a in outcome.plan.actions if isinstance(a, planning.Authorize)}
    assert authorized == {b.security_group_id}
    # Doctor reads the same list (with its entries) and weighs it the same, in the same family.
    discovered = security_groups.read_prefix_lists(clients, [cloudfront])[cloudfront]
    diagnosed = inventory.read_prefix_lists(clients, [cloudfront])[cloudfront]
    assert (discovered.weight, discovered.family) == (diagnosed.weight, diagnosed.family) == (55, 4)

"""The cluster's IP family, from EKS's answer to a mesh's Ready message, against a moto server:
in an IPv6 cluster, `AmazonEKS_CNI_Policy` (the default `cniPolicy.policyArn`) does not grant
`ec2:AssignIpv6Addresses`, and a mesh that puts it on node roles says so."""

from __future__ import annotations

import argparse

from devtools.aws.world import World
from sgmesh.api import models
from sgmesh.aws import client, reconcile
from sgmesh.cli import cluster
from sgmesh.controller import status


def ipv6_cluster(world: World, clients: client.AwsClients, name: str) -> None:
    clients.eks.create_cluster(
        name=name,
        roleArn=f"arn:aws:iam::123456789012:role/{name}-cluster",
        resourcesVpcConfig={"subnetIds": list(world.main_vpc.subnet_ids)},
        kubernetesNetworkConfig={"ipFamily": "ipv6"},
    )


def test_a_mesh_of_an_ipv6_cluster_with_the_default_cni_policy_says_what_it_lacks(
    world: World, clients: client.AwsClients
) -> None:
    world.node_group("eks-a")
    world.node_group("eks-b")
    ipv6_cluster(world, clients, "v6")
    mesh = models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": "mesh"},
            "spec": {"autoScalingGroups": {"names": ["eks-a", "eks-b"]}},
        }
    )
    arguments = argparse.Namespace(region=clients.region, vpc_id=None, member_tag=None)

    settings, found = cluster.bounded(arguments, reconcile.Settings(cluster="v6"))
    outcome = reconcile.converge(clients, mesh, settings)

    assert found.ip_family == settings.ip_family == "ipv6"
    assert outcome.converged, (outcome.plan.problems, outcome.failures)
    ready, _synced = status.outcome_status(outcome, mesh, 1, None)["conditions"]
    assert ready["message"].startswith("2 members, 4/4 rules present, 4 owned; ")
    assert ready["message"].endswith(
        "the cluster is IPv6: AmazonEKS_CNI_Policy does not grant ec2:AssignIpv6Addresses; "
        "set spec.cniPolicy.policyArn to your IPv6 CNI policy"
    )

"""Reading a mesh's Kubernetes sources from the real API server, with Karpenter's and the VPC
CNI's real CRDs: what is there, what is not installed, and failures that are never "none"."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes
import pytest

from devtools import karpenter, vpc_cni
from devtools.k8s.controlplane import ControlPlane
from sgmesh.api import models
from sgmesh.engine import cluster_members
from sgmesh.engine.topology import MemberKind, ProblemKind
from sgmesh.kube import sources

pytestmark = pytest.mark.kube

SG = "sg-0123456789abcdef0"


def api_for(kubeconfig: Path) -> kubernetes.client.ApiClient:
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(
        config_file=str(kubeconfig)
    )
    return client


def apply(cluster: ControlPlane, manifest: dict[str, object]) -> None:
    applied = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    assert applied.returncode == 0, applied.stderr


def test_a_kind_the_api_server_does_not_serve_is_not_installed(kube_cluster: ControlPlane) -> None:
    absent = cluster_members.SourceKind(
        MemberKind.EC2_NODE_CLASS,
        "karpenter.example.com",
        "v1",
        "ec2nodeclasses",
        "spec.karpenter.nodeClasses",
        ProblemKind.EC2_NODE_CLASS_NOT_FOUND,
    )

    listing = sources.list_objects(absent, api_for(kube_cluster.kubeconfig))

    assert listing == cluster_members.Listing(installed=False)


def test_node_classes_and_eni_configs_are_read_with_their_status(
    kube_cluster: ControlPlane, ec2nodeclass_crd: str, eniconfig_crd: str
) -> None:
    apply(kube_cluster, karpenter.ec2nodeclass("sources-default", role="KarpenterNodeRole"))
    karpenter.write_ec2nodeclass_status(
        kube_cluster.kubectl, "sources-default", karpenter.ec2nodeclass_status({SG: "nodes"})
    )
    apply(kube_cluster, vpc_cni.eniconfig("sources-az1", [SG], "subnet-0123456789abcdef0"))
    spec = models.NodeGroupMeshSpec.model_validate(
        {
            "karpenter": {"nodeClasses": ["sources-default", "sources-missing"]},
            "customNetworking": {"eniConfigs": ["*"]},
            "cniPolicy": {"attach": False},
        }
    )
    try:
        objects = sources.read(spec, api_for(kube_cluster.kubeconfig))
    finally:
        kube_cluster.kubectl("delete", karpenter.RESOURCE, "sources-default", "--wait=false")
        kube_cluster.kubectl("delete", vpc_cni.RESOURCE, "sources-az1", "--wait=false")

    found = cluster_members.resolve(spec, objects)
    by_name = {member.name: member for member in found.members}
    assert by_name["sources-default"].security_group_ids == (SG,)
    assert by_name["sources-default"].role_names == ("KarpenterNodeRole",)
    assert by_name["sources-az1"].kind is MemberKind.ENI_CONFIG
    assert [(p.kind, p.subject) for p in found.problems] == [
        (ProblemKind.EC2_NODE_CLASS_NOT_FOUND, "sources-missing")
    ]
    assert objects.aws_node_credentials is None  # not read: the mesh does not attach


def test_irsa_is_read_from_the_aws_node_service_account(kube_cluster: ControlPlane) -> None:
    api = api_for(kube_cluster.kubeconfig)
    kube_cluster.kubectl("delete", "serviceaccount", "aws-node", "-n", "kube-system")
    assert sources.read_irsa(api) is None  # no ServiceAccount: no IRSA

    role_arn = "arn:aws:iam::123456789012:role/vpc-cni"
    apply(
        kube_cluster,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": "aws-node",
                "namespace": "kube-system",
                "annotations": {"eks.amazonaws.com/role-arn": role_arn},
            },
        },
    )
    try:
        irsa = sources.read_irsa(api)
        assert irsa is not None
        assert irsa.role_arn == role_arn
    finally:
        kube_cluster.kubectl("delete", "serviceaccount", "aws-node", "-n", "kube-system")


def test_a_forbidden_read_is_an_error_naming_it_never_none(
    kube_cluster: ControlPlane, kube_namespace: str
) -> None:
    apply(
        kube_cluster,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "nobody", "namespace": kube_namespace},
        },
    )
    api = api_for(kube_cluster.kubeconfig_for(kube_namespace, "nobody"))

    with pytest.raises(sources.ClusterReadError, match=r"kube-system/aws-node.*403"):
        sources.read_irsa(api)
    with pytest.raises(sources.ClusterReadError, match=r"eniconfigs.*403"):
        sources.list_objects(cluster_members.ENI_CONFIG, api)


def test_an_api_server_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    configuration = kubernetes.client.Configuration()
    configuration.host = "https://127.0.0.1:9"
    configuration.retries = 0
    api = kubernetes.client.ApiClient(configuration)

    with pytest.raises(sources.ClusterReadError, match="did not answer"):
        sources.list_objects(cluster_members.NODE_CLASS, api)

"""aws-node's credentials from EKS Pod Identity, against the real API server: aws-node's pods in
kube-system (objects only) carrying the variables the Pod Identity webhook injects, EKS's answers
on recorded replies (moto serves no Pod Identity API) or moto's own over HTTP, and `sgmesh apply`
and `sgmesh doctor` as a person runs them, on a moto server.

IRSA is read first, then EKS; the pods decide only when EKS cannot tell, and only when every
one of them carries the variables. A read that fails is an error, never "no Pod Identity".
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import kubernetes
import pytest
import yaml
from botocore.stub import Stubber

from devtools.aws.world import CNI_POLICY_ARN, World
from devtools.k8s.controlplane import ControlPlane
from devtools.nodes import ClusterNodes
from sgmesh.aws import client, pod_identity
from sgmesh.engine import cluster_members
from sgmesh.engine.cluster_members import CredentialKind
from sgmesh.kube import sources
from tests.cluster import aws_node

pytestmark = pytest.mark.kube

CLUSTER = "prod"
ASKED = {"clusterName": CLUSTER, "namespace": "kube-system", "serviceAccount": "aws-node"}


def api_for(kubeconfig: Path) -> kubernetes.client.ApiClient:
    api: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(
        config_file=str(kubeconfig)
    )
    return api


@pytest.fixture
def kube_system(kube_cluster: ControlPlane) -> Iterator[ControlPlane]:
    """kube-system without aws-node's pods or ServiceAccount, before and after the test."""

    def clear() -> None:
        aws_node.remove_pods(kube_cluster)
        kube_cluster.kubectl(
            "delete", "serviceaccount", "aws-node", "-n", "kube-system", "--ignore-not-found"
        )

    clear()
    yield kube_cluster
    clear()


@pytest.fixture
def stubbed_eks() -> Iterator[tuple[client.AwsClients, Stubber]]:
    """Clients whose EKS answers are recorded ones (no request leaves the process)."""
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    clients = client.make_clients(session=session)
    with Stubber(clients.eks) as stubber:
        yield clients, stubber
        stubber.assert_no_pending_responses()


def test_pods_carrying_the_webhook_variables_are_pod_identity_when_eks_is_denied(
    kube_system: ControlPlane, stubbed_eks: tuple[client.AwsClients, Stubber]
) -> None:
    clients, eks = stubbed_eks
    eks.add_client_error(
        "list_pod_identity_associations",
        service_error_code="AccessDeniedException",
        http_status_code=403,
        expected_params=ASKED,
    )
    names = aws_node.create_pods(kube_system, count=2)

    found = sources.read_aws_node_credentials(
        api_for(kube_system.kubeconfig), partial(pod_identity.find_association, clients, CLUSTER)
    )

    assert found is not None
    assert found.kind is CredentialKind.POD_IDENTITY
    assert found.role_arn is None
    assert f"({', '.join(names)})" in found.evidence
    assert "EKS could not tell: eks:ListPodIdentityAssociations is denied" in found.evidence


def test_eks_not_knowing_the_cluster_leaves_it_to_the_pods(
    kube_system: ControlPlane, stubbed_eks: tuple[client.AwsClients, Stubber]
) -> None:
    clients, eks = stubbed_eks
    for _ in range(2):
        eks.add_client_error(
            "list_pod_identity_associations",
            service_error_code="ResourceNotFoundException",
            http_status_code=404,
            expected_params=ASKED,
        )
    ask = partial(pod_identity.find_association, clients, CLUSTER)
    api = api_for(kube_system.kubeconfig)

    no_pods = sources.read_aws_node_credentials(api, ask)
    aws_node.create_pods(kube_system, count=1)
    with_pods = sources.read_aws_node_credentials(api, ask)

    assert no_pods is None
    assert with_pods is not None
    assert "EKS has no cluster named 'prod'" in with_pods.evidence


def test_an_association_in_eks_is_pod_identity_and_no_association_is_final(
    kube_system: ControlPlane, stubbed_eks: tuple[client.AwsClients, Stubber]
) -> None:
    clients, eks = stubbed_eks
    association = {
        "clusterName": CLUSTER,
        "namespace": "kube-system",
        "serviceAccount": "aws-node",
        "associationId": "a-1",
    }
    eks.add_response("list_pod_identity_associations", {"associations": [association]}, ASKED)
    eks.add_response("list_pod_identity_associations", {"associations": []}, ASKED)
    ask = partial(pod_identity.find_association, clients, CLUSTER)
    api = api_for(kube_system.kubeconfig)

    found = sources.read_aws_node_credentials(api, ask)
    # Pods left with the variables after the association went get no credentials any more.
    aws_node.create_pods(kube_system, count=1)
    gone = sources.read_aws_node_credentials(api, ask)

    assert found is not None
    assert found.association_id == "a-1"
    assert found.evidence == "association a-1 for kube-system/aws-node in EKS cluster prod"
    assert gone is None


def test_irsa_is_read_first_and_a_pod_without_the_variables_keeps_the_node_role(
    kube_system: ControlPlane,
) -> None:
    api = api_for(kube_system.kubeconfig)
    aws_node.create_pods(kube_system, count=1)
    role_arn = "arn:aws:iam::123456789012:role/vpc-cni"

    applied = kube_system.kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [aws_node.pod("aws-node-rolling", pod_identity=False)],
            }
        ),
    )
    assert applied.returncode == 0, applied.stderr
    rolling = sources.read_aws_node_credentials(api)
    kube_system.kubectl(
        "annotate",
        "serviceaccount",
        "aws-node",
        "-n",
        "kube-system",
        f"{sources.IRSA_ANNOTATION}={role_arn}",
    )
    irsa = sources.read_aws_node_credentials(api)

    assert rolling is None  # one pod still takes the node role's credentials
    assert irsa == cluster_members.irsa({sources.IRSA_ANNOTATION: role_arn})


def test_pods_that_cannot_be_listed_are_an_error_naming_the_read_never_none(
    kube_system: ControlPlane, kube_namespace: str
) -> None:
    """Allowed the aws-node ServiceAccount but not pods: the pods' read fails, loudly."""
    reader = "aws-node-reader"
    kube_system.ensure_service_account(kube_namespace, reader)
    kube_system.ensure_service_account("kube-system", "aws-node")
    rbac = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": f"{kube_namespace}-sa", "namespace": "kube-system"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["serviceaccounts"],
                    "resourceNames": ["aws-node"],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{kube_namespace}-sa", "namespace": "kube-system"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{kube_namespace}-sa",
            },
            "subjects": [{"kind": "ServiceAccount", "name": reader, "namespace": kube_namespace}],
        },
    ]
    applied = kube_system.kubectl(
        "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac})
    )
    assert applied.returncode == 0, applied.stderr
    api = api_for(kube_system.kubeconfig_for(kube_namespace, reader))

    with pytest.raises(
        sources.ClusterReadError, match=r"pods k8s-app=aws-node in kube-system.*403"
    ):
        sources.read_aws_node_credentials(api)


def test_moto_serves_no_pod_identity_api_so_eks_cannot_tell(clients: client.AwsClients) -> None:
    """What the tests below and every end-to-end test meet on moto: the pods decide."""
    lookup = pod_identity.find_association(clients, CLUSTER)

    assert lookup == cluster_members.AssociationLookup(
        answered=False,
        why="the EKS endpoint of us-east-1 does not serve ListPodIdentityAssociations",
    )


# ---- sgmesh apply and sgmesh doctor, as a person runs them --------------------------------


def sgmesh(*arguments: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = subprocess.run(
        [sys.executable, "-m", "sgmesh", *arguments],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    return process.returncode, process.stdout, process.stderr


def asg_mesh(path: Path) -> Path:
    document = {
        "apiVersion": "sgmesh.io/v1alpha1",
        "kind": "NodeGroupMesh",
        "metadata": {"name": "airflow"},
        "spec": {"autoScalingGroups": {"names": ["eks-a", "eks-b"]}},
    }
    target = path / "mesh.yaml"
    target.write_text(yaml.safe_dump(document))
    return target


@pytest.fixture
def command_env(world: World) -> dict[str, str]:
    """The environment of a person running sgmesh: moto's AWS (set by `world`), the cluster's
    name and VPC (a cluster EKS does not know), and no in-cluster configuration."""
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    return env | {"SGMESH_CLUSTER_NAME": CLUSTER, "SGMESH_VPC_ID": world.main_vpc.id}


def test_apply_keeps_the_cni_policy_off_node_roles_when_aws_node_uses_pod_identity(
    world: World, kube_system: ControlPlane, command_env: dict[str, str], tmp_path: Path
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    aws_node.create_pods(kube_system, count=2)
    env = command_env | {"KUBECONFIG": str(kube_system.kubeconfig)}

    code, out, err = sgmesh("apply", "-f", str(asg_mesh(tmp_path)), "-o", "json", env=env)

    assert code == 0, err
    assert "no Kubernetes cluster reachable" not in err
    assert (
        "note: aws-node gets its credentials from EKS Pod Identity (the aws-node container" in err
    )
    assert all(CNI_POLICY_ARN not in world.attached_policy_arns(g.role) for g in groups)
    assert not [a for a in json.loads(out)["actions"] if a["kind"] in {"attach", "tag-role"}]

    aws_node.remove_pods(kube_system)
    code, _, err = sgmesh("apply", "-f", str(asg_mesh(tmp_path)), env=env)

    assert code == 0, err
    assert all(CNI_POLICY_ARN in world.attached_policy_arns(g.role) for g in groups)


def test_apply_of_asgs_without_a_reachable_cluster_says_so_and_attaches_as_the_spec_says(
    world: World, command_env: dict[str, str], tmp_path: Path
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    env = command_env | {"KUBECONFIG": str(tmp_path / "no-kubeconfig")}

    code, _, err = sgmesh("apply", "-f", str(asg_mesh(tmp_path)), env=env)

    assert code == 0, err
    assert (
        "note: no Kubernetes cluster reachable: aws-node's credentials not checked; the CNI "
        "policy goes on node roles as cniPolicy.attach says" in err
    )
    assert all(CNI_POLICY_ARN in world.attached_policy_arns(g.role) for g in groups)


class _RefusingEks(http.server.BaseHTTPRequestHandler):
    """EKS answering as on a bad day: no cluster of the name (so the cluster's VPC comes from
    SGMESH_VPC_ID), and a Pod Identity listing refused with an error that means neither "none"
    nor "cannot tell"."""

    def do_GET(self) -> None:
        if self.path.split("?")[0].endswith("/pod-identity-associations"):
            self._error(400, "InvalidRequestException")
        else:
            self._error(404, "ResourceNotFoundException")

    def _error(self, status: int, code: str) -> None:
        body = json.dumps({"message": f"{code} (the test's EKS)"}).encode()
        self.send_response(status)
        self.send_header("x-amzn-ErrorType", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def refusing_eks() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingEks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_apply_stops_before_writing_when_eks_fails_to_answer_for_aws_node(
    world: World,
    kube_system: ControlPlane,
    command_env: dict[str, str],
    refusing_eks: str,
    tmp_path: Path,
) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    env = command_env | {
        "KUBECONFIG": str(kube_system.kubeconfig),
        "AWS_ENDPOINT_URL_EKS": refusing_eks,
    }

    code, out, err = sgmesh("apply", "-f", str(asg_mesh(tmp_path)), env=env)

    assert code == 1, out + err
    assert "aws-node's credentials cannot be told" in err
    assert "ListPodIdentityAssociations failed with InvalidRequestException" in err
    assert "Traceback" not in err
    assert all(not world.describe_ingress(g.security_group_id) for g in groups)  # nothing written


def test_doctor_finds_no_missing_cni_policy_when_aws_node_uses_pod_identity(
    world: World, kube_system: ControlPlane, command_env: dict[str, str]
) -> None:
    nodes = ClusterNodes(world, kube_system.kubectl)
    nodes.clear()
    try:
        for name in ("eks-a", "eks-b"):
            group = world.node_group(name)
            (instance_id,) = nodes.launch(group.asg, group.profile)
            # As EKS tags its nodes: doctor asks EKS about this cluster (moto cannot tell).
            world.clients.ec2.create_tags(
                Resources=[instance_id], Tags=[{"Key": "eks:cluster-name", "Value": CLUSTER}]
            )
            nodes.register(f"{name}-node", instance_id)
        nodes.coredns("coredns-1", "eks-a-node")
        env = command_env | {"KUBECONFIG": str(kube_system.kubeconfig)}

        _, before_out, before_err = sgmesh("doctor", "-o", "json", env=env)
        aws_node.create_pods(kube_system, count=2)
        _, after_out, after_err = sgmesh("doctor", "-o", "json", env=env)
    finally:
        nodes.clear()

    before: dict[str, Any] = json.loads(before_out or "{}")
    after: dict[str, Any] = json.loads(after_out or "{}")
    assert before, before_err
    assert after, after_err
    missing = [f for f in before["findings"] if f["check"] == "CniPolicyMissing"]
    assert sorted(f["nodeGroup"] for f in missing) == ["eks-a", "eks-b"]
    assert before["awsNodeCredentials"] is None
    assert [f for f in after["findings"] if f["check"] == "CniPolicyMissing"] == []
    assert after["awsNodeCredentials"]["kind"] == "PodIdentity"
    assert "does not serve ListPodIdentityAssociations" in after["awsNodeCredentials"]["evidence"]

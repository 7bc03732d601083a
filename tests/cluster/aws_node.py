"""aws-node's pods (the VPC CNI's DaemonSet) in kube-system, as the API server holds them once
the EKS Pod Identity webhook has seen them: objects only (no kubelet runs them).

With a Pod Identity association for kube-system/aws-node, the webhook gives the pods' containers
`AWS_CONTAINER_CREDENTIALS_FULL_URI` (the Pod Identity agent on the node) and
`AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (a projected token), and the AWS SDK in the `aws-node`
container takes its credentials from there instead of the node role.
"""

from __future__ import annotations

import json
from typing import Any

from devtools.k8s.controlplane import ControlPlane

__all__ = ["POD_IDENTITY_ENV", "create_pods", "pod", "remove_pods"]

NAMESPACE = "kube-system"
LABEL = "k8s-app=aws-node"
POD_IDENTITY_ENV = (
    {"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials"},
    {
        "name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "value": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
    },
)


def pod(name: str, pod_identity: bool = True) -> dict[str, Any]:
    """An aws-node pod; with `pod_identity`, as the webhook leaves it."""
    env = [{"name": "AWS_VPC_K8S_CNI_LOGLEVEL", "value": "DEBUG"}]
    if pod_identity:
        env += POD_IDENTITY_ENV
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"k8s-app": "aws-node", "app.kubernetes.io/name": "aws-node"},
        },
        "spec": {
            "serviceAccountName": "aws-node",
            "automountServiceAccountToken": False,
            "containers": [
                {"name": "aws-node", "image": "amazon-k8s-cni:v1.19.2", "env": env},
                {"name": "aws-eks-nodeagent", "image": "aws-network-policy-agent:v1.1.6"},
            ],
        },
    }


def create_pods(cluster: ControlPlane, count: int = 2, pod_identity: bool = True) -> list[str]:
    """`count` aws-node pods (and the ServiceAccount they name); their names."""
    cluster.ensure_service_account(NAMESPACE, "aws-node")
    pods = [pod(f"aws-node-{index}", pod_identity) for index in range(count)]
    applied = cluster.kubectl(
        "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods})
    )
    assert applied.returncode == 0, applied.stderr
    return [p["metadata"]["name"] for p in pods]


def remove_pods(cluster: ControlPlane) -> None:
    """Every aws-node pod, at once (forced: no kubelet confirms their end)."""
    removed = cluster.kubectl(
        "delete",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        LABEL,
        "--ignore-not-found",
        "--grace-period=0",
        "--force",
    )
    assert removed.returncode == 0, removed.stderr

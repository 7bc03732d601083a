"""doctor's reads of the cluster: Nodes, CoreDNS pods, the aws-node ServiceAccount and pods
(whether aws-node has credentials of its own) and, when the CRD is installed, NodeGroupMeshes.
Read-only; deploy/doctor-rbac.yaml grants exactly these.

A failed read is never "nothing there": it raises `ReadError` naming the read and the RBAC to
grant, except the answers that positively say "absent" (a 404 for the aws-node ServiceAccount
or the NodeGroupMesh CRD).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes
import urllib3

from sgmesh.api import models
from sgmesh.engine import cluster_members
from sgmesh.kube import sources

__all__ = ["DnsPod", "KubeNode", "ReadError", "Reader"]

RBAC_FILE = "deploy/doctor-rbac.yaml"
DNS_NAMESPACE = "kube-system"
DNS_LABEL_SELECTOR = "k8s-app=kube-dns"
REQUEST_TIMEOUT_SECONDS = 30

_KUBE_VERBS = {
    "list_node": "list nodes",
    "list_namespaced_pod": "list pods in kube-system",
    "read_namespaced_service_account": "get serviceaccounts in kube-system",
    "list_cluster_custom_object": f"list {models.PLURAL}.{models.API_GROUP}",
}


class ReadError(Exception):
    """A read failed: the message says what and which permission is missing."""


@dataclass(frozen=True)
class KubeNode:
    name: str
    provider_id: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class DnsPod:
    """A scheduled CoreDNS pod: its name, its node, its address when it has one."""

    name: str
    node: str
    pod_ip: str | None


class Reader:
    def __init__(self) -> None:
        try:
            client = sources.connect()
        except sources.ClusterReadError as error:
            raise ReadError(f"Kubernetes: {error}") from None
        self._client = client
        self._core = kubernetes.client.CoreV1Api(client)
        self._custom = kubernetes.client.CustomObjectsApi(client)
        self._server = client.configuration.host

    def _call(self, method: Any, *args: Any, absent_ok: bool = False, **kwargs: Any) -> Any:
        what = _KUBE_VERBS.get(method.__name__, method.__name__)
        try:
            return method(*args, _request_timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
        except kubernetes.client.ApiException as error:
            if error.status == 404 and absent_ok:
                return None
            if error.status in (401, 403):
                raise ReadError(
                    f"Kubernetes API refused to {what} ({error.status} {error.reason}): grant "
                    f"the identity running doctor RBAC to {what} (all its reads: {RBAC_FILE})"
                ) from None
            raise ReadError(
                f"Kubernetes API failed to {what}: {error.status} {error.reason}"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            # The Kubernetes client speaks through urllib3: refused connections, TLS and
            # timeouts arrive as its errors (retries exhausted) or as OSErrors.
            raise ReadError(
                f"Kubernetes API server {self._server} could not be reached to {what}: {error}"
            ) from None

    def nodes(self) -> list[KubeNode]:
        answer = self._call(self._core.list_node)
        return [
            KubeNode(
                name=item.metadata.name,
                provider_id=(item.spec.provider_id or "") if item.spec else "",
                labels=dict(item.metadata.labels or {}),
            )
            for item in answer.items
        ]

    def dns_pods(self) -> list[DnsPod]:
        answer = self._call(
            self._core.list_namespaced_pod, DNS_NAMESPACE, label_selector=DNS_LABEL_SELECTOR
        )
        pods = []
        for pod in answer.items:
            node = pod.spec.node_name if pod.spec else None
            if not node:
                continue  # not scheduled: it serves nobody yet
            pod_ip = pod.status.pod_ip if pod.status else None
            pods.append(DnsPod(pod.metadata.name, node, pod_ip or None))
        return sorted(pods, key=lambda pod: pod.name)

    def aws_node_irsa(self) -> cluster_members.AwsNodeCredentials | None:
        """aws-node's IRSA role, from its ServiceAccount (absent: no IRSA)."""
        account = self._call(
            self._core.read_namespaced_service_account,
            sources.AWS_NODE_SERVICE_ACCOUNT,
            sources.AWS_NODE_NAMESPACE,
            absent_ok=True,
        )
        if account is None or account.metadata is None:
            return None
        return cluster_members.irsa(account.metadata.annotations)

    def aws_node_pods(self) -> list[dict[str, Any]]:
        """aws-node's pods as the API server returns them (their containers' variables show
        EKS Pod Identity)."""
        answer = self._call(
            self._core.list_namespaced_pod,
            sources.AWS_NODE_NAMESPACE,
            label_selector=cluster_members.AWS_NODE_POD_LABELS,
        )
        return [
            self._client.sanitize_for_serialization(pod)  # type: ignore[no-untyped-call]
            for pod in answer.items
        ]

    def meshes(self) -> list[dict[str, Any]]:
        answer = self._call(
            self._custom.list_cluster_custom_object,
            models.API_GROUP,
            models.API_VERSION,
            models.PLURAL,
            absent_ok=True,  # the CRD is not installed: no mesh
        )
        return list(answer.get("items", [])) if answer else []

"""doctor's reads of the cluster: Nodes, every pod (where it runs, its address, its own branch
ENI from the VPC resource controller's `vpc.amazonaws.com/pod-eni` annotation; CoreDNS among
them), the aws-node ServiceAccount and pods (whether aws-node has credentials of its own) and,
when their CRDs are installed, SecurityGroupPolicies and NodeGroupMeshes. Read-only;
deploy/doctor-rbac.yaml grants exactly these.

A failed read is never "nothing there": it raises `ReadError` naming the read and the RBAC to
grant, except the answers that positively say "absent" (a 404 for the aws-node ServiceAccount,
or for the NodeGroupMesh or SecurityGroupPolicy CRD).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes
import urllib3

from sgmesh.api import models
from sgmesh.engine import cluster_members
from sgmesh.kube import sources

__all__ = ["BranchEni", "KubeNode", "KubePod", "ReadError", "Reader"]

RBAC_FILE = "deploy/doctor-rbac.yaml"
DNS_NAMESPACE = "kube-system"
DNS_LABEL = ("k8s-app", "kube-dns")
REQUEST_TIMEOUT_SECONDS = 30
PAGE_SIZE = 500
# The VPC resource controller's record of a pod's branch ENIs (security groups for pods): a
# JSON list of {"eniId", "ifAddress", "privateIp", "ipv6Addr", "vlanId", "subnetCidr", ...}.
POD_ENI_ANNOTATION = "vpc.amazonaws.com/pod-eni"
SECURITY_GROUP_POLICY = ("vpcresources.k8s.aws", "v1beta1", "securitygrouppolicies")

_KUBE_VERBS = {
    "list_node": "list nodes",
    "list_namespaced_pod": "list pods in kube-system",
    "list_pod_for_all_namespaces": "list pods in every namespace",
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
    addresses: tuple[str, ...] = ()  # its InternalIPs


@dataclass(frozen=True)
class BranchEni:
    """One entry of a pod's `vpc.amazonaws.com/pod-eni` annotation."""

    eni_id: str
    private_ip: str | None = None
    ipv6_address: str | None = None


@dataclass(frozen=True)
class KubePod:
    """A scheduled pod with an address of its own (hostNetwork pods share their node's)."""

    namespace: str
    name: str
    node: str
    ip: str | None
    labels: Mapping[str, str]
    branch_enis: tuple[BranchEni, ...] = ()
    # The annotation could not be read: why (the pod is then judged on its node's ENI).
    branch_error: str | None = None

    @property
    def runs_dns(self) -> bool:
        return self.namespace == DNS_NAMESPACE and self.labels.get(DNS_LABEL[0]) == DNS_LABEL[1]


def _branch_enis(annotations: Mapping[str, str]) -> tuple[tuple[BranchEni, ...], str | None]:
    raw = annotations.get(POD_ENI_ANNOTATION)
    if raw is None:
        return (), None
    try:
        entries = json.loads(raw)
        return tuple(
            BranchEni(
                str(entry["eniId"]),
                entry.get("privateIp") or None,
                entry.get("ipv6Addr") or None,
            )
            for entry in entries
        ), None
    except (ValueError, TypeError, KeyError, AttributeError):
        return (), f"annotation {POD_ENI_ANNOTATION} = {raw!r} is not a list of {{eniId, ...}}"


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

    def _call(
        self,
        method: Any,
        *args: Any,
        absent_ok: bool = False,
        what: str | None = None,
        **kwargs: Any,
    ) -> Any:
        what = what or _KUBE_VERBS.get(method.__name__, method.__name__)
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
                addresses=tuple(
                    address.address
                    for address in ((item.status.addresses or []) if item.status else [])
                    if address.type == "InternalIP"
                ),
            )
            for item in answer.items
        ]

    def pods(self) -> list[KubePod]:
        """Every scheduled pod of the cluster that is not on its node's network, read a page
        at a time as plain JSON (a large cluster's pods as client objects take seconds)."""
        pods: list[KubePod] = []
        token: str | None = None
        while True:
            response = self._call(
                self._core.list_pod_for_all_namespaces,
                limit=PAGE_SIZE,
                _continue=token,
                _preload_content=False,
            )
            page = json.loads(response.data)
            for item in page.get("items", []):
                spec, status = item.get("spec", {}), item.get("status", {})
                metadata = item.get("metadata", {})
                if not spec.get("nodeName") or spec.get("hostNetwork"):
                    continue  # not scheduled yet, or on its node's own addresses
                branches, error = _branch_enis(metadata.get("annotations") or {})
                pods.append(
                    KubePod(
                        namespace=metadata.get("namespace", ""),
                        name=metadata.get("name", ""),
                        node=spec["nodeName"],
                        ip=status.get("podIP") or None,
                        labels=dict(metadata.get("labels") or {}),
                        branch_enis=branches,
                        branch_error=error,
                    )
                )
            token = page.get("metadata", {}).get("continue")
            if not token:
                return pods

    def security_group_policies(self) -> list[dict[str, Any]]:
        """The VPC resource controller's SecurityGroupPolicies; none when its CRD is not
        installed."""
        group, version, plural = SECURITY_GROUP_POLICY
        answer = self._call(
            self._custom.list_cluster_custom_object,
            group,
            version,
            plural,
            absent_ok=True,
            what=f"list {plural}.{group}",
        )
        return list(answer.get("items", [])) if answer else []

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

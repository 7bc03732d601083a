"""Read a mesh's Kubernetes member sources from the API server: EC2NodeClasses, ENIConfigs,
and whether aws-node uses IRSA (see `sgmesh.engine.cluster_members` for what they mean).

Only what a spec uses is read: a mesh of ASGs alone needs no cluster. A kind the API server
does not serve (404 on its collection: the CRD, at that version, is not installed) is read as
"not installed"; the aws-node ServiceAccount answering 404 means no IRSA. Every other failure
(RBAC, a timeout, the API server down) raises `ClusterReadError`, naming what was read: it is
never taken as "nothing there".
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, cast

import kubernetes
import urllib3

from sgmesh.api import models
from sgmesh.engine import cluster_members

__all__ = [
    "AWS_NODE_NAMESPACE",
    "AWS_NODE_SERVICE_ACCOUNT",
    "IRSA_ANNOTATION",
    "READ_FAILED",
    "AwsNodeRole",
    "ClusterReadError",
    "connect",
    "list_objects",
    "read",
    "read_aws_node_role",
]

AWS_NODE_NAMESPACE = "kube-system"
AWS_NODE_SERVICE_ACCOUNT = "aws-node"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
REQUEST_TIMEOUT_SECONDS = 10
TOO_MANY_REQUESTS_ATTEMPTS = 4
MAX_RETRY_AFTER_SECONDS = 2.0
_T = TypeVar("_T")
# The status reason of a mesh whose sources could not be read.
READ_FAILED = "KubernetesReadFailed"


class ClusterReadError(Exception):
    """The API server did not answer a read; the message says which read and why."""


def connect() -> kubernetes.client.ApiClient:
    """A client for the current kubeconfig (KUBECONFIG, ~/.kube/config), else the in-cluster
    configuration; `ClusterReadError` when neither is there."""
    try:
        try:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        except (kubernetes.config.ConfigException, OSError):
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except (kubernetes.config.ConfigException, OSError) as error:
        raise ClusterReadError(
            f"no Kubernetes cluster is configured (no kubeconfig, not in a pod): {error}"
        ) from None
    return kubernetes.client.ApiClient()


def read(
    spec: models.NodeGroupMeshSpec,
    api: kubernetes.client.ApiClient | None = None,
    aws_node_role: Callable[[], str | None] | None = None,
) -> cluster_members.ClusterObjects:
    """What the spec's sources need from the cluster.

    `aws_node_role`: how to learn aws-node's IRSA role (the operator passes a cached
    `AwsNodeRole`); by default it is read here when the mesh attaches the CNI policy.
    """
    node_classes = eni_configs = None
    if spec.karpenter is not None:
        node_classes = list_objects(cluster_members.NODE_CLASS, api)
    if spec.custom_networking is not None:
        eni_configs = list_objects(cluster_members.ENI_CONFIG, api)
    role_arn = None
    if spec.cni_policy.attach:
        role_arn = aws_node_role() if aws_node_role is not None else read_aws_node_role(api)
    return cluster_members.ClusterObjects(node_classes, eni_configs, role_arn)


def list_objects(
    kind: cluster_members.SourceKind, api: kubernetes.client.ApiClient | None = None
) -> cluster_members.Listing:
    """Every object of a cluster-scoped kind; not installed when the API server answers 404
    for its collection."""
    custom = kubernetes.client.CustomObjectsApi(api)
    try:
        answer = cast(
            dict[str, Any],
            _patiently(
                partial(
                    custom.list_cluster_custom_object,
                    kind.group,
                    kind.version,
                    kind.plural,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
            ),
        )
    except kubernetes.client.exceptions.ApiException as error:
        if error.status == 404:
            return cluster_members.Listing(installed=False)
        raise ClusterReadError(
            f"listing {kind.crd_name}/{kind.version} failed: {_describe(error)}"
        ) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ClusterReadError(
            f"listing {kind.crd_name}/{kind.version} failed: the API server did not answer "
            f"({error})"
        ) from error
    objects = {
        item["metadata"]["name"]: item
        for item in answer.get("items", [])
        if isinstance(item.get("metadata"), dict) and "name" in item["metadata"]
    }
    return cluster_members.Listing(installed=True, objects=objects)


def read_aws_node_role(api: kubernetes.client.ApiClient | None = None) -> str | None:
    """aws-node's IRSA role ARN, or None when its ServiceAccount does not exist or names none."""
    core = kubernetes.client.CoreV1Api(api)
    where = f"serviceaccount {AWS_NODE_NAMESPACE}/{AWS_NODE_SERVICE_ACCOUNT}"
    try:
        account = _patiently(
            partial(
                core.read_namespaced_service_account,
                AWS_NODE_SERVICE_ACCOUNT,
                AWS_NODE_NAMESPACE,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        )
    except kubernetes.client.exceptions.ApiException as error:
        if error.status == 404:
            return None
        raise ClusterReadError(f"reading {where} failed: {_describe(error)}") from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ClusterReadError(
            f"reading {where} failed: the API server did not answer ({error})"
        ) from error
    annotations = (account.metadata.annotations if account.metadata else None) or {}
    role_arn = annotations.get(IRSA_ANNOTATION)
    return str(role_arn) if role_arn else None


def _patiently(request: Callable[[], _T]) -> _T:
    """The request, sent again when the API server answers 429 (API priority and fairness, or
    a kind's storage still initializing right after its CRD was created), as it asks."""
    for attempt in itertools.count(1):
        try:
            return request()
        except kubernetes.client.exceptions.ApiException as error:
            if error.status != 429 or attempt >= TOO_MANY_REQUESTS_ATTEMPTS:
                raise
            time.sleep(_retry_after(error))
    raise AssertionError("unreachable")


def _retry_after(error: kubernetes.client.exceptions.ApiException) -> float:
    try:
        seconds = float((error.headers or {}).get("Retry-After", 1))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), MAX_RETRY_AFTER_SECONDS)


def _describe(error: kubernetes.client.exceptions.ApiException) -> str:
    if error.status == 403:
        return "403 Forbidden (the operator's RBAC does not allow it; see deploy/rbac)"
    return f"{error.status} {error.reason}"


class AwsNodeRole:
    """aws-node's IRSA role, read at most every `ttl_seconds` and shared by every mesh.

    IRSA is set up once per cluster and rarely changes, so a minute of delay is harmless. A
    failed read keeps the last answer (a setting, not a membership: it never makes a rule go),
    so meshes keep converging while the API server is away; with no answer yet it raises.
    Safe to call from every worker thread at once.
    """

    def __init__(
        self,
        read: Callable[[], str | None] = read_aws_node_role,
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._known: tuple[float, str | None] | None = None

    def __call__(self) -> str | None:
        known = self._known
        if known is not None and self._clock() - known[0] < self._ttl:
            return known[1]
        # One read at a time; while it runs, the others take the last answer rather than
        # wait (a read may take its whole timeout when the API server is away).
        if not self._lock.acquire(blocking=known is None):
            return known[1] if known is not None else None
        try:
            known = self._known
            if known is not None and self._clock() - known[0] < self._ttl:
                return known[1]
            try:
                role_arn = self._read()
            except ClusterReadError:
                if known is None:
                    raise
                # Tried again a period later, not at every reconcile of the outage.
                self._known = (self._clock(), known[1])
                return known[1]
            self._known = (self._clock(), role_arn)
            return role_arn
        finally:
            self._lock.release()

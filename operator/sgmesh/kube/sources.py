"""Read a mesh's Kubernetes member sources from the API server: EC2NodeClasses, ENIConfigs,
SecurityGroupPolicies (of every namespace, named "namespace/name"), and whether aws-node has
credentials of its own, IRSA or EKS Pod Identity (see `sgmesh.engine.cluster_members` for what
they mean).

Only what a spec uses is read. A kind the API server does not serve (404 on its collection:
the CRD, at that version, is not installed) is read as "not installed", and so is a kind whose
CRD is being deleted: the API server serves it until the CRD's objects are gone, which
Karpenter's finalizers on its classes can make last, and a list taken meanwhile says nothing of
the members. The aws-node ServiceAccount answering 404 means no IRSA. Every other failure
(RBAC, a timeout, the API server down) raises `ClusterReadError`, naming what was read: it is
never taken as "nothing there".

EKS is not spoken here: the caller passes how to ask it for aws-node's Pod Identity
association (`sgmesh.aws.pod_identity`), and its AWS errors pass through unchanged.
"""

from __future__ import annotations

import itertools
import json
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
    "AssociationReader",
    "AwsNodeCredentialsCache",
    "ClusterReadError",
    "connect",
    "crd_going",
    "list_aws_node_pods",
    "list_objects",
    "read",
    "read_aws_node_credentials",
    "read_irsa",
]

AWS_NODE_NAMESPACE = cluster_members.AWS_NODE_NAMESPACE
AWS_NODE_SERVICE_ACCOUNT = cluster_members.AWS_NODE_SERVICE_ACCOUNT
IRSA_ANNOTATION = cluster_members.IRSA_ANNOTATION
# How to ask EKS for aws-node's Pod Identity association (`sgmesh.aws.pod_identity`).
AssociationReader = Callable[[], cluster_members.AssociationLookup]
AwsNodeCredentials = cluster_members.AwsNodeCredentials
REQUEST_TIMEOUT_SECONDS = 10
# A CRD's metadata without its schema (tens of kB for Karpenter's), which says all that is asked.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
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
    aws_node_credentials: Callable[[], AwsNodeCredentials | None] | None = None,
) -> cluster_members.ClusterObjects:
    """What the spec's sources need from the cluster.

    `aws_node_credentials`: how to learn aws-node's own credentials (the operator passes a
    cached `AwsNodeCredentialsCache`, the CLI what it read once); by default they are read
    here, without asking EKS, when the mesh attaches the CNI policy.
    """
    node_classes = eni_configs = policies = None
    if spec.karpenter is not None:
        node_classes = list_objects(cluster_members.NODE_CLASS, api)
    if spec.custom_networking is not None:
        eni_configs = list_objects(cluster_members.ENI_CONFIG, api)
    if spec.pod_security_groups is not None:
        policies = list_objects(cluster_members.SECURITY_GROUP_POLICY, api)
    credentials = None
    if spec.cni_policy.attach:
        credentials = (
            aws_node_credentials()
            if aws_node_credentials is not None
            else read_aws_node_credentials(api)
        )
    return cluster_members.ClusterObjects(
        node_classes, eni_configs, credentials, security_group_policies=policies
    )


def list_objects(
    kind: cluster_members.SourceKind, api: kubernetes.client.ApiClient | None = None
) -> cluster_members.Listing:
    """Every object of a kind, by name ("namespace/name" for a namespaced kind, of every
    namespace); not installed when the API server answers 404 for its collection, or when its
    CRD is being deleted or gone after the list (`crd_going`)."""
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
    going = crd_going(kind, api)
    if going:
        return cluster_members.Listing(installed=False, why=going)
    objects = {
        _name(kind, item["metadata"]): item
        for item in answer.get("items", [])
        if isinstance(item.get("metadata"), dict) and "name" in item["metadata"]
    }
    return cluster_members.Listing(installed=True, objects=objects)


def _name(kind: cluster_members.SourceKind, metadata: dict[str, Any]) -> str:
    if kind.namespaced:
        return f"{metadata.get('namespace', '')}/{metadata['name']}"
    return str(metadata["name"])


def crd_going(
    kind: cluster_members.SourceKind, api: kubernetes.client.ApiClient | None = None
) -> str:
    """Why the kind's CRD no longer counts as installed, "" when it does: it is being deleted
    (a `deletionTimestamp`) or is gone.

    Asked after the kind's list, so that a CRD that is neither now was neither while it was
    listed: a deletion is never undone (one deleted and created again between the two reads is
    the exception, and the next reconcile reads both again). One list of CRDs by name, metadata
    only: the operator lists and watches CRDs already (kopf follows them), so it needs no other
    right. Its own watch of the source CRDs (`sgmesh.controller.watches`) is not asked instead:
    it may lag behind, and in the direction that would take a going CRD's emptying list for the
    members.
    """
    extensions = kubernetes.client.ApiextensionsV1Api(api)
    where = f"reading the CRD {kind.crd_name}"
    try:
        # Unparsed (`_preload_content=False`): the client's model cannot hold a
        # PartialObjectMetadataList. An answer that is not 2xx still raises ApiException.
        answer = cast(
            urllib3.HTTPResponse,
            _patiently(
                partial(
                    extensions.list_custom_resource_definition,
                    field_selector=f"metadata.name={kind.crd_name}",
                    _headers={"Accept": METADATA_ONLY},
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
            ),
        )
        try:
            listed = json.loads(answer.read())
        finally:
            answer.release_conn()
    except kubernetes.client.exceptions.ApiException as error:
        raise ClusterReadError(f"{where} failed: {_describe(error)}") from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ClusterReadError(
            f"{where} failed: the API server did not answer ({error})"
        ) from error
    except ValueError as error:
        raise ClusterReadError(f"{where} failed: the answer is not JSON ({error})") from error
    # An empty list comes with `items: null`.
    items = (listed.get("items") or []) if isinstance(listed, dict) else None
    if not isinstance(items, list) or listed.get("kind") != "PartialObjectMetadataList":
        raise ClusterReadError(f"{where} failed: the answer is not a list of CRDs")
    if not items:
        return "its CRD was deleted"
    if any(
        isinstance(item, dict) and (item.get("metadata") or {}).get("deletionTimestamp")
        for item in items
    ):
        return "its CRD is being deleted"
    return ""


def read_irsa(api: kubernetes.client.ApiClient | None = None) -> AwsNodeCredentials | None:
    """aws-node's IRSA role, or None when its ServiceAccount does not exist or names none."""
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
    return cluster_members.irsa(account.metadata.annotations if account.metadata else None)


def list_aws_node_pods(api: kubernetes.client.ApiClient | None = None) -> list[dict[str, Any]]:
    """aws-node's pods (the VPC CNI's DaemonSet) as the API server returns them."""
    core = kubernetes.client.CoreV1Api(api)
    where = f"pods {cluster_members.AWS_NODE_POD_LABELS} in {AWS_NODE_NAMESPACE}"
    try:
        answer = _patiently(
            partial(
                core.list_namespaced_pod,
                AWS_NODE_NAMESPACE,
                label_selector=cluster_members.AWS_NODE_POD_LABELS,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        )
    except kubernetes.client.exceptions.ApiException as error:
        raise ClusterReadError(f"listing {where} failed: {_describe(error)}") from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ClusterReadError(
            f"listing {where} failed: the API server did not answer ({error})"
        ) from error
    return [core.api_client.sanitize_for_serialization(pod) for pod in answer.items]


def read_aws_node_credentials(
    api: kubernetes.client.ApiClient | None = None,
    association: AssociationReader | None = None,
) -> AwsNodeCredentials | None:
    """aws-node's own credentials, or None when it takes the node role's.

    In the order the AWS SDKs take them: IRSA (its ServiceAccount's annotation) first, as
    their chains read a web identity before container credentials; then EKS Pod Identity, as
    `association` (EKS) says; when EKS cannot tell, or there is no `association` to ask, as
    aws-node's pods show it. An EKS answer of "no association" is final: the pods are not
    listed.
    """
    irsa = read_irsa(api)
    if irsa is not None:
        return irsa
    why = "no EKS cluster to ask"
    if association is not None:
        lookup = association()
        if lookup.answered:
            return lookup.credentials
        why = lookup.why
    return cluster_members.pod_identity_of_pods(list_aws_node_pods(api), why)


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


class AwsNodeCredentialsCache:
    """aws-node's own credentials, read at most every `ttl_seconds` and shared by every mesh.

    IRSA and Pod Identity are set up once per cluster and rarely change, so a minute of delay
    is harmless. A read that fails with one of `failures` keeps the last answer (a setting, not
    a membership: it never makes a rule go), so meshes keep converging while the API server or
    EKS is away; with no answer yet it raises. Safe to call from every worker thread at once.
    """

    def __init__(
        self,
        read: Callable[[], AwsNodeCredentials | None] = read_aws_node_credentials,
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        failures: tuple[type[Exception], ...] = (ClusterReadError,),
    ) -> None:
        self._read = read
        self._ttl = ttl_seconds
        self._clock = clock
        self._failures = failures
        self._lock = threading.Lock()
        self._known: tuple[float, AwsNodeCredentials | None] | None = None

    def __call__(self) -> AwsNodeCredentials | None:
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
                credentials = self._read()
            except self._failures:
                if known is None:
                    raise
                # Tried again a period later, not at every reconcile of the outage.
                self._known = (self._clock(), known[1])
                return known[1]
            self._known = (self._clock(), credentials)
            return credentials
        finally:
            self._lock.release()

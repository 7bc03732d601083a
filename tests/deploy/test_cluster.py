"""What ships in deploy/ on the real API server: the renderings are accepted, the
ServiceAccount may do exactly what the role grants, and the operator runs with nothing more."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.aws.world import CNI_POLICY_ARN, World
from devtools.k8s.controlplane import ApiError, ControlPlane
from devtools.operator_harness import Meshes, Operator, wait_until
from tests.cluster.fixtures import apply_established
from tests.deploy.conftest import CRD_NAME, NAMESPACE, SERVICE_ACCOUNT
from tests.deploy.render import (
    DEPLOY,
    REPO_ROOT,
    find,
    helm_template,
    kustomize,
    kustomize_overlay,
    load_objects,
    operator_environment,
)

pytestmark = pytest.mark.kube

PEERING = DEPLOY / "components" / "peering"
NETWORK_POLICY = DEPLOY / "components" / "network-policy"
DEADLINE = 60
Triple = tuple[str, str, str]


def _apply(cluster: ControlPlane, *args: str, stdin: str | None = None) -> str:
    result = cluster.kubectl("apply", *args, stdin=stdin)
    assert result.returncode == 0, f"kubectl apply {' '.join(args)}:\n{result.stderr}"
    return result.stdout


def _ensure_namespace(cluster: ControlPlane, name: str) -> None:
    try:
        cluster.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
    except ApiError as error:
        if error.status != 409:
            raise


# ---- the renderings, validated by the server -----------------------------------------------


def test_api_server_accepts_the_kustomize_base(
    kube_cluster: ControlPlane, base_objects: list[dict[str, Any]]
) -> None:
    # A dry run creates nothing, so the namespace the objects go to must exist beforehand.
    _ensure_namespace(kube_cluster, NAMESPACE)

    output = _apply(kube_cluster, "--dry-run=server", "-k", str(DEPLOY))

    assert output.count("(server dry run)") == len(base_objects), output


def test_kubectl_apply_of_the_crds_directory_installs_the_crd_as_documented(
    kube_cluster: ControlPlane,
) -> None:
    # deploy/README.md: "kubectl apply -f crds/" before an upgrade that changes the CRD.
    assert "`kubectl apply -f crds/`" in (DEPLOY / "README.md").read_text()

    output = apply_established(kube_cluster, "-f", str(REPO_ROOT / "crds"), crds=[CRD_NAME])

    assert f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME}" in output


def test_api_server_accepts_the_helm_chart_in_a_new_namespace(
    kube_cluster: ControlPlane, helm: Path, kube_namespace: str
) -> None:
    rendered = helm_template(
        helm,
        release=kube_namespace,
        namespace=kube_namespace,
        values=["peering.enabled=false", "networkPolicy.enabled=true"],
        include_crds=True,
    )

    output = _apply(kube_cluster, "--dry-run=server", "-f", "-", stdin=rendered)

    kinds = {obj["kind"] for obj in load_objects(rendered)}
    assert {
        "Deployment",
        "ClusterRole",
        "ServiceAccount",
        "CustomResourceDefinition",
        "NetworkPolicy",
    } <= kinds
    assert output.count("(server dry run)") == len(load_objects(rendered))


def test_api_server_accepts_the_peering_component_once_its_crd_is_there(
    kube_cluster: ControlPlane, kubectl: Path, tmp_path: Path
) -> None:
    # Like any custom resource, the peering object cannot be checked before its CRD exists:
    # ArgoCD orders them by wave, Helm installs crds/ first, kubectl users apply twice.
    apply_established(
        kube_cluster, "-f", str(PEERING / "crd.yaml"), crds=["clusterkopfpeerings.kopf.dev"]
    )
    _ensure_namespace(kube_cluster, NAMESPACE)
    overlay = kustomize_overlay(tmp_path, components=[PEERING])

    output = _apply(kube_cluster, "--dry-run=server", "-k", str(overlay))

    assert "clusterkopfpeering.kopf.dev/sgmesh" in output


def test_api_server_accepts_the_network_policy_component(
    kube_cluster: ControlPlane, tmp_path: Path
) -> None:
    _ensure_namespace(kube_cluster, NAMESPACE)
    overlay = kustomize_overlay(tmp_path, components=[NETWORK_POLICY])

    output = _apply(kube_cluster, "--dry-run=server", "-k", str(overlay))

    assert "networkpolicy.networking.k8s.io/sgmesh created (server dry run)" in output


def test_api_server_accepts_the_samples(kube_cluster: ControlPlane, deployed: Path) -> None:
    output = _apply(kube_cluster, "--dry-run=server", "-k", str(DEPLOY / "samples"))

    assert "nodegroupmesh.sgmesh.io/airflow" in output


def test_api_server_refuses_a_sample_made_invalid(
    kube_cluster: ControlPlane, kubectl: Path, deployed: Path
) -> None:
    [sample, *_] = load_objects(kustomize(kubectl, DEPLOY / "samples"))
    sample["spec"]["traffic"] = [{"protocol": "tcp"}]  # tcp needs ports

    refused = kube_cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(sample)
    )

    assert refused.returncode != 0
    assert "fromPort and toPort are required" in refused.stderr


# ---- the ServiceAccount's rights, as the API server enforces them ---------------------------


def _rules(cluster: ControlPlane, token: str, namespace: str) -> set[Triple]:
    review = cluster.request(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace},
        },
        token=token,
    )
    return _triples(review["status"]["resourceRules"])


def _triples(rules: Iterable[Mapping[str, Any]]) -> set[Triple]:
    """(group, resource, verb) of each rule; a rule limited to named objects counts once per
    name, as `resource[name]`, so that it can never pass for a grant on every object."""
    return {
        (group, resource if name is None else f"{resource}[{name}]", verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for name in rule.get("resourceNames") or [None]
        for verb in rule.get("verbs", [])
    }


# The ClusterRole's rules: seen from every namespace.
CLUSTER_WIDE = {
    ("sgmesh.io", "nodegroupmeshes", "list"),
    ("sgmesh.io", "nodegroupmeshes", "watch"),
    ("sgmesh.io", "nodegroupmeshes", "patch"),
    ("sgmesh.io", "nodegroupmeshes/status", "patch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    *(
        (group, resource, verb)
        for group, resource in [
            ("", "nodes"),
            ("karpenter.k8s.aws", "ec2nodeclasses"),
            ("crd.k8s.amazonaws.com", "eniconfigs"),
            ("vpcresources.k8s.aws", "securitygrouppolicies"),
        ]
        for verb in ("get", "list", "watch")
    ),
}


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        (NAMESPACE, CLUSTER_WIDE),
        ("default", CLUSTER_WIDE | {("", "events", "create")}),
        (
            "kube-system",
            CLUSTER_WIDE | {("", "serviceaccounts[aws-node]", "get"), ("", "pods", "list")},
        ),
    ],
)
def test_service_account_may_do_exactly_what_deploy_grants(
    kube_cluster: ControlPlane,
    deployed: Path,
    kube_namespace: str,
    namespace: str,
    expected: set[Triple],
) -> None:
    operator_token = kube_cluster.mint_token(NAMESPACE, SERVICE_ACCOUNT)
    # What any authenticated ServiceAccount may do (discovery, self-reviews) is not deploy's.
    anybody_token = kube_cluster.mint_token(kube_namespace, "anybody")

    granted = _rules(kube_cluster, operator_token, namespace) - _rules(
        kube_cluster, anybody_token, namespace
    )

    assert granted == expected


MESH = {
    "apiVersion": "sgmesh.io/v1alpha1",
    "kind": "NodeGroupMesh",
    "metadata": {"name": "not-yours"},
    "spec": {"autoScalingGroups": {"names": ["eks-a"]}},
}
EVENT = {
    "apiVersion": "v1",
    "kind": "Event",
    "metadata": {"generateName": "sgmesh-"},
    "involvedObject": {"kind": "Pod", "name": "x", "namespace": NAMESPACE},
    "reason": "Test",
    "message": "an event outside namespace default",
}
MESHES = "/apis/sgmesh.io/v1alpha1/nodegroupmeshes"
SERVICE_ACCOUNTS = "/api/v1/namespaces/kube-system/serviceaccounts"
AWS_NODE = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "aws-node"}}
EC2NODECLASSES = "/apis/karpenter.k8s.aws/v1/ec2nodeclasses"
ENICONFIGS = "/apis/crd.k8s.amazonaws.com/v1alpha1/eniconfigs"
SECURITYGROUPPOLICIES = "/apis/vpcresources.k8s.aws/v1beta1/securitygrouppolicies"
KUBE_SYSTEM_PODS = "/api/v1/namespaces/kube-system/pods"
AWS_NODE_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "aws-node-1", "labels": {"k8s-app": "aws-node"}},
    "spec": {"containers": [{"name": "aws-node", "image": "amazon-k8s-cni"}]},
}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", MESHES, MESH, id="create-a-mesh"),
        pytest.param("DELETE", f"{MESHES}/not-yours", None, id="delete-a-mesh"),
        pytest.param("PUT", f"{MESHES}/not-yours", MESH, id="replace-a-mesh"),
        pytest.param("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets", None, id="list-secrets"),
        pytest.param("GET", "/api/v1/configmaps", None, id="list-configmaps"),
        pytest.param("POST", f"/api/v1/namespaces/{NAMESPACE}/events", EVENT, id="event-elsewhere"),
        pytest.param("GET", "/api/v1/namespaces/default/events", None, id="read-events"),
        pytest.param(
            "GET",
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}",
            None,
            id="read-the-crd",
        ),
        pytest.param("GET", "/api/v1/namespaces", None, id="list-namespaces"),
        pytest.param(
            "GET", "/apis/kopf.dev/v1/clusterkopfpeerings", None, id="peering-without-component"
        ),
        # In kube-system, aws-node's ServiceAccount and nothing else; read only.
        pytest.param("GET", SERVICE_ACCOUNTS, None, id="list-kube-system-service-accounts"),
        pytest.param("GET", f"{SERVICE_ACCOUNTS}/coredns", None, id="another-service-account"),
        pytest.param("PUT", f"{SERVICE_ACCOUNTS}/aws-node", AWS_NODE, id="change-aws-node"),
        pytest.param(
            "GET",
            "/api/v1/namespaces/default/serviceaccounts/aws-node",
            None,
            id="aws-node-elsewhere",
        ),
        pytest.param(
            "GET", "/api/v1/namespaces/kube-system/secrets", None, id="kube-system-secrets"
        ),
        pytest.param(
            "GET",
            "/api/v1/namespaces/kube-system/secrets/aws-node",
            None,
            id="kube-system-secret-named-aws-node",
        ),
        pytest.param("GET", "/api/v1/pods", None, id="list-pods"),
        # kube-system's pods are listed (aws-node's, for EKS Pod Identity), nothing more.
        pytest.param("GET", f"{KUBE_SYSTEM_PODS}/aws-node-1", None, id="get-a-kube-system-pod"),
        pytest.param("GET", f"{KUBE_SYSTEM_PODS}?watch=true", None, id="watch-kube-system-pods"),
        pytest.param("POST", KUBE_SYSTEM_PODS, AWS_NODE_POD, id="create-a-kube-system-pod"),
        pytest.param("DELETE", KUBE_SYSTEM_PODS, None, id="delete-kube-system-pods"),
        pytest.param(
            "GET", "/api/v1/namespaces/default/pods", None, id="list-pods-outside-kube-system"
        ),
        # Nodes, node classes and ENIConfigs are read, never written.
        pytest.param("DELETE", "/api/v1/nodes/any", None, id="delete-a-node"),
        pytest.param("PUT", f"{EC2NODECLASSES}/any/status", None, id="write-ec2nodeclass-status"),
        pytest.param("DELETE", f"{EC2NODECLASSES}/any", None, id="delete-an-ec2nodeclass"),
        pytest.param("POST", ENICONFIGS, None, id="create-an-eniconfig"),
    ],
)
def test_service_account_is_refused_what_deploy_does_not_grant(
    kube_cluster: ControlPlane, deployed: Path, method: str, path: str, body: object
) -> None:
    token = kube_cluster.mint_token(NAMESPACE, SERVICE_ACCOUNT)

    with pytest.raises(ApiError) as refused:
        kube_cluster.request(method, path, body, token=token)

    assert refused.value.status == 403, refused.value.body
    assert f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}" in refused.value.body


def test_service_account_reads_nodes_node_classes_eniconfigs_and_the_aws_node_account(
    kube_cluster: ControlPlane,
    deployed: Path,
    ec2nodeclass_crd: str,
    eniconfig_crd: str,
    securitygrouppolicy_crd: str,
) -> None:
    kube_cluster.ensure_service_account("kube-system", "aws-node")
    token = kube_cluster.mint_token(NAMESPACE, SERVICE_ACCOUNT)

    aws_node_pods = f"{KUBE_SYSTEM_PODS}?labelSelector=k8s-app%3Daws-node"
    for path in (
        "/api/v1/nodes",
        EC2NODECLASSES,
        ENICONFIGS,
        SECURITYGROUPPOLICIES,
        aws_node_pods,
    ):
        listed = kube_cluster.request("GET", path, token=token)
        assert listed["kind"].endswith("List"), path
    account = kube_cluster.request("GET", f"{SERVICE_ACCOUNTS}/aws-node", token=token)
    assert account["metadata"]["name"] == "aws-node"


# ---- the operator with deploy/'s rights and nothing more -----------------------------------


def _refusals(operator: Operator) -> list[str]:
    log = operator.log_path.read_text(errors="replace")
    return [line for line in log.splitlines() if "Forbidden" in line or "forbidden" in line]


def _converge_and_delete(world: World, meshes: Meshes, operator: Operator) -> None:
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create(
        "airflow",
        {
            "autoScalingGroups": {"names": ["eks-a", "eks-b"]},
            "cniPolicy": {"retainOnRemoval": False},
            "resyncSeconds": 10,
        },
    )
    mesh = meshes.wait_ready("airflow", DEADLINE, operator.log_tail)
    assert mesh["status"]["rules"] == {"desired": 4, "present": 4, "owned": 4}
    assert mesh["metadata"]["finalizers"] == ["sgmesh.io/finalizer"]
    meshes.wait_events(
        "airflow",
        lambda events: {"RulesAuthorized", "PolicyAttached"} <= {e.reason for e in events},
        "RulesAuthorized and PolicyAttached",
        context=operator.log_tail,
    )

    meshes.delete("airflow")

    wait_until(
        lambda: meshes.get("airflow") is None, DEADLINE, "the mesh is gone", operator.log_tail
    )
    assert all(CNI_POLICY_ARN not in world.attached_policy_arns(g.role) for g in groups)


def test_operator_as_the_service_account_converges_and_cleans_up_unrefused(
    world: World, meshes: Meshes, operator: Operator
) -> None:
    _converge_and_delete(world, meshes, operator)

    assert _refusals(operator) == []


@pytest.fixture
def peering_deployed(
    kube_cluster: ControlPlane, kubectl: Path, deployed: Path, tmp_path: Path
) -> Iterator[str]:
    """deploy/ with its peering component applied for real; the peering name. Afterwards the
    component's objects go again, so that the ServiceAccount is back to the base's rights."""
    overlay = kustomize_overlay(tmp_path / "overlay", components=[PEERING])
    apply_established(
        kube_cluster, "-f", str(PEERING / "crd.yaml"), crds=["clusterkopfpeerings.kopf.dev"]
    )
    _apply(kube_cluster, "-k", str(overlay))
    deployment = find(load_objects(kustomize(kubectl, overlay)), "Deployment")
    yield operator_environment(deployment)["SGMESH_PEERING"]
    for obj in load_objects((PEERING / "role.yaml").read_text()) + load_objects(
        (PEERING / "role_binding.yaml").read_text()
    ):
        kube_cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"])
    _apply(kube_cluster, "-k", str(DEPLOY))


def test_operator_with_peering_as_the_service_account_converges_unrefused(
    kube_cluster: ControlPlane,
    peering_deployed: str,
    world: World,
    meshes: Meshes,
    start_operator: Callable[..., Operator],
) -> None:
    peering = peering_deployed

    operator = start_operator(extra_args=("--peering", peering))

    def registered() -> bool:
        found = kube_cluster.kubectl("get", "clusterkopfpeering", peering, "-o", "json")
        return found.returncode == 0 and bool(json.loads(found.stdout).get("status"))

    wait_until(registered, DEADLINE, "the operator registers in its peering", operator.log_tail)
    _converge_and_delete(world, meshes, operator)
    assert _refusals(operator) == []


ACTIVE = "sgmesh_active_replica"


def test_two_replicas_with_peering_leave_exactly_one_active_and_hand_over(
    kube_cluster: ControlPlane,
    peering_deployed: str,
    world: World,
    meshes: Meshes,
    start_operator: Callable[..., Operator],
) -> None:
    peering = peering_deployed
    first = start_operator(extra_args=("--peering", peering))

    def peers() -> int:
        found = kube_cluster.kubectl("get", "clusterkopfpeering", peering, "-o", "json")
        return len(json.loads(found.stdout).get("status") or {}) if found.returncode == 0 else 0

    wait_until(lambda: peers() == 1, DEADLINE, "the first replica registers", first.log_tail)
    second = start_operator(extra_args=("--peering", peering))
    wait_until(lambda: peers() == 2, DEADLINE, "the second replica registers", second.log_tail)
    world.node_group("eks-a")
    world.node_group("eks-b")
    meshes.create("one", {"autoScalingGroups": {"names": ["eks-a"]}})
    meshes.wait_ready("one", DEADLINE, first.log_tail)

    def worked(operator: Operator) -> bool:
        return "Handler 'converge_on_change' succeeded" in operator.log_path.read_text(
            errors="replace"
        )

    # Exactly one active: the older replica reconciled, the newer one stayed paused, and each
    # says so in sgmesh_active_replica (what SgmeshNoActiveReplica reads).
    assert worked(first)
    assert not worked(second)
    assert "Resuming operations" not in second.log_path.read_text(errors="replace")
    wait_until(
        lambda: (first.metric(ACTIVE), second.metric(ACTIVE)) == (1, 0),
        DEADLINE,
        "the first replica says it works, the second that it is paused",
        second.log_tail,
    )

    first.stop(kill=True)  # no goodbye: its peering record must expire
    meshes.create("two", {"autoScalingGroups": {"names": ["eks-b"]}})

    meshes.wait_ready("two", DEADLINE, second.log_tail)
    assert worked(second)
    wait_until(
        lambda: second.metric(ACTIVE) == 1, DEADLINE, "the second replica works", second.log_tail
    )

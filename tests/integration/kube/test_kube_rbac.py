"""RBAC is enforced for real: a ServiceAccount gets exactly what its role grants."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.k8s.controlplane import ControlPlane
from tests.integration.kube.meshes import create, mesh_manifest

pytestmark = pytest.mark.kube

SPEC: dict[str, Any] = {"autoScalingGroups": {"names": ["eks-a"]}}


def _grant_get_only(cluster: ControlPlane, namespace: str, service_account: str) -> None:
    # NodeGroupMesh is cluster-scoped, so the role has to be a ClusterRole: a namespaced Role
    # cannot grant anything on it.
    role = f"{namespace}-nodegroupmesh-get"
    cluster.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": [
                {"apiGroups": ["sgmesh.io"], "resources": ["nodegroupmeshes"], "verbs": ["get"]}
            ],
        },
    )
    cluster.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
            ],
        },
    )


def test_get_only_service_account_can_get_but_not_create(
    kube_cluster: ControlPlane, nodegroupmesh_crd: str, kube_namespace: str
) -> None:
    assert create(kube_cluster, mesh_manifest(f"{kube_namespace}-seen", SPEC)).returncode == 0
    kube_cluster.ensure_service_account(kube_namespace, "reader")
    _grant_get_only(kube_cluster, kube_namespace, "reader")
    reader = kube_cluster.kubeconfig_for(kube_namespace, "reader")

    got = kube_cluster.kubectl("get", "ngm", f"{kube_namespace}-seen", kubeconfig=reader)
    assert got.returncode == 0, got.stderr

    refused = create(kube_cluster, mesh_manifest(f"{kube_namespace}-new", SPEC), kubeconfig=reader)
    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr
    assert (
        f'User "system:serviceaccount:{kube_namespace}:reader" cannot create resource '
        '"nodegroupmeshes" in API group "sgmesh.io" at the cluster scope'
    ) in refused.stderr

    listed = kube_cluster.kubectl("get", "ngm", kubeconfig=reader)
    assert listed.returncode != 0
    assert 'cannot list resource "nodegroupmeshes"' in listed.stderr


def test_service_account_without_binding_cannot_get(
    kube_cluster: ControlPlane, nodegroupmesh_crd: str, kube_namespace: str
) -> None:
    assert create(kube_cluster, mesh_manifest(f"{kube_namespace}-hidden", SPEC)).returncode == 0
    nobody = kube_cluster.kubeconfig_for(kube_namespace, "nobody")
    got = kube_cluster.kubectl("get", "ngm", f"{kube_namespace}-hidden", kubeconfig=nobody)
    assert got.returncode != 0
    assert 'cannot get resource "nodegroupmeshes"' in got.stderr

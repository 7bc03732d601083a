"""Status is a subresource: the operator's status writes never look like spec changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devtools.k8s.controlplane import ControlPlane
from tests.integration.kube.meshes import create, get_mesh, mesh_manifest

pytestmark = pytest.mark.kube

SPEC: dict[str, Any] = {"autoScalingGroups": {"names": ["eks-a", "eks-b"]}}


def _patch(cluster: ControlPlane, name: str, patch: dict[str, Any], *extra: str) -> None:
    result = cluster.kubectl("patch", "ngm", name, "--type=merge", "-p", json.dumps(patch), *extra)
    assert result.returncode == 0, result.stderr


def test_status_write_does_not_bump_generation(
    kube_cluster: ControlPlane, nodegroupmesh_crd: str
) -> None:
    assert create(kube_cluster, mesh_manifest("status-write", SPEC)).returncode == 0
    before = get_mesh(kube_cluster, "status-write")
    assert before["metadata"]["generation"] == 1

    _patch(
        kube_cluster, "status-write", {"status": {"observedGeneration": 1}}, "--subresource=status"
    )

    after = get_mesh(kube_cluster, "status-write")
    assert after["status"]["observedGeneration"] == 1
    assert after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
    assert after["metadata"]["generation"] == 1


def test_spec_change_bumps_generation(kube_cluster: ControlPlane, nodegroupmesh_crd: str) -> None:
    assert create(kube_cluster, mesh_manifest("spec-change", SPEC)).returncode == 0
    _patch(kube_cluster, "spec-change", {"spec": {"autoScalingGroups": {"names": ["eks-c"]}}})
    assert get_mesh(kube_cluster, "spec-change")["metadata"]["generation"] == 2


def test_status_sent_to_the_main_resource_is_ignored(
    kube_cluster: ControlPlane, nodegroupmesh_crd: str
) -> None:
    assert create(kube_cluster, mesh_manifest("status-ignored", SPEC)).returncode == 0
    _patch(kube_cluster, "status-ignored", {"status": {"observedGeneration": 7}})
    mesh = get_mesh(kube_cluster, "status-ignored")
    assert "observedGeneration" not in mesh.get("status", {})
    assert mesh["metadata"]["generation"] == 1

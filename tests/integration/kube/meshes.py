"""NodeGroupMesh manifests for the API-server tests, created and read with kubectl."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from devtools.k8s.controlplane import ControlPlane


def mesh_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "sgmesh.io/v1alpha1",
        "kind": "NodeGroupMesh",
        "metadata": {"name": name},
        "spec": spec,
    }


def create(
    cluster: ControlPlane, manifest: dict[str, Any], kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`kubectl create -f -`: what a user typing the manifest would see."""
    return cluster.kubectl("create", "-f", "-", stdin=json.dumps(manifest), kubeconfig=kubeconfig)


def get_mesh(cluster: ControlPlane, name: str) -> dict[str, Any]:
    result = cluster.kubectl("get", "nodegroupmesh", name, "-o", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))

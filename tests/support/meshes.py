"""NodeGroupMesh documents for tests that run the pipeline without the API server."""

from __future__ import annotations

from typing import Any

from sgmesh.api import models

__all__ = ["node_group_mesh"]


def node_group_mesh(name: str = "mesh", **spec: Any) -> models.NodeGroupMesh:
    """The mesh `name` with this spec, validated as the operator validates a body."""
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": name},
            "spec": spec,
        }
    )

"""How the mesh marks what it made in AWS, and how it recognises those marks.

One tag key per mesh, `sgmesh.io/<cluster>/<mesh>`, on every security-group rule the mesh
created or co-owns (value `owned`) and on every IAM role whose CNI attachment it made (value:
the policy ARN). Anything that carries no `sgmesh.io/` key belongs to somebody else.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sgmesh import models

__all__ = ["OWNED", "OWNER_TAG_PREFIX", "Owner", "other_mesh_keys"]

OWNER_TAG_PREFIX = "sgmesh.io/"
OWNED = "owned"


@dataclass(frozen=True)
class Owner:
    """A mesh as an owner of AWS things: the cluster it runs in and its name."""

    cluster: str
    mesh: str

    def __post_init__(self) -> None:
        models.validate_cluster_name(self.cluster)

    @property
    def tag_key(self) -> str:
        return f"{OWNER_TAG_PREFIX}{self.cluster}/{self.mesh}"

    @property
    def rule_description(self) -> str:
        return f"sgmesh {self.cluster}/{self.mesh}: node group mesh traffic"

    def owns(self, tags: Mapping[str, str]) -> bool:
        return self.tag_key in tags


def other_mesh_keys(tags: Mapping[str, str], owner: Owner) -> frozenset[str]:
    """The ownership keys of meshes other than `owner` found in `tags`."""
    return frozenset(
        key for key in tags if key.startswith(OWNER_TAG_PREFIX) and key != owner.tag_key
    )

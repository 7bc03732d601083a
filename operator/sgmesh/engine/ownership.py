"""How the mesh marks what it made in AWS, and how it recognises those marks.

One tag key per mesh, `sgmesh.io/<cluster>/<mesh>`, on every security-group rule the mesh
created or co-owns (value `owned`) and on every IAM role whose CNI attachment it made (value:
the policy ARN). Anything that carries no `sgmesh.io/` key belongs to somebody else — with one
exception: a rule whose description says sgmesh made it (`sgmesh <cluster>/<mesh>: ...`, written
at creation) but that carries no owner tag is an *orphan* (its tags were removed by hand, or a
race left it without an owner). sgmesh made it, so a mesh that wants it adopts it and the mesh
that made it revokes it when it no longer wants it; it never stays open with nobody in charge.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sgmesh.api import models

__all__ = [
    "OWNED",
    "OWNER_TAG_PREFIX",
    "Owner",
    "creator",
    "foreign",
    "is_orphan",
    "joinable",
    "may_revoke",
    "orphan_made_by",
    "other_mesh_keys",
    "owned_by_any_mesh",
]

OWNER_TAG_PREFIX = "sgmesh.io/"
OWNED = "owned"
_DESCRIPTION_PREFIX = "sgmesh "
_DESCRIPTION_SUFFIX = ": node group mesh traffic"


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
        return f"{_DESCRIPTION_PREFIX}{self.cluster}/{self.mesh}{_DESCRIPTION_SUFFIX}"

    def owns(self, tags: Mapping[str, str]) -> bool:
        return self.tag_key in tags


def other_mesh_keys(tags: Mapping[str, str], owner: Owner) -> frozenset[str]:
    """The ownership keys of meshes other than `owner` found in `tags`."""
    return frozenset(
        key for key in tags if key.startswith(OWNER_TAG_PREFIX) and key != owner.tag_key
    )


def owned_by_any_mesh(tags: Mapping[str, str]) -> bool:
    return any(key.startswith(OWNER_TAG_PREFIX) for key in tags)


def creator(description: str) -> Owner | None:
    """The mesh whose description a rule carries, i.e. the mesh that created it, if any."""
    if not (
        description.startswith(_DESCRIPTION_PREFIX) and description.endswith(_DESCRIPTION_SUFFIX)
    ):
        return None
    cluster, _, mesh = description[len(_DESCRIPTION_PREFIX) : -len(_DESCRIPTION_SUFFIX)].rpartition(
        "/"
    )
    if not cluster or not mesh:
        return None
    try:
        return Owner(cluster, mesh)
    except models.InvalidSpecError:
        return None


def is_orphan(tags: Mapping[str, str], description: str) -> bool:
    """sgmesh made the rule (its description says so) and no mesh owns it any more."""
    return not owned_by_any_mesh(tags) and creator(description) is not None


def orphan_made_by(owner: Owner, tags: Mapping[str, str], description: str) -> bool:
    """An orphan `owner` made: still its own to revoke, though it lost its tag."""
    return is_orphan(tags, description) and creator(description) == owner


def may_revoke(owner: Owner, tags: Mapping[str, str], description: str) -> bool:
    """Whether `owner` may revoke the rule outright: it holds the rule's tag alone, or the rule
    is an orphan it made. A rule another mesh (also) owns is released, never revoked."""
    if other_mesh_keys(tags, owner):
        return False
    return owner.owns(tags) or orphan_made_by(owner, tags, description)


def joinable(tags: Mapping[str, str], description: str) -> bool:
    """Whether a mesh that wants the rule may add its tag: another mesh owns it, or sgmesh made
    it and nobody owns it any more. A rule sgmesh did not make is never tagged."""
    return owned_by_any_mesh(tags) or is_orphan(tags, description)


def foreign(tags: Mapping[str, str], description: str) -> bool:
    """Somebody else's rule: no mesh owns it and sgmesh did not make it. It is never revoked,
    edited or tagged, and it stays while its owner wants it: a permission it admits is
    present (coverage), without a rule of the mesh's own."""
    return not owned_by_any_mesh(tags) and creator(description) is None

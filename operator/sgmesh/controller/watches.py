"""kopf watches that nudge meshes when the cluster changes (see `sgmesh.controller.nudges`).

- NodeGroupMeshes: their latest bodies, so a nudged reconcile works from the current spec.
- Nodes: a node that registers, or gets its `spec.providerID`, may be the first of a new ASG a
  mesh's selector matches: the meshes that list ASGs are nudged (within a few seconds, in
  batches: 100 nodes joining at once cost a few reconciles, not 100).
- EC2NodeClasses, ENIConfigs and SecurityGroupPolicies: a change to what one contributes (its
  SGs, its role or instance profile), its creation or deletion nudges the meshes that list it,
  within a second. Other changes (Karpenter's status conditions, labels, a policy's pod
  selector) nudge nothing.
- The CRDs of those kinds: installed, established or deleted, they nudge the meshes using
  the kind, so a mesh starts using a source as soon as its CRD appears, without a restart; once
  established, kopf is made to watch the kind even when API discovery lags behind the CRD
  (`sgmesh.controller.serving`).

kopf watches a kind only while the API server serves it (the operator follows CRDs), so a
cluster without Karpenter, custom networking or security groups for pods costs nothing and
never fails.

They read nothing from AWS and write nothing themselves; what they need lives in `Watching`,
kept in kopf's memo.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from sgmesh.api import models
from sgmesh.controller import nudges, serving
from sgmesh.engine import cluster_members

__all__ = ["Watching"]

MESHES = (models.API_GROUP, models.API_VERSION, models.PLURAL)
SOURCE_KINDS = {kind.crd_name: kind for kind in cluster_members.SOURCE_KINDS}
# A node's first registration: wait this long for the rest of a burst, and start batches this
# far apart. A new ASG's SGs join within about delay + gap + one reconcile (goal: 5 s).
NODE_DELAY_SECONDS = 1.0
NODE_GAP_SECONDS = 2.0
# An EC2NodeClass, ENIConfig or SecurityGroupPolicy change (goal: reconciled within 2 s).
SOURCE_DELAY_SECONDS = 0.2


@dataclass
class Watching:
    """What the watches keep between events, and where they send nudges."""

    meshes: nudges.MeshIndex
    nodes: nudges.Debounce
    sources: nudges.Debounce
    # Node name → its providerID, as last seen.
    node_providers: dict[str, str] = field(default_factory=dict)
    # (CRD name, object name: "namespace/name" when namespaced) → what the object contributes,
    # as last seen.
    contributions: dict[tuple[str, str], cluster_members.ClusterMember] = field(
        default_factory=dict
    )
    # CRD name → whether it was last seen served (established, not being deleted).
    served: dict[str, bool] = field(default_factory=dict)
    # Told how many nodes are known (a metric).
    count_nodes: Callable[[int], None] = lambda _: None
    # Makes sure kopf watches a CRD's kind once the CRD is established
    # (`sgmesh.controller.serving.serve_once_established`); whether it does.
    serve: Callable[[Mapping[str, Any]], Awaitable[bool]] = serving.served_already


@kopf.on.event(*MESHES)
async def index_mesh(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Keep every mesh's latest body (a nudged reconcile reads it)."""
    watching: Watching = memo.watching
    if type == "DELETED" or body.metadata.deletion_timestamp:
        watching.meshes.forget(body.metadata.name or "")
    else:
        watching.meshes.update(dict(body))


@kopf.on.event("", "v1", "nodes")
async def node_registered(
    body: kopf.Body, type: str | None, name: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """A node that is new, or newly has a providerID, nudges the meshes listing ASGs."""
    watching: Watching = memo.watching
    node = name or ""
    if type == "DELETED":
        watching.node_providers.pop(node, None)
        watching.count_nodes(len(watching.node_providers))
        return
    provider = body.spec.get("providerID")
    if not provider or watching.node_providers.get(node) == provider:
        return
    watching.node_providers[node] = str(provider)
    watching.count_nodes(len(watching.node_providers))
    watching.nodes.request(watching.meshes.with_auto_scaling_groups())


async def _source_changed(
    memo: kopf.Memo,
    kind: cluster_members.SourceKind,
    name: str | None,
    body: Mapping[str, Any] | None,
) -> None:
    """Nudge the meshes listing this object when what it contributes changed."""
    watching: Watching = memo.watching
    key = (kind.crd_name, name or "")
    if body is None:
        if watching.contributions.pop(key, None) is None:
            return
    else:
        contribution = cluster_members.member(kind, name or "", body)
        if watching.contributions.get(key) == contribution:
            return
        watching.contributions[key] = contribution
    watching.sources.request(watching.meshes.naming(kind, name))


@kopf.on.event(
    cluster_members.NODE_CLASS.group,
    cluster_members.NODE_CLASS.version,
    cluster_members.NODE_CLASS.plural,
)
async def node_class_changed(
    body: kopf.Body, type: str | None, name: str | None, memo: kopf.Memo, **_: Any
) -> None:
    await _source_changed(
        memo, cluster_members.NODE_CLASS, name, None if type == "DELETED" else dict(body)
    )


@kopf.on.event(
    cluster_members.ENI_CONFIG.group,
    cluster_members.ENI_CONFIG.version,
    cluster_members.ENI_CONFIG.plural,
)
async def eni_config_changed(
    body: kopf.Body, type: str | None, name: str | None, memo: kopf.Memo, **_: Any
) -> None:
    await _source_changed(
        memo, cluster_members.ENI_CONFIG, name, None if type == "DELETED" else dict(body)
    )


@kopf.on.event(
    cluster_members.SECURITY_GROUP_POLICY.group,
    cluster_members.SECURITY_GROUP_POLICY.version,
    cluster_members.SECURITY_GROUP_POLICY.plural,
)
async def security_group_policy_changed(
    body: kopf.Body,
    type: str | None,
    name: str | None,
    namespace: str | None,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    await _source_changed(
        memo,
        cluster_members.SECURITY_GROUP_POLICY,
        f"{namespace or ''}/{name or ''}",
        None if type == "DELETED" else dict(body),
    )


@kopf.on.event(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    when=lambda name, **_: name in SOURCE_KINDS,
)
async def source_crd_changed(
    body: kopf.Body, type: str | None, name: str | None, memo: kopf.Memo, **_: Any
) -> None:
    await source_crd_event(memo.watching, name or "", type, dict(body))


async def source_crd_event(
    watching: Watching, crd: str, type: str | None, body: Mapping[str, Any]
) -> None:
    """A source's CRD became served or stopped being served: its meshes re-read the cluster,
    and kopf watches the kind's objects from then on (even when API discovery lags behind the
    CRD), so that their changes nudge too."""
    served = (
        type != "DELETED"
        and serving.established(body)
        and not (body.get("metadata") or {}).get("deletionTimestamp")
    )
    if watching.served.get(crd) == served:
        return
    watching.served[crd] = served
    watching.sources.request(watching.meshes.naming(SOURCE_KINDS[crd]))
    if served:
        await watching.serve(body)

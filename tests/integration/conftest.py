"""Fixtures of the integration tests that reach the API server as doctor does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.aws.world import World
from devtools.k8s.controlplane import ControlPlane
from devtools.nodes import ClusterNodes


@pytest.fixture
def cluster_nodes(
    world: World, kube_cluster: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ClusterNodes]:
    """Nodes and pods of this test only; doctor reaches the API server via KUBECONFIG."""
    nodes = ClusterNodes(world, kube_cluster.kubectl)
    nodes.clear()
    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield nodes
    nodes.clear()

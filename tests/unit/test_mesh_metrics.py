"""The metrics of meshes read from their objects at scrape time (`metrics.MeshCollector`): the
conditions with their reasons and transition times, the last sync, the resync period."""

from __future__ import annotations

from typing import Any

import prometheus_client

from sgmesh.controller import metrics


def _mesh(name: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec, "status": status}


def _samples(
    registry: prometheus_client.CollectorRegistry, name: str
) -> dict[tuple[Any, ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    }


def test_meshes_are_exported_as_their_objects_say() -> None:
    bodies = [
        _mesh(
            "airflow",
            {"resyncSeconds": 300},
            {
                "lastSyncTime": "2026-01-02T03:04:05Z",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "AccessDenied",
                        "lastTransitionTime": "2026-01-02T03:00:00Z",
                    }
                ],
            },
        ),
        _mesh("new", {}, {}),
    ]
    exported = metrics.Metrics()
    exported.follow_meshes(lambda: bodies, 60)
    registry = exported.registry

    assert _samples(registry, "sgmesh_mesh_condition") == {
        (
            ("condition", "Ready"),
            ("mesh", "airflow"),
            ("reason", "AccessDenied"),
            ("status", "False"),
        ): 1
    }
    assert _samples(registry, "sgmesh_mesh_condition_transition_timestamp_seconds") == {
        (("condition", "Ready"), ("mesh", "airflow")): 1767322800.0
    }
    assert _samples(registry, "sgmesh_mesh_last_sync_timestamp_seconds") == {
        (("mesh", "airflow"),): 1767323045.0
    }
    assert _samples(registry, "sgmesh_mesh_resync_period_seconds") == {
        (("mesh", "airflow"),): 300,
        (("mesh", "new"),): 60,
    }


def test_a_deleted_mesh_leaves_no_series_and_bad_times_are_left_out() -> None:
    bodies = [
        _mesh(
            "odd",
            {"resyncSeconds": "soon"},
            {
                "lastSyncTime": "yesterday",
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Reconciled"},
                    "not a condition",
                ],
            },
        )
    ]
    exported = metrics.Metrics()
    exported.follow_meshes(lambda: bodies, 60)

    assert _samples(exported.registry, "sgmesh_mesh_last_sync_timestamp_seconds") == {}
    assert _samples(exported.registry, "sgmesh_mesh_condition_transition_timestamp_seconds") == {}
    assert _samples(exported.registry, "sgmesh_mesh_resync_period_seconds") == {
        (("mesh", "odd"),): 60
    }

    bodies.clear()

    assert _samples(exported.registry, "sgmesh_mesh_condition") == {}
    assert _samples(exported.registry, "sgmesh_mesh_resync_period_seconds") == {}


def test_a_replica_peering_paused_exports_no_mesh() -> None:
    bodies = [_mesh("airflow", {}, {"conditions": [{"type": "Ready", "status": "True"}]})]
    working = [True]
    exported = metrics.Metrics()
    exported.follow_meshes(lambda: bodies, 60, working=lambda: working[0])
    registry = exported.registry
    assert registry.get_sample_value("sgmesh_active_replica") == 1
    assert _samples(registry, "sgmesh_mesh_condition")

    working[0] = False

    assert _samples(registry, "sgmesh_mesh_condition") == {}
    assert _samples(registry, "sgmesh_mesh_resync_period_seconds") == {}

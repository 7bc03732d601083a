"""ArgoCD: the NodeGroupMesh health check (Lua 5.1, as ArgoCD runs it) maps status to
Healthy, Progressing and Degraded; the kustomize component puts it into argocd-cm; the example
Applications point at this repository and their settings render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sgmesh.controller import status
from tests.deploy.render import (
    CHART,
    DEPLOY,
    REPO_ROOT,
    find,
    helm_template,
    kustomize,
    kustomize_overlay,
    load_objects,
    operator_environment,
)
from tests.support.lua import Health, run_health_script

ARGOCD = DEPLOY / "argocd"
HEALTH_SCRIPT = ARGOCD / "health" / "health.lua"
HEALTH_KEY = "resource.customizations.health.sgmesh.io_NodeGroupMesh"


def _mesh(generation: int, mesh_status: dict[str, Any] | None) -> dict[str, Any]:
    mesh: dict[str, Any] = {
        "apiVersion": "sgmesh.io/v1alpha1",
        "kind": "NodeGroupMesh",
        "metadata": {"name": "airflow", "generation": generation},
        "spec": {"autoScalingGroups": {"names": ["eks-a"]}},
    }
    if mesh_status is not None:
        mesh["status"] = mesh_status
    return mesh


def _written(ready: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    """A status as the operator writes it (its own code builds it)."""
    verdict = status.Verdict(ready, reason, message)
    return {
        "observedGeneration": generation,
        "conditions": [status.ready_condition(verdict, generation, None)],
        "kopf": {"progress": {}},
    }


def _health(mesh: dict[str, Any]) -> Health:
    return run_health_script(HEALTH_SCRIPT.read_text(), mesh)


def test_ready_mesh_is_healthy() -> None:
    message = "2 members, 4/4 rules present, 4 owned"
    mesh = _mesh(3, _written(True, status.RECONCILED, message, 3))

    assert _health(mesh) == Health("Healthy", message)


def test_dry_run_mesh_with_pending_actions_is_healthy() -> None:
    message = "8 actions pending; DryRun writes nothing (see status.pendingActions)"
    mesh = _mesh(1, _written(True, status.DRY_RUN, message, 1))

    assert _health(mesh) == Health("Healthy", message)


def test_mesh_without_status_is_progressing() -> None:
    assert _health(_mesh(1, None)).status == "Progressing"


def test_mesh_with_only_kopf_bookkeeping_is_progressing() -> None:
    assert _health(_mesh(1, {"kopf": {"progress": {"x": {}}}})).status == "Progressing"


def test_mesh_whose_status_is_for_an_older_generation_is_progressing() -> None:
    mesh = _mesh(4, _written(True, status.RECONCILED, "2 members", 3))

    health = _health(mesh)

    assert health.status == "Progressing"
    assert "generation 4" in health.message


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("AutoScalingGroupNotFound", "Auto Scaling group eks-typo does not exist in this region"),
        ("AwsUnavailable", "connection failed with EndpointConnectionError: could not connect"),
        (
            "AccessDenied",
            "access denied to AuthorizeSecurityGroupIngress: grant the operator's role",
        ),
    ],
)
def test_mesh_not_ready_is_degraded_with_the_condition_message(reason: str, message: str) -> None:
    mesh = _mesh(2, _written(False, reason, message, 2))

    assert _health(mesh) == Health("Degraded", message)


def test_failure_without_message_is_degraded_with_its_reason() -> None:
    mesh = _mesh(1, status.failure_status(status.INVALID_SPEC, "", 1, None))

    assert _health(mesh) == Health("Degraded", status.INVALID_SPEC)


def test_ready_unknown_is_progressing() -> None:
    condition = {"type": "Ready", "status": "Unknown", "reason": "Pending", "message": "soon"}
    mesh = _mesh(1, {"observedGeneration": 1, "conditions": [condition]})

    assert _health(mesh) == Health("Progressing", "soon")


def test_health_component_merges_the_script_into_argocd_cm(kubectl: Path, tmp_path: Path) -> None:
    # An ArgoCD installed with kustomize: its install manifest (argocd-cm without a namespace,
    # as upstream ships it), the namespace set by the kustomization, our component added.
    overlay = tmp_path / "argocd"
    overlay.mkdir()
    (overlay / "install.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-cm"},
                "data": {"url": "https://argocd.example.com"},
            }
        )
    )
    kustomize_overlay(
        overlay,
        resources=[overlay / "install.yaml"],
        components=[ARGOCD / "health"],
        extra={"namespace": "argocd"},
    )

    config = find(load_objects(kustomize(kubectl, overlay)), "ConfigMap", "argocd-cm")

    assert config["metadata"]["namespace"] == "argocd"
    assert config["data"]["url"] == "https://argocd.example.com"
    assert config["data"][HEALTH_KEY] == HEALTH_SCRIPT.read_text()


def _application(name: str) -> dict[str, Any]:
    application: dict[str, Any] = yaml.safe_load((ARGOCD / name).read_text())
    assert application["kind"] == "Application"
    return application


def _own_source(application: dict[str, Any]) -> dict[str, Any]:
    [source] = [s for s in application["spec"]["sources"] if s["path"].startswith("deploy")]
    return dict(source)


def test_application_example_settings_apply_to_deploy(kubectl: Path, tmp_path: Path) -> None:
    application = _application("application.yaml")
    source = _own_source(application)
    assert (REPO_ROOT / source["path"] / "kustomization.yaml").is_file()
    overlay = kustomize_overlay(
        tmp_path, resources=[REPO_ROOT / source["path"]], extra=source["kustomize"]
    )

    objects = load_objects(kustomize(kubectl, overlay))

    account = find(objects, "ServiceAccount", "sgmesh")
    role_arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role_arn.startswith("arn:aws:iam::")
    environment = operator_environment(find(objects, "Deployment", "sgmesh"))
    assert environment["SGMESH_CLUSTER_NAME"] == "prod"
    assert environment["SGMESH_REGION"] == "eu-west-1"
    namespace = find(objects, "Namespace")["metadata"]["name"]
    assert application["spec"]["destination"]["namespace"] == namespace


def test_helm_application_example_values_render_the_same_settings(
    helm: Path, tmp_path: Path
) -> None:
    application = _application("application-helm.yaml")
    source = _own_source(application)
    assert REPO_ROOT / source["path"] == CHART
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(source["helm"]["valuesObject"]))

    objects = load_objects(
        helm_template(
            helm,
            release=source["helm"]["releaseName"],
            namespace=application["spec"]["destination"]["namespace"],
            values_files=[values],
        )
    )

    environment = operator_environment(find(objects, "Deployment", "sgmesh"))
    assert environment["SGMESH_CLUSTER_NAME"] == "prod"
    assert environment["SGMESH_REGION"] == "eu-west-1"
    account = find(objects, "ServiceAccount", "sgmesh")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:")


def test_application_examples_let_argocd_prune_and_order_by_waves() -> None:
    for name in ("application.yaml", "application-helm.yaml"):
        spec = _application(name)["spec"]
        # One Application holds the operator and the meshes: waves order only within one sync.
        assert len(spec["sources"]) == 2, name
        assert spec["syncPolicy"]["automated"]["prune"] is True, name

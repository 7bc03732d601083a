"""sgmesh's Grafana dashboard (deploy/grafana): the chart's ConfigMap only when enabled and the
kustomize component carry the same JSON, and every query of the dashboard, like every
expression of the alerts, reads metrics and labels that the operator really exports — scraped
from its /metrics in an end-to-end run (the operator as deploy/'s ServiceAccount, a mesh made
Ready, an AWS outage and its end).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import prometheus_client.parser
import pytest
import yaml

from devtools.aws.world import World
from devtools.operator_harness import (
    QUICK_RESYNC_SECONDS,
    Meshes,
    Operator,
    quick_resync,
    wait_until,
)
from tests.deploy.render import (
    CHART,
    DEPLOY,
    find,
    helm_template,
    kustomize,
    kustomize_overlay,
    load_objects,
)
from tests.support.tcp_proxy import TcpProxy

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "sgmesh-dashboard.json"
CHART_DASHBOARD = CHART / "files" / "sgmesh-dashboard.json"
RULE_FILE = DEPLOY / "prometheus" / "alerts" / "prometheusrule.yaml"
DEADLINE = 60
# Labels Prometheus gives every series of a target (the ServiceMonitor's), not the operator.
TARGET_LABELS = frozenset(
    {"instance", "job", "namespace", "pod", "service", "endpoint", "container"}
)
# The titles the issue asks for, each a panel.
PANELS = (
    "Meshes by Ready reason",
    "Ingress rules: desired, present, owned",
    "Reconcile duration",
    "AWS calls by operation",
    "AWS errors by code",
    "AWS errors by operation",
    "Nudged reconciles",
)


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _targets(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, query, legend) of every query of the dashboard, variables included."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"], target.get("legendFormat", "")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"variable {variable['name']}", query.get("query", query), ""


# ---- renderings ------------------------------------------------------------------------------


def test_chart_carries_a_copy_of_the_dashboard() -> None:
    # `cp deploy/grafana/sgmesh-dashboard.json deploy/helm/sgmesh/files/` after a change.
    assert CHART_DASHBOARD.read_text() == DASHBOARD.read_text()


def test_chart_renders_the_dashboard_configmap_only_when_enabled(helm: Path) -> None:
    default = load_objects(helm_template(helm))
    enabled = load_objects(
        helm_template(
            helm,
            values=[
                "metrics.grafanaDashboard.enabled=true",
                "metrics.grafanaDashboard.namespace=monitoring",
                "metrics.grafanaDashboard.annotations.grafana_folder=Operators",
            ],
        )
    )

    assert "ConfigMap" not in {obj["kind"] for obj in default}
    config_map = find(enabled, "ConfigMap", "sgmesh-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Operators"}
    assert json.loads(config_map["data"]["sgmesh-dashboard.json"]) == _dashboard()


def test_kustomize_component_renders_the_same_dashboard(kubectl: Path, tmp_path: Path) -> None:
    overlay = kustomize_overlay(tmp_path, resources=[], components=[GRAFANA])

    config_map = find(load_objects(kustomize(kubectl, overlay)), "ConfigMap", "sgmesh-dashboard")

    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["sgmesh-dashboard.json"]) == _dashboard()


def test_dashboard_has_the_panels_an_incident_needs() -> None:
    dashboard = _dashboard()
    titles = [panel["title"] for panel in dashboard["panels"]]

    assert set(PANELS) <= set(titles)
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(titles)
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


# ---- the queries against what the operator exports -------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC = re.compile(r"\b(sgmesh_[a-z0-9_]+)\b")
_SELECTOR = re.compile(r"\b(sgmesh_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"label_values\(\s*(sgmesh_[a-z0-9_]+)\s*,\s*([a-zA-Z_]\w*)\s*\)")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_]\w*)\s*\}\}")
_TEMPLATE_LABEL = re.compile(r"\$labels\.([a-zA-Z_]\w*)")


def problems(
    where: str, query: str, exported: Mapping[str, set[str]], legend_labels: Iterable[str] = ()
) -> list[str]:
    """What in `query` (and its legend's or annotations' labels) the operator does not export:
    metric names without a sample, matchers on labels the metric has not, groupings and
    legends by labels none of the query's metrics (nor the target) has."""
    found: list[str] = []
    bare = _STRING.sub('""', query)
    metrics = set(_METRIC.findall(bare))
    if not metrics:
        found.append(f"{where}: reads no sgmesh metric: {query}")
    for metric in sorted(metrics - exported.keys()):
        found.append(f"{where}: {metric} is not exported")
    for metric, matchers in _SELECTOR.findall(bare):
        for label in _MATCHER.findall(matchers):
            if metric in exported and label not in exported[metric]:
                found.append(f"{where}: {metric} has no label {label}")
    for metric, label in _LABEL_VALUES.findall(bare):
        if metric in exported and label not in exported[metric]:
            found.append(f"{where}: {metric} has no label {label}")
    known = set(TARGET_LABELS).union(*(exported.get(metric, set()) for metric in metrics))
    grouped = [label.strip() for labels in _GROUPING.findall(bare) for label in labels.split(",")]
    for label in [*filter(None, grouped), *legend_labels]:
        if label not in known:
            found.append(f"{where}: no metric of the query has a label {label}")
    return found


def exported_labels(text: str) -> dict[str, set[str]]:
    """Sample name -> the label names of its samples, from the text of /metrics."""
    exported: dict[str, set[str]] = defaultdict(set)
    for family in prometheus_client.parser.text_string_to_metric_families(text):
        for sample in family.samples:
            exported[sample.name].update(sample.labels)
    return dict(exported)


def _alerts() -> dict[str, dict[str, Any]]:
    rule = yaml.safe_load(RULE_FILE.read_text())
    return {
        entry["alert"]: entry
        for group in rule["spec"]["groups"]
        for entry in group["rules"]
        if "alert" in entry
    }


def test_checker_finds_what_is_not_exported() -> None:
    # The check of the queries can fail: names and labels the operator does not export.
    exported = {"sgmesh_rules": {"mesh", "state"}, "sgmesh_aws_errors_total": {"code"}}

    found = problems(
        "t",
        'sum by (operation) (rate(sgmesh_aws_errors_total{kind="x"}[5m])) + sgmesh_members',
        exported,
        ["phase"],
    )

    assert found == [
        "t: sgmesh_members is not exported",
        "t: sgmesh_aws_errors_total has no label kind",
        "t: no metric of the query has a label operation",
        "t: no metric of the query has a label phase",
    ]
    assert (
        problems("t", 'max without (instance, pod) (sgmesh_rules{state="owned"})', exported) == []
    )


def _wait_synced(meshes: Meshes, status: str, operator: Operator) -> None:
    wait_until(
        lambda: (meshes.condition("airflow", "Synced") or {}).get("status") == status,
        DEADLINE,
        f"mesh airflow has Synced={status}",
        operator.log_tail,
    )


@pytest.mark.kube
def test_every_query_and_alert_reads_what_the_operator_exports(
    world: World, meshes: Meshes, start_operator: Any, aws_proxy: TcpProxy
) -> None:
    operator: Operator = start_operator(**quick_resync())
    world.node_group("eks-a")
    world.node_group("eks-b")
    meshes.create("airflow", {"autoScalingGroups": {"names": ["eks-a", "eks-b"]}})
    meshes.wait_ready("airflow", DEADLINE, operator.log_tail)
    # An AWS outage, for errors by code and unfinished reconciles (Synced=False while Ready
    # stays as AWS was last seen); then its end.
    aws_proxy.cut()
    _wait_synced(meshes, "False", operator)
    aws_proxy.restore()
    _wait_synced(meshes, "True", operator)

    text = operator.metrics()
    exported = exported_labels(text)
    found = [
        problem
        for title, query, legend in _targets(_dashboard())
        for problem in problems(title, query, exported, _LEGEND.findall(legend))
    ]
    for name, alert in _alerts().items():
        annotations = " ".join(alert["annotations"].values())
        found += problems(name, alert["expr"], exported, _TEMPLATE_LABEL.findall(annotations))

    assert not found, "\n".join(found)
    # What the meshes' own series say, read from the mesh object.
    mesh = meshes.get("airflow") or {}
    assert (
        operator.metric(
            "sgmesh_mesh_condition",
            mesh="airflow",
            condition="Ready",
            status="True",
            reason="Reconciled",
        )
        == 1
    )
    assert (
        operator.metric("sgmesh_mesh_resync_period_seconds", mesh="airflow") == QUICK_RESYNC_SECONDS
    )
    assert operator.metric("sgmesh_mesh_last_sync_timestamp_seconds", mesh="airflow") > 0
    ready = next(c for c in mesh["status"]["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"]
    assert (
        operator.metric(
            "sgmesh_mesh_condition_transition_timestamp_seconds", mesh="airflow", condition="Ready"
        )
        > 0
    )
    # Synced, as the watch delivers the status the outage's end wrote.
    wait_until(
        lambda: (
            operator.metric(
                "sgmesh_mesh_condition",
                mesh="airflow",
                condition="Synced",
                status="True",
                reason="ReconcileSucceeded",
            )
            == 1
        ),
        DEADLINE,
        "sgmesh_mesh_condition says airflow is Synced",
        operator.log_tail,
    )

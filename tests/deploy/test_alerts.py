"""sgmesh's alerts: the kustomize component deploy/prometheus/alerts and the chart's
PrometheusRule carry the same rules; Prometheus's own `promtool` checks them and runs their unit
tests (alerts_promtool_test.yaml: series that make each alert fire, and series that leave it
silent) against each rendering; every alert links a runbook section that exists; the API server
takes the PrometheusRule with prometheus-operator's CRD.

promtool is built from the Go module github.com/prometheus/prometheus (devtools/promtool/build.py),
never imitated here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools import external_crds
from devtools.k8s.controlplane import ControlPlane
from devtools.promtool import build as promtool_build
from sgmesh.aws import errors
from tests.cluster.fixtures import apply_established
from tests.deploy.render import (
    CHART,
    DEPLOY,
    REPO_ROOT,
    find,
    helm_template,
    kustomize,
    kustomize_overlay,
    load_objects,
)

ALERTS = DEPLOY / "prometheus" / "alerts"
RULE_FILE = ALERTS / "prometheusrule.yaml"
CHART_RULE_FILE = CHART / "files" / "prometheusrule.yaml"
UNIT_TESTS = Path(__file__).with_name("alerts_promtool_test.yaml")
RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"
RUNBOOK_URL = "https://github.com/sgmesh/sgmesh/blob/main/docs/runbooks.md#"


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool, built from Go modules on first use (devtools/promtool/build.py)."""
    try:
        return promtool_build.ensure_promtool()
    except promtool_build.PromtoolBuildError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def component_rule(kubectl: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The PrometheusRule of an overlay adding the component, as `kubectl kustomize` builds it."""
    overlay = kustomize_overlay(tmp_path_factory.mktemp("alerts"), components=[ALERTS])
    return find(load_objects(kustomize(kubectl, overlay)), "PrometheusRule")


@pytest.fixture(scope="session")
def chart_rule(helm: Path) -> dict[str, Any]:
    """The chart's PrometheusRule, with `metrics.prometheusRule.enabled`."""
    rendered = helm_template(helm, values=["metrics.prometheusRule.enabled=true"])
    return find(load_objects(rendered), "PrometheusRule")


def _alerts(rule: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        entry["alert"]: entry
        for group in rule["spec"]["groups"]
        for entry in group["rules"]
        if "alert" in entry
    }


def _promtool(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _rules_file(rule: dict[str, Any], directory: Path) -> Path:
    """The PrometheusRule's spec as a Prometheus rule file (what the operator hands Prometheus)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    return path


# ---- one source of rules -----------------------------------------------------------------------


def test_chart_reads_a_copy_of_the_components_rules_file() -> None:
    # The chart cannot read outside its directory: it carries a copy, which must not drift.
    # `cp deploy/prometheus/alerts/prometheusrule.yaml deploy/helm/sgmesh/files/` after a change.
    assert CHART_RULE_FILE.read_text() == RULE_FILE.read_text()


def test_chart_and_component_render_the_same_rules(
    component_rule: dict[str, Any], chart_rule: dict[str, Any]
) -> None:
    assert chart_rule["spec"] == component_rule["spec"]
    assert chart_rule["metadata"]["name"] == component_rule["metadata"]["name"] == "sgmesh"
    assert chart_rule["metadata"]["namespace"] == component_rule["metadata"]["namespace"]


def test_chart_renders_the_prometheusrule_only_when_enabled(helm: Path) -> None:
    default = load_objects(helm_template(helm))
    labelled = load_objects(
        helm_template(
            helm,
            values=[
                "metrics.prometheusRule.enabled=true",
                "metrics.prometheusRule.labels.release=kube-prometheus-stack",
            ],
        )
    )

    assert "PrometheusRule" not in {obj["kind"] for obj in default}
    rule = find(labelled, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sgmesh"


# ---- promtool ----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["component", "chart"])
def test_promtool_checks_the_rules(
    promtool: Path,
    source: str,
    component_rule: dict[str, Any],
    chart_rule: dict[str, Any],
    tmp_path: Path,
) -> None:
    rule = component_rule if source == "component" else chart_rule
    rules = _rules_file(rule, tmp_path)

    result = _promtool(
        promtool, "check", "rules", "--lint=all", "--lint-fatal", rules.name, cwd=tmp_path
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts(rule))} rules found" in result.stdout


@pytest.mark.parametrize("source", ["component", "chart"])
def test_promtool_unit_tests_of_every_alert_pass(
    promtool: Path,
    source: str,
    component_rule: dict[str, Any],
    chart_rule: dict[str, Any],
    tmp_path: Path,
) -> None:
    _rules_file(component_rule if source == "component" else chart_rule, tmp_path)
    (tmp_path / UNIT_TESTS.name).write_text(UNIT_TESTS.read_text())

    result = _promtool(promtool, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_fail_when_an_alert_is_wrong(
    promtool: Path, component_rule: dict[str, Any], tmp_path: Path
) -> None:
    # The unit tests can fail: with the 15 minutes of SgmeshMeshNotReady made 30, they do.
    rule = yaml.safe_load(yaml.safe_dump(component_rule))
    _alerts(rule)["SgmeshMeshNotReady"]["expr"] = _alerts(rule)["SgmeshMeshNotReady"][
        "expr"
    ].replace("> 900", "> 1800")
    _rules_file(rule, tmp_path)
    (tmp_path / UNIT_TESTS.name).write_text(UNIT_TESTS.read_text())

    result = _promtool(promtool, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)

    assert result.returncode != 0
    assert "alertname: SgmeshMeshNotReady, time: 17m" in result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_silent(component_rule: dict[str, Any]) -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]
    fired = {check["alertname"] for check in checks if check["exp_alerts"]}
    silent = {check["alertname"] for check in checks if not check["exp_alerts"]}

    assert fired == set(_alerts(component_rule))
    assert silent == set(_alerts(component_rule))


def _codes_matched(expression: str) -> set[str]:
    [alternatives] = re.findall(r'code=~"([^"]+)"', expression)
    return set(alternatives.split("|"))


@pytest.mark.parametrize(
    ("alert", "codes"),
    [
        ("SgmeshAwsAccessDenied", errors.ACCESS_DENIED_CODES),
        ("SgmeshAwsThrottled", errors.THROTTLING_CODES),
    ],
)
def test_aws_alerts_match_the_codes_the_operator_reads_that_way(
    component_rule: dict[str, Any], alert: str, codes: frozenset[str]
) -> None:
    # The one table of what an AWS error means is sgmesh.aws.errors; the alert's regex is a
    # copy in PromQL, kept equal here.
    assert _codes_matched(_alerts(component_rule)[alert]["expr"]) == codes


# ---- annotations and runbooks --------------------------------------------------------------------


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the markdown's headings (lower case, spaces to dashes)."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, re.M)
    return {re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_alert_links_its_runbook_section(component_rule: dict[str, Any]) -> None:
    anchors = _anchors(RUNBOOKS.read_text())

    for name, alert in _alerts(component_rule).items():
        annotations = alert["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), name
        assert name.lower() in anchors, f"docs/runbooks.md has no section {name}"
        assert alert["labels"]["severity"] in {"warning", "critical"}, name


def test_every_runbook_says_what_to_run(component_rule: dict[str, Any]) -> None:
    sections = re.split(r"^## ", RUNBOOKS.read_text(), flags=re.M)
    by_alert = {section.split("\n", 1)[0].strip(): section for section in sections[1:]}

    for name in _alerts(component_rule):
        section = by_alert[name]
        assert "sgmesh doctor" in section, f"the runbook of {name} does not run doctor"
        assert "kubectl" in section, f"the runbook of {name} runs no kubectl"


# ---- the real API server -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheusrule_crd(kube_cluster: ControlPlane) -> str:
    """prometheus-operator's PrometheusRule CRD as it publishes it (devtools/external_crds.py),
    applied and Established, once per session; its name."""
    crd = external_crds.PROMETHEUSRULE
    try:
        external_crds.load(crd)  # fetched if needed, and checked to be that CRD
    except external_crds.CrdFetchError as error:
        pytest.fail(f"{error}\n(`make crds-external` fetches it)")
    apply_established(kube_cluster, "-f", str(crd.cached_file), crds=[crd.name])
    return crd.name


@pytest.mark.kube
def test_api_server_keeps_every_field_of_the_components_prometheusrule(
    kube_cluster: ControlPlane,
    prometheusrule_crd: str,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    overlay = kustomize_overlay(
        tmp_path, resources=[], components=[ALERTS], extra={"namespace": kube_namespace}
    )

    applied = kube_cluster.kubectl("apply", "-k", str(overlay))
    assert applied.returncode == 0, applied.stderr
    read = kube_cluster.kubectl(
        "get", "prometheusrule", "sgmesh", "--namespace", kube_namespace, "--output", "yaml"
    )

    assert read.returncode == 0, read.stderr
    # Nothing pruned by the CRD's schema: what the API server stores is what the file says.
    assert yaml.safe_load(read.stdout)["spec"] == yaml.safe_load(RULE_FILE.read_text())["spec"]


@pytest.mark.kube
def test_api_server_accepts_the_charts_prometheusrule_and_dashboard(
    kube_cluster: ControlPlane, prometheusrule_crd: str, helm: Path, kube_namespace: str
) -> None:
    rendered = helm_template(
        helm,
        release=kube_namespace,
        namespace=kube_namespace,
        values=["metrics.prometheusRule.enabled=true", "metrics.grafanaDashboard.enabled=true"],
    )
    wanted = [
        obj
        for obj in load_objects(rendered)
        if obj["kind"] == "PrometheusRule"
        or (obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("-dashboard"))
    ]
    assert len(wanted) == 2

    result = kube_cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(wanted)
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == 2, result.stdout

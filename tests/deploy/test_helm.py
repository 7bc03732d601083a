"""The Helm chart: it lints, renders exactly the objects of the kustomize base (so the two
cannot drift), ships the checked-in CRDs, and its values reach the objects they name."""

from __future__ import annotations

import json
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from sgmesh.api import models
from tests.deploy.render import (
    CHART,
    DEPLOY,
    REPO_ROOT,
    SAMPLE_CLUSTER,
    RenderError,
    diff_objects,
    find,
    helm_template,
    kustomize,
    kustomize_overlay,
    load_objects,
    operator_environment,
)

# (helm --set values, kustomize components, extra kustomize resources) rendering the same thing.
VARIANTS = {
    "defaults": ([], [], []),
    "peering": (["peering.enabled=true"], [DEPLOY / "components" / "peering"], []),
    "service-monitor": (["metrics.serviceMonitor.enabled=true"], [], [DEPLOY / "prometheus"]),
    "network-policy": (
        ["networkPolicy.enabled=true"],
        [DEPLOY / "components" / "network-policy"],
        [],
    ),
}


def test_chart_passes_helm_lint_strict(helm: Path) -> None:
    result = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), "--set", f"clusterName={SAMPLE_CLUSTER}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chart_renders_the_objects_of_the_kustomize_base(
    variant: str, helm: Path, kubectl: Path, tmp_path: Path
) -> None:
    values, components, resources = VARIANTS[variant]
    overlay = kustomize_overlay(tmp_path, resources=[DEPLOY, *resources], components=components)
    from_kustomize = [
        obj
        for obj in load_objects(kustomize(kubectl, overlay))
        # Helm installs CRDs from the chart's crds/ (compared below) and the namespace with
        # `helm install --create-namespace`.
        if obj["kind"] not in {"CustomResourceDefinition", "Namespace"}
    ]
    # The kustomize base carries the placeholder a person must replace; the operator refuses it.
    from_helm = load_objects(
        helm_template(helm, values=values, cluster_name=models.CLUSTER_NAME_PLACEHOLDER)
    )

    difference = diff_objects(from_kustomize, from_helm, "kustomize", "helm")

    assert not difference, f"deploy/ and the chart drifted apart:\n{difference}"


def test_chart_crds_are_the_checked_in_crds() -> None:
    pairs = {
        CHART / "crds" / "nodegroupmesh.yaml": REPO_ROOT / "crds" / "nodegroupmesh.yaml",
        CHART / "crds" / "clusterkopfpeering.yaml": DEPLOY / "components" / "peering" / "crd.yaml",
    }
    for copy, source in pairs.items():
        assert copy.read_text() == source.read_text(), (
            f"{copy.relative_to(REPO_ROOT)} differs from {source.relative_to(REPO_ROOT)}: "
            "copy it (`make crd` does for the NodeGroupMesh CRD)"
        )
    assert {path.name for path in (CHART / "crds").iterdir()} == {p.name for p in pairs}


def test_chart_values_reach_the_objects_they_name(helm: Path) -> None:
    objects = load_objects(
        helm_template(
            helm,
            release="ops",
            namespace="platform",
            values=[
                "image.repository=registry.example.com/sgmesh",
                "image.tag=1.2.3",
                "clusterName=prod-eu",
                "region=eu-west-1",
                "vpcId=vpc-0123456789abcdef0",
                "memberTag=kubernetes.io/cluster/prod-eu",
                "logFormat=plain",
                "rulesPerSecurityGroup=120",
                "resyncSeconds=300",
                "iamRefreshSeconds=1800",
                "metrics.port=9100",
                "serviceAccount.roleArn=arn:aws:iam::111122223333:role/sgmesh",
                "resources.limits.memory=1Gi",
                "peering.enabled=true",
            ],
        )
    )

    deployment = find(objects, "Deployment", "ops-sgmesh")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/sgmesh:1.2.3"
    assert operator_environment(deployment) == {
        "SGMESH_CLUSTER_NAME": "prod-eu",
        "SGMESH_VPC_ID": "vpc-0123456789abcdef0",
        "SGMESH_MEMBER_TAG": "kubernetes.io/cluster/prod-eu",
        "SGMESH_REGION": "eu-west-1",
        "SGMESH_LOG_FORMAT": "plain",
        "SGMESH_METRICS_PORT": "9100",
        "SGMESH_RULES_PER_SECURITY_GROUP": "120",
        "SGMESH_DEFAULT_RESYNC_SECONDS": "300",
        "SGMESH_IAM_REFRESH_SECONDS": "1800",
        "SGMESH_PEERING": "ops-sgmesh",
    }
    assert container["ports"][0]["containerPort"] == 9100
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert find(objects, "Service")["spec"]["ports"][0]["port"] == 9100
    account = find(objects, "ServiceAccount", "ops-sgmesh")
    annotations = account["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"] == "arn:aws:iam::111122223333:role/sgmesh"
    assert find(objects, "ClusterKopfPeering", "ops-sgmesh")


def _values_file(directory: Path, values: Mapping[str, object]) -> Path:
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_chart_network_policy_follows_the_metrics_port_and_its_peers(
    helm: Path, tmp_path: Path
) -> None:
    # Pod Identity's agent, an API server on 6443, NodeLocal DNSCache: what deploy/README.md
    # tells users of those to set.
    node_local_dns = {"ipBlock": {"cidr": "169.254.20.10/32"}}
    values = {
        "metrics": {"port": 9100},
        "networkPolicy": {
            "enabled": True,
            "dnsPeers": [node_local_dns],
            "egress": [
                {"cidr": "0.0.0.0/0", "ports": [443, 6443]},
                {"cidr": "169.254.170.23/32", "ports": [80]},
            ],
        },
    }

    objects = load_objects(helm_template(helm, values_files=[_values_file(tmp_path, values)]))

    policy = find(objects, "NetworkPolicy")["spec"]
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9100}]}]
    dns = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert policy["egress"] == [
        {"to": [node_local_dns], "ports": dns},
        {
            "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
            "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
        },
        {
            "to": [{"ipBlock": {"cidr": "169.254.170.23/32"}}],
            "ports": [{"protocol": "TCP", "port": 80}],
        },
    ]


@pytest.mark.parametrize(
    ("network_policy", "refused_because"),
    [
        # Kubernetes reads a rule without peers as "anywhere", without ports as "every port".
        pytest.param({"dnsPeers": []}, "/networkPolicy/dnsPeers", id="dns-to-anywhere"),
        pytest.param({"dnsPeers": None}, "dnsPeers", id="dns-peers-removed"),
        pytest.param(
            {"egress": [{"cidr": "0.0.0.0/0", "ports": []}]},
            "/networkPolicy/egress/0/ports",
            id="egress-on-every-port",
        ),
        pytest.param(
            {"egress": [{"cidr": "0.0.0.0/0", "ports": [0]}]},
            "/networkPolicy/egress/0/ports/0",
            id="egress-port-0",
        ),
    ],
)
def test_chart_refuses_network_policy_values_that_open_everything_or_are_invalid(
    helm: Path, tmp_path: Path, network_policy: dict[str, object], refused_because: str
) -> None:
    values = {"networkPolicy": {"enabled": True, **network_policy}}

    with pytest.raises(RenderError, match=refused_because):
        helm_template(helm, values_files=[_values_file(tmp_path, values)])


def test_chart_image_defaults_to_the_chart_app_version(helm: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    deployment = find(load_objects(helm_template(helm)), "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(f":{chart['appVersion']}")
    assert chart["appVersion"] == chart["version"] == version


@pytest.mark.parametrize(
    ("setting", "refused_because"),
    [
        ("clusterName=prod/eu", "/clusterName"),
        ("logFormat=yaml", "/logFormat"),
        ("serviceAccount.roleArn=my-role", "/serviceAccount/roleArn"),
        ("metrics.port=0", "/metrics/port"),
        ("resyncSecond=30", "resyncSecond"),
    ],
)
def test_chart_refuses_values_the_operator_would_refuse(
    helm: Path, setting: str, refused_because: str
) -> None:
    with pytest.raises(RenderError, match=refused_because):
        helm_template(helm, values=[setting])


def test_chart_does_not_render_without_a_cluster_name(helm: Path) -> None:
    with pytest.raises(RenderError, match="clusterName"):
        helm_template(helm, cluster_name=None)


def test_the_kustomize_base_requires_its_one_edit_the_cluster_name() -> None:
    deployment = yaml.safe_load((DEPLOY / "manager" / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {entry["name"]: entry.get("value") for entry in container["env"]}
    assert env["SGMESH_CLUSTER_NAME"] == models.CLUSTER_NAME_PLACEHOLDER
    with pytest.raises(models.InvalidSpecError, match="placeholder"):
        models.validate_cluster_name(env["SGMESH_CLUSTER_NAME"])


def test_chart_accepts_the_cluster_names_the_operator_accepts() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    cluster = schema["properties"]["clusterName"]
    assert cluster["pattern"] == models.CLUSTER_NAME
    assert cluster["maxLength"] == models.MAX_CLUSTER_NAME_LENGTH

"""What every way of installing the operator renders: the kustomize base (alone, with its
peering component, with its network-policy component) and the Helm chart (defaults, peering,
the network policy, another release name and namespace).

Each rendering must run the operator the same safe way and grant it exactly what it uses, on
the API and on the network; nothing shipped may let the users of the built-in roles write
NodeGroupMeshes.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.render import (
    CHART,
    DEPLOY,
    REPO_ROOT,
    Objects,
    find,
    helm_template,
    kustomize,
    kustomize_overlay,
    load_objects,
    operator_environment,
)

NETWORK_POLICY = DEPLOY / "components" / "network-policy"

OPERATOR_RULES = [
    {
        "apiGroups": ["sgmesh.io"],
        "resources": ["nodegroupmeshes"],
        "verbs": ["list", "watch", "patch"],
    },
    {"apiGroups": ["sgmesh.io"], "resources": ["nodegroupmeshes/status"], "verbs": ["patch"]},
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    # Members that are not ASGs, read only.
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["karpenter.k8s.aws"],
        "resources": ["ec2nodeclasses"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["crd.k8s.amazonaws.com"],
        "resources": ["eniconfigs"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["vpcresources.k8s.aws"],
        "resources": ["securitygrouppolicies"],
        "verbs": ["get", "list", "watch"],
    },
]
# Namespaced Roles, by namespace: kopf's events of cluster-scoped objects go to "default";
# in kube-system, aws-node's ServiceAccount, and only it, is read (IRSA or not), and pods are
# listed (aws-node's, for EKS Pod Identity), never read one by one, watched or written.
NAMESPACED_RULES = {
    "default": [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}],
    "kube-system": [
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts"],
            "resourceNames": ["aws-node"],
            "verbs": ["get"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ],
}
PEERING_RULES = [
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["list", "watch", "patch"],
    }
]


class Rendering:
    """One way of installing, rendered: its objects, the namespace the operator runs in, and
    whether peering and the network policy are on."""

    def __init__(
        self, objects: Objects, namespace: str, peering: bool, network_policy: bool = False
    ) -> None:
        self.objects = objects
        self.namespace = namespace
        self.peering = peering
        self.network_policy = network_policy

    @property
    def deployment(self) -> dict[str, Any]:
        return find(self.objects, "Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        [container] = self.pod["containers"]
        return dict(container)

    def of_kind(self, kind: str) -> Objects:
        return [obj for obj in self.objects if obj["kind"] == kind]


Renderer = Callable[[Path, Path, Path], Rendering]


def _kustomize_base(kubectl: Path, _helm: Path, _tmp: Path) -> Rendering:
    return Rendering(load_objects(kustomize(kubectl, DEPLOY)), "sgmesh-system", peering=False)


def _kustomize_peering(kubectl: Path, _helm: Path, tmp: Path) -> Rendering:
    overlay = kustomize_overlay(tmp / "overlay", components=[DEPLOY / "components" / "peering"])
    return Rendering(load_objects(kustomize(kubectl, overlay)), "sgmesh-system", peering=True)


def _helm_defaults(_kubectl: Path, helm: Path, _tmp: Path) -> Rendering:
    return Rendering(load_objects(helm_template(helm)), "sgmesh-system", peering=False)


def _helm_peering(_kubectl: Path, helm: Path, _tmp: Path) -> Rendering:
    objects = load_objects(helm_template(helm, values=["peering.enabled=true"]))
    return Rendering(objects, "sgmesh-system", peering=True)


def _helm_other_release(_kubectl: Path, helm: Path, _tmp: Path) -> Rendering:
    objects = load_objects(helm_template(helm, release="prod", namespace="platform"))
    return Rendering(objects, "platform", peering=False)


def _kustomize_network_policy(kubectl: Path, _helm: Path, tmp: Path) -> Rendering:
    # With the ServiceMonitor, so that the port Prometheus scrapes is held against the policy.
    overlay = kustomize_overlay(
        tmp / "overlay", resources=[DEPLOY, DEPLOY / "prometheus"], components=[NETWORK_POLICY]
    )
    objects = load_objects(kustomize(kubectl, overlay))
    return Rendering(objects, "sgmesh-system", peering=False, network_policy=True)


def _helm_network_policy(_kubectl: Path, helm: Path, _tmp: Path) -> Rendering:
    # Another metrics port, release and namespace: the policy must follow them.
    values = [
        "networkPolicy.enabled=true",
        "metrics.serviceMonitor.enabled=true",
        "metrics.port=9100",
    ]
    objects = load_objects(helm_template(helm, release="prod", namespace="platform", values=values))
    return Rendering(objects, "platform", peering=False, network_policy=True)


RENDERERS: dict[str, Renderer] = {
    "kustomize": _kustomize_base,
    "kustomize-peering": _kustomize_peering,
    "kustomize-network-policy": _kustomize_network_policy,
    "helm": _helm_defaults,
    "helm-peering": _helm_peering,
    "helm-network-policy-port-9100-release-prod": _helm_network_policy,
    "helm-release-prod-in-platform": _helm_other_release,
}


@pytest.fixture(params=sorted(RENDERERS))
def rendering(
    request: pytest.FixtureRequest, kubectl: Path, helm: Path, tmp_path: Path
) -> Rendering:
    return RENDERERS[request.param](kubectl, helm, tmp_path)


def test_operator_runs_one_replica_replaced_with_recreate(rendering: Rendering) -> None:
    spec = rendering.deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_operator_pod_is_non_root_read_only_without_capabilities_and_seccomp_default(
    rendering: Rendering,
) -> None:
    pod, container = rendering.pod, rendering.container
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in security


def test_operator_has_cpu_and_memory_requests_and_limits(rendering: Rendering) -> None:
    resources = rendering.container["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) == {"cpu", "memory"}, bound


def test_liveness_probe_asks_healthz_on_the_metrics_port_the_operator_listens_on(
    rendering: Rendering,
) -> None:
    container = rendering.container
    [port] = container["ports"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": port["name"]}
    environment = operator_environment(rendering.deployment)
    assert int(environment["SGMESH_METRICS_PORT"]) == port["containerPort"]


def test_readiness_probe_asks_readyz_on_the_metrics_port(rendering: Rendering) -> None:
    container = rendering.container
    [port] = container["ports"]
    probe = container["readinessProbe"]

    assert probe["httpGet"] == {"path": "/readyz", "port": port["name"]}
    # Ready soon after start-up, and taken out of the Service quickly when it stops answering.
    assert probe["periodSeconds"] <= 10
    assert probe["failureThreshold"] * probe["periodSeconds"] <= 30


def test_metrics_service_selects_the_operator_pod_on_its_metrics_port(
    rendering: Rendering,
) -> None:
    service = find(rendering.objects, "Service")
    labels = rendering.deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert rendering.deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == rendering.container["ports"][0]["name"]


def test_every_object_is_in_the_operator_namespace_or_says_why(rendering: Rendering) -> None:
    # The events Role lives where kopf posts the events of cluster-scoped objects, the aws-node
    # Role where aws-node's ServiceAccount is.
    for obj in rendering.objects:
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in {"Role", "RoleBinding"}:
            assert namespace in NAMESPACED_RULES, obj["metadata"]["name"]
        elif namespace is not None:
            assert namespace == rendering.namespace, obj["metadata"]["name"]


def test_roles_grant_exactly_what_the_operator_uses(rendering: Rendering) -> None:
    cluster_rules = sorted(
        (rule for role in rendering.of_kind("ClusterRole") for rule in role["rules"]),
        key=repr,
    )
    expected = OPERATOR_RULES + (PEERING_RULES if rendering.peering else [])
    assert cluster_rules == sorted(expected, key=repr)
    namespaced = {
        role["metadata"]["namespace"]: role["rules"] for role in rendering.of_kind("Role")
    }
    assert len(rendering.of_kind("Role")) == len(namespaced)  # one Role per namespace
    assert namespaced == NAMESPACED_RULES


def test_every_binding_gives_its_role_to_the_operator_service_account(
    rendering: Rendering,
) -> None:
    [account] = rendering.of_kind("ServiceAccount")
    assert account["metadata"]["namespace"] == rendering.namespace
    assert rendering.pod["serviceAccountName"] == account["metadata"]["name"]
    roles = {(r["kind"], r["metadata"]["name"]) for r in rendering.objects if "rules" in r}
    bindings = rendering.of_kind("ClusterRoleBinding") + rendering.of_kind("RoleBinding")
    assert len(bindings) == len(roles)
    for binding in bindings:
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": account["metadata"]["name"],
                "namespace": rendering.namespace,
            }
        ]


def test_service_account_carries_the_irsa_role_setting(rendering: Rendering) -> None:
    [account] = rendering.of_kind("ServiceAccount")
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]


def test_peering_is_named_by_the_operator_only_when_its_rights_are_granted(
    rendering: Rendering,
) -> None:
    peering = operator_environment(rendering.deployment)["SGMESH_PEERING"]
    peering_objects = rendering.of_kind("ClusterKopfPeering")
    if rendering.peering:
        assert [obj["metadata"]["name"] for obj in peering_objects] == [peering]
    else:
        assert peering == ""
        assert peering_objects == []


# ---- the operator pod's network ------------------------------------------------------------

KUBE_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
EVERY_IPV4_ADDRESS = {"ipBlock": {"cidr": "0.0.0.0/0"}}
ANYWHERE = "anywhere"
EVERY_PORT = "every port"
Passage = tuple[str, str, str, int | str]


@pytest.fixture(params=sorted(name for name in RENDERERS if "network-policy" in name))
def guarded(request: pytest.FixtureRequest, kubectl: Path, helm: Path, tmp_path: Path) -> Rendering:
    """A rendering with the operator pod's NetworkPolicy."""
    return RENDERERS[request.param](kubectl, helm, tmp_path)


def _peer(peer: object) -> str:
    return json.dumps(peer, sort_keys=True)


def _passages(policy: dict[str, Any]) -> set[Passage]:
    """Every (direction, peer, protocol, port) the policy lets through. A rule without peers
    admits anywhere and one without ports every port, as Kubernetes reads them, so that a rule
    wider than meant shows up as such."""
    passages: set[Passage] = set()
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for rule in policy["spec"].get(direction) or []:
            peers = [_peer(peer) for peer in rule.get(peers_key) or []] or [ANYWHERE]
            ports = [
                (
                    port.get("protocol", "TCP"),
                    port.get("port", EVERY_PORT)
                    if "endPort" not in port
                    else f"{port['port']}-{port['endPort']}",
                )
                for port in rule.get("ports") or []
            ] or [("any protocol", EVERY_PORT)]
            passages |= {(direction, peer, *port) for peer in peers for port in ports}
    return passages


def _metrics_port(rendering: Rendering) -> int:
    """The container port the probes, and the ServiceMonitor through the metrics Service, reach
    the operator on, checked to be one and the same."""
    container = rendering.container
    names = {container[probe]["httpGet"]["port"] for probe in ("livenessProbe", "readinessProbe")}
    service_ports = {
        port["name"]: port for port in find(rendering.objects, "Service")["spec"]["ports"]
    }
    for monitor in rendering.of_kind("ServiceMonitor"):
        names |= {service_ports[e["port"]]["targetPort"] for e in monitor["spec"]["endpoints"]}
    [name] = names
    [port] = [port for port in container["ports"] if port["name"] == name]
    return int(port["containerPort"])


def test_network_policy_is_rendered_only_when_asked_for(rendering: Rendering) -> None:
    policies = rendering.of_kind("NetworkPolicy")
    assert len(policies) == (1 if rendering.network_policy else 0)


def test_network_policy_selects_the_operator_pods_and_no_other(guarded: Rendering) -> None:
    [policy] = guarded.of_kind("NetworkPolicy")
    selector = policy["spec"]["podSelector"]
    deployment = guarded.deployment

    # The Deployment's own selector: every pod it makes carries these labels, and an empty or
    # wider selector would put every pod of the namespace under the policy.
    assert selector == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    assert selector["matchLabels"]
    assert (
        selector["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]


def test_network_policy_admits_the_metrics_port_dns_and_https_and_nothing_else(
    guarded: Rendering,
) -> None:
    [policy] = guarded.of_kind("NetworkPolicy")
    metrics_port = _metrics_port(guarded)
    assert guarded.of_kind("ServiceMonitor"), "the rendering should scrape the metrics port"
    assert int(operator_environment(guarded.deployment)["SGMESH_METRICS_PORT"]) == metrics_port

    # Both directions isolated: without "Egress" the egress rules would restrict nothing.
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert _passages(policy) == {
        # Prometheus through the Service, and the kubelet's probes.
        ("ingress", ANYWHERE, "TCP", metrics_port),
        ("egress", _peer(KUBE_DNS), "UDP", 53),
        ("egress", _peer(KUBE_DNS), "TCP", 53),
        # The API server and the AWS endpoints, which have no fixed addresses.
        ("egress", _peer(EVERY_IPV4_ADDRESS), "TCP", 443),
    }


def test_passages_of_a_rule_without_ports_or_peers_are_every_port_from_anywhere() -> None:
    # The check above is only as strict as _passages is: a rule that leaves out its ports or its
    # peers must not pass for a narrow one.
    policy = {"spec": {"ingress": [{}], "egress": [{"to": [EVERY_IPV4_ADDRESS]}]}}

    assert _passages(policy) == {
        ("ingress", ANYWHERE, "any protocol", EVERY_PORT),
        ("egress", _peer(EVERY_IPV4_ADDRESS), "any protocol", EVERY_PORT),
    }


# ---- nothing shipped hands mesh writes to the built-in roles -------------------------------

AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}


def _mesh_writes_aggregated_into_built_in_roles(objects: Objects) -> list[str]:
    """ClusterRoles labelled into the built-in admin, edit or view roles that grant a write on
    NodeGroupMeshes (or their subresources, or through a wildcard), as `name: verbs`."""
    found = []
    for role in objects:
        if not isinstance(role, dict) or role.get("kind") != "ClusterRole":
            continue
        labels = role["metadata"].get("labels") or {}
        if not any(
            key.startswith(AGGREGATE_TO) and value == "true" for key, value in labels.items()
        ):
            continue
        for rule in role.get("rules") or []:
            groups = set(rule.get("apiGroups") or [])
            resources = {r.partition("/")[0] for r in rule.get("resources") or []}
            writes = set(rule.get("verbs") or []) & WRITE_VERBS
            if groups & {"sgmesh.io", "*"} and resources & {"nodegroupmeshes", "*"} and writes:
                found.append(f"{role['metadata']['name']}: {sorted(writes)}")
    return found


def _everything_shipped(helm: Path) -> Objects:
    """Every object in deploy/'s YAML files (doctor's RBAC and the components included) and
    the chart with every option on."""
    objects: Objects = []
    templates = CHART / "templates"
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if templates not in path.parents:
            objects += load_objects(path.read_text())
    everything_on = [
        "peering.enabled=true",
        "metrics.serviceMonitor.enabled=true",
        "networkPolicy.enabled=true",
    ]
    return objects + load_objects(helm_template(helm, values=everything_on, include_crds=True))


def test_no_shipped_cluster_role_lets_admin_edit_or_view_users_write_meshes(helm: Path) -> None:
    # A NodeGroupMesh opens security groups to each other inside the VPC: writing one is a
    # network administrator's right, given by an explicit binding. Aggregated into admin or
    # edit, it would go to everyone those roles are bound to cluster-wide, often whole teams.
    shipped = _everything_shipped(helm)
    assert any(obj.get("kind") == "ClusterRole" for obj in shipped)

    assert _mesh_writes_aggregated_into_built_in_roles(shipped) == []


def test_a_cluster_role_aggregating_mesh_writes_into_edit_is_caught() -> None:
    role = {
        "kind": "ClusterRole",
        "metadata": {
            "name": "sgmesh-edit",
            "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"},
        },
        "rules": [
            {"apiGroups": ["sgmesh.io"], "resources": ["nodegroupmeshes"], "verbs": ["get"]},
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["create"]},
        ],
    }
    read_only_view = {
        "kind": "ClusterRole",
        "metadata": {
            "name": "sgmesh-view",
            "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"},
        },
        "rules": [
            {
                "apiGroups": ["sgmesh.io"],
                "resources": ["nodegroupmeshes"],
                "verbs": ["get", "list", "watch"],
            }
        ],
    }

    assert _mesh_writes_aggregated_into_built_in_roles([role, read_only_view]) == [
        "sgmesh-edit: ['create']"
    ]


def _variables_the_operator_reads() -> set[str]:
    # Every setting is read from the environment in one module of the command line.
    source = (REPO_ROOT / "operator" / "sgmesh" / "cli" / "settings.py").read_text()
    return set(re.findall(r"environ\.get\(\s*\"(SGMESH_[A-Z_]+)\"", source))


def test_every_setting_is_a_variable_the_operator_reads(rendering: Rendering) -> None:
    read = _variables_the_operator_reads()
    assert read, "no SGMESH_ variable found in cli/settings.py"
    assert set(operator_environment(rendering.deployment)) <= read


def test_operator_objects_sync_before_meshes_and_crds_before_everything(
    rendering: Rendering,
) -> None:
    waves = {
        f"{obj['kind']}/{obj['metadata']['name']}": int(
            obj["metadata"].get("annotations", {})["argocd.argoproj.io/sync-wave"]
        )
        for obj in rendering.objects
    }
    crd_waves = [wave for key, wave in waves.items() if key.startswith("CustomResourceDefinition/")]
    other_waves = [wave for key, wave in waves.items() if not key.startswith("Custom")]
    # Meshes carry no wave (0): everything the operator needs comes before them.
    assert all(wave < 0 for wave in waves.values()), waves
    assert max(crd_waves, default=-10) < min(other_waves), waves


# ---- the kustomize base itself -------------------------------------------------------------


def test_kustomize_base_installs_the_crd_of_crds_unchanged(base_objects: Objects) -> None:
    checked_in = yaml.safe_load((REPO_ROOT / "crds" / "nodegroupmesh.yaml").read_text())
    assert find(base_objects, "CustomResourceDefinition") == checked_in


def test_kustomize_base_namespace_enforces_restricted_pod_security(base_objects: Objects) -> None:
    namespace = find(base_objects, "Namespace", "sgmesh-system")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_image_of_every_install_is_the_package_version(base_objects: Objects) -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    [container] = find(base_objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"].rpartition(":")[2] == version
    assert chart["appVersion"] == version


def test_samples_are_valid_meshes_without_a_sync_wave(kubectl: Path) -> None:
    from sgmesh.api import models

    samples = load_objects(kustomize(kubectl, DEPLOY / "samples"))
    assert samples
    for sample in samples:
        models.NodeGroupMesh.parse(sample, sample["metadata"]["name"])
        assert "argocd.argoproj.io/sync-wave" not in sample["metadata"].get("annotations", {})


def _readme_block(language: str, starting_with: str) -> str:
    text = (DEPLOY / "README.md").read_text()
    blocks = re.findall(rf"```{language}\n(.*?)```", text, re.S)
    [block] = [b for b in blocks if b.lstrip().startswith(starting_with)]
    # Blocks inside a list item are indented like it.
    indent = min(len(line) - len(line.lstrip()) for line in block.splitlines() if line.strip())
    return "\n".join(line[indent:] for line in block.splitlines())


def test_readme_overlay_sets_the_role_cluster_name_and_region(
    kubectl: Path, tmp_path: Path
) -> None:
    overlay = yaml.safe_load(_readme_block("yaml", "# kustomization.yaml of your overlay"))
    # The overlay names deploy/ of a release by URL; here it is this checkout's.
    overlay["resources"] = [os.path.relpath(DEPLOY, tmp_path)]
    kustomize_overlay(tmp_path, extra=overlay)

    objects = load_objects(kustomize(kubectl, tmp_path))

    account = find(objects, "ServiceAccount", "sgmesh")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(
        ":role/sgmesh-operator"
    )
    environment = operator_environment(find(objects, "Deployment", "sgmesh"))
    assert (environment["SGMESH_CLUSTER_NAME"], environment["SGMESH_REGION"]) == (
        "prod",
        "eu-west-1",
    )


def test_readme_trust_policy_names_the_deploy_service_account(base_objects: Objects) -> None:
    trust = json.loads(_readme_block("json", "{"))
    [statement] = trust["Statement"]
    conditions = statement["Condition"]["StringEquals"]
    [subject] = [value for key, value in conditions.items() if key.endswith(":sub")]
    account = find(base_objects, "ServiceAccount")["metadata"]

    assert subject == f"system:serviceaccount:{account['namespace']}:{account['name']}"
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"


def test_readme_network_policy_for_pod_identity_adds_the_agent_alone_in_both_installs(
    kubectl: Path, helm: Path, tmp_path: Path
) -> None:
    overlay = yaml.safe_load(_readme_block("yaml", "# kustomization.yaml: the operator pod's"))
    # The overlay names deploy/ of a release by URL; here it is this checkout's.
    overlay["resources"] = [os.path.relpath(DEPLOY, tmp_path)]
    overlay["components"] = [os.path.relpath(NETWORK_POLICY, tmp_path)]
    kustomize_overlay(tmp_path, extra=overlay)
    values = tmp_path / "helm" / "values.yaml"
    values.parent.mkdir()
    values.write_text(_readme_block("yaml", "# values.yaml: the operator pod's"))

    from_kustomize = find(load_objects(kustomize(kubectl, tmp_path)), "NetworkPolicy")
    from_helm = find(load_objects(helm_template(helm, values_files=[values])), "NetworkPolicy")

    component = find(load_objects(kustomize(kubectl, NETWORK_POLICY)), "NetworkPolicy")
    pod_identity_agent = ("egress", _peer({"ipBlock": {"cidr": "169.254.170.23/32"}}), "TCP", 80)
    assert _passages(from_kustomize) == _passages(component) | {pod_identity_agent}
    assert from_helm["spec"] == from_kustomize["spec"]


def test_security_md_names_deploy_files_that_exist() -> None:
    text = (REPO_ROOT / "SECURITY.md").read_text()
    named = set(re.findall(r"`(deploy/[^`\s]+)`", text))

    assert {"deploy/iam-policy.json", "deploy/components/network-policy"} <= named
    assert sorted(path for path in named if not (REPO_ROOT / path).exists()) == []

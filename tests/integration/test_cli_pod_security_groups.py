"""`sgmesh plan` on a file whose mesh lists SecurityGroupPolicies: read from the cluster of the
current kubeconfig (the real API server, with the real CRD), and a clear error naming the field
when no cluster answers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools import vpc_resources
from devtools.aws.world import NodeGroup, World
from tests.integration.test_cli import cluster, groups, run_process, write_mesh

__all__ = ["cluster", "groups"]  # the fixtures of test_cli.py, used here too


def unreachable_kubeconfig(path: Path) -> Path:
    kubeconfig = path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "gone", "user": {"token": "x"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}],
                "current-context": "gone",
            }
        )
    )
    return kubeconfig


def test_apply_without_a_reachable_cluster_names_pod_security_groups(
    world: World, groups: list[NodeGroup], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(unreachable_kubeconfig(tmp_path)))
    mesh = write_mesh(tmp_path, podSecurityGroups={"policies": ["payments/db-clients"]})

    code, _, err = run_process("apply", "-f", str(mesh))

    assert code == 1
    assert "spec.podSecurityGroups" in err
    assert "did not answer" in err
    assert "Traceback" not in err


@pytest.mark.kube
def test_plan_reads_security_group_policies_from_the_current_kubeconfig(
    world: World,
    groups: list[NodeGroup],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kube_cluster: Any,
    kube_namespace: str,
    securitygrouppolicy_crd: str,
) -> None:
    pods_sg = world.security_group("db-clients")
    name = f"cli-{os.getpid()}"
    manifest = vpc_resources.security_group_policy(kube_namespace, name, [pods_sg])
    applied = kube_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    assert applied.returncode == 0, applied.stderr
    try:
        monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
        listed = [f"{kube_namespace}/{name}", f"{kube_namespace}/gone"]
        mesh = write_mesh(tmp_path, podSecurityGroups={"policies": listed})

        code, out, err = run_process("plan", "-f", str(mesh), "-o", "json")
    finally:
        kube_cluster.kubectl(
            "delete", vpc_resources.RESOURCE, name, "-n", kube_namespace, "--ignore-not-found"
        )

    report = json.loads(out)
    [member] = [m for m in report["members"] if m["kind"] == "SecurityGroupPolicy"]
    assert member == {
        "name": f"{kube_namespace}/{name}",
        "kind": "SecurityGroupPolicy",
        "securityGroupIds": [pods_sg],
        "roleNames": [],
        "vpcId": world.main_vpc.id,
        "drainingSecurityGroups": [],
    }
    assert code == 1, err  # a problem stands: the missing policy
    assert "SecurityGroupPolicyNotFound" in json.dumps(report["problems"])
    assert f"{kube_namespace}/gone" in json.dumps(report["problems"])

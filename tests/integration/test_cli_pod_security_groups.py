"""`sgmesh plan` on a file whose mesh lists SecurityGroupPolicies: read from the cluster of the
current kubeconfig (the real API server, with the real CRD). The clear error naming the field
when no cluster answers is `tests/integration/test_cli.py`'s, for every member source."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from devtools import vpc_resources
from devtools.aws.world import NodeGroup, World
from tests.integration.test_cli import cluster, groups, run_process, write_mesh

__all__ = ["cluster", "groups"]  # the fixtures of test_cli.py, used here too


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

"""doctor's reader of the cluster against the real API server, as the identity deploy/doctor-
rbac.yaml grants: every pod of every namespace with its address and the branch ENI the VPC
resource controller's annotation names (hostNetwork and unscheduled pods left out), Nodes'
addresses, and SecurityGroupPolicies through the VPC resource controller's real CRD."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.k8s.controlplane import ControlPlane
from sgmesh.kube import inventory

pytestmark = pytest.mark.kube

DOCTOR_RBAC = Path(__file__).resolve().parents[3] / "deploy" / "doctor-rbac.yaml"
LABEL = "sgmesh.io/test-doctor-inventory"


def apply(cluster: ControlPlane, *manifests: dict[str, object]) -> None:
    listed = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
    applied = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(listed))
    assert applied.returncode == 0, applied.stderr


def pod(namespace: str, name: str, **spec: object) -> dict[str, object]:
    annotations = spec.pop("annotations", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL: "true"},
            "annotations": annotations,
        },
        "spec": {
            "containers": [
                {"name": "main", "image": "registry.k8s.io/pause:3.10"},
            ],
            **spec,
        },
    }


def set_address(cluster: ControlPlane, namespace: str, name: str, address: str) -> None:
    patched = cluster.kubectl(
        "patch",
        "pod",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"podIP": address, "podIPs": [{"ip": address}]}}),
    )
    assert patched.returncode == 0, patched.stderr


# The reader loads the kubeconfig into the Kubernetes client's process-wide configuration, as
# `sgmesh doctor` does: it runs in a process of its own, not in the test's.
READ = """
import dataclasses, json
from sgmesh.kube import inventory
reader = inventory.Reader()
print(json.dumps({
    "pods": [dataclasses.asdict(pod) for pod in reader.pods()],
    "policies": reader.security_group_policies(),
}))
"""


def read_as(kubeconfig: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    done = subprocess.run(
        [sys.executable, "-c", READ],
        capture_output=True,
        text=True,
        check=False,
        env={**env, "KUBECONFIG": str(kubeconfig)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


@pytest.fixture
def as_doctor(
    kube_cluster: ControlPlane, kube_namespace: str, securitygrouppolicy_crd: str
) -> Iterator[str]:
    """deploy/doctor-rbac.yaml bound to the ServiceAccounts of a fresh namespace, where the
    test's objects go; the namespace."""
    documents = list(yaml.safe_load_all(DOCTOR_RBAC.read_text()))
    for document in documents:
        for subject in document.get("subjects", []):
            subject["name"] = f"system:serviceaccounts:{kube_namespace}"
    apply(kube_cluster, *documents)
    yield kube_namespace
    kube_cluster.kubectl("delete", "-f", str(DOCTOR_RBAC), "--ignore-not-found")
    kube_cluster.kubectl(
        "delete", "pods", "-A", "-l", LABEL, "--force", "--grace-period=0", "--ignore-not-found"
    )


def test_pods_of_every_namespace_with_their_addresses_and_branch_enis(
    kube_cluster: ControlPlane, as_doctor: str
) -> None:
    kube_cluster.ensure_service_account(as_doctor, "default")
    kube_cluster.ensure_service_account("kube-system", "default")
    branch = [{"eniId": "eni-0123456789abcdef0", "privateIp": "10.0.1.77", "vlanId": 1}]
    apply(
        kube_cluster,
        pod(
            as_doctor,
            "payments",
            nodeName="node-a",
            annotations={inventory.POD_ENI_ANNOTATION: json.dumps(branch)},
        ),
        pod(
            as_doctor,
            "broken",
            nodeName="node-a",
            annotations={inventory.POD_ENI_ANNOTATION: "{not json"},
        ),
        pod(as_doctor, "on-the-host", nodeName="node-a", hostNetwork=True),
        pod(as_doctor, "unscheduled"),
        pod("kube-system", "coredns-x", nodeName="node-b"),
        {
            "apiVersion": "vpcresources.k8s.aws/v1beta1",
            "kind": "SecurityGroupPolicy",
            "metadata": {"name": "db-clients", "namespace": as_doctor},
            "spec": {
                "podSelector": {"matchLabels": {"app": "payments"}},
                "securityGroups": {"groupIds": ["sg-0123456789abcdef0"]},
            },
        },
    )
    set_address(kube_cluster, as_doctor, "payments", "10.0.1.77")

    read = read_as(kube_cluster.kubeconfig_for(as_doctor, "doctor"))
    pods = {(p["namespace"], p["name"]): p for p in read["pods"]}
    policies = read["policies"]

    assert (as_doctor, "on-the-host") not in pods
    assert (as_doctor, "unscheduled") not in pods
    payments = pods[(as_doctor, "payments")]
    assert payments["ip"] == "10.0.1.77"
    assert payments["branch_enis"] == [
        dataclasses.asdict(inventory.BranchEni("eni-0123456789abcdef0", "10.0.1.77", None))
    ]
    broken = pods[(as_doctor, "broken")]
    assert broken["branch_enis"] == []
    assert "{not json" in broken["branch_error"]
    assert pods[("kube-system", "coredns-x")]["ip"] is None
    assert [p["metadata"]["name"] for p in policies if p["metadata"]["namespace"] == as_doctor] == [
        "db-clients"
    ]

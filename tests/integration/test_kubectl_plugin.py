"""`kubectl sgmesh`: the installed `kubectl-sgmesh` script, run by itself and found by kubectl's
own plugin discovery, against the real API server and a moto server, choosing the cluster as
kubectl does (`--context`, `--kubeconfig`, KUBECONFIG).

The kubeconfig has two contexts: `live` (the test's API server) and `dead` (nobody listens),
the current one. Doctor exits 3 when the API server does not answer, so which context a run
used shows in its exit code and message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.aws.moto_server import free_port
from devtools.k8s import build
from devtools.k8s.controlplane import ControlPlane
from devtools.operator_harness import wait_until

pytestmark = pytest.mark.kube

SCRIPT = Path(sys.executable).with_name("kubectl-sgmesh")
DEAD = "could not be reached to list nodes"


@pytest.fixture
def kubeconfig(kube_cluster: ControlPlane, tmp_path: Path) -> Path:
    """The API server's kubeconfig with its context renamed `live`, and a `dead` context (the
    current one) for a server nobody listens on."""
    config: dict[str, Any] = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    [cluster] = config["clusters"]
    [context] = config["contexts"]
    dead_cluster = {
        "name": "dead",
        "cluster": {**cluster["cluster"], "server": f"https://127.0.0.1:{free_port()}"},
    }
    config["clusters"].append(dead_cluster)
    config["contexts"] = [
        {"name": "live", "context": context["context"]},
        {"name": "dead", "context": {**context["context"], "cluster": "dead"}},
    ]
    config["current-context"] = "dead"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def environment(aws_env: dict[str, str], kubeconfig: Path) -> dict[str, str]:
    """The process environment: moto's AWS, KUBECONFIG naming the two-context file, no
    in-cluster configuration."""
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


def _reached_the_api_server(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode in (0, 1) and DEAD not in result.stderr


def test_the_console_script_is_installed() -> None:
    assert SCRIPT.is_file(), "pip install -e . installs kubectl-sgmesh beside sgmesh"
    assert os.access(SCRIPT, os.X_OK)


def test_context_before_the_subcommand_chooses_the_cluster(environment: dict[str, str]) -> None:
    current = _run([str(SCRIPT), "doctor"], environment)
    chosen = _run([str(SCRIPT), "--context", "live", "doctor"], environment)
    chosen_after = _run([str(SCRIPT), "doctor", "--context=live"], environment)

    assert (current.returncode, DEAD in current.stderr) == (3, True), current.stderr
    assert _reached_the_api_server(chosen), chosen.stderr
    assert _reached_the_api_server(chosen_after), chosen_after.stderr


def test_kubeconfig_flag_replaces_the_environments(
    environment: dict[str, str], kubeconfig: Path, kube_cluster: ControlPlane
) -> None:
    # KUBECONFIG names the two-context file (current: dead); the flag names the live one.
    result = _run(
        [str(SCRIPT), "--kubeconfig", str(kube_cluster.kubeconfig), "doctor"], environment
    )

    assert _reached_the_api_server(result), result.stderr


def test_unknown_context_is_a_usage_error_naming_it(environment: dict[str, str]) -> None:
    result = _run([str(SCRIPT), "--context", "prod", "doctor"], environment)

    assert result.returncode == 64
    assert "--context 'prod': no such context" in result.stderr
    assert "contexts: dead, live" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_names_kubectl_sgmesh(environment: dict[str, str]) -> None:
    result = _run([str(SCRIPT), "--help"], environment)

    assert result.returncode == 0
    assert result.stdout.startswith("usage: kubectl sgmesh")
    for command in ("doctor", "plan", "apply"):
        assert command in result.stdout


def test_kubectl_finds_the_plugin_and_passes_its_flags(
    environment: dict[str, str], kube_binaries: build.Binaries
) -> None:
    # kubectl's own plugin discovery: an executable named kubectl-sgmesh on PATH.
    path_dir = SCRIPT.parent
    env = dict(environment, PATH=os.pathsep.join([str(path_dir), environment.get("PATH", "")]))
    kubectl = str(kube_binaries.kubectl)
    assert shutil.which("kubectl-sgmesh", path=env["PATH"]) == str(SCRIPT)

    listed = _run([kubectl, "plugin", "list"], env)
    current = _run([kubectl, "sgmesh", "doctor"], env)
    chosen = _run([kubectl, "sgmesh", "--context", "live", "doctor"], env)
    chosen_after = _run([kubectl, "sgmesh", "doctor", "--context", "live"], env)

    assert str(SCRIPT) in listed.stdout, listed.stdout + listed.stderr
    assert (current.returncode, DEAD in current.stderr) == (3, True), current.stderr
    assert _reached_the_api_server(chosen), chosen.stderr
    assert _reached_the_api_server(chosen_after), chosen_after.stderr


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ("nodegroupmesh.spec.cniPolicy", "Default: attached"),
        ("nodegroupmesh.spec.cniPolicy.policyArn", "AmazonEKS_CNI_Policy"),
        ("nodegroupmesh.spec.traffic.fromPort", "Example: 53"),
        ("nodegroupmesh.status.conditions.reason", "Reconciled"),
    ],
)
def test_kubectl_explain_answers_from_the_installed_crd(
    kube_cluster: ControlPlane, nodegroupmesh_crd: str, field: str, says: str
) -> None:
    # What a user asks the API server, which serves the CRD's schema as OpenAPI: published a
    # moment after the CRD is Established.
    result = wait_until(
        lambda: (answer := kube_cluster.kubectl("explain", field)).returncode == 0 and answer,
        30,
        f"kubectl explain {field} answers",
    )

    assert says in " ".join(result.stdout.split())

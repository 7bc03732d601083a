"""Render what a cluster admin applies — the kustomize base and its variants, the Helm chart —
into Kubernetes objects, and compare renderings object by object.

Rendering needs no API server: `kubectl kustomize` (the kubectl the control plane is built
with) and `helm template` (built by devtools/helm/build.py).
"""

from __future__ import annotations

import copy
import difflib
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CHART",
    "DEPLOY",
    "HELM_ONLY_LABELS",
    "REPO_ROOT",
    "Objects",
    "diff_objects",
    "find",
    "helm_template",
    "kustomize",
    "kustomize_overlay",
    "load_objects",
    "operator_environment",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
CHART = DEPLOY / "helm" / "sgmesh"
# Labels Helm charts carry by convention, which the kustomize base has no use for.
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")

Objects = list[dict[str, Any]]


class RenderError(AssertionError):
    """kubectl kustomize or helm refused the input; the message carries what it said."""


def _run(argv: Sequence[str], cwd: Path | None = None) -> str:
    result = subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RenderError(f"{' '.join(map(str, argv))} failed:\n{result.stderr}{result.stdout}")
    return result.stdout


def load_objects(text: str) -> Objects:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize(kubectl: Path, directory: Path) -> str:
    """`kubectl kustomize DIRECTORY`, as `kubectl apply -k` would build it."""
    return _run([str(kubectl), "kustomize", str(directory)])


def kustomize_overlay(
    workdir: Path,
    resources: Iterable[Path] = (DEPLOY,),
    components: Iterable[Path] = (),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write an overlay as a user would (in a directory of their own, pointing at deploy/ by
    relative path: kustomize refuses absolute ones) and return its directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(path, workdir) for path in resources],
    }
    if components:
        kustomization["components"] = [os.path.relpath(path, workdir) for path in components]
    kustomization.update(extra or {})
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return workdir


# The chart renders nothing without a cluster name: tests render for this one unless they say.
SAMPLE_CLUSTER = "prod"


def helm_template(
    helm: Path,
    release: str = "sgmesh",
    namespace: str = "sgmesh-system",
    values: Sequence[str] = (),
    values_files: Sequence[Path] = (),
    include_crds: bool = False,
    cluster_name: str | None = SAMPLE_CLUSTER,
) -> str:
    argv = [str(helm), "template", release, str(CHART), "--namespace", namespace]
    if cluster_name is not None:
        argv += ["--set", f"clusterName={cluster_name}"]
    for setting in values:
        argv += ["--set", setting]
    for path in values_files:
        argv += ["--values", str(path)]
    if include_crds:
        argv.append("--include-crds")
    return _run(argv)


def find(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of `kind` (named `name`); fails listing what there is otherwise."""
    found = [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    if len(found) != 1:
        present = sorted(f"{obj['kind']}/{obj['metadata']['name']}" for obj in objects)
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)} in {present}")
    return found[0]


def _key(obj: Mapping[str, Any]) -> str:
    metadata = obj["metadata"]
    namespace = metadata.get("namespace", "")
    return f"{obj['apiVersion']} {obj['kind']} {namespace}/{metadata['name']}"


def normalized(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as the API server would take it, less what only says who rendered it: Helm's
    bookkeeping labels, and the order of environment variables (a kustomize patch puts the
    variables it sets first; no value here refers to another, so order means nothing)."""
    result = copy.deepcopy(dict(obj))
    labels = result.get("metadata", {}).get("labels") or {}
    for label in HELM_ONLY_LABELS:
        labels.pop(label, None)
    template = result.get("spec", {}).get("template", {}).get("spec", {})
    for container in template.get("containers", []):
        if "env" in container:
            container["env"] = sorted(container["env"], key=lambda variable: variable["name"])
    return result


def diff_objects(left: Objects, right: Objects, left_name: str, right_name: str) -> str:
    """'' when both hold the same objects; otherwise a readable account of the differences."""
    left_by_key = {_key(obj): normalized(obj) for obj in left}
    right_by_key = {_key(obj): normalized(obj) for obj in right}
    report: list[str] = []
    for key in sorted(left_by_key.keys() - right_by_key.keys()):
        report.append(f"only in {left_name}: {key}")
    for key in sorted(right_by_key.keys() - left_by_key.keys()):
        report.append(f"only in {right_name}: {key}")
    for key in sorted(left_by_key.keys() & right_by_key.keys()):
        if left_by_key[key] != right_by_key[key]:
            report.append(f"{key} differs:")
            report.extend(
                difflib.unified_diff(
                    yaml.safe_dump(left_by_key[key]).splitlines(),
                    yaml.safe_dump(right_by_key[key]).splitlines(),
                    left_name,
                    right_name,
                    lineterm="",
                )
            )
    return "\n".join(report)


def operator_environment(deployment: Mapping[str, Any]) -> dict[str, str]:
    """The SGMESH_* variables a rendered Deployment gives the operator."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {
        variable["name"]: variable.get("value", "")
        for variable in container.get("env", [])
        if variable["name"].startswith("SGMESH_")
    }

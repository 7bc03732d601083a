"""Build the `helm` binary from Go modules, once per version, into a user cache.

The version is the one `devtools/helm/go.mod` pins (helm.sh/helm/v3, a `tool` of that
module). The binary goes to `${XDG_CACHE_HOME:-~/.cache}/sgmesh/helm/<version>/helm`, outside
the repository, so later runs on the same machine reuse it. As for the control plane, a lock
file makes concurrent callers wait for one build, and a build is published by renaming a
finished directory. Nothing prebuilt is downloaded: the source comes through the module proxy.

Usage: `python -m devtools.helm.build` builds it if needed and prints its path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from devtools.k8s import build

__all__ = ["HelmBuildError", "cache_root", "ensure_helm", "pinned_version"]

MODULE_DIR = Path(__file__).resolve().parent
PACKAGE = "helm.sh/helm/v3/cmd/helm"
BUILD_INFO = "build-info.json"
# Part of the cache key with go.mod and go.sum: change it when the way of building changes.
BUILD_RECIPE = "CGO_ENABLED=0 -trimpath -s -w; version and Kubernetes version variables"


class HelmBuildError(RuntimeError):
    """helm could not be built; the message says which step failed."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sgmesh" / "helm"


def _required_version(module: str) -> str:
    match = re.search(rf"^\s*{re.escape(module)} (v\S+)", (MODULE_DIR / "go.mod").read_text(), re.M)
    if match is None:
        raise HelmBuildError(f"{module} is not required by {MODULE_DIR / 'go.mod'}")
    return match.group(1)


def pinned_version() -> str:
    return _required_version("helm.sh/helm/v3")


def _fingerprint() -> str:
    digest = hashlib.sha256(BUILD_RECIPE.encode())
    for name in ("go.mod", "go.sum"):
        digest.update((MODULE_DIR / name).read_bytes())
    return digest.hexdigest()


def _ldflags(version: str) -> str:
    # What helm's own Makefile sets: its version, and the Kubernetes version it reports to
    # charts (.Capabilities.KubeVersion) and lints against, taken from client-go v0.N → 1.N.
    minor = _required_version("k8s.io/client-go").removeprefix("v").split(".")[1]
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for package in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {package}.k8sVersionMajor=1", f"-X {package}.k8sVersionMinor={minor}"]
    return " ".join(flags)


def _is_complete(directory: Path, fingerprint: str) -> bool:
    try:
        info = json.loads((directory / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return False
    return info.get("modules") == fingerprint and os.access(directory / "helm", os.X_OK)


def _build(version: str, target: Path, fingerprint: str) -> None:
    env = dict(os.environ, CGO_ENABLED="0", GOWORK="off")
    env["GOFLAGS"] = " ".join(
        flag for flag in env.get("GOFLAGS", "").split() if not flag.startswith("-mod=")
    )
    print(f"building helm {version} (first run only: minutes) ...", file=sys.stderr, flush=True)
    output = str(target / "helm")
    result = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags", _ldflags(version), "-o", output, PACKAGE],
        cwd=MODULE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise HelmBuildError(f"go build {PACKAGE} failed:\n{result.stdout}{result.stderr}")
    (target / BUILD_INFO).write_text(
        json.dumps({"helm": version, "modules": fingerprint}, indent=2) + "\n"
    )


def ensure_helm() -> Path:
    """The pinned helm binary, built first if this machine has not yet."""
    version = pinned_version()
    fingerprint = _fingerprint()
    root = cache_root()
    directory = root / version
    try:
        build.build_once(
            directory,
            lambda candidate: _is_complete(candidate, fingerprint),
            lambda partial: _build(version, partial, fingerprint),
        )
    except build.BuildError as error:
        raise HelmBuildError(str(error)) from error
    return directory / "helm"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.helm.build", description=__doc__)
    parser.parse_args()
    try:
        print(ensure_helm())
    except HelmBuildError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()

"""Build the `helm` binary from Go modules, once per version, into a user cache
(`devtools.go_tool`): the version `devtools/helm/go.mod` pins (helm.sh/helm/v3, a `tool` of
that module), in `${XDG_CACHE_HOME:-~/.cache}/sgmesh/helm/<version>/helm`.

Usage: `python -m devtools.helm.build` builds it if needed and prints its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from devtools.go_tool import GoTool, GoToolBuildError

__all__ = ["TOOL", "HelmBuildError", "ensure_helm"]

HelmBuildError = GoToolBuildError


def _ldflags(tool: GoTool, version: str) -> Sequence[str]:
    # What helm's own Makefile sets: its version, and the Kubernetes version it reports to
    # charts (.Capabilities.KubeVersion) and lints against, taken from client-go v0.N → 1.N.
    minor = tool.required_version("k8s.io/client-go").removeprefix("v").split(".")[1]
    flags = [f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for package in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {package}.k8sVersionMajor=1", f"-X {package}.k8sVersionMinor={minor}"]
    return flags


TOOL = GoTool(
    name="helm",
    module_dir=Path(__file__).resolve().parent,
    module="helm.sh/helm/v3",
    package="helm.sh/helm/v3/cmd/helm",
    recipe="CGO_ENABLED=0 -trimpath -s -w; version and Kubernetes version variables",
    ldflags=_ldflags,
)


def ensure_helm() -> Path:
    """The pinned helm binary, built first if this machine has not yet."""
    return TOOL.ensure()


if __name__ == "__main__":
    TOOL.main()

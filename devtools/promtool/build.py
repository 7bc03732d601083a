"""Build Prometheus's `promtool` from Go modules, once per version, into a user cache
(`devtools.go_tool`): the version `devtools/promtool/go.mod` pins
(github.com/prometheus/prometheus, whose `cmd/promtool` is a `tool` of that module), in
`${XDG_CACHE_HOME:-~/.cache}/sgmesh/promtool/<version>/promtool`.

The tests check and unit-test the alerting rules with it (`promtool check rules`, `promtool
test rules`): Prometheus's own rule evaluator, never one written here.

Usage: `python -m devtools.promtool.build` builds it if needed and prints its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from devtools.go_tool import GoTool, GoToolBuildError

__all__ = ["TOOL", "PromtoolBuildError", "ensure_promtool"]

PromtoolBuildError = GoToolBuildError


def _ldflags(tool: GoTool, version: str) -> Sequence[str]:
    # What Prometheus's release builds set, so that `promtool --version` says what it is. The
    # module v0.3XX.Y is Prometheus 3.XX.Y.
    return [
        f"-X github.com/prometheus/common/version.Version={version}",
        "-X github.com/prometheus/common/version.Branch=module-proxy",
    ]


TOOL = GoTool(
    name="promtool",
    module_dir=Path(__file__).resolve().parent,
    module="github.com/prometheus/prometheus",
    package="github.com/prometheus/prometheus/cmd/promtool",
    recipe="CGO_ENABLED=0 -trimpath -s -w; prometheus/common version variables",
    ldflags=_ldflags,
)


def ensure_promtool() -> Path:
    """The pinned promtool binary, built first if this machine has not yet."""
    return TOOL.ensure()


if __name__ == "__main__":
    TOOL.main()

"""A command-line tool built from a Go module of this repository, once per version, into a
user cache: what `devtools/helm` and `devtools/promtool` build (`make helm`, `make promtool`).

The version is the one the directory's go.mod pins (the tool is a `tool` of that module). The
binary goes to `${XDG_CACHE_HOME:-~/.cache}/sgmesh/<name>/<version>/<name>`, outside the
repository, so later runs on the same machine reuse it; go.mod, go.sum and the way of building
(`GoTool.recipe`) are its cache key. As for the control plane, a lock file makes concurrent
callers wait for one build, and a build is published by renaming a finished directory. Nothing
prebuilt is downloaded: the source comes through the module proxy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.k8s import build

__all__ = ["GoTool", "GoToolBuildError"]

BUILD_INFO = "build-info.json"


class GoToolBuildError(RuntimeError):
    """The tool could not be built; the message says which step failed."""


@dataclass(frozen=True)
class GoTool:
    name: str  # the binary, and its directory in the cache
    module_dir: Path  # the directory holding go.mod and go.sum
    module: str  # the module whose version is the tool's
    package: str  # what `go build` builds
    # Part of the cache key with go.mod and go.sum: change it when the way of building changes.
    recipe: str
    # -ldflags for a version: what the tool's own release builds set, beside `-s -w`.
    ldflags: Callable[[GoTool, str], Sequence[str]] = lambda tool, version: ()

    def required_version(self, module: str) -> str:
        go_mod = self.module_dir / "go.mod"
        match = re.search(rf"^\s*{re.escape(module)} (v\S+)", go_mod.read_text(), re.M)
        if match is None:
            raise GoToolBuildError(f"{module} is not required by {go_mod}")
        return match.group(1)

    def pinned_version(self) -> str:
        return self.required_version(self.module)

    def cache_root(self) -> Path:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "sgmesh" / self.name

    def ensure(self) -> Path:
        """The pinned binary, built first if this machine has not yet."""
        version = self.pinned_version()
        fingerprint = self._fingerprint()
        directory = self.cache_root() / version
        try:
            build.build_once(
                directory,
                lambda candidate: self._is_complete(candidate, fingerprint),
                lambda partial: self._build(version, partial, fingerprint),
            )
        except build.BuildError as error:
            raise GoToolBuildError(str(error)) from error
        return directory / self.name

    def main(self, argv: Sequence[str] | None = None) -> None:
        """`python -m devtools.<name>.build`: build if needed, print the binary's path."""
        parser = argparse.ArgumentParser(
            prog=f"python -m devtools.{self.name}.build",
            description=f"Build {self.name} {self.pinned_version()} from Go modules, once, "
            "into the user cache, and print its path.",
        )
        parser.parse_args(argv)
        try:
            print(self.ensure())
        except GoToolBuildError as error:
            sys.exit(str(error))

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(self.recipe.encode())
        for name in ("go.mod", "go.sum"):
            digest.update((self.module_dir / name).read_bytes())
        return digest.hexdigest()

    def _is_complete(self, directory: Path, fingerprint: str) -> bool:
        try:
            info = json.loads((directory / BUILD_INFO).read_text())
        except (OSError, ValueError):
            return False
        return info.get("modules") == fingerprint and os.access(directory / self.name, os.X_OK)

    def _build(self, version: str, target: Path, fingerprint: str) -> None:
        env = dict(os.environ, CGO_ENABLED="0", GOWORK="off")
        # The versions are pinned by go.mod/go.sum; never let a stray GOFLAGS re-resolve them.
        env["GOFLAGS"] = " ".join(
            flag for flag in env.get("GOFLAGS", "").split() if not flag.startswith("-mod=")
        )
        print(
            f"building {self.name} {version} (first run only: minutes) ...",
            file=sys.stderr,
            flush=True,
        )
        ldflags = " ".join(["-s", "-w", *self.ldflags(self, version)])
        output = str(target / self.name)
        result = subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", output, self.package],
            cwd=self.module_dir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise GoToolBuildError(
                f"go build {self.package} failed:\n{result.stdout}{result.stderr}"
            )
        (target / BUILD_INFO).write_text(
            json.dumps({self.name: version, "modules": fingerprint}, indent=2) + "\n"
        )

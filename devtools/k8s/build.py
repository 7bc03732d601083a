"""Build kube-apiserver, etcd and kubectl from Go modules, once per version, into a user cache.

The versions are the ones `go.mod` beside this file pins (k8s.io/kubernetes and
go.etcd.io/etcd/server/v3). Binaries go to `${XDG_CACHE_HOME:-~/.cache}/sgmesh/k8s/<version>/`,
outside the repository, so later runs on the same machine (CI included) reuse them. A lock file
makes concurrent callers wait for one build instead of racing; a build is published by renaming
a finished directory, so a killed build never leaves a half-filled cache behind.

This module never downloads a prebuilt binary: everything is compiled here from source modules
fetched through the Go module proxy.

Usage: `python -m devtools.k8s.build` prints where the binaries are; with `--bin-dir`, only
their directory, for `PATH`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.k8s import gen_replaces

__all__ = ["Binaries", "BuildError", "build_once", "cache_root", "ensure_binaries", "locked"]

MODULE_DIR = Path(__file__).resolve().parent
ETCD_PACKAGE = "go.etcd.io/etcd/server/v3"
KUBERNETES_PACKAGES = ("k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl")
BUILD_INFO = "build-info.json"
# Part of the cache key with go.mod and go.sum: change it whenever the way of building changes
# (flags, variables set by -ldflags), so that caches built the old way are rebuilt.
BUILD_RECIPE = "CGO_ENABLED=0 -trimpath -s -w; version variables of component-base, client-go"


class BuildError(RuntimeError):
    """The control-plane binaries could not be built; the message says which step failed."""


@dataclass(frozen=True)
class Binaries:
    version: str
    directory: Path

    @property
    def kube_apiserver(self) -> Path:
        return self.directory / "kube-apiserver"

    @property
    def etcd(self) -> Path:
        return self.directory / "etcd"

    @property
    def kubectl(self) -> Path:
        return self.directory / "kubectl"

    def all(self) -> tuple[Path, ...]:
        return (self.kube_apiserver, self.etcd, self.kubectl)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sgmesh" / "k8s"


def _module_fingerprint() -> str:
    """Changes whenever the module graph or the recipe does: then the binaries are rebuilt."""
    digest = hashlib.sha256(BUILD_RECIPE.encode())
    for name in ("go.mod", "go.sum"):
        digest.update((MODULE_DIR / name).read_bytes())
    return digest.hexdigest()


def _is_complete(binaries: Binaries, fingerprint: str) -> bool:
    info_path = binaries.directory / BUILD_INFO
    if not info_path.is_file():
        return False
    try:
        info = json.loads(info_path.read_text())
    except ValueError:
        return False
    return info.get("modules") == fingerprint and all(
        os.access(path, os.X_OK) for path in binaries.all()
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed): one build per machine at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _go_env() -> dict[str, str]:
    env = dict(os.environ, CGO_ENABLED="0", GOWORK="off")
    # The tool versions are pinned by go.mod/go.sum; never let a stray GOFLAGS re-resolve them.
    env["GOFLAGS"] = " ".join(
        flag for flag in env.get("GOFLAGS", "").split() if not flag.startswith("-mod=")
    )
    return env


def _go(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        ["go", *args], cwd=MODULE_DIR, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"go {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def _release_time(version: str, env: dict[str, str]) -> str:
    """The release's publication time, as `/version` reports buildDate (reproducible builds)."""
    info = json.loads(_go(["list", "-m", "-json", f"k8s.io/kubernetes@{version}"], env))
    return str(info.get("Time") or "1970-01-01T00:00:00Z")


def _kubernetes_ldflags(version: str, build_date: str) -> str:
    major, minor = version.removeprefix("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            # The proxy's archive does not say which commit it is: say nothing rather than guess.
            f"-X {package}.gitCommit=",
            # The source is the published module archive, not a git checkout.
            f"-X {package}.gitTreeState=archive",
            f"-X {package}.buildDate={build_date}",
        ]
    return " ".join(flags)


def _build(version: str, target: Path, fingerprint: str) -> None:
    env = _go_env()
    started = time.monotonic()
    ldflags = _kubernetes_ldflags(version, _release_time(version, env))
    print(
        f"building kube-apiserver, kubectl {version} and etcd (first run only: minutes) ...",
        file=sys.stderr,
        flush=True,
    )
    _go(["build", "-trimpath", "-ldflags", ldflags, "-o", f"{target}/", *KUBERNETES_PACKAGES], env)
    _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(target / "etcd"), ETCD_PACKAGE], env)
    info = {
        "kubernetes": version,
        "etcd": _etcd_version(env),
        "go": _go(["env", "GOVERSION"], env).strip(),
        "modules": fingerprint,
        "seconds": round(time.monotonic() - started),
    }
    (target / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")


def _etcd_version(env: dict[str, str]) -> str:
    info = json.loads(_go(["list", "-m", "-json", ETCD_PACKAGE], env))
    return str(info["Version"])


def ensure_binaries() -> Binaries:
    """Return the pinned binaries, building them first if this machine has not yet."""
    version = gen_replaces.pinned_kubernetes_version()
    fingerprint = _module_fingerprint()
    root = cache_root()
    binaries = Binaries(version, root / version)
    build_once(
        binaries.directory,
        lambda directory: _is_complete(Binaries(version, directory), fingerprint),
        lambda partial: _build(version, partial, fingerprint),
    )
    return binaries


def build_once(
    directory: Path,
    is_complete: Callable[[Path], bool],
    build_into: Callable[[Path], None],
    tool: str = "go",
) -> None:
    """Fill `directory` with a build (by `tool`, Go by default) once per machine: under a lock,
    so that two callers build once, and in a partial directory renamed into place when
    complete, so that a killed build leaves nothing half-done behind."""
    if is_complete(directory):
        return
    root = directory.parent
    with locked(root / f"{directory.name}.lock"):
        if is_complete(directory):  # another process built it while we waited
            return
        if shutil.which(tool) is None:
            raise BuildError(f"`{tool}` is not on PATH: {directory.name} is built with it")
        for stale in root.glob(f"{directory.name}.partial-*"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        partial = root / f"{directory.name}.partial-{os.getpid()}"
        partial.mkdir(parents=True)
        try:
            build_into(partial)
            shutil.rmtree(directory, ignore_errors=True)
            partial.rename(directory)
        finally:
            shutil.rmtree(partial, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.k8s.build", description=__doc__)
    parser.add_argument(
        "--bin-dir", action="store_true", help="print only the directory (for PATH=...)"
    )
    args = parser.parse_args()
    started = time.monotonic()
    try:
        binaries = ensure_binaries()
    except BuildError as error:
        sys.exit(str(error))
    if args.bin_dir:
        print(binaries.directory)
        return
    print(f"kubernetes {binaries.version} control plane in {binaries.directory}")
    for path in binaries.all():
        print(f"  {path}")
    print(f"ready in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()

"""Build the operator image from the Dockerfile with buildah, on a base built here.

No container registry is reachable from where the tests run, so the official Python image the
Dockerfile names by default cannot be pulled. Instead, a base of the same Debian release with
the same Python minor version is made once per machine with debootstrap (Debian packages only)
and cached as a root filesystem archive under `${XDG_CACHE_HOME:-~/.cache}/sgmesh/image-base/`,
with the same build-once routine (lock, partial directory, rename) as the control plane and
helm; it is imported into buildah's storage when missing there. The Dockerfile takes it as the
build argument `PYTHON_BASE`; a build never falls back to skipping because a registry is down.

pip inside the build reaches the package index the way this machine's pip does: the machine's
pip settings and CA bundle are handed to the build as secrets (mounted for the install step,
never stored in the image). Settings that name a file of this machine are left out, since the
build cannot see them; the CA bundle travels on its own.

Usage: `python -m devtools.image` builds `localhost/sgmesh:dev` and prints the build time
and the sizes of the image and of its virtual environment (`make image`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools import REPO_ROOT
from devtools.k8s import build

__all__ = [
    "BASE_PACKAGES",
    "DEBIAN_RELEASE",
    "IMAGE",
    "REPO_ROOT",
    "BuiltImage",
    "ImageBuildError",
    "ImageLauncher",
    "base_image",
    "build_context",
    "build_image",
    "cache_root",
    "ensure_base",
    "image_config",
    "mounted",
    "pip_settings",
    "report",
    "run_command",
    "run_in_image",
    "tree_size",
]

IMAGE = "localhost/sgmesh:dev"
# The official image the Dockerfile defaults to is Debian bookworm with Python 3.11: so is this.
DEBIAN_RELEASE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ROOTFS_ARCHIVE = "rootfs.tar"
BUILD_INFO = "build-info.json"
# Part of the base's cache key: change it whenever the way of building the base changes.
BASE_RECIPE = "debootstrap --variant=minbase; no docs, man pages, locales or apt lists"
# What a minimal base needs neither to run Python nor to build the image.
TRIMMED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
BUILD_SECONDS = 1800


class ImageBuildError(RuntimeError):
    """The base or the image could not be built; the message says which step failed and why."""


@dataclass(frozen=True)
class BuiltImage:
    name: str
    base: str
    seconds: float


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sgmesh" / "image-base"


def _run(argv: Sequence[str], timeout: float = 600, **options: Any) -> str:
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, **options
        )
    except FileNotFoundError as error:
        raise ImageBuildError(f"{argv[0]} is not installed: `make image` installs it") from error
    if result.returncode != 0:
        raise ImageBuildError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")
    return str(result.stdout)


def _debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources), else the CDN."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for source in sources:
        with contextlib.suppress(OSError):
            for found in re.findall(r"(https?://\S+/debian)/?(?:\s|$)", source.read_text()):
                return str(found)
    return DEFAULT_MIRROR


def _base_fingerprint() -> str:
    recipe = [BASE_RECIPE, DEBIAN_RELEASE, *BASE_PACKAGES]
    return hashlib.sha256("\n".join(recipe).encode()).hexdigest()[:12]


def base_image() -> str:
    """The local base's name in buildah's storage; it changes whenever its recipe does."""
    return f"localhost/sgmesh-base:{DEBIAN_RELEASE}-python3.11-{_base_fingerprint()}"


def _archive_complete(directory: Path) -> bool:
    try:
        info = json.loads((directory / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return False
    return info.get("fingerprint") == _base_fingerprint() and (directory / ROOTFS_ARCHIVE).is_file()


def _bootstrap(target: Path) -> None:
    started = time.monotonic()
    rootfs = target / "rootfs"
    mirror = _debian_mirror()
    print(f"building the local base from {mirror} (first run only: a minute or two) ...")
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            DEBIAN_RELEASE,
            str(rootfs),
            mirror,
        ],
        timeout=BUILD_SECONDS,
    )
    for path in TRIMMED:
        shutil.rmtree(rootfs / path, ignore_errors=True)
    for directory in ("var/lib/apt/lists", "var/cache/apt", "var/log"):
        for entry in (rootfs / directory).glob("*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    version = _run(["chroot", str(rootfs), "python", "--version"]).strip()
    if not version.startswith("Python 3.11."):
        raise ImageBuildError(f"the {DEBIAN_RELEASE} base has {version}, not Python 3.11")
    _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(target / ROOTFS_ARCHIVE), "."])
    shutil.rmtree(rootfs)
    info = {
        "fingerprint": _base_fingerprint(),
        "release": DEBIAN_RELEASE,
        "mirror": mirror,
        "python": version,
        "seconds": round(time.monotonic() - started),
    }
    (target / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")


def _image_exists(name: str) -> bool:
    result = subprocess.run(
        ["buildah", "inspect", "--type", "image", name], capture_output=True, check=False
    )
    return result.returncode == 0


def ensure_base() -> str:
    """The local base image, bootstrapped first if this machine has no archive of it yet and
    imported into buildah's storage if it is not there."""
    name = base_image()
    directory = cache_root() / f"{DEBIAN_RELEASE}-{_base_fingerprint()}"
    try:
        build.build_once(directory, _archive_complete, _bootstrap, tool="debootstrap")
    except build.BuildError as error:
        raise ImageBuildError(str(error)) from error
    with build.locked(cache_root() / "import.lock"):
        if _image_exists(name):
            return name
        container = _run(["buildah", "from", "scratch"]).strip()
        try:
            # buildah extracts a local tar archive it adds.
            _run(["buildah", "add", container, str(directory / ROOTFS_ARCHIVE), "/"])
            _run(
                [
                    "buildah",
                    "config",
                    "--env",
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env",
                    "LANG=C.UTF-8",
                    "--cmd",
                    "python3",
                    container,
                ]
            )
            _run(["buildah", "commit", "--quiet", container, name])
        finally:
            subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
    return name


def pip_settings() -> tuple[str, Path | None]:
    """This machine's pip settings as one pip.conf text, and its CA bundle (None: the default).

    Read from `pip config list`, which merges pip's configuration files and PIP_* variables as
    pip itself does. The certificate setting becomes the bundle; other settings naming a file
    here (find-links to a local directory, client certificates) are left out."""
    listed = _run([sys.executable, "-m", "pip", "config", "list"], timeout=60)
    sections: dict[str, dict[str, str]] = {}
    ca_bundle: Path | None = None
    for line in listed.splitlines():
        key, separator, quoted = line.partition("=")
        if not separator:
            continue
        section, _, option = key.rpartition(".")
        section = "global" if section in ("", ":env:") else section
        value = quoted.strip().strip("'\"")
        if option == "cert":
            ca_bundle = Path(value)
        elif not value.startswith(("/", "~")):
            sections.setdefault(section, {})[option] = value
    if ca_bundle is None:
        default = ssl.get_default_verify_paths().cafile
        ca_bundle = Path(default) if default else None
    text = "".join(
        f"[{section}]\n" + "".join(f"{option} = {value}\n" for option, value in options.items())
        for section, options in sections.items()
    )
    return text, ca_bundle


def _project_files() -> list[str]:
    """What a clean checkout of the work holds: tracked files and new ones git does not
    ignore, without build outputs or virtual environments."""
    listed = _run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_ROOT
    )
    return [path for path in listed.split("\0") if path and (REPO_ROOT / path).is_file()]


@contextlib.contextmanager
def build_context() -> Iterator[Path]:
    """A copy of the project as a clean checkout holds it, for the build to start from."""
    with tempfile.TemporaryDirectory(prefix="sgmesh-image-context-") as directory:
        context = Path(directory)
        for path in _project_files():
            (context / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / path, context / path)
        yield context


def build_image(name: str = IMAGE, base: str | None = None) -> BuiltImage:
    """Build the Dockerfile into `name` on `base` (default: the local base). Cached layers are
    reused: a build after no change to the package takes seconds."""
    base = base or ensure_base()
    settings, ca_bundle = pip_settings()
    with build_context() as context, tempfile.TemporaryDirectory() as secrets:
        pip_conf = Path(secrets) / "pip.conf"
        pip_conf.write_text(settings)
        bundle = Path(secrets) / "ca-bundle"
        bundle.write_bytes(ca_bundle.read_bytes() if ca_bundle else b"")
        started = time.monotonic()
        _run(
            [
                "buildah",
                "bud",
                "--isolation",
                "chroot",
                "--network",
                "host",
                "--layers",
                "--pull=never",
                "--build-arg",
                f"PYTHON_BASE={base}",
                "--secret",
                f"id=pip.conf,src={pip_conf}",
                "--secret",
                f"id=ca-bundle,src={bundle}",
                "--tag",
                name,
                str(context),
            ],
            timeout=BUILD_SECONDS,
        )
        seconds = time.monotonic() - started
    return BuiltImage(name=name, base=base, seconds=seconds)


def image_config(name: str) -> dict[str, Any]:
    """The OCI configuration of an image: User, Entrypoint, ExposedPorts, Labels, Env, ..."""
    inspected = json.loads(_run(["buildah", "inspect", "--type", "image", name]))
    config: dict[str, Any] = inspected["OCIv1"]["config"]
    return config


@contextlib.contextmanager
def mounted(name: str) -> Iterator[Path]:
    """The image's root filesystem, as a throw-away container of it mounted for the block:
    what is read there is what the image holds."""
    container = _run(["buildah", "from", "--pull=never", name]).strip()
    try:
        yield Path(_run(["buildah", "mount", container]).strip())
    finally:
        subprocess.run(["buildah", "umount", container], capture_output=True, check=False)
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def tree_size(root: Path) -> int:
    """Bytes of the regular files under `root` (each hard-linked file once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _, files in os.walk(root):
        for file_name in files:
            status = os.lstat(os.path.join(directory, file_name))
            if (status.st_dev, status.st_ino) not in seen:
                seen.add((status.st_dev, status.st_ino))
                total += status.st_size
    return total


def run_in_image(
    name: str,
    argv: Sequence[str],
    user: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in a throw-away container of `name` as `user`, on the host's network."""
    container = _run(["buildah", "from", "--pull=never", name]).strip()
    try:
        return subprocess.run(
            [*run_command(container, user, env or {}), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def run_command(container: str, user: str, env: dict[str, str]) -> list[str]:
    """`buildah run` of `container` as `user` with `env`, host network; the command follows."""
    variables = [option for key, value in env.items() for option in ("--env", f"{key}={value}")]
    return [
        "buildah",
        "run",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--user",
        user,
        *variables,
        container,
        "--",
    ]


class ImageLauncher:
    """Starts `sgmesh run` in a fresh container of an image, as `user`, through the image's
    entrypoint, for `devtools.operator_harness.Operator(launcher=...)`. The container gets the
    operator's environment and a copy of its kubeconfig that `user` may read, nothing of this
    machine's environment. `close()` removes every container it made: call it only once the
    operators it started have stopped."""

    KUBECONFIG = "/tmp/kubeconfig"

    def __init__(self, name: str, user: str) -> None:
        self.name = name
        self.user = user
        self.entrypoint: list[str] = list(image_config(name)["Entrypoint"] or [])
        self.containers: list[str] = []

    def __call__(
        self, run_options: Sequence[str], environment: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str]]:
        if self.entrypoint[-2:] != ["sgmesh", "run"]:
            raise ImageBuildError(f"the entrypoint of {self.name} is {self.entrypoint}")
        container = _run(["buildah", "from", "--pull=never", self.name]).strip()
        self.containers.append(container)
        _run(
            [
                "buildah",
                "copy",
                "--chown",
                self.user,
                container,
                environment["KUBECONFIG"],
                self.KUBECONFIG,
            ]
        )
        inside = {**environment, "KUBECONFIG": self.KUBECONFIG}
        # The entrypoint says `sgmesh run`: the options follow it, as a pod's args would.
        argv = [*run_command(container, self.user, inside), *self.entrypoint, *run_options]
        return argv, {"PATH": os.environ.get("PATH", os.defpath)}

    def close(self) -> None:
        for container in self.containers:
            subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
        self.containers.clear()


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.0f} MB"


def report(built: BuiltImage) -> str:
    """What `make image` prints: build time, the image's size and its environment's."""
    with mounted(built.name) as root:
        size, environment = tree_size(root), tree_size(root / "opt" / "sgmesh")
    return (
        f"{built.name} built on {built.base} in {built.seconds:.1f}s\n"
        f"image size {_megabytes(size)}, of which the virtual environment "
        f"{_megabytes(environment)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.image", description=__doc__)
    parser.add_argument("--tag", default=IMAGE, help=f"the image's name (default {IMAGE})")
    parser.add_argument(
        "--base", help="PYTHON_BASE for the Dockerfile (default: the local debootstrap base)"
    )
    args = parser.parse_args()
    try:
        print(report(build_image(args.tag, args.base)))
    except ImageBuildError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()

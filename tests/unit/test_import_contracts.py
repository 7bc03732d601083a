"""The import contracts of pyproject.toml hold for the package, and each kind of them fails
loudly when broken: a copy of sgmesh (and of devtools, the other root package) gets one
deliberate violation, and `lint-imports`, run on pyproject.toml itself, must report the contract
that forbids it as broken.

The copy is what gets analysed: lint-imports puts its working directory first on sys.path and
grimp finds the root packages by importing them from there, so running it in the copy's directory
shadows the installed sgmesh. The contracts are read from the real pyproject.toml, never copied.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = REPO_ROOT / "pyproject.toml"
IMPORT_LINTER: dict[str, Any] = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
CONTRACTS: list[dict[str, Any]] = IMPORT_LINTER["contracts"]


def _within(module: str, packages: list[str]) -> bool:
    return any(module == package or module.startswith(f"{package}.") for package in packages)


def forbidding(importer: str, imported: str) -> set[str]:
    """The forbidden contracts that `importer` importing `imported` breaks."""
    return {
        contract["name"]
        for contract in CONTRACTS
        if contract["type"] == "forbidden"
        and _within(importer, contract["source_modules"])
        and _within(imported, contract["forbidden_modules"])
    }


def layering(container: str) -> set[str]:
    """The layers contracts over the sub-packages of `container`."""
    return {
        contract["name"]
        for contract in CONTRACTS
        if contract["type"] == "layers" and container in contract["containers"]
    }


@dataclass(frozen=True)
class Violation:
    module: str  # a module of the copy, created when it does not exist
    line: str  # appended to it; grimp reads it, nothing runs it
    broken: set[str]  # the contracts that must be reported broken


VIOLATIONS = [
    pytest.param(
        Violation("sgmesh.engine.planning", "import boto3", forbidding("sgmesh.engine", "boto3")),
        id="engine-imports-boto3",
    ),
    pytest.param(
        Violation("sgmesh.api.models", "import kubernetes", forbidding("sgmesh.api", "kubernetes")),
        id="api-imports-kubernetes",
    ),
    pytest.param(
        Violation("sgmesh.doctor.diagnosis", "import kopf", forbidding("sgmesh.doctor", "kopf")),
        id="doctor-imports-kopf",
    ),
    pytest.param(
        Violation("sgmesh.cli.main", "import botocore", forbidding("sgmesh.cli", "botocore")),
        id="cli-imports-botocore",
    ),
    pytest.param(
        Violation("sgmesh.kube.sources", "import sgmesh.controller.status", layering("sgmesh")),
        id="kube-imports-the-controller",
    ),
    pytest.param(
        Violation("sgmesh.engine.planning", "from sgmesh.aws import client", layering("sgmesh")),
        id="engine-imports-aws",
    ),
    pytest.param(
        Violation("sgmesh.aws.discovery", "from sgmesh.kube import sources", layering("sgmesh")),
        id="aws-imports-its-sibling-kube",
    ),
    pytest.param(
        Violation("sgmesh.plugins", '"""A module in no layer."""', layering("sgmesh")),
        id="module-in-no-layer",
    ),
    pytest.param(
        Violation(
            "sgmesh.aws.apply",
            "from sgmesh.aws import discovery",
            forbidding("sgmesh.aws.apply", "sgmesh.aws.discovery"),
        ),
        id="apply-imports-discovery",
    ),
    pytest.param(
        Violation(
            "sgmesh.cli.main", "import devtools.operator_harness", forbidding("sgmesh", "devtools")
        ),
        id="sgmesh-imports-devtools",
    ),
    pytest.param(
        Violation("devtools.image", "import tests.support", forbidding("devtools", "tests")),
        id="devtools-imports-tests",
    ),
]


def _copy_root_packages(destination: Path) -> None:
    """Every root package the contracts name, copied from where this test imports it."""
    for name in IMPORT_LINTER["root_packages"]:
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"root package {name} is not found"
        assert spec.origin is not None, f"root package {name} is not a regular package"
        shutil.copytree(
            Path(spec.origin).parent,
            destination / name,
            ignore=shutil.ignore_patterns("__pycache__"),
        )


def _lint_imports(directory: Path) -> subprocess.CompletedProcess[str]:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo", str(PYPROJECT)],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _reported(output: str, verdict: str) -> set[str]:
    """The contracts the report of lint-imports gives `verdict` (KEPT or BROKEN); it wraps long
    names at the terminal's width, so whitespace is compared loosely."""
    report = " ".join(output.split())
    return {
        contract["name"]
        for contract in CONTRACTS
        if f"{' '.join(contract['name'].split())} {verdict}" in report
    }


def test_the_package_keeps_every_contract(tmp_path: Path) -> None:
    _copy_root_packages(tmp_path)

    result = _lint_imports(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert _reported(result.stdout, "KEPT") == {contract["name"] for contract in CONTRACTS}


@pytest.mark.parametrize("violation", VIOLATIONS)
def test_a_violation_breaks_the_contract_that_forbids_it(
    violation: Violation, tmp_path: Path
) -> None:
    assert violation.broken, f"no contract forbids what {violation.module} does here"
    _copy_root_packages(tmp_path)
    module = tmp_path.joinpath(*violation.module.split(".")).with_suffix(".py")
    with module.open("a") as source:
        source.write(f"\n{violation.line}\n")

    result = _lint_imports(tmp_path)

    assert result.returncode != 0, result.stdout + result.stderr
    assert violation.broken <= _reported(result.stdout, "BROKEN"), result.stdout
    # Broken by the violation, not by something else: the report names the module that broke it.
    assert violation.module in result.stdout, result.stdout

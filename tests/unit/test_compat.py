"""The fences around private library APIs hold.

- The installed kopf and botocore have everything the fences (`sgmesh.controller.kopf_compat`,
  `sgmesh.aws.botocore_compat`) rely on: their `missing()` is empty.
- A kopf that moved or renamed those names is caught, by `missing()` and by the image build's
  check (`python -m sgmesh.controller.kopf_compat`): stand-in kopf packages play such releases.
- No module of sgmesh but the two fences reaches kopf's private modules or botocore's internals.
  import-linter squashes an external package to its top-level name (`kopf._cogs` is `kopf` to
  it), so its contracts cannot say this; the source scan here is the fence's guard.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sgmesh
from sgmesh.aws import botocore_compat
from sgmesh.controller import kopf_compat

SGMESH = Path(sgmesh.__file__).parent
# The directory that holds the sgmesh package: a subprocess imports the same sgmesh as the tests.
SOURCE_ROOT = SGMESH.parent
FENCES = frozenset(
    {SGMESH / "controller" / "kopf_compat.py", SGMESH / "aws" / "botocore_compat.py"}
)
# What of botocore any module of aws/ may name: its documented session, configuration and
# exceptions, and `parsers` for `ResponseParserError`, which botocore raises to callers but
# defines there. Anything else of botocore (awsrequest, hooks, endpoint…) is behind the fence.
BOTOCORE_OPEN = frozenset({"config", "exceptions", "parsers", "session"})

_RUN_WITH_EVERY_KEYWORD = (
    "def run(*, identity=None, insights=None, ready_flag=None, memo=None, peering_name=None,\n"
    "        priority=0): ...\n"
)
# A kopf whose internals moved away: the public names are there, the private modules are not,
# and `run` no longer takes the `insights` the operator hands it.
KOPF_WITHOUT_INTERNALS = {
    "kopf/__init__.py": (
        "def run(*, identity=None, ready_flag=None, memo=None, peering_name=None, priority=0):\n"
        "    ...\n"
        "def get_default_registry(): ...\n"
    ),
}
# A kopf that kept its private modules but renamed what the operator uses in them.
KOPF_WITH_RENAMED_INTERNALS = {
    "kopf/__init__.py": _RUN_WITH_EVERY_KEYWORD + "def get_default_registry(): ...\n",
    "kopf/_cogs/__init__.py": "",
    "kopf/_cogs/structs/__init__.py": "",
    "kopf/_cogs/structs/references.py": "class Insight: ...\n",
    "kopf/_core/__init__.py": "",
    "kopf/_core/reactor/__init__.py": "",
    "kopf/_core/reactor/observation.py": (
        "async def process_discovered_resource_event(*, raw_event, settings, registry, indices):\n"
        "    ...\n"
    ),
}
STAND_INS = [
    pytest.param(
        KOPF_WITHOUT_INTERNALS,
        [
            "module kopf._cogs.structs.references",
            "module kopf._core.reactor.observation",
            "kopf.run(insights=)",
        ],
        id="internals-moved",
    ),
    pytest.param(
        KOPF_WITH_RENAMED_INTERNALS,
        [
            "kopf._cogs.structs.references.Insights",
            "kopf._core.reactor.observation.process_discovered_resource_event(insights=)",
        ],
        id="internals-renamed",
    ),
]


def test_installed_kopf_has_every_private_name_the_operator_uses() -> None:
    assert kopf_compat.missing() == []


def test_installed_botocore_has_every_internal_the_shared_reads_use() -> None:
    assert botocore_compat.missing() == []


def _python_with_kopf(
    stand_in: dict[str, str], root: Path, *arguments: str
) -> subprocess.CompletedProcess[str]:
    """Python run with the kopf `stand_in` (files by path) found before the installed one."""
    for relative, text in stand_in.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(SOURCE_ROOT)])}
    return subprocess.run(
        [sys.executable, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(("stand_in", "lacking"), STAND_INS)
def test_missing_names_what_a_kopf_without_the_private_names_lacks(
    stand_in: dict[str, str], lacking: list[str], tmp_path: Path
) -> None:
    result = _python_with_kopf(
        stand_in,
        tmp_path,
        "-c",
        "from sgmesh.controller import kopf_compat; print(kopf_compat.missing())",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr(lacking)


@pytest.mark.parametrize(("stand_in", "lacking"), STAND_INS)
def test_image_build_check_fails_on_a_kopf_without_the_private_names(
    stand_in: dict[str, str], lacking: list[str], tmp_path: Path
) -> None:
    result = _python_with_kopf(stand_in, tmp_path, "-m", "sgmesh.controller.kopf_compat")

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == "kopf lacks what sgmesh uses: " + ", ".join(lacking)


def test_image_build_check_passes_on_the_installed_kopf() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sgmesh.controller.kopf_compat"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)},
        check=False,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr


# ---- the source scan ----------------------------------------------------------------------------


def _fenced_part(dotted: str) -> str | None:
    """The part of `dotted` that only the fences may name (`kopf._cogs`, `botocore.awsrequest`),
    or None when it names something open to every module."""
    top, *parts = dotted.split(".")
    if top == "kopf":
        for depth, part in enumerate(parts, start=1):
            if part.startswith("_"):
                return ".".join([top, *parts[:depth]])
    if top == "botocore" and parts and parts[0] not in BOTOCORE_OPEN:
        return f"botocore.{parts[0]}"
    return None


def _dotted(node: ast.expr) -> tuple[str, list[str]] | None:
    """`a.b.c` as ("a", ["b", "c"]); None for anything but attributes of a plain name."""
    attributes: list[str] = []
    while isinstance(node, ast.Attribute):
        attributes.insert(0, node.attr)
        node = node.value
    return (node.id, attributes) if isinstance(node, ast.Name) else None


def _imported_by_name(call: ast.Call) -> str | None:
    """The module `importlib.import_module("…")` or `__import__("…")` imports, if literal."""
    function = call.func
    called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    if called not in {"import_module", "__import__"} or not call.args:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def fenced_names(source: str) -> list[str]:
    """What `source` reaches that only the fences may: `line: kopf._x` or `line: botocore.x`,
    whether by import (at module level or inside a function), by attribute of an imported
    module, or by `importlib.import_module` of a literal name."""
    tree = ast.parse(source)
    # Which module each imported name stands for, so that `refs._x` after
    # `import kopf as refs` is seen as `kopf._x`.
    bound: dict[str, str] = {}
    reached: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                reached.append((node.lineno, alias.name))
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    top = alias.name.partition(".")[0]
                    bound[top] = top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            reached.append((node.lineno, node.module))
            for alias in node.names:
                # `from kopf import _cogs` imports the module kopf._cogs.
                reached.append((node.lineno, f"{node.module}.{alias.name}"))
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Call) and (imported := _imported_by_name(node)) is not None:
            reached.append((node.lineno, imported))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (dotted := _dotted(node)) is not None:
            name, attributes = dotted
            if name in bound:
                reached.append((node.lineno, ".".join([bound[name], *attributes])))
    return sorted(
        {
            f"{line}: {fenced}"
            for line, dotted_name in reached
            if (fenced := _fenced_part(dotted_name)) is not None
        }
    )


def test_no_module_but_the_fences_reaches_private_kopf_or_botocore_internals() -> None:
    modules = sorted(set(SGMESH.rglob("*.py")) - FENCES)
    assert len(modules) > 10, f"no sgmesh sources under {SGMESH}"

    reaching = {
        str(module.relative_to(SOURCE_ROOT)): names
        for module in modules
        if (names := fenced_names(module.read_text()))
    }

    assert reaching == {}, (
        "reach kopf's private API or botocore's internals through "
        "sgmesh/controller/kopf_compat.py or sgmesh/aws/botocore_compat.py instead"
    )


@pytest.mark.parametrize("fence", sorted(FENCES), ids=lambda path: path.name)
def test_scan_sees_what_the_fences_themselves_reach(fence: Path) -> None:
    assert fenced_names(fence.read_text()), f"the scan is blind to what {fence.name} reaches"


@pytest.mark.parametrize(
    ("source", "reached"),
    [
        pytest.param(
            """
            def rescan():
                from kopf._core.reactor import observation
            """,
            ["3: kopf._core"],
            id="from-private-kopf-inside-a-function",
        ),
        pytest.param(
            """
            async def insights():
                import kopf._cogs.structs.references as references
            """,
            ["3: kopf._cogs"],
            id="import-private-kopf-inside-a-function",
        ),
        pytest.param("from kopf import _kits", ["1: kopf._kits"], id="private-kopf-by-name"),
        pytest.param(
            """
            import kopf as operator_framework
            operator_framework._cogs.structs.references.Insights()
            """,
            ["3: kopf._cogs"],
            id="private-kopf-by-attribute",
        ),
        pytest.param(
            """
            import importlib
            importlib.import_module("kopf._core.reactor.observation")
            """,
            ["3: kopf._core"],
            id="private-kopf-by-import-module",
        ),
        pytest.param(
            "import botocore.awsrequest", ["1: botocore.awsrequest"], id="botocore-import"
        ),
        pytest.param(
            """
            def answer():
                from botocore.awsrequest import AWSResponse
            """,
            ["3: botocore.awsrequest"],
            id="botocore-from-inside-a-function",
        ),
        pytest.param("from botocore import hooks", ["1: botocore.hooks"], id="botocore-by-name"),
        pytest.param(
            """
            import botocore.session
            botocore.awsrequest.AWSResponse("https://ec2", 200, {}, None)
            """,
            ["3: botocore.awsrequest"],
            id="botocore-by-attribute",
        ),
    ],
)
def test_scan_finds_private_kopf_and_botocore_internals(source: str, reached: list[str]) -> None:
    assert fenced_names(textwrap.dedent(source)) == reached


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            "import kopf\n@kopf.on.create('sgmesh.io', 'v1', 'x')\ndef f(): ...", id="kopf"
        ),
        pytest.param("from kopf import Body, Memo", id="kopf-names"),
        pytest.param(
            "import botocore.exceptions\nerror = botocore.exceptions.ClientError",
            id="botocore-exceptions",
        ),
        pytest.param("from botocore.config import Config", id="botocore-config"),
        pytest.param(
            '"""What kopf serves (`kopf._cogs.structs.references.Insights`)."""', id="doc"
        ),
        pytest.param("from sgmesh.controller import kopf_compat", id="the-fence"),
    ],
)
def test_scan_lets_public_kopf_and_botocore_through(source: str) -> None:
    assert fenced_names(source) == []

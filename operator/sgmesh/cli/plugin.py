"""`kubectl sgmesh`: the `sgmesh` command as a kubectl plugin (the `kubectl-sgmesh` console
script, which kubectl finds on PATH), with kubectl's conventions for choosing the cluster.

kubectl runs a plugin with the words and flags that follow its name, unchanged: `kubectl sgmesh
--context prod doctor` runs `kubectl-sgmesh --context prod doctor`. So kubectl's global flags
`--kubeconfig PATH` and `--context NAME` are taken here wherever they stand (before the
subcommand, as kubectl users write them, or after it), and the rest is `sgmesh`'s command line.
They mean what they mean to kubectl: `--kubeconfig` replaces `KUBECONFIG`, `--context` replaces
the kubeconfig's current-context, and without them KUBECONFIG (else ~/.kube/config) and its
current-context are used.

The Kubernetes client (spoken in `sgmesh.kube` only) reads KUBECONFIG, a list of files it
merges, the last file's current-context winning: the context is chosen by appending a file
that says only `current-context`, for the life of the command. This module must therefore run
before anything imports the Kubernetes client, and never reads or writes a credential.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from sgmesh.cli import exit_codes

__all__ = ["KubectlFlags", "UsageError", "main", "split_kubectl_flags"]

PROG = "kubectl sgmesh"
_FLAGS = ("--kubeconfig", "--context")
_DEFAULT_KUBECONFIG = "~/.kube/config"


class UsageError(Exception):
    """A kubectl flag without a value, or naming what is not there."""


@dataclass(frozen=True)
class KubectlFlags:
    kubeconfig: str | None = None
    context: str | None = None


def split_kubectl_flags(argv: Sequence[str]) -> tuple[KubectlFlags, list[str]]:
    """kubectl's `--kubeconfig` and `--context` (`--flag value` or `--flag=value`, anywhere
    before a `--`), and the arguments left for `sgmesh`."""
    found: dict[str, str] = {}
    rest: list[str] = []
    arguments = iter(argv)
    for argument in arguments:
        if argument == "--":
            rest.append(argument)
            rest.extend(arguments)
            break
        name, equals, value = argument.partition("=")
        if name not in _FLAGS:
            rest.append(argument)
            continue
        if not equals:
            value = next(arguments, "")
            if not value or value.startswith("-"):
                raise UsageError(f"{name} needs a value")
        if not value:
            raise UsageError(f"{name} needs a value")
        found[name.removeprefix("--")] = value
    return KubectlFlags(**found), rest


def _kubeconfig_files(kubeconfig: str) -> list[Path]:
    return [Path(path).expanduser() for path in kubeconfig.split(os.pathsep) if path]


def _contexts(files: Sequence[Path]) -> set[str]:
    """The names of the contexts the kubeconfig files define (files that are not there add
    none, as for kubectl)."""
    names: set[str] = set()
    for path in files:
        try:
            config = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, yaml.YAMLError) as error:
            raise UsageError(f"kubeconfig {path} cannot be read: {error}") from None
        for entry in (config or {}).get("contexts") or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                names.add(entry["name"])
    return names


@contextlib.contextmanager
def kubeconfig_environment(flags: KubectlFlags) -> Iterator[None]:
    """KUBECONFIG as the flags ask, for the life of the block; the file that chooses the
    context is removed after it."""
    before = os.environ.get("KUBECONFIG")
    kubeconfig = flags.kubeconfig or before or _DEFAULT_KUBECONFIG
    files = _kubeconfig_files(kubeconfig)
    if flags.kubeconfig is not None and not any(path.is_file() for path in files):
        raise UsageError(f"--kubeconfig {flags.kubeconfig!r}: no such file")
    chooser: Path | None = None
    try:
        if flags.context is not None:
            known = _contexts(files)
            if flags.context not in known:
                listed = ", ".join(sorted(known)) or "none"
                raise UsageError(
                    f"--context {flags.context!r}: no such context in the kubeconfig "
                    f"({kubeconfig}; contexts: {listed})"
                )
            with tempfile.NamedTemporaryFile(
                "w", prefix="kubectl-sgmesh-", suffix=".yaml", delete=False
            ) as written:
                json.dump(
                    {"apiVersion": "v1", "kind": "Config", "current-context": flags.context},
                    written,
                )
            chooser = Path(written.name)
            kubeconfig = os.pathsep.join([*map(str, files), str(chooser)])
        os.environ["KUBECONFIG"] = kubeconfig
        yield
    finally:
        if chooser is not None:
            chooser.unlink(missing_ok=True)
        if before is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = before


def main(argv: Sequence[str] | None = None) -> int:
    """Run `kubectl sgmesh ARGS` and return its exit code (those of `sgmesh`)."""
    try:
        flags, rest = split_kubectl_flags(sys.argv[1:] if argv is None else argv)
        with kubeconfig_environment(flags):
            from sgmesh.cli import main as command  # noqa: PLC0415 - after KUBECONFIG is set

            return command.main(rest, prog=PROG)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return exit_codes.USAGE

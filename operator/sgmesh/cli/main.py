"""The `sgmesh` command line: its parser, and `main`, which turns arguments into an exit code.

`kubectl sgmesh` (`sgmesh.cli.plugin`) runs the same commands as a kubectl plugin.
The commands are `plan` and `apply` (the operator's pipeline once, on a NodeGroupMesh YAML file,
with AWS reached through the standard environment), `doctor`, `crd`, `iam-policy` (the
operator's IAM policy for a cluster) and `run` (the operator).
What each exit code means, for every command, is in `sgmesh.cli.exit_codes`: 0 converged or
nothing to do, 1 error, 2 changes pending, 64 usage (a bad flag or environment setting), and
doctor's own 1 problems found and 3 a read failed (`sgmesh.doctor.command`).

This module only parses and dispatches: it must never hold the work of a command, nor let
argparse exit with its own 2 for a usage error, which a script would read as changes pending.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from sgmesh.api import crd, models
from sgmesh.aws import client, roles
from sgmesh.cli import cluster, exit_codes, iam_policy, pipeline, settings
from sgmesh.engine import planning

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, prog: str = "sgmesh") -> int:
    """Run the command `argv` names (default: `sys.argv[1:]`) and return its exit code. `prog`:
    the name usage messages give the command (`kubectl sgmesh` as a kubectl plugin)."""
    try:
        parser = _parser(prog)
        arguments = parser.parse_args(argv)
    except settings.UsageError as error:
        # A setting read from the environment while the parser is built (the test suite's).
        print(f"{prog}: error: {error}", file=sys.stderr)
        return exit_codes.USAGE
    except SystemExit as stopped:
        # argparse stops with 0 after --help or --version, with USAGE on a bad flag (_Parser).
        return exit_codes.OK if stopped.code is None else int(stopped.code)
    try:
        result: int = arguments.handler(arguments)
        return result
    except settings.UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return exit_codes.USAGE
    except (pipeline.InputError, models.InvalidSpecError, cluster.ClusterError) as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.ERROR
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED


class _Parser(argparse.ArgumentParser):
    """argparse with the usage exit code of sysexits.h instead of its own 2. The subcommands'
    parsers are of this class too: `add_subparsers` makes them of the parser's own class."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(exit_codes.USAGE, f"{self.prog}: error: {message}\n")


def _parser(prog: str = "sgmesh") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Keep the node groups (ASGs) of an EKS cluster able to reach each other.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {importlib.metadata.version('sgmesh')}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, help_text in (
        ("plan", "show what apply would change, and why; writes nothing"),
        ("apply", "converge AWS to the mesh"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "-f", "--filename", required=True, type=Path, help="NodeGroupMesh YAML ('-': stdin)"
        )
        settings.add_pipeline_settings(command)
        command.add_argument("-o", "--output", choices=("text", "json"), default="text")
        command.set_defaults(handler=_run_pipeline, write=name == "apply")

    doctor = commands.add_parser(
        "doctor",
        help="diagnose pod networking (DNS, pod traffic, CNI permissions) from the cluster and "
        "AWS as they are; read-only",
    )
    doctor.add_argument("--region", default=client.default_region(), help="default: AWS_REGION")
    doctor.add_argument("-o", "--output", choices=("text", "json"), default="text")
    doctor.add_argument(
        "--suggest", action="store_true", help="print a NodeGroupMesh that fixes what was found"
    )
    doctor.add_argument(
        "--rules-per-security-group",
        type=int,
        default=planning.DEFAULT_RULES_PER_SECURITY_GROUP,
        help="inbound rules quota per SG",
    )
    doctor.set_defaults(handler=_run_doctor)

    crd_command = commands.add_parser("crd", help="print the NodeGroupMesh CRD")
    crd_command.set_defaults(handler=_print_crd)

    policy_command = commands.add_parser(
        "iam-policy", help="print the operator's least-privilege IAM policy for a cluster (JSON)"
    )
    iam_policy.add_arguments(policy_command)
    policy_command.set_defaults(handler=iam_policy.run)

    run = commands.add_parser("run", help="run the operator (kopf) against the current cluster")
    settings.add_pipeline_settings(run)
    settings.add_operator_settings(run)
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.set_defaults(handler=_run_operator)
    return parser


def _run_pipeline(arguments: argparse.Namespace) -> int:
    # A bad setting is a usage error, found before the file is read; the cluster's VPC is
    # known before anything is planned.
    pipeline_settings = settings.settings_from(arguments)
    meshes = pipeline.load_meshes(arguments.filename)
    pipeline_settings, _ = cluster.bounded(arguments, pipeline_settings)
    return pipeline.run(
        meshes,
        pipeline_settings,
        default_region=arguments.region,
        write=arguments.write,
        output=arguments.output,
    )


def _print_crd(_: argparse.Namespace) -> int:
    sys.stdout.write(crd.render_crd())
    return exit_codes.OK


def _run_doctor(arguments: argparse.Namespace) -> int:
    from sgmesh.doctor import command as doctor  # noqa: PLC0415 - the Kubernetes client is loaded only for doctor

    if not arguments.region:
        print("error: no AWS region: pass --region or set AWS_REGION", file=sys.stderr)
        return doctor.EXIT_USAGE
    if not re.fullmatch(models.REGION, arguments.region):
        print(f"error: --region {arguments.region!r} is not an AWS region name", file=sys.stderr)
        return doctor.EXIT_USAGE
    if arguments.rules_per_security_group < 1:
        print(
            f"error: --rules-per-security-group must be at least 1, not "
            f"{arguments.rules_per_security_group}",
            file=sys.stderr,
        )
        return doctor.EXIT_USAGE
    options = doctor.Options(arguments.region, arguments.rules_per_security_group)
    return doctor.run(options, arguments.output, arguments.suggest)


def _run_operator(arguments: argparse.Namespace) -> int:
    from sgmesh.controller import lifecycle, shared  # noqa: PLC0415 - kopf is imported only when the operator runs

    # Without the cluster's VPC the operator refuses to start: it would have no boundary.
    pipeline_settings, found = cluster.bounded(arguments, settings.settings_from(arguments))
    print(f"sgmesh: {found.describe()}", file=sys.stderr)
    # What the operator keeps of IAM for its life, read again after the refresh.
    memory = roles.RoleMemory(refresh_seconds=arguments.iam_refresh_seconds)
    lifecycle.run(
        shared.OperatorSettings(
            pipeline=dataclasses.replace(pipeline_settings, role_memory=memory),
            region=arguments.region,
            metrics_port=arguments.metrics_port,
            default_resync_seconds=arguments.default_resync_seconds,
            log_format=arguments.log_format,
            peering=arguments.peering or None,
            verbose=arguments.verbose,
            timer_tick_seconds=arguments.timer_tick_seconds,
        )
    )
    return exit_codes.OK

"""The `sgmesh` command line: `plan`, `apply`, `doctor`, `crd` and `run` (the operator).

`plan` and `apply` run the same pipeline as the operator on a NodeGroupMesh YAML file, with
AWS reached through the standard environment. Exit codes: 0 converged / nothing to do,
2 changes pending (plan, or DryRun), 1 error (bad input, AWS failure, a member not found).
`doctor` has its own exit codes (see `sgmesh.doctor.command`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from sgmesh.api import crd, models
from sgmesh.aws import client, errors, reconcile
from sgmesh.controller import status
from sgmesh.engine import cluster_members, planning
from sgmesh.engine.cluster_members import ClusterMembers

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PENDING = 2
# What argparse exits with on a bad flag or setting.
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input: the message names the file, field and value."""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = _parser()
    except UsageError as error:
        # A setting read from the environment while the parser is built (the test suite's).
        print(f"sgmesh: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    arguments = parser.parse_args(argv)
    try:
        result: int = arguments.handler(arguments)
        return result
    except (UsageError, models.InvalidSpecError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgmesh",
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
        _add_settings(command)
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

    run = commands.add_parser("run", help="run the operator (kopf) against the current cluster")
    _add_settings(run)
    run.add_argument(
        "--metrics-port",
        type=_integer("SGMESH_METRICS_PORT", 0, 65535),
        default=os.environ.get("SGMESH_METRICS_PORT", "8080"),
        help="port of /metrics and /healthz (env SGMESH_METRICS_PORT; 0 disables)",
    )
    run.add_argument(
        "--default-resync-seconds",
        type=_integer(
            "SGMESH_DEFAULT_RESYNC_SECONDS", int(_test_setting(TEST_RESYNC_FLOOR, 10, whole=True))
        ),
        default=os.environ.get("SGMESH_DEFAULT_RESYNC_SECONDS", "60"),
        help="resync period of meshes that set no spec.resyncSeconds, at least 10 "
        "(env SGMESH_DEFAULT_RESYNC_SECONDS)",
    )
    run.add_argument(
        "--log-format",
        type=_one_of("SGMESH_LOG_FORMAT", ("plain", "full", "json")),
        default=os.environ.get("SGMESH_LOG_FORMAT", "plain"),
        help="log format: plain, full or json (env SGMESH_LOG_FORMAT)",
    )
    run.add_argument(
        "--peering",
        default=os.environ.get("SGMESH_PEERING", ""),
        help="kopf peering name to keep one active replica (env SGMESH_PEERING; empty: standalone)",
    )
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.set_defaults(handler=_run_operator, timer_tick_seconds=_test_setting(TEST_TIMER_TICK, 5.0))
    return parser


def _add_settings(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--cluster",
        default=os.environ.get("SGMESH_CLUSTER_NAME", "default"),
        help="cluster name, part of the ownership tag (env SGMESH_CLUSTER_NAME)",
    )
    command.add_argument(
        "--region",
        default=os.environ.get("SGMESH_REGION") or client.default_region(),
        help="default region when the spec names none (env SGMESH_REGION, AWS_REGION)",
    )
    command.add_argument(
        "--rules-per-security-group",
        type=_integer("SGMESH_RULES_PER_SECURITY_GROUP", 1),
        default=os.environ.get(
            "SGMESH_RULES_PER_SECURITY_GROUP", str(planning.DEFAULT_RULES_PER_SECURITY_GROUP)
        ),
        help="inbound rules quota per SG (env SGMESH_RULES_PER_SECURITY_GROUP)",
    )


# For the test suite only, not settings (undocumented): end-to-end tests that wait on a resync
# run the operator with a default period of seconds (they leave spec.resyncSeconds out: the CRD
# still refuses less than 10), checked every half second instead of every 5 s.
TEST_RESYNC_FLOOR = "SGMESH_TEST_RESYNC_FLOOR_SECONDS"  # lowest --default-resync-seconds (10)
TEST_TIMER_TICK = "SGMESH_TEST_TIMER_TICK_SECONDS"  # how often the resync timer looks (5 s)


def _test_setting(variable: str, default: float, *, whole: bool = False) -> float:
    """One of the test suite's settings from the environment; a bad value is a usage error
    naming it, like every other setting."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < math.inf:
        kind = "a whole number" if whole else "a number"
        raise UsageError(f"env {variable} must be {kind} above 0, not {text!r}")
    return value


# Settings come from flags or from the environment (a Deployment sets the environment). argparse
# parses a string default exactly as a flag's value, so both get the same check, and a bad
# value is a usage error naming the setting — never a traceback while the parser is built.


def _integer(variable: str, minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a whole number (flag or env {variable}), not {text!r}"
            ) from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"at least {minimum}" if maximum is None else f"{minimum}-{maximum}"
            raise argparse.ArgumentTypeError(
                f"must be {bounds} (flag or env {variable}), not {value}"
            )
        return value

    return parse


def _one_of(variable: str, choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(choices)} (flag or env {variable}), not {text!r}"
            )
        return text

    return parse


def settings_from(arguments: argparse.Namespace) -> reconcile.Settings:
    try:
        models.validate_cluster_name(arguments.cluster)
    except models.InvalidSpecError as error:
        raise UsageError(f"--cluster (env SGMESH_CLUSTER_NAME): {error}") from None
    return reconcile.Settings(
        cluster=arguments.cluster, rules_per_security_group=arguments.rules_per_security_group
    )


def _print_crd(_: argparse.Namespace) -> int:
    sys.stdout.write(crd.render_crd())
    return EXIT_OK


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
    from sgmesh.controller import handlers  # noqa: PLC0415 - kopf is imported only when the operator runs

    handlers.run(
        handlers.OperatorSettings(
            pipeline=settings_from(arguments),
            region=arguments.region,
            metrics_port=arguments.metrics_port,
            default_resync_seconds=arguments.default_resync_seconds,
            log_format=arguments.log_format,
            peering=arguments.peering or None,
            verbose=arguments.verbose,
            timer_tick_seconds=arguments.timer_tick_seconds,
        )
    )
    return EXIT_OK


def load_meshes(path: Path) -> list[models.NodeGroupMesh]:
    """Every NodeGroupMesh document in a YAML file, validated."""
    source = "standard input" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as error:
        raise UsageError(f"cannot read {source}: {error.strerror}") from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise UsageError(f"{source} is not valid YAML: {error}") from None
    if not documents:
        raise UsageError(f"{source} holds no NodeGroupMesh")
    meshes = []
    for index, document in enumerate(documents):
        where = source if len(documents) == 1 else f"{source} (document {index + 1})"
        if not isinstance(document, dict):
            raise UsageError(f"{where} is not a mapping but {type(document).__name__}")
        meshes.append(models.NodeGroupMesh.parse(document, where))
    names = [mesh.name for mesh in meshes]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise UsageError(f"{source} defines mesh {duplicated[0]!r} more than once")
    return meshes


def _run_pipeline(arguments: argparse.Namespace) -> int:
    meshes = load_meshes(arguments.filename)
    settings = settings_from(arguments)
    # Every mesh is checked before the first is applied: bad input never half-applies a file.
    regions = {mesh.name: mesh.spec.region or arguments.region for mesh in meshes}
    for name, region in regions.items():
        if not region:
            raise UsageError(f"mesh {name!r}: no region; set spec.region, --region or AWS_REGION")
    for mesh in meshes:
        if mesh.spec.extra_security_group_ids:
            print(
                f"warning: mesh {mesh.name!r}: spec.extraSecurityGroupIds is deprecated; "
                "list the same ids under spec.securityGroups.ids",
                file=sys.stderr,
            )
    clusters = _read_clusters(meshes)
    reports: list[dict[str, Any]] = []
    exit_code = EXIT_OK
    for mesh in meshes:
        region = regions[mesh.name]
        clients = client.make_clients(region)
        try:
            outcome = reconcile.converge(
                clients, mesh, settings, write=arguments.write, cluster=clusters[mesh.name]
            )
        except errors.ERRORS as error:
            failure = clients.classify(error)
            print(f"error: mesh {mesh.name!r}: {failure.describe()}", file=sys.stderr)
            exit_code = EXIT_ERROR
            continue
        report = outcome_report(outcome, mesh, region, clients)
        reports.append(report)
        if arguments.output == "text":
            _print_text(report, sys.stdout)
        exit_code = max(exit_code, _exit_code(outcome), key=_severity)
    if arguments.output == "json":
        json.dump(reports[0] if len(meshes) == 1 and reports else reports, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return exit_code


def _read_clusters(meshes: Sequence[models.NodeGroupMesh]) -> dict[str, ClusterMembers]:
    """The Kubernetes members of the meshes that have any (EC2NodeClasses, ENIConfigs), read
    from the current kubeconfig before anything is applied; the others need no cluster."""
    found = {mesh.name: ClusterMembers() for mesh in meshes}
    using = [mesh for mesh in meshes if mesh.spec.uses_cluster]
    if not using:
        return found
    from sgmesh.kube import sources  # noqa: PLC0415 - the Kubernetes client, only when needed

    api = None
    for mesh in using:
        try:
            api = api or sources.connect()
            objects = sources.read(mesh.spec, api)
        except sources.ClusterReadError as error:
            raise UsageError(
                f"mesh {mesh.name!r} reads members from the cluster (spec.karpenter, "
                f"spec.customNetworking), and the cluster cannot be read: {error}"
            ) from None
        found[mesh.name] = cluster_members.resolve(mesh.spec, objects)
    return found


def _severity(code: int) -> int:
    return {EXIT_OK: 0, EXIT_PENDING: 1, EXIT_ERROR: 2}[code]


def _exit_code(outcome: reconcile.Outcome) -> int:
    if outcome.failures or outcome.plan.problems:
        return EXIT_ERROR
    if outcome.pending or outcome.plan.held:
        return EXIT_PENDING
    return EXIT_OK


def action_report(action: planning.Action) -> dict[str, Any]:
    fields = {
        key: value.describe() if key == "permission" else value
        for key, value in vars(action).items()
        if key not in {"kind", "reason"}
    }
    return {"kind": action.kind, "summary": action.describe(), "reason": action.reason, **fields}


def outcome_report(
    outcome: reconcile.Outcome, mesh: models.NodeGroupMesh, region: str, clients: client.AwsClients
) -> dict[str, Any]:
    return {
        "mesh": mesh.name,
        "cluster": outcome.owner.cluster,
        "region": region,
        "mode": mesh.spec.mode.value,
        "members": [
            status.member_status(member).model_dump(mode="json", by_alias=True)
            for member in outcome.topology.members
        ],
        "rules": outcome.rules().model_dump(mode="json"),
        "notes": [note for note in [status.cni_policy_note(outcome)] if note],
        "actions": [action_report(action) for action in outcome.plan.actions],
        "held": [action_report(action) for action in outcome.plan.held],
        "problems": [
            {"reason": p.kind.value, "subject": p.subject, "message": p.message}
            for p in outcome.plan.problems
        ],
        "applied": None
        if outcome.applied is None
        else {
            "done": len(outcome.applied.done),
            "failures": [
                {
                    "reason": failure.failure.kind.value,
                    "code": failure.failure.code,
                    "message": failure.failure.describe(),
                    "actions": [action.describe() for action in failure.actions],
                }
                for failure in outcome.applied.failures
            ],
        },
        "awsCalls": dict(sorted(clients.calls.items())),
    }


_SIGNS = {
    "authorize": "+",
    "attach": "+",
    "tag-rule": "~",
    "tag-role": "~",
    "untag-rule": "~",
    "untag-role": "~",
    "revoke": "-",
    "detach": "-",
}


def _print_text(report: dict[str, Any], out: TextIO) -> None:
    for line in _text_lines(report):
        print(line, file=out)


def _text_lines(report: dict[str, Any]) -> Iterator[str]:
    yield (
        f"mesh {report['mesh']} (cluster {report['cluster']}, region {report['region']}, "
        f"{report['mode']}): {len(report['members'])} members"
    )
    for member in report["members"]:
        roles = ",".join(member["roleNames"]) or "-"
        groups = ",".join(member["securityGroupIds"]) or "-"
        yield (
            f"  {member['kind']} {member['name']}: SGs {groups}; roles {roles}; "
            f"{member['vpcId'] or '-'}"
        )
    rules = report["rules"]
    applied = report["applied"]
    if not report["actions"]:
        yield "no changes: AWS matches the mesh"
    else:
        verb = "applied" if applied is not None else "planned"
        yield f"{len(report['actions'])} actions {verb}:"
        for action in report["actions"]:
            yield f"  {_SIGNS[action['kind']]} {action['summary']}"
            yield f"      because {action['reason']}"
    for action in report["held"]:
        yield f"  held (member unresolved): {action['summary']}"
    if applied is not None:
        for failure in applied["failures"]:
            yield f"failed ({failure['reason']}): {failure['message']}"
            for summary in failure["actions"]:
                yield f"  not done: {summary}"
    for problem in report["problems"]:
        yield f"problem ({problem['reason']}): {problem['message']}"
    for note in report["notes"]:
        yield f"note: {note}"
    yield f"rules: {rules['desired']} desired, {rules['present']} present, {rules['owned']} owned"

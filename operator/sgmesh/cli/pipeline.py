"""`plan` and `apply`: the operator's pipeline run once over the meshes of a YAML file.

Meshes are read and checked, their cluster members read, then each is converged (or planned)
against AWS through the standard environment; the outcome of each is printed as it comes and
folded into one exit code. Every mesh is checked before the first is converged: this module
must never half-apply a file because a later mesh in it was bad.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from sgmesh.api import models
from sgmesh.aws import client, errors, reconcile
from sgmesh.cli import exit_codes, render
from sgmesh.engine import cluster_members

__all__ = ["InputError", "exit_code", "load_meshes", "read_clusters", "run"]


class InputError(Exception):
    """The meshes cannot be run: the file or a field is bad (the message names the file, field
    and value), or a mesh lacks what it needs (a region, a readable cluster). An error, not a
    usage error: the command was right, its input was not."""


def load_meshes(path: Path) -> list[models.NodeGroupMesh]:
    """Every NodeGroupMesh document in a YAML file (`-`: standard input), validated."""
    source = "standard input" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as error:
        raise InputError(f"cannot read {source}: {error.strerror}") from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise InputError(f"{source} is not valid YAML: {error}") from None
    if not documents:
        raise InputError(f"{source} holds no NodeGroupMesh")
    meshes = []
    for index, document in enumerate(documents):
        where = source if len(documents) == 1 else f"{source} (document {index + 1})"
        if not isinstance(document, dict):
            raise InputError(f"{where} is not a mapping but {type(document).__name__}")
        meshes.append(models.NodeGroupMesh.parse(document, where))
    names = [mesh.name for mesh in meshes]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise InputError(f"{source} defines mesh {duplicated[0]!r} more than once")
    return meshes


def run(
    meshes: Sequence[models.NodeGroupMesh],
    settings: reconcile.Settings,
    *,
    default_region: str | None,
    write: bool,
    output: str,
) -> int:
    """Plan (`write` false) or converge each mesh, print each outcome in `output` ("text" or
    "json"), and return the exit code of the worst outcome."""
    regions: dict[str, str] = {}
    for mesh in meshes:
        region = mesh.spec.region or default_region
        if not region:
            raise InputError(
                f"mesh {mesh.name!r}: no region; set spec.region, --region or AWS_REGION"
            )
        regions[mesh.name] = region
    for mesh in meshes:
        if mesh.spec.extra_security_group_ids:
            print(
                f"warning: mesh {mesh.name!r}: spec.extraSecurityGroupIds is deprecated; "
                "list the same ids under spec.securityGroups.ids",
                file=sys.stderr,
            )
    clusters = read_clusters(meshes)
    reports: list[dict[str, Any]] = []
    worst = exit_codes.OK
    for mesh in meshes:
        region = regions[mesh.name]
        clients = client.make_clients(region)
        try:
            outcome = reconcile.converge(
                clients, mesh, settings, write=write, cluster=clusters[mesh.name]
            )
        except errors.ERRORS as error:
            failure = clients.classify(error)
            print(f"error: mesh {mesh.name!r}: {failure.describe()}", file=sys.stderr)
            worst = exit_codes.ERROR
            continue
        report = render.outcome_report(outcome, mesh, region, clients)
        reports.append(report)
        if output == "text":
            for line in render.text_lines(report):
                print(line)
        worst = max(worst, exit_code(outcome), key=_severity)
    if output == "json":
        json.dump(reports[0] if len(meshes) == 1 and reports else reports, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return worst


def read_clusters(
    meshes: Sequence[models.NodeGroupMesh],
) -> dict[str, cluster_members.ClusterMembers]:
    """The Kubernetes members of the meshes that have any (EC2NodeClasses, ENIConfigs), read
    from the current kubeconfig before anything is applied; the others need no cluster."""
    found = {mesh.name: cluster_members.ClusterMembers() for mesh in meshes}
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
            raise InputError(
                f"mesh {mesh.name!r} reads members from the cluster (spec.karpenter, "
                f"spec.customNetworking), and the cluster cannot be read: {error}"
            ) from None
        found[mesh.name] = cluster_members.resolve(mesh.spec, objects)
    return found


def exit_code(outcome: reconcile.Outcome) -> int:
    """ERROR for a failure or a problem, PENDING for changes not made, else OK."""
    if outcome.failures or outcome.plan.problems:
        return exit_codes.ERROR
    if outcome.pending or outcome.plan.held:
        return exit_codes.PENDING
    return exit_codes.OK


def _severity(code: int) -> int:
    return {exit_codes.OK: 0, exit_codes.PENDING: 1, exit_codes.ERROR: 2}[code]

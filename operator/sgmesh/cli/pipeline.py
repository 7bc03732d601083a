"""`plan` and `apply`: the operator's pipeline run once over the meshes of a YAML file.

Meshes are read and checked, their cluster members read, then each is converged (or planned)
against AWS through the standard environment; the outcome of each is printed as it comes and
folded into one exit code. Every mesh is checked before the first is converged: this module
must never half-apply a file because a later mesh in it was bad.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from sgmesh.api import models
from sgmesh.aws import client, errors, pod_identity, reconcile
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
    attaching = [regions[mesh.name] for mesh in meshes if mesh.spec.cni_policy.attach]
    # EKS is asked in the cluster's region: the command's, else that of the first mesh that
    # attaches the CNI policy.
    clusters = read_clusters(
        meshes, settings.cluster, default_region or next(iter(attaching), None)
    )
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
    meshes: Sequence[models.NodeGroupMesh], cluster: str, region: str | None
) -> dict[str, cluster_members.ClusterMembers]:
    """What the cluster of the current kubeconfig says of each mesh, read before anything is
    applied: the members its Kubernetes sources name (EC2NodeClasses, ENIConfigs) and, when it
    attaches the CNI policy, whether aws-node has credentials of its own (IRSA, or EKS Pod
    Identity: EKS cluster `cluster` is asked in `region`).

    A mesh with Kubernetes sources cannot run without them: the cluster failing to answer is
    an error. For the others aws-node's credentials are read whenever a cluster answers, as the
    operator reads them; when none does, a note says so and they run as their spec says.
    """
    found = {mesh.name: cluster_members.NO_CLUSTER_MEMBERS for mesh in meshes}
    reading = [mesh for mesh in meshes if mesh.spec.uses_cluster or mesh.spec.cni_policy.attach]
    if not reading:
        return found
    from sgmesh.kube import sources  # noqa: PLC0415 - the Kubernetes client, only when needed

    association = (
        functools.partial(pod_identity.find_association, client.make_clients(region), cluster)
        if region
        else None
    )
    api = None

    @functools.cache
    def credentials_or_failure() -> cluster_members.AwsNodeCredentials | Exception | None:
        # Read once for the whole file, be it an answer or a failure.
        try:
            return sources.read_aws_node_credentials(api, association)
        except sources.ClusterReadError as error:
            return error
        except errors.ERRORS as error:
            return InputError(
                f"aws-node's credentials cannot be told: asking EKS in {region} for its Pod "
                f"Identity association failed: {errors.classify(error, 'eks').describe()}"
            )

    def aws_node_credentials() -> cluster_members.AwsNodeCredentials | None:
        answer = credentials_or_failure()
        if isinstance(answer, Exception):
            raise answer
        return answer

    noted = False
    for mesh in reading:
        try:
            api = api or sources.connect()
            objects = sources.read(mesh.spec, api, aws_node_credentials=aws_node_credentials)
        except sources.ClusterReadError as error:
            if mesh.spec.uses_cluster:
                raise InputError(
                    f"mesh {mesh.name!r} reads members from the cluster (spec.karpenter, "
                    "spec.customNetworking, spec.podSecurityGroups), and the cluster cannot be "
                    f"read: {error}"
                ) from None
            if not noted:
                print(
                    "note: no Kubernetes cluster reachable: aws-node's credentials not "
                    "checked; the CNI policy goes on node roles as cniPolicy.attach says "
                    f"({error})",
                    file=sys.stderr,
                )
                noted = True
            continue
        found[mesh.name] = cluster_members.resolve(mesh.spec, objects)
    own = next((f.aws_node_credentials for f in found.values() if f.aws_node_credentials), None)
    if own is not None:
        print(
            f"note: aws-node gets its credentials from {own.describe()}: the CNI policy goes "
            "on no node role, that role needs it",
            file=sys.stderr,
        )
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

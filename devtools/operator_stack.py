"""A whole local stack for the operator benches: a moto server (AWS's rule semantics), a real
control plane with the NodeGroupMesh CRD (and, when asked, Karpenter's and the VPC CNI's CRDs)
Established, and an `Operator` ready to start against both, quiet (no `--verbose`: debug
logging of every API request is a cost a bench must not add).

The process's AWS environment points at the moto server while the stack lives, so the world
the bench builds can never reach an account of the machine. Everything is stopped on exit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools import external_crds
from devtools.aws import moto_server
from devtools.k8s import build
from devtools.k8s.controlplane import ControlPlane
from devtools.operator_harness import CRD_FILE, CRD_NAME, Operator

__all__ = ["Stack", "operator_stack"]


@dataclass(frozen=True)
class Stack:
    server: moto_server.MotoServer
    plane: ControlPlane
    operator: Operator  # not started: `with stack.operator:`


@contextlib.contextmanager
def operator_stack(
    workdir: Path, *, cluster: str, region: str, with_external_crds: bool = False
) -> Iterator[Stack]:
    """The stack under `workdir` (logs: moto.log, operator.log, kube/)."""
    server = moto_server.start_moto_server(log_path=workdir / "moto.log")
    try:
        os.environ.update(server.aws_env())
        os.environ.pop("AWS_PROFILE", None)
        os.environ["AWS_CONFIG_FILE"] = os.devnull
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
        with ControlPlane(binaries=build.ensure_binaries(), workdir=workdir / "kube") as plane:
            plane.apply_established("-f", str(CRD_FILE), crds=[CRD_NAME])
            if with_external_crds:
                for crd in external_crds.EXTERNAL_CRDS:
                    external_crds.load(crd)  # fetched when not cached yet, and checked
                    plane.apply_established("-f", str(crd.cached_file), crds=[crd.name])
            operator = Operator(
                plane.kubeconfig,
                server.aws_env(),
                workdir / "operator.log",
                cluster=cluster,
                region=region,
                extra_args=("--log-format", "plain"),
            )
            operator.run_options.remove("--verbose")
            yield Stack(server, plane, operator)
    finally:
        server.stop()

"""The settings of `plan`, `apply` and `run`: each from its flag or from the environment (a
Deployment sets the environment), with the test suite's own settings beside them.

argparse parses a string default exactly as a flag's value, so a setting from either source gets
the same check, and a bad value is a usage error naming the setting and the value. This module
must never let a bad value through as a traceback, nor read anything but the environment: every
`SGMESH_` variable the command reads is read here.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Sequence

from sgmesh.api import models
from sgmesh.aws import client, reconcile, roles
from sgmesh.engine import planning

__all__ = [
    "TEST_RESYNC_FLOOR",
    "TEST_TIMER_TICK",
    "UsageError",
    "add_operator_settings",
    "add_pipeline_settings",
    "integer",
    "member_tag",
    "one_of",
    "setting_for_tests",
    "settings_from",
    "vpc_id",
]


class UsageError(Exception):
    """A bad flag or environment setting: the message names the setting and the value."""


# For the test suite only, not settings (undocumented): end-to-end tests that wait on a resync
# run the operator with a default period of seconds (they leave spec.resyncSeconds out: the CRD
# still refuses less than 10), checked every half second instead of every 5 s.
TEST_RESYNC_FLOOR = "SGMESH_TEST_RESYNC_FLOOR_SECONDS"  # lowest --default-resync-seconds (10)
TEST_TIMER_TICK = "SGMESH_TEST_TIMER_TICK_SECONDS"  # how often the resync timer looks (5 s)

# --iam-refresh-seconds: no shorter than the shortest resync (below it, every resync would read
# each role), no longer than a day.
IAM_REFRESH_FLOOR = 10
IAM_REFRESH_CEILING = 86400


def setting_for_tests(variable: str, default: float, *, whole: bool = False) -> float:
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


def integer(variable: str, minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse `type` for a whole-number setting in bounds, its errors naming `variable`."""

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


def one_of(variable: str, choices: Sequence[str]) -> Callable[[str], str]:
    """An argparse `type` for a setting with named values, its errors naming `variable`."""

    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(choices)} (flag or env {variable}), not {text!r}"
            )
        return text

    return parse


def add_pipeline_settings(command: argparse.ArgumentParser) -> None:
    """The settings of the pipeline, shared by `plan`, `apply` and `run`."""
    command.add_argument(
        "--cluster",
        default=os.environ.get("SGMESH_CLUSTER_NAME") or None,
        help="the cluster's name, the EKS cluster's where there is one; required: it is part "
        "of every ownership tag (env SGMESH_CLUSTER_NAME)",
    )
    command.add_argument(
        "--vpc-id",
        type=vpc_id,
        default=os.environ.get("SGMESH_VPC_ID") or None,
        help="the cluster's VPC, which bounds every mesh; needed where EKS does not know the "
        "cluster by --cluster (env SGMESH_VPC_ID)",
    )
    command.add_argument(
        "--member-tag",
        type=member_tag,
        default=os.environ.get("SGMESH_MEMBER_TAG") or None,
        metavar="KEY[=VALUE]",
        help="only SGs carrying this tag may be members, e.g. kubernetes.io/cluster/prod "
        "(env SGMESH_MEMBER_TAG)",
    )
    command.add_argument(
        "--region",
        default=os.environ.get("SGMESH_REGION") or client.default_region(),
        help="default region when the spec names none (env SGMESH_REGION, AWS_REGION)",
    )
    command.add_argument(
        "--rules-per-security-group",
        type=integer("SGMESH_RULES_PER_SECURITY_GROUP", 1),
        default=os.environ.get(
            "SGMESH_RULES_PER_SECURITY_GROUP", str(planning.DEFAULT_RULES_PER_SECURITY_GROUP)
        ),
        help="inbound rules quota per SG (env SGMESH_RULES_PER_SECURITY_GROUP)",
    )


def add_operator_settings(run: argparse.ArgumentParser) -> None:
    """The settings of the operator (`run`) beyond the pipeline's.

    Raises UsageError for a bad test-suite setting: those are read while the parser is built."""
    run.add_argument(
        "--metrics-port",
        type=integer("SGMESH_METRICS_PORT", 0, 65535),
        default=os.environ.get("SGMESH_METRICS_PORT", "8080"),
        help="port of /metrics and /healthz (env SGMESH_METRICS_PORT; 0 disables)",
    )
    run.add_argument(
        "--default-resync-seconds",
        type=integer(
            "SGMESH_DEFAULT_RESYNC_SECONDS",
            int(setting_for_tests(TEST_RESYNC_FLOOR, 10, whole=True)),
        ),
        default=os.environ.get("SGMESH_DEFAULT_RESYNC_SECONDS", "60"),
        help="resync period of meshes that set no spec.resyncSeconds, at least 10 "
        "(env SGMESH_DEFAULT_RESYNC_SECONDS)",
    )
    run.add_argument(
        "--iam-refresh-seconds",
        type=integer("SGMESH_IAM_REFRESH_SECONDS", IAM_REFRESH_FLOOR, IAM_REFRESH_CEILING),
        default=os.environ.get(
            "SGMESH_IAM_REFRESH_SECONDS", str(int(roles.DEFAULT_IAM_REFRESH_SECONDS))
        ),
        help="how long what IAM said of instance profiles and role tags is trusted before it "
        f"is read again, {IAM_REFRESH_FLOOR}-{IAM_REFRESH_CEILING}: a tag changed by hand is "
        "seen within it (env SGMESH_IAM_REFRESH_SECONDS)",
    )
    run.add_argument(
        "--log-format",
        type=one_of("SGMESH_LOG_FORMAT", ("plain", "full", "json")),
        default=os.environ.get("SGMESH_LOG_FORMAT", "plain"),
        help="log format: plain, full or json (env SGMESH_LOG_FORMAT)",
    )
    run.add_argument(
        "--peering",
        default=os.environ.get("SGMESH_PEERING", ""),
        help="kopf peering name to keep one active replica (env SGMESH_PEERING; empty: standalone)",
    )
    run.set_defaults(timer_tick_seconds=setting_for_tests(TEST_TIMER_TICK, 5.0))


_VPC_ID = re.compile(r"vpc-[0-9a-f]{8}([0-9a-f]{9})?")
_TAG_KEY_LIMIT = 128
_TAG_VALUE_LIMIT = 256


def vpc_id(text: str) -> str:
    """An argparse `type` for --vpc-id."""
    if not _VPC_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"must be a VPC id such as vpc-0123456789abcdef0 (flag or env SGMESH_VPC_ID), "
            f"not {text!r}"
        )
    return text


def member_tag(text: str) -> tuple[str, str | None]:
    """An argparse `type` for --member-tag: `KEY` (any value) or `KEY=VALUE`."""
    key, equals, value = text.partition("=")
    if not key or len(key) > _TAG_KEY_LIMIT or len(value) > _TAG_VALUE_LIMIT:
        raise argparse.ArgumentTypeError(
            f"must be KEY or KEY=VALUE, a tag key of 1-{_TAG_KEY_LIMIT} characters "
            f"(flag or env SGMESH_MEMBER_TAG), not {text!r}"
        )
    return key, value if equals else None


def settings_from(arguments: argparse.Namespace) -> reconcile.Settings:
    """The pipeline's settings from parsed arguments: a missing or bad cluster name is a usage
    error. The boundary (the cluster's VPC) is added once AWS has said where the cluster is
    (`sgmesh.cli.cluster`)."""
    if not arguments.cluster:
        raise UsageError(
            "the cluster's name is required: --cluster or env SGMESH_CLUSTER_NAME (use the "
            "EKS cluster's name). It is part of every ownership tag, so two clusters must "
            "never share one"
        )
    try:
        models.validate_cluster_name(arguments.cluster)
    except models.InvalidSpecError as error:
        raise UsageError(f"--cluster (env SGMESH_CLUSTER_NAME): {error}") from None
    return reconcile.Settings(
        cluster=arguments.cluster, rules_per_security_group=arguments.rules_per_security_group
    )

"""The bench's I/O: it builds each world on a moto server of its own, reads what AWS holds
before each apply (with the world's clients, not counted), converges the mesh through
`reconcile.converge` with clients that count every call, and prints the report. The package
docstring says what it measures and why; `python -m bench.call_budget` runs it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench import call_budget
from bench.call_budget import report
from bench.call_budget.minimum import FILTER_VALUES, PAGE_LIMITS, Facts, Measurement, minimum
from devtools.aws import moto_server
from devtools.aws.world import CNI_POLICY_ARN, World
from sgmesh.api import models
from sgmesh.aws import client, instances, reconcile, roles
from sgmesh.engine import chunking

DEFAULT_SIZES = (10, 50, 200)
SECURITY_GROUP_POOL = 50
SELECTOR_TAGS = {"bench": "yes"}
CLUSTER = "bench"
MESH_NAME = "bench"
TEMPLATE_VERSIONS = ("$Default", "$Latest", "1")

# The exit status (see the package docstring): like `sgmesh doctor`'s, 0 is all well, 1 is a
# finding, 2 a usage error, 3 a failure to measure.
EXIT_WITHIN = 0
EXIT_OVER = 1
EXIT_FAILED = 3


class BenchFailure(RuntimeError):
    """The bench could not measure what it claims to: an apply failed or did not settle."""


# ---- The world -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchWorld:
    asg_names: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    role_names: tuple[str, ...]
    templates: int
    build_seconds: float


def build_world(world: World, size: int, template_version: str) -> BenchWorld:
    started = time.perf_counter()
    group_count = min(size, SECURITY_GROUP_POOL)
    group_ids = [world.security_group(f"bench-nodes-{index:03d}") for index in range(group_count)]
    names, roles = [], []
    for index in range(size):
        name = f"bench-ng-{index:03d}"
        profile = world.role_with_profile(name)
        template = world.launch_template(
            name, security_group_ids=[group_ids[index % group_count]], profile_arn=profile.arn
        )
        version = None if template_version == "$Default" else template_version
        world.asg(name, launch_template=template, version=version, tags=SELECTOR_TAGS)
        names.append(name)
        roles.append(name)
    return BenchWorld(
        asg_names=tuple(names),
        security_group_ids=tuple(group_ids),
        role_names=tuple(roles),
        templates=size,
        build_seconds=time.perf_counter() - started,
    )


def mesh_document(name: str = MESH_NAME, attach: bool = True) -> models.NodeGroupMesh:
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": name},
            "spec": {
                "autoScalingGroups": {"selectors": [{"tags": SELECTOR_TAGS}]},
                "cniPolicy": {"attach": attach},
            },
        }
    )


# ---- What AWS holds ------------------------------------------------------------------------


def read_facts(
    world: World, bench: BenchWorld, owner_key: str, remembered: bool, attach: bool
) -> Facts:
    """What AWS holds before an apply, read with the world's clients so that none of these
    reads counts as the apply's."""
    ec2, iam = world.clients.ec2, world.clients.iam
    selected = world.clients.autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
        Filters=[{"Name": f"tag:{key}", "Values": [value]} for key, value in SELECTOR_TAGS.items()]
    )
    asgs = sum(len(page["AutoScalingGroups"]) for page in selected)
    rules_paginator = ec2.get_paginator("describe_security_group_rules")
    group_ids = sorted(bench.security_group_ids)
    rules_per_chunk: list[int] = []
    sources_by_group: dict[str, set[str]] = {group_id: set() for group_id in group_ids}
    ingress = 0
    for chunk in chunking.chunks(group_ids, FILTER_VALUES):
        in_chunk = 0
        for page in rules_paginator.paginate(Filters=[{"Name": "group-id", "Values": chunk}]):
            for rule in page["SecurityGroupRules"]:
                in_chunk += 1
                if rule.get("IsEgress"):
                    continue
                ingress += 1
                source = rule.get("ReferencedGroupInfo", {}).get("GroupId")
                if source and rule.get("IpProtocol") == "-1":
                    sources_by_group[rule["GroupId"]].add(source)
        rules_per_chunk.append(in_chunk)
    owned = sum(
        len(page["SecurityGroupRules"])
        for page in rules_paginator.paginate(
            Filters=[{"Name": f"tag:{owner_key}", "Values": ["owned"]}]
        )
    )
    members = set(group_ids)
    lacking_rules = sum(1 for sources in sources_by_group.values() if not members <= sources)

    attached = {
        name: {
            policy["PolicyArn"]
            for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=name)
            for policy in page["AttachedPolicies"]
        }
        for name in bench.role_names
    }
    with_policy = sum(1 for name in bench.role_names if CNI_POLICY_ARN in attached[name])
    reservations = [
        reservation
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": "tag-key", "Values": [instances.ASG_TAG]},
                {"Name": "instance-state-name", "Values": list(instances.LIVE_STATES)},
            ]
        )
        for reservation in page["Reservations"]
    ]
    return Facts(
        asgs=asgs,
        templates=bench.templates,
        security_groups=len(group_ids),
        rules_per_chunk=tuple(rules_per_chunk),
        ingress_rules=ingress,
        owned_rules=owned,
        roles=len(attached),
        roles_with_policy=with_policy,
        profiles=len(bench.role_names),  # one instance profile per role
        account_profiles=sum(
            len(page["InstanceProfiles"])
            for page in iam.get_paginator("list_instance_profiles").paginate()
        ),
        remembered=remembered,
        attach=attach,
        groups_lacking_rules=lacking_rules,
        roles_lacking_policy=len(bench.role_names) - with_policy,
        instances=sum(len(reservation["Instances"]) for reservation in reservations),
        instance_reservations=len(reservations),
    )


# ---- Measuring -----------------------------------------------------------------------------


def counted_clients() -> tuple[client.AwsClients, dict[str, list[int | None]]]:
    """Fresh clients, as a reconcile gets them, that also note the page size each read asks."""
    clients = client.make_clients()
    asked: dict[str, list[int | None]] = {}

    def note_page_size(params: Mapping[str, Any], model: Any, **_: Any) -> None:
        # A call for named versions of one template holds at most a few: only listings page.
        one_template = "LaunchTemplateId" in params or "LaunchTemplateName" in params
        if model.name in PAGE_LIMITS and not one_template:
            parameter = PAGE_LIMITS[model.name][0]
            asked.setdefault(model.name, []).append(params.get(parameter))

    for service in (clients.ec2, clients.autoscaling, clients.iam, clients.servicequotas):
        service.meta.events.register("provide-client-params.*.*", note_page_size)
    return clients, asked


def measure(
    world: World,
    bench: BenchWorld,
    mesh: models.NodeGroupMesh,
    phase: str,
    settings: reconcile.Settings,
    *,
    profiles_unknown: int = 0,
    roles_unknown: int = 0,
) -> tuple[Measurement, reconcile.Outcome]:
    """One apply with `settings`, which the operator keeps for its lifetime: what they
    remember of IAM from earlier applies spares a resync the reads of each role.
    `profiles_unknown`, `roles_unknown`: the member instance profiles and roles the process
    holds no answer for, as its history says (see `run_size`)."""
    owner = reconcile.owner_of(mesh, settings)
    remembered = settings.role_memory.recall(owner) is not None
    facts = read_facts(world, bench, owner.tag_key, remembered, mesh.spec.cni_policy.attach)
    facts = dataclasses.replace(
        facts, profiles_unknown=profiles_unknown, roles_unknown=roles_unknown
    )
    clients, page_sizes = counted_clients()
    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = reconcile.converge(clients, mesh, settings)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    return (
        Measurement(
            asgs=len(bench.asg_names),
            security_groups=len(bench.security_group_ids),
            phase=phase,
            calls=dict(clients.calls),
            mutating=clients.mutating_calls,
            seconds=seconds,
            cpu_seconds=cpu_seconds,
            minimum=minimum(facts),
            facts=facts,
            page_sizes=page_sizes,
        ),
        outcome,
    )


def check_settled(outcome: reconcile.Outcome, size: int, phase: str) -> None:
    where = f"N={size} {phase} apply"
    if outcome.failures:
        failed = "; ".join(failure.failure.describe() for failure in outcome.failures)
        raise BenchFailure(f"{where}: {len(outcome.failures)} write(s) failed: {failed}")
    if outcome.plan.problems:
        found = "; ".join(problem.message for problem in outcome.plan.problems)
        raise BenchFailure(f"{where}: discovery or planning reported problems: {found}")
    if not outcome.converged:
        raise BenchFailure(f"{where}: did not converge ({len(outcome.pending)} actions pending)")
    if len(outcome.topology.members) != size:
        raise BenchFailure(f"{where}: {len(outcome.topology.members)} members, expected {size}")


class BenchClock:
    """The time of the operator process the bench plays: it moves only when the bench says."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def check_steady(measurement: Measurement, outcome: reconcile.Outcome, size: int) -> None:
    check_settled(outcome, size, measurement.phase)
    if not outcome.plan.empty or measurement.mutating:
        actions = "; ".join(action.describe() for action in outcome.plan.actions[:5])
        raise BenchFailure(
            f"N={size} {measurement.phase} apply is not empty ({len(outcome.plan.actions)} "
            f"actions, {measurement.mutating} mutating calls), a bug: {actions}"
        )


def run_size(server: moto_server.MotoServer, size: int, template_version: str) -> list[Measurement]:
    server.reset()
    world = World(client.make_clients())
    bench = build_world(world, size, template_version)
    _progress(f"N={size}: world built in {bench.build_seconds:.1f}s")
    mesh = mesh_document()
    # One operator process for every apply, with what it keeps of IAM on a clock of its own.
    clock = BenchClock()
    settings = reconcile.Settings(cluster=CLUSTER, role_memory=roles.RoleMemory(clock=clock))

    # A process that just started holds no answer; every ASG has a profile and role of its own.
    everything = {"profiles_unknown": size, "roles_unknown": size}
    cold, outcome = measure(world, bench, mesh, "cold", settings, **everything)
    check_settled(outcome, size, "cold")
    if cold.mutating == 0:
        raise BenchFailure(f"N={size} cold apply wrote nothing: the world was not cold")
    _progress(f"N={size}: cold apply {cold.total} calls in {cold.seconds:.1f}s")

    # The first resync after the writes: the process forgot the roles it wrote to.
    written = cold.facts.roles_lacking_policy
    after_writes, outcome = measure(
        world, bench, mesh, "after writes", settings, roles_unknown=written
    )
    check_steady(after_writes, outcome, size)
    if after_writes.facts.groups_lacking_rules or after_writes.facts.roles_lacking_policy:
        raise BenchFailure(
            f"N={size}: after the cold apply {after_writes.facts.groups_lacking_rules} SGs lack "
            f"rules and {after_writes.facts.roles_lacking_policy} roles lack the CNI policy"
        )

    # A resync as the operator makes them all day long: nothing changed, everything known.
    steady, outcome = measure(world, bench, mesh, "steady", settings)
    check_steady(steady, outcome, size)
    _progress(f"N={size}: steady apply {steady.total} calls in {steady.seconds:.1f}s")

    # Once per IAM refresh every answer has aged out: each profile and role is read again.
    clock.now += settings.role_memory.refresh_seconds
    refresh, outcome = measure(world, bench, mesh, "IAM refresh", settings, **everything)
    check_steady(refresh, outcome, size)

    # A second mesh over the same ASGs with `cniPolicy.attach: false` (aws-node on IRSA or Pod
    # Identity): it co-owns the rules in its cold apply; its steady apply must not touch IAM.
    unattached = mesh_document(f"{MESH_NAME}-no-cni", attach=False)
    converged = reconcile.converge(client.make_clients(), unattached, settings)
    check_settled(converged, size, "attach: false cold")
    no_cni, outcome = measure(world, bench, unattached, "steady, attach: false", settings)
    check_steady(no_cni, outcome, size)
    if no_cni.iam_calls:
        raise BenchFailure(f"N={size}: attach: false made {no_cni.iam_calls} IAM calls")
    return [cold, after_writes, steady, refresh, no_cni]


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- Entry point ---------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.call_budget",
        description=(call_budget.__doc__ or "").split("\n", 1)[0],
        epilog="exit status: 0 within the target, 1 OVER it, 2 usage, 3 could not measure",
    )
    parser.add_argument(
        "--sizes",
        default=",".join(str(size) for size in DEFAULT_SIZES),
        help="comma-separated numbers of ASGs (default: %(default)s)",
    )
    parser.add_argument(
        "--template-version",
        choices=TEMPLATE_VERSIONS,
        default=TEMPLATE_VERSIONS[0],
        help="the launch template version every ASG asks for (default: %(default)s, "
        "by naming none)",
    )
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    arguments = parser.parse_args(argv)
    try:
        arguments.sizes = [int(size) for size in arguments.sizes.split(",") if size.strip()]
    except ValueError:
        parser.error(f"--sizes takes whole numbers separated by commas, not {arguments.sizes!r}")
    if not arguments.sizes or any(size < 1 for size in arguments.sizes):
        parser.error("--sizes needs at least one size, each at least 1")
    return arguments


def point_at(server: moto_server.MotoServer) -> None:
    """Every client this process makes talks to `server`, never to an account of the machine."""
    os.environ.update(server.aws_env())
    os.environ.pop("AWS_PROFILE", None)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull


def exit_status(verdict: report.Verdict | None) -> int:
    """EXIT_OVER when a steady apply the verdict judges is over the target, else
    EXIT_WITHIN: a call budget that only prints "OVER" is one nobody notices breaking."""
    return EXIT_OVER if verdict is not None and verdict.over else EXIT_WITHIN


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    started = time.perf_counter()
    server = moto_server.start_moto_server()
    measurements: list[Measurement] = []
    try:
        point_at(server)
        for size in arguments.sizes:
            measurements.extend(run_size(server, size, arguments.template_version))
    except BenchFailure as failure:
        print(f"\nBENCH FAILED: {failure}\n", file=sys.stderr)
        return EXIT_FAILED
    finally:
        server.stop()
    total_seconds = time.perf_counter() - started
    if arguments.json:
        print(
            json.dumps(
                {
                    "templateVersion": arguments.template_version,
                    "measurements": [m.as_json() for m in measurements],
                    "seconds": round(total_seconds, 3),
                },
                indent=2,
            )
        )
    else:
        print(report.report(measurements, total_seconds, arguments.template_version))
    verdict = report.verdict(measurements)
    if verdict is not None and verdict.over:
        print(f"\nBENCH OVER BUDGET: {verdict.describe()}\n", file=sys.stderr)
    return exit_status(verdict)

"""The operator at scale: memory, CPU, AWS calls per resync window and the resync period kept.

For each number of meshes (default 1, 20 and 50) the bench starts a fresh local control plane
(`devtools.k8s.controlplane`, the real kube-apiserver and etcd) and a fresh moto server
(`devtools.aws.moto_server`), builds one world, starts `sgmesh run` as a separate process
(`devtools.operator_harness`), creates the meshes with `resyncSeconds: 10`, waits until every one is
Ready, and then measures the operator over a fixed window (default 60 s):

- RSS: sampled from `/proc/<pid>/status` every second; "peak" is the highest sample in the
  window (`VmHWM` would include start-up), "end" the last;
- CPU: user + system seconds from `/proc/<pid>/stat` over the window, per 10 s;
- AWS calls per resync window (10 s), by operation: the growth of the operator's own
  `sgmesh_aws_calls_total` over the window, divided by the number of 10 s windows in it;
- the memory the operator's AWS clients take for each region after the first (the clients
  alone, in a fresh interpreter);
- the resync period each mesh kept: the mean gap between the moments its
  `sgmesh_reconciles_total` was seen to grow, sampled every second (a mesh not reconciled at
  all in the window shows "never"); the table gives the median over the meshes and the worst.

The world
---------
10 ASGs in 2 VPCs of 5 ("VPC-sized groups": rules join SGs of one VPC only). Each ASG has an
SG, a launch template and a node role with an instance profile of its own. Mesh i takes 3
consecutive ASGs (by name, wrapping) of VPC i mod 2, so meshes overlap: with 50 meshes each of
the 10 distinct member sets is shared by 5 meshes, and each SG and role is a member of 15.

The goals (`--check` exits 1 when one is missed, naming it)
------------------------------------------------------------
- RSS: the peak stays within 120 MiB;
- resync: every mesh's period is at most 1.5 x its resyncSeconds (the timer ticks every 5 s);
- AWS calls per resync window grow with the distinct AWS objects, not with the meshes: at most
  twice `call_budget`, the reads of a window that reads every distinct object once (plus the
  one query per mesh that names the mesh: the rules it owns anywhere). Without shared reads
  every mesh reads its members itself: about 14 calls per mesh and window here.

The fleet (`--fleet`, default 100; 0 leaves it out)
--------------------------------------------------
`--fleet` meshes of 3 ASGs each, nothing shared between them (each ASG with an SG, a launch
template, a node role and an instance profile of its own; every role gets the CNI policy), at
`resyncSeconds: 60` (`--fleet-resync`), in a stack of their own:

- created at once: the seconds until every mesh is Ready, and the operator's AWS calls second
  by second (sampled from `sgmesh_aws_service_calls_total` every second);
- steady (`--fleet-window`, default 180 s, from one resync period after all were Ready: the
  first resync after the writes reads back the roles written to): RSS, the resync period each
  mesh kept, the AWS calls per minute by service and by operation, and the calls of one steady
  reconcile;
- a restart (SIGTERM, a new process; nothing to change in AWS): the seconds until every mesh is
  reconciled (converged) by the new process and Ready, and its AWS calls second by second.

Goals: every mesh resynced within 2 x its period; RSS peak within 150 MiB; after creation and
after the restart, all Ready within 60 s, with no second whose calls of a service a token
bucket of 100 refilled at 20 a second (EC2's for an account's non-mutating calls) would refuse;
the restart costs no more than one steady reconcile per mesh plus what a process that just
started must read of IAM afresh (each member role's tags, one listing of the account's instance
profiles, one of the CNI policy's roles).

It never reaches a real AWS account: the operator and the world point at the moto server the
bench started, and everything it starts is stopped when it ends.

Run from the repository root:
`python bench/operator_scale.py [--meshes 1,20,50] [--window 60] [--fleet 100]
[--fleet-resync 60] [--fleet-window 180] [--check] [--json]`
(`make bench-operator`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

# Run as a script, Python puts bench/ on the path; devtools/ lives at the root.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import prometheus_client.parser  # noqa: E402

from devtools.aws.world import World  # noqa: E402
from devtools.k8s.controlplane import ControlPlane, ControlPlaneError  # noqa: E402
from devtools.operator_harness import Meshes, Operator  # noqa: E402
from devtools.operator_stack import operator_stack  # noqa: E402
from sgmesh.aws import client  # noqa: E402
from sgmesh.controller import schedule  # noqa: E402

DEFAULT_MESHES = (1, 20, 50)
DEFAULT_WINDOW_SECONDS = 60.0
RESYNC_SECONDS = 10
VPCS = 2
ASGS_PER_VPC = 5
ASGS_PER_MESH = 3
CLUSTER = "bench"
REGION = "us-east-1"

RSS_GOAL_MIB = 120.0
RESYNC_SLACK = 1.5
CALLS_SLACK = 2.0
SAMPLE_SECONDS = 1.0

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchFailure(RuntimeError):
    """The bench could not measure what it claims to: a mesh never got Ready, the operator died."""


# ---- The world -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchWorld:
    asg_names_by_vpc: tuple[tuple[str, ...], ...]
    role_names: tuple[str, ...]


def build_world(world: World) -> BenchWorld:
    by_vpc: list[tuple[str, ...]] = []
    roles: list[str] = []
    for vpc_index in range(VPCS):
        vpc = world.vpc()
        names: list[str] = []
        for index in range(ASGS_PER_VPC):
            name = f"scale-{vpc_index}-{index}"
            group_id = world.security_group(f"{name}-nodes", vpc=vpc)
            profile = world.role_with_profile(name)
            template = world.launch_template(
                name, security_group_ids=[group_id], profile_arn=profile.arn
            )
            world.asg(name, launch_template=template, vpc=vpc)
            names.append(name)
            roles.append(name)
        by_vpc.append(tuple(names))
    return BenchWorld(tuple(by_vpc), tuple(roles))


def call_budget(bench: BenchWorld, meshes: int) -> int:
    """The reads of one resync window when every distinct AWS object is read once (the call
    budget in README): per VPC-sized group one DescribeAutoScalingGroups,
    DescribeLaunchTemplateVersions, DescribeSecurityGroups and DescribeSecurityGroupRules (the
    member SGs' rules); per role GetInstanceProfile, ListRoleTags and ListAttachedRolePolicies
    (a process reading every role by name);
    and per mesh the one read that names it: DescribeSecurityGroupRules for the rules it owns
    anywhere."""
    return len(bench.asg_names_by_vpc) * 4 + 3 * len(bench.role_names) + meshes


def mesh_spec(bench: BenchWorld, index: int) -> dict[str, Any]:
    names = bench.asg_names_by_vpc[index % len(bench.asg_names_by_vpc)]
    start = index // len(bench.asg_names_by_vpc)
    members = [names[(start + offset) % len(names)] for offset in range(ASGS_PER_MESH)]
    return {"autoScalingGroups": {"names": members}, "resyncSeconds": RESYNC_SECONDS}


# ---- The operator, seen from outside -------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchFailure(f"/proc/{pid}/status has no VmRSS")


def worst_period(periods: dict[str, float | None]) -> float | None:
    """The longest period a mesh kept; None when some mesh was never resynced twice."""
    kept = list(periods.values())
    return None if None in kept else max(p for p in kept if p is not None)


def median_period(periods: dict[str, float | None]) -> float | None:
    kept = [p for p in periods.values() if p is not None]
    return statistics.median(kept) if kept else None


def cpu_seconds(pid: int) -> float:
    # Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def scrape(operator: Operator) -> dict[str, dict[str, float]]:
    """The counters the bench reads: AWS calls by operation, reconciles by mesh."""
    counters: dict[str, dict[str, float]] = {
        "calls": {},
        "services": {},
        "reconciles": {},
        "converged": {},
    }
    for family in prometheus_client.parser.text_string_to_metric_families(operator.metrics()):
        for sample in family.samples:
            if sample.name == "sgmesh_aws_calls_total":
                operation = sample.labels["operation"]
                counters["calls"][operation] = counters["calls"].get(operation, 0) + sample.value
            elif sample.name == "sgmesh_aws_service_calls_total":
                service = sample.labels["service"]
                counters["services"][service] = sample.value
            elif sample.name == "sgmesh_reconciles_total":
                mesh = sample.labels["mesh"]
                counters["reconciles"][mesh] = counters["reconciles"].get(mesh, 0) + sample.value
                if sample.labels["result"] == "converged":
                    counters["converged"][mesh] = sample.value
    return counters


# ---- One size ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    meshes: int
    window_seconds: float
    ready_seconds: float  # from the first mesh created until every mesh is Ready
    rss_start_mib: float
    rss_peak_mib: float
    rss_end_mib: float
    cpu_per_10s: float
    calls_per_window: dict[str, float]  # by operation, per resync window
    periods: dict[str, float | None]  # by mesh: seconds between reconciles, None if none
    calls_budget: int

    @property
    def total_calls_per_window(self) -> float:
        return sum(self.calls_per_window.values())

    @property
    def worst_period(self) -> float | None:
        return worst_period(self.periods)

    @property
    def median_period(self) -> float | None:
        return median_period(self.periods)

    def missed_goals(self) -> list[str]:
        missed = []
        if self.rss_peak_mib > RSS_GOAL_MIB:
            missed.append(
                f"{self.meshes} meshes: RSS peak {self.rss_peak_mib:.0f} MiB > {RSS_GOAL_MIB:.0f}"
            )
        worst = self.worst_period
        if worst is None or worst > RESYNC_SLACK * RESYNC_SECONDS:
            shown = "never" if worst is None else f"{worst:.1f} s"
            missed.append(
                f"{self.meshes} meshes: worst resync period {shown} > "
                f"{RESYNC_SLACK * RESYNC_SECONDS:.0f} s"
            )
        if self.total_calls_per_window > CALLS_SLACK * self.calls_budget:
            missed.append(
                f"{self.meshes} meshes: {self.total_calls_per_window:.0f} AWS calls per "
                f"{RESYNC_SECONDS} s > {CALLS_SLACK:.0f} x {self.calls_budget} (every "
                "distinct object read once)"
            )
        return missed

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "totalCallsPerWindow": self.total_calls_per_window,
            "worstPeriod": self.worst_period,
            "medianPeriod": self.median_period,
            "missedGoals": self.missed_goals(),
        }


def measure(count: int, window: float, workdir: Path) -> Measurement:
    _progress(f"{count} meshes: starting the control plane and a moto server")
    try:
        with operator_stack(workdir, cluster=CLUSTER, region=REGION) as stack:
            world = World(client.make_clients(REGION))
            bench = build_world(world)
            world.eks_cluster(CLUSTER)  # the cluster's VPC, which bounds every mesh
            with stack.operator:
                return _measure_running(count, window, bench, stack.operator, stack.plane)
    except ControlPlaneError as error:
        raise BenchFailure(str(error)) from error


def _measure_running(
    count: int, window: float, bench: BenchWorld, operator: Operator, plane: ControlPlane
) -> Measurement:
    pid = operator.pid
    assert pid is not None
    meshes = Meshes(plane.kubeconfig)
    names = [f"scale-{index:03d}" for index in range(count)]
    rss_start = rss_mib(pid)
    created = time.monotonic()
    for index, name in enumerate(names):
        meshes.create(name, mesh_spec(bench, index))
    for name in names:
        remaining = max(30.0, 60.0 + 3 * count - (time.monotonic() - created))
        try:
            meshes.wait_ready(name, deadline=remaining, context=operator.log_tail)
        except AssertionError as error:
            raise BenchFailure(str(error)) from error
    ready_seconds = time.monotonic() - created
    _progress(f"{count} meshes: all Ready in {ready_seconds:.1f} s; measuring {window:.0f} s")

    before, cpu_before = scrape(operator), cpu_seconds(pid)
    started = time.monotonic()
    peak = rss_mib(pid)
    # When each mesh's reconcile counter was seen to grow (sampled every second).
    seen = dict(before["reconciles"])
    reconciled_at: dict[str, list[float]] = {name: [] for name in names}
    end = started + window
    while (now := time.monotonic()) < end:
        operator.healthy()  # raises if the operator died
        peak = max(peak, rss_mib(pid))
        time.sleep(min(SAMPLE_SECONDS, end - now))
        sampled_at = time.monotonic()
        for mesh, total in scrape(operator)["reconciles"].items():
            if mesh in reconciled_at and total > seen.get(mesh, 0):
                reconciled_at[mesh].append(sampled_at)
            seen[mesh] = total
    after, cpu_after = scrape(operator), cpu_seconds(pid)
    rss_end = rss_mib(pid)
    elapsed = time.monotonic() - started
    peak = max(peak, rss_end)
    windows = elapsed / RESYNC_SECONDS

    calls = {
        operation: (total - before["calls"].get(operation, 0)) / windows
        for operation, total in after["calls"].items()
        if total > before["calls"].get(operation, 0)
    }
    periods: dict[str, float | None] = {}
    for name, times in reconciled_at.items():
        # The mean gap between reconciles seen; one reconcile in the window says only that
        # the period was not kept within half the window, so it counts as the whole window.
        if len(times) >= 2:
            periods[name] = (times[-1] - times[0]) / (len(times) - 1)
        else:
            periods[name] = elapsed if times else None
    return Measurement(
        meshes=count,
        window_seconds=round(elapsed, 1),
        ready_seconds=round(ready_seconds, 1),
        rss_start_mib=round(rss_start, 1),
        rss_peak_mib=round(peak, 1),
        rss_end_mib=round(rss_end, 1),
        cpu_per_10s=round((cpu_after - cpu_before) / windows, 3),
        calls_per_window={op: round(n, 1) for op, n in sorted(calls.items())},
        periods=periods,
        calls_budget=call_budget(bench, count),
    )


# ---- A fleet: meshes of distinct ASGs, created at once, then a restart -------------------------

FLEET_MESHES = 100
FLEET_RESYNC_SECONDS = 60
FLEET_WINDOW_SECONDS = 180.0
FLEET_RSS_GOAL_MIB = 150.0
FLEET_READY_GOAL_SECONDS = 60.0
FLEET_RESYNC_SLACK = 2.0
# What AWS lets through before it throttles: EC2's documented token bucket for the
# non-mutating actions of an account and region (100 requests at once, refilled at 20 a
# second). The other services publish no bucket; each is held to the same one.
THROTTLE_BUCKET = 100.0
THROTTLE_REFILL_PER_SECOND = 20.0
# glibc's malloc arenas: deploy/ runs the operator with two (the default, 8 per CPU for a
# process of many threads, holds memory the operator's worker threads freed).
MALLOC_ARENA_MAX = "2"


def build_fleet(world: World, meshes: int) -> list[tuple[str, ...]]:
    """`meshes` sets of ASGS_PER_MESH ASGs in the main VPC, each ASG with an SG, a launch
    template, and a node role with an instance profile of its own: nothing is shared."""
    members: list[tuple[str, ...]] = []
    for mesh in range(meshes):
        names = []
        for index in range(ASGS_PER_MESH):
            name = f"fleet-{mesh:03d}-{index}"
            group_id = world.security_group(f"{name}-nodes")
            profile = world.role_with_profile(name)
            template = world.launch_template(
                name, security_group_ids=[group_id], profile_arn=profile.arn
            )
            world.asg(name, launch_template=template)
            names.append(name)
        members.append(tuple(names))
    return members


@dataclass(frozen=True)
class Burst:
    """AWS calls second by second while the operator works through a phase."""

    seconds: float  # until every mesh was Ready (created) or reconciled (restart)
    calls: float
    per_second: list[float]  # every call, per second, in each sample of the phase (~1 s)
    # The calls a bucket of THROTTLE_BUCKET refilled at THROTTLE_REFILL_PER_SECOND would have
    # refused, per service (an empty dict: none).
    throttled: dict[str, int]

    @property
    def peak_per_second(self) -> float:
        return max(self.per_second, default=0.0)


def throttled_calls(intervals: Sequence[tuple[float, float]]) -> float:
    """How many of the calls a token bucket refuses, given (seconds, calls) of each sample.
    Within a sample the bucket lets through what it held at its start (at most its size) and
    what it refilled meanwhile, as AWS's continuous bucket does."""
    tokens, refused = THROTTLE_BUCKET, 0.0
    for seconds, calls in intervals:
        allowed = min(THROTTLE_BUCKET, tokens) + seconds * THROTTLE_REFILL_PER_SECOND
        refused += max(0.0, calls - allowed)
        tokens = max(0.0, allowed - calls)
    return refused


@dataclass(frozen=True)
class FleetMeasurement:
    meshes: int
    resync_seconds: int
    window_seconds: float
    created: Burst
    restart: Burst
    restart_reconciles: float  # reconciles the restart took until every mesh was reconciled
    restart_writes: float  # calls of the restart that change AWS (nothing was to change)
    created_operations: dict[str, float]  # the creation's calls by operation
    restart_operations: dict[str, float]  # the restart's calls by operation
    rss_peak_mib: float
    rss_end_mib: float
    calls_per_minute: dict[str, float]  # by service, once steady
    operations_per_minute: dict[str, float]  # by operation, once steady
    steady_calls_per_reconcile: float
    periods: dict[str, float | None]

    @property
    def worst_period(self) -> float | None:
        return worst_period(self.periods)

    @property
    def median_period(self) -> float | None:
        return median_period(self.periods)

    @property
    def roles(self) -> int:
        return self.meshes * ASGS_PER_MESH

    @property
    def cold_iam_reads(self) -> int:
        """What a process that just started must read of IAM afresh (it remembers nothing):
        each member role's tags (ListRoleTags: IAM has no batch read of tags), one listing of
        the account's instance profiles and one of the CNI policy's roles (a page each)."""
        return self.roles + 2

    @property
    def restart_budget(self) -> float:
        """One steady reconcile per mesh, and the IAM reads of a process that just started."""
        return self.meshes * self.steady_calls_per_reconcile + self.cold_iam_reads

    def missed_goals(self) -> list[str]:
        name = f"fleet of {self.meshes}"
        missed = []
        if self.rss_peak_mib > FLEET_RSS_GOAL_MIB:
            missed.append(
                f"{name}: RSS peak {self.rss_peak_mib:.0f} MiB > {FLEET_RSS_GOAL_MIB:.0f}"
            )
        worst = self.worst_period
        if worst is None or worst > FLEET_RESYNC_SLACK * self.resync_seconds:
            shown = "never" if worst is None else f"{worst:.1f} s"
            missed.append(
                f"{name}: worst resync period {shown} > "
                f"{FLEET_RESYNC_SLACK * self.resync_seconds:.0f} s"
            )
        for phase, burst in (("created at once", self.created), ("restart", self.restart)):
            if burst.seconds > FLEET_READY_GOAL_SECONDS:
                missed.append(
                    f"{name}, {phase}: all Ready after {burst.seconds:.0f} s > "
                    f"{FLEET_READY_GOAL_SECONDS:.0f} s"
                )
            if burst.throttled:
                missed.append(
                    f"{name}, {phase}: a burst AWS would throttle ({burst.throttled} calls "
                    f"refused by a bucket of {THROTTLE_BUCKET:.0f} refilled at "
                    f"{THROTTLE_REFILL_PER_SECOND:.0f}/s)"
                )
        if self.restart_writes:
            missed.append(f"{name}, restart: {self.restart_writes:.0f} writes, nothing to change")
        if self.restart.calls > self.restart_budget:
            missed.append(
                f"{name}, restart: {self.restart.calls:.0f} AWS calls > one steady reconcile "
                f"per mesh ({self.meshes} x {self.steady_calls_per_reconcile:.1f}) and the "
                f"fresh IAM reads of {self.roles} roles ({self.cold_iam_reads})"
            )
        return missed

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "worstPeriod": self.worst_period,
            "medianPeriod": self.median_period,
            "restartBudget": self.restart_budget,
            "missedGoals": self.missed_goals(),
        }


def measure_fleet(count: int, resync: int, window: float, workdir: Path) -> FleetMeasurement:
    _progress(f"fleet of {count}: starting the control plane and a moto server")
    try:
        with operator_stack(workdir, cluster=CLUSTER, region=REGION) as stack:
            world = World(client.make_clients(REGION))
            started = time.monotonic()
            members = build_fleet(world, count)
            world.eks_cluster(CLUSTER)
            _progress(
                f"fleet of {count}: {count * ASGS_PER_MESH} ASGs built in "
                f"{time.monotonic() - started:.0f} s"
            )
            # As deploy/ runs it (see deploy/manager/deployment.yaml).
            stack.operator.environment["MALLOC_ARENA_MAX"] = MALLOC_ARENA_MAX
            return _measure_fleet(members, resync, window, stack.operator, stack.plane)
    except ControlPlaneError as error:
        raise BenchFailure(str(error)) from error


def _services(operator: Operator) -> dict[str, float]:
    return scrape(operator)["services"]


Sample = tuple[float, dict[str, float]]  # when (monotonic), calls so far by service


def _watch_burst(
    operator: Operator, done: Any, deadline: float, what: str, before: dict[str, float]
) -> tuple[float, list[Sample]]:
    """Sample the calls by service every second until `done()`; the seconds it took and the
    samples (cumulative, from `before`)."""
    started = time.monotonic()
    samples: list[Sample] = [(started, dict(before))]
    while not done():
        if time.monotonic() - started > deadline:
            raise BenchFailure(f"not {what} after {deadline:.0f} s:\n{operator.log_tail()}")
        operator.healthy()
        time.sleep(SAMPLE_SECONDS)
        samples.append((time.monotonic(), _services(operator)))
    seconds = time.monotonic() - started
    samples.append((time.monotonic(), _services(operator)))
    return seconds, samples


def _burst(seconds: float, samples: Sequence[Sample]) -> Burst:
    services = sorted({service for _, sample in samples for service in sample})
    per_service = {
        service: [
            (at - then, max(0.0, after.get(service, 0) - before.get(service, 0)))
            for (then, before), (at, after) in itertools.pairwise(samples)
        ]
        for service in services
    }
    lengths = [at - then for (then, _), (at, _) in itertools.pairwise(samples)]
    totals = [sum(c) for c in zip(*([n for _, n in v] for v in per_service.values()), strict=True)]
    throttled = {
        service: round(refused)
        for service, intervals in per_service.items()
        if (refused := throttled_calls(intervals)) >= 1
    }
    per_second = [round(n / length, 1) for n, length in zip(totals, lengths, strict=True)]
    return Burst(round(seconds, 1), sum(totals), per_second, throttled)


def _all_ready(meshes: Meshes, names: Sequence[str]) -> bool:
    listed = cast(
        dict[str, Any],
        meshes.custom.list_cluster_custom_object("sgmesh.io", "v1alpha1", "nodegroupmeshes"),
    )
    ready = {
        item["metadata"]["name"]
        for item in listed["items"]
        if any(
            condition.get("type") == "Ready" and condition.get("status") == "True"
            for condition in (item.get("status") or {}).get("conditions") or []
        )
        and (item.get("status") or {}).get("observedGeneration")
        == item["metadata"].get("generation")
    }
    return set(names) <= ready


def _measure_fleet(
    members: Sequence[tuple[str, ...]],
    resync: int,
    window: float,
    operator: Operator,
    plane: ControlPlane,
) -> FleetMeasurement:
    count = len(members)
    meshes = Meshes(plane.kubeconfig)
    names = [f"fleet-{index:03d}" for index in range(count)]
    with operator:
        before = _services(operator)
        calls_before = scrape(operator)["calls"]
        for name, asgs in zip(names, members, strict=True):
            meshes.create(
                name, {"autoScalingGroups": {"names": list(asgs)}, "resyncSeconds": resync}
            )
        seconds, samples = _watch_burst(
            operator, lambda: _all_ready(meshes, names), 600, "every mesh Ready", before
        )
        created = _burst(seconds, samples)
        created_operations = {
            operation: n - calls_before.get(operation, 0)
            for operation, n in sorted(scrape(operator)["calls"].items())
            if n > calls_before.get(operation, 0)
        }
        _progress(
            f"fleet of {count}: created at once, all Ready in {created.seconds:.1f} s, "
            f"{created.calls:.0f} AWS calls, at most {created.peak_per_second:.0f} a second; "
            f"measuring {window:.0f} s after one resync period"
        )
        # The first resync after the writes reads back the roles written to: not steady yet.
        settled = time.monotonic() + resync + schedule.TIMER_TICK_SECONDS
        while time.monotonic() < settled:
            operator.healthy()
            time.sleep(SAMPLE_SECONDS)
        steady = _steady(operator, names, window)

    # A restart: nothing changed in AWS; every mesh is reconciled again by the new process.
    _progress(f"fleet of {count}: restarting the operator")
    with operator:

        def reconciled() -> bool:
            converged = scrape(operator)["converged"]
            return all(converged.get(name, 0) >= 1 for name in names) and _all_ready(meshes, names)

        seconds, samples = _watch_burst(operator, reconciled, 600, "every mesh reconciled", {})
        restart = _burst(seconds, samples)
        after = scrape(operator)
        restart_reconciles = sum(after["reconciles"].values())
        restart_writes = sum(
            n for operation, n in after["calls"].items() if operation in client.MUTATING_OPERATIONS
        )
    _progress(
        f"fleet of {count}: restart, all reconciled in {restart.seconds:.1f} s, "
        f"{restart.calls:.0f} AWS calls, at most {restart.peak_per_second:.0f} a second"
    )
    return FleetMeasurement(
        meshes=count,
        resync_seconds=resync,
        created=created,
        restart=restart,
        restart_reconciles=restart_reconciles,
        restart_writes=restart_writes,
        created_operations=created_operations,
        restart_operations=dict(sorted(after["calls"].items())),
        **steady,
    )


def _steady(operator: Operator, names: Sequence[str], window: float) -> dict[str, Any]:
    """The steady fleet over `window` seconds: the `FleetMeasurement` fields it gives."""
    pid = operator.pid
    assert pid is not None
    first = scrape(operator)
    peak = rss_mib(pid)
    seen = dict(first["reconciles"])
    reconciled_at: dict[str, list[float]] = {name: [] for name in names}
    started = time.monotonic()
    end = started + window
    while (now := time.monotonic()) < end:
        operator.healthy()
        peak = max(peak, rss_mib(pid))
        time.sleep(min(SAMPLE_SECONDS, end - now))
        sampled_at = time.monotonic()
        for mesh, total in scrape(operator)["reconciles"].items():
            if mesh in reconciled_at and total > seen.get(mesh, 0):
                reconciled_at[mesh].append(sampled_at)
            seen[mesh] = total
    last = scrape(operator)
    rss_end = rss_mib(pid)
    elapsed = time.monotonic() - started
    minutes = elapsed / 60

    def per_minute(kind: str) -> dict[str, float]:
        return {
            key: round((total - first[kind].get(key, 0)) / minutes, 1)
            for key, total in sorted(last[kind].items())
            if total > first[kind].get(key, 0)
        }

    reconciles = sum(last["reconciles"].values()) - sum(first["reconciles"].values())
    steady_calls = sum(last["services"].values()) - sum(first["services"].values())
    periods: dict[str, float | None] = {}
    for name, times in reconciled_at.items():
        if len(times) >= 2:
            periods[name] = (times[-1] - times[0]) / (len(times) - 1)
        else:
            periods[name] = elapsed if times else None
    return {
        "window_seconds": round(elapsed, 1),
        "rss_peak_mib": round(max(peak, rss_end), 1),
        "rss_end_mib": round(rss_end, 1),
        "calls_per_minute": per_minute("services"),
        "operations_per_minute": per_minute("calls"),
        "steady_calls_per_reconcile": round(steady_calls / reconciles, 2) if reconciles else 0.0,
        "periods": periods,
    }


def fleet_report(fleet: FleetMeasurement) -> str:
    phases = _markdown(
        ["phase", "all Ready s", "AWS calls", "peak calls / s", "throttled by a bucket"],
        [
            [
                phase,
                f"{burst.seconds:.1f}",
                f"{burst.calls:.0f}",
                f"{burst.peak_per_second:.0f}",
                ", ".join(f"{s} {n:.0f}" for s, n in burst.throttled.items()) or "none",
            ]
            for phase, burst in (("created at once", fleet.created), ("restart", fleet.restart))
        ],
    )
    per_second = " ".join(f"{n:.0f}" for n in fleet.restart.per_second)
    services = _markdown(
        ["service", "AWS calls / minute"],
        [[service, f"{n:.1f}"] for service, n in fleet.calls_per_minute.items()]
        + [["total", f"{sum(fleet.calls_per_minute.values()):.1f}"]],
    )
    operations = _markdown(
        ["operation", "steady: AWS calls / minute", "creation: AWS calls", "restart: AWS calls"],
        [
            [
                op,
                f"{fleet.operations_per_minute.get(op, 0):.1f}",
                f"{fleet.created_operations.get(op, 0):.0f}",
                f"{fleet.restart_operations.get(op, 0):.0f}",
            ]
            for op in sorted(
                {
                    *fleet.operations_per_minute,
                    *fleet.created_operations,
                    *fleet.restart_operations,
                }
            )
        ],
    )
    missed = fleet.missed_goals()
    verdict = (
        "Fleet goals met: RSS, resync period, all Ready after creation and restart, restart "
        "cost and bursts."
        if not missed
        else "Fleet goals missed:\n" + "\n".join(f"- {goal}" for goal in missed)
    )
    return "\n".join(
        [
            f"Fleet: {fleet.meshes} meshes of {ASGS_PER_MESH} ASGs each (nothing shared), "
            f"resyncSeconds {fleet.resync_seconds}; steady window {fleet.window_seconds:.0f} s.",
            "",
            phases,
            "",
            f"Restart: {fleet.restart.calls:.0f} AWS calls ({fleet.restart_writes:.0f} writes) "
            f"in {fleet.restart_reconciles:.0f} reconciles, against one steady reconcile per "
            f"mesh ({fleet.meshes} x "
            f"{fleet.steady_calls_per_reconcile:.1f}) and the IAM reads a process that just "
            f"started makes afresh ({fleet.cold_iam_reads}): {fleet.restart_budget:.0f}. "
            f"Calls each second: {per_second}",
            "",
            f"Once steady: RSS peak {fleet.rss_peak_mib:.0f} MiB, end {fleet.rss_end_mib:.0f} "
            f"MiB; resync period median {_seconds(fleet.median_period)} s, worst "
            f"{_seconds(fleet.worst_period)} s.",
            "",
            services,
            "",
            operations,
            "",
            verdict,
        ]
    )


# ---- AWS clients per region ------------------------------------------------------------------

_CLIENTS_PER_REGION = """
import os, sys
from concurrent.futures import ThreadPoolExecutor
from sgmesh.controller import metrics, shared
from sgmesh.aws import reconcile

def rss():
    for line in open(f"/proc/{os.getpid()}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

runtime = shared.Runtime(
    settings=shared.OperatorSettings(pipeline=reconcile.Settings(), region=None),
    metrics=metrics.Metrics(),
    executor=ThreadPoolExecutor(1),
)
runtime.clients_for(sys.argv[1])
one = rss()
for region in sys.argv[2:]:
    runtime.clients_for(region)
print((rss() - one) / (len(sys.argv) - 2))
"""
EXTRA_REGIONS = ("eu-west-1", "ap-southeast-2", "us-west-2")


def memory_per_extra_region() -> float:
    """MiB of RSS the operator's AWS clients (`shared.Runtime.clients_for`) take for each
    region after the first, in a fresh interpreter (no AWS call is made: clients only)."""
    done = subprocess.run(
        [sys.executable, "-c", _CLIENTS_PER_REGION, REGION, *EXTRA_REGIONS],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"},
        cwd=REPO_ROOT,
    )
    if done.returncode != 0:
        raise BenchFailure(f"measuring the clients per region failed: {done.stderr}")
    return float(done.stdout)


# ---- Report --------------------------------------------------------------------------------


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.rjust(widths[i]) for i, cell in enumerate(cells)) + " |"

    rule = ["-" * (width - 1) + ":" for width in widths]
    return "\n".join([line(header), line(rule), *(line(row) for row in rows)])


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def report(measurements: Sequence[Measurement], per_region_mib: float) -> str:
    header = [
        "meshes",
        "RSS MiB idle",
        "RSS MiB peak",
        "RSS MiB end",
        "CPU s / 10 s",
        "AWS calls / 10 s",
        "budget",
        "resync median s",
        "resync worst s",
        "all Ready s",
    ]
    rows = [
        [
            str(m.meshes),
            f"{m.rss_start_mib:.0f}",
            f"{m.rss_peak_mib:.0f}",
            f"{m.rss_end_mib:.0f}",
            f"{m.cpu_per_10s:.2f}",
            f"{m.total_calls_per_window:.0f}",
            f"{CALLS_SLACK * m.calls_budget:.0f}",
            _seconds(m.median_period),
            _seconds(m.worst_period),
            f"{m.ready_seconds:.0f}",
        ]
        for m in measurements
    ]
    operations = sorted({op for m in measurements for op in m.calls_per_window})
    by_operation = _markdown(
        ["operation", *(f"{m.meshes} meshes" for m in measurements)],
        [
            [op, *(f"{m.calls_per_window.get(op, 0):.1f}" for m in measurements)]
            for op in operations
        ],
    )
    missed = [goal for m in measurements for goal in m.missed_goals()]
    verdict = (
        "Goals met: RSS, resync period and AWS calls at every size."
        if not missed
        else "Goals missed:\n" + "\n".join(f"- {goal}" for goal in missed)
    )
    return "\n".join(
        [
            f"resyncSeconds {RESYNC_SECONDS}; {VPCS * ASGS_PER_VPC} ASGs in {VPCS} VPCs, "
            f"{ASGS_PER_MESH} ASGs per mesh; window {measurements[0].window_seconds:.0f} s; "
            f"{os.cpu_count()} CPUs.",
            "",
            _markdown(header, rows),
            "",
            f"AWS clients of each region after the first: {per_region_mib:.1f} MiB of RSS.",
            "",
            "AWS calls per resync window by operation:",
            "",
            by_operation,
            "",
            verdict,
        ]
    )


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- Entry point ---------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--meshes",
        default=",".join(str(n) for n in DEFAULT_MESHES),
        help="comma-separated numbers of meshes (default: %(default)s)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW_SECONDS,
        help="seconds measured once every mesh is Ready (default: %(default)s)",
    )
    parser.add_argument(
        "--fleet",
        type=int,
        default=FLEET_MESHES,
        help="meshes of the fleet: created at once, measured steady, then across a restart; "
        "0: none (default: %(default)s)",
    )
    parser.add_argument(
        "--fleet-resync",
        type=int,
        default=FLEET_RESYNC_SECONDS,
        help="the fleet's resyncSeconds, at least 10 (default: %(default)s)",
    )
    parser.add_argument(
        "--fleet-window",
        type=float,
        default=FLEET_WINDOW_SECONDS,
        help="seconds the steady fleet is measured (default: %(default)s)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    arguments = parser.parse_args(argv)
    try:
        arguments.meshes = [int(n) for n in arguments.meshes.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--meshes takes whole numbers separated by commas, not {arguments.meshes!r}")
    if any(n < 1 for n in arguments.meshes):
        parser.error(f"--meshes takes numbers of at least 1: {arguments.meshes}")
    if not arguments.meshes and arguments.fleet < 1:
        parser.error("nothing to measure: --meshes is empty and --fleet is 0")
    if arguments.fleet < 0:
        parser.error(f"--fleet must be 0 or more, not {arguments.fleet}")
    if arguments.fleet_resync < 10:
        parser.error(f"--fleet-resync must be at least 10, not {arguments.fleet_resync}")
    if arguments.fleet and arguments.fleet_window < 2 * arguments.fleet_resync:
        parser.error(
            f"--fleet-window must be at least {2 * arguments.fleet_resync} s (two of the "
            f"fleet's resync periods), not {arguments.fleet_window}"
        )
    if arguments.window < 2 * RESYNC_SECONDS:
        parser.error(
            f"--window must be at least {2 * RESYNC_SECONDS} s (two resync periods), "
            f"not {arguments.window}"
        )
    return arguments


def _workdirs() -> Generator[Path, None, None]:
    with tempfile.TemporaryDirectory(prefix="sgmesh-scale-") as root:
        for index in range(1_000):
            path = Path(root) / str(index)
            path.mkdir()
            yield path


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    measurements: list[Measurement] = []
    fleet: FleetMeasurement | None = None
    workdirs = _workdirs()
    try:
        per_region_mib = memory_per_extra_region()
        for count in arguments.meshes:
            measurements.append(measure(count, arguments.window, next(workdirs)))
        if arguments.fleet:
            fleet = measure_fleet(
                arguments.fleet, arguments.fleet_resync, arguments.fleet_window, next(workdirs)
            )
    except BenchFailure as failure:
        print(f"\nBENCH FAILED: {failure}\n", file=sys.stderr)
        return 1
    finally:
        workdirs.close()
    if arguments.json:
        print(
            json.dumps(
                {
                    "measurements": [m.as_json() for m in measurements],
                    "perExtraRegionMiB": round(per_region_mib, 1),
                    "fleet": fleet.as_json() if fleet is not None else None,
                },
                indent=2,
            )
        )
    else:
        printed = [report(measurements, per_region_mib)] if measurements else []
        if fleet is not None:
            printed.append(fleet_report(fleet))
        print("\n\n".join(printed))
    missed = [goal for m in measurements for goal in m.missed_goals()]
    missed += fleet.missed_goals() if fleet is not None else []
    return 1 if arguments.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())

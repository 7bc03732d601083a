"""How fast the operator reacts to the cluster: from a Node registering, or an EC2NodeClass or
a SecurityGroupPolicy changing its security groups, to the rules being right in AWS.

It starts its own stack (`devtools.operator_stack`): a local control plane (the real
kube-apiserver and etcd), a moto server with AWS's rule semantics, Karpenter's, the VPC CNI's
and the VPC resource controller's real CRDs (`devtools.external_crds`), and `sgmesh run` as a
separate process, with three meshes at `resyncSeconds: 600` (a resync could never explain a
reaction within seconds):

- "node": a mesh selects ASGs by the tag `team: bench`. Each run creates a new ASG with that
  tag (its SG, launch template and role), gives it an instance, and then registers a Node with
  that instance's `spec.providerID`, as the kubelet would. Measured: from the Node's creation
  until the new SG and the mesh's other SG admit each other (rules carrying the mesh's tag).
  Goal: 5 s.
- "node class": a mesh lists an EC2NodeClass. Each run writes the class's status with a new
  security group, as Karpenter does when its selector terms resolve to another group.
  Measured: from the status write until the new SG is meshed and the old one's owned rules are
  gone. Goal: 2 s.
- "pod security groups": a mesh lists a SecurityGroupPolicy. Each run gives the policy a new
  security group in `spec.securityGroups.groupIds`, as a person switching pods' SGs does.
  Measured: from the write until the new SG is meshed and the old one's owned rules are gone.
  Goal: 2 s.

Each figure is polled from AWS (moto) every 50 ms; it prints the median and the worst of
`--runs` runs (default 5). `--check` exits 1 when a goal is missed; `--json` prints JSON.

Run from the repository root: `python bench/reaction.py [--runs 5] [--check] [--json]`
(`make bench` runs it after the call budget).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

# Run as a script, Python puts bench/ on the path; devtools/ lives at the root.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from devtools import karpenter, vpc_resources  # noqa: E402
from devtools.aws.world import World  # noqa: E402
from devtools.k8s.controlplane import ControlPlane, ControlPlaneError  # noqa: E402
from devtools.nodes import ClusterNodes  # noqa: E402
from devtools.operator_harness import Meshes, Operator  # noqa: E402
from devtools.operator_stack import operator_stack  # noqa: E402
from sgmesh.aws import client  # noqa: E402

CLUSTER = "bench"
REGION = "us-east-1"
RESYNC_SECONDS = 600
POLL_SECONDS = 0.05
DEADLINE_SECONDS = 60.0
NODE_GOAL_SECONDS = 5.0
NODE_CLASS_GOAL_SECONDS = 2.0
POLICY_GOAL_SECONDS = 2.0
POLICY_NAMESPACE = "bench"
DEFAULT_RUNS = 5


class BenchFailure(RuntimeError):
    """The bench could not measure: a mesh never got Ready, a reaction never came."""


@dataclass(frozen=True)
class Reaction:
    what: str
    goal_seconds: float
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def worst(self) -> float:
        return max(self.seconds)

    @property
    def met(self) -> bool:
        return self.worst <= self.goal_seconds


def _owned_pairs(world: World, group_ids: set[str], mesh: str) -> set[tuple[str, str]]:
    """(target, source) of every rule on `group_ids` that carries `mesh`'s tag."""
    return world.owned_pairs(group_ids, f"sgmesh.io/{CLUSTER}/{mesh}")


def _full(group_ids: set[str]) -> set[tuple[str, str]]:
    return {(target, source) for target in group_ids for source in group_ids}


def _joined(world: World, mesh: str, joined: set[str]) -> bool:
    """The SGs of `joined` admit each other through the mesh's rules."""
    return _owned_pairs(world, joined, mesh) >= _full(joined)


def _moved(world: World, mesh: str, joined: set[str], looked_at: set[str]) -> bool:
    """The mesh's rules on `looked_at` are exactly the full mesh of `joined`: the SGs that
    left have none."""
    return _owned_pairs(world, looked_at, mesh) == _full(joined)


def _time_until(check: Callable[[], bool], started: float, what: str) -> float:
    while not check():
        if time.monotonic() - started > DEADLINE_SECONDS:
            raise BenchFailure(f"no reaction within {DEADLINE_SECONDS:.0f} s: {what}")
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


def measure(runs: int, workdir: Path) -> list[Reaction]:
    _progress("starting a control plane, a moto server and the operator")
    try:
        with operator_stack(
            workdir, cluster=CLUSTER, region=REGION, with_external_crds=True
        ) as stack:
            world = World(client.make_clients(REGION))
            world.eks_cluster(CLUSTER)  # the cluster's VPC, which bounds every mesh
            with stack.operator as operator:
                nodes = ClusterNodes(world, stack.plane.kubectl)
                meshes = Meshes(stack.plane.kubeconfig)
                return [
                    _node_reactions(world, nodes, meshes, operator, runs),
                    _node_class_reactions(world, stack.plane, meshes, operator, runs),
                    _policy_reactions(world, stack.plane, meshes, operator, runs),
                ]
    except ControlPlaneError as error:
        raise BenchFailure(str(error)) from error


def _node_reactions(
    world: World, nodes: ClusterNodes, meshes: Meshes, operator: Operator, runs: int
) -> Reaction:
    first = world.node_group("bench-0", tags={"team": "bench"})
    meshes.create(
        "nodes",
        {
            "autoScalingGroups": {"selectors": [{"tags": {"team": "bench"}}]},
            "resyncSeconds": RESYNC_SECONDS,
        },
    )
    meshes.wait_ready("nodes", 60, operator.log_tail)
    seconds = []
    for run in range(1, runs + 1):
        group = world.node_group(f"bench-{run}", tags={"team": "bench"})
        [instance] = nodes.launch(group.asg, group.profile)
        joined = {first.security_group_id, group.security_group_id}
        started = time.monotonic()
        nodes.register(f"ip-10-0-0-{run}", instance)
        seconds.append(
            _time_until(
                partial(_joined, world, "nodes", joined),
                started,
                f"ASG {group.asg} joining after its node registered",
            )
        )
        _progress(f"node {run}: {seconds[-1]:.2f} s")
    return Reaction("node registered → new ASG meshed", NODE_GOAL_SECONDS, seconds)


def _node_class_reactions(
    world: World, plane: ControlPlane, meshes: Meshes, operator: Operator, runs: int
) -> Reaction:
    anchor = world.node_group("bench-managed")
    current = world.security_group("karpenter-0")
    role = world.role("KarpenterNodeRole-bench")
    applied = plane.kubectl(
        "apply", "-f", "-", stdin=json.dumps(karpenter.ec2nodeclass("bench", role=role))
    )
    if applied.returncode != 0:
        raise BenchFailure(f"applying the EC2NodeClass: {applied.stderr}")
    karpenter.write_ec2nodeclass_status(
        plane.kubectl, "bench", karpenter.ec2nodeclass_status({current: "karpenter-0"})
    )
    meshes.create(
        "karpenter",
        {
            "autoScalingGroups": {"names": [anchor.asg]},
            "karpenter": {"nodeClasses": ["bench"]},
            "resyncSeconds": RESYNC_SECONDS,
        },
    )
    meshes.wait_ready("karpenter", 60, operator.log_tail)
    seconds = []
    for run in range(1, runs + 1):
        new = world.security_group(f"karpenter-{run}")
        after = {anchor.security_group_id, new}
        everything = after | {current}
        started = time.monotonic()
        karpenter.write_ec2nodeclass_status(
            plane.kubectl, "bench", karpenter.ec2nodeclass_status({new: f"karpenter-{run}"})
        )
        seconds.append(
            _time_until(
                partial(_moved, world, "karpenter", after, everything),
                started,
                f"the EC2NodeClass moving to {new}",
            )
        )
        current = new
        _progress(f"node class {run}: {seconds[-1]:.2f} s")
    return Reaction("EC2NodeClass status → rules moved", NODE_CLASS_GOAL_SECONDS, seconds)


def _apply_policy(plane: ControlPlane, group_id: str) -> None:
    manifest = vpc_resources.security_group_policy(POLICY_NAMESPACE, "bench", [group_id])
    applied = plane.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    if applied.returncode != 0:
        raise BenchFailure(f"applying the SecurityGroupPolicy: {applied.stderr}")


def _policy_reactions(
    world: World, plane: ControlPlane, meshes: Meshes, operator: Operator, runs: int
) -> Reaction:
    anchor = world.node_group("bench-pods-anchor")
    current = world.security_group("pods-0")
    namespace = plane.kubectl("create", "namespace", POLICY_NAMESPACE)
    if namespace.returncode != 0:
        raise BenchFailure(f"creating the namespace {POLICY_NAMESPACE}: {namespace.stderr}")
    _apply_policy(plane, current)
    meshes.create(
        "pods",
        {
            "autoScalingGroups": {"names": [anchor.asg]},
            "podSecurityGroups": {"policies": [f"{POLICY_NAMESPACE}/bench"]},
            "resyncSeconds": RESYNC_SECONDS,
        },
    )
    meshes.wait_ready("pods", 60, operator.log_tail)
    seconds = []
    for run in range(1, runs + 1):
        new = world.security_group(f"pods-{run}")
        after = {anchor.security_group_id, new}
        everything = after | {current}
        started = time.monotonic()
        _apply_policy(plane, new)
        seconds.append(
            _time_until(
                partial(_moved, world, "pods", after, everything),
                started,
                f"the SecurityGroupPolicy moving to {new}",
            )
        )
        current = new
        _progress(f"security group policy {run}: {seconds[-1]:.2f} s")
    return Reaction("SecurityGroupPolicy groupIds → rules moved", POLICY_GOAL_SECONDS, seconds)


def report(reactions: list[Reaction]) -> str:
    lines = [
        f"resyncSeconds {RESYNC_SECONDS}; {len(reactions[0].seconds)} runs each; "
        f"{os.cpu_count()} CPUs; polled every {POLL_SECONDS * 1000:.0f} ms.",
        "",
        "| reaction | median s | worst s | goal s | met |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    lines.extend(
        f"| {r.what} | {r.median:.2f} | {r.worst:.2f} | {r.goal_seconds:.0f} | "
        f"{'yes' if r.met else 'NO'} |"
        for r in reactions
    )
    return "\n".join(lines)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs of each reaction")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--json", action="store_true", help="print JSON")
    arguments = parser.parse_args(argv)
    if arguments.runs < 1:
        parser.error(f"--runs must be at least 1, not {arguments.runs}")
    with tempfile.TemporaryDirectory(prefix="sgmesh-reaction-") as workdir:
        try:
            reactions = measure(arguments.runs, Path(workdir))
        except BenchFailure as error:
            print(f"error: {error}", file=sys.stderr)
            return 3
    if arguments.json:
        print(
            json.dumps(
                [
                    {**asdict(r), "median": r.median, "worst": r.worst, "met": r.met}
                    for r in reactions
                ],
                indent=2,
            )
        )
    else:
        print(report(reactions))
    return 1 if arguments.check and not all(r.met for r in reactions) else 0


if __name__ == "__main__":
    sys.exit(main())

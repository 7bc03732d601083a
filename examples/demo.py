"""`make demo`: the whole story on the local sandbox, in about 20 seconds once it is built.

Starts the sandbox (kube-apiserver + etcd built from Go modules, and a moto server standing in
for AWS) and seeds a cluster broken both ways the README opens with: three EKS-style node
groups with one running instance each, registered as Nodes, CoreDNS on eks-system, and two
node groups whose SGs admit nothing from the others and whose roles lack the CNI policy. Then:
`sgmesh doctor` finds both causes, `sgmesh doctor --suggest` writes the NodeGroupMesh that
fixes them, the CRD and that manifest are applied, the operator runs until the mesh is Ready,
and `sgmesh doctor` finds nothing more. Along the way it prints what a cluster admin would look
at: `kubectl get ngm`, the ingress rules of every node group's SG and the CNI policy on every
node role. Then it stops what it started; `--keep` leaves the sandbox and the operator up.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from devtools import REPO_ROOT
from devtools.aws import moto_server
from devtools.aws.world import CNI_POLICY_ARN, NodeGroup, World
from devtools.k8s import build
from devtools.nodes import ClusterNodes
from devtools.operator_harness import CRD_FILE, CRD_NAME, Meshes, Operator
from devtools.sandbox import Sandbox
from sgmesh.aws import client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave sandbox and operator up")
    arguments = parser.parse_args(argv)

    sandbox = Sandbox()
    was_running = sandbox.status()
    # The sandbox runs in processes of its own, as `make sandbox` starts them, so that they
    # are nobody's children here and outlive this script only when asked to.
    sandbox_command("up")
    aws_env = sandbox.aws_environment()
    os.environ.update(aws_env)
    kubectl = [str(build.ensure_binaries().kubectl), "--kubeconfig", str(sandbox.kubeconfig)]
    meshes = Meshes(sandbox.kubeconfig)
    operator: Operator | None = None
    try:
        step("a broken cluster: three node groups, the two new ones cut off and without CNI policy")
        moto_server.reset(aws_env["AWS_ENDPOINT_URL"])
        if crd_installed(kubectl):
            meshes.remove_all()
        world = World(client.make_clients())
        groups = seed_broken_cluster(world, ClusterNodes(world, kubectl_runner(kubectl)))

        doctor_env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig)}
        doctor(doctor_env, title="sgmesh doctor")
        suggested = write_suggestion(doctor_env, sandbox.directory / "suggested-mesh.yaml")

        step("kubectl apply -f crds/ and the suggested mesh")
        run([*kubectl, "apply", "-f", str(CRD_FILE)])
        run(
            [
                *kubectl,
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                f"crd/{CRD_NAME}",
            ]
        )
        run([*kubectl, "apply", "-f", str(suggested)])

        step("sgmesh run (the operator), until the mesh is Ready")
        world.eks_cluster("demo")  # the EKS cluster: DescribeCluster gives the operator its VPC
        operator = Operator(
            sandbox.kubeconfig,
            aws_env,
            sandbox.directory / "operator.log",
            cluster="demo",
            region=aws_env["AWS_REGION"],
        ).start()
        meshes.wait_ready("node-groups", 120, operator.log_tail)

        step("kubectl get ngm -o wide")
        run([*kubectl, "get", "ngm", "-o", "wide"])

        show_aws(world, groups)

        doctor(doctor_env, title="sgmesh doctor, once the mesh is Ready")

        step("events")
        run(
            [
                *kubectl,
                "get",
                "events",
                "-A",
                "--field-selector",
                "involvedObject.kind=NodeGroupMesh",
            ]
        )
    finally:
        if arguments.keep:
            print("\nleft running. Try:")
            print(f"  export KUBECONFIG={shlex.quote(str(sandbox.kubeconfig))}")
            print(f"  source {shlex.quote(str(sandbox.aws_env))}")
            print(f"  {shlex.quote(kubectl[0])} get ngm")
            if operator is not None:
                print(f"  kill {operator.pid}   # the operator (its log: .sandbox/operator.log)")
            print("  make sandbox-down   # the API server, etcd and moto")
        else:
            if operator is not None:
                operator.stop()
            if not was_running:
                sandbox_command("down")
    return 0


def show_aws(world: World, groups: list[NodeGroup]) -> None:
    step("ingress rules of each node group's SG (tagged by the mesh)")
    for group in groups:
        print(f"  {group.asg} ({group.security_group_id}) admits:")
        for rule in world.describe_ingress(group.security_group_id):
            source = rule.get("ReferencedGroupInfo", {}).get("GroupId", "?")
            owner = next(
                (t["Key"] for t in rule.get("Tags", []) if t["Key"].startswith("sgmesh.io/")),
                "not the mesh's",
            )
            protocol = "all" if rule["IpProtocol"] == "-1" else rule["IpProtocol"]
            print(f"    {protocol:4} from {source}   [{owner}]")

    step("node roles")
    for group in groups:
        policies = ", ".join(sorted(world.attached_policy_arns(group.role)))
        print(f"  {group.role}: {policies}")


def seed_broken_cluster(world: World, nodes: ClusterNodes) -> list[NodeGroup]:
    """The broken cluster: only eks-system's role has the CNI policy, no SG admits
    another, CoreDNS runs on eks-system; one instance per node group, registered as a Node."""
    nodes.clear()
    groups = [
        world.node_group("eks-system", policy_arns=[CNI_POLICY_ARN]),
        world.node_group("eks-airflow-stateless"),
        world.node_group("eks-data-batch", tags={"team": "data"}),
    ]
    for group in groups:
        (instance_id,) = nodes.launch(group.asg, group.profile)
        node = nodes.register(f"{group.asg}-node", instance_id)
        print(f"  {group.asg}: {group.security_group_id}, role {group.role}, node {node}")
    nodes.coredns("coredns-1", "eks-system-node")
    print("  CoreDNS: kube-system/coredns-1 on eks-system-node")
    return groups


def write_suggestion(env: dict[str, str], path: Path) -> Path:
    step("sgmesh doctor --suggest > .sandbox/suggested-mesh.yaml")
    path.write_text(doctor(env, "--suggest"))
    print(path.read_text(), end="")
    return path


def doctor(env: dict[str, str], *arguments: str, title: str | None = None) -> str:
    """Run `sgmesh doctor`; with a title, show what it printed and its exit code."""
    if title is not None:
        step(title)
    sys.stdout.flush()
    done = subprocess.run(
        [sys.executable, "-m", "sgmesh", "doctor", *arguments],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(f"sgmesh doctor failed ({done.returncode}): {done.stderr}")
    if title is not None:
        print(done.stdout, end="")
        print(f"(exit {done.returncode})")
    return done.stdout


def kubectl_runner(kubectl: list[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run_kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*kubectl, *args], input=stdin, capture_output=True, text=True, check=False
        )

    return run_kubectl


def sandbox_command(verb: str) -> None:
    subprocess.run([sys.executable, "-m", "devtools.sandbox", verb], check=True, cwd=REPO_ROOT)


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(command: list[str]) -> None:
    sys.stdout.flush()
    subprocess.run(command, check=True)


def crd_installed(kubectl: list[str]) -> bool:
    found = subprocess.run([*kubectl, "get", "crd", CRD_NAME], capture_output=True, check=False)
    return found.returncode == 0


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: the whole story on the local sandbox, in about 20 seconds once it is built.

Starts the sandbox (kube-apiserver + etcd built from Go modules, and a moto server standing in
for AWS), seeds three EKS-style node groups, applies the CRD and `examples/mesh.yaml`, runs
the operator until the mesh is Ready, and prints what a cluster admin would look at:
`kubectl get ngm`, the ingress rules of every node group's SG and the CNI policy on every
node role. Then it stops what it started; `--keep` leaves the sandbox and the operator up.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from sgmesh import aws
from tests.cluster import build
from tests.cluster.sandbox import Sandbox
from tests.e2e.harness import Meshes, Operator
from tests.support import moto_server
from tests.support.world import NodeGroup, World

ROOT = Path(__file__).resolve().parents[1]
MESH = ROOT / "examples" / "mesh.yaml"
CRD = ROOT / "crds" / "nodegroupmesh.yaml"


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
        step("a fresh AWS: three node groups, one SG, role and launch template each")
        moto_server.reset(aws_env["AWS_ENDPOINT_URL"])
        meshes_before = meshes.names() if crd_installed(kubectl) else []
        if meshes_before:
            meshes.remove_all()
        world = World(aws.make_clients())
        groups = [
            world.node_group("eks-system"),
            world.node_group("eks-airflow-stateless"),
            world.node_group("eks-data-batch", tags={"team": "data"}),
        ]
        for group in groups:
            print(f"  {group.asg}: {group.security_group_id}, role {group.role}")

        step("kubectl apply -f crds/ and examples/mesh.yaml")
        run([*kubectl, "apply", "-f", str(CRD)])
        run(
            [
                *kubectl,
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/nodegroupmeshes.sgmesh.io",
            ]
        )
        run([*kubectl, "apply", "-f", str(MESH)])

        step("sgmesh run (the operator), until the mesh is Ready")
        operator = Operator(
            sandbox.kubeconfig,
            aws_env,
            sandbox.directory / "operator.log",
            cluster="demo",
            region=aws_env["AWS_REGION"],
        ).start()
        meshes.wait_ready("airflow", 120, operator.log_tail)

        step("kubectl get ngm -o wide")
        run([*kubectl, "get", "ngm", "-o", "wide"])

        show_aws(world, groups)

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


def sandbox_command(verb: str) -> None:
    subprocess.run([sys.executable, "-m", "tests.cluster.sandbox", verb], check=True, cwd=ROOT)


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(command: list[str]) -> None:
    sys.stdout.flush()
    subprocess.run(command, check=True)


def crd_installed(kubectl: list[str]) -> bool:
    found = subprocess.run(
        [*kubectl, "get", "crd", "nodegroupmeshes.sgmesh.io"], capture_output=True, check=False
    )
    return found.returncode == 0


if __name__ == "__main__":
    sys.exit(main())

"""The operator through faults of its own process and of the control plane: SIGKILL in the middle
of a large apply, the API server and etcd restarted, the API connection black-holed.

Each test states its pass criterion on AWS state, status and events, and ends with AWS exact:
no rule lost, duplicated or orphaned, and the rules sgmesh does not own untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.aws.world import World
from devtools.k8s.controlplane import ControlPlane, write_kubeconfig
from devtools.operator_harness import Meshes, Operator, quick_resync, wait_until
from tests.e2e.invariants import HandMade, assert_exact
from tests.support.fault_proxy import ThrottlingProxy
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.kube

DEADLINE = 60
# kopf calls a watch dead after 70 s without an event or bookmark (watching.inactivity_timeout).
DEAD_WATCH_DEADLINE = 150


def spec(*names: str, **extra: Any) -> dict[str, Any]:
    return {"autoScalingGroups": {"names": list(names)}, "resyncSeconds": 10, **extra}


def test_sigkill_in_the_middle_of_a_large_apply_then_restart_converges_exactly(
    world: World,
    meshes: Meshes,
    start_operator: Callable[..., Operator],
    faulty_aws: ThrottlingProxy,
) -> None:
    groups = [world.node_group(f"big-{index:02}") for index in range(22)]  # 484 rules
    hand_made = HandMade.on(world, groups[0], groups[1])
    # Each of the 22 authorizations takes a while, so the kill lands in the middle of the
    # apply however fast the machine is.
    faulty_aws.slow["AuthorizeSecurityGroupIngress"] = 0.5
    first = start_operator(aws_endpoint=faulty_aws.url)
    meshes.create("big", spec(*(group.asg for group in groups)))

    def authorizes() -> float:
        return first.metric("sgmesh_aws_calls_total", operation="AuthorizeSecurityGroupIngress")

    wait_until(lambda: authorizes() >= 2, DEADLINE, "the apply is writing", first.log_tail)
    first.stop(kill=True)
    written = sum(len(world.describe_ingress(g.security_group_id)) for g in groups) - 2
    assert 0 < written < 22 * 22, f"the kill did not land in the apply ({written} rules)"

    second = start_operator()
    meshes.wait_ready("big", 120, second.log_tail)
    assert_exact(world, groups, {"big": groups}, hand_made, second.log_tail())
    status = (meshes.get("big") or {})["status"]
    assert status["rules"] == {"desired": 484, "present": 484, "owned": 484}


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_restart_is_survived_and_changes_after_it_converge(
    component: str,
    world: World,
    meshes: Meshes,
    operator: Operator,
    kube_cluster: ControlPlane,
) -> None:
    groups = [world.node_group(f"eks-{name}") for name in "abc"]
    hand_made = HandMade.on(world, groups[0], groups[1])
    meshes.create("before", spec("eks-a", "eks-b"))
    meshes.wait_ready("before", DEADLINE, operator.log_tail)

    kube_cluster.restart(component)  # type: ignore[arg-type]

    assert operator.healthy()
    meshes.patch_spec("before", spec("eks-a", "eks-b", "eks-c"))
    meshes.create("after", spec("eks-b", "eks-c"))
    meshes.wait_ready("before", DEADLINE, operator.log_tail)
    meshes.wait_ready("after", DEADLINE, operator.log_tail)
    assert_exact(
        world,
        groups,
        {"before": groups, "after": groups[1:]},
        hand_made,
        operator.log_tail(),
    )


@pytest.fixture
def api_proxy(kube_cluster: ControlPlane) -> Iterator[TcpProxy]:
    """A cuttable way to the API server, for an operator given a kubeconfig through it."""
    proxy = TcpProxy(kube_cluster.secure_port)
    yield proxy
    proxy.close()


def test_black_holed_api_connection_is_noticed_and_the_operator_catches_up(
    world: World,
    meshes: Meshes,
    start_operator: Callable[..., Operator],
    kube_cluster: ControlPlane,
    api_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    groups = [world.node_group(f"eks-{name}") for name in "abc"]
    hand_made = HandMade.on(world, groups[0], groups[1])
    # The operator reaches the API server only through the proxy (same CA: the serving
    # certificate is for 127.0.0.1, whatever the port).
    kubeconfig = write_kubeconfig(
        tmp_path / "through-proxy",
        api_proxy.url.replace("http", "https"),
        kube_cluster.ca_file,
        kube_cluster.admin_token,
    )
    operator = start_operator(kubeconfig=kubeconfig)
    meshes.create("before", spec("eks-a", "eks-b"))
    meshes.wait_ready("before", DEADLINE, operator.log_tail)

    # Packets dropped, not refused: the open watch and pooled connections hang, and stay dead
    # after the network heals, as TCP connections of a long partition do; new ones work.
    api_proxy.black_hole()
    meshes.create("during", spec("eks-b", "eks-c"))
    api_proxy.restore()

    meshes.wait_ready("during", DEAD_WATCH_DEADLINE, operator.log_tail)
    assert operator.healthy()
    assert_exact(
        world,
        groups,
        {"before": groups[:2], "during": groups[1:]},
        hand_made,
        operator.log_tail(),
    )


def test_aws_drift_is_repaired_while_the_api_server_is_down(
    world: World,
    meshes: Meshes,
    start_operator: Callable[..., Operator],
    kube_cluster: ControlPlane,
) -> None:
    operator = start_operator(**quick_resync())  # resyncs every 2 s
    groups = [world.node_group("eks-a"), world.node_group("eks-b")]
    meshes.create("drift", {"autoScalingGroups": {"names": ["eks-a", "eks-b"]}})
    meshes.wait_ready("drift", DEADLINE, operator.log_tail)
    target = groups[0].security_group_id

    def reconciles() -> float:
        return operator.metric("sgmesh_reconciles_total", mesh="drift")

    with kube_cluster.outage("kube-apiserver"):
        # A resync during the outage fails to write its status; then AWS drifts.
        before = reconciles()
        wait_until(lambda: reconciles() > before, DEADLINE, "a resync runs in the outage")
        (rule, *_) = world.describe_ingress(target)
        world.clients.ec2.revoke_security_group_ingress(
            GroupId=target, SecurityGroupRuleIds=[rule["SecurityGroupRuleId"]]
        )
        # Repaired within a resync or two, though no status can be written meanwhile.
        wait_until(
            lambda: len(world.describe_ingress(target)) == 2,
            25,
            "the revoked rule is restored while the API server is down",
            operator.log_tail,
        )
    meshes.wait_ready("drift", DEADLINE, operator.log_tail)

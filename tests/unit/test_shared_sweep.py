"""The sweep of a policy's roles shared by the meshes of one process
(`sgmesh.aws.roles.RoleMemory.shared_sweep`), on a fake clock: read once for every mesh within
`SWEEP_SHARE_SECONDS`, read again after it or after a failure, and a role whose tag key the
process wrote since the sweep began is handed back to be read again."""

from __future__ import annotations

import threading

import pytest

from sgmesh.aws import roles

POLICY = "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"
KEY = "sgmesh.io/c/mesh-a"
OTHER = "sgmesh.io/c/mesh-b"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def swept() -> roles.SweptRoles:
    return roles.SweptRoles({POLICY: frozenset({"ng-1", "ng-2"})}, {"ng-1": {}, "ng-2": {}})


def test_one_sweep_answers_every_mesh_within_its_share() -> None:
    clock = Clock()
    memory = roles.RoleMemory(clock=clock)
    reads: list[int] = []

    def read() -> roles.SweptRoles:
        reads.append(1)
        return swept()

    first, _ = memory.shared_sweep([POLICY], KEY, read)
    clock.now += roles.SWEEP_SHARE_SECONDS - 1
    second, _ = memory.shared_sweep([POLICY], OTHER, read)
    clock.now += 1
    memory.shared_sweep([POLICY], OTHER, read)

    assert first == second
    assert len(reads) == 2
    # The tags swept are what the process knows of those roles now.
    assert memory.role_tags("ng-1") == {}


def test_a_sweep_that_failed_is_read_again_by_the_next_mesh() -> None:
    memory = roles.RoleMemory(clock=Clock())

    def fails() -> roles.SweptRoles:
        raise RuntimeError("throttled")

    with pytest.raises(RuntimeError):
        memory.shared_sweep([POLICY], KEY, fails)
    answer, _ = memory.shared_sweep([POLICY], KEY, swept)

    assert answer == swept()


def test_a_role_whose_tag_key_the_process_wrote_since_the_sweep_is_read_again() -> None:
    memory = roles.RoleMemory(clock=Clock())
    memory.shared_sweep([POLICY], KEY, swept)

    memory.forget_role("ng-2", [KEY])
    memory.forget_role("ng-1", [OTHER])
    _, rewritten = memory.shared_sweep([POLICY], KEY, swept)

    assert rewritten == frozenset({"ng-2"})
    assert memory.role_tags("ng-2") is None


def test_a_write_while_the_sweep_reads_is_handed_back_too() -> None:
    memory = roles.RoleMemory(clock=Clock())

    def read_while_writing() -> roles.SweptRoles:
        memory.forget_role("ng-1", [KEY])
        return swept()

    _, rewritten = memory.shared_sweep([POLICY], KEY, read_while_writing)

    assert rewritten == frozenset({"ng-1"})
    assert memory.role_tags("ng-2") is None  # a write overlapped: nothing swept is kept


def test_meshes_that_come_together_wait_for_one_sweep() -> None:
    memory = roles.RoleMemory(clock=Clock())
    started, release = threading.Event(), threading.Event()
    reads: list[int] = []

    def slow() -> roles.SweptRoles:
        reads.append(1)
        started.set()
        release.wait(10)
        return swept()

    answers: list[roles.SweptRoles] = []
    first = threading.Thread(
        target=lambda: answers.append(memory.shared_sweep([POLICY], KEY, slow)[0])
    )
    first.start()
    started.wait(10)
    second = threading.Thread(
        target=lambda: answers.append(memory.shared_sweep([POLICY], OTHER, slow)[0])
    )
    second.start()
    second.join(0.2)
    # It waits at the gate: had it swept too, it would be blocked in a second read.
    assert second.is_alive()
    assert len(reads) == 1
    release.set()
    first.join(10)
    second.join(10)

    assert len(reads) == 1
    assert answers == [swept(), swept()]

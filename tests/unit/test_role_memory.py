"""`sgmesh.aws.roles.RoleMemory` on a clock the test sets: how long what IAM answered is kept
(a share of the refresh, between a half and the whole, by name), and that a write of the
process to a role forgets the role when it is sent and when it is answered or fails, and
keeps no read that overlapped it. Writes go through a botocore client answered by a Stubber,
or the client's hooks are called in the order botocore calls them for two threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.stub import Stubber

from sgmesh.aws import client, roles
from sgmesh.engine import ownership

REFRESH = 600.0
TAGS = {"sgmesh.io/prod/mesh": "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"}


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def memory(clock: Clock) -> roles.RoleMemory:
    return roles.RoleMemory(REFRESH, clock=clock)


@pytest.fixture
def clients() -> client.AwsClients:
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return client.make_clients("us-east-1", session=session)


@pytest.fixture
def iam(clients: client.AwsClients) -> Iterator[Stubber]:
    with Stubber(clients.iam) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def keep(memory: roles.RoleMemory, name: str = "node-role") -> None:
    memory.keep_role_tags(name, TAGS, memory.generation())


def test_role_tags_are_kept_at_least_half_the_refresh_and_at_most_all_of_it(
    memory: roles.RoleMemory, clock: Clock
) -> None:
    names = [f"role-{index}" for index in range(50)]
    for name in names:
        keep(memory, name)
        memory.keep_profile(name, (name,))

    clock.now += REFRESH / 2 - 0.001
    assert all(memory.role_tags(name) == TAGS for name in names)
    assert all(memory.profile_roles(name) == (name,) for name in names)

    clock.now += REFRESH / 4
    kept = [name for name in names if memory.role_tags(name) is not None]
    assert 0 < len(kept) < len(names)  # read together, read again apart

    clock.now += REFRESH / 4 + 0.001
    assert all(memory.role_tags(name) is None for name in names)
    assert all(memory.profile_roles(name) is None for name in names)


def test_nothing_is_remembered_before_it_was_read(memory: roles.RoleMemory) -> None:
    assert memory.role_tags("node-role") is None
    assert memory.profile_roles("node-profile") is None
    assert memory.recall(ownership.Owner("prod", "mesh")) is None


def test_tags_handed_out_are_copies(memory: roles.RoleMemory) -> None:
    keep(memory)
    handed = memory.role_tags("node-role")
    assert handed is not None
    handed["sgmesh.io/prod/other"] = "changed"
    assert memory.role_tags("node-role") == TAGS


def test_a_mesh_remembers_its_roles_until_told_otherwise(memory: roles.RoleMemory) -> None:
    owner = ownership.Owner("prod", "mesh")
    memory.remember(owner, ["a", "b"])
    assert memory.recall(owner) == frozenset({"a", "b"})
    memory.remember(owner, [])
    assert memory.recall(owner) == frozenset()


def test_a_refresh_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="refresh_seconds"):
        roles.RoleMemory(0)


@pytest.mark.parametrize("operation", roles.ROLE_WRITES)
def test_a_write_to_a_role_through_watched_clients_forgets_it(
    memory: roles.RoleMemory, clients: client.AwsClients, iam: Stubber, operation: str
) -> None:
    keep(memory, "node-role")
    keep(memory, "other-role")
    memory.watch(clients)
    memory.watch(clients)  # hooked once: one write counts as one sent and one answered
    before = memory.generation()

    write(clients, iam, operation, "node-role")

    assert memory.role_tags("node-role") is None
    assert memory.role_tags("other-role") == TAGS
    assert memory.generation() == before + 2


def test_a_write_that_failed_forgets_the_role_too(
    memory: roles.RoleMemory, clients: client.AwsClients, iam: Stubber
) -> None:
    keep(memory)
    memory.watch(clients)
    iam.add_client_error("tag_role", "ServiceFailure", http_status_code=500)

    with pytest.raises(botocore.exceptions.ClientError):
        clients.iam.tag_role(RoleName="node-role", Tags=[{"Key": "k", "Value": "v"}])

    assert memory.role_tags("node-role") is None


def test_reads_through_watched_clients_forget_nothing(
    memory: roles.RoleMemory, clients: client.AwsClients, iam: Stubber
) -> None:
    keep(memory)
    memory.watch(clients)
    iam.add_response("list_role_tags", {"Tags": []}, {"RoleName": "node-role"})

    clients.iam.list_role_tags(RoleName="node-role")

    assert memory.role_tags("node-role") == TAGS


def test_a_write_through_clients_never_watched_is_not_seen(
    memory: roles.RoleMemory, clients: client.AwsClients, iam: Stubber
) -> None:
    """Another process, or a person: seen at the refresh (and, for the policy, by the
    listing every reconcile makes)."""
    keep(memory)
    write(clients, iam, "TagRole", "node-role")
    assert memory.role_tags("node-role") == TAGS


def write(clients: client.AwsClients, iam: Stubber, operation: str, role: str) -> None:
    policy = "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"
    by_operation: dict[str, dict[str, Any]] = {
        "TagRole": {"RoleName": role, "Tags": [{"Key": "k", "Value": "v"}]},
        "UntagRole": {"RoleName": role, "TagKeys": ["k"]},
        "AttachRolePolicy": {"RoleName": role, "PolicyArn": policy},
        "DetachRolePolicy": {"RoleName": role, "PolicyArn": policy},
    }
    parameters = by_operation[operation]
    method = clients.iam.meta.method_to_api_mapping
    name = next(python for python, api in method.items() if api == operation)
    iam.add_response(name, {}, parameters)
    getattr(clients.iam, name)(**parameters)


# ---- a read and a write of two threads, in the order botocore calls the hooks --------------


def tag_role(clients: client.AwsClients) -> Any:
    return clients.iam.meta.service_model.operation_model("TagRole")


def sent(clients: client.AwsClients, role: str) -> dict[str, Any]:
    context: dict[str, Any] = {}
    clients.iam.meta.events.emit(
        "provide-client-params.iam.TagRole",
        params={"RoleName": role},
        model=tag_role(clients),
        context=context,
    )
    return context


def answered(clients: client.AwsClients, context: dict[str, Any]) -> None:
    clients.iam.meta.events.emit(
        "after-call.iam.TagRole",
        http_response=None,
        parsed={},
        model=tag_role(clients),
        context=context,
    )


def test_a_read_begun_before_a_write_was_sent_is_not_kept(
    memory: roles.RoleMemory, clients: client.AwsClients
) -> None:
    memory.watch(clients)
    generation = memory.generation()  # the read of the tags begins
    answered(clients, sent(clients, "other-role"))

    memory.keep_role_tags("node-role", TAGS, generation)

    assert memory.role_tags("node-role") is None


def test_a_read_kept_while_a_write_to_its_role_was_in_flight_is_forgotten_at_the_answer(
    memory: roles.RoleMemory, clients: client.AwsClients
) -> None:
    memory.watch(clients)
    writing = sent(clients, "node-role")
    keep(memory, "node-role")  # begun and answered while the write was in flight
    assert memory.role_tags("node-role") == TAGS

    answered(clients, writing)

    assert memory.role_tags("node-role") is None


def test_a_read_begun_after_a_write_was_answered_is_kept(
    memory: roles.RoleMemory, clients: client.AwsClients
) -> None:
    memory.watch(clients)
    answered(clients, sent(clients, "node-role"))

    keep(memory, "node-role")

    assert memory.role_tags("node-role") == TAGS


# ---- The shared listing of instance profiles ----------------------------------------------


class Listing:
    """What `RoleMemory.list_profiles` reads: the account's profiles, over `pages` pages."""

    def __init__(self, profiles: dict[str, tuple[str, ...]], pages: int = 1) -> None:
        self.profiles = profiles
        self.pages = pages
        self.reads = 0

    def __call__(self) -> tuple[dict[str, tuple[str, ...]], int]:
        self.reads += 1
        return self.profiles, self.pages


def refusal(code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code}}, "ListInstanceProfiles"
    )


def test_listed_profiles_are_kept_as_if_read_by_name(
    memory: roles.RoleMemory, clock: Clock
) -> None:
    listing = Listing({"ng-a": ("role-a",), "empty": ()})

    assert memory.list_profiles(2, listing) == {"ng-a": ("role-a",)}

    assert memory.profile_roles("ng-a") == ("role-a",)
    assert memory.profile_roles("empty") is None  # a profile without a role is a problem
    clock.now += REFRESH
    assert memory.profile_roles("ng-a") is None


def test_a_listing_is_shared_for_the_share_seconds(memory: roles.RoleMemory, clock: Clock) -> None:
    listing = Listing({"ng-a": ("role-a",)})
    memory.list_profiles(1, listing)

    clock.now += roles.SWEEP_SHARE_SECONDS - 1
    assert memory.list_profiles(1, listing) == {}  # remembered only, from an older listing
    clock.now += 1
    assert memory.list_profiles(1, listing) == {"ng-a": ("role-a",)}
    assert listing.reads == 2


def test_a_listing_answers_as_a_read_by_name_for_its_fresh_seconds(
    memory: roles.RoleMemory, clock: Clock
) -> None:
    """Whoever made it: a caller that doubts what it remembers takes a listing this recent as
    fresh, and makes one when the last is older."""
    listing = Listing({"ng-a": ("role-a",)})
    memory.list_profiles(1, listing)

    clock.now += roles.PROFILE_LISTING_FRESH_SECONDS - 1
    fresh = roles.PROFILE_LISTING_FRESH_SECONDS
    assert memory.list_profiles(1, listing) == {"ng-a": ("role-a",)}
    assert memory.list_profiles(1, listing, share_seconds=fresh) == {"ng-a": ("role-a",)}
    assert listing.reads == 1

    clock.now += 1
    assert memory.list_profiles(1, listing) == {}
    listing.profiles = {"ng-a": ("role-b",)}
    assert memory.list_profiles(1, listing, share_seconds=fresh) == {"ng-a": ("role-b",)}
    assert listing.reads == 2
    assert memory.profile_roles("ng-a") == ("role-b",)


def test_a_listing_of_more_pages_than_profiles_to_read_is_not_made_again(
    memory: roles.RoleMemory, clock: Clock
) -> None:
    listing = Listing({"ng-a": ("role-a",)}, pages=3)
    memory.list_profiles(5, listing)
    clock.now += roles.SWEEP_SHARE_SECONDS

    assert memory.list_profiles(2, listing) == {}  # two by name cost less
    assert memory.list_profiles(3, listing) == {"ng-a": ("role-a",)}
    assert listing.reads == 2


@pytest.mark.parametrize("code", ["AccessDenied", "AccessDeniedException"])
def test_a_refused_listing_is_tried_again_after_one_refresh(
    memory: roles.RoleMemory, clock: Clock, code: str
) -> None:
    def refused() -> tuple[dict[str, tuple[str, ...]], int]:
        raise refusal(code)

    assert memory.list_profiles(3, refused) == {}
    clock.now += REFRESH - 1
    listing = Listing({"ng-a": ("role-a",)})
    assert memory.list_profiles(3, listing) == {}
    clock.now += 1
    assert memory.list_profiles(3, listing) == {"ng-a": ("role-a",)}


@pytest.mark.parametrize("code", ["Throttling", "ServiceUnavailable"])
def test_a_listing_that_failed_otherwise_raises_and_is_made_again(
    memory: roles.RoleMemory, code: str
) -> None:
    def failed() -> tuple[dict[str, tuple[str, ...]], int]:
        raise refusal(code)

    with pytest.raises(botocore.exceptions.ClientError):
        memory.list_profiles(3, failed)
    listing = Listing({"ng-a": ("role-a",)})
    assert memory.list_profiles(3, listing) == {"ng-a": ("role-a",)}


def test_callers_that_come_while_a_listing_is_read_wait_for_it(
    memory: roles.RoleMemory,
) -> None:
    started, release = threading.Event(), threading.Event()
    listing = Listing({"ng-a": ("role-a",)})

    def slow() -> tuple[dict[str, tuple[str, ...]], int]:
        started.set()
        release.wait(5)
        return listing()

    first = threading.Thread(target=memory.list_profiles, args=(1, slow))
    first.start()
    assert started.wait(5)
    answers: list[Mapping[str, tuple[str, ...]]] = []
    second = threading.Thread(target=lambda: answers.append(memory.list_profiles(1, listing)))
    second.start()
    second.join(0.2)
    assert second.is_alive()  # its own listing would not block: it waits at the gate
    release.set()
    first.join(5)
    second.join(5)

    assert listing.reads == 1
    assert answers == [{"ng-a": ("role-a",)}]  # the first caller's answer, fresh
    assert memory.profile_roles("ng-a") == ("role-a",)

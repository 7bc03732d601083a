"""IAM reads: the node roles of a mesh's members, and the roles the mesh recorded a CNI
attachment on, each with its attached policies and tags.

IAM's control plane is global to the account and throttles every tool that uses it, so a
steady reconcile makes one IAM read, whatever the number of node groups:
`ListEntitiesForPolicy(EntityFilter=Role)` of the mesh's policy, paged by 1,000, says which
member roles hold it (and shows a policy detached by hand at the next reconcile). What changes
only when somebody changes it — instance profile → role, and the tags on a role (the mesh's
record of the attachments it made) — is kept in the process's `RoleMemory` between
reconciles, and read again:

- when the launch data names a profile or role that is not remembered: a profile from one
  listing of the account's instance profiles (`ListInstanceProfiles`, paged by 1,000, each
  with its role), shared by every mesh for `SWEEP_SHARE_SECONDS` (`RoleMemory.list_profiles`),
  and by name (`GetInstanceProfile`) when the listing does not name it or costs more pages than
  the profiles to read; a role's tags by name;
- when the process itself writes to a role (TagRole, UntagRole, AttachRolePolicy,
  DetachRolePolicy through clients a discovery used): it forgets that role when the write is
  sent and again when it is answered, and a read that overlapped a write is not kept;
- after the IAM refresh (`RoleMemory.refresh_seconds`, default 10 minutes): each answer is kept
  for a fixed share of it between a half and the whole, by name, so that the roles read
  together at a start are not all read again in the same reconcile. A tag removed by hand, or
  an instance profile that now holds another role, is seen within one refresh.

Memory only ever confirms that nothing needs doing. A member role is taken from memory only
when `planning.role_actions` finds nothing to do on it as remembered (its tags) and as listed
now (whether it holds the policy); any other role is read afresh — its tags
(`ListRoleTags`), and all its attached policies (`ListAttachedRolePolicies`) when it carries
the mesh's record of a policy the mesh no longer wants on it — and so is the remembered
instance profile it came from, before the plan is made: through a listing of the account's
profiles begun at most `PROFILE_LISTING_FRESH_SECONDS` ago, which the meshes that doubt
together share (100 meshes created at once doubt 300 profiles), or by name where that costs
fewer calls. So every write, and above all every removal (DetachPolicy, UntagRole), is
planned from what IAM answered in this reconcile (a profile: at most a few seconds before it,
as any answer shared between meshes); a restart, a second replica or a lost memory read
afresh and reach the same decisions. With `cniPolicy.attach: false` no member role is read
at all.

Roles the mesh tagged but that are no longer members (membership shrank, the mesh's policy
changed or `attach` turned false, the mesh was deleted) are found in two ways:

- `RoleMemory` keeps, per mesh, its member roles and the roles last seen carrying its tag.
  Each reconcile reads the remembered roles that are no longer members afresh, and remembers
  again what it saw. A role that leaves the mesh is thus read once more, released, and
  forgotten; in steady state this costs no listing.
- When nothing is remembered for a mesh (the operator just started, a one-shot CLI run) and
  on deletion, the roles the policy is attached to are swept once:
  `ListEntitiesForPolicy(EntityFilter=Role)` for the mesh's policy and the partition's
  AmazonEKS_CNI_Policy, then the tags of each. The mesh tags a role only together with an
  attachment of the policy it records, so every role it recorded an attachment on that is
  still attached is found. A role whose attachment someone else removed keeps a stale tag,
  which names an attachment that no longer exists; it is never mistaken for one to detach.
  With `attach: false` and nothing remembered, no IAM call is made: a record left from a
  past `attach: true` is released when the mesh is deleted.

  The policy's roles and their tags are the same facts for every mesh: an operator that
  resumes 100 meshes at a start sweeps them once, not once per mesh
  (`RoleMemory.shared_sweep`, for `SWEEP_SHARE_SECONDS`). A mesh then reads again only the
  roles the sweep saw carrying its tag, and those whose tag the process wrote since the sweep
  began (a mesh writes only its own tag key; the writes of the process are recorded by key).
  A role the sweep saw without the mesh's tag needs nothing from the mesh: a skipped read only
  ever skips a role with nothing to release. Deletion sweeps afresh, on its own.

It must never write to AWS, and never conclude that something is gone from an error: a role
or instance profile is absent only on a `NoSuchEntity` answer to a request for it by name (a
listing that does not name a profile is no such answer: it may predate the profile). An
identity whose policy predates `iam:ListInstanceProfiles` reads profiles by name, as before,
and tries the listing again after one IAM refresh.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import botocore.exceptions

from sgmesh.aws import client, errors
from sgmesh.aws import shared_reads as sharing
from sgmesh.engine import ownership, planning, topology

__all__ = [
    "DEFAULT_IAM_REFRESH_SECONDS",
    "PROFILE_LISTING_FRESH_SECONDS",
    "ROLE_WRITES",
    "MeshRoles",
    "ProfileRoles",
    "RoleMemory",
    "SweptRoles",
    "read_mesh_roles",
    "resolve_profiles",
]

IAM_PAGE_SIZE = 1000  # MaxItems of the IAM listings
DEFAULT_IAM_REFRESH_SECONDS = 600.0
# How long one sweep of the roles a policy is attached to (and their tags) answers the first
# reconcile of every other mesh: the meshes an operator resumes at a start all begin within it.
SWEEP_SHARE_SECONDS = 60.0
# How recently a listing of instance profiles must have begun to answer as a read by name made
# now would: the lifetime of the answers meshes reconciled together share
# (`sgmesh.aws.shared_reads`). The process never writes to an instance profile.
PROFILE_LISTING_FRESH_SECONDS = sharing.DEFAULT_TTL_SECONDS
# The writes to a role that make the process forget what it remembers of that role.
ROLE_WRITES = ("TagRole", "UntagRole", "AttachRolePolicy", "DetachRolePolicy")

# Keys of botocore's per-request context where the write hook leaves the role it wrote to,
# and the tag keys the write names.
_WRITTEN_ROLE = "sgmesh_role_written"
_WRITTEN_KEYS = "sgmesh_role_written_keys"


log = logging.getLogger("sgmesh")

_Value = TypeVar("_Value")


@dataclass(frozen=True)
class _Kept(Generic[_Value]):
    value: _Value
    read_at: float


@dataclass(frozen=True)
class SweptRoles:
    """One sweep of the account: per policy, the roles it is attached to; per role, its tags
    as read (None: IAM answered that the role does not exist)."""

    holders: Mapping[str, frozenset[str]]
    tags: Mapping[str, Mapping[str, str] | None]


@dataclass
class _Sweep:
    began_at: float
    swept: SweptRoles | None = None  # None while it is read
    # Per role, the tag keys the process wrote on it since the sweep began: the tags read may
    # predate the write, so for those keys the role must be read again.
    written: dict[str, set[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _ProfileListing:
    """The last listing of the account's instance profiles: when it began, the pages it took,
    whether IAM refused it (the identity may not list), and the profiles it named."""

    began_at: float
    pages: int
    refused: bool = False
    named: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # profiles with a role


class RoleMemory:
    """What one process keeps of IAM between reconciles; safe to share across threads.

    - Per mesh, its member roles and the roles last seen carrying its ownership tag. A mesh
      with no entry has never been read in this process: the roles of its policy are swept.
    - What IAM answered of instance profiles (the roles each holds) and of roles (their
      tags), each for at most `refresh_seconds` on `clock`, and never across a write of the
      process to the role (`watch`).
    - The last sweep of the roles a set of policies is attached to, with their tags, for
      `SWEEP_SHARE_SECONDS`: the meshes that start together sweep the account once between
      them (`shared_sweep`), not once each. Likewise the last listing of instance profiles
      (`list_profiles`), whose answers are kept as if each profile had been read by name.
    """

    def __init__(
        self,
        refresh_seconds: float = DEFAULT_IAM_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not refresh_seconds > 0:
            raise ValueError(f"refresh_seconds must be above 0, not {refresh_seconds}")
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._tagged: dict[str, frozenset[str]] = {}
        self._profiles: dict[str, _Kept[tuple[str, ...]]] = {}
        self._role_tags: dict[str, _Kept[dict[str, str]]] = {}
        self._generation = 0  # grows at every write to a role, sent or answered
        self._sweeps: dict[tuple[str, ...], _Sweep] = {}
        self._sweep_gates: dict[tuple[str, ...], threading.Lock] = {}
        self._listing: _ProfileListing | None = None
        self._listing_gate = threading.Lock()
        self._hook_id = f"sgmesh.role-memory.{id(self)}"

    # ---- per mesh -----------------------------------------------------------------------------

    def recall(self, owner: ownership.Owner) -> frozenset[str] | None:
        with self._lock:
            return self._tagged.get(owner.tag_key)

    def remember(self, owner: ownership.Owner, role_names: Iterable[str]) -> None:
        with self._lock:
            self._tagged[owner.tag_key] = frozenset(role_names)

    # ---- what IAM answered --------------------------------------------------------------------

    def generation(self) -> int:
        """Taken before a read of a role's tags and given back to `keep_role_tags`, which keeps
        nothing read while the process wrote to a role."""
        with self._lock:
            return self._generation

    def profile_roles(self, profile_name: str) -> tuple[str, ...] | None:
        """The roles the instance profile held when last read, or None: read it."""
        with self._lock:
            return self._fresh(self._profiles, f"profile/{profile_name}")

    def role_tags(self, role_name: str) -> dict[str, str] | None:
        """The role's tags when last read, or None: read them."""
        with self._lock:
            tags = self._fresh(self._role_tags, f"role/{role_name}")
        return None if tags is None else dict(tags)

    def keep_profile(self, profile_name: str, role_names: Sequence[str]) -> None:
        with self._lock:
            self._drop_expired(self._profiles)
            self._profiles[f"profile/{profile_name}"] = _Kept(tuple(role_names), self._clock())

    def keep_role_tags(self, role_name: str, tags: Mapping[str, str], generation: int) -> None:
        """Keep what a read begun at `generation` answered, unless the process wrote to a role
        since: the answer may predate the write."""
        with self._lock:
            if generation != self._generation:
                return
            self._drop_expired(self._role_tags)
            self._role_tags[f"role/{role_name}"] = _Kept(dict(tags), self._clock())

    def forget_role(self, role_name: str, tag_keys: Iterable[str] = ()) -> None:
        """The process writes to the role: forget its tags. `tag_keys`: the keys the write
        adds or removes, which every sweep since begun must read again on that role."""
        with self._lock:
            self._generation += 1
            self._role_tags.pop(f"role/{role_name}", None)
            now = self._clock()
            for key, sweep in list(self._sweeps.items()):
                if now - sweep.began_at >= SWEEP_SHARE_SECONDS and sweep.swept is not None:
                    del self._sweeps[key]  # served no longer: nothing to record for it
                else:
                    sweep.written.setdefault(role_name, set()).update(tag_keys)

    # ---- sweeps shared between meshes ---------------------------------------------------------

    def shared_sweep(
        self, policy_arns: Sequence[str], tag_key: str, read: Callable[[], SweptRoles]
    ) -> tuple[SweptRoles, frozenset[str]]:
        """The roles `policy_arns` are attached to and their tags, as `read` answers: read by
        one caller at a time, and the answer given to every caller for `SWEEP_SHARE_SECONDS`.
        Also the roles whose `tag_key` the process wrote since that sweep began: their tags
        as swept may not show it, so the caller reads them again.

        Only a sweep that read no error is kept; one that failed is read again by the next
        caller. Each role's tags swept are also kept as `role_tags` when no write of the
        process overlapped the sweep."""
        key = tuple(sorted(set(policy_arns)))
        with self._lock:
            gate = self._sweep_gates.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                kept = self._sweeps.get(key)
                if (
                    kept is not None
                    and kept.swept is not None
                    and self._clock() - kept.began_at < SWEEP_SHARE_SECONDS
                ):
                    return kept.swept, self._written(kept, tag_key)
                sweep = self._sweeps[key] = _Sweep(began_at=self._clock())
                generation = self._generation
            try:
                swept = read()
            except BaseException:
                with self._lock:
                    if self._sweeps.get(key) is sweep:
                        del self._sweeps[key]
                raise
            with self._lock:
                sweep.swept = swept
                if generation == self._generation:
                    for role_name, tags in swept.tags.items():
                        if tags is not None:
                            self._role_tags[f"role/{role_name}"] = _Kept(dict(tags), sweep.began_at)
                return swept, self._written(sweep, tag_key)

    def list_profiles(
        self,
        unknown: int,
        read: Callable[[], tuple[Mapping[str, Sequence[str]], int]],
        *,
        share_seconds: float = SWEEP_SHARE_SECONDS,
    ) -> Mapping[str, tuple[str, ...]]:
        """Keep what one listing of the account's instance profiles answers (`read`: each
        profile's roles, and the pages it took), as if each profile had been read by name.

        `unknown`: the profiles the caller holds no answer it may trust for. A listing is made
        unless one began less than `share_seconds` ago, the last one took more pages than
        `unknown` (reading each by name costs less), or IAM refused it less than one IAM
        refresh ago. One caller lists at a time; the others wait for its answer.

        Returns the profiles that hold a role as the last listing named them, when it began
        less than `PROFILE_LISTING_FRESH_SECONDS` ago (as fresh as a read by name made now),
        whoever made it; else nothing: what an older listing named is only remembered
        (`profile_roles`)."""
        with self._listing_gate:
            with self._lock:
                last, began_at = self._listing, self._clock()
                if last is not None and (
                    began_at - last.began_at < share_seconds
                    or last.pages > unknown
                    or (last.refused and began_at - last.began_at < self.refresh_seconds)
                ):
                    return self._listed_lately()
            try:
                listed, pages = read()
            except botocore.exceptions.ClientError as error:
                if not errors.answered(error, errors.ACCESS_DENIED_CODES):
                    raise
                log.warning(
                    "IAM refused ListInstanceProfiles (%s): instance profiles are read by name "
                    "until the next IAM refresh; grant iam:ListInstanceProfiles (see "
                    "`sgmesh iam-policy`) to read them in one listing",
                    errors.error_code(error),
                )
                with self._lock:
                    self._listing = _ProfileListing(began_at, pages=0, refused=True)
                return {}
            with self._lock:
                kept = {name: tuple(roles) for name, roles in listed.items() if roles}
                self._listing = _ProfileListing(began_at, pages, named=kept)
                self._drop_expired(self._profiles)
                for name, role_names in kept.items():
                    self._profiles[f"profile/{name}"] = _Kept(role_names, began_at)
                return self._listed_lately()

    def _listed_lately(self) -> Mapping[str, tuple[str, ...]]:
        # Caller holds the lock.
        last = self._listing
        if last is None or self._clock() - last.began_at >= PROFILE_LISTING_FRESH_SECONDS:
            return {}
        return last.named

    @staticmethod
    def _written(sweep: _Sweep, tag_key: str) -> frozenset[str]:
        # Caller holds the lock.
        return frozenset(role for role, keys in sweep.written.items() if tag_key in keys)

    # ---- the process's own writes -------------------------------------------------------------

    def watch(self, clients: client.AwsClients) -> None:
        """Forget a role when a write to it goes through `clients` (when it is sent, and when
        it is answered or fails). Idempotent: each client is hooked once."""
        events = clients.iam.meta.events
        for operation in ROLE_WRITES:
            events.register(
                f"provide-client-params.iam.{operation}",
                self._write_sent,
                unique_id=f"{self._hook_id}.sent.{operation}",
            )
            events.register(
                f"after-call.iam.{operation}",
                self._write_ended,
                unique_id=f"{self._hook_id}.answered.{operation}",
            )
            events.register(
                f"after-call-error.iam.{operation}",
                self._write_ended,
                unique_id=f"{self._hook_id}.failed.{operation}",
            )

    def _write_sent(self, params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        role_name = params.get("RoleName")
        if isinstance(role_name, str):
            keys = [
                *(tag.get("Key") for tag in params.get("Tags") or () if isinstance(tag, dict)),
                *(params.get("TagKeys") or ()),
            ]
            context[_WRITTEN_ROLE] = role_name
            context[_WRITTEN_KEYS] = [key for key in keys if isinstance(key, str)]
            self.forget_role(role_name, context[_WRITTEN_KEYS])

    def _write_ended(self, context: dict[str, Any], **_: Any) -> None:
        role_name = context.get(_WRITTEN_ROLE)
        if isinstance(role_name, str):
            self.forget_role(role_name, context.get(_WRITTEN_KEYS) or ())

    # ---- internals (the caller holds the lock) ------------------------------------------------

    def _fresh(self, kept: dict[str, _Kept[_Value]], key: str) -> _Value | None:
        answer = kept.get(key)
        if answer is None or self._clock() - answer.read_at >= self._lifetime(key):
            return None
        return answer.value

    def _lifetime(self, key: str) -> float:
        """How long an answer is kept: a share of the refresh between a half and the whole,
        fixed by its key, so that answers read together are not all read again together."""
        share = zlib.crc32(key.encode()) / 2**32
        return self.refresh_seconds * (0.5 + 0.5 * share)

    def _drop_expired(self, kept: dict[str, _Kept[_Value]]) -> None:
        now = self._clock()
        for key in [k for k, a in kept.items() if now - a.read_at >= self.refresh_seconds]:
            del kept[key]


@dataclass(frozen=True)
class ProfileRoles:
    """Instance profile name → the roles it holds, and → why its roles cannot be told.
    `remembered`: the profiles answered from memory rather than read."""

    role_names: Mapping[str, tuple[str, ...]]
    unresolved: Mapping[str, tuple[str, ...]]
    remembered: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MeshRoles:
    """The roles a mesh's plan needs: every member role that exists and every role that
    carries the mesh's tag, by name. `missing`: member roles named directly (an
    EC2NodeClass's `spec.role`) that IAM says do not exist.

    A role's `attached_policy_arns` holds every policy attached to it when the mesh's record
    on it names a policy the mesh no longer wants there (a removal may follow); otherwise the
    policies of this reconcile's listings that it holds, the mesh's own among them: the only
    ones the plan asks about."""

    profiles: ProfileRoles
    roles: Mapping[str, topology.RoleState]
    missing: frozenset[str] = frozenset()


def resolve_profiles(
    clients: client.AwsClients,
    profile_names: Iterable[str],
    memory: RoleMemory | None = None,
    *,
    read_again: Collection[str] = (),
) -> ProfileRoles:
    """Instance profiles → roles: from the listing `memory` shares (`RoleMemory.list_profiles`)
    when it is as fresh as a read by name; else from what `memory` remembers, unless the
    profile is named in `read_again`; else each asked for by name. Only NoSuchEntity makes one
    absent. A profile named in `read_again` is read again through one listing that the meshes
    doubting together share, or by name where that costs fewer calls. Only a profile that
    holds a role is remembered: any other is a problem, read at every reconcile."""
    found: dict[str, tuple[str, ...]] = {}
    unresolved: dict[str, tuple[str, ...]] = {}
    remembered: set[str] = set()
    names = sorted(set(profile_names))
    listed: Mapping[str, tuple[str, ...]] = {}
    if memory is not None:
        unknown = [n for n in names if n in read_again or memory.profile_roles(n) is None]
        if unknown:
            listed = memory.list_profiles(
                len(unknown),
                partial(_list_profiles, clients),
                share_seconds=PROFILE_LISTING_FRESH_SECONDS if read_again else SWEEP_SHARE_SECONDS,
            )
    for name in names:
        if name in listed:
            found[name] = listed[name]
            continue
        kept = None
        if memory is not None and name not in read_again:
            kept = memory.profile_roles(name)
        if kept is not None:
            found[name] = kept
            remembered.add(name)
            continue
        try:
            profile = clients.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        except botocore.exceptions.ClientError as error:
            if not errors.answered(error, errors.IAM_ENTITY_ABSENT):
                raise
            unresolved[name] = (f"instance profile {name} does not exist",)
            continue
        found[name] = tuple(role["RoleName"] for role in profile.get("Roles", []))
        if not found[name]:
            unresolved[name] = (f"instance profile {name} holds no role",)
        elif memory is not None:
            memory.keep_profile(name, found[name])
    return ProfileRoles(found, unresolved, frozenset(remembered))


def read_mesh_roles(
    clients: client.AwsClients,
    owner: ownership.Owner,
    profile_names: Iterable[str],
    sweep_policy_arns: Sequence[str],
    *,
    memory: RoleMemory | None,
    sweep: bool = False,
    role_names: Iterable[str] = (),
    intent: planning.Intent | None = None,
) -> MeshRoles:
    """Member roles (from `profile_names`, and `role_names` named directly) and the roles
    carrying the mesh's tag.

    `sweep_policy_arns`: the policies whose roles are swept when `memory` knows nothing of the
    mesh, or when `sweep` asks for it (deletion). `intent`: the mesh's, when it attaches its
    policy to member roles: that policy's roles are listed, and a member role whose remembered
    tags and listed attachment need no action (`planning.role_actions`) is taken from
    `memory` as it is. Without it every role is read afresh.
    """
    if memory is not None:
        memory.watch(clients)
    wanted = intent.policy_arn if intent is not None and intent.attach_cni else None
    remembered = memory.recall(owner) if memory is not None else None
    swept = (remembered is None or sweep) and bool(sweep_policy_arns)
    candidates = set(remembered or ())
    if swept and not sweep and memory is not None:
        # The first reconcile of a mesh in this process: the sweep is shared with the other
        # meshes (`RoleMemory.shared_sweep`), and only the roles it saw carrying this mesh's
        # tag, or whose tag the process wrote since, are read again below. The mesh's own
        # policy is listed afresh, as at every reconcile: the sweep may be a minute old, and
        # since then this process or a person may have attached or detached it (the plan
        # records an attachment only where it attaches the policy itself). Meshes reconciled
        # together share that listing (`sgmesh.aws.shared_reads`).
        shared, rewritten = memory.shared_sweep(
            sweep_policy_arns, owner.tag_key, partial(_sweep, clients, sweep_policy_arns)
        )
        listed = dict(shared.holders)
        if wanted:
            listed.update(_roles_attached_to(clients, [wanted]))
        candidates.update(
            name
            for arn in sweep_policy_arns
            for name in shared.holders.get(arn, ())
            if name not in shared.tags or owner.owns(shared.tags[name] or {})
        )
        candidates.update(rewritten)
    else:
        listed = _roles_attached_to(
            clients, [*([wanted] if wanted else []), *(sweep_policy_arns if swept else ())]
        )
        if swept:
            candidates.update(name for arn in sweep_policy_arns for name in listed.get(arn, ()))
    reader = _RoleReader(clients, owner, memory=memory, listed=listed, wanted=wanted, intent=intent)
    direct = set(role_names)
    profiles = resolve_profiles(clients, profile_names, memory)

    # At most twice: a remembered profile whose role needs an action, or is gone, is read
    # again, and so are the roles it holds now.
    for _ in range(2):
        member_names = direct | {name for names in profiles.role_names.values() for name in names}
        roles: dict[str, topology.RoleState] = {}
        gone: set[str] = set()
        for name in sorted(member_names | candidates):
            role = reader.state(name, member=name in member_names)
            if role is None:
                gone.add(name)
            elif name in member_names or owner.owns(role.tags):
                roles[name] = role
        doubtful = {
            profile
            for profile in profiles.remembered
            if any(
                name in gone or (name in roles and reader.needs_action(roles[name]))
                for name in profiles.role_names[profile]
            )
        }
        if not doubtful:
            break
        profiles = resolve_profiles(clients, profile_names, memory, read_again=doubtful)

    unresolved = dict(profiles.unresolved)
    for profile, names in profiles.role_names.items():
        missing = [
            f"role {name} of instance profile {profile} does not exist"
            for name in names
            if name in gone
        ]
        if missing:
            unresolved[profile] = (*unresolved.get(profile, ()), *missing)
    if memory is not None:
        # Member roles too: the plan that follows may tag them, and a role tagged now must be
        # read again when it leaves, without a sweep.
        memory.remember(
            owner, (n for n, role in roles.items() if n in member_names or owner.owns(role.tags))
        )
    return MeshRoles(
        ProfileRoles(profiles.role_names, unresolved, profiles.remembered),
        dict(sorted(roles.items())),
        frozenset(direct & gone),
    )


class _RoleReader:
    """A role as this reconcile knows it: from memory when that needs no action, else read,
    each read made once per reconcile."""

    def __init__(
        self,
        clients: client.AwsClients,
        owner: ownership.Owner,
        *,
        memory: RoleMemory | None,
        listed: Mapping[str, frozenset[str]],
        wanted: str | None,
        intent: planning.Intent | None,
    ) -> None:
        self._clients = clients
        self._owner = owner
        self._memory = memory
        self._listed = listed
        self._wanted = wanted
        self._intent = intent
        self._tags: dict[str, dict[str, str] | None] = {}
        self._policies: dict[str, frozenset[str] | None] = {}

    def needs_action(self, role: topology.RoleState) -> bool:
        return self._intent is not None and bool(
            planning.role_actions(role, self._intent, member=True)
        )

    def state(self, name: str, *, member: bool) -> topology.RoleState | None:
        """None when IAM answers that the role does not exist."""
        if member and self._intent is not None and self._memory is not None:
            remembered = None if name in self._tags else self._memory.role_tags(name)
            if remembered is not None:
                kept = topology.RoleState(name, self._held(name), remembered)
                if not self.needs_action(kept):
                    return kept
        tags = self._read_tags(name)
        if tags is None:
            return None
        recorded = tags.get(self._owner.tag_key)
        if recorded is None or recorded == (self._wanted if member else None):
            return topology.RoleState(name, self._held(name), tags)
        # The record names a policy the mesh no longer wants on this role: the plan may detach
        # it and untag the role, so every attachment is read now.
        policies = self._read_policies(name)
        if policies is None:
            return None
        return topology.RoleState(name, policies, tags)

    def _held(self, name: str) -> frozenset[str]:
        return frozenset(arn for arn, holders in self._listed.items() if name in holders)

    def _read_tags(self, name: str) -> dict[str, str] | None:
        if name not in self._tags:
            generation = self._memory.generation() if self._memory is not None else 0
            tags = _role_tags(self._clients, name)
            self._tags[name] = tags
            if tags is not None and self._memory is not None:
                self._memory.keep_role_tags(name, tags, generation)
        found = self._tags[name]
        return None if found is None else dict(found)

    def _read_policies(self, name: str) -> frozenset[str] | None:
        if name not in self._policies:
            policies: set[str] = set()
            try:
                for page in self._clients.iam.get_paginator("list_attached_role_policies").paginate(
                    RoleName=name, PaginationConfig={"PageSize": IAM_PAGE_SIZE}
                ):
                    policies.update(
                        policy["PolicyArn"]
                        for policy in page.get("AttachedPolicies", [])
                        if "PolicyArn" in policy
                    )
            except botocore.exceptions.ClientError as error:
                if not errors.answered(error, errors.IAM_ENTITY_ABSENT):
                    raise
                self._policies[name] = None
            else:
                self._policies[name] = frozenset(policies)
        return self._policies[name]


def _role_tags(clients: client.AwsClients, name: str) -> dict[str, str] | None:
    """The role's tags; None when IAM answers that it does not exist."""
    tags: dict[str, str] = {}
    try:
        for page in clients.iam.get_paginator("list_role_tags").paginate(
            RoleName=name, PaginationConfig={"PageSize": IAM_PAGE_SIZE}
        ):
            tags.update({tag["Key"]: tag["Value"] for tag in page.get("Tags", [])})
    except botocore.exceptions.ClientError as error:
        if not errors.answered(error, errors.IAM_ENTITY_ABSENT):
            raise
        return None
    return tags


def _list_profiles(clients: client.AwsClients) -> tuple[dict[str, tuple[str, ...]], int]:
    """Every instance profile of the account with the roles it holds, and the pages read."""
    profiles: dict[str, tuple[str, ...]] = {}
    pages = 0
    for page in clients.iam.get_paginator("list_instance_profiles").paginate(
        PaginationConfig={"PageSize": IAM_PAGE_SIZE}
    ):
        pages += 1
        for profile in page.get("InstanceProfiles", []):
            profiles[profile["InstanceProfileName"]] = tuple(
                role["RoleName"] for role in profile.get("Roles", [])
            )
    return profiles, pages


def _sweep(clients: client.AwsClients, policy_arns: Sequence[str]) -> SweptRoles:
    """The roles the policies are attached to, and the tags of each: every role once."""
    holders = _roles_attached_to(clients, policy_arns)
    names = sorted({name for held in holders.values() for name in held})
    return SweptRoles(holders, {name: _role_tags(clients, name) for name in names})


def _roles_attached_to(
    clients: client.AwsClients, policy_arns: Sequence[str]
) -> dict[str, frozenset[str]]:
    """Per policy, the names of the roles it is attached to; a policy that does not exist (a
    custom one deleted, a partition's ARN in another) has none."""
    holders: dict[str, frozenset[str]] = {}
    paginator = clients.iam.get_paginator("list_entities_for_policy")
    for policy_arn in sorted(set(policy_arns)):
        names: set[str] = set()
        try:
            for page in paginator.paginate(
                PolicyArn=policy_arn,
                EntityFilter="Role",
                PaginationConfig={"PageSize": IAM_PAGE_SIZE},
            ):
                names.update(role["RoleName"] for role in page.get("PolicyRoles", []))
        except botocore.exceptions.ClientError as error:
            if not errors.answered(error, errors.IAM_ENTITY_ABSENT):
                raise
        holders[policy_arn] = frozenset(names)
    return holders

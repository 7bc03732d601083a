"""IAM reads: the node roles of a mesh's members, and the roles the mesh recorded a CNI
attachment on, each with its attached policies and tags.

Roles are read by name, never through an account-wide listing of roles and their policies:
instance profile → role (`GetInstanceProfile`), then per role its tags (`ListRoleTags`) and
attached managed policies (`ListAttachedRolePolicies`). With `cniPolicy.attach: false` no
member role is read at all.

Roles the mesh tagged but that are no longer members (membership shrank, the mesh's policy
changed or `attach` turned false, the mesh was deleted) are found in two ways:

- `RoleMemory` keeps, per mesh, its member roles and the roles last seen carrying its tag.
  The operator holds one for its lifetime; each reconcile reads the remembered roles by name
  besides the member roles and remembers again what it saw. A role that leaves the mesh is
  thus read once more, released, and forgotten; in steady state this costs no listing.
- When nothing is remembered for a mesh (the operator just started, a one-shot CLI run) and
  on deletion, the roles the policy is attached to are swept once:
  `ListEntitiesForPolicy(EntityFilter=Role)` for the mesh's policy and the partition's
  AmazonEKS_CNI_Policy, then the tags of each. The mesh tags a role only together with an
  attachment of the policy it records, so every role it recorded an attachment on that is
  still attached is found. A role whose attachment someone else removed keeps a stale tag,
  which names an attachment that no longer exists; it is never mistaken for one to detach.
  With `attach: false` and nothing remembered, no IAM call is made: a record left from a
  past `attach: true` is released when the mesh is deleted.

It must never write to AWS, and never conclude that something is gone from an error: a role
or instance profile is absent only on a `NoSuchEntity` answer to a request for it by name.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import botocore.exceptions

from sgmesh.aws import client, errors
from sgmesh.engine import ownership, topology

__all__ = ["MeshRoles", "ProfileRoles", "RoleMemory", "read_mesh_roles", "resolve_profiles"]

IAM_PAGE_SIZE = 1000  # MaxItems of the IAM listings


class RoleMemory:
    """Per mesh, its member roles and the roles last seen carrying its ownership tag; safe to
    share across threads. A mesh with no entry has never been read in this process: the roles
    of its policy are swept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tagged: dict[str, frozenset[str]] = {}

    def recall(self, owner: ownership.Owner) -> frozenset[str] | None:
        with self._lock:
            return self._tagged.get(owner.tag_key)

    def remember(self, owner: ownership.Owner, role_names: Iterable[str]) -> None:
        with self._lock:
            self._tagged[owner.tag_key] = frozenset(role_names)


@dataclass(frozen=True)
class ProfileRoles:
    """Instance profile name → the roles it holds, and → why its roles cannot be told."""

    role_names: Mapping[str, tuple[str, ...]]
    unresolved: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class MeshRoles:
    """The roles a mesh's plan needs: every member role that exists and every role that
    carries the mesh's tag, by name. `missing`: member roles named directly (an
    EC2NodeClass's `spec.role`) that IAM says do not exist."""

    profiles: ProfileRoles
    roles: Mapping[str, topology.RoleState]
    missing: frozenset[str] = frozenset()


def resolve_profiles(clients: client.AwsClients, profile_names: Iterable[str]) -> ProfileRoles:
    """Instance profiles → roles, each asked for by name; only NoSuchEntity makes it absent."""
    found: dict[str, tuple[str, ...]] = {}
    unresolved: dict[str, tuple[str, ...]] = {}
    for name in sorted(set(profile_names)):
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
    return ProfileRoles(found, unresolved)


def read_mesh_roles(
    clients: client.AwsClients,
    owner: ownership.Owner,
    profile_names: Iterable[str],
    sweep_policy_arns: Sequence[str],
    *,
    memory: RoleMemory | None,
    sweep: bool = False,
    role_names: Iterable[str] = (),
) -> MeshRoles:
    """Member roles (from `profile_names`, and `role_names` named directly) and the roles
    carrying the mesh's tag.

    `sweep_policy_arns`: the policies whose roles are swept when `memory` knows nothing of the
    mesh, or when `sweep` asks for it (deletion).
    """
    profiles = resolve_profiles(clients, profile_names)
    direct = set(role_names)
    member_names = direct | {name for names in profiles.role_names.values() for name in names}
    remembered = memory.recall(owner) if memory is not None else None
    candidates = set(remembered or ())
    if (remembered is None or sweep) and sweep_policy_arns:
        candidates |= _roles_attached_to(clients, sweep_policy_arns)

    roles: dict[str, topology.RoleState] = {}
    gone: set[str] = set()
    for name in sorted(member_names | candidates):
        role = _read_role(clients, name, owner, need_policies=name in member_names)
        if role is None:
            gone.add(name)
        elif name in member_names or owner.owns(role.tags):
            roles[name] = role

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
        ProfileRoles(profiles.role_names, unresolved),
        dict(sorted(roles.items())),
        frozenset(direct & gone),
    )


def _roles_attached_to(clients: client.AwsClients, policy_arns: Sequence[str]) -> set[str]:
    """Names of the roles each policy is attached to; a policy that does not exist (a custom
    one deleted, a partition's ARN in another) has none."""
    names: set[str] = set()
    paginator = clients.iam.get_paginator("list_entities_for_policy")
    for policy_arn in sorted(set(policy_arns)):
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
    return names


def _read_role(
    clients: client.AwsClients, name: str, owner: ownership.Owner, need_policies: bool
) -> topology.RoleState | None:
    """A role's tags and, when it is a member or carries the mesh's tag, its attached
    policies; None when IAM answers that the role does not exist."""
    try:
        tags: dict[str, str] = {}
        for tag_page in clients.iam.get_paginator("list_role_tags").paginate(
            RoleName=name, PaginationConfig={"PageSize": IAM_PAGE_SIZE}
        ):
            tags.update({tag["Key"]: tag["Value"] for tag in tag_page.get("Tags", [])})
        policies: set[str] = set()
        if need_policies or owner.owns(tags):
            for policy_page in clients.iam.get_paginator("list_attached_role_policies").paginate(
                RoleName=name, PaginationConfig={"PageSize": IAM_PAGE_SIZE}
            ):
                policies.update(
                    policy["PolicyArn"]
                    for policy in policy_page.get("AttachedPolicies", [])
                    if "PolicyArn" in policy
                )
    except botocore.exceptions.ClientError as error:
        if not errors.answered(error, errors.IAM_ENTITY_ABSENT):
            raise
        return None
    return topology.RoleState(name=name, attached_policy_arns=frozenset(policies), tags=tags)

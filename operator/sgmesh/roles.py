"""IAM reads: the node roles of a mesh's members and the roles the mesh recorded a CNI
attachment on, with their attached policies and tags.

It must never write to AWS, and never conclude that something is gone from an error: an
instance profile is absent only on a `NoSuchEntity` answer to a request for it by name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import botocore.exceptions

from sgmesh import aws, ownership, topology

if TYPE_CHECKING:
    from mypy_boto3_iam.type_defs import RoleDetailTypeDef

__all__ = ["ProfileRoles", "read_roles", "resolve_profiles", "roles_owned_by"]

IAM_PAGE_SIZE = 1000

_IAM_NOT_FOUND = frozenset({"NoSuchEntity"})


@dataclass(frozen=True)
class ProfileRoles:
    """Instance profile name → the roles it holds, and → why its roles cannot be told."""

    role_names: Mapping[str, tuple[str, ...]]
    unresolved: Mapping[str, tuple[str, ...]]


def read_roles(
    clients: aws.AwsClients,
) -> tuple[dict[str, topology.RoleState], dict[str, list[str]]]:
    """Every role of the account with its managed policies and tags, and instance profile name
    → role names, from one paginated read."""
    roles: dict[str, topology.RoleState] = {}
    roles_by_profile: dict[str, list[str]] = defaultdict(list)
    paginator = clients.iam.get_paginator("get_account_authorization_details")
    for page in paginator.paginate(Filter=["Role"], PaginationConfig={"PageSize": IAM_PAGE_SIZE}):
        for detail in page.get("RoleDetailList", []):
            if "RoleName" not in detail:
                continue
            roles[detail["RoleName"]] = _role_state(detail["RoleName"], detail)
            for profile in detail.get("InstanceProfileList", []):
                roles_by_profile[profile["InstanceProfileName"]].append(detail["RoleName"])
    return roles, roles_by_profile


def roles_owned_by(
    roles: Mapping[str, topology.RoleState], owner: ownership.Owner
) -> dict[str, topology.RoleState]:
    return {name: role for name, role in sorted(roles.items()) if owner.owns(role.tags)}


def _role_state(name: str, detail: RoleDetailTypeDef) -> topology.RoleState:
    return topology.RoleState(
        name=name,
        attached_policy_arns=frozenset(
            policy["PolicyArn"]
            for policy in detail.get("AttachedManagedPolicies", [])
            if "PolicyArn" in policy
        ),
        tags={tag["Key"]: tag["Value"] for tag in detail.get("Tags", [])},
    )


def resolve_profiles(
    clients: aws.AwsClients,
    profile_names: Iterable[str],
    roles: Mapping[str, topology.RoleState],
    roles_by_profile: Mapping[str, list[str]],
) -> ProfileRoles:
    """Instance profiles → roles. A profile no role listed is asked for by name: only
    NoSuchEntity makes it absent (the listing may lag behind a new profile)."""
    profile_roles = dict(roles_by_profile)
    wanted = sorted(set(profile_names))
    absent: dict[str, str] = {}
    for name in [name for name in wanted if name not in profile_roles]:
        try:
            profile = clients.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        except botocore.exceptions.ClientError as error:
            if aws.error_code(error) not in _IAM_NOT_FOUND:
                raise
            absent[name] = f"instance profile {name} does not exist"
            continue
        profile_roles[name] = [role["RoleName"] for role in profile.get("Roles", [])]

    found: dict[str, tuple[str, ...]] = {}
    unresolved: dict[str, tuple[str, ...]] = {}
    for profile_name in wanted:
        if profile_name in absent:
            unresolved[profile_name] = (absent[profile_name],)
            continue
        role_names = tuple(profile_roles.get(profile_name, []))
        found[profile_name] = role_names
        reasons = [] if role_names else [f"instance profile {profile_name} holds no role"]
        reasons.extend(
            f"role {role_name} of instance profile {profile_name} was not listed by IAM"
            for role_name in role_names
            if role_name not in roles
        )
        if reasons:
            unresolved[profile_name] = tuple(reasons)
    return ProfileRoles(found, unresolved)

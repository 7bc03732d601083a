"""Discovery: read what AWS holds for a mesh and return it as a `topology.Topology`.

It resolves the member ASGs (by name and by selector), the security groups and node roles
each one launches with (launch template versions, mixed instances policies, launch
configurations, instance profiles), the VPC of every member SG, the inbound rules of member
SGs, the rules and roles this mesh owns anywhere, and the CNI attachments of those roles.
Reads are batched so that the number of calls grows with pages of results, not with the
number of ASGs.

It must never write to AWS, and never conclude that something is gone from an error. Absence
is read only from a successful answer that lacks the thing, or from a "not found" answer to a
request for exactly that thing by id or name; it becomes a `Problem`. Every other error
(throttling, 5xx, timeouts, access denied) propagates for the caller to classify with
`aws.classify`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import botocore.exceptions

from sgmesh import aws, models, ownership, topology

if TYPE_CHECKING:
    from mypy_boto3_autoscaling.type_defs import AutoScalingGroupTypeDef
    from mypy_boto3_autoscaling.type_defs import FilterTypeDef as AsgFilterTypeDef
    from mypy_boto3_autoscaling.type_defs import (
        LaunchTemplateSpecificationTypeDef as AsgTemplateSpecificationTypeDef,
    )
    from mypy_boto3_ec2.type_defs import (
        FilterTypeDef,
        LaunchTemplateVersionTypeDef,
        SecurityGroupRuleTypeDef,
        SecurityGroupTypeDef,
    )
    from mypy_boto3_iam.type_defs import RoleDetailTypeDef

__all__ = ["discover", "discover_owned", "read_ingress_rules", "read_rules"]

# API limits that shape the batches.
ASG_PAGE_SIZE = 100  # DescribeAutoScalingGroups: MaxRecords ≤ 100, and as many names per call
LAUNCH_CONFIGURATION_NAMES_PER_CALL = 50
LAUNCH_CONFIGURATION_PAGE_SIZE = 100
FILTER_VALUES_PER_CALL = 200  # EC2 filter values per request
SECURITY_GROUP_PAGE_SIZE = 1000
SECURITY_GROUP_RULE_PAGE_SIZE = 1000
SUBNET_PAGE_SIZE = 1000
TEMPLATE_VERSION_PAGE_SIZE = 200
IAM_PAGE_SIZE = 1000

LATEST = "$Latest"
DEFAULT = "$Default"

# Answers that positively say "the thing you named does not exist".
_TEMPLATE_NOT_FOUND = frozenset(
    {"InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateName.NotFoundException"}
)
_TEMPLATE_VERSION_NOT_FOUND = frozenset({"InvalidLaunchTemplateId.VersionNotFound"})
_IAM_NOT_FOUND = frozenset({"NoSuchEntity"})

# DescribeSecurityGroupRules documents `tag:<key>` (not `tag-key`) among its filters; the
# mesh writes its ownership tag with this value on every rule it owns.
_OWNED_RULE_VALUES = (ownership.OWNED,)

_PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "all": topology.ALL_PROTOCOLS}

_T = TypeVar("_T")


def discover(
    clients: aws.AwsClients, spec: models.NodeGroupMeshSpec, owner: ownership.Owner
) -> topology.Topology:
    """Resolve the mesh's members and read what AWS holds that concerns them."""
    problems: list[topology.Problem] = []
    asgs = _read_auto_scaling_groups(clients, spec.auto_scaling_groups, problems)
    resolutions = [_Resolution(asg) for asg in asgs]

    templates = _read_template_versions(
        clients, {ref for resolution in resolutions for ref in resolution.template_refs}
    )
    configurations = _read_launch_configurations(
        clients, {r.configuration_name for r in resolutions if r.configuration_name is not None}
    )
    for resolution in resolutions:
        resolution.apply_launch_data(templates, configurations)

    vpcs: dict[str, str] = {}
    _resolve_group_names(clients, resolutions, vpcs, problems)

    extra_ids = list(dict.fromkeys(spec.extra_security_group_ids))
    wanted_ids = [
        *(group_id for resolution in resolutions for group_id in resolution.group_ids),
        *extra_ids,
    ]
    vpcs.update(_read_security_group_vpcs(clients, [g for g in wanted_ids if g not in vpcs]))
    users: dict[str, list[str]] = defaultdict(list)
    for resolution in resolutions:
        for group_id in resolution.group_ids:
            users[group_id].append(f"ASG {resolution.name}")
    for group_id in extra_ids:
        users[group_id].append("extraSecurityGroupIds")
    for group_id, who in users.items():
        if group_id not in vpcs:
            problems.append(
                topology.Problem(
                    topology.ProblemKind.SECURITY_GROUP_NOT_FOUND,
                    group_id,
                    f"security group {group_id} (used by {', '.join(who)}) does not exist",
                )
            )
    existing_ids = sorted(group_id for group_id in users if group_id in vpcs)

    rules = read_ingress_rules(clients, existing_ids)
    rules.update(_read_owned_rules(clients, owner))

    roles_by_name, roles_by_profile = _read_roles(clients)
    _resolve_profiles(clients, resolutions, roles_by_name, roles_by_profile)

    members: list[topology.Member] = []
    for resolution in resolutions:
        problems.extend(resolution.problems())
        # An ASG resolved in part stays a member with what it resolved: what that adds is
        # right, and its UNRESOLVED problem makes the planner hold every removal. One that
        # resolved nothing has nothing to contribute.
        if resolution.group_ids or resolution.role_names:
            members.append(resolution.member(vpcs))
    members.extend(
        topology.Member(
            name=group_id,
            security_group_ids=(group_id,),
            vpc_id=vpcs.get(group_id),
            kind=topology.MemberKind.SECURITY_GROUP,
        )
        for group_id in sorted(extra_ids)
    )

    member_roles = {name for member in members for name in member.role_names}
    roles = {
        name: role
        for name, role in sorted(roles_by_name.items())
        if name in member_roles or owner.owns(role.tags)
    }
    return topology.Topology(
        members=tuple(members),
        ingress_rules=tuple(rules[rule_id] for rule_id in sorted(rules)),
        counted_group_ids=frozenset(existing_ids),
        security_group_vpcs={group_id: vpcs[group_id] for group_id in existing_ids},
        roles=roles,
        problems=_sorted_problems(problems),
    )


def discover_owned(clients: aws.AwsClients, owner: ownership.Owner) -> topology.Topology:
    """What the mesh owns anywhere, for cleanup when the mesh goes: no members, only the rules
    and roles that carry its tag."""
    rules = _read_owned_rules(clients, owner)
    roles_by_name, _ = _read_roles(clients)
    return topology.Topology(
        ingress_rules=tuple(rules[rule_id] for rule_id in sorted(rules)),
        roles={name: role for name, role in sorted(roles_by_name.items()) if owner.owns(role.tags)},
    )


# ---- Auto Scaling groups -------------------------------------------------------------------


def _read_auto_scaling_groups(
    clients: aws.AwsClients,
    selection: models.AutoScalingGroups,
    problems: list[topology.Problem],
) -> list[AutoScalingGroupTypeDef]:
    """The member ASGs, sorted by name; listed names that do not exist become problems."""
    named: dict[str, AutoScalingGroupTypeDef] = {}
    selected: dict[str, AutoScalingGroupTypeDef] = {}

    def consider(asg: AutoScalingGroupTypeDef, selectors: Iterable[models.Selector]) -> None:
        name = asg["AutoScalingGroupName"]
        if name in wanted_names:
            named[name] = asg
        tags = {tag["Key"]: tag.get("Value", "") for tag in asg.get("Tags", []) if "Key" in tag}
        if any(selector.matches(name, tags) for selector in selectors):
            selected[name] = asg

    wanted_names = set(selection.names)
    if any(not selector.tags for selector in selection.selectors):
        # A selector with only a name prefix has no server-side filter: it needs every ASG of
        # the region, and that one listing serves the names and the other selectors too.
        for asg in _describe_auto_scaling_groups(clients):
            consider(asg, selection.selectors)
    else:
        for names in _chunks(selection.names, ASG_PAGE_SIZE):
            for asg in _describe_auto_scaling_groups(clients, names=names):
                consider(asg, ())
        for selector in selection.selectors:
            filters: list[AsgFilterTypeDef] = [
                {"Name": "tag-key", "Values": [key]}
                if value == "*"
                else {"Name": f"tag:{key}", "Values": [value]}
                for key, value in sorted(selector.tags.items())
            ]
            for asg in _describe_auto_scaling_groups(clients, filters=filters):
                consider(asg, (selector,))

    for name in selection.names:
        if name not in named:
            problems.append(
                topology.Problem(
                    topology.ProblemKind.AUTO_SCALING_GROUP_NOT_FOUND,
                    name,
                    f"Auto Scaling group {name} does not exist in this region",
                )
            )
    members = {**named, **selected}
    return [members[name] for name in sorted(members)]


def _describe_auto_scaling_groups(
    clients: aws.AwsClients,
    names: Sequence[str] = (),
    filters: Sequence[AsgFilterTypeDef] = (),
) -> Iterator[AutoScalingGroupTypeDef]:
    paginator = clients.autoscaling.get_paginator("describe_auto_scaling_groups")
    pages = paginator.paginate(
        AutoScalingGroupNames=list(names),
        Filters=list(filters),
        PaginationConfig={"PageSize": ASG_PAGE_SIZE},
    )
    for page in pages:
        yield from page.get("AutoScalingGroups", [])


# ---- What one ASG launches with ------------------------------------------------------------


@dataclass(frozen=True)
class _TemplateRef:
    """A launch template as an ASG names it (by id, by name or both) and the version it asks
    for: "$Latest", "$Default" or a number."""

    template_id: str | None
    template_name: str | None
    version: str

    @classmethod
    def from_specification(cls, specification: AsgTemplateSpecificationTypeDef) -> _TemplateRef:
        version = specification.get("Version") or DEFAULT
        if version.lower() == LATEST.lower():
            version = LATEST
        elif version.lower() == DEFAULT.lower():
            version = DEFAULT
        return cls(
            specification.get("LaunchTemplateId"), specification.get("LaunchTemplateName"), version
        )

    @property
    def template(self) -> str:
        return self.template_id or self.template_name or "(unnamed)"

    @property
    def sort_key(self) -> tuple[str, str]:
        return (self.template, self.version)

    def describe(self) -> str:
        return f"launch template {self.template} version {self.version}"


@dataclass(frozen=True)
class _LaunchData:
    """What a launch template version or a launch configuration says about SGs and role."""

    source: str
    group_ids: tuple[str, ...] = ()
    group_names: tuple[str, ...] = ()
    profile_name: str | None = None


@dataclass(frozen=True)
class _Absent:
    """A launch source that a successful answer (or a "not found" answer) says is missing."""

    reason: str


@dataclass
class _Resolution:
    """One ASG on its way to becoming a member: what it resolved to and what it could not."""

    asg: AutoScalingGroupTypeDef
    template_refs: list[_TemplateRef] = field(default_factory=list)
    configuration_name: str | None = None
    group_ids: dict[str, None] = field(default_factory=dict)
    group_names: dict[str, None] = field(default_factory=dict)
    profile_names: dict[str, None] = field(default_factory=dict)
    role_names: dict[str, None] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if "LaunchTemplate" in self.asg:
            self.template_refs.append(_TemplateRef.from_specification(self.asg["LaunchTemplate"]))
        policy = self.asg.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {})
        if "LaunchTemplateSpecification" in policy:
            self.template_refs.append(
                _TemplateRef.from_specification(policy["LaunchTemplateSpecification"])
            )
        for override in policy.get("Overrides", []):
            if "LaunchTemplateSpecification" in override:
                self.template_refs.append(
                    _TemplateRef.from_specification(override["LaunchTemplateSpecification"])
                )
        if any(ref.template_id is None and ref.template_name is None for ref in self.template_refs):
            self.unresolved.append("a launch template specification has neither id nor name")
        self.template_refs = list(
            dict.fromkeys(
                ref
                for ref in self.template_refs
                if ref.template_id is not None or ref.template_name is not None
            )
        )
        self.configuration_name = self.asg.get("LaunchConfigurationName") or None
        if not self.template_refs and self.configuration_name is None:
            self.unresolved.append("it names no launch template and no launch configuration")

    @property
    def name(self) -> str:
        return self.asg["AutoScalingGroupName"]

    @property
    def subnet_ids(self) -> list[str]:
        return [s.strip() for s in self.asg.get("VPCZoneIdentifier", "").split(",") if s.strip()]

    def apply_launch_data(
        self,
        templates: Mapping[_TemplateRef, _LaunchData | _Absent],
        configurations: Mapping[str, _LaunchData | _Absent],
    ) -> None:
        sources: list[_LaunchData | _Absent] = [templates[ref] for ref in self.template_refs]
        if self.configuration_name is not None:
            sources.append(configurations[self.configuration_name])
        for data in sources:
            if isinstance(data, _Absent):
                self.unresolved.append(data.reason)
                continue
            self.group_ids.update(dict.fromkeys(data.group_ids))
            self.group_names.update(dict.fromkeys(data.group_names))
            if not data.group_ids and not data.group_names:
                self.unresolved.append(f"{data.source} names no security group")
            if data.profile_name is None:
                self.unresolved.append(f"{data.source} names no instance profile")
            else:
                self.profile_names[data.profile_name] = None

    def problems(self) -> list[topology.Problem]:
        return [
            topology.Problem(
                topology.ProblemKind.UNRESOLVED,
                self.name,
                f"cannot tell the security groups and role of ASG {self.name}: {reason}",
            )
            for reason in dict.fromkeys(self.unresolved)
        ]

    def member(self, vpcs: Mapping[str, str]) -> topology.Member:
        group_ids = tuple(sorted(self.group_ids))
        member_vpcs = {vpcs[group_id] for group_id in group_ids if group_id in vpcs}
        return topology.Member(
            name=self.name,
            security_group_ids=group_ids,
            role_names=tuple(sorted(self.role_names)),
            vpc_id=member_vpcs.pop() if len(member_vpcs) == 1 else None,
        )


def _profile_name(profile: str) -> str:
    """An instance profile's name from its name or ARN (the last segment of the path)."""
    return profile.rsplit("/", 1)[-1] if profile.startswith("arn:") else profile


def _template_launch_data(ref: _TemplateRef, version: LaunchTemplateVersionTypeDef) -> _LaunchData:
    data = version.get("LaunchTemplateData", {})
    group_ids = list(data.get("SecurityGroupIds", []))
    for interface in data.get("NetworkInterfaces", []):
        group_ids.extend(interface.get("Groups", []))
    profile = data.get("IamInstanceProfile", {})
    profile_name = profile.get("Name") or (
        _profile_name(profile["Arn"]) if profile.get("Arn") else None
    )
    return _LaunchData(
        source=f"launch template {ref.template} version {version.get('VersionNumber', '?')} "
        f"({ref.version})",
        group_ids=tuple(dict.fromkeys(group_ids)),
        group_names=tuple(dict.fromkeys(data.get("SecurityGroups", []))),
        profile_name=profile_name,
    )


# ---- Launch templates ----------------------------------------------------------------------


@dataclass
class _VersionIndex:
    """Launch template versions from one or more answers, found by id or name and version."""

    by_number: dict[tuple[str, int], LaunchTemplateVersionTypeDef] = field(default_factory=dict)
    latest: dict[str, LaunchTemplateVersionTypeDef] = field(default_factory=dict)
    default: dict[str, LaunchTemplateVersionTypeDef] = field(default_factory=dict)
    ids_by_name: dict[str, str] = field(default_factory=dict)

    def add(self, version: LaunchTemplateVersionTypeDef, asked_latest: bool) -> None:
        """Index one version; `asked_latest`: the answer it came in was asked for $Latest."""
        template_id = version.get("LaunchTemplateId")
        number = version.get("VersionNumber")
        if template_id is None or number is None:
            return
        if "LaunchTemplateName" in version:
            self.ids_by_name[version["LaunchTemplateName"]] = template_id
        self.by_number[(template_id, number)] = version
        if version.get("DefaultVersion"):
            self.default[template_id] = version
        # $Latest is the highest number there is: in an answer asked for it, the highest
        # number of a template is its latest version.
        known = self.latest.get(template_id)
        if asked_latest and (known is None or known.get("VersionNumber", 0) < number):
            self.latest[template_id] = version

    def find(self, ref: _TemplateRef) -> LaunchTemplateVersionTypeDef | None:
        template_id = ref.template_id or self.ids_by_name.get(ref.template_name or "")
        if template_id is None:
            return None
        if ref.version == LATEST:
            return self.latest.get(template_id)
        if ref.version == DEFAULT:
            return self.default.get(template_id)
        try:
            return self.by_number.get((template_id, int(ref.version)))
        except ValueError:
            return None


def _read_template_versions(
    clients: aws.AwsClients, refs: set[_TemplateRef]
) -> dict[_TemplateRef, _LaunchData | _Absent]:
    """Each distinct template version once.

    When more than one template is asked for at $Latest (or at $Default, or pinned to a number
    not listed yet), one paginated call lists that version of every template in the account; a
    numbered version that happens to be listed is taken from there. Whatever is still missing
    is asked for per template, all its versions in one call, and only that call's "not found"
    answer makes a template absent: a listing that lags behind a new template never turns into
    a removal.
    """
    index = _VersionIndex()
    paginator = clients.ec2.get_paginator("describe_launch_template_versions")
    for selector in (LATEST, DEFAULT):
        # One listing per selector: each then holds one version per template, never two. It
        # also serves templates pinned to a number not found yet: a pinned version (EKS
        # managed node groups pin one) is most often its template's latest or default one.
        listable = {
            ref.template
            for ref in refs
            if ref.version == selector
            or (ref.version not in (LATEST, DEFAULT) and index.find(ref) is None)
        }
        if len(listable) > 1:
            for page in paginator.paginate(
                Versions=[selector], PaginationConfig={"PageSize": TEMPLATE_VERSION_PAGE_SIZE}
            ):
                for listed in page.get("LaunchTemplateVersions", []):
                    index.add(listed, asked_latest=selector == LATEST)

    found: dict[_TemplateRef, _LaunchData | _Absent] = {}
    pending: dict[str, list[_TemplateRef]] = defaultdict(list)
    for ref in sorted(refs, key=lambda ref: ref.sort_key):
        version = index.find(ref)
        if version is not None:
            found[ref] = _template_launch_data(ref, version)
        else:
            pending[ref.template].append(ref)

    for template_refs in pending.values():
        found.update(_read_one_template(clients, template_refs))
    return found


def _read_one_template(
    clients: aws.AwsClients, refs: Sequence[_TemplateRef]
) -> dict[_TemplateRef, _LaunchData | _Absent]:
    """The versions `refs` ask for of one template, in one call (one per version if one of
    them does not exist, so that the others still resolve)."""
    first = refs[0]
    versions = list(dict.fromkeys(ref.version for ref in refs))
    try:
        index = _describe_template(clients, first, versions)
    except botocore.exceptions.ClientError as error:
        code = aws.error_code(error)
        if code in _TEMPLATE_NOT_FOUND:
            return {ref: _Absent(f"launch template {ref.template} does not exist") for ref in refs}
        if code not in _TEMPLATE_VERSION_NOT_FOUND:
            raise
        if len(versions) == 1:
            return {
                ref: _Absent(
                    f"version {ref.version} of launch template {ref.template} does not exist"
                )
                for ref in refs
            }
        found: dict[_TemplateRef, _LaunchData | _Absent] = {}
        for ref in refs:
            found.update(_read_one_template(clients, [ref]))
        return found

    found = {}
    for ref in refs:
        version = index.find(ref)
        found[ref] = (
            _template_launch_data(ref, version)
            if version is not None
            else _Absent(f"{ref.describe()} is missing from the answer for it")
        )
    return found


def _describe_template(
    clients: aws.AwsClients, ref: _TemplateRef, versions: list[str]
) -> _VersionIndex:
    paginator = clients.ec2.get_paginator("describe_launch_template_versions")
    pages = (
        paginator.paginate(LaunchTemplateId=ref.template_id, Versions=versions)
        if ref.template_id is not None
        else paginator.paginate(LaunchTemplateName=ref.template_name or "", Versions=versions)
    )
    index = _VersionIndex()
    for page in pages:
        for version in page.get("LaunchTemplateVersions", []):
            index.add(version, asked_latest=LATEST in versions)
    return index


# ---- Launch configurations -----------------------------------------------------------------


def _read_launch_configurations(
    clients: aws.AwsClients, names: set[str]
) -> dict[str, _LaunchData | _Absent]:
    found: dict[str, _LaunchData | _Absent] = {}
    paginator = clients.autoscaling.get_paginator("describe_launch_configurations")
    for chunk in _chunks(sorted(names), LAUNCH_CONFIGURATION_NAMES_PER_CALL):
        for page in paginator.paginate(
            LaunchConfigurationNames=chunk,
            PaginationConfig={"PageSize": LAUNCH_CONFIGURATION_PAGE_SIZE},
        ):
            for configuration in page.get("LaunchConfigurations", []):
                name = configuration["LaunchConfigurationName"]
                # A group name cannot start with "sg-", so the prefix tells ids from names.
                groups = configuration.get("SecurityGroups", [])
                profile = configuration.get("IamInstanceProfile")
                found[name] = _LaunchData(
                    source=f"launch configuration {name}",
                    group_ids=tuple(g for g in groups if g.startswith("sg-")),
                    group_names=tuple(g for g in groups if not g.startswith("sg-")),
                    profile_name=_profile_name(profile) if profile else None,
                )
    for name in names - found.keys():
        found[name] = _Absent(f"launch configuration {name} does not exist")
    return found


# ---- Security groups -----------------------------------------------------------------------


def _resolve_group_names(
    clients: aws.AwsClients,
    resolutions: Sequence[_Resolution],
    vpcs: dict[str, str],
    problems: list[topology.Problem],
) -> None:
    """Turn SG names from launch data into ids; a name found in several VPCs is taken from the
    ASG's VPC (that of its subnets, or the default VPC when it has none)."""
    names = sorted({name for r in resolutions for name in r.group_names})
    if not names:
        return
    candidates: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for group in _describe_security_groups(clients, "group-name", names):
        if "GroupName" in group and "VpcId" in group:
            candidates[group["GroupName"]].append((group["GroupId"], group["VpcId"]))

    ambiguous = [
        r for r in resolutions if any(len(candidates.get(n, ())) > 1 for n in r.group_names)
    ]
    asg_vpcs = _auto_scaling_group_vpcs(clients, ambiguous)
    for resolution in resolutions:
        for name in resolution.group_names:
            choices = candidates.get(name, [])
            if len(choices) > 1:
                vpc_id = asg_vpcs.get(resolution.name)
                choices = [choice for choice in choices if choice[1] == vpc_id]
            if len(choices) == 1:
                group_id, vpc_id = choices[0]
                resolution.group_ids[group_id] = None
                vpcs[group_id] = vpc_id
            elif name in candidates:
                resolution.unresolved.append(
                    f"security group name {name!r} exists in several VPCs and none of them is "
                    "the ASG's"
                )
            else:
                problems.append(
                    topology.Problem(
                        topology.ProblemKind.SECURITY_GROUP_NOT_FOUND,
                        name,
                        f"security group named {name!r} (used by ASG {resolution.name}) "
                        "does not exist",
                    )
                )


def _auto_scaling_group_vpcs(
    clients: aws.AwsClients, resolutions: Sequence[_Resolution]
) -> dict[str, str]:
    """ASG name → VPC of its subnets; ASGs without subnets launch in the default VPC."""
    if not resolutions:
        return {}
    subnet_ids = sorted({s for r in resolutions for s in r.subnet_ids})
    subnet_vpcs: dict[str, str] = {}
    paginator = clients.ec2.get_paginator("describe_subnets")
    for chunk in _chunks(subnet_ids, FILTER_VALUES_PER_CALL):
        for page in paginator.paginate(
            Filters=[{"Name": "subnet-id", "Values": chunk}],
            PaginationConfig={"PageSize": SUBNET_PAGE_SIZE},
        ):
            for subnet in page.get("Subnets", []):
                if "SubnetId" in subnet and "VpcId" in subnet:
                    subnet_vpcs[subnet["SubnetId"]] = subnet["VpcId"]
    default_vpc: str | None = None
    if any(not r.subnet_ids for r in resolutions):
        answer = clients.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])
        default_vpc = next((v["VpcId"] for v in answer.get("Vpcs", []) if "VpcId" in v), None)
    found: dict[str, str] = {}
    for resolution in resolutions:
        if not resolution.subnet_ids:
            if default_vpc is not None:
                found[resolution.name] = default_vpc
            continue
        vpc_ids = {subnet_vpcs[s] for s in resolution.subnet_ids if s in subnet_vpcs}
        if len(vpc_ids) == 1:
            found[resolution.name] = vpc_ids.pop()
    return found


def _read_security_group_vpcs(clients: aws.AwsClients, group_ids: Sequence[str]) -> dict[str, str]:
    """SG id → VPC for the SGs that exist. A `group-id` filter, unlike `GroupIds`, answers for
    the SGs that exist instead of failing the whole call when one is missing."""
    return {
        group["GroupId"]: group["VpcId"]
        for group in _describe_security_groups(clients, "group-id", sorted(set(group_ids)))
        if "VpcId" in group
    }


def _describe_security_groups(
    clients: aws.AwsClients, filter_name: str, values: Sequence[str]
) -> Iterator[SecurityGroupTypeDef]:
    paginator = clients.ec2.get_paginator("describe_security_groups")
    for chunk in _chunks(values, FILTER_VALUES_PER_CALL):
        for page in paginator.paginate(
            Filters=[{"Name": filter_name, "Values": chunk}],
            PaginationConfig={"PageSize": SECURITY_GROUP_PAGE_SIZE},
        ):
            yield from page.get("SecurityGroups", [])


# ---- Rules ---------------------------------------------------------------------------------


def read_ingress_rules(
    clients: aws.AwsClients, group_ids: Sequence[str]
) -> dict[str, topology.IngressRule]:
    """Every inbound rule of the groups, by rule id (apply re-reads a group after a race)."""
    rules: dict[str, topology.IngressRule] = {}
    for chunk in _chunks(group_ids, FILTER_VALUES_PER_CALL):
        rules.update(_describe_ingress_rules(clients, [{"Name": "group-id", "Values": chunk}]))
    return rules


def read_rules(clients: aws.AwsClients, rule_ids: Sequence[str]) -> dict[str, topology.IngressRule]:
    """The inbound rules among `rule_ids` that exist now, by id (apply re-reads what it just
    changed). A filter, unlike `SecurityGroupRuleIds`, answers for the rules that exist instead
    of failing the whole call when one is gone."""
    found: dict[str, topology.IngressRule] = {}
    for chunk in _chunks(sorted(set(rule_ids)), FILTER_VALUES_PER_CALL):
        found.update(
            _describe_ingress_rules(clients, [{"Name": "security-group-rule-id", "Values": chunk}])
        )
    return found


def _read_owned_rules(
    clients: aws.AwsClients, owner: ownership.Owner
) -> dict[str, topology.IngressRule]:
    """Rules carrying this mesh's tag on any SG, including SGs that have left the mesh."""
    return _describe_ingress_rules(
        clients, [{"Name": f"tag:{owner.tag_key}", "Values": list(_OWNED_RULE_VALUES)}]
    )


def _describe_ingress_rules(
    clients: aws.AwsClients, filters: list[FilterTypeDef]
) -> dict[str, topology.IngressRule]:
    rules: dict[str, topology.IngressRule] = {}
    paginator = clients.ec2.get_paginator("describe_security_group_rules")
    for page in paginator.paginate(
        Filters=filters, PaginationConfig={"PageSize": SECURITY_GROUP_RULE_PAGE_SIZE}
    ):
        for rule in page.get("SecurityGroupRules", []):
            if not rule.get("IsEgress") and "SecurityGroupRuleId" in rule and "GroupId" in rule:
                rules[rule["SecurityGroupRuleId"]] = _ingress_rule(rule)
    return rules


def _ingress_rule(rule: SecurityGroupRuleTypeDef) -> topology.IngressRule:
    source = rule.get("ReferencedGroupInfo", {}).get("GroupId")
    permission = None
    if source:
        protocol = str(rule.get("IpProtocol", topology.ALL_PROTOCOLS)).lower()
        protocol = _PROTOCOL_NAMES.get(protocol, protocol)
        if protocol == topology.ALL_PROTOCOLS:
            from_port = to_port = -1
        else:
            from_port = rule.get("FromPort", -1)
            to_port = rule.get("ToPort", -1)
        permission = topology.Permission(source, protocol, from_port, to_port)
    return topology.IngressRule(
        rule_id=rule["SecurityGroupRuleId"],
        group_id=rule["GroupId"],
        permission=permission,
        tags={tag["Key"]: tag.get("Value", "") for tag in rule.get("Tags", []) if "Key" in tag},
        description=rule.get("Description", ""),
    )


# ---- IAM -----------------------------------------------------------------------------------


def _read_roles(
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


def _resolve_profiles(
    clients: aws.AwsClients,
    resolutions: Sequence[_Resolution],
    roles: Mapping[str, topology.RoleState],
    roles_by_profile: Mapping[str, list[str]],
) -> None:
    """Instance profiles → roles. A profile no role listed is asked for by name: only
    NoSuchEntity makes it absent (the listing may lag behind a new profile)."""
    profile_roles = dict(roles_by_profile)
    needed = sorted({p for r in resolutions for p in r.profile_names} - profile_roles.keys())
    absent: dict[str, str] = {}
    for name in needed:
        try:
            profile = clients.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        except botocore.exceptions.ClientError as error:
            if aws.error_code(error) not in _IAM_NOT_FOUND:
                raise
            absent[name] = f"instance profile {name} does not exist"
            continue
        profile_roles[name] = [role["RoleName"] for role in profile.get("Roles", [])]

    for resolution in resolutions:
        for profile_name in resolution.profile_names:
            if profile_name in absent:
                resolution.unresolved.append(absent[profile_name])
                continue
            role_names = profile_roles.get(profile_name, [])
            if not role_names:
                resolution.unresolved.append(f"instance profile {profile_name} holds no role")
            for role_name in role_names:
                resolution.role_names[role_name] = None
                if role_name not in roles:
                    resolution.unresolved.append(
                        f"role {role_name} of instance profile {profile_name} was not listed by IAM"
                    )


# ---- Helpers -------------------------------------------------------------------------------


def _chunks(values: Sequence[_T], size: int) -> Iterator[list[_T]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def _sorted_problems(problems: Iterable[topology.Problem]) -> tuple[topology.Problem, ...]:
    unique = dict.fromkeys(problems)
    return tuple(sorted(unique, key=lambda p: (p.kind.value, p.subject, p.message)))

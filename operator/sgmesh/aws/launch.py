"""Launch data: which ASGs are members, and what each one launches with.

It lists the member ASGs (by name and by tag selector), reads the launch template versions
(`$Latest`, `$Default` or a number; mixed instances policies and their overrides) and launch
configurations they name, and returns for every ASG an `AsgLaunch`: the security group ids
and names and the instance profiles its launch data names, and why any of it could not be
told. Security groups and roles are resolved further by `sgmesh.aws.security_groups` and
`sgmesh.aws.roles`.

It must never write to AWS, and never conclude that something is gone from an error: only a
successful answer that lacks a thing, or a "not found" answer to a request for exactly that
thing, makes it absent. It keeps only what it needs of a launch template version: user data
and the rest of the launch data are dropped as soon as a version is read, never logged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import botocore.exceptions

from sgmesh.api import models
from sgmesh.aws import client, errors
from sgmesh.engine import chunking, topology

if TYPE_CHECKING:
    from mypy_boto3_autoscaling.type_defs import AutoScalingGroupTypeDef
    from mypy_boto3_autoscaling.type_defs import FilterTypeDef as AsgFilterTypeDef
    from mypy_boto3_autoscaling.type_defs import (
        LaunchTemplateSpecificationTypeDef as AsgTemplateSpecificationTypeDef,
    )
    from mypy_boto3_ec2.type_defs import LaunchTemplateVersionTypeDef

__all__ = ["AsgLaunch", "read_auto_scaling_groups", "read_launches"]

# API limits that shape the batches.
ASG_PAGE_SIZE = 100  # DescribeAutoScalingGroups: MaxRecords ≤ 100, and as many names per call
LAUNCH_CONFIGURATION_NAMES_PER_CALL = 50
LAUNCH_CONFIGURATION_PAGE_SIZE = 100
TEMPLATE_VERSION_PAGE_SIZE = 200

LATEST = "$Latest"
DEFAULT = "$Default"

# Answers that positively say "the thing you named does not exist".


@dataclass(frozen=True)
class AsgLaunch:
    """One member ASG and what its launch data names; `unresolved` says what could not be
    told (each reason makes the ASG an unresolved member, which holds every removal)."""

    name: str
    subnet_ids: tuple[str, ...] = ()
    group_ids: tuple[str, ...] = ()
    group_names: tuple[str, ...] = ()
    # Existing ENIs its launch template attaches: their security groups are the instances'.
    network_interface_ids: tuple[str, ...] = ()
    # A launch source names no SG at all: EC2 launches such instances in the default SG of
    # the VPC of the ASG's subnets.
    uses_default_group: bool = False
    profile_names: tuple[str, ...] = ()
    # Launch sources that name no instance profile: a problem only when roles matter.
    sources_without_profile: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()


def read_launches(
    clients: client.AwsClients, asgs: Sequence[AutoScalingGroupTypeDef]
) -> list[AsgLaunch]:
    """What each ASG launches with, every template version and configuration read once."""
    resolutions = [_Resolution(asg) for asg in asgs]
    templates = _read_template_versions(
        clients, {ref for resolution in resolutions for ref in resolution.template_refs}
    )
    configurations = _read_launch_configurations(
        clients, {r.configuration_name for r in resolutions if r.configuration_name is not None}
    )
    return [resolution.launch(templates, configurations) for resolution in resolutions]


# ---- Auto Scaling groups -------------------------------------------------------------------


def read_auto_scaling_groups(
    clients: client.AwsClients, selection: models.AutoScalingGroups
) -> tuple[list[AutoScalingGroupTypeDef], list[topology.Problem]]:
    """The member ASGs, sorted by name, and a problem for each listed name that does not
    exist."""
    problems: list[topology.Problem] = []
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
        for names in chunking.chunks(selection.names, ASG_PAGE_SIZE):
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
    return [members[name] for name in sorted(members)], problems


def _describe_auto_scaling_groups(
    clients: client.AwsClients,
    names: Sequence[str] = (),
    filters: Sequence[AsgFilterTypeDef] = (),
) -> Iterator[AutoScalingGroupTypeDef]:
    paginator = clients.autoscaling.get_paginator("describe_auto_scaling_groups")
    pages = paginator.paginate(
        AutoScalingGroupNames=list(names),
        Filters=list(filters),
        # Membership needs no instances: without them a page of 100 ASGs stays small.
        IncludeInstances=False,
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
    network_interface_ids: tuple[str, ...] = ()
    profile_name: str | None = None


@dataclass(frozen=True)
class _Absent:
    """A launch source that a successful answer (or a "not found" answer) says is missing."""

    reason: str


class _Resolution:
    """One ASG on its way to an `AsgLaunch`: the launch sources it names, read in bulk for all
    ASGs before `launch` combines them."""

    def __init__(self, asg: AutoScalingGroupTypeDef) -> None:
        self.name = asg["AutoScalingGroupName"]
        self.subnet_ids = tuple(
            s.strip() for s in asg.get("VPCZoneIdentifier", "").split(",") if s.strip()
        )
        self.unresolved: list[str] = []
        refs: list[_TemplateRef] = []
        if "LaunchTemplate" in asg:
            refs.append(_TemplateRef.from_specification(asg["LaunchTemplate"]))
        policy = asg.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {})
        if "LaunchTemplateSpecification" in policy:
            refs.append(_TemplateRef.from_specification(policy["LaunchTemplateSpecification"]))
        for override in policy.get("Overrides", []):
            if "LaunchTemplateSpecification" in override:
                refs.append(
                    _TemplateRef.from_specification(override["LaunchTemplateSpecification"])
                )
        if any(ref.template_id is None and ref.template_name is None for ref in refs):
            self.unresolved.append("a launch template specification has neither id nor name")
        self.template_refs = list(
            dict.fromkeys(
                ref for ref in refs if ref.template_id is not None or ref.template_name is not None
            )
        )
        self.configuration_name = asg.get("LaunchConfigurationName") or None
        if not self.template_refs and self.configuration_name is None:
            self.unresolved.append("it names no launch template and no launch configuration")

    def launch(
        self,
        templates: Mapping[_TemplateRef, _LaunchData | _Absent],
        configurations: Mapping[str, _LaunchData | _Absent],
    ) -> AsgLaunch:
        sources: list[_LaunchData | _Absent] = [templates[ref] for ref in self.template_refs]
        if self.configuration_name is not None:
            sources.append(configurations[self.configuration_name])
        group_ids: dict[str, None] = {}
        group_names: dict[str, None] = {}
        interface_ids: dict[str, None] = {}
        profile_names: dict[str, None] = {}
        uses_default_group = False
        without_profile: list[str] = []
        unresolved = list(self.unresolved)
        for data in sources:
            if isinstance(data, _Absent):
                unresolved.append(data.reason)
                continue
            group_ids.update(dict.fromkeys(data.group_ids))
            group_names.update(dict.fromkeys(data.group_names))
            interface_ids.update(dict.fromkeys(data.network_interface_ids))
            if not (data.group_ids or data.group_names or data.network_interface_ids):
                uses_default_group = True
            if data.profile_name is None:
                without_profile.append(data.source)
            else:
                profile_names[data.profile_name] = None
        return AsgLaunch(
            name=self.name,
            subnet_ids=self.subnet_ids,
            group_ids=tuple(group_ids),
            group_names=tuple(group_names),
            network_interface_ids=tuple(interface_ids),
            uses_default_group=uses_default_group,
            profile_names=tuple(profile_names),
            sources_without_profile=tuple(dict.fromkeys(without_profile)),
            unresolved=tuple(dict.fromkeys(unresolved)),
        )


def _template_launch_data(ref: _TemplateRef, version: _Version) -> _LaunchData:
    return _LaunchData(
        source=f"launch template {ref.template} version {version.number} ({ref.version})",
        group_ids=version.group_ids,
        group_names=version.group_names,
        network_interface_ids=version.network_interface_ids,
        profile_name=version.profile_name,
    )


# ---- Launch templates ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Version:
    """What discovery needs of a launch template version. It is taken out of the answer as
    soon as the version is read, so user data and the rest of the launch data are never kept
    (a listing of every template of an account can carry 16 KB of user data per version)."""

    template_id: str
    template_name: str | None
    number: int
    is_default: bool
    group_ids: tuple[str, ...]
    group_names: tuple[str, ...]
    network_interface_ids: tuple[str, ...]
    profile_name: str | None

    @classmethod
    def of(cls, version: LaunchTemplateVersionTypeDef) -> _Version | None:
        template_id = version.get("LaunchTemplateId")
        number = version.get("VersionNumber")
        if template_id is None or number is None:
            return None
        data = version.get("LaunchTemplateData", {})
        group_ids = list(data.get("SecurityGroupIds", []))
        interface_ids: list[str] = []
        for interface in data.get("NetworkInterfaces", []):
            group_ids.extend(interface.get("Groups", []))
            # An existing ENI brings its own security groups: the instance gets the ENI's.
            if interface.get("NetworkInterfaceId"):
                interface_ids.append(interface["NetworkInterfaceId"])
        profile = data.get("IamInstanceProfile", {})
        return cls(
            template_id=template_id,
            template_name=version.get("LaunchTemplateName"),
            number=number,
            is_default=bool(version.get("DefaultVersion")),
            group_ids=tuple(dict.fromkeys(group_ids)),
            group_names=tuple(dict.fromkeys(data.get("SecurityGroups", []))),
            network_interface_ids=tuple(dict.fromkeys(interface_ids)),
            profile_name=profile.get("Name")
            or (models.iam_name(profile["Arn"]) if profile.get("Arn") else None),
        )


@dataclass
class _VersionIndex:
    """Launch template versions from one or more answers, found by id or name and version."""

    by_number: dict[tuple[str, int], _Version] = field(default_factory=dict)
    latest: dict[str, _Version] = field(default_factory=dict)
    default: dict[str, _Version] = field(default_factory=dict)
    ids_by_name: dict[str, str] = field(default_factory=dict)

    def add(self, answer: LaunchTemplateVersionTypeDef, asked_latest: bool) -> None:
        """Index one version; `asked_latest`: the answer it came in was asked for $Latest."""
        version = _Version.of(answer)
        if version is None:
            return
        template_id, number = version.template_id, version.number
        if version.template_name is not None:
            self.ids_by_name[version.template_name] = template_id
        self.by_number[(template_id, number)] = version
        if version.is_default:
            self.default[template_id] = version
        # $Latest is the highest number there is: in an answer asked for it, the highest
        # number of a template is its latest version.
        known = self.latest.get(template_id)
        if asked_latest and (known is None or known.number < number):
            self.latest[template_id] = version

    def find(self, ref: _TemplateRef) -> _Version | None:
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
    clients: client.AwsClients, refs: set[_TemplateRef]
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
    clients: client.AwsClients, refs: Sequence[_TemplateRef]
) -> dict[_TemplateRef, _LaunchData | _Absent]:
    """The versions `refs` ask for of one template, in one call (one per version if one of
    them does not exist, so that the others still resolve)."""
    first = refs[0]
    versions = list(dict.fromkeys(ref.version for ref in refs))
    try:
        index = _describe_template(clients, first, versions)
    except botocore.exceptions.ClientError as error:
        if errors.answered(error, errors.LAUNCH_TEMPLATE_ABSENT):
            return {ref: _Absent(f"launch template {ref.template} does not exist") for ref in refs}
        if not errors.answered(error, errors.LAUNCH_TEMPLATE_VERSION_ABSENT):
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
    clients: client.AwsClients, ref: _TemplateRef, versions: list[str]
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
    clients: client.AwsClients, names: set[str]
) -> dict[str, _LaunchData | _Absent]:
    found: dict[str, _LaunchData | _Absent] = {}
    paginator = clients.autoscaling.get_paginator("describe_launch_configurations")
    for chunk in chunking.chunks(sorted(names), LAUNCH_CONFIGURATION_NAMES_PER_CALL):
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
                    profile_name=models.iam_name(profile) if profile else None,
                )
    for name in names - found.keys():
        found[name] = _Absent(f"launch configuration {name} does not exist")
    return found

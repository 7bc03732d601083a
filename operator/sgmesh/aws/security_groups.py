"""Security groups and their inbound rules, as discovery and apply read them.

It turns security group names into ids (in the VPC of the ASG that names them), finds the SGs
EC2 gives instances whose launch data names none (the default SG of the VPC) or attaches an
existing ENI (that ENI's SGs), finds the VPC of every member SG, and reads inbound rules: every
rule of the member SGs, and every rule this mesh owns on any SG. For the quota it reads the
size of the prefix lists those rules reference and the account's applied rules-per-SG quota
(Service Quotas). `apply` re-reads a group's rules through `read_ingress_rules` after a race
with another writer, and imports nothing else of discovery.

It must never write to AWS, and never conclude that something is gone from an error: an SG is
absent only when a successful answer to a filter on it lacks it. Every other error propagates
for the caller to classify with `errors.classify`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import botocore.exceptions

from sgmesh.api import models
from sgmesh.aws import client, errors
from sgmesh.engine import chunking, ingress, ownership, topology

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import (
        FilterTypeDef,
        ManagedPrefixListTypeDef,
        SecurityGroupTypeDef,
    )

__all__ = [
    "GroupFacts",
    "GroupNames",
    "auto_scaling_group_vpcs",
    "groups_with_rule_descriptions",
    "read_default_groups",
    "read_ingress_rules",
    "read_network_interface_groups",
    "read_owned_rules",
    "read_prefix_lists",
    "read_rules",
    "read_rules_quota",
    "read_security_groups",
    "read_selected_groups",
    "resolve_group_names",
]

FILTER_VALUES_PER_CALL = 200  # EC2 filter values per request
SECURITY_GROUP_PAGE_SIZE = 1000
SECURITY_GROUP_RULE_PAGE_SIZE = 1000
SUBNET_PAGE_SIZE = 1000
NETWORK_INTERFACE_PAGE_SIZE = 1000
PREFIX_LIST_PAGE_SIZE = 100
# Service Quotas: "Inbound or outbound rules per security group" of Amazon VPC.
RULES_QUOTA_SERVICE = "vpc"
RULES_QUOTA_CODE = "L-0EA8095F"
DEFAULT_GROUP_NAME = "default"  # every VPC has one, and it cannot be deleted or renamed

# DescribeSecurityGroupRules documents `tag:<key>` (not `tag-key`) among its filters; the
# mesh writes its ownership tag with this value on every rule it owns.
_OWNED_RULE_VALUES = (ownership.OWNED,)


@dataclass(frozen=True)
class GroupNames:
    """Security group names of launch data turned into ids.

    - `ids_by_asg`: ASG name → the ids its SG names resolved to;
    - `vpcs`: SG id → VPC, for every SG resolved;
    - `unresolved`: ASG name → why one of its names cannot be told (a name in several VPCs,
      none of them the ASG's);
    - `problems`: names that exist nowhere.
    """

    ids_by_asg: Mapping[str, tuple[str, ...]]
    vpcs: Mapping[str, str]
    unresolved: Mapping[str, tuple[str, ...]]
    problems: tuple[topology.Problem, ...]


def resolve_group_names(
    clients: client.AwsClients,
    names_by_asg: Mapping[str, Sequence[str]],
    subnets_by_asg: Mapping[str, Sequence[str]],
) -> GroupNames:
    """Turn SG names from launch data into ids; a name found in several VPCs is taken from the
    ASG's VPC (that of its subnets, or the default VPC when it has none)."""
    names = sorted({name for wanted in names_by_asg.values() for name in wanted})
    if not names:
        return GroupNames({}, {}, {}, ())
    candidates: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for group in _describe_security_groups(clients, "group-name", names):
        if "GroupName" in group and "VpcId" in group:
            candidates[group["GroupName"]].append((group["GroupId"], group["VpcId"]))

    ambiguous = {
        asg: subnets_by_asg.get(asg, ())
        for asg, wanted in names_by_asg.items()
        if any(len(candidates.get(name, ())) > 1 for name in wanted)
    }
    asg_vpcs = auto_scaling_group_vpcs(clients, ambiguous)
    ids_by_asg: dict[str, dict[str, None]] = defaultdict(dict)
    vpcs: dict[str, str] = {}
    unresolved: dict[str, list[str]] = defaultdict(list)
    problems: list[topology.Problem] = []
    for asg, wanted in names_by_asg.items():
        for name in wanted:
            choices = candidates.get(name, [])
            if len(choices) > 1:
                vpc_id = asg_vpcs.get(asg)
                choices = [choice for choice in choices if choice[1] == vpc_id]
            if len(choices) == 1:
                group_id, vpc_id = choices[0]
                ids_by_asg[asg][group_id] = None
                vpcs[group_id] = vpc_id
            elif name in candidates:
                unresolved[asg].append(
                    f"security group name {name!r} exists in several VPCs and none of them is "
                    "the ASG's"
                )
            else:
                problems.append(
                    topology.Problem(
                        topology.ProblemKind.SECURITY_GROUP_NOT_FOUND,
                        name,
                        f"security group named {name!r} (used by ASG {asg}) does not exist",
                    )
                )
    return GroupNames(
        ids_by_asg={asg: tuple(ids) for asg, ids in ids_by_asg.items()},
        vpcs=vpcs,
        unresolved={asg: tuple(reasons) for asg, reasons in unresolved.items()},
        problems=tuple(problems),
    )


def auto_scaling_group_vpcs(
    clients: client.AwsClients, subnets_by_asg: Mapping[str, Sequence[str]]
) -> dict[str, str]:
    """ASG name → VPC of its subnets; ASGs without subnets launch in the default VPC."""
    if not subnets_by_asg:
        return {}
    subnet_ids = sorted({s for subnets in subnets_by_asg.values() for s in subnets})
    subnet_vpcs: dict[str, str] = {}
    paginator = clients.ec2.get_paginator("describe_subnets")
    for chunk in chunking.chunks(subnet_ids, FILTER_VALUES_PER_CALL):
        for page in paginator.paginate(
            Filters=[{"Name": "subnet-id", "Values": chunk}],
            PaginationConfig={"PageSize": SUBNET_PAGE_SIZE},
        ):
            for subnet in page.get("Subnets", []):
                if "SubnetId" in subnet and "VpcId" in subnet:
                    subnet_vpcs[subnet["SubnetId"]] = subnet["VpcId"]
    default_vpc: str | None = None
    if any(not subnets for subnets in subnets_by_asg.values()):
        answer = clients.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])
        default_vpc = next((v["VpcId"] for v in answer.get("Vpcs", []) if "VpcId" in v), None)
    found: dict[str, str] = {}
    for asg, subnets in subnets_by_asg.items():
        if not subnets:
            if default_vpc is not None:
                found[asg] = default_vpc
            continue
        vpc_ids = {subnet_vpcs[s] for s in subnets if s in subnet_vpcs}
        if len(vpc_ids) == 1:
            found[asg] = vpc_ids.pop()
    return found


@dataclass(frozen=True)
class GroupFacts:
    """What the mesh's boundary asks of a security group: its VPC and its tags."""

    vpc_id: str
    tags: Mapping[str, str]

    @classmethod
    def of(cls, group: SecurityGroupTypeDef) -> GroupFacts:
        tags = {tag["Key"]: tag.get("Value", "") for tag in group.get("Tags", []) if "Key" in tag}
        return cls(group.get("VpcId", ""), tags)


def read_security_groups(
    clients: client.AwsClients, group_ids: Sequence[str]
) -> dict[str, GroupFacts]:
    """SG id → its VPC and tags, for the SGs that exist. A `group-id` filter, unlike
    `GroupIds`, answers for the SGs that exist instead of failing the whole call when one is
    missing."""
    return {
        group["GroupId"]: GroupFacts.of(group)
        for group in _describe_security_groups(clients, "group-id", sorted(set(group_ids)))
        if "VpcId" in group
    }


def read_selected_groups(
    clients: client.AwsClients,
    selectors: Sequence[models.SecurityGroupSelector],
    vpc_id: str | None = None,
) -> dict[str, GroupFacts]:
    """SG id → its VPC and tags, for every SG that matches any selector (all of its tags;
    "*": the key is present), filtered by EC2 — inside `vpc_id` only, when given (the
    cluster's VPC: a selector never looks beyond it)."""
    found: dict[str, GroupFacts] = {}
    paginator = clients.ec2.get_paginator("describe_security_groups")
    within: list[FilterTypeDef] = [{"Name": "vpc-id", "Values": [vpc_id]}] if vpc_id else []
    for selector in selectors:
        filters: list[FilterTypeDef] = [
            {"Name": "tag-key", "Values": [key]}
            if value == "*"
            else {"Name": f"tag:{key}", "Values": [value]}
            for key, value in sorted(selector.tags.items())
        ]
        for page in paginator.paginate(
            Filters=[*filters, *within], PaginationConfig={"PageSize": SECURITY_GROUP_PAGE_SIZE}
        ):
            for group in page.get("SecurityGroups", []):
                if "GroupId" in group and "VpcId" in group:
                    found[group["GroupId"]] = GroupFacts.of(group)
    return dict(sorted(found.items()))


def groups_with_rule_descriptions(
    clients: client.AwsClients, vpc_id: str, described: Callable[[str], bool]
) -> list[str]:
    """The SGs of `vpc_id` with an inbound rule referencing an SG whose description
    `described` accepts (the orphan sweep's first read: EC2 filters rules by no description)."""
    return sorted(
        group["GroupId"]
        for group in _describe_security_groups(clients, "vpc-id", [vpc_id])
        if "GroupId" in group
        and any(
            described(pair.get("Description", ""))
            for permission in group.get("IpPermissions", [])
            for pair in permission.get("UserIdGroupPairs", [])
        )
    )


def read_default_groups(clients: client.AwsClients, vpc_ids: Sequence[str]) -> dict[str, str]:
    """VPC id → id of its default SG, where an instance launched without an SG runs."""
    return {
        group["VpcId"]: group["GroupId"]
        for group in _describe_security_groups(
            clients,
            "vpc-id",
            sorted(set(vpc_ids)),
            also=[{"Name": "group-name", "Values": [DEFAULT_GROUP_NAME]}],
        )
        if "VpcId" in group
    }


def read_network_interface_groups(
    clients: client.AwsClients, interface_ids: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """ENI id → its SG ids, for the ENIs that exist (a filter answers for those that exist
    instead of failing the whole call when one is missing)."""
    found: dict[str, tuple[str, ...]] = {}
    paginator = clients.ec2.get_paginator("describe_network_interfaces")
    for chunk in chunking.chunks(sorted(set(interface_ids)), FILTER_VALUES_PER_CALL):
        for page in paginator.paginate(
            Filters=[{"Name": "network-interface-id", "Values": chunk}],
            PaginationConfig={"PageSize": NETWORK_INTERFACE_PAGE_SIZE},
        ):
            for interface in page.get("NetworkInterfaces", []):
                if "NetworkInterfaceId" in interface:
                    found[interface["NetworkInterfaceId"]] = tuple(
                        group["GroupId"]
                        for group in interface.get("Groups", [])
                        if "GroupId" in group
                    )
    return found


def _describe_security_groups(
    clients: client.AwsClients,
    filter_name: str,
    values: Sequence[str],
    also: Sequence[FilterTypeDef] = (),
) -> Iterator[SecurityGroupTypeDef]:
    paginator = clients.ec2.get_paginator("describe_security_groups")
    for chunk in chunking.chunks(values, FILTER_VALUES_PER_CALL):
        for page in paginator.paginate(
            Filters=[{"Name": filter_name, "Values": chunk}, *also],
            PaginationConfig={"PageSize": SECURITY_GROUP_PAGE_SIZE},
        ):
            yield from page.get("SecurityGroups", [])


# ---- Rules ---------------------------------------------------------------------------------


def read_ingress_rules(
    clients: client.AwsClients, group_ids: Sequence[str]
) -> dict[str, ingress.IngressRule]:
    """Every inbound rule of the groups, by rule id (apply re-reads a group after a race)."""
    rules: dict[str, ingress.IngressRule] = {}
    for chunk in chunking.chunks(group_ids, FILTER_VALUES_PER_CALL):
        rules.update(_describe_ingress_rules(clients, [{"Name": "group-id", "Values": chunk}]))
    return rules


def read_rules(
    clients: client.AwsClients, rule_ids: Sequence[str]
) -> dict[str, ingress.IngressRule]:
    """The inbound rules among `rule_ids` that exist now, by id (apply re-reads what it just
    changed). A filter, unlike `SecurityGroupRuleIds`, answers for the rules that exist instead
    of failing the whole call when one is gone."""
    found: dict[str, ingress.IngressRule] = {}
    for chunk in chunking.chunks(sorted(set(rule_ids)), FILTER_VALUES_PER_CALL):
        found.update(
            _describe_ingress_rules(clients, [{"Name": "security-group-rule-id", "Values": chunk}])
        )
    return found


def read_owned_rules(
    clients: client.AwsClients, owner: ownership.Owner
) -> dict[str, ingress.IngressRule]:
    """Rules carrying this mesh's tag on any SG, including SGs that have left the mesh."""
    return _describe_ingress_rules(
        clients, [{"Name": f"tag:{owner.tag_key}", "Values": list(_OWNED_RULE_VALUES)}]
    )


def _describe_ingress_rules(
    clients: client.AwsClients, filters: list[FilterTypeDef]
) -> dict[str, ingress.IngressRule]:
    rules: dict[str, ingress.IngressRule] = {}
    paginator = clients.ec2.get_paginator("describe_security_group_rules")
    for page in paginator.paginate(
        Filters=filters, PaginationConfig={"PageSize": SECURITY_GROUP_RULE_PAGE_SIZE}
    ):
        for rule in page.get("SecurityGroupRules", []):
            if not rule.get("IsEgress") and "SecurityGroupRuleId" in rule and "GroupId" in rule:
                rules[rule["SecurityGroupRuleId"]] = ingress.parse(rule)
    return rules


def read_prefix_lists(
    clients: client.AwsClients, prefix_list_ids: Sequence[str]
) -> dict[str, ingress.PrefixList]:
    """The managed prefix lists (customer- or AWS-managed) that exist among `prefix_list_ids`,
    with their maximum number of entries, which is what a rule referencing one counts as."""
    found: dict[str, ingress.PrefixList] = {}
    paginator = clients.ec2.get_paginator("describe_managed_prefix_lists")
    for chunk in chunking.chunks(sorted(set(prefix_list_ids)), FILTER_VALUES_PER_CALL):
        for page in paginator.paginate(
            Filters=[{"Name": "prefix-list-id", "Values": chunk}],
            PaginationConfig={"PageSize": PREFIX_LIST_PAGE_SIZE},
        ):
            for listed in page.get("PrefixLists", []):
                if "PrefixListId" in listed:
                    found[listed["PrefixListId"]] = prefix_list(listed)
    return found


def prefix_list(listed: ManagedPrefixListTypeDef) -> ingress.PrefixList:
    """A DescribeManagedPrefixLists entry: its size, address family and name, from which the
    quota count tells its weight (AWS-managed lists answer without `MaxEntries`; they weigh
    what AWS publishes for their name). Discovery and doctor's reads both build it here."""
    family = listed.get("AddressFamily", "").lower()
    return ingress.PrefixList(
        listed["PrefixListId"],
        max_entries=int(listed["MaxEntries"]) if "MaxEntries" in listed else None,
        family={"ipv4": 4, "ipv6": 6}.get(family),
        name=listed.get("PrefixListName") or None,
    )


def read_rules_quota(clients: client.AwsClients) -> int | None:
    """The account's applied rules-per-security-group quota, or None when this identity may
    not read it (the operator's setting then applies). Throttling and outages propagate."""
    try:
        answer = clients.servicequotas.get_service_quota(
            ServiceCode=RULES_QUOTA_SERVICE, QuotaCode=RULES_QUOTA_CODE
        )
    except botocore.exceptions.ClientError as error:
        if errors.answered(error, errors.QUOTA_UNREADABLE):
            return None
        raise
    value = answer.get("Quota", {}).get("Value")
    return int(value) if value else None

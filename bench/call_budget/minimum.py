"""What AWS holds before an apply, the fewest calls it takes, and the calls an apply made
against that: the computation the bench's tables and verdict rest on. It makes no AWS call:
`run.read_facts` reads the facts, with the world's clients, and `run.measure` counts the calls.

The minimum
-----------
Computed per operation from what AWS holds before the apply (read with the world's clients):

- DescribeAutoScalingGroups: the members. One tag-filtered listing per selector, at most 100
  ASGs per page (`MaxRecords` <= 100): ceil(matching ASGs / 100), at least 1.
- DescribeLaunchTemplateVersions: an ASG's SGs and instance profile live in its template
  version. Asked without a template id, `Versions=["$Default"]` (or `$Latest`) describes that
  version of every template of the account, at most 200 per page: ceil(templates / 200), at
  least 1, per version selector the ASGs use (here one). A pinned number cannot be asked for
  that way (the API refuses numbers without a template id), but a listing at `$Default` or
  `$Latest` holds it whenever it is that version of its template, as version 1 of a template
  with one version is; only a number that is neither needs a call per template.
- DescribeSecurityGroups: the VPC of every member SG (rules join SGs of one VPC only) and
  proof that it exists. At most 200 values per EC2 filter, pages of up to 1,000 groups:
  ceil(member SGs / 200).
- DescribeInstances: the SGs the running instances of the member ASGs still carry, which stay
  member SGs while a rollout replaces those instances (the launch data names only the new
  ones). EC2 has no batch read of an ASG's instances but this one: instances that carry the
  tag key EC2 Auto Scaling puts on them (Karpenter's too, when the mesh has EC2NodeClasses:
  one filter ORs both), pending or running, in the cluster's VPC, at most 1,000 per page:
  ceil(such instances / 1,000), at least 1. Asking by ASG name would take a call per 200 ASGs.
  moto pages by reservation, not by instance: ceil(their reservations / 1,000) there.
- DescribeSecurityGroupRules, twice over:
  (a) the rules of the member SGs, at most 200 group ids per filter: per chunk of 200 SGs,
      ceil(rules in the chunk / 1,000), at least 1. The answer holds egress rules too (the API
      has no filter to leave them out), so they count toward the pages;
  (b) the rules this mesh owns anywhere (filter `tag:<owner key>` = `owned`): ceil(owned rules
      / 1,000), at least 1. Only this finds rules the mesh left on SGs that are no longer
      members; it cannot share a call with (a), as filters of different names are ANDed.
- IAM, without any read of the account's roles and their policies
  (GetAccountAuthorizationDetails, ListRoles: the operator's policy allows neither, see
  `sgmesh.aws.roles`). What the data requires at every reconcile is which member roles hold
  the CNI policy, since anybody may detach it at any time: one ListEntitiesForPolicy
  (`EntityFilter=Role`) per page of 1,000 roles the policy is attached to. Nothing else in IAM
  changes unless somebody changes it: an instance profile's role, and the tags on a role (the
  mesh's record of the attachments it made, which is what lets it detach later and never
  detach what it did not make). Those are read only where the process holds no answer for
  them (`Facts.profiles_unknown`, `Facts.roles_unknown`): a process that just started (the
  cold apply), the roles it wrote to (the resync after the writes), every answer older than
  the IAM refresh (`sgmesh.aws.roles.RoleMemory`): one listing of the account's instance
  profiles with their roles, ListInstanceProfiles per page of 1,000 (or one GetInstanceProfile
  per such profile, where that is fewer calls; moto answers the listing in one page), and one
  ListRoleTags per such role (IAM has no batch read of tags). A steady resync
  holds an answer for every one: the listing is all it needs, whatever the number of roles.
  The same listing sweeps, in a process that remembers nothing of the mesh, for roles the
  mesh tagged that are no longer members (then the tags of each role holding the policy that
  is not a member: none in this world). ListAttachedRolePolicies is needed only for a role
  whose record names a policy the mesh no longer wants on it (a removal may follow): none in
  this world.
- GetServiceQuota: the applied rules-per-SG quota, once, when an SG lacks a rule (the cold
  apply); a steady apply needs none.
- Writes, in a cold apply only: one AuthorizeSecurityGroupIngress per SG that lacks any wanted
  rule (all its permissions in one call, the ownership tag given at creation, so no CreateTags),
  and per role that lacks the policy two calls: TagRole (the record that the mesh made the
  attachment, which is what lets it detach later and never detach what it did not make) and
  AttachRolePolicy. A steady apply writes nothing.
- Any other operation: 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import botocore.session

ASG_PAGE = 100  # DescribeAutoScalingGroups MaxRecords
TEMPLATE_VERSION_PAGE = 200  # DescribeLaunchTemplateVersions MaxResults
FILTER_VALUES = 200  # values per EC2 filter
RULE_PAGE = 1000  # DescribeSecurityGroupRules MaxResults
SECURITY_GROUP_PAGE = 1000  # DescribeSecurityGroups MaxResults
INSTANCE_PAGE = 1000  # DescribeInstances MaxResults
IAM_PAGE = 1000  # ListEntitiesForPolicy MaxItems

# The page-size parameter of each paginated read and the largest value its API accepts.
PAGE_LIMITS: dict[str, tuple[str, int]] = {
    "DescribeAutoScalingGroups": ("MaxRecords", ASG_PAGE),
    "DescribeLaunchTemplateVersions": ("MaxResults", TEMPLATE_VERSION_PAGE),
    "DescribeSecurityGroups": ("MaxResults", SECURITY_GROUP_PAGE),
    "DescribeSecurityGroupRules": ("MaxResults", RULE_PAGE),
    "DescribeInstances": ("MaxResults", INSTANCE_PAGE),
    "ListEntitiesForPolicy": ("MaxItems", IAM_PAGE),
    "ListInstanceProfiles": ("MaxItems", IAM_PAGE),
}
# IAM reads that grow with the account rather than with the mesh.
ACCOUNT_WIDE_IAM_READS = frozenset(
    {"GetAccountAuthorizationDetails", "ListRoles", "ListInstanceProfiles", "ListEntitiesForPolicy"}
)
IAM_OPERATIONS = frozenset(botocore.session.get_session().get_service_model("iam").operation_names)


# ---- What AWS holds ------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What AWS holds before an apply, read with the world's clients (not counted)."""

    asgs: int  # ASGs the selector matches
    templates: int  # launch templates of the account
    security_groups: int  # member SGs
    rules_per_chunk: tuple[int, ...]  # rules (egress too) per filter of <= 200 member SG ids
    ingress_rules: int  # inbound rules on member SGs
    owned_rules: int  # rules carrying the mesh's tag
    roles: int  # member roles
    roles_with_policy: int  # member roles with the CNI policy attached
    profiles: int  # member instance profiles
    remembered: bool  # the process already reconciled this mesh (no sweep)
    attach: bool  # the mesh attaches the CNI policy (else it needs no IAM call)
    groups_lacking_rules: int  # member SGs that miss at least one mesh rule
    roles_lacking_policy: int  # member roles without the CNI policy
    instances: int = 0  # pending or running instances of ASGs in the VPC
    instance_reservations: int = 0  # the reservations they belong to (moto pages by these)
    # Member instance profiles and roles the process holds no answer for (never read, written
    # to by the process since, or read longer ago than the IAM refresh).
    profiles_unknown: int = 0
    roles_unknown: int = 0
    account_profiles: int = 0  # instance profiles of the account


# ---- The minimum ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Minimum:
    """Fewest calls of one operation: on AWS, and on moto (which folds some pages into one)."""

    aws: int
    moto: int


def pages(items: int, page_size: int) -> int:
    """Calls to read `items` in pages of `page_size`: an empty answer is still one call."""
    return max(1, math.ceil(items / page_size))


def minimum(facts: Facts) -> dict[str, Minimum]:
    """The fewest calls per operation for the data in `facts`; see the module docstring."""
    rule_reads_aws = sum(pages(rules, RULE_PAGE) for rules in facts.rules_per_chunk)
    rule_reads_aws += pages(facts.owned_rules, RULE_PAGE)
    rule_reads_moto = len(facts.rules_per_chunk) + 1
    budget = {
        "DescribeAutoScalingGroups": Minimum(
            pages(facts.asgs, ASG_PAGE), pages(facts.asgs, ASG_PAGE)
        ),
        "DescribeLaunchTemplateVersions": Minimum(
            pages(facts.templates, TEMPLATE_VERSION_PAGE),
            pages(facts.templates, TEMPLATE_VERSION_PAGE),
        ),
        "DescribeSecurityGroups": Minimum(
            pages(facts.security_groups, FILTER_VALUES),
            pages(facts.security_groups, FILTER_VALUES),
        ),
        "DescribeSecurityGroupRules": Minimum(rule_reads_aws, rule_reads_moto),
        "DescribeInstances": Minimum(
            pages(facts.instances, INSTANCE_PAGE), pages(facts.instance_reservations, INSTANCE_PAGE)
        ),
        **(iam_minimum(facts) if facts.attach else {}),
        "GetServiceQuota": Minimum(
            1 if facts.groups_lacking_rules else 0, 1 if facts.groups_lacking_rules else 0
        ),
        "AuthorizeSecurityGroupIngress": Minimum(
            facts.groups_lacking_rules, facts.groups_lacking_rules
        ),
        "TagRole": Minimum(facts.roles_lacking_policy, facts.roles_lacking_policy),
        "AttachRolePolicy": Minimum(facts.roles_lacking_policy, facts.roles_lacking_policy),
    }
    return {operation: need for operation, need in budget.items() if need.aws or need.moto}


def iam_minimum(facts: Facts) -> dict[str, Minimum]:
    """IAM as the data requires (see the module docstring); `attach: false` needs none."""
    listing = pages(facts.account_profiles, IAM_PAGE)
    return {
        "ListEntitiesForPolicy": Minimum(pages(facts.roles_with_policy, IAM_PAGE), 1),
        **(
            {"ListInstanceProfiles": Minimum(min(listing, facts.profiles_unknown), 1)}
            if facts.profiles_unknown
            else {}
        ),
        "ListRoleTags": Minimum(facts.roles_unknown, facts.roles_unknown),
    }


# ---- Calls made against the minimum ------------------------------------------------------


@dataclass
class Measurement:
    """The calls one apply made, by operation, against the minimum for what AWS held before it
    (`facts`); `page_sizes` are the page sizes its paginated reads asked for, which say whether
    the projection onto AWS holds."""

    asgs: int
    security_groups: int
    phase: str
    calls: dict[str, int]
    mutating: int
    seconds: float
    cpu_seconds: float
    minimum: dict[str, Minimum]
    facts: Facts
    page_sizes: dict[str, list[int | None]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def iam_calls(self) -> int:
        return sum(n for operation, n in self.calls.items() if operation in IAM_OPERATIONS)

    @property
    def account_wide_iam_reads(self) -> int:
        return sum(self.calls.get(operation, 0) for operation in ACCOUNT_WIDE_IAM_READS)

    @property
    def minimum_moto(self) -> int:
        return sum(need.moto for need in self.minimum.values())

    @property
    def minimum_aws(self) -> int:
        return sum(need.aws for need in self.minimum.values())

    @property
    def ratio(self) -> float:
        return self.total / self.minimum_moto

    @property
    def largest_pages(self) -> bool:
        """Every paginated read asked for the largest page its API allows."""
        return all(
            size == PAGE_LIMITS[operation][1]
            for operation, sizes in self.page_sizes.items()
            for size in sizes
        )

    @property
    def projected_aws(self) -> int | None:
        """The calls on AWS: those made plus the pages moto answered in one."""
        if not self.largest_pages:
            return None
        return self.total + self.minimum_aws - self.minimum_moto

    def as_json(self) -> dict[str, Any]:
        return {
            "asgs": self.asgs,
            "securityGroups": self.security_groups,
            "phase": self.phase,
            "calls": self.total,
            "mutating": self.mutating,
            "iamCalls": self.iam_calls,
            "accountWideIamReads": self.account_wide_iam_reads,
            "minimum": self.minimum_moto,
            "ratio": round(self.ratio, 3),
            "awsMinimum": self.minimum_aws,
            "awsProjected": self.projected_aws,
            "seconds": round(self.seconds, 3),
            "clientCpuSeconds": round(self.cpu_seconds, 3),
            "callsByOperation": dict(sorted(self.calls.items())),
            "minimumByOperation": {
                operation: asdict(need) for operation, need in sorted(self.minimum.items())
            },
            "pageSizes": self.page_sizes,
            "facts": asdict(self.facts),
        }

"""The AWS call budget: how many AWS calls one reconcile makes, against the fewest the APIs allow.

For each size N (default 10, 50 and 200 ASGs) the bench builds a world on a moto server of its
own and converges one mesh twice through the pipeline the operator and the CLI share
(`reconcile.converge`): a cold apply, which writes every rule and CNI attachment, and a
steady-state apply, which must find nothing to do. It reports, per apply, the AWS calls by
operation, how many of them write, the wall time, and the ratio of calls made to the minimum
the data requires. It never reaches a real AWS account: every client it makes points at the
moto server it started, and it stops that server when it ends.

The world
---------
One VPC. Each ASG launches from a launch template of its own (no version named, so
`$Default`; `--template-version` names `$Latest` or pins version 1, as EKS managed node groups
pin a number) that gives one security group and the ARN of an instance profile of its own,
which holds a node role of its own. Every ASG carries the tag `bench: yes`, and the mesh
selects them with that one tag selector. Up to 50 ASGs each have an SG of their own; beyond
that the ASGs share a pool of 50 SGs (4 ASGs per SG at N = 200): a full mesh of K SGs gives
each SG K inbound rules (one from each member SG, itself included), and the default quota is
60 inbound rules per SG, so a full mesh cannot grow one SG per ASG to 200 ASGs; 50 SGs hold 50
rules each. World-building calls use the world's own clients and are not counted.

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
- DescribeSecurityGroupRules, twice over:
  (a) the rules of the member SGs, at most 200 group ids per filter: per chunk of 200 SGs,
      ceil(rules in the chunk / 1,000), at least 1. The answer holds egress rules too (the API
      has no filter to leave them out), so they count toward the pages;
  (b) the rules this mesh owns anywhere (filter `tag:<owner key>` = `owned`): ceil(owned rules
      / 1,000), at least 1. Only this finds rules the mesh left on SGs that are no longer
      members; it cannot share a call with (a), as filters of different names are ANDed.
- IAM, without any account-wide read of roles and their policies (the operator's policy does
  not allow GetAccountAuthorizationDetails or ListRoles, see `sgmesh.roles`): one
  GetInstanceProfile per member instance profile (IAM has no batch read of profiles), and per
  member role one ListRoleTags (the mesh's record of the attachments it made) and one
  ListAttachedRolePolicies. Only when nothing is remembered of the mesh (the cold apply of a
  process that just started) one ListEntitiesForPolicy (`EntityFilter=Role`) per page of
  1,000 roles the CNI policy is attached to finds roles the mesh tagged that are no longer
  members; a steady apply needs none.
- GetServiceQuota: the applied rules-per-SG quota, once, when an SG lacks a rule (the cold
  apply); a steady apply needs none.
- Writes, in a cold apply only: one AuthorizeSecurityGroupIngress per SG that lacks any wanted
  rule (all its permissions in one call, the ownership tag given at creation, so no CreateTags),
  and per role that lacks the policy two calls: TagRole (the record that the mesh made the
  attachment, which is what lets it detach later and never detach what it did not make) and
  AttachRolePolicy. A steady apply writes nothing.
- Any other operation: 0.

moto and AWS
------------
moto answers DescribeSecurityGroups, DescribeSecurityGroupRules and ListEntitiesForPolicy in
one page whatever their size, and cuts
DescribeLaunchTemplateVersions at `MaxResults` (200) without a next token, so that a template
past the 200th costs a call of its own there; only DescribeAutoScalingGroups pages as AWS
does. So the table gives two minimums:
"minimum", the fewest calls on this moto server (one per request for the calls it does not
page), against which the calls measured are compared (the ratio); and "AWS minimum", what AWS
pages would need. "AWS projected" is what the same reconcile would make on AWS: the calls
measured plus the pages moto folded into one. That holds because the bench checks that every
read asked for the largest page its API allows (`PAGE_LIMITS`); if one did not, the projection
is shown as "?".

"seconds" is the wall time of the apply, "client CPU" the CPU time this process spent in it
(botocore, discovery, planning); the rest is waiting on the moto server, which takes seconds
to serve DescribeSecurityGroupRules over thousands of rules.

Run from the repository root:
`python bench/call_budget.py [--sizes 10,50,200] [--template-version VERSION] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, Python puts bench/ on the path; devtools/ lives at the root.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import botocore.session  # noqa: E402

from devtools.aws import moto_server  # noqa: E402
from devtools.aws.world import CNI_POLICY_ARN, World  # noqa: E402
from sgmesh import aws, chunking, models, reconcile  # noqa: E402

DEFAULT_SIZES = (10, 50, 200)
SECURITY_GROUP_POOL = 50
SELECTOR_TAGS = {"bench": "yes"}
CLUSTER = "bench"
MESH_NAME = "bench"

ASG_PAGE = 100  # DescribeAutoScalingGroups MaxRecords
TEMPLATE_VERSION_PAGE = 200  # DescribeLaunchTemplateVersions MaxResults
FILTER_VALUES = 200  # values per EC2 filter
RULE_PAGE = 1000  # DescribeSecurityGroupRules MaxResults
SECURITY_GROUP_PAGE = 1000  # DescribeSecurityGroups MaxResults
IAM_PAGE = 1000  # ListEntitiesForPolicy MaxItems

# The page-size parameter of each paginated read and the largest value its API accepts.
PAGE_LIMITS: dict[str, tuple[str, int]] = {
    "DescribeAutoScalingGroups": ("MaxRecords", ASG_PAGE),
    "DescribeLaunchTemplateVersions": ("MaxResults", TEMPLATE_VERSION_PAGE),
    "DescribeSecurityGroups": ("MaxResults", SECURITY_GROUP_PAGE),
    "DescribeSecurityGroupRules": ("MaxResults", RULE_PAGE),
    "ListEntitiesForPolicy": ("MaxItems", IAM_PAGE),
}
# IAM reads that grow with the account rather than with the mesh.
ACCOUNT_WIDE_IAM_READS = frozenset(
    {"GetAccountAuthorizationDetails", "ListRoles", "ListInstanceProfiles", "ListEntitiesForPolicy"}
)
IAM_OPERATIONS = frozenset(botocore.session.get_session().get_service_model("iam").operation_names)

TARGET_STEADY_RATIO = 1.2
TEMPLATE_VERSIONS = ("$Default", "$Latest", "1")


class BenchFailure(RuntimeError):
    """The bench could not measure what it claims to: an apply failed or did not settle."""


# ---- The world -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchWorld:
    asg_names: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    role_names: tuple[str, ...]
    templates: int
    build_seconds: float


def build_world(world: World, size: int, template_version: str) -> BenchWorld:
    started = time.perf_counter()
    group_count = min(size, SECURITY_GROUP_POOL)
    group_ids = [world.security_group(f"bench-nodes-{index:03d}") for index in range(group_count)]
    names, roles = [], []
    for index in range(size):
        name = f"bench-ng-{index:03d}"
        profile = world.role_with_profile(name)
        template = world.launch_template(
            name, security_group_ids=[group_ids[index % group_count]], profile_arn=profile.arn
        )
        version = None if template_version == "$Default" else template_version
        world.asg(name, launch_template=template, version=version, tags=SELECTOR_TAGS)
        names.append(name)
        roles.append(name)
    return BenchWorld(
        asg_names=tuple(names),
        security_group_ids=tuple(group_ids),
        role_names=tuple(roles),
        templates=size,
        build_seconds=time.perf_counter() - started,
    )


def mesh_document(name: str = MESH_NAME, attach: bool = True) -> models.NodeGroupMesh:
    return models.NodeGroupMesh.parse(
        {
            "apiVersion": "sgmesh.io/v1alpha1",
            "kind": "NodeGroupMesh",
            "metadata": {"name": name},
            "spec": {
                "autoScalingGroups": {"selectors": [{"tags": SELECTOR_TAGS}]},
                "cniPolicy": {"attach": attach},
            },
        }
    )


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
    remembered: bool  # the process already read this mesh's roles (an operator's resync)
    attach: bool  # the mesh attaches the CNI policy (else it needs no IAM call)
    groups_lacking_rules: int  # member SGs that miss at least one mesh rule
    roles_lacking_policy: int  # member roles without the CNI policy


def read_facts(
    world: World, bench: BenchWorld, owner_key: str, remembered: bool, attach: bool
) -> Facts:
    ec2, iam = world.clients.ec2, world.clients.iam
    selected = world.clients.autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
        Filters=[{"Name": f"tag:{key}", "Values": [value]} for key, value in SELECTOR_TAGS.items()]
    )
    asgs = sum(len(page["AutoScalingGroups"]) for page in selected)
    rules_paginator = ec2.get_paginator("describe_security_group_rules")
    group_ids = sorted(bench.security_group_ids)
    rules_per_chunk: list[int] = []
    sources_by_group: dict[str, set[str]] = {group_id: set() for group_id in group_ids}
    ingress = 0
    for chunk in chunking.chunks(group_ids, FILTER_VALUES):
        in_chunk = 0
        for page in rules_paginator.paginate(Filters=[{"Name": "group-id", "Values": chunk}]):
            for rule in page["SecurityGroupRules"]:
                in_chunk += 1
                if rule.get("IsEgress"):
                    continue
                ingress += 1
                source = rule.get("ReferencedGroupInfo", {}).get("GroupId")
                if source and rule.get("IpProtocol") == "-1":
                    sources_by_group[rule["GroupId"]].add(source)
        rules_per_chunk.append(in_chunk)
    owned = sum(
        len(page["SecurityGroupRules"])
        for page in rules_paginator.paginate(
            Filters=[{"Name": f"tag:{owner_key}", "Values": ["owned"]}]
        )
    )
    members = set(group_ids)
    lacking_rules = sum(1 for sources in sources_by_group.values() if not members <= sources)

    attached = {
        name: {
            policy["PolicyArn"]
            for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=name)
            for policy in page["AttachedPolicies"]
        }
        for name in bench.role_names
    }
    with_policy = sum(1 for name in bench.role_names if CNI_POLICY_ARN in attached[name])
    return Facts(
        asgs=asgs,
        templates=bench.templates,
        security_groups=len(group_ids),
        rules_per_chunk=tuple(rules_per_chunk),
        ingress_rules=ingress,
        owned_rules=owned,
        roles=len(attached),
        roles_with_policy=with_policy,
        profiles=len(bench.role_names),  # one instance profile per role
        remembered=remembered,
        attach=attach,
        groups_lacking_rules=lacking_rules,
        roles_lacking_policy=len(bench.role_names) - with_policy,
    )


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
            1 + max(0, facts.templates - TEMPLATE_VERSION_PAGE),
        ),
        "DescribeSecurityGroups": Minimum(
            pages(facts.security_groups, FILTER_VALUES),
            pages(facts.security_groups, FILTER_VALUES),
        ),
        "DescribeSecurityGroupRules": Minimum(rule_reads_aws, rule_reads_moto),
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
    """IAM read by name (see the module docstring); a mesh with `attach: false` needs none."""
    sweep = not facts.remembered
    return {
        "GetInstanceProfile": Minimum(facts.profiles, facts.profiles),
        "ListRoleTags": Minimum(facts.roles, facts.roles),
        "ListAttachedRolePolicies": Minimum(facts.roles, facts.roles),
        "ListEntitiesForPolicy": Minimum(
            pages(facts.roles_with_policy, IAM_PAGE) if sweep else 0, 1 if sweep else 0
        ),
    }


# ---- Measuring -----------------------------------------------------------------------------


@dataclass
class Measurement:
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


def counted_clients() -> tuple[aws.AwsClients, dict[str, list[int | None]]]:
    """Fresh clients, as a reconcile gets them, that also note the page size each read asks."""
    clients = aws.make_clients()
    asked: dict[str, list[int | None]] = {}

    def note_page_size(params: Mapping[str, Any], model: Any, **_: Any) -> None:
        # A call for named versions of one template holds at most a few: only listings page.
        one_template = "LaunchTemplateId" in params or "LaunchTemplateName" in params
        if model.name in PAGE_LIMITS and not one_template:
            parameter = PAGE_LIMITS[model.name][0]
            asked.setdefault(model.name, []).append(params.get(parameter))

    for client in (clients.ec2, clients.autoscaling, clients.iam, clients.servicequotas):
        client.meta.events.register("provide-client-params.*.*", note_page_size)
    return clients, asked


def measure(
    world: World,
    bench: BenchWorld,
    mesh: models.NodeGroupMesh,
    phase: str,
    settings: reconcile.Settings,
) -> tuple[Measurement, reconcile.Outcome]:
    """One apply with `settings`, which the operator keeps for its lifetime: what they
    remember of the mesh's roles from an earlier apply spares the steady apply a sweep."""
    owner = reconcile.owner_of(mesh, settings)
    remembered = settings.role_memory.recall(owner) is not None
    facts = read_facts(world, bench, owner.tag_key, remembered, mesh.spec.cni_policy.attach)
    clients, page_sizes = counted_clients()
    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = reconcile.converge(clients, mesh, settings)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    return (
        Measurement(
            asgs=len(bench.asg_names),
            security_groups=len(bench.security_group_ids),
            phase=phase,
            calls=dict(clients.calls),
            mutating=clients.mutating_calls,
            seconds=seconds,
            cpu_seconds=cpu_seconds,
            minimum=minimum(facts),
            facts=facts,
            page_sizes=page_sizes,
        ),
        outcome,
    )


def check_settled(outcome: reconcile.Outcome, size: int, phase: str) -> None:
    where = f"N={size} {phase} apply"
    if outcome.failures:
        failed = "; ".join(failure.failure.describe() for failure in outcome.failures)
        raise BenchFailure(f"{where}: {len(outcome.failures)} write(s) failed: {failed}")
    if outcome.plan.problems:
        found = "; ".join(problem.message for problem in outcome.plan.problems)
        raise BenchFailure(f"{where}: discovery or planning reported problems: {found}")
    if not outcome.converged:
        raise BenchFailure(f"{where}: did not converge ({len(outcome.pending)} actions pending)")
    if len(outcome.topology.members) != size:
        raise BenchFailure(f"{where}: {len(outcome.topology.members)} members, expected {size}")


def run_size(server: moto_server.MotoServer, size: int, template_version: str) -> list[Measurement]:
    server.reset()
    world = World(aws.make_clients())
    bench = build_world(world, size, template_version)
    _progress(f"N={size}: world built in {bench.build_seconds:.1f}s")
    mesh = mesh_document()
    settings = reconcile.Settings(cluster=CLUSTER)  # one operator process for both applies

    cold, outcome = measure(world, bench, mesh, "cold", settings)
    check_settled(outcome, size, "cold")
    if cold.mutating == 0:
        raise BenchFailure(f"N={size} cold apply wrote nothing: the world was not cold")
    _progress(f"N={size}: cold apply {cold.total} calls in {cold.seconds:.1f}s")

    steady, outcome = measure(world, bench, mesh, "steady", settings)
    check_settled(outcome, size, "steady")
    if not outcome.plan.empty or steady.mutating:
        actions = "; ".join(action.describe() for action in outcome.plan.actions[:5])
        raise BenchFailure(
            f"N={size} steady apply is not empty ({len(outcome.plan.actions)} actions, "
            f"{steady.mutating} mutating calls), a bug: {actions}"
        )
    if steady.facts.groups_lacking_rules or steady.facts.roles_lacking_policy:
        raise BenchFailure(
            f"N={size}: after the cold apply {steady.facts.groups_lacking_rules} SGs lack rules "
            f"and {steady.facts.roles_lacking_policy} roles lack the CNI policy"
        )
    _progress(f"N={size}: steady apply {steady.total} calls in {steady.seconds:.1f}s")

    # A second mesh over the same ASGs with `cniPolicy.attach: false` (aws-node on IRSA or Pod
    # Identity): it co-owns the rules in its cold apply; its steady apply must not touch IAM.
    unattached = mesh_document(f"{MESH_NAME}-no-cni", attach=False)
    converged = reconcile.converge(aws.make_clients(), unattached, settings)
    check_settled(converged, size, "attach: false cold")
    no_cni, outcome = measure(world, bench, unattached, "steady, attach: false", settings)
    check_settled(outcome, size, "attach: false steady")
    if no_cni.iam_calls:
        raise BenchFailure(f"N={size}: attach: false made {no_cni.iam_calls} IAM calls")
    return [cold, steady, no_cni]


# ---- Reporting -----------------------------------------------------------------------------


def summary_table(measurements: Sequence[Measurement]) -> str:
    rows = [
        [
            str(m.asgs),
            str(m.security_groups),
            m.phase,
            str(m.total),
            str(m.mutating),
            str(m.minimum_moto),
            f"{m.ratio:.2f}",
            str(m.minimum_aws),
            "?" if m.projected_aws is None else str(m.projected_aws),
            f"{m.seconds:.2f}",
            f"{m.cpu_seconds:.2f}",
        ]
        for m in measurements
    ]
    header = [
        "ASGs",
        "SGs",
        "apply",
        "calls",
        "mutating",
        "minimum",
        "ratio",
        "AWS minimum",
        "AWS projected",
        "seconds",
        "client CPU",
    ]
    return _markdown(header, rows, right=range(3, 11))


def operation_table(measurements: Sequence[Measurement]) -> str:
    """Calls / minimum (on moto) per operation and apply."""
    operations = sorted(
        {operation for m in measurements for operation in (*m.calls, *m.minimum)},
        key=lambda operation: (operation in aws.MUTATING_OPERATIONS, operation),
    )
    header = ["operation", *(f"{m.asgs} {m.phase}" for m in measurements)]
    rows = []
    for operation in operations:
        cells = []
        for m in measurements:
            made = m.calls.get(operation, 0)
            need = m.minimum.get(operation, Minimum(0, 0))
            cell = f"{made}/{need.moto}"
            if need.aws != need.moto:
                cell += f" (AWS {need.aws})"
            cells.append(cell)
        rows.append([operation, *cells])
    return _markdown(header, rows, right=range(1, len(header)))


def iam_table(measurements: Sequence[Measurement]) -> str:
    header = ["ASGs", "apply", "IAM calls", "account-wide IAM listings", "IAM calls by operation"]
    rows = [
        [
            str(m.asgs),
            m.phase,
            str(m.iam_calls),
            str(m.account_wide_iam_reads),
            ", ".join(
                f"{operation} {n}"
                for operation, n in sorted(m.calls.items())
                if operation in IAM_OPERATIONS
            )
            or "none",
        ]
        for m in measurements
    ]
    return _markdown(header, rows, right=range(2, 4))


def facts_table(measurements: Sequence[Measurement]) -> str:
    header = [
        "ASGs",
        "apply",
        "member SGs",
        "rules read (egress too)",
        "inbound",
        "owned",
        "roles",
        "roles with CNI",
        "SGs lacking rules",
        "roles lacking CNI",
    ]
    rows = [
        [
            str(m.asgs),
            m.phase,
            str(m.facts.security_groups),
            "+".join(str(rules) for rules in m.facts.rules_per_chunk),
            str(m.facts.ingress_rules),
            str(m.facts.owned_rules),
            str(m.facts.roles),
            str(m.facts.roles_with_policy),
            str(m.facts.groups_lacking_rules),
            str(m.facts.roles_lacking_policy),
        ]
        for m in measurements
    ]
    return _markdown(header, rows, right=range(2, len(header)))


def page_size_note(measurements: Sequence[Measurement]) -> str:
    asked: dict[str, set[int | None]] = {}
    for m in measurements:
        for operation, sizes in m.page_sizes.items():
            asked.setdefault(operation, set()).update(sizes)
    parts = []
    for operation, asked_sizes in sorted(asked.items()):
        parameter, largest = PAGE_LIMITS[operation]
        shown = ",".join(
            "none" if size is None else str(size) for size in sorted(asked_sizes, key=str)
        )
        verdict = "largest" if asked_sizes == {largest} else f"NOT the largest ({largest})"
        parts.append(f"{operation} {parameter}={shown} ({verdict})")
    return "Page sizes asked: " + "; ".join(parts) + "."


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int]) -> str:
    right_aligned = set(right)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(widths[i]) if i in right_aligned else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        )
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (widths[i] - 1) + ":" if i in right_aligned else "-" * widths[i]
        for i in range(len(header))
    ]
    return "\n".join([line(header), line(rule), *(line(row) for row in rows)])


def report(measurements: Sequence[Measurement], total_seconds: float, template_version: str) -> str:
    parts = [
        f"Every ASG asks for launch template version {template_version}.",
        "",
        summary_table(measurements),
        "",
        "calls/minimum per operation on the moto server; (AWS n) where AWS pages need more:",
        "",
        operation_table(measurements),
        "",
        "IAM per apply (a steady apply is an operator's resync with membership unchanged):",
        "",
        iam_table(measurements),
        "",
        "What AWS held before each apply:",
        "",
        facts_table(measurements),
        "",
        page_size_note(measurements),
    ]
    largest_steady = max(
        (m for m in measurements if m.phase == "steady"), key=lambda m: m.asgs, default=None
    )
    if largest_steady is not None:
        steady = largest_steady
        ratios = [steady.ratio]
        on_aws = "AWS projection unknown"
        if steady.projected_aws is not None:
            ratios.append(steady.projected_aws / steady.minimum_aws)
            on_aws = f"on AWS {steady.projected_aws}/{steady.minimum_aws} = {ratios[-1]:.2f}"
        verdict = "within" if max(ratios) <= TARGET_STEADY_RATIO else "OVER"
        parts.append(
            f"Steady apply at {steady.asgs} ASGs: {steady.total}/{steady.minimum_moto} = "
            f"{steady.ratio:.2f} on moto, {on_aws}: {verdict} the target of "
            f"{TARGET_STEADY_RATIO}."
        )
    parts.append(f"Whole bench: {total_seconds:.1f}s (worlds built through the API included).")
    return "\n".join(parts)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- Entry point ---------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        default=",".join(str(size) for size in DEFAULT_SIZES),
        help="comma-separated numbers of ASGs (default: %(default)s)",
    )
    parser.add_argument(
        "--template-version",
        choices=TEMPLATE_VERSIONS,
        default=TEMPLATE_VERSIONS[0],
        help="the launch template version every ASG asks for (default: %(default)s, "
        "by naming none)",
    )
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    arguments = parser.parse_args(argv)
    try:
        arguments.sizes = [int(size) for size in arguments.sizes.split(",") if size.strip()]
    except ValueError:
        parser.error(f"--sizes takes whole numbers separated by commas, not {arguments.sizes!r}")
    if not arguments.sizes or any(size < 1 for size in arguments.sizes):
        parser.error("--sizes needs at least one size, each at least 1")
    return arguments


def point_at(server: moto_server.MotoServer) -> None:
    """Every client this process makes talks to `server`, never to an account of the machine."""
    os.environ.update(server.aws_env())
    os.environ.pop("AWS_PROFILE", None)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    started = time.perf_counter()
    server = moto_server.start_moto_server()
    measurements: list[Measurement] = []
    try:
        point_at(server)
        for size in arguments.sizes:
            measurements.extend(run_size(server, size, arguments.template_version))
    except BenchFailure as failure:
        print(f"\nBENCH FAILED: {failure}\n", file=sys.stderr)
        return 1
    finally:
        server.stop()
    total_seconds = time.perf_counter() - started
    if arguments.json:
        print(
            json.dumps(
                {
                    "templateVersion": arguments.template_version,
                    "measurements": [m.as_json() for m in measurements],
                    "seconds": round(total_seconds, 3),
                },
                indent=2,
            )
        )
    else:
        print(report(measurements, total_seconds, arguments.template_version))
    return 0


if __name__ == "__main__":
    sys.exit(main())

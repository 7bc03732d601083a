"""What every fault scenario proves of AWS afterwards: no rule lost, duplicated, orphaned, and
nothing sgmesh does not own touched.

`HandMade` puts rules sgmesh does not own on the groups of a test and checks later that they are
exactly as they were (same id, tags and description). `assert_exact` compares the inbound rules
between member groups with what the meshes want: every wanted rule once, carrying exactly the
owner tags of the meshes that want it; no rule sgmesh made beyond those.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devtools.aws.world import CNI_POLICY_ARN, NodeGroup, World
from sgmesh.engine import ownership

__all__ = ["CLUSTER", "HandMade", "assert_exact", "exact", "owner_key", "rule_writes"]

CLUSTER = "e2e"  # the operator's --cluster in the e2e harness

RuleKey = tuple[str, str, str, int, int]  # target group, source group, protocol, ports


def owner_key(mesh: str) -> str:
    return f"{ownership.OWNER_TAG_PREFIX}{CLUSTER}/{mesh}"


def _key(rule: Mapping[str, Any]) -> RuleKey:
    return (
        rule["GroupId"],
        rule.get("ReferencedGroupInfo", {}).get("GroupId") or rule.get("CidrIpv4", ""),
        rule["IpProtocol"],
        rule.get("FromPort", -1),
        rule.get("ToPort", -1),
    )


def _tags(rule: Mapping[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in rule.get("Tags", [])}


def _made_by_sgmesh(rule: Mapping[str, Any]) -> bool:
    tags = _tags(rule)
    return ownership.owned_by_any_mesh(tags) or ownership.is_orphan(
        tags, rule.get("Description", "")
    )


@dataclass
class HandMade:
    """Rules somebody else made on the test's groups, remembered to be checked unchanged."""

    world: World
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def on(cls, world: World, target: NodeGroup, source: NodeGroup) -> HandMade:
        """Hand-made rules on `target` (see `add`), remembered."""
        hand_made = cls(world)
        hand_made.add(target, source)
        return hand_made

    def add(self, target: NodeGroup, source: NodeGroup) -> None:
        """A CIDR rule and a rule from `source` on a port the meshes never use, both tagged."""
        self.world.ingress_from_cidr(target.security_group_id, "192.0.2.0/24", tags={"team": "a"})
        self.world.ingress_from_group(
            target.security_group_id,
            source.security_group_id,
            protocol="tcp",
            from_port=22,
            to_port=22,
            tags={"team": "a"},
            description="ssh by hand",
        )
        self.snapshot(target)

    def snapshot(self, target: NodeGroup) -> None:
        for rule in self.world.describe_ingress(target.security_group_id):
            if not _made_by_sgmesh(rule):
                self.rules[rule["SecurityGroupRuleId"]] = _essence(rule)

    def assert_untouched(self) -> None:
        groups = {rule["GroupId"] for rule in self.rules.values()}
        now = {
            rule["SecurityGroupRuleId"]: _essence(rule)
            for group in groups
            for rule in self.world.describe_ingress(group)
            if rule["SecurityGroupRuleId"] in self.rules
        }
        assert now == self.rules, "a rule sgmesh does not own was changed or revoked"


def _essence(rule: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "GroupId": rule["GroupId"],
        "key": _key(rule),
        "tags": _tags(rule),
        "description": rule.get("Description", ""),
    }


def wanted_owners(meshes: Mapping[str, Sequence[NodeGroup]]) -> dict[RuleKey, set[str]]:
    """Each rule the meshes want (all traffic from every member to every member) -> owner keys."""
    wanted: dict[RuleKey, set[str]] = {}
    for mesh, members in meshes.items():
        for target in members:
            for source in members:
                key = (target.security_group_id, source.security_group_id, "-1", -1, -1)
                wanted.setdefault(key, set()).add(owner_key(mesh))
    return wanted


def exact(
    world: World, groups: Iterable[NodeGroup], meshes: Mapping[str, Sequence[NodeGroup]]
) -> list[str]:
    """What is wrong with the rules on `groups` given what `meshes` want (empty: all is exact).

    Wrong are: a wanted rule missing (lost), a rule there twice (duplicated), a rule sgmesh made
    that no mesh wants or that carries another owner set (orphaned, or tags not exact)."""
    wanted = wanted_owners(meshes)
    found: dict[RuleKey, set[str]] = {}
    counts: Counter[RuleKey] = Counter()
    for group in groups:
        for rule in world.describe_ingress(group.security_group_id):
            if not _made_by_sgmesh(rule):
                continue
            key = _key(rule)
            counts[key] += 1
            tags = _tags(rule)
            found[key] = {k for k, v in tags.items() if k.startswith("sgmesh.io/")}
            if any(v != ownership.OWNED for k, v in tags.items() if k.startswith("sgmesh.io/")):
                found[key].add(f"(a value other than {ownership.OWNED!r})")
    problems = [f"duplicated: {key} x{n}" for key, n in counts.items() if n > 1]
    problems += [
        f"lost: {key} wanted by {sorted(o)}" for key, o in wanted.items() if key not in found
    ]
    problems += [
        f"owners of {key}: {sorted(o)}, wanted {sorted(wanted.get(key, set()))}"
        for key, o in found.items()
        if o != wanted.get(key, set())
    ]
    return problems


def assert_exact(
    world: World,
    groups: Iterable[NodeGroup],
    meshes: Mapping[str, Sequence[NodeGroup]],
    hand_made: HandMade | None = None,
    context: str = "",
) -> None:
    """The rules and role attachments are exactly what `meshes` want; `hand_made` is intact."""
    groups = list(groups)
    problems = exact(world, groups, meshes)
    assert not problems, "\n".join(problems) + f"\n{context}"
    members = {group.role for members in meshes.values() for group in members}
    for role in members:
        assert CNI_POLICY_ARN in world.attached_policy_arns(role), f"{role} lost its CNI policy"
    if hand_made is not None:
        hand_made.assert_untouched()


def rule_writes(operator_metric: Callable[..., float]) -> float:
    """The authorize and revoke calls an operator made, from its metrics (`Operator.metric`)."""
    return operator_metric(
        "sgmesh_aws_calls_total", operation="AuthorizeSecurityGroupIngress"
    ) + operator_metric("sgmesh_aws_calls_total", operation="RevokeSecurityGroupIngress")

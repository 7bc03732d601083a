"""The safety net under releases: rules sgmesh made in this cluster's VPC that no mesh owns any
more, and whose mesh no longer exists, are revoked.

A release normally leaves nothing behind (`sgmesh.aws.apply`: the last owner to let go
revokes). What can still leave an ownerless rule: a release whose confirmation never came
(EC2's reads lagging for longer than a reconcile waits), an operator stopped between a release
and its revoke, tags removed by hand from a deleted mesh's rules. Such a rule carries the
description sgmesh wrote at its creation (`sgmesh <cluster>/<mesh>: ...`) and no `sgmesh.io/`
tag. When its mesh exists, that mesh deals with it (adopts it, or revokes it as its maker); when
no mesh of that name exists in the cluster, nobody would: the sweep revokes it.

What it never touches: a rule that any mesh's tag is on, a rule without sgmesh's description
(somebody else's), a rule whose description names another cluster, a rule of an SG outside the
cluster's VPC. A candidate is read again `Settling.confirm_seconds` later and revoked only if
that read still finds it ownerless (a mesh may have just tagged it, and EC2 reads lag).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection

from sgmesh.aws import apply, client, security_groups
from sgmesh.engine import ingress, ownership

__all__ = ["find", "sweep"]


def find(
    clients: client.AwsClients, cluster: str, vpc_id: str, living: Collection[str]
) -> list[ingress.IngressRule]:
    """The ownerless rules sgmesh made for `cluster` in `vpc_id` whose mesh is not `living`."""
    groups = security_groups.groups_with_rule_descriptions(
        clients, vpc_id, lambda description: _made_here(description, cluster)
    )
    if not groups:
        return []
    rules = security_groups.read_ingress_rules(clients, groups)
    return sorted(
        (rule for rule in rules.values() if _abandoned(rule, cluster, living)),
        key=lambda rule: (rule.group_id, rule.rule_id),
    )


def sweep(
    clients: client.AwsClients,
    cluster: str,
    vpc_id: str,
    living: Collection[str],
    settling: apply.Settling = apply.AWS_SETTLING,
) -> list[ingress.IngressRule]:
    """Revoke the abandoned rules `find` finds, once a later read confirms each one; returns
    what was revoked. `living`: the names of the cluster's meshes, read before AWS is."""
    candidates = find(clients, cluster, vpc_id, living)
    if not candidates:
        return []
    settling.sleep(settling.confirm_seconds)
    confirmed = [
        rule
        for rule in security_groups.read_rules(
            clients, [rule.rule_id for rule in candidates]
        ).values()
        if _abandoned(rule, cluster, living)
    ]
    by_group: dict[str, list[str]] = defaultdict(list)
    for rule in confirmed:
        by_group[rule.group_id].append(rule.rule_id)
    for group_id, rule_ids in sorted(by_group.items()):
        apply.revoke_rules(clients, group_id, sorted(rule_ids))
    return confirmed


def _made_here(description: str, cluster: str) -> bool:
    maker = ownership.creator(description)
    return maker is not None and maker.cluster == cluster


def _abandoned(rule: ingress.IngressRule, cluster: str, living: Collection[str]) -> bool:
    maker = ownership.creator(rule.description)
    return (
        maker is not None
        and maker.cluster == cluster
        and maker.mesh not in living
        and not ownership.owned_by_any_mesh(rule.tags)
    )

"""The one pipeline: discover → plan → apply, shared by `sgmesh plan|apply` and the operator.

`converge` reconciles a mesh; `withdraw` takes away what a deleted mesh owns. Both return an
`Outcome` that the callers render (text, JSON, status, events, metrics) without deciding
anything themselves. AWS errors propagate as botocore exceptions; callers classify them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sgmesh.api import models
from sgmesh.aws import apply as applying
from sgmesh.aws import client, discovery, identity, roles
from sgmesh.engine import cluster_members, ownership, planning
from sgmesh.engine.topology import Topology

__all__ = ["Outcome", "Settings", "converge", "withdraw"]


@dataclass(frozen=True)
class Settings:
    """What the operator or CLI adds to a spec: who owns, the account's quota, and what IAM
    said (the roles each mesh tagged, instance profiles → roles, role tags), remembered for as
    long as these settings live (the operator's life, one CLI run) so that a resync neither
    sweeps IAM nor reads each role (`sgmesh.aws.roles`)."""

    cluster: str = "default"
    rules_per_security_group: int = planning.DEFAULT_RULES_PER_SECURITY_GROUP
    # Where meshes may act: the cluster's VPC (and tag). The operator and the CLI always give
    # one (`sgmesh.aws.identity`); the default, no bound, is for tests of the pipeline alone.
    boundary: planning.Boundary = planning.NO_BOUNDARY
    # The cluster's IP family (`identity.ClusterIdentity.ip_family`), for what the status says
    # of the CNI policy: AmazonEKS_CNI_Policy grants no IPv6 addresses.
    ip_family: str = identity.IPV4
    # Only an optimisation: it confirms that a role needs nothing, never decides a write.
    role_memory: roles.RoleMemory = field(default_factory=roles.RoleMemory, compare=False)
    # How a release waits out EC2's eventual consistency (`sgmesh.aws.apply.Settling`).
    settling: applying.Settling = applying.AWS_SETTLING


@dataclass(frozen=True)
class Outcome:
    """What one reconcile found, planned and did. `applied` is None when nothing was written
    on purpose (plan only, or `mode: DryRun`)."""

    owner: ownership.Owner
    topology: Topology
    plan: planning.Plan
    applied: applying.ApplyResult | None
    # What the cluster said (Kubernetes member sources, aws-node's IRSA role).
    cluster: cluster_members.ClusterMembers = cluster_members.NO_CLUSTER_MEMBERS
    # The cluster's IP family, as the settings said (`Settings.ip_family`).
    ip_family: str = identity.IPV4
    # The CNI policy the mesh attaches (the spec's, else the partition's default).
    policy_arn: str = ""

    @property
    def pending(self) -> tuple[planning.Action, ...]:
        """Actions not (yet) carried out: all of them in DryRun, the failed ones otherwise."""
        if self.applied is None:
            return self.plan.actions
        return tuple(action for failure in self.applied.failures for action in failure.actions)

    @property
    def failures(self) -> list[applying.Failure]:
        return [] if self.applied is None else self.applied.failures

    @property
    def converged(self) -> bool:
        return not self.pending and not self.plan.problems and not self.plan.held

    def rules(self) -> models.RuleCounts:
        """Rule counts after the writes that succeeded.

        `present` counts desired rules only, and apply never revokes a desired rule (the
        planner revokes or releases only what the mesh no longer wants), so revokes leave it
        as it is. `owned` loses each rule this mesh's tag was on at discovery once, however
        many actions let go of it: a release that ends in a revoke (`apply._release`) is one
        rule, and an orphan revoked (it had no tag) was never counted."""
        present, owned = self.plan.present_rules, self.plan.owned_rules
        if self.applied is not None:
            # Rules another writer created first exist; they count as owned only when this
            # mesh's tag was added to them (a TagRule among `done`).
            present += len(self.applied.found_existing)
            let_go: set[str] = set()
            for action in self.applied.done:
                if isinstance(action, planning.Authorize):
                    present += 1
                    owned += 1
                elif isinstance(action, planning.TagRule):
                    owned += 1
                elif isinstance(action, planning.Revoke | planning.UntagRule):
                    let_go.add(action.rule_id)
            owned -= sum(
                1
                for rule in self.topology.ingress_rules
                if rule.rule_id in let_go
                and rule.permission is not None
                and self.owner.owns(rule.tags)
            )
        return models.RuleCounts(desired=self.plan.desired_rules, present=present, owned=owned)

    def cni_policy(self) -> models.CniPolicyStatus:
        """Which member roles hold the CNI policy and which of those attachments are this
        mesh's (its record tag on the role, naming this policy), after the writes that
        succeeded.

        An attachment is the mesh's only while its record is there: one it released (IRSA
        turned on, a member gone, with `retainOnRemoval: true`) stays in AWS but is no longer
        recorded, and is never taken back later — whoever attached it might be somebody
        else, by then, and sgmesh never detaches what it cannot prove it made. When the mesh
        needs the policy on that role again, the attachment counts as present and the mesh
        attaches nothing; `ownedRoles` leaves it out, and a later removal leaves it alone."""
        attached = {
            name
            for name, role in self.topology.roles.items()
            if self.policy_arn in role.attached_policy_arns
        }
        # The roles whose record names the policy the mesh attaches (a record of an earlier
        # policy is released, never claimed for this one).
        key = self.owner.tag_key
        owned = {
            name
            for name, role in self.topology.roles.items()
            if role.tags.get(key) == self.policy_arn
        }
        # A record removed by hand stays the mesh's until it is written again: while that
        # write waits (dry run) or fails, the status still names the role.
        owned.update(
            action.role
            for action in self.plan.actions
            if isinstance(action, planning.TagRole) and action.restores
        )
        for action in self.applied.done if self.applied is not None else ():
            match action:
                case planning.AttachPolicy(role=role) if action.policy_arn == self.policy_arn:
                    attached.add(role)
                case planning.DetachPolicy(role=role) if action.policy_arn == self.policy_arn:
                    attached.discard(role)
                case planning.TagRole(role=role) if action.policy_arn == self.policy_arn:
                    owned.add(role)
                case planning.UntagRole(role=role):
                    owned.discard(role)
        members = set(self.topology.member_role_names)
        return models.CniPolicyStatus(
            policy_arn=self.policy_arn or None,
            attached_roles=sorted(attached & members),
            owned_roles=sorted(owned),
        )


def owner_of(mesh: models.NodeGroupMesh, settings: Settings) -> ownership.Owner:
    return ownership.Owner(cluster=settings.cluster, mesh=mesh.name)


def converge(
    clients: client.AwsClients,
    mesh: models.NodeGroupMesh,
    settings: Settings,
    write: bool = True,
    cluster: cluster_members.ClusterMembers = cluster_members.NO_CLUSTER_MEMBERS,
    *,
    fresh: bool = False,
    recorded_cni: models.CniPolicyStatus | None = None,
) -> Outcome:
    """Reconcile one mesh. Writes only when `write` and the spec's mode is Enforce.

    `cluster`: the members its Kubernetes sources name (`sgmesh.kube.sources`), and whether
    aws-node uses IRSA. `fresh`: read AWS as it is now, not what a discovery of the last
    seconds read (see `discovery.discover`). `recorded_cni`: the mesh's status of the CNI
    policy, whose owned roles get back a record tag removed by hand (`planning.Intent`)."""
    owner = owner_of(mesh, settings)
    intent = planning.Intent.from_spec(
        mesh.spec,
        owner,
        clients.region,
        settings.rules_per_security_group,
        cluster,
        boundary=settings.boundary,
        recorded=recorded_cni,
    )
    topology = discovery.discover(clients, intent, settings.role_memory, fresh=fresh)
    plan = planning.plan(topology, intent)
    enforce = write and mesh.spec.mode is models.Mode.ENFORCE
    applied = (
        applying.apply(clients, plan, owner, settings.settling)
        if enforce and not plan.empty
        else None
    )
    if enforce and applied is None:
        applied = applying.ApplyResult()
    return Outcome(
        owner,
        topology,
        plan,
        applied,
        cluster,
        ip_family=settings.ip_family,
        policy_arn=intent.policy_arn,
    )


def withdraw(
    clients: client.AwsClients,
    owner: ownership.Owner,
    retain_cni: bool = True,
    write: bool = True,
    *,
    policy_arns: tuple[str, ...] = (),
    role_memory: roles.RoleMemory | None = None,
    with_roles: bool = True,
    settling: applying.Settling = applying.AWS_SETTLING,
) -> Outcome:
    """Take away every rule and CNI attachment record `owner` holds (mesh deletion).

    Needs no spec beyond `retain_cni`, so a mesh whose spec no longer validates is still
    cleaned up. `policy_arns`: the spec's `cniPolicy.policyArn` when it names one, so that the
    roles it is attached to are searched for the mesh's records too. `with_roles` False: the
    rules of the clients' region only (a region the mesh left; roles are global, and stay the
    business of the reconcile in its current region).
    """
    topology = discovery.discover_owned(
        clients, owner, role_memory, policy_arns, with_roles=with_roles
    )
    intent = planning.Intent(
        owner=owner, traffic=(), attach_cni=False, policy_arn="", retain_cni=retain_cni
    )
    plan = planning.plan(topology, intent)
    applied = applying.apply(clients, plan, owner, settling) if write and not plan.empty else None
    if write and applied is None:
        applied = applying.ApplyResult()
    return Outcome(owner, topology, plan, applied)

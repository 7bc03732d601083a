"""The AWS call budget: how many AWS calls one reconcile makes, against the fewest the APIs allow.

For each size N (default 10, 50 and 200 ASGs) the bench builds a world on a moto server of its
own and converges one mesh through the pipeline the operator and the CLI share
(`reconcile.converge`), as one operator process would, with one `reconcile.Settings` (and so
one memory of IAM, `sgmesh.aws.roles.RoleMemory`, on a clock of the bench's) for every apply:

- "cold": a process that just started; it writes every rule and CNI attachment;
- "after writes": the first resync; the process reads back the roles it wrote to;
- "steady": a resync as the operator makes them all day long; it must find nothing to do;
- "IAM refresh": the same once the IAM refresh has passed, when every profile and role is
  read again (once per refresh, each answer at a time of its own);
- "steady, attach: false": a second mesh over the same ASGs whose steady apply makes no IAM
  call.

It reports, per apply, the AWS calls by operation, how many of them write and how many go to
IAM, the wall time, and the ratio of calls made to the minimum the data requires. It never
reaches a real AWS account: every client it makes points at the moto server it started, and it
stops that server when it ends.

The world
---------
One VPC. Each ASG launches from a launch template of its own (no version named, so
`$Default`; `--template-version` names `$Latest` or pins version 1, as EKS managed node groups
pin a number) that gives one security group and the ARN of an instance profile of its own,
which holds a node role of its own. Every ASG carries the tag `bench: yes`, and the mesh
selects them with that one tag selector. The ASGs run no instance: the read of the SGs
running instances carry answers empty, in one call, as it would for up to 1,000 instances. Up
to 50 ASGs each have an SG of their own; beyond that the ASGs share a pool of 50 SGs (4 ASGs
per SG at N = 200): a full mesh of K SGs gives each SG K inbound rules (one from each member
SG, itself included), and the default quota is 60 inbound rules per SG, so a full mesh cannot
grow one SG per ASG to 200 ASGs; 50 SGs hold 50 rules each. World-building calls use the
world's own clients and are not counted.

The minimum
-----------
Worked out per operation from what AWS holds before the apply; `minimum`'s docstring explains
each line.

moto and AWS
------------
moto answers DescribeSecurityGroups, DescribeSecurityGroupRules, ListEntitiesForPolicy and
ListInstanceProfiles in one page whatever their size; DescribeAutoScalingGroups, and
DescribeLaunchTemplateVersions on the project's moto server (`devtools.aws.moto_aws`), page as
AWS does. So the table gives two minimums:
"minimum", the fewest calls on this moto server (one per request for the calls it does not
page), against which the calls measured are compared (the ratio); and "AWS minimum", what AWS
pages would need. "AWS projected" is what the same reconcile would make on AWS: the calls
measured plus the pages moto folded into one. That holds because the bench checks that every
read asked for the largest page its API allows (`PAGE_LIMITS`); if one did not, the projection
is shown as "?".

"seconds" is the wall time of the apply, "client CPU" the CPU time this process spent in it
(botocore, discovery, planning); the rest is waiting on the moto server, which takes seconds
to serve DescribeSecurityGroupRules over thousands of rules.

The modules
-----------
- `minimum`: what AWS holds (`Facts`), the fewest calls it takes (`minimum`), and the calls an
  apply made against them (`Measurement`). Pure: no I/O.
- `report`: the tables the bench prints and the verdict it ends with. Pure.
- `run`: the worlds on a moto server, the facts read from it, the applies measured; the entry
  point.

Exit status
-----------
0 when the steady applies of every world of at least 50 ASGs (`report.JUDGED_FROM_ASGS`), and
of the largest world, are within the target ratio of calls made to the minimum
(`report.TARGET_STEADY_RATIO`, on moto and on AWS as projected), 1 when one is OVER, 2 for a
usage error, 3 when the bench could not measure (an apply failed or did not settle).

Run from the repository root:
`python -m bench.call_budget [--sizes 10,50,200] [--template-version VERSION] [--json]`
(`make bench`).
"""

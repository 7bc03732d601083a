"""The moto server, with AWS's semantics for the security-group rules sgmesh's safety rests on.

moto keys an SG-referencing rule on its description too, so two writers of the same rule with
different descriptions both succeed, where AWS refuses the second with
`InvalidPermission.Duplicate`. It returns no description for such rules; it applies the
permissions of one AuthorizeSecurityGroupIngress one by one, keeping the first ones when a later
one is a duplicate, where AWS refuses the whole call; and it tags a rule id that does not exist,
where AWS answers `InvalidSecurityGroupRuleId.NotFound`. Races between meshes and operators hinge on
exactly these answers, so the test AWS must give them: this module starts moto's own server
(`python -m devtools.aws.moto_aws` takes moto.server's arguments) after fixing those four
behaviours in the server process. Nothing of sgmesh is patched: the operator and the tests still
reach this server over HTTP only.

It also pages DescribeLaunchTemplateVersions as AWS does (`MaxResults` from 1 to 200, a
`NextToken` while more remain), where moto cuts the answer at `MaxResults` (15 when none is
given) and returns no token: with more templates than a page, the listing sgmesh reads would
lose templates on the test AWS that AWS itself serves on the next page.

Two more changes are for speed alone. moto reads an EC2 resource's tags by scanning every tag
of the region, so a `tag:` filter over many rules cost rules x tags; here each resource's tags
are read from its own entry. And moto parses its AWS managed policies from one JSON text
each time it makes an IAM backend, and after every reset it makes one per partition (to look
up the caller's access key) twice over: about 1.5 s of every test's reset on two cores. Here the
text is parsed once per process; each backend still gets policy objects of its own, made with
the values moto's `AWSManagedPolicy.from_data` gives them.

`tests/integration/test_moto_aws.py` shows each behaviour against the running server, so a moto
upgrade that moves the patched code fails loudly instead of silently testing moto's semantics.
"""

from __future__ import annotations

import base64
import bisect
import functools
import json
import sys
import threading
from collections import Counter
from datetime import datetime
from typing import Any

__all__ = ["install", "main"]


def _identity(rule: Any) -> tuple[object, ...]:
    """What a rule is in AWS: protocol, ports and source. The description is an attribute."""
    ports = (None, None) if rule.ip_protocol == "-1" else (rule.from_port, rule.to_port)
    return (
        rule.ip_protocol,
        ports,
        rule.ip_range.get("CidrIp"),
        rule.ip_range.get("CidrIpv6"),
        rule.source_group.get("GroupId"),
        rule.source_group.get("UserId"),
        rule.prefix_list_id,
    )


def install() -> None:
    """Give this process's moto AWS's rule identity, descriptions, atomic authorizations
    and paged listings of launch template versions."""
    from moto.ec2.models import security_groups as models
    from moto.ec2.responses import security_groups as responses

    rule_class: Any = models.SecurityGroupRule

    def same_rule(self: Any, other: Any) -> bool:
        if not isinstance(other, rule_class):
            return NotImplemented  # type: ignore[no-any-return]
        return _identity(self) == _identity(other)

    def description(self: Any) -> str | None:
        found = self.ip_range.get("Description") or self.source_group.get("Description")
        return str(found) if found else None

    rule_class.__eq__ = same_rule
    rule_class.__hash__ = None
    rule_class.description = property(description)

    # One authorization at a time, so that a refused call can put its group back as it was.
    serialized = threading.Lock()
    handler_class: Any = responses.SecurityGroups
    authorize_one_by_one = handler_class.authorize_security_group_ingress

    def authorize_all_or_nothing(self: Any) -> Any:
        with serialized:
            return _authorize_all_or_nothing(self)

    def _authorize_all_or_nothing(self: Any) -> Any:
        group_ref = self._get_param("GroupId") or self._get_param("GroupName")
        group = self.ec2_backend.get_security_group_by_name_or_id(group_ref) if group_ref else None
        before = list(group.ingress_rules) if group is not None else None
        try:
            return authorize_one_by_one(self)
        except Exception:
            if group is not None and before is not None:
                group.ingress_rules = before
            raise

    handler_class.authorize_security_group_ingress = authorize_all_or_nothing

    # CreateTags on a rule that does not exist (any more) fails in AWS; moto tags the id.
    from moto.ec2 import exceptions
    from moto.ec2.models import EC2Backend

    backend_class: Any = EC2Backend
    check_other_resources = backend_class.do_resources_exist

    def do_resources_exist(self: Any, resource_ids: list[str]) -> Any:
        rule_ids = {
            rule.id
            for groups in self.groups.values()
            for group in groups.values()
            for rule in (*group.ingress_rules, *group.egress_rules)
        }
        for resource_id in resource_ids:
            if resource_id.startswith("sgr-") and resource_id not in rule_ids:
                raise exceptions.InvalidSecurityGroupRuleIdNotFoundError(resource_id)
        return check_other_resources(self, [r for r in resource_ids if not r.startswith("sgr-")])

    backend_class.do_resources_exist = do_resources_exist
    _page_launch_template_versions()
    _read_tags_by_resource()
    _parse_managed_policies_once()


# DescribeLaunchTemplateVersions: AWS's bounds of `MaxResults` (botocore's service model).
TEMPLATE_VERSIONS_MAX_RESULTS = 200


def _page_launch_template_versions() -> None:
    """DescribeLaunchTemplateVersions in pages, as AWS answers it.

    AWS returns at most `MaxResults` (1 to 200) versions a call and a `NextToken` while more
    remain, which the next call passes to get the next page. AWS documents no default page size
    for this call, and a call without `MaxResults` is an unpaginated one in EC2's terms: here it
    gets every version in one answer. moto cuts the answer at `MaxResults`, 15 when none is given,
    and never returns a token. A token that no answer gave is refused with
    `InvalidParameterValue`, EC2's answer to a bad `NextToken`, never read as a first call.

    moto lists the templates in the order they were made, and so do the pages: a token names the
    last version it gave by its template's creation time and id, so a template made or deleted
    between two calls shifts no other template to another page.
    """
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import InvalidParameterValue
    from moto.ec2.models.launch_templates import LaunchTemplateBackend
    from moto.ec2.responses.launch_templates import LaunchTemplates

    backend_class: Any = LaunchTemplateBackend
    cut_at_max_results = backend_class.describe_launch_template_versions

    def every_version(self: Any, *args: Any, **kwargs: Any) -> Any:
        # The backend cuts nothing: the handler cuts the page and returns the token. (With
        # `MinVersion` alone, moto's backend reads `max_results` versions from there: now every
        # version from there, which the handler pages.)
        kwargs["max_results"] = sys.maxsize
        return cut_at_max_results(self, *args, **kwargs)

    backend_class.describe_launch_template_versions = every_version

    handler_class: Any = LaunchTemplates
    describe_every_version = handler_class.describe_launch_template_versions

    def describe_one_page(self: Any) -> Any:
        limit = self._get_int_param("MaxResults")
        if limit is not None and not 1 <= limit <= TEMPLATE_VERSIONS_MAX_RESULTS:
            raise InvalidParameterValue(
                f"Value ( {limit} ) for parameter maxResults is invalid. "
                f"Parameter must be between 1 and {TEMPLATE_VERSIONS_MAX_RESULTS}."
            )
        token = self._get_param("NextToken")
        after = _position_in_token(token) if token else None
        if token and after is None:
            raise InvalidParameterValue(
                f"Value ( {token} ) for parameter NextToken is invalid. The token is invalid."
            )
        answer = describe_every_version(self).result
        listed = answer["LaunchTemplateVersions"]
        positions = _positions(listed, self.ec2_backend.launch_templates)
        order = sorted(range(len(listed)), key=positions.__getitem__)
        start = 0 if after is None else bisect.bisect_right([positions[i] for i in order], after)
        end = len(order) if limit is None else min(start + limit, len(order))
        page = {**answer, "LaunchTemplateVersions": [listed[i] for i in order[start:end]]}
        if end < len(order):
            page["NextToken"] = _token(positions[order[end - 1]])
        return ActionResult(page)

    handler_class.describe_launch_template_versions = describe_one_page


# Where a version is in the listing: its template's creation time and id, then how many
# versions of that template come before it in the answer ($Latest and $Default, or the
# numbers asked for one template).
_Position = tuple[str, str, int]


def _positions(listed: list[dict[str, Any]], templates: dict[str, Any]) -> list[_Position]:
    seen: Counter[str] = Counter()
    positions = []
    for version in listed:
        template = templates[version["LaunchTemplateId"]]
        created = template.create_time.isoformat(timespec="microseconds")
        positions.append((created, template.id, seen[template.id]))
        seen[template.id] += 1
    return positions


def _token(position: _Position) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def _position_in_token(token: str) -> _Position | None:
    """The position a token of `_token` names; None for any other text."""
    try:
        time, template_id, seen = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        return None
    if not (isinstance(time, str) and isinstance(template_id, str) and type(seen) is int):
        return None
    return time, template_id, seen


def _read_tags_by_resource() -> None:
    """A resource's own tags read from its entry, not by a scan of every tag of the region.

    moto answers `get_tags()` of an EC2 resource (which every `tag:` filter calls, once per
    resource it tests) with DescribeTags filtered on the resource's id: a regular expression
    matched against every tag of the region. A filter over the region's rules thus costs rules
    x tags: 0.33 s (in process) for the rules a mesh owns among 1,200 rules, which made the
    benchmarks measure moto rather than the operator. The answer is the same list, read from
    the resource's own entry: a resource id has no wildcard, and DescribeTags's resource-id
    filter matches the whole id.
    """
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    resource_class: Any = TaggedEC2Resource

    def get_tags(self: Any) -> list[dict[str, str]]:
        resource_id = self.id
        if not resource_id:
            return []
        resource_type = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
        return [
            {"resource_id": resource_id, "key": key, "value": value, "resource_type": resource_type}
            for key, value in self.ec2_backend.tags.get(resource_id, {}).items()
        ]

    resource_class.get_tags = get_tags


def _parse_managed_policies_once() -> None:
    """IAM backends made from AWS's managed policies parsed once, not once per backend."""
    from moto.iam import models as iam
    from moto.iam.aws_managed_policies import aws_managed_policies_data
    from moto.settings import load_iam_aws_managed_policies

    @functools.cache
    def parsed() -> list[tuple[str, dict[str, Any]]]:
        # What `AWSManagedPolicy.from_data` passes to the policy, minus the account and region.
        return [
            (
                name,
                {
                    "default_version_id": data.get("DefaultVersionId"),
                    "path": data.get("Path"),
                    "document": json.dumps(data.get("Document")),
                    "create_date": datetime.fromisoformat(data["CreateDate"]),
                    "update_date": datetime.fromisoformat(data["UpdateDate"]),
                },
            )
            for name, data in json.loads(aws_managed_policies_data).items()
        ]

    policy_class: Any = iam.AWSManagedPolicy

    def init_aws_policies(self: Any) -> list[Any]:
        if not load_iam_aws_managed_policies():
            return []
        return [
            policy_class(name, self.account_id, self.region_name, **values)
            for name, values in parsed()
        ]

    backend_class: Any = iam.IAMBackend
    backend_class._init_aws_policies = init_aws_policies


def main(argv: list[str] | None = None) -> None:
    install()
    from moto import server

    server.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()

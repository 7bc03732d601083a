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

One more change is for speed alone: moto parses its AWS managed policies from one JSON text
each time it makes an IAM backend, and after every reset it makes one per partition (to look
up the caller's access key) twice over: about 1.5 s of every test's reset on two cores. Here the
text is parsed once per process; each backend still gets policy objects of its own, made with
the values moto's `AWSManagedPolicy.from_data` gives them.

`tests/integration/test_moto_aws.py` shows each behaviour against the running server, so a moto
upgrade that moves the patched code fails loudly instead of silently testing moto's semantics.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
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
    """Give this process's moto AWS's rule identity, descriptions and atomic authorizations."""
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
    _parse_managed_policies_once()


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

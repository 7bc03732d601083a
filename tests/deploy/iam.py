"""The operator's AWS permissions: what it asks of AWS and whether deploy/iam-policy.json allows it.

- `MotoRecording` reads the requests a moto server received (moto's own recorder, so they are
  counted at the server, on the wire) and keeps those of the operator, which it tells from
  the test's own set-up calls by the app id in its User-Agent. It adds what AWS knows of the
  resources a request names and IAM reads at the request (the VPC of a security group), asked
  of the same server.
- `authorizations` turns one request into the authorization checks AWS makes for it: the
  action, the resource ARN and the condition keys the request and its resources carry (tags,
  policy ARN, the creating action for tags applied at creation, a security group's `ec2:Vpc`).
- `Policy` evaluates those checks against an identity policy the way IAM does for the
  operators the policy uses (String*, Arn*, Null, ForAllValues/ForAnyValue); an operator it
  does not know fails loudly instead of being guessed. `operator_policy` is
  deploy/iam-policy.json with its placeholders filled in for a cluster of the tests.
- `operations_in_code` lists the AWS operations the operator's source can call (or, given
  `DOCTOR_MODULES`, those `sgmesh doctor` can call: it has its own read-only policy).
"""

from __future__ import annotations

import ast
import base64
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import botocore.session

from devtools import operator_harness
from sgmesh.api import iam_policy, models
from tests.deploy.render import DEPLOY, REPO_ROOT

__all__ = [
    "ACCOUNT",
    "CLUSTER",
    "DOCTOR_APP_ID",
    "DOCTOR_MODULES",
    "DOCTOR_POLICY_FILE",
    "OPERATOR_APP_ID",
    "POLICY_FILE",
    "REGION",
    "Authorization",
    "AwsRequest",
    "MotoRecording",
    "Policy",
    "authorizations",
    "operations_in_code",
    "operator_policy",
]

POLICY_FILE = DEPLOY / "iam-policy.json"
DOCTOR_POLICY_FILE = DEPLOY / "doctor-iam-policy.json"
OPERATOR_SOURCE = REPO_ROOT / "operator" / "sgmesh"
# `sgmesh doctor` is run by a person with deploy/doctor-iam-policy.json, not by the operator.
DOCTOR_ONLY_MODULES = (OPERATOR_SOURCE / "aws" / "inventory.py",)
# Doctor also asks EKS for aws-node's Pod Identity association, through the operator's module.
DOCTOR_MODULES = (*DOCTOR_ONLY_MODULES, OPERATOR_SOURCE / "aws" / "pod_identity.py")
ACCOUNT = "123456789012"  # the account moto answers as
REGION = "us-east-1"  # the tests' region (devtools.aws.moto_server)
CLUSTER = operator_harness.OPERATOR_CLUSTER  # the cluster the tests' operator serves
# Given to the operator as AWS_SDK_UA_APP_ID: botocore puts `app/<id>` in its User-Agent.
OPERATOR_APP_ID = "sgmesh-under-test"
DOCTOR_APP_ID = "sgmesh-doctor-under-test"
# The operator's clients (`AwsClients` attributes, which are also the IAM action prefixes)
# → the boto3 service names.
SERVICES = {
    "autoscaling": "autoscaling",
    "ec2": "ec2",
    "iam": "iam",
    "servicequotas": "service-quotas",
    "eks": "eks",
}

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")


@dataclass(frozen=True)
class AwsRequest:
    """One AWS API request as the server received it (query protocol: form parameters)."""

    service: str
    operation: str
    region: str
    params: Mapping[str, str]
    user_agent: str
    # What AWS knew of the security groups the request names, which IAM reads as their
    # `ec2:Vpc`: group id → VPC id. A group not in it has no VPC for the policy to match.
    security_group_vpcs: Mapping[str, str] = field(default_factory=dict)

    @property
    def action(self) -> str:
        return f"{self.service}:{self.operation}"

    def arn_prefix(self, service: str) -> str:
        """`arn:<partition>:<service>:<region>:<account>` of this request's region (IAM's ARNs
        name no region)."""
        region = "" if service == "iam" else self.region
        return f"arn:{models.partition_of(self.region)}:{service}:{region}:{ACCOUNT}"

    def numbered(self, prefix: str) -> list[str]:
        """The values of `prefix.1`, `prefix.2`, … in order."""
        found: dict[int, str] = {}
        for key, value in self.params.items():
            head, _, index = key.rpartition(".")
            if head == prefix and index.isdigit():
                found[int(index)] = value
        return [found[index] for index in sorted(found)]

    def tags(self, prefix: str) -> dict[str, str]:
        """Tags listed as `prefix.N.Key` / `prefix.N.Value`."""
        keys = self.numbered_fields(prefix, "Key")
        values = self.numbered_fields(prefix, "Value")
        return {key: values.get(index, "") for index, key in keys.items()}

    def numbered_fields(self, prefix: str, name: str) -> dict[int, str]:
        pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.{re.escape(name)}$")
        return {
            int(match.group(1)): value
            for key, value in self.params.items()
            if (match := pattern.match(key))
        }


class MotoRecording:
    """moto's request recorder on a server started with MOTO_RECORDER_FILEPATH set."""

    def __init__(self, endpoint_url: str) -> None:
        self._endpoint = endpoint_url

    def _call(self, verb: str, method: str = "POST") -> bytes:
        request = urllib.request.Request(
            f"{self._endpoint}/moto-api/recorder/{verb}", data=b"" if method == "POST" else None
        )
        request.method = method
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())

    def start(self) -> None:
        self._call("start-recording")

    def reset(self) -> None:
        self._call("reset-recording")

    def requests(self) -> list[AwsRequest]:
        """Every AWS API request recorded since the last reset, in order, with the VPCs of the
        security groups the ingress writes name."""
        text = self._call("download-recording", method="GET").decode()
        return self.with_security_group_vpcs(
            [
                request
                for line in text.splitlines()
                if line.strip() and (request := _parse(json.loads(line))) is not None
            ]
        )

    def with_security_group_vpcs(self, requests: Iterable[AwsRequest]) -> list[AwsRequest]:
        """`requests`, each ingress write with the VPC of its security group as the server
        knows it now (a group's VPC never changes; a group deleted since is left out, and the
        write is then refused, as IAM would refuse it without the key)."""
        requests = list(requests)

        def is_write(request: AwsRequest) -> bool:
            return request.action in _INGRESS_WRITES and "GroupId" in request.params

        groups_by_region: dict[str, set[str]] = {}
        for request in filter(is_write, requests):
            groups_by_region.setdefault(request.region, set()).add(request.params["GroupId"])
        vpcs = {
            (region, group_id): vpc_id
            for region, group_ids in groups_by_region.items()
            for group_id, vpc_id in self._security_group_vpcs(region, group_ids).items()
        }

        def with_vpc(request: AwsRequest) -> AwsRequest:
            group_id = request.params["GroupId"]
            vpc_id = vpcs.get((request.region, group_id))
            return replace(request, security_group_vpcs={group_id: vpc_id} if vpc_id else {})

        return [with_vpc(request) if is_write(request) else request for request in requests]

    def _security_group_vpcs(self, region: str, group_ids: Iterable[str]) -> dict[str, str]:
        # Asked as the test (no operator app id in the User-Agent): not one of the operator's.
        ec2: Any = boto3.session.Session().client(
            "ec2",
            region_name=region,
            endpoint_url=self._endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        # A `group-id` filter answers for the groups that exist instead of failing on one gone.
        answer = ec2.describe_security_groups(
            Filters=[{"Name": "group-id", "Values": sorted(group_ids)}]
        )
        return {group["GroupId"]: group["VpcId"] for group in answer["SecurityGroups"]}

    def operator_requests(self) -> list[AwsRequest]:
        return self.requests_of(OPERATOR_APP_ID)

    def requests_of(self, app_id: str) -> list[AwsRequest]:
        """The requests of a process started with AWS_SDK_UA_APP_ID=`app_id`."""
        return [r for r in self.requests() if f"app/{app_id}" in r.user_agent]


def _parse(entry: Mapping[str, Any]) -> AwsRequest | None:
    headers = {key.lower(): value for key, value in entry.get("headers", {}).items()}
    scope = _CREDENTIAL_SCOPE.search(headers.get("authorization", ""))
    if scope is None:  # moto's own API (reset, recorder): not an AWS request
        return None
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode()
    region, service = scope.groups()
    target = headers.get("x-amz-target")
    url = urllib.parse.urlsplit(entry.get("url", ""))
    if target:  # the JSON protocol (Service Quotas): the operation is named in a header
        decoded = json.loads(body or "{}")
        params = {str(k): str(v) for k, v in decoded.items()} | {"Action": target.split(".")[-1]}
    elif service in _REST_SERVICES:  # REST (EKS): the operation is the method and the path
        params = _rest_params(service, entry.get("method", ""), url.path)
        params |= dict(urllib.parse.parse_qsl(url.query))
    else:
        params = dict(urllib.parse.parse_qsl(url.query)) | dict(urllib.parse.parse_qsl(body))
    return AwsRequest(
        service=service,
        operation=params.get("Action", "?"),
        region=region,
        params=params,
        user_agent=headers.get("user-agent", ""),
    )


_REST_SERVICES = frozenset({"eks"})


@cache
def _rest_routes(service: str) -> list[tuple[str, re.Pattern[str], str]]:
    """(method, path pattern, operation) of a REST service's model, the most literal first."""
    model = botocore.session.get_session().get_service_model(service)
    routes = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        template = http["requestUri"].partition("?")[0]
        pattern = re.sub(
            r"\\{(\w+)(\\\+)?\\}",
            lambda label: f"(?P<{label.group(1)}>{'.+' if label.group(2) else '[^/]+'})",
            re.escape(template),
        )
        routes.append((http["method"], re.compile(pattern), name))
    return sorted(routes, key=lambda route: route[1].pattern.count("(?P<"))


def _rest_params(service: str, method: str, path: str) -> dict[str, str]:
    """The operation (as `Action`) and the labels of the path of a REST request."""
    path = urllib.parse.unquote(path)
    for route_method, pattern, operation in _rest_routes(service):
        if route_method == method and (match := pattern.fullmatch(path)):
            return {**match.groupdict(), "Action": operation}
    return {"Action": "?"}


# ---- authorization checks ------------------------------------------------------------------


@dataclass(frozen=True)
class Authorization:
    """One check IAM makes: may the caller do `action` on `resource` in this context?"""

    action: str
    resource: str
    context: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)

    def describe(self) -> str:
        context = f" with {dict(self.context)}" if self.context else ""
        return f"{self.action} on {self.resource}{context}"


def _tag_context(tags: Mapping[str, str], keys: Iterable[str] = ()) -> dict[str, Any]:
    context: dict[str, Any] = {f"aws:RequestTag/{key}": value for key, value in tags.items()}
    tag_keys = tuple(dict.fromkeys([*tags, *keys]))
    if tag_keys:
        context["aws:TagKeys"] = tag_keys
    return context


_EC2_RESOURCE_TYPES = {"sgr-": "security-group-rule", "sg-": "security-group"}
_INGRESS_WRITES = frozenset({"ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"})


def _ec2_arn(request: AwsRequest, resource_id: str) -> str:
    for prefix, kind in _EC2_RESOURCE_TYPES.items():
        if resource_id.startswith(prefix):
            return f"{request.arn_prefix('ec2')}:{kind}/{resource_id}"
    raise AssertionError(f"{request.action} on an unexpected resource {resource_id}")


def _security_group(request: AwsRequest) -> Authorization:
    """The check on the security group an ingress write names. Of the resource types involved,
    only `security-group` carries `ec2:Vpc` (the ARN of the group's VPC); the rules do not."""
    ec2 = request.arn_prefix("ec2")
    group_id = request.params["GroupId"]
    vpc_id = request.security_group_vpcs.get(group_id)
    context = {"ec2:Vpc": f"{ec2}:vpc/{vpc_id}"} if vpc_id else {}
    return Authorization(request.action, f"{ec2}:security-group/{group_id}", context)


def authorizations(request: AwsRequest) -> list[Authorization]:
    """The checks AWS makes for `request` (per the Service Authorization Reference)."""
    action = request.action
    params = request.params
    ec2 = request.arn_prefix("ec2")
    iam = request.arn_prefix("iam")
    match action:
        case "ec2:AuthorizeSecurityGroupIngress":
            checks = [_security_group(request)]
            for index, kind in request.numbered_fields("TagSpecification", "ResourceType").items():
                tags = request.tags(f"TagSpecification.{index}.Tag")
                # Tags given at creation: the rule (not yet known by id) and CreateTags on it.
                rule = f"{ec2}:{kind}/*"
                checks.append(Authorization(action, rule, _tag_context(tags)))
                created = {**_tag_context(tags), "ec2:CreateAction": request.operation}
                checks.append(Authorization("ec2:CreateTags", rule, created))
            return checks
        case "ec2:RevokeSecurityGroupIngress":
            # Rules named by id are resources of the request too.
            return [_security_group(request)] + [
                Authorization(action, f"{ec2}:security-group-rule/{rule_id}")
                for rule_id in request.numbered("SecurityGroupRuleId")
            ]
        case "ec2:CreateTags" | "ec2:DeleteTags":
            tags = request.tags("Tag")
            context = (
                _tag_context(tags)
                if action == "ec2:CreateTags"
                else _tag_context({}, keys=tags.keys())
            )
            return [
                Authorization(action, _ec2_arn(request, resource_id), context)
                for resource_id in request.numbered("ResourceId")
            ]
        case "iam:AttachRolePolicy" | "iam:DetachRolePolicy":
            return [
                Authorization(
                    action,
                    f"{iam}:role/{params['RoleName']}",
                    {"iam:PolicyARN": params["PolicyArn"]},
                )
            ]
        case "iam:TagRole":
            tags = request.tags("Tags.member")
            return [Authorization(action, f"{iam}:role/{params['RoleName']}", _tag_context(tags))]
        case "iam:UntagRole":
            keys = request.numbered("TagKeys.member")
            context = _tag_context({}, keys=keys)
            return [Authorization(action, f"{iam}:role/{params['RoleName']}", context)]
        case "iam:GetInstanceProfile":
            return [
                Authorization(action, f"{iam}:instance-profile/{params['InstanceProfileName']}")
            ]
        case "iam:ListInstanceProfiles":
            # An IAM listing is authorized on the path it lists under ("/" when none is given).
            path = params.get("PathPrefix", "/")
            return [Authorization(action, f"{iam}:instance-profile{path}")]
        case (
            "iam:ListRoleTags"
            | "iam:ListAttachedRolePolicies"
            | "iam:ListRolePolicies"
            | "iam:GetRolePolicy"
        ):
            return [Authorization(action, f"{iam}:role/{params['RoleName']}")]
        case "iam:ListEntitiesForPolicy" | "iam:GetPolicy" | "iam:GetPolicyVersion":
            return [Authorization(action, params["PolicyArn"])]
        case "eks:DescribeCluster" | "eks:ListPodIdentityAssociations":
            return [Authorization(action, f"{request.arn_prefix('eks')}:cluster/{params['name']}")]
        case _:
            # Describe*, GetServiceQuota: no resource-level permissions.
            return [Authorization(action, "*")]


# ---- policy evaluation ---------------------------------------------------------------------


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM wildcards: `*` any run of characters, `?` one character, nothing else special."""
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _equals(pattern: str, value: str) -> bool:
    return pattern == value


_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": _equals,
    "StringLike": _glob,
    # IAM treats ArnEquals like ArnLike: wildcards allowed in each segment.
    "ArnEquals": _glob,
    "ArnLike": _glob,
}


def _condition_holds(
    operator: str, key: str, expected: list[str], context: Mapping[str, Any]
) -> bool:
    qualifier, _, name = operator.rpartition(":")
    present = key in context
    if name == "Null" and not qualifier:
        return (not present) == (expected == ["true"])
    if name not in _MATCHERS or qualifier not in {"", "ForAllValues", "ForAnyValue"}:
        raise AssertionError(f"condition operator {operator} is not understood by this test")
    match = _MATCHERS[name]
    actual = context.get(key)
    values = [str(v) for v in actual] if isinstance(actual, tuple) else [str(actual)]
    if qualifier == "ForAllValues":
        return not present or all(any(match(p, v) for p in expected) for v in values)
    if qualifier == "ForAnyValue":
        return present and any(any(match(p, v) for p in expected) for v in values)
    return present and any(match(p, values[0]) for p in expected)


@dataclass(frozen=True)
class Statement:
    sid: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: Mapping[str, Mapping[str, str | list[str]]]

    def applies(self, check: Authorization) -> bool:
        return (
            any(_glob(action, check.action, ignore_case=True) for action in self.actions)
            and any(_glob(resource, check.resource) for resource in self.resources)
            and all(
                _condition_holds(operator, key, _as_list(expected), check.context)
                for operator, keys in self.conditions.items()
                for key, expected in keys.items()
            )
        )


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]

    @classmethod
    def load(cls, path: Path = POLICY_FILE) -> Policy:
        """The policy of a file as it is: deploy/iam-policy.json's placeholders unfilled (its
        actions are all it is good for; `operator_policy` fills them in)."""
        return cls.parse(json.loads(path.read_text()))

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> Policy:
        statements = []
        for raw in document["Statement"]:
            unsupported = set(raw) - {"Sid", "Effect", "Action", "Resource", "Condition"}
            if unsupported:
                raise AssertionError(f"statement {raw.get('Sid')} uses {sorted(unsupported)}")
            statements.append(
                Statement(
                    sid=raw.get("Sid", ""),
                    effect=raw["Effect"],
                    actions=tuple(_as_list(raw["Action"])),
                    resources=tuple(_as_list(raw["Resource"])),
                    conditions=raw.get("Condition", {}),
                )
            )
        return cls(tuple(statements))

    @property
    def actions(self) -> set[str]:
        return {action for s in self.statements if s.effect == "Allow" for action in s.actions}

    def allows(self, check: Authorization) -> bool:
        """An explicit Deny wins, then any Allow; nothing applying means denied."""
        applying = [s for s in self.statements if s.applies(check)]
        return any(s.effect == "Allow" for s in applying) and not any(
            s.effect == "Deny" for s in applying
        )

    def refused(self, requests: Iterable[AwsRequest]) -> list[str]:
        """Each check of `requests` the policy does not allow, described once."""
        refused: dict[str, None] = {}
        for request in requests:
            for check in authorizations(request):
                if not self.allows(check):
                    refused[check.describe()] = None
        return list(refused)


def operator_policy(
    vpc_id: str,
    cluster: str = CLUSTER,
    region: str = REGION,
    account: str = ACCOUNT,
    partition: str = "aws",
) -> Policy:
    """deploy/iam-policy.json for a cluster of the tests: each placeholder replaced by the
    cluster's value, as the person installing sgmesh is told to (deploy/README.md)."""
    text = POLICY_FILE.read_text()
    placeholders = iam_policy.PLACEHOLDERS
    for placeholder, value in (
        (placeholders.cluster, cluster),
        (placeholders.vpc_id, vpc_id),
        (placeholders.partition, partition),
        (placeholders.region, region),
        (placeholders.account, account),
    ):
        text = text.replace(placeholder, value)
    left = sorted(set(re.findall(r"<[A-Z_]+>", text)))
    assert not left, f"{POLICY_FILE.name} has placeholders nobody fills in: {left}"
    return Policy.parse(json.loads(text))


# ---- what the code calls -------------------------------------------------------------------


@cache
def _operation_names(service: str) -> Mapping[str, str]:
    # Only the client's model is read: no credentials, no request.
    client: Any = boto3.session.Session().client(SERVICES[service], region_name="us-east-1")  # type: ignore[call-overload]
    return dict(client.meta.method_to_api_mapping)


def _calls(tree: ast.AST) -> Iterator[tuple[str, str]]:
    """(service, client method) for every `<x>.<service>.<method>` reference, called or passed
    on (functools.partial), and every `<x>.<service>.get_paginator("<method>")`."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)):
            continue
        service = node.value.attr
        if service not in SERVICES:
            continue
        yield service, node.attr
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get_paginator"
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr in SERVICES
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            yield node.func.value.attr, str(node.args[0].value)


def operations_in_code(modules: Iterable[Path] | None = None) -> set[str]:
    """Every AWS operation the modules can call, as IAM actions; by default the operator's
    source (every module but doctor's)."""
    if modules is None:
        modules = [p for p in OPERATOR_SOURCE.rglob("*.py") if p not in DOCTOR_ONLY_MODULES]
    found: set[str] = set()
    for path in sorted(modules):
        for service, method in _calls(ast.parse(path.read_text(), str(path))):
            operation = _operation_names(service).get(method)
            if operation is not None:
                found.add(f"{service}:{operation}")
    return found

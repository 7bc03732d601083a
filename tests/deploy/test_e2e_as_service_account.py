"""The operator's end-to-end scenarios, with the operator authenticated only as deploy/'s
ServiceAccount (a TokenRequest token; the rights of deploy/'s roles) instead of as admin.

The scenarios are those of tests/e2e/scenarios_operator.py, tests/e2e/scenarios_members.py
(members beyond ASGs: EC2NodeClasses, ENIConfigs, Nodes, the aws-node ServiceAccount) and
tests/e2e/scenarios_pod_security_groups.py (SecurityGroupPolicies), collected here unchanged
and only here (tests/e2e/test_operator.py runs the first as admin, as a smoke test), so that
every read they need is proven allowed by deploy/'s RBAC: the fixtures they ask for
(`operator`, `start_operator`, `meshes`, `aws_proxy`) come from this directory's conftest.
After each one, every AWS request the operator made — read at the moto server — must be
allowed by deploy/iam-policy.json.
"""

from __future__ import annotations

import pytest

from tests.e2e import scenarios_members, scenarios_operator, scenarios_pod_security_groups
from tests.e2e.scenarios_members import cluster  # noqa: F401 - the scenarios' fixture
from tests.e2e.scenarios_pod_security_groups import pod_policies  # noqa: F401 - the same

pytestmark = pytest.mark.kube

for _scenarios in (scenarios_operator, scenarios_members, scenarios_pod_security_groups):
    globals().update(
        {name: scenario for name, scenario in vars(_scenarios).items() if name.startswith("test_")}
    )

"""The operator's end-to-end scenarios, with the operator authenticated only as deploy/'s
ServiceAccount (a TokenRequest token; the rights of deploy/'s roles), as a cluster runs it.

The scenarios are those of tests/e2e/scenarios_operator.py, collected here unchanged (and only
here; tests/e2e/test_operator.py runs the first as admin, as a smoke test): the fixtures
they ask for (`operator`, `start_operator`, `meshes`, `aws_proxy`) come from this directory's
conftest. After each one, every AWS request the operator made — read at the moto server — must
be allowed by deploy/iam-policy.json.
"""

from __future__ import annotations

import pytest

from tests.e2e import scenarios_operator as e2e

pytestmark = pytest.mark.kube

globals().update(
    {name: scenario for name, scenario in vars(e2e).items() if name.startswith("test_")}
)

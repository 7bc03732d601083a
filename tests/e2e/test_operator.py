"""The operator run as a cluster admin: one smoke scenario.

Every scenario of tests/e2e/scenarios_operator.py runs in tests/deploy/ with the operator
authenticated as deploy/'s ServiceAccount. The first runs here too, with admin rights, so that
a scenario failing only as the ServiceAccount points at deploy/'s RBAC, not at the operator.
"""

from __future__ import annotations

import pytest

from tests.e2e.scenarios_operator import test_new_mesh_becomes_ready_with_aws_converged

__all__ = ["test_new_mesh_becomes_ready_with_aws_converged"]

pytestmark = pytest.mark.kube

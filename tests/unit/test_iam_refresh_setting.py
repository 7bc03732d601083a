"""`--iam-refresh-seconds` / `SGMESH_IAM_REFRESH_SECONDS`: how long the operator trusts what IAM
said of instance profiles and role tags (`sgmesh.aws.roles.RoleMemory`). From the flag or the
environment, with the same bounds; a bad value is a usage error naming it."""

from __future__ import annotations

import pytest

from sgmesh.aws import roles
from sgmesh.cli import exit_codes, main

VARIABLE = "SGMESH_IAM_REFRESH_SECONDS"


def test_the_iam_refresh_defaults_to_ten_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    arguments = main._parser().parse_args(["run"])
    assert arguments.iam_refresh_seconds == roles.DEFAULT_IAM_REFRESH_SECONDS == 600


def test_the_iam_refresh_comes_from_the_environment_or_the_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(VARIABLE, "120")
    assert main._parser().parse_args(["run"]).iam_refresh_seconds == 120
    flagged = main._parser().parse_args(["run", "--iam-refresh-seconds", "3600"])
    assert flagged.iam_refresh_seconds == 3600


@pytest.mark.parametrize(("value", "expected"), [("5", "10-86400"), ("soon", VARIABLE)])
def test_a_bad_iam_refresh_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str, expected: str
) -> None:
    monkeypatch.setenv(VARIABLE, value)

    code = main.main(["run"])

    assert code == exit_codes.USAGE
    error = capsys.readouterr().err
    assert expected in error
    assert repr(value) in error or value in error
    assert "Traceback" not in error

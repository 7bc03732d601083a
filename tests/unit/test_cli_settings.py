"""Settings from flags and from the environment get the same checks, and a bad value is a usage
error that names the setting and the value — never a traceback. A usage error exits 64 for every
command, a code of its own: 2 is `plan`'s changes pending."""

from __future__ import annotations

import pytest

from sgmesh.cli import exit_codes, main, settings


@pytest.mark.parametrize(
    ("variable", "value", "command", "expected"),
    [
        ("SGMESH_RULES_PER_SECURITY_GROUP", "sixty", "plan", "SGMESH_RULES_PER_SECURITY_GROUP"),
        ("SGMESH_RULES_PER_SECURITY_GROUP", "0", "plan", "at least 1"),
        ("SGMESH_METRICS_PORT", "http", "run", "SGMESH_METRICS_PORT"),
        ("SGMESH_METRICS_PORT", "70000", "run", "0-65535"),
        ("SGMESH_DEFAULT_RESYNC_SECONDS", "5", "run", "at least 10"),
        ("SGMESH_LOG_FORMAT", "xml", "run", "plain, full, json"),
    ],
)
def test_a_bad_setting_from_the_environment_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    command: str,
    expected: str,
) -> None:
    monkeypatch.setenv(variable, value)
    arguments = [command, "-f", "mesh.yaml"] if command == "plan" else [command]

    code = main.main(arguments)

    assert code == exit_codes.USAGE == 64
    error = capsys.readouterr().err
    assert expected in error
    assert repr(value) in error or value in error
    assert "Traceback" not in error


@pytest.mark.parametrize(
    "arguments",
    [
        ["plan", "-f", "mesh.yaml", "--no-such-flag"],
        ["apply", "-f", "mesh.yaml", "--rules-per-security-group", "many"],
        ["plan"],  # -f is required
        ["doctor", "--output", "yaml"],
        ["crd", "extra"],
        ["run", "--log-format", "xml"],
        ["no-such-command"],
        [],
    ],
)
def test_a_bad_flag_exits_64_for_every_command_never_2(
    capsys: pytest.CaptureFixture[str], arguments: list[str]
) -> None:
    code = main.main(arguments)

    assert code == exit_codes.USAGE == 64
    error = capsys.readouterr().err
    assert "sgmesh" in error
    assert "error:" in error
    assert "Traceback" not in error


@pytest.mark.parametrize("arguments", [["--help"], ["plan", "--help"], ["--version"]])
def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str], arguments: list[str]) -> None:
    assert main.main(arguments) == exit_codes.OK
    assert capsys.readouterr().out


def test_a_bad_cluster_name_is_a_usage_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SGMESH_CLUSTER_NAME", "no/slashes")

    code = main.main(["run"])

    assert code == exit_codes.USAGE
    error = capsys.readouterr().err
    assert "SGMESH_CLUSTER_NAME" in error
    assert "no/slashes" in error


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (settings.TEST_TIMER_TICK, "fast"),
        (settings.TEST_TIMER_TICK, "0"),
        (settings.TEST_TIMER_TICK, "-1"),
        (settings.TEST_TIMER_TICK, "nan"),
        (settings.TEST_TIMER_TICK, "inf"),
        (settings.TEST_RESYNC_FLOOR, "ten"),
        (settings.TEST_RESYNC_FLOOR, "1.5"),
        (settings.TEST_RESYNC_FLOOR, "0"),
    ],
)
def test_a_bad_test_suite_setting_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, value)

    code = main.main(["run"])

    assert code == exit_codes.USAGE
    error = capsys.readouterr().err
    assert variable in error
    assert repr(value) in error
    assert "Traceback" not in error


def test_the_test_suite_floor_lowers_the_default_resync_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(settings.TEST_RESYNC_FLOOR, "2")
    monkeypatch.setenv(settings.TEST_TIMER_TICK, "0.5")

    arguments = main._parser().parse_args(["run", "--default-resync-seconds", "2"])

    assert arguments.default_resync_seconds == 2
    assert arguments.timer_tick_seconds == 0.5


def test_doctor_means_usage_by_the_same_code_as_every_other_command() -> None:
    from sgmesh.doctor import command as doctor

    assert doctor.EXIT_USAGE == exit_codes.USAGE
    assert len({exit_codes.OK, exit_codes.ERROR, exit_codes.PENDING, exit_codes.USAGE}) == 4
    assert exit_codes.USAGE not in {doctor.EXIT_OK, doctor.EXIT_FOUND, doctor.EXIT_ERROR}

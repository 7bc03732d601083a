"""Settings from flags and from the environment get the same checks, and a bad value is a usage
error that names the setting and the value — never a traceback."""

from __future__ import annotations

import pytest

from sgmesh.cli import main as cli


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

    with pytest.raises(SystemExit) as stopped:
        cli.main(arguments)

    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert expected in error
    assert repr(value) in error or value in error
    assert "Traceback" not in error


def test_a_bad_cluster_name_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SGMESH_CLUSTER_NAME", "no/slashes")

    code = cli.main(["run"])

    assert code == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert "SGMESH_CLUSTER_NAME" in error
    assert "no/slashes" in error


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (cli.TEST_TIMER_TICK, "fast"),
        (cli.TEST_TIMER_TICK, "0"),
        (cli.TEST_TIMER_TICK, "-1"),
        (cli.TEST_TIMER_TICK, "nan"),
        (cli.TEST_TIMER_TICK, "inf"),
        (cli.TEST_RESYNC_FLOOR, "ten"),
        (cli.TEST_RESYNC_FLOOR, "1.5"),
        (cli.TEST_RESYNC_FLOOR, "0"),
    ],
)
def test_a_bad_test_suite_setting_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, value)

    code = cli.main(["run"])

    assert code == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert variable in error
    assert repr(value) in error
    assert "Traceback" not in error


def test_the_test_suite_floor_lowers_the_default_resync_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(cli.TEST_RESYNC_FLOOR, "2")
    monkeypatch.setenv(cli.TEST_TIMER_TICK, "0.5")

    arguments = cli._parser().parse_args(["run", "--default-resync-seconds", "2"])

    assert arguments.default_resync_seconds == 2
    assert arguments.timer_tick_seconds == 0.5

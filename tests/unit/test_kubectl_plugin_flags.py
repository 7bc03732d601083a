"""`kubectl sgmesh`'s reading of kubectl's global flags: wherever they stand, in either form,
and never taking what belongs to `sgmesh`."""

from __future__ import annotations

import pytest

from sgmesh.cli import plugin


@pytest.mark.parametrize(
    "argv",
    [
        ["--context", "prod", "--kubeconfig", "/k", "doctor", "-o", "json"],
        ["--context=prod", "doctor", "--kubeconfig=/k", "-o", "json"],
        ["doctor", "-o", "json", "--kubeconfig", "/k", "--context", "prod"],
    ],
)
def test_kubectl_flags_are_taken_wherever_they_stand(argv: list[str]) -> None:
    flags, rest = plugin.split_kubectl_flags(argv)

    assert flags == plugin.KubectlFlags(kubeconfig="/k", context="prod")
    assert rest == ["doctor", "-o", "json"]


def test_without_kubectl_flags_the_arguments_are_sgmeshs() -> None:
    argv = ["plan", "-f", "mesh.yaml", "--cluster", "prod"]

    assert plugin.split_kubectl_flags(argv) == (plugin.KubectlFlags(), argv)


def test_arguments_after_a_double_dash_are_left_alone() -> None:
    flags, rest = plugin.split_kubectl_flags(["doctor", "--", "--context", "x"])

    assert flags == plugin.KubectlFlags()
    assert rest == ["doctor", "--", "--context", "x"]


@pytest.mark.parametrize(
    "argv", [["--context"], ["--context", "--kubeconfig", "/k"], ["--context="]]
)
def test_a_flag_without_its_value_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(plugin.UsageError, match="--context needs a value"):
        plugin.split_kubectl_flags(argv)


def test_main_reports_a_missing_value_as_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert plugin.main(["doctor", "--context"]) == 64
    assert "kubectl sgmesh: error: --context needs a value" in capsys.readouterr().err

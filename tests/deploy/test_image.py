"""The operator image, built for real from the Dockerfile (devtools/image.py): it runs
`sgmesh` as the uid deploy/ runs the pod as, which has no passwd entry; its entrypoint, user and
port are the ones deploy/ relies on; it holds the package's environment and nothing to build or
install with; and its SBOM lists what the operator's lock pins."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from devtools import image
from tests.deploy.render import REPO_ROOT, Objects, find, operator_environment

# The tests of the image run on one worker of a parallel run: the session's `operator_image`
# build (a buildah build tagging localhost/sgmesh:dev) happens once, and no other worker
# re-tags the image while containers of it are made.
pytestmark = [pytest.mark.image, pytest.mark.xdist_group("image")]

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
# Where the Dockerfile writes the CycloneDX SBOM of the operator's environment (README).
SBOM = Path("opt/sgmesh/sbom.cdx.json")


def _pod_user(objects: Objects) -> str:
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    return f"{pod['runAsUser']}:{pod['runAsGroup']}"


def _container(objects: Objects) -> dict[str, Any]:
    [container] = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_sgmesh_version_and_help_run_as_the_deployments_uid(
    operator_image: str, base_objects: Objects
) -> None:
    user = _pod_user(base_objects)
    with image.mounted(operator_image) as root:
        passwd = (root / "etc" / "passwd").read_text()
    # What makes this test worth having: the uid is nobody the image knows by name.
    assert f":{user.split(':')[0]}:" not in passwd

    version = image.run_in_image(operator_image, ["sgmesh", "--version"], user=user)
    usage = image.run_in_image(operator_image, ["sgmesh", "run", "--help"], user=user)

    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"sgmesh {PROJECT['version']}"
    assert usage.returncode == 0, usage.stderr
    assert "--metrics-port" in usage.stdout


def test_entrypoint_user_and_port_are_what_deploy_relies_on(
    operator_image: str, base_objects: Objects
) -> None:
    config = image.image_config(operator_image)
    container = _container(base_objects)
    [port] = container["ports"]

    # The pod sets no command: the image's entrypoint is what runs, with no arguments.
    assert "command" not in container
    assert "args" not in container
    assert config["Entrypoint"] == ["sgmesh", "run"]
    assert not config.get("Cmd")
    # One uid for the image and the pod: a numeric one, so that runAsNonRoot can be checked.
    assert config["User"] == _pod_user(base_objects)
    assert config["User"].split(":")[0] != "0"
    # One port: the image exposes the port the pod names and the operator is told to use.
    assert set(config["ExposedPorts"]) == {f"{port['containerPort']}/tcp"}
    assert operator_environment(find(base_objects, "Deployment"))["SGMESH_METRICS_PORT"] == str(
        port["containerPort"]
    )


def test_labels_describe_the_project(operator_image: str) -> None:
    labels = image.image_config(operator_image)["Labels"]

    assert labels["org.opencontainers.image.title"] == PROJECT["name"]
    assert labels["org.opencontainers.image.licenses"] == PROJECT["license"]


def _anywhere(root: Path, pattern: str) -> list[str]:
    return sorted(
        str(path.relative_to(root))
        for top in ("usr", "opt", "etc", "src", "dist", "root", "run", "tmp")
        for path in (root / top).glob(f"**/{pattern}")
    )


def test_image_holds_the_environment_and_no_installer_compiler_or_build_context(
    operator_image: str,
) -> None:
    with image.mounted(operator_image) as root:
        site_packages = list(root.glob("opt/sgmesh/lib/python3.*/site-packages"))
        assert len(site_packages) == 1, site_packages
        [packages] = site_packages
        # sgmesh is installed from its wheel: a package, not a link back to a source tree.
        assert (packages / "sgmesh" / "cli" / "main.py").is_file()
        assert not list(packages.glob("__editable__*"))
        assert not list(packages.glob("*.pth"))
        assert (root / "opt" / "sgmesh" / "bin" / "sgmesh").is_file()

        assert _anywhere(root, "site-packages/pip") == []
        assert _anywhere(root, "dist-packages/pip") == []
        assert _anywhere(root, "bin/pip*") == []
        for compiler in ("cc", "gcc", "c++", "g++", "clang"):
            assert _anywhere(root, f"bin/{compiler}") == [], compiler
        # Nothing of the build context but the installed package, no build secret.
        assert not (root / "src").exists()
        assert not (root / "dist").exists()
        assert _anywhere(root, "pyproject.toml") == []
        assert _anywhere(root, "pip.conf") == []
        assert _anywhere(root, "ca-bundle") == []


def test_sbom_lists_the_environment_at_the_versions_the_operator_lock_pins(
    operator_image: str,
) -> None:
    pinned: dict[str, str] = {
        canonicalize_name(name): version
        for name, version in re.findall(
            r"^([A-Za-z0-9._-]+)(?:\[[^]]*\])?==(\S+)",
            (REPO_ROOT / "requirements" / "operator.txt").read_text(),
            re.M,
        )
    }
    with image.mounted(operator_image) as root:
        sbom = json.loads((root / SBOM).read_text())
    listed: dict[str, str] = {
        canonicalize_name(component["name"]): component["version"]
        for component in sbom["components"]
    }

    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == PROJECT["name"]
    assert sbom["metadata"]["component"]["version"] == PROJECT["version"]
    # What pyproject.toml names reaches the image at the lock's versions, and so does every
    # dependency of theirs: the environment holds the lock, no more, no less.
    for name in ("kopf", "boto3", "kubernetes", "pydantic", "prometheus-client"):
        assert listed[name] == pinned[name], name
    assert listed == pinned

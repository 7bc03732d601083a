"""The operator names itself and ranks itself among peers without help from the OS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from sgmesh.controller import peering

NO_PASSWD_UID = 65532  # the uid deploy/ runs the operator as; the image has no passwd entry


def test_older_replica_outranks_newer_one() -> None:
    assert peering.priority(1_000.0) > peering.priority(1_001.0)


def test_replicas_started_together_get_distinct_priorities() -> None:
    priorities = {peering.priority(1_000.0) for _ in range(50)}
    assert len(priorities) == 50


def test_identity_names_the_pod() -> None:
    env_before = os.environ.get("POD_NAME")
    os.environ["POD_NAME"] = "sgmesh-7d9f-abcde"
    try:
        assert peering.identity().startswith("sgmesh@sgmesh-7d9f-abcde/")
    finally:
        if env_before is None:
            del os.environ["POD_NAME"]
        else:
            os.environ["POD_NAME"] = env_before


@pytest.mark.skipif(os.geteuid() != 0, reason="switching uid needs root")
def test_identity_works_for_a_uid_without_passwd_entry() -> None:
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is part of every Debian system"
    env = {k: v for k, v in os.environ.items() if k not in {"USER", "LOGNAME", "POD_NAME"}}
    env["HOME"] = "/nonexistent"
    done = subprocess.run(
        [
            setpriv,
            f"--reuid={NO_PASSWD_UID}",
            f"--regid={NO_PASSWD_UID}",
            "--clear-groups",
            sys.executable,
            "-c",
            "import pwd, os\n"
            "try:\n"
            "    pwd.getpwuid(os.getuid())\n"
            "    raise SystemExit('uid has a passwd entry: the test would prove nothing')\n"
            "except KeyError:\n"
            "    pass\n"
            "from sgmesh.controller import lifecycle, peering  # all of the operator, kopf too\n"
            "print(peering.identity())\n",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sgmesh@")

"""The `sgmesh` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sgmesh import crd

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sgmesh")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("crd", help="print the NodeGroupMesh CRD")
    arguments = parser.parse_args(argv)
    if arguments.command == "crd":
        sys.stdout.write(crd.render_crd())
    return 0

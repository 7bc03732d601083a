"""What every `sgmesh` command exits with, so that a script can tell the outcomes apart.

- 0: converged or nothing to do (`plan`, `apply`); nothing found (`doctor`).
- 1: an error: a bad input file, an AWS failure, a member not found (`plan`, `apply`);
  problems found (`doctor`).
- 2: changes pending: `plan`, or `apply` of a DryRun mesh.
- 3: a read failed (`doctor` only; see `sgmesh.doctor.command`).
- 64: usage: a bad flag or environment setting, for every command (EX_USAGE of sysexits.h).
- 130: interrupted.

A code must never mean two things: usage is not argparse's 2, which already means changes
pending. `sgmesh.doctor.command` keeps its own constants (the command line imports it only when
doctor runs) and they agree with these; a unit test holds them together.
"""

from __future__ import annotations

__all__ = ["ERROR", "INTERRUPTED", "OK", "PENDING", "USAGE"]

OK = 0
ERROR = 1
PENDING = 2
USAGE = 64
INTERRUPTED = 130

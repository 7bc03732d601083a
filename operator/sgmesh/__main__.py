"""`python -m sgmesh` is the `sgmesh` command."""

import sys

from sgmesh.cli import main as cli

sys.exit(cli.main())

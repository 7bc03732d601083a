"""`python -m sgmesh` is the `sgmesh` command."""

import sys

from sgmesh import cli

sys.exit(cli.main())

"""`python -m bench.call_budget` (`make bench`); the package docstring says what it measures."""

import sys

from bench.call_budget.run import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench.sweep``: the benchmark sweep (bench/sweep/run.py), same arguments."""

import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())

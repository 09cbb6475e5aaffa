#!/usr/bin/env python3
"""Reproduce the papers' table rows with one command, ours beside theirs.

    python tools/reproduce.py --list                  # the rows: paper, table, metric, published value, YAML, seeds
    python tools/reproduce.py --dry-run               # the exact commands (--nproc_per_node 4: torchrun)
    python tools/reproduce.py --data_root /data       # train what is missing, evaluate, write reproduction.md / .csv
    python tools/reproduce.py --tiny                  # the same path on the demo corpus, 2 steps per run

The rows (and the papers' numbers: this is their one place) are ``nass.reproduce.ROWS``;
all logic is in ``nass.reproduce`` (also installed as ``nass-reproduce``).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nass.reproduce import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

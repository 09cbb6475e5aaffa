#!/usr/bin/env python3
"""Score a trained separator on a manifest; same as the ``nass-evaluate`` command.

Usage: ``python tools/evaluate.py --model results/x/1234 --manifest save/test.csv --out eval/``
(see ``--help``).
"""

import sys

from nass.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())

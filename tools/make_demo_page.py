#!/usr/bin/env python3
"""Write the static listening demo page for trained separators.

Usage::

    python tools/make_demo_page.py --manifest save/libri2mix_test.csv \\
        --model sepformer=results/sepformer/1234 --model nass=results/nass/1234 \\
        --num_examples 5 --out docs/demo/

(see ``--help`` and ``docs/demo_page.md``; the logic is :mod:`nass_demo.page`).
"""

import sys

from nass_demo.page import main

if __name__ == "__main__":
    sys.exit(main())

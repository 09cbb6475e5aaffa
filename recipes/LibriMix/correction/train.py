#!/usr/bin/env python3
"""Train GeCo / Fast-GeCo on a trained separator's outputs and evaluate before/after correction.

    python recipes/LibriMix/correction/train.py recipes/LibriMix/correction/hparams/geco.yaml --data_folder=/path \
        --separator_folder=<separator output folder>
    python recipes/LibriMix/correction/train.py recipes/LibriMix/correction/hparams/fast-geco.yaml --data_folder=/path \
        --separator_folder=<separator output folder> --geco_folder=<GeCo output folder>

All logic is in nass.brains.correction.run_correction (shared by every dataset's recipe).
"""

import sys

from nass.runner import run_correction

if __name__ == "__main__":
    run_correction(sys.argv[1:])

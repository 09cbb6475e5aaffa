#!/usr/bin/env python3
"""Train and evaluate a LibriMix separator.

    python recipes/LibriMix/separation/train.py recipes/LibriMix/separation/hparams/<...>.yaml --data_folder=/path

Multi-GPU (PyTorch DDP, as SpeechBrain): torchrun --nproc_per_node=4 recipes/LibriMix/separation/train.py <yaml> ...
All logic is in nass.training.run_separation (shared by every dataset's recipe).
"""

import sys

from nass.runner import run_separation

if __name__ == "__main__":
    run_separation(sys.argv[1:])

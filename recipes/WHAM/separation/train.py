#!/usr/bin/env python3
"""Train and evaluate a WHAM separator.

    python recipes/WHAM/separation/train.py recipes/WHAM/separation/hparams/<...>.yaml --data_folder=/path

Multi-GPU (PyTorch DDP, as SpeechBrain): torchrun --nproc_per_node=4 recipes/WHAM/separation/train.py <yaml> ...
All logic is in nass.training.run_separation (shared by every dataset's recipe).
"""

import sys

from nass.runner import run_separation

if __name__ == "__main__":
    run_separation(sys.argv[1:])

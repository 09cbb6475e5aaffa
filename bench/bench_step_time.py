#!/usr/bin/env python3
"""Seconds per training step (forward, PIT SI-SNR, backward, Adam) of each tiny and full-size model.

Prints one line per model with its parameter count, batch, and the best of the timed
steps. Tiny models use their demo batch (4 x 3 s); full-size models use 1 x ``--full_seconds``
(1 s by default on the CPU: a 4 s SepFormer step takes minutes there). The machine load
average is printed with each line: on a shared machine the absolute seconds are inflated.

    python bench/bench_step_time.py [--threads 1] [--full_seconds 1.0] [--reps 3]
"""

import argparse
import os
import time

import torch
from hyperpyyaml import load_hyperpyyaml

from nass.losses.pit import pit_si_snr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HP = os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--full_seconds", type=float, default=1.0)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    full = int(args.full_seconds * 8000)
    configs = [("demo/sepformer-tiny-noise", 4, 24000), ("demo/dprnn-tiny-noise", 4, 24000),
               ("demo/convtasnet-tiny-noise", 4, 24000), ("libri2mix/sepformer-noise", 1, full),
               ("libri2mix/dprnn-noise", 1, full), ("libri2mix/convtasnet-noise", 1, full)]
    for name, batch, samples in configs:
        with open(os.path.join(HP, name + ".yaml"), encoding="utf-8") as f:
            hp = load_hyperpyyaml(f, {"data_folder": "/tmp", "output_folder": "/tmp/nass-step-time"})
        sep = hp["separator"]
        opt = torch.optim.Adam(sep.parameters(), 1e-4)
        mix, refs = torch.randn(batch, samples), torch.randn(batch, samples, hp["num_spks"])
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            loss, _ = pit_si_snr(sep(mix).est_sources, refs)
            loss.mean().backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in sep.parameters()) / 1e6
        print(f"{name}: {params:.2f} M params, batch {batch} x {samples / 8000:.1f} s, "
              f"{min(times[1:] or times):.2f} s/step (load {os.getloadavg()[0]:.1f}, threads {torch.get_num_threads()})",
              flush=True)


if __name__ == "__main__":
    main()

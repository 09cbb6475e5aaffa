#!/usr/bin/env python3
"""Train several recipe YAMLs at the same step budget and seed, then tabulate test metrics.

Each configuration runs the real recipe (``recipes/LibriMix/separation/train.py``) as a
subprocess with ``--optimizer_step_limit`` (same number of optimiser steps for every row),
then its test-split means are collected from ``<run>/test/test_metrics.csv``.

Example (the demo-corpus comparison in the README)::

    python bench/quality_at_budget.py --steps 400 --jobs 2 \\
        --configs sepformer-tiny sepformer-tiny-noise sepformer-tiny-nass \\
                  sepformer-tiny-unified sepformer-tiny-unified-gm

Numbers from this script are SHORT CPU RUNS of tiny models on the demo corpus; they show
whether a method trains and in which direction it moves, not paper-scale results.
"""

import argparse
import csv
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams", "demo")
TRAIN = os.path.join(ROOT, "recipes", "LibriMix", "separation", "train.py")
COLUMNS = ["si-snr_i", "sdr_i", "si-snr", "sdr", "mix_si-snr", "noise_si-snr"]


def read_means(csv_path):
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["ID"] == "mean":
                return {k: float(v) for k, v in row.items() if k != "ID" and v not in ("", None)}
    raise ValueError(f"{csv_path}: no mean row")


def run_dir(out_root, config, seed):
    """The output folder of one run: ``<out_root>/<config>-seed<seed>``."""
    return os.path.join(out_root, f"{config}-seed{seed}")


def run_one(config, seed, steps, data_folder, out_root, threads, extra):
    out = run_dir(out_root, config, seed)
    metrics = os.path.join(out, "test", "test_metrics.csv")
    cmd = [
        sys.executable, TRAIN, os.path.join(HPARAMS, config + ".yaml"),
        f"--data_folder={data_folder}", f"--output_folder={out}", f"--seed={seed}",
        f"--optimizer_step_limit={steps}", "--N_epochs=1000", "--noprogressbar", *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.time()
    if not os.path.exists(metrics):
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "bench_stdout.txt"), "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"{config} seed {seed} failed: see {out}/bench_stdout.txt")
    wall = time.time() - start
    means = read_means(metrics)
    return {"config": config, "seed": seed, "steps": steps, "wall_s": round(wall, 1), **means}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", required=True, help="YAML names in recipes/LibriMix/separation/hparams/demo")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1234])
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps per run (equal budget)")
    parser.add_argument("--data_folder", default=os.path.join(ROOT, "data", "demo", "Libri2Mix"))
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "bench_quality"))
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each gets cores/jobs threads)")
    parser.add_argument("--extra", action="append", default=[], metavar="--KEY=VALUE",
                        help="an override for every run, e.g. --extra=--mixture=clean; repeat for more")
    args = parser.parse_args(argv)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    tasks = [(c, s) for c in args.configs for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda t: run_one(t[0], t[1], args.steps, args.data_folder, args.out, threads, args.extra), tasks))
    os.makedirs(args.out, exist_ok=True)
    table = os.path.join(args.out, "summary.csv")
    keys = ["config", "seed", "steps", "wall_s"] + [c for c in COLUMNS if any(c in r for r in rows)]
    with open(table + ".tmp", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(table + ".tmp", table)
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.2f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys) + " |")
    print(f"(written {table})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Train several recipe YAMLs at the same step budget and seed, then tabulate test metrics.

Each configuration runs the real recipe (``recipes/LibriMix/separation/train.py``) as a
subprocess with ``--optimizer_step_limit`` (same number of optimiser steps for every row),
then its test-split means are collected from ``<run>/test/test_metrics.csv``.

Example (the demo-corpus comparison in the README)::

    python bench/quality_at_budget.py --steps 400 --jobs 2 \\
        --configs sepformer-tiny sepformer-tiny-noise sepformer-tiny-nass \\
                  sepformer-tiny-unified sepformer-tiny-unified-gm

With several configurations and seeds it also prints each configuration's mean ± standard
deviation over seeds and its paired SI-SNRi difference to the first configuration (or
``--baseline``) on the same test mixtures and seeds: per seed, and pooled (each mixture's
difference averaged over the seeds, then mean ± 1.96 standard errors over mixtures), so a
difference of a few tenths of a dB is visible above the spread of the mixtures.

Numbers from this script are SHORT CPU RUNS of tiny models on the demo corpus; they show
whether a method trains and in which direction it moves, not paper-scale results.
"""

import argparse
import csv
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from nass.evaluation import paired_delta, read_column, read_mean_row

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams", "demo")
TRAIN = os.path.join(ROOT, "recipes", "LibriMix", "separation", "train.py")
COLUMNS = ["si-snr_i", "sdr_i", "si-snr", "sdr", "mix_si-snr", "noise_si-snr"]


def read_means(csv_path):
    """The mean row of a ``test_metrics.csv`` without its empty cells (:func:`nass.evaluation.read_mean_row`)."""
    means, _ = read_mean_row(csv_path)
    return {k: v for k, v in means.items() if not math.isnan(v)}


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


def seed_summary(rows, column="si-snr_i"):
    """``{config: (mean, std over seeds, number of seeds)}`` of one test-mean column.

    Example
    -------
    >>> s = seed_summary([{"config": "a", "si-snr_i": 1.0}, {"config": "a", "si-snr_i": 3.0}])
    >>> tuple(round(x, 3) for x in s["a"])
    (2.0, 1.414, 2)
    """
    by = {}
    for r in rows:
        by.setdefault(r["config"], []).append(r[column])
    out = {}
    for config, vals in by.items():
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else float("nan")
        out[config] = (mean, std, len(vals))
    return out


def paired_table(out_root, configs, seeds, baseline, column="si-snr_i"):
    """Paired differences ``config - baseline`` of ``column`` on the same test mixtures.

    Returns one dict per configuration other than ``baseline``: ``per_seed`` (list of
    ``(seed, mean, ci)``), ``seed_mean`` and ``seed_std`` (of the per-seed means) and the
    pooled ``pooled`` / ``pooled_ci`` / ``n`` (each mixture's difference averaged over the
    seeds, then mean and 1.96 standard errors over mixtures).
    """
    def metrics(config, seed):
        return read_column(os.path.join(run_dir(out_root, config, seed), "test", "test_metrics.csv"), column)

    table = []
    for config in configs:
        if config == baseline:
            continue
        per_seed, sums = [], {}
        for seed in seeds:
            a, b = metrics(config, seed), metrics(baseline, seed)
            mean, ci, _ = paired_delta(a, b)
            per_seed.append((seed, mean, ci))
            for k in set(a) & set(b):
                sums.setdefault(k, []).append(a[k] - b[k])
        pooled = {k: sum(v) / len(v) for k, v in sums.items() if len(v) == len(seeds)}
        mean, ci, n = paired_delta(pooled, {k: 0.0 for k in pooled})
        means = [m for _, m, _ in per_seed]
        seed_mean = sum(means) / len(means)
        seed_std = (math.sqrt(sum((m - seed_mean) ** 2 for m in means) / (len(means) - 1))
                    if len(means) > 1 else float("nan"))
        table.append({"config": config, "per_seed": per_seed, "seed_mean": seed_mean, "seed_std": seed_std,
                      "pooled": mean, "pooled_ci": ci, "n": n})
    return table


def print_method_table(rows, out_root, configs, seeds, baseline):
    """The markdown tables: mean ± std over seeds, then paired differences to ``baseline``."""
    lines = ["", f"| config | seeds | SI-SNRi mean ± std (dB) | SDRi mean ± std (dB) | paired Δ SI-SNRi vs {baseline} |",
             "|---|---:|---:|---:|---:|"]
    si, sd = seed_summary(rows), seed_summary(rows, "sdr_i")
    paired = {p["config"]: p for p in paired_table(out_root, configs, seeds, baseline)}
    for config in configs:
        m, s, n = si[config]
        m2, s2, _ = sd[config]
        p = paired.get(config)
        delta = "(baseline)" if p is None else f"{p['pooled']:+.2f} ± {p['pooled_ci']:.2f} (seeds: " + ", ".join(
            f"{d:+.2f}" for _, d, _ in p["per_seed"]) + ")"
        lines.append(f"| {config} | {n} | {m:+.2f} ± {s:.2f} | {m2:+.2f} ± {s2:.2f} | {delta} |")
    lines.append("")
    lines.append("Paired Δ: each test mixture's difference averaged over the seeds, mean ± 1.96 SE over mixtures.")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", required=True, help="YAML names in recipes/LibriMix/separation/hparams/demo")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1234])
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps per run (equal budget)")
    parser.add_argument("--data_folder", default=os.path.join(ROOT, "data", "demo", "Libri2Mix"))
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "bench_quality"))
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each gets cores/jobs threads)")
    parser.add_argument("--baseline", default=None, help="configuration the paired differences are taken to (default: the first)")
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
    if len(args.configs) > 1:
        baseline = args.baseline or args.configs[0]
        if baseline not in args.configs:
            parser.error(f"--baseline {baseline} is not one of --configs")
        text = print_method_table(rows, args.out, args.configs, args.seeds, baseline)
        md = os.path.join(args.out, "summary.md")
        with open(md + ".tmp", "w", encoding="utf-8") as f:
            f.write(text.lstrip("\n") + "\n")
        os.replace(md + ".tmp", md)


if __name__ == "__main__":
    main()

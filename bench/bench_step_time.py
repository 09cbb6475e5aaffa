#!/usr/bin/env python3
"""Seconds per training step (forward, PIT SI-SNR, backward, Adam) of each model, per precision.

Prints a markdown table: one row per model (and ``--set`` variant) with its parameter
count, batch, the median of the timed steps (the first step is a warm-up and is not
timed) for each ``--precision``, and the bf16 / fp32 ratio when both are asked for. Tiny
models use their demo batch (4 x 3 s); full-size models use 1 x ``--full_seconds`` (1 s
by default on the CPU: a 4 s SepFormer step takes minutes there). bf16 runs the forward
and the loss under ``torch.autocast`` as the recipes' ``--precision=bf16`` does. The
model is built from the YAML's model keys only (``nass.export.model_yaml``: no
checkpointer, no folders, no data). The load average is printed: on a shared machine
the absolute seconds are inflated and only the ratios within one run mean something.

    python bench/bench_step_time.py [--threads 1] [--precision fp32 bf16] [--reps 5]
    python bench/bench_step_time.py --configs demo/dprnn-tiny-noise --precision bf16 \\
        --set kernel_size=16 --set kernel_size=32 --set hidden_channels=32,kernel_size=32

This is the benchmark behind the throughput tables of ``docs/learning_curves.md``.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references

from nass.export import model_yaml
from nass.losses.pit import pit_si_snr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HP = os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams")
TINY = ["demo/sepformer-tiny-noise", "demo/dprnn-tiny-noise", "demo/convtasnet-tiny-noise"]
FULL = ["libri2mix/sepformer-noise", "libri2mix/dprnn-noise", "libri2mix/convtasnet-noise"]


def parse_variant(text):
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (values read as YAML scalars).

    Example
    -------
    >>> parse_variant("kernel_size=16,hidden_channels=32")
    {'kernel_size': 16, 'hidden_channels': 32}
    >>> parse_variant("")
    {}
    """
    import yaml

    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        if "=" not in item:
            raise ValueError(f"--set {text!r}: expected KEY=VALUE[,KEY=VALUE...]")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def build_separator(name, overrides):
    """The separator and sample rate of ``hparams/<name>.yaml`` with top-level ``overrides``."""
    path = os.path.join(HP, name + ".yaml")
    with open(path, encoding="utf-8") as f:
        text = resolve_references(f, overrides or {}).getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        resolved = os.path.join(tmp, "hyperparams.yaml")
        with open(resolved, "w", encoding="utf-8") as f:
            f.write(text)
        hp = load_hyperpyyaml(model_yaml(resolved))
    return hp["separator"], hp.get("num_spks", 2)


def time_steps(sep, num_spks, batch, samples, precision, reps):
    """Median seconds of ``reps`` training steps after one untimed warm-up step."""
    opt = torch.optim.Adam(sep.parameters(), 1e-4)
    mix, refs = torch.randn(batch, samples), torch.randn(batch, samples, num_spks)
    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            est = sep(mix).est_sources
        loss, _ = pit_si_snr(est.float(), refs)
        loss.mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--configs", nargs="+", default=TINY + FULL,
                   help="YAML names under recipes/LibriMix/separation/hparams (default: the tiny and full models)")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="a variant of every config (top-level YAML keys); repeat for more rows")
    p.add_argument("--full_seconds", type=float, default=1.0)
    p.add_argument("--reps", type=int, default=5, help="timed steps per row (median), after one warm-up")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [parse_variant(v) for v in args.set] or [{}]
    head = ["model", "variant", "params", "batch"] + [f"{x} s/step" for x in args.precision]
    ratio = "fp32" in args.precision and "bf16" in args.precision
    head += ["bf16/fp32"] if ratio else []
    print(f"threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}, median of {args.reps} steps")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head), flush=True)
    for name in args.configs:
        batch, samples = (4, 24000) if name.startswith("demo/") else (1, int(args.full_seconds * 8000))
        for variant in variants:
            sep, num_spks = build_separator(name, variant)
            cells = {x: time_steps(sep, num_spks, batch, samples, x, args.reps) for x in args.precision}
            params = sum(q.numel() for q in sep.parameters()) / 1e3
            row = [name, ",".join(f"{k}={v}" for k, v in variant.items()) or "-", f"{params:.0f} k",
                   f"{batch} x {samples / 8000:.1f} s"] + [f"{cells[x]:.3f}" for x in args.precision]
            row += [f"{cells['bf16'] / cells['fp32']:.2f}"] if ratio else []
            print("| " + " | ".join(row) + " |", flush=True)
    print(f"(load at the end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()

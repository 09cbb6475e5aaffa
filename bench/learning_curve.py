#!/usr/bin/env python3
"""SI-SNRi on the test split against training wall minutes and steps, from one run.

One training run of a recipe YAML goes through the recipe's own code path
(:func:`nass.runner.run_separation`, the function every ``train.py`` calls), in this
process, and the separator's weights are saved every ``--every`` optimiser steps to
``<out>/snapshots/step-<N>/separator.ckpt`` together with the training wall time at that
step, counted from the start of the first epoch (data preparation and model set-up are
not counted; validation passes are: they are part of training). When training ends, each
snapshot is scored on the first ``--test_utterances`` mixtures of the test split (voices
never heard in training), so scoring never slows the curve down.

Outputs in ``<out>/``: ``learning_curve.csv`` (``step, minutes, si-snr_i, sdr_i, si-snr,
noise_si-snr``), ``learning_curve.md`` (the table, the command and the machine), and
``learning_curve.png`` when several runs are plotted together (``--plot``).

    python bench/learning_curve.py --config demo/sepformer-tiny-noise --steps 700 \\
        --every 100 --out results/learning_curve/sepformer-tiny-noise -- --precision=bf16
    python bench/learning_curve.py --plot results/learning_curve/* --png docs/learning_curves.png

Everything after ``--`` is passed to the recipe (overrides and run options). Numbers from
this script are SHORT CPU RUNS of tiny models on the demo corpus
(``tools/build_demo_corpus.py``). Wall minutes depend on the machine and its load: the
machine's load average is written next to each curve, and curves are only comparable
when they were run on the same idle machine.
"""

import argparse
import csv
import glob
import os
import platform
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams")
TRAIN = os.path.join(ROOT, "recipes", "LibriMix", "separation", "train.py")
FIELDS = ["step", "minutes", "si-snr_i", "sdr_i", "si-snr", "noise_si-snr"]


def yaml_path(config):
    """``config``: a path to a YAML file, or a name under ``recipes/LibriMix/separation/hparams/``."""
    return config if config.endswith(".yaml") else os.path.join(HPARAMS, config + ".yaml")


def train_with_snapshots(config, out, steps, every, extra, threads):
    """Train once through the recipe's own code path (:func:`nass.runner.run_separation`,
    in this process) and save the separator's weights every ``every`` optimiser steps.

    The snapshot is taken right after the optimiser step (``SeparationBrain.fit_batch`` is
    wrapped here, in the benchmark only) and its time is measured from the start of the
    first epoch (``on_fit_start``: data preparation and model set-up are not counted), with
    the time spent writing snapshots subtracted.

    Returns
    -------
    (list of (int, float), float, list of str)
        ``[(step, training seconds)]``, the whole call's seconds, the recipe command line.
    """
    import torch

    from nass.brains.separation import SeparationBrain
    from nass.runner import run_separation

    run = os.path.join(out, "run")
    snaps = os.path.join(out, "snapshots")
    os.makedirs(snaps, exist_ok=True)
    argv = [
        yaml_path(config), f"--output_folder={run}", f"--optimizer_step_limit={steps}", "--N_epochs=1000",
        "--noprogressbar", "--test_split=null", *extra,
    ]
    if threads:
        torch.set_num_threads(threads)
    rows, clock = [], {"t0": None, "pause": 0.0}
    fit_start, fit_batch = SeparationBrain.on_fit_start, SeparationBrain.fit_batch

    def on_fit_start(self):
        fit_start(self)
        clock["t0"] = time.perf_counter()

    def snapshot_fit_batch(self, batch):
        loss = fit_batch(self, batch)
        step = self.optimizer_step
        if step % every == 0 and (not rows or rows[-1][0] != step):
            now = time.perf_counter()
            rows.append((step, now - clock["t0"] - clock["pause"]))
            with open(os.path.join(snaps, "times.csv"), "a", encoding="utf-8") as f:
                f.write(f"{step},{rows[-1][1]:.2f}\n")
            dest = os.path.join(snaps, f"step-{step:06d}")
            os.makedirs(dest + ".tmp", exist_ok=True)
            torch.save(self.separator().state_dict(), os.path.join(dest + ".tmp", "separator.ckpt"))
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(dest + ".tmp", dest)
            clock["pause"] += time.perf_counter() - now
        return loss

    SeparationBrain.on_fit_start, SeparationBrain.fit_batch = on_fit_start, snapshot_fit_batch
    start = time.time()
    try:
        run_separation(argv)
    finally:
        SeparationBrain.on_fit_start, SeparationBrain.fit_batch = fit_start, fit_batch
    return rows, time.time() - start, [sys.executable, TRAIN, *argv]


def read_times(out):
    """``[(step, seconds)]`` from ``<out>/snapshots/times.csv``; a snapshot not listed there
    (an older run) gets ``nan`` seconds."""
    times = {}
    path = os.path.join(out, "snapshots", "times.csv")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                step, seconds = line.strip().split(",")
                times[int(step)] = float(seconds)
    for snap in glob.glob(os.path.join(out, "snapshots", "step-*")):
        times.setdefault(int(os.path.basename(snap).split("-")[1]), float("nan"))
    return sorted(times.items())


def score_snapshots(config, out, data_folder, test_utterances):
    """Score every snapshot on the first ``test_utterances`` test mixtures; returns ``{step: means}``.

    The separator is built from the run's own ``hyperparams.yaml`` (SpeechBrain's copy, the
    overrides applied) through :func:`nass.export.model_yaml`, so nothing of the training
    set-up runs; the test split is the config's (the run trained with ``--test_split=null``).
    """
    import torch
    from hyperpyyaml import load_hyperpyyaml

    from nass.evaluation import evaluate_manifest
    from nass.export import model_yaml, training_values
    from nass.inference import load_state_dict
    from nass.runner import prepare_manifests

    run_yaml = os.path.join(out, "run", "hyperparams.yaml")
    if not os.path.isfile(run_yaml):
        raise SystemExit(f"{run_yaml}: not found. --score_only scores a folder this script trained (--out).")
    sep = load_hyperpyyaml(model_yaml(run_yaml))["separator"]
    hp = dict(training_values(run_yaml), data_folder=data_folder, save_folder=os.path.join(out, "run", "save"),
              skip_prep=False, test_split=training_values(yaml_path(config))["test_split"])
    manifests = prepare_manifests(hp)
    results = {}
    for snap in sorted(glob.glob(os.path.join(out, "snapshots", "step-*"))):
        step = int(os.path.basename(snap).split("-")[1])
        sep.load_state_dict(load_state_dict(os.path.join(snap, "separator.ckpt")))
        sep.eval()

        def separate(mix):
            with torch.no_grad():
                o = sep(mix)
            return o.est_sources, o.est_noise

        means = evaluate_manifest(
            separate, manifests[hp["test_split"]], os.path.join(snap, "eval"), hp["num_spks"], hp["sample_rate"],
            num_workers=0, save_examples=0, max_utterances=test_utterances, sdr_backend="fast_bss_eval", overwrite=True,
        )
        results[step] = means
        print(f"step {step}: SI-SNRi {means['si-snr_i']:+.2f} dB", flush=True)
    return results


def write_outputs(out, rows, results, meta):
    table = []
    for step, seconds in rows:
        m = results.get(step)
        if m is None:
            continue
        table.append({"step": step, "minutes": round(seconds / 60, 2), **{k: round(m[k], 3) for k in FIELDS[2:] if k in m}})
    with open(os.path.join(out, "learning_curve.csv.tmp"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(table)
    os.replace(os.path.join(out, "learning_curve.csv.tmp"), os.path.join(out, "learning_curve.csv"))
    lines = [f"# Learning curve: {meta['config']}", "", "SHORT CPU RUN of a tiny model on the demo corpus.", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "| step | minutes | SI-SNRi (dB) | SDRi (dB) |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['step']} | {r['minutes']:.2f} | {r['si-snr_i']:+.2f} | {r.get('sdr_i', float('nan')):+.2f} |" for r in table]
    with open(os.path.join(out, "learning_curve.md.tmp"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(os.path.join(out, "learning_curve.md.tmp"), os.path.join(out, "learning_curve.md"))
    return table


def plot(folders, png, x="minutes"):
    """One line per run folder (its ``learning_curve.csv``): SI-SNRi against ``x``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for folder in folders:
        path = os.path.join(folder, "learning_curve.csv")
        if not os.path.exists(path):
            continue
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        ax.plot([float(r[x]) for r in rows], [float(r["si-snr_i"]) for r in rows], marker="o", ms=3,
                label=os.path.basename(os.path.normpath(folder)))
    ax.axhline(3.0, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("training wall minutes (2 CPU cores)" if x == "minutes" else "optimiser steps")
    ax.set_ylabel("SI-SNRi on the test split (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png + ".tmp.png", dpi=120)
    os.replace(png + ".tmp.png", png)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="a YAML file, or its name under recipes/LibriMix/separation/hparams/ without .yaml")
    p.add_argument("--out", help="output folder of this curve")
    p.add_argument("--steps", type=int, default=700, help="optimiser steps to train (default 700)")
    p.add_argument("--every", type=int, default=100, help="snapshot every N optimiser steps (default 100)")
    p.add_argument("--test_utterances", type=int, default=100, help="first N test mixtures scored (default 100)")
    p.add_argument("--data_folder", default=os.path.join(ROOT, "data", "demo", "Libri2Mix"))
    p.add_argument("--threads", type=int, default=None, help="OMP/MKL threads for training (default: torch's)")
    p.add_argument("--score_only", action="store_true",
                   help="do not train: score the snapshots already in --out (times from snapshots/times.csv)")
    p.add_argument("--plot", nargs="+", metavar="RUN", help="only plot these finished runs")
    p.add_argument("--png", default=None, help="with --plot: the figure (default <first run>/../learning_curves.png)")
    p.add_argument("--x", choices=["minutes", "step"], default="minutes")
    args = p.parse_args(argv)
    if args.plot:
        png = args.png or os.path.join(os.path.dirname(os.path.normpath(args.plot[0])), "learning_curves.png")
        plot(args.plot, png, args.x)
        print(png)
        return
    if not args.config or not args.out:
        p.error("--config and --out are required (or --plot)")
    extra = [f"--data_folder={args.data_folder}", *extra]
    if args.score_only:
        rows, total, cmd = read_times(args.out), float("nan"), ["(scored only)"]
    else:
        rows, total, cmd = train_with_snapshots(args.config, args.out, args.steps, args.every, extra, args.threads)
    load = os.getloadavg()[0]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = score_snapshots(args.config, args.out, args.data_folder, args.test_utterances)
    import torch

    meta = {
        "config": args.config,
        "command": " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd),
        "training process wall time (s)": round(total, 1),
        "test mixtures scored": f"first {args.test_utterances} of the test split",
        "load average at the end of training (1 min)": round(load, 2),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }
    table = write_outputs(args.out, rows, results, meta)
    for r in table:
        print(f"{r['step']:6d} steps {r['minutes']:6.2f} min  SI-SNRi {r['si-snr_i']:+.2f} dB")


if __name__ == "__main__":
    main()

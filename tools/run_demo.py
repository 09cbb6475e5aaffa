#!/usr/bin/env python3
"""The demo: the main job on real recordings, on the CPU, end to end (``make demo``).

1. Build the demo corpus from Debian recordings if it is not there
   (``tools/build_demo_corpus.py``: 8 kHz, Libri2Mix-shaped, speaker-disjoint splits).
2. Train the tiny noise-aware DPRNN on STFT magnitudes
   (``recipes/LibriMix/separation/hparams/demo/dprnn-stft-tiny-noise.yaml``) for the YAML's
   step budget (``optimizer_step_limit``; ``--steps`` changes it and the schedule with it),
   with bf16 autocast where the CPU supports it (``precision: auto``).
3. Evaluate the best checkpoint on the test split (voices never heard in training):
   per-utterance CSV, means, and separated examples (each speaker and the noise) as WAV.
4. Print the result table, with the mixture's own SI-SNR next to SI-SNRi.

Safe to run twice: a finished run is not retrained (``--retrain`` starts over).
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YAML = os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams", "demo", "dprnn-stft-tiny-noise.yaml")
MODEL_NAME = "tiny noise-aware DPRNN on STFT magnitudes"


def read_training(out):
    """Optimiser steps and training seconds from ``<out>/train_log.jsonl``: the last
    validation record's step, and the sum over training sessions of each session's last
    ``train_seconds`` (a resumed session counts from 0 again). ``(None, None)`` when the run
    wrote none."""
    path = os.path.join(out, "train_log.jsonl")
    steps, finished, current = None, 0.0, None
    if not os.path.exists(path):
        return None, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if "train_seconds" not in rec:
                continue
            if current is not None and rec["train_seconds"] < current:
                finished += current  # a new session began
            current = rec["train_seconds"]
            if "valid" in rec:
                steps = rec.get("optimizer_step")
    if current is None:
        return None, None
    return steps, finished + current


def read_means(path):
    """The ``mean`` row of a ``test_metrics.csv`` (floats; empty cells left out) plus ``num_utterances``."""
    from nass.evaluation import read_mean_row

    means, count = read_mean_row(path)
    means = {k: v for k, v in means.items() if not math.isnan(v)}
    means["num_utterances"] = count
    return means


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=os.path.join(ROOT, "data", "demo"))
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "demo"))
    parser.add_argument("--steps", type=int, default=None,
                        help="optimiser steps (batch 4 x 3 s crops; default: the YAML's optimizer_step_limit)")
    parser.add_argument("--yaml", default=YAML)
    parser.add_argument("--retrain", action="store_true", help="delete a previous demo run and train again")
    args = parser.parse_args(argv)

    start = time.time()
    build = [sys.executable, os.path.join(ROOT, "tools", "build_demo_corpus.py"), "--out", args.corpus]
    subprocess.run(build, check=True)
    built = time.time()

    metrics = os.path.join(args.out, "test", "test_metrics.csv")
    if args.retrain and os.path.isdir(args.out):
        shutil.rmtree(args.out)
    if os.path.exists(metrics):
        print(f"\n{args.out} already holds a finished demo run (use --retrain to train again).")
    else:
        cmd = [
            sys.executable,
            os.path.join(ROOT, "recipes", "LibriMix", "separation", "train.py"),
            args.yaml,
            f"--data_folder={os.path.join(args.corpus, 'Libri2Mix')}",
            f"--output_folder={args.out}",
            "--N_epochs=1000",
        ] + ([f"--optimizer_step_limit={args.steps}"] if args.steps else [])
        print("training:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    trained = time.time()

    m = read_means(metrics)
    steps, seconds = read_training(args.out)
    print(f"\n=== demo result: {MODEL_NAME}, demo corpus test split (unseen voices) ===")
    if seconds is not None:
        print(f"training          {steps} optimiser steps in {seconds / 60:.1f} min "
              f"({os.cpu_count()} CPU cores; validation included, data preparation and test evaluation not)")
    print(f"utterances        {int(m['num_utterances'])}")
    print(f"mixture SI-SNR    {m['mix_si-snr']:7.2f} dB   (the input's own SI-SNR against each speaker)")
    print(f"estimate SI-SNR   {m['si-snr']:7.2f} dB")
    print(f"SI-SNRi           {m['si-snr_i']:7.2f} dB")
    print(f"SDRi              {m['sdr_i']:7.2f} dB")
    if "noise_si-snr" in m:
        print(f"noise SI-SNR      {m['noise_si-snr']:7.2f} dB   (the extra noise output)")
    if "mix_clean_si-snr_i" in m:
        print(f"denoise-only ref. {m['mix_clean_si-snr_i']:7.2f} dB   (SI-SNRi of the clean mixture as every "
              "estimate: a model below it has not shown that it separates the speakers)")
    print(f"per-utterance CSV {metrics}")
    print(f"separated audio   {os.path.join(args.out, 'test', 'examples')}")
    print(f"wall time         corpus {built - start:.0f} s, training + evaluation {trained - built:.0f} s")
    print("Separate your own recording with:")
    print(f"  .venv/bin/nass-separate my_recording.wav --model {args.out} --out separated/")


if __name__ == "__main__":
    main()

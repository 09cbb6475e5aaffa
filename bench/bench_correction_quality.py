"""Quality of GeCo / Fast-GeCo correction of a tiny separator on the demo corpus (CPU budget).

Trains the TINY GeCo corrector (``recipes/LibriMix/correction/hparams/demo/geco-tiny.yaml``)
for ``--geco_steps`` optimiser steps on the triplets of a trained separator, fine-tunes
it to Fast-GeCo (``fast-geco-tiny.yaml``) for ``--fast_steps`` steps, then reports
SI-SNRi / SDRi / PESQ-NB / ESTOI (every speaker) for the separator alone and + Fast-GeCo
on the first ``--n_test`` (50) test mixtures, and for the separator alone and + GeCo
(N = ``--N`` = 30 reverse steps, 60 score evaluations per speaker) on the first
``--n_test_geco`` (10) of them, GeCo sampling being slow on CPU.

A corrector trained for minutes on CPU is far from the paper's (NCSN++ size, days on
GPUs); it may well make the estimates worse. The numbers measure this implementation
at this budget, not the method.

Usage::

    .venv/bin/python bench/bench_correction_quality.py \
        --separator results/bench_quality/sepformer-tiny-noise-seed1234 [--wait 3600]

Outputs go to ``--out`` (default ``results/bench_correction_quality``); the separator
folder is only read.
"""

import argparse
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "recipes/LibriMix/correction/hparams/demo")


def wait_for(separator, seconds):
    marker = os.path.join(separator, "test", "test_metrics.csv")
    deadline = time.time() + seconds
    while not os.path.isfile(marker):
        if time.time() > deadline:
            sys.exit(f"{separator}: not trained yet ({marker} missing); re-run later or raise --wait")
        time.sleep(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--separator", default=os.path.join(ROOT, "results/bench_quality/sepformer-tiny-noise-seed1234"))
    parser.add_argument("--data_folder", default=os.path.join(ROOT, "data/demo/Libri2Mix"))
    parser.add_argument("--out", default=os.path.join(ROOT, "results/bench_correction_quality"))
    parser.add_argument("--train_utterances", type=int, default=300, help="training mixtures turned into triplets")
    parser.add_argument("--geco_steps", type=int, default=300, help="GeCo optimiser steps")
    parser.add_argument("--fast_steps", type=int, default=100, help="Fast-GeCo optimiser steps")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--n_test", type=int, default=50, help="test mixtures scored with Fast-GeCo (of 300)")
    parser.add_argument("--n_test_geco", type=int, default=10,
                        help="test mixtures scored with GeCo (N x 2 score evaluations per speaker: slow on CPU)")
    parser.add_argument("--N", type=int, default=30, help="GeCo reverse steps at test time")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for the separator to finish")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wait_for(args.separator, args.wait)

    from nass.brains.correction import run_correction
    from nass.correction import load_corrector
    from nass.dataio.prepare import prepare_dataset
    from nass.evaluation import evaluate_with_correction
    from nass.inference import load_separator

    geco_out = os.path.join(args.out, "geco")
    fast_out = os.path.join(args.out, "fast-geco")
    common = [
        f"--data_folder={args.data_folder}", f"--separator_folder={args.separator}",
        f"--triplet_folder={os.path.join(args.out, 'triplets')}",
        f"--train_utterances={args.train_utterances}", f"--batch_size={args.batch_size}",
        "--test_split=null", "--N_epochs=1000", "--noprogressbar",
    ]
    timings = {}
    start = time.time()
    run_correction(
        [os.path.join(DEMO, "geco-tiny.yaml"), f"--output_folder={geco_out}", f"--optimizer_step_limit={args.geco_steps}",
         f"--train_rows_per_epoch={max(args.geco_steps * args.batch_size // 3, args.batch_size)}"] + common
    )
    timings["GeCo training"] = time.time() - start
    start = time.time()
    run_correction(
        [os.path.join(DEMO, "fast-geco-tiny.yaml"), f"--output_folder={fast_out}", f"--geco_folder={geco_out}",
         f"--optimizer_step_limit={args.fast_steps}",
         f"--train_rows_per_epoch={max(args.fast_steps * args.batch_size // 2, args.batch_size)}"] + common
    )
    timings["Fast-GeCo training"] = time.time() - start

    test_csv = prepare_dataset("librimix", args.data_folder, os.path.join(args.out, "manifests"), splits=["test"])["test"]
    model, hp = load_separator(args.separator)
    evaluate = dict(num_workers=1, save_examples=2, pesq_estoi=True)
    start = time.time()
    fast = evaluate_with_correction(model, hp["sample_rate"], hp["num_spks"], test_csv, os.path.join(args.out, "test"),
                                    corrector=load_corrector(os.path.join(fast_out, "corrector")),
                                    correction_mode="fast-geco", max_utterances=args.n_test, **evaluate)
    timings[f"evaluation, {args.n_test} mixtures, alone + Fast-GeCo"] = time.time() - start
    start = time.time()
    geco = evaluate_with_correction(model, hp["sample_rate"], hp["num_spks"], test_csv,
                                    os.path.join(args.out, "test_geco_subset"),
                                    corrector=load_corrector(os.path.join(geco_out, "corrector")),
                                    correction_mode="geco", correction_steps=args.N,
                                    max_utterances=args.n_test_geco, **evaluate)
    timings[f"evaluation, {args.n_test_geco} mixtures, alone + GeCo N={args.N}"] = time.time() - start

    rows = [(f"separator alone [{args.n_test}]", fast["separator"]), (f"+ Fast-GeCo [{args.n_test}]", fast["fast-geco"]),
            (f"separator alone [{args.n_test_geco}]", geco["separator"]),
            (f"+ GeCo N={args.N} [{args.n_test_geco}]", geco["geco"])]
    print()
    print(f"separator {args.separator}; [n] = first n of the 300 demo test mixtures, every speaker; tiny "
          f"corrector: GeCo {args.geco_steps} steps x batch {args.batch_size} on the triplets of "
          f"{args.train_utterances} training mixtures, Fast-GeCo {args.fast_steps} steps; torch threads {args.threads}")
    print(f"{'':28s} {'SI-SNRi':>8s} {'SDRi':>8s} {'PESQ-NB':>8s} {'ESTOI':>8s}")
    for name, m in rows:
        print(f"{name:28s} {m['si-snr_i']:8.2f} {m['sdr_i']:8.2f} {m.get('pesq', float('nan')):8.3f} "
              f"{m.get('estoi', float('nan')):8.3f}")
    for name, sec in timings.items():
        print(f"wall time {name}: {sec / 60:.1f} min")


if __name__ == "__main__":
    main()

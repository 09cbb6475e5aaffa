"""Does the demo-size Fast-GeCo improve a tiny separator? GeCo + Fast-GeCo on the CPU, paired test.

Trains the TINY GeCo corrector (``recipes/LibriMix/correction/hparams/demo/geco-tiny.yaml``)
for ``--geco_steps`` optimiser steps on the triplets of a trained separator (0 skips
GeCo: Fast-GeCo then starts from a randomly initialised network, seeded, which the
output says), fine-tunes it to Fast-GeCo (``fast-geco-tiny.yaml``) for ``--fast_steps``
steps, then scores on the first ``--n_test`` test mixtures (every speaker):

* identity (the separator's estimate unchanged),
* one Fast-GeCo step of the corrector before fine-tuning (the GeCo weights),
* Fast-GeCo after fine-tuning,

and the paired SI-SNRi difference of each with the identity and its 95 % Student-t
interval over utterances (:func:`nass.correction.report.correction_summary`, which
prints a WARNING when the corrector makes the estimates worse). ``--n_test_geco`` > 0
adds GeCo sampling (N = ``--N`` reverse steps, slow on the CPU) on the first mixtures.

A corrector trained for minutes on CPU is far from the paper's (NCSN++ size, days on
GPUs). The numbers measure this implementation at this budget, not the method.

Usage::

    .venv/bin/python bench/bench_correction_quality.py \
        --separator results/sep-tiny-noise --data_folder data/demo/Libri2Mix \
        [--geco_steps 100] [--fast_steps 1200] [--n_test 300] [--threads 1]

Outputs go to ``--out`` (default ``results/bench_correction_quality``); the separator
folder is only read. Calling it again with the same ``--out`` reuses the GeCo corrector
and resumes Fast-GeCo from its last checkpoint (so ``--fast_steps 1200`` after a
600-step call trains 600 more steps), then evaluates again.
"""

import argparse
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "recipes/LibriMix/correction/hparams/demo")


def wait_for(separator, seconds):
    """Wait until the separator folder holds a checkpoint (its own test evaluation is not needed)."""
    from nass.inference import find_checkpoint

    deadline = time.time() + seconds
    while True:
        try:
            return find_checkpoint(separator)
        except Exception as exc:  # noqa: BLE001 (ModelLoadError and friends: not trained yet)
            if time.time() > deadline:
                sys.exit(f"{separator}: no checkpoint yet ({exc}); re-run later or raise --wait")
            time.sleep(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--separator", default=os.path.join(ROOT, "results/bench_quality/sepformer-tiny-noise-seed1234"))
    parser.add_argument("--data_folder", default=os.path.join(ROOT, "data/demo/Libri2Mix"))
    parser.add_argument("--out", default=os.path.join(ROOT, "results/bench_correction_quality"))
    parser.add_argument("--train_utterances", type=int, default=300, help="training mixtures turned into triplets")
    parser.add_argument("--geco_steps", type=int, default=100, help="GeCo optimiser steps (0: no GeCo stage)")
    parser.add_argument("--fast_steps", type=int, default=1200, help="Fast-GeCo optimiser steps")
    parser.add_argument("--fast_epoch_steps", type=int, default=150,
                        help="Fast-GeCo steps per epoch (a validation and a checkpoint after each)")
    parser.add_argument("--retrain_geco", action="store_true",
                        help="train GeCo again even if --out already holds a GeCo corrector")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--crop_samples", type=int, default=8128,
                        help="training crop (samples; 8128 = 128 frames, 1.02 s; the reference: 16320)")
    parser.add_argument("--geco_lr", type=float, default=1e-3)
    parser.add_argument("--fast_lr", type=float, default=1e-3)
    parser.add_argument("--n_test", type=int, default=300, help="test mixtures scored (of 300)")
    parser.add_argument("--n_test_geco", type=int, default=0,
                        help="test mixtures scored with GeCo sampling (N x 2 score evaluations per speaker: slow)")
    parser.add_argument("--N", type=int, default=30, help="GeCo reverse steps at test time")
    parser.add_argument("--pesq_estoi", action="store_true", help="also PESQ-NB and ESTOI (slower)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for the separator to finish")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wait_for(args.separator, args.wait)

    from nass.runner import evaluate_correction, run_correction
    from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform, load_corrector, save_corrector
    from nass.dataio.prepare import prepare_dataset
    from nass.inference import load_separator

    geco_out = os.path.join(args.out, "geco")
    fast_out = os.path.join(args.out, "fast-geco")
    common = [
        f"--data_folder={args.data_folder}", f"--separator_folder={args.separator}",
        f"--triplet_folder={os.path.join(args.out, 'triplets')}", f"--seed={args.seed}",
        f"--train_utterances={args.train_utterances}", f"--batch_size={args.batch_size}",
        f"--crop_samples={args.crop_samples}", "--test_split=null", "--N_epochs=1000", "--noprogressbar",
    ]
    timings = {}
    start = time.time()
    reuse = os.path.isfile(os.path.join(geco_out, "corrector", "corrector.json")) and not args.retrain_geco
    if reuse:  # a second call (e.g. more Fast-GeCo steps: its run resumes from its checkpoint)
        print(f"reusing the GeCo corrector in {geco_out} (--retrain_geco to train it again)")
        init = f"GeCo {args.geco_steps} steps (lr {args.geco_lr}), from an earlier call" if args.geco_steps else "random"
    elif args.geco_steps > 0:
        run_correction(
            [os.path.join(DEMO, "geco-tiny.yaml"), f"--output_folder={geco_out}", f"--lr={args.geco_lr}",
             f"--optimizer_step_limit={args.geco_steps}",
             f"--train_rows_per_epoch={max(args.geco_steps * args.batch_size // 3, args.batch_size)}"] + common
        )
        init = f"GeCo {args.geco_steps} steps (lr {args.geco_lr})"
    else:  # documented alternative: Fast-GeCo from a seeded random initialisation
        torch.manual_seed(args.seed)
        save_corrector(GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform()), os.path.join(geco_out, "corrector"))
        init = f"random initialisation (torch seed {args.seed}), no GeCo stage"
    timings["GeCo training"] = time.time() - start
    start = time.time()
    run_correction(
        [os.path.join(DEMO, "fast-geco-tiny.yaml"), f"--output_folder={fast_out}", f"--geco_folder={geco_out}",
         f"--lr={args.fast_lr}", f"--optimizer_step_limit={args.fast_steps}",
         f"--train_rows_per_epoch={args.fast_epoch_steps * args.batch_size}"] + common
    )
    timings["Fast-GeCo training"] = time.time() - start

    test_csv = prepare_dataset("librimix", args.data_folder, os.path.join(args.out, "manifests"), splits=["test"])["test"]
    model, hp = load_separator(args.separator)
    start = time.time()
    results = evaluate_correction(
        model, hp["sample_rate"], hp["num_spks"], test_csv, os.path.join(args.out, "test"),
        load_corrector(os.path.join(fast_out, "corrector")), ["fast-geco"],
        initial=load_corrector(os.path.join(geco_out, "corrector")), num_workers=1, save_examples=2,
        pesq_estoi=args.pesq_estoi, max_utterances=args.n_test, seed=args.seed,
    )
    timings[f"evaluation, {args.n_test} mixtures"] = time.time() - start
    if args.n_test_geco > 0:
        start = time.time()
        evaluate_correction(
            model, hp["sample_rate"], hp["num_spks"], test_csv, os.path.join(args.out, "test_geco_subset"),
            load_corrector(os.path.join(geco_out, "corrector")), ["geco"], correction_steps=args.N,
            num_workers=1, save_examples=2, pesq_estoi=args.pesq_estoi, max_utterances=args.n_test_geco,
            seed=args.seed,
        )
        timings[f"evaluation, {args.n_test_geco} mixtures, GeCo N={args.N}"] = time.time() - start

    print()
    print(f"separator {args.separator}; first {args.n_test} of the demo test mixtures, every speaker; tiny "
          f"corrector: init {init}; Fast-GeCo {args.fast_steps} steps x batch {args.batch_size} "
          f"(lr {args.fast_lr}, crops {args.crop_samples} samples) on the triplets of {args.train_utterances} "
          f"training mixtures; torch threads {args.threads}")
    for r in results["summary"]:
        ci = "" if r["verdict"] == "identity" else f"[{r['lo']:+.2f}, {r['hi']:+.2f}]"
        print(f"{r['name']:34s} SI-SNRi {r['mean']:7.2f}  delta {r['delta']:+6.2f} {ci:>17s}  {r['verdict']}")
    for name, sec in timings.items():
        print(f"wall time {name}: {sec / 60:.1f} min")


if __name__ == "__main__":
    main()

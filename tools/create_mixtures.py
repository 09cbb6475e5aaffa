#!/usr/bin/env python
"""Create a LibriMix-shaped noisy corpus from any speech and noise folders.

Example::

    python tools/create_mixtures.py --speech LibriSpeech/train-clean-100 --noise wham_noise/tr \\
        --out OUT/Libri2Mix --num_spks 2 --sample_rate 8000 --modes min max \\
        --n_train 1000 --n_dev 100 --n_test 100 --seed 0

The logic lives in :func:`nass.dataio.mixing.create_mixtures`; see its docstring for
the recipe (LibriMix loudness gains, splits, layout).
"""

import argparse
import sys

from nass.dataio.mixing import DEFAULT_FRACTIONS, create_mixtures


def _fraction(text):
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected SPLIT=FRACTION, got {text!r}")
    try:
        return name, float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad fraction in {text!r}") from exc


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--speech", required=True, help="folder with one sub-folder per speaker, or CSV path,speaker")
    p.add_argument("--noise", required=True, help="noise folder (recursive) or CSV with a path column")
    p.add_argument("--out", required=True, help="corpus root, e.g. OUT/Libri2Mix")
    p.add_argument("--num_spks", type=int, default=2)
    p.add_argument("--sample_rate", type=int, default=8000, help="Hz, multiple of 1000")
    p.add_argument("--modes", nargs="+", default=["min"], choices=["min", "max"])
    p.add_argument(
        "--fractions",
        nargs="+",
        type=_fraction,
        default=None,
        metavar="SPLIT=FRACTION",
        help="speaker/noise split (default " + " ".join(f"{k}={v}" for k, v in DEFAULT_FRACTIONS.items()) + ")",
    )
    p.add_argument("--n_train", type=int, default=None, help="mixtures in 'train' (default: utterances / num_spks)")
    p.add_argument("--n_dev", type=int, default=None, help="mixtures in 'dev'")
    p.add_argument("--n_test", type=int, default=None, help="mixtures in 'test'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_workers", type=int, default=1, help="processes; the output does not depend on it")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    fractions = dict(args.fractions) if args.fractions else dict(DEFAULT_FRACTIONS)
    counts = {"train": args.n_train, "dev": args.n_dev, "test": args.n_test}
    n_mixtures = {k: v for k, v in counts.items() if v is not None and k in fractions}
    ignored = [k for k, v in counts.items() if v is not None and k not in fractions]
    if ignored:
        print(f"warning: --n_{'/--n_'.join(ignored)} ignored: no such split in --fractions", file=sys.stderr)
    try:
        out = _run(args, n_mixtures, fractions)
    except ValueError as exc:  # MixtureConfigError, AudioError: the message names the fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, rows in out.items():
        print(f"{split}: {len(rows)} mixtures")
    return 0


def _run(args, n_mixtures, fractions):
    return create_mixtures(
        args.speech,
        args.noise,
        args.out,
        num_spks=args.num_spks,
        sample_rate=args.sample_rate,
        modes=tuple(args.modes),
        n_mixtures=n_mixtures,
        fractions=fractions,
        seed=args.seed,
        num_workers=args.num_workers,
    )


if __name__ == "__main__":
    sys.exit(main())

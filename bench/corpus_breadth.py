#!/usr/bin/env python3
"""Does a broader training corpus train a better separator? (issue 9's comparison)

Trains the same recipe YAML at the same optimiser-step budget and seed on two or more
Libri2Mix-shaped corpora (``bench/quality_at_budget.py``'s ``run_one``: the real recipe as
a subprocess), scores every model on the speaker-disjoint test split of EVERY corpus
(``nass-evaluate``), and prints the cross table with paired differences on the same test
mixtures (first corpus minus each other one, mean over utterances +- 1.96 standard errors).

Example (the comparison in docs/demo_corpus.md)::

    python bench/corpus_breadth.py --config sepformer-tiny --steps 850 --extra=--mixture=clean \\
        --corpora broad61=data/demo/Libri2Mix voices11=data/demo11/Libri2Mix \\
        --out results/corpus_breadth_clean

``voices11`` is the 11-voice corpus, ``python tools/build_demo_corpus.py --sources
foundation --out data/demo11``. Finished trainings and evaluations are reused, so an
interrupted comparison resumes. Writes ``<out>/corpus_breadth_<config>.md`` and ``.csv``,
and, when the test mixtures are named LibriMix style (``<voice>-..._<voice>-...``, as the demo
corpus and LibriMix name them), a per-test-voice breakdown (``corpus_breadth_<config>_voices.csv``
and a second table in the ``.md``): which unseen voices each model separates better.

With noisy input (the default), every table also gives the denoise-only reference
(``mix_clean_si-snr_i``: the SI-SNRi of the clean mixture used as every estimate): a model
below it gains less than removing the noise alone would, so a comparison of such models
cannot show whether breadth helps it separate voices. These are SHORT CPU RUNS of tiny models unless
``--steps`` says otherwise.
"""

import argparse
import csv
import glob
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality_at_budget import run_dir, run_one  # noqa: E402

from nass.cli import evaluate_main  # noqa: E402
from nass.dataio.audio import atomic_write  # noqa: E402
from nass.dataio.dynamic_mixing import librimix_speaker  # noqa: E402
from nass.evaluation import paired_delta, read_column  # noqa: E402,F401


def find_test_manifest(run_dir):
    """The test-split manifest a recipe run prepared (``<run>/save/*_test.csv``)."""
    found = sorted(glob.glob(os.path.join(run_dir, "save", "*_test.csv")))
    if len(found) != 1:
        raise FileNotFoundError(f"{run_dir}/save: expected one *_test.csv manifest, found {found or 'none'}")
    return found[0]


def metrics_path(run_dir, test_label, own_label):
    """Where a run's scores on corpus ``test_label``'s test split live."""
    if test_label == own_label:
        return os.path.join(run_dir, "test", "test_metrics.csv")
    return os.path.join(run_dir, f"test_on_{test_label}", "test_metrics.csv")


def cross_evaluate(run_dir, manifest, out_dir):
    """Score a finished run on another corpus's test manifest (``nass-evaluate``; reused if done)."""
    if os.path.exists(os.path.join(out_dir, "test_metrics.csv")):
        return
    evaluate_main(["--model", run_dir, "--manifest", manifest, "--out", out_dir,
                   "--sdr_backend", "fast_bss_eval", "--num_workers", "0", "--save_examples", "0"])


def tabulate(out, labels, config, seeds):
    """Rows of the cross table: one per (trained on, tested on) with the mean over seeds.

    Returns
    -------
    list of dict
        Keys ``trained_on``, ``tested_on``, ``si_snr_i`` (mean over seeds), ``per_seed``
        (list), ``mix_clean_si_snr_i`` (denoise-only reference, NaN when the input was
        clean), ``delta`` / ``delta_ci`` (first corpus minus this one on the same mixtures,
        averaged over seeds; NaN on the first corpus's own rows).
    """
    rows = []
    for test in labels:
        for train in labels:
            per_seed, deltas, cis, ref = [], [], [], float("nan")
            for seed in seeds:
                run = run_dir(os.path.join(out, train), config, seed)
                path = metrics_path(run, test, train)
                vals = read_column(path)
                per_seed.append(sum(vals.values()) / len(vals))
                try:
                    clean = read_column(path, "mix_clean_si-snr_i")
                    ref = sum(clean.values()) / len(clean)
                except ValueError:
                    pass
                if train != labels[0]:
                    first = run_dir(os.path.join(out, labels[0]), config, seed)
                    d, ci, _ = paired_delta(read_column(metrics_path(first, test, labels[0])), vals)
                    deltas.append(d)
                    cis.append(ci)
            rows.append({
                "trained_on": train, "tested_on": test, "si_snr_i": sum(per_seed) / len(per_seed),
                "per_seed": per_seed, "mix_clean_si_snr_i": ref,
                "delta": sum(deltas) / len(deltas) if deltas else float("nan"),
                "delta_ci": sum(cis) / len(cis) if cis else float("nan"),
            })
    return rows


def mixture_speakers(utt_id):
    """Speakers of a LibriMix-style mixture ID (``<spk>-<...>_<spk>-<...>``), or ``[]``.

    Example
    -------
    >>> mixture_speakers("asterisk.allison-asterisk-allison-0001_kde.he-klettres-he-0007")
    ['asterisk.allison', 'kde.he']
    >>> mixture_speakers("u17")
    []
    """
    parts = [p for p in utt_id.split("_") if "-" in p]
    if len(parts) < 2:
        return []
    # the ID has no extension, but voice names may hold dots: give librimix_speaker one
    spks = [librimix_speaker(utt_id + ".wav", k, len(parts)) for k in range(len(parts))]
    return [] if None in spks else spks


def per_voice(out, labels, config, seeds):
    """Mean SI-SNRi of the test mixtures that contain each voice, per model (mean over seeds).

    Parameters
    ----------
    out : str
        The ``--out`` folder holding ``<label>/<config>-seed<seed>/`` runs, already scored
        on every corpus's test split.
    labels : list of str
        Corpus labels; the first corpus's model defines which mixtures are listed.
    config : str
        Recipe YAML name.
    seeds : list of int
        Seeds to average over.

    Returns
    -------
    list of dict
        Keys ``tested_on``, ``voice``, ``mixtures`` (how many contain it) and one key per
        training-corpus label; empty when the mixture IDs do not name their speakers.
    """
    rows = []
    for test in labels:
        scores = {
            train: [read_column(metrics_path(run_dir(os.path.join(out, train), config, s), test, train))
                    for s in seeds]
            for train in labels
        }
        ids_of = {}
        for utt in scores[labels[0]][0]:
            for voice in mixture_speakers(utt):
                ids_of.setdefault(voice, []).append(utt)
        for voice, ids in sorted(ids_of.items()):
            row = {"tested_on": test, "voice": voice, "mixtures": len(ids)}
            for train in labels:
                per_seed = [[v[i] for i in ids if i in v] for v in scores[train]]
                row[train] = sum(sum(x) / len(x) if x else float("nan") for x in per_seed) / len(per_seed)
            rows.append(row)
    return rows


def render(rows, labels, config, steps, seeds, extra, voice_rows=()):
    """The Markdown report of :func:`tabulate`'s rows."""
    f = lambda x: "n/a" if not math.isfinite(x) else f"{x:+.2f}"  # noqa: E731
    lines = [
        f"# Corpus breadth: `{config}`, {steps} optimiser steps, seeds {' '.join(map(str, seeds))}"
        + (f", overrides `{' '.join(extra)}`" if extra else ""),
        "",
        "SI-SNRi (dB) of the best-dev checkpoint on all mixtures of each test split; "
        f"Δ = model trained on `{labels[0]}` minus this model on the same mixtures "
        "(± 1.96 SE over mixtures, mean over seeds).",
        "",
        "| tested on | trained on | SI-SNRi (dB) | per seed | Δ vs " + labels[0] + " | denoise-only reference |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        delta = "" if not math.isfinite(r["delta"]) else f"{r['delta']:+.2f} ± {r['delta_ci']:.2f}"
        lines.append(
            f"| {r['tested_on']} | {r['trained_on']} | {f(r['si_snr_i'])} | "
            f"{' / '.join(f(v) for v in r['per_seed'])} | {delta} | {f(r['mix_clean_si_snr_i'])} |"
        )
    if voice_rows:
        lines += [
            "",
            "Per test voice: mean SI-SNRi (dB) of the mixtures that contain the voice (mean over seeds).",
            "",
            "| tested on | voice | mixtures | " + " | ".join(f"trained on {x}" for x in labels) + " |",
            "|---|---|---:|" + "---:|" * len(labels),
        ]
        for r in voice_rows:
            lines.append(f"| {r['tested_on']} | {r['voice']} | {r['mixtures']} | "
                         + " | ".join(f(r[x]) for x in labels) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", nargs="+", required=True,
                        help="label=data_folder pairs; the first is the broad corpus the others are compared with")
    parser.add_argument("--config", required=True, help="YAML name in recipes/LibriMix/separation/hparams/demo")
    parser.add_argument("--steps", type=int, required=True, help="optimiser steps per run (equal budget)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1234])
    parser.add_argument("--out", required=True)
    parser.add_argument("--jobs", type=int, default=2, help="trainings in parallel (each gets cores/jobs threads)")
    parser.add_argument("--extra", action="append", default=[], metavar="--KEY=VALUE",
                        help="an override for every run, e.g. --extra=--mixture=clean; repeat for more")
    args = parser.parse_args(argv)
    corpora = []
    for item in args.corpora:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            parser.error(f"--corpora: expected label=data_folder, got {item!r}")
        corpora.append((label, folder))
    labels = [c[0] for c in corpora]
    if len(set(labels)) != len(labels) or len(labels) < 2:
        parser.error("--corpora: give at least two corpora with distinct labels")

    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    tasks = [(label, folder, seed) for label, folder in corpora for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda t: run_one(args.config, t[2], args.steps, t[1], os.path.join(args.out, t[0]),
                                        threads, args.extra), tasks))
    for train in labels:
        for test in labels:
            if test == train:
                continue
            for seed in args.seeds:
                run = run_dir(os.path.join(args.out, train), args.config, seed)
                other = run_dir(os.path.join(args.out, test), args.config, seed)
                cross_evaluate(run, find_test_manifest(other), os.path.dirname(metrics_path(run, test, train)))

    rows = tabulate(args.out, labels, args.config, args.seeds)
    voice_rows = per_voice(args.out, labels, args.config, args.seeds)
    text = render(rows, labels, args.config, args.steps, args.seeds, args.extra, voice_rows)
    md = os.path.join(args.out, f"corpus_breadth_{args.config}.md")
    with atomic_write(md) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    with atomic_write(md[:-3] + ".csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "per_seed": " ".join(f"{v:.4f}" for v in r["per_seed"])} for r in rows)
    if voice_rows:
        with atomic_write(md[:-3] + "_voices.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(voice_rows[0]))
            w.writeheader()
            w.writerows(voice_rows)
    print(text)
    print(f"(written {md})")


if __name__ == "__main__":
    main()

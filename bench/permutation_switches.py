#!/usr/bin/env python3
"""Does a trained model swap its speakers inside an utterance? Per voice pair, over a split.

Each mixture of a manifest is separated by a trained model (training output folder or
portable model folder, :func:`nass.inference.load_separator`, read-only) and scored with
:func:`nass.metrics.segment_permutation_switches`: the SI-SNRi of the utterance's speaker
order, the SI-SNRi after re-ordering each segment whose other order is clearly better
(``--margin_db``), and the share of such segments among those where both speakers talk.
The gap between the two SI-SNRi columns bounds what a model that never swaps speakers
could gain with the same per-segment quality; a poor separation flips some segments by
chance, so it is an upper bound.

Rows: every voice pair with at least ``--min_mixtures`` mixtures (speakers read from the
LibriMix-style mixture IDs, :func:`nass.dataio.dynamic_mixing.librimix_speaker`), then
``ALL``. Written to stdout and, with ``--out``, to a CSV.

    python bench/permutation_switches.py --model results/demo \\
        --manifest results/demo/save/libri2mix_test.csv --segment_seconds 0.5

Numbers from this script on the demo corpus are SHORT CPU RUNS of tiny models.
"""

import argparse
import collections
import csv
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FIELDS = ["pair", "mixtures", "si-snr_i", "segment_oracle_si-snr_i", "segments", "switched_share"]


def pair_of(utt_id, num_spks):
    """Sorted speakers of a mixture ID, joined by ``" + "`` (``"?"`` when the ID does not tell).

    ``.wav`` is appended first: demo voice IDs hold dots (``asterisk.allison``) that
    ``os.path.splitext`` would otherwise take for an extension.
    """
    from nass.dataio.dynamic_mixing import librimix_speaker

    spk = [librimix_speaker(utt_id + ".wav", k, num_spks) for k in range(num_spks)]
    return "?" if None in spk else " + ".join(sorted(spk))


def summarise(records, min_mixtures):
    """Rows per pair (at least ``min_mixtures`` mixtures, most mixtures first) and ``ALL``.

    ``records``: dicts with ``pair``, ``si-snr_i``, ``segment_oracle_si-snr_i``, ``segments``
    and ``switched``. Means over mixtures; the switched share over all segments of the rows.
    """
    groups = collections.defaultdict(list)
    for r in records:
        groups[r["pair"]].append(r)
    keys = sorted((k for k, v in groups.items() if len(v) >= min_mixtures), key=lambda k: (-len(groups[k]), k))
    rows = []
    for key, recs in [(k, groups[k]) for k in keys] + [("ALL", records)]:
        segments = sum(r["segments"] for r in recs)
        rows.append({
            "pair": key,
            "mixtures": len(recs),
            "si-snr_i": float(np.mean([r["si-snr_i"] for r in recs])),
            "segment_oracle_si-snr_i": float(np.mean([r["segment_oracle_si-snr_i"] for r in recs])),
            "segments": segments,
            "switched_share": sum(r["switched"] for r in recs) / segments if segments else float("nan"),
        })
    return rows


def score(model, rows, num_spks, sample_rate, segment_seconds, margin_db):
    """One record per manifest row: the model's SI-SNRi with and without the segment re-ordering."""
    from nass.dataio.audio import read_audio
    from nass.losses.si_snr import si_snr
    from nass.metrics import segment_permutation_switches

    records = []
    for row in rows:
        mix = read_audio(row["mix_wav"], sample_rate)[0]
        refs = np.stack([read_audio(row[f"s{k + 1}_wav"], sample_rate)[0] for k in range(num_spks)], axis=1)
        with torch.no_grad():
            est = model(torch.as_tensor(mix, dtype=torch.float32)[None]).est_sources[0].float().numpy()
        n = min(len(mix), est.shape[0], refs.shape[0])
        m = segment_permutation_switches(est[:n], refs[:n], sample_rate, segment_seconds, margin_db)
        mix_t = torch.as_tensor(mix[:n], dtype=torch.float64).expand(num_spks, -1)
        base = float(si_snr(mix_t, torch.as_tensor(refs[:n], dtype=torch.float64).T).mean())
        records.append({
            "pair": pair_of(row["ID"], num_spks),
            "si-snr_i": m["si-snr"] - base,
            "segment_oracle_si-snr_i": m["segment_oracle_si-snr"] - base,
            "segments": m["segments"],
            "switched": m["switched"],
        })
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="training output folder or portable model folder")
    p.add_argument("--manifest", required=True, help="manifest CSV of the split to score (e.g. <run>/save/libri2mix_test.csv)")
    p.add_argument("--segment_seconds", type=float, default=0.5)
    p.add_argument("--margin_db", type=float, default=1.0)
    p.add_argument("--min_mixtures", type=int, default=10, help="pairs with fewer mixtures only count in ALL")
    p.add_argument("--max_utterances", type=int, default=None, help="first N rows of the manifest")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="CSV to write (temporary name, then renamed)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from nass.dataio.manifest import read_manifest
    from nass.inference import load_separator

    model, hp = load_separator(args.model)
    rows = read_manifest(args.manifest, hp["num_spks"])[: args.max_utterances]
    records = score(model, rows, hp["num_spks"], hp["sample_rate"], args.segment_seconds, args.margin_db)
    table = summarise(records, args.min_mixtures)
    print(f"{args.model} on {args.manifest} ({len(rows)} mixtures), {args.segment_seconds} s segments, "
          f"margin {args.margin_db} dB")
    print("| pair | mixtures | SI-SNRi | SI-SNRi, segments re-ordered | segments | switched |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r['pair']} | {r['mixtures']} | {r['si-snr_i']:+.2f} | {r['segment_oracle_si-snr_i']:+.2f} "
              f"| {r['segments']} | {r['switched_share']:.1%} |")
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(table)
        os.replace(tmp, args.out)
    return table


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reproduce the project's results table from scratch: ``docs/results.md`` + ``docs/results.csv``.

One command runs, in order (each step reuses what is already finished):

1. ``bench/quality_at_budget.py``: the six tiny SepFormer configurations (plain, noise
   output, NASS, unified SE+SS, unified + GM, NASS + unified + GM) trained for the same
   number of optimiser steps with every seed, then scored on the demo test split
   (SI-SNRi, SDRi, PESQ-NB, ESTOI). A run whose ``test/test_metrics.csv`` exists is not
   trained again.
2. ``bench/bench_correction_quality.py`` (when the file exists): the separator alone vs
   + Fast-GeCo / + GeCo on the first seed's ``sepformer-tiny-noise``; otherwise those rows
   are marked "not run". Then the Fast-GeCo corrector it trained is applied to every
   finished run (``nass-evaluate --corrector``, all test utterances, PESQ-NB / ESTOI
   included): the "+ Fast-GeCo" row of each configuration.
3. ``bench/bench_speed.py``: speed and memory ratios (its Markdown is appended).

Then it writes the table with the exact setup of every row (dataset and split, sample
rate, model size, budget in steps and seconds, seeds, hardware, software versions), the
mean and spread over seeds, and a pointer to the papers' numbers (they live in one place,
``nass/reproduce.py``; ``tools/reproduce.py --list`` prints them).

These are SHORT CPU RUNS OF TINY MODELS ON THE DEMO CORPUS, not paper-scale numbers;
the Markdown says so at the top.

Usage::

    .venv/bin/python bench/run_all.py                 # full: 400 steps x 2 seeds (hours on 2 cores)
    .venv/bin/python bench/run_all.py --quick         # smoke: 20 steps, 1 seed, separate output folders
    .venv/bin/python bench/run_all.py --tables-only   # only re-write docs/results.* from finished runs
"""

import argparse
import csv
import datetime
import json
import math
import os
import re
import statistics
import subprocess
import sys

from nass.reproduce import environment  # the machine, as every report describes it

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
DEMO_HPARAMS = os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams", "demo")
CONFIGS = [
    "sepformer-tiny",
    "sepformer-tiny-noise",
    "sepformer-tiny-nass",
    "sepformer-tiny-unified",
    "sepformer-tiny-unified-gm",
    "sepformer-tiny-nass-unified-gm",
]
#: Sub-folder of a run with its test scores before / after the shared Fast-GeCo corrector.
FAST_GECO_DIR = "test_fast-geco"
METHOD_NAMES = {
    "sepformer-tiny": "SepFormer (PIT SI-SNR)",
    "sepformer-tiny-noise": "+ noise output",
    "sepformer-tiny-nass": "NASS (noise output + PatchNCE)",
    "sepformer-tiny-unified": "unified SE+SS",
    "sepformer-tiny-unified-gm": "unified SE+SS + GM",
    "sepformer-tiny-nass-unified-gm": "NASS + unified SE+SS + GM",
}
#: (csv key, column title, decimals)
METRICS = [
    ("si-snr_i", "SI-SNRi (dB)", 2),
    ("sdr_i", "SDRi (dB)", 2),
    ("pesq", "PESQ-NB", 3),
    ("estoi", "ESTOI", 3),
    ("noise_si-snr", "noise SI-SNR (dB)", 2),
]
#: Where the papers' numbers are (never repeated here: ``nass.reproduce.ROWS`` is their one place).
PAPER_POINTER = ("The papers' published values (SI-SNRi / SDRi, dB), each with its paper, source and setup, "
                 "and the commands that reproduce each table row are in `nass/reproduce.py` (`ROWS`): "
                 "`python tools/reproduce.py --list` prints them, `--dry-run` the commands, and a run writes "
                 "`reproduction.md` with our result beside the published one (`--tiny`: the same path on the "
                 "demo corpus). Full-size models on the full data sets, GPU-days of training: not comparable "
                 "with the tables above.")
CSV_FIELDS = [
    "row", "config", "method", "dataset", "split", "num_test_utterances", "sample_rate", "model_size",
    "params_separator", "params_trained", "steps", "batch_size", "segment_s", "train_seconds_mean",
    "seeds", "n_seeds",
] + [f"{k}_{s}" for k, _, _ in METRICS for s in ("mean", "std")] + ["si-snr_i_delta_mean", "si-snr_i_delta_std"] + [
    "cpu", "cores", "gpu", "python", "torch", "speechbrain", "nass_commit", "status",
]


# ----------------------------------------------------------------------------- run folders
def corpus_recipe(data_folder):
    """The demo corpus's build recipe version and sources, from ``corpus_stats.json``.

    ``tools/build_demo_corpus.py`` writes ``corpus_stats.json`` next to the
    ``Libri2Mix`` folder; its ``options.recipe_version`` changes whenever the same
    options give different audio (``nass_demo.corpus.RECIPE_VERSION``).

    Parameters
    ----------
    data_folder : str
        The ``.../Libri2Mix`` folder the runs trained on.

    Returns
    -------
    str or None
        e.g. ``"recipe version 2, 15 sources, 61 voices"``; ``None`` when the folder has no
        readable ``corpus_stats.json`` (not a demo corpus): never raises.

    Example
    -------
    Exercised in ``tests/test_bench_smoke.py`` (``test_results_files_are_well_formed``).
    """
    from nass_demo.corpus import STATS_FILE

    path = os.path.join(os.path.dirname(os.path.abspath(data_folder)), STATS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
        opts = stats["options"]
        return (f"recipe version {opts['recipe_version']}, {len(opts['sources'])} sources, "
                f"{len(stats.get('voices', {}))} voices")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_means(csv_path):
    """Mean row of a ``test_metrics.csv`` as ``{metric: float}`` (``nan`` kept) and the utterance count
    (:func:`nass.evaluation.read_mean_row`)."""
    from nass.evaluation import MissingMeanRow, read_mean_row

    try:
        return read_mean_row(csv_path)
    except MissingMeanRow as exc:
        raise ValueError(f"{exc}. Delete the run folder and re-run.") from None


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def parse_train_log(folder):
    """Training facts of one run from its machine-readable outputs (no log text is parsed).

    Parameters
    ----------
    folder : str
        A training output folder: ``train_log.jsonl`` (:mod:`nass.curves`) and the model
        folder ``model/`` that every training writes at its end.

    Returns
    -------
    dict
        ``train_seconds`` (the ``train_seconds`` of the last record of the last session in
        ``train_log.jsonl``: wall seconds since that session's first epoch began, validation
        included, data preparation and the test evaluation excluded), ``steps`` (the last
        ``optimizer_step`` logged) and ``params_trained`` (parameters of the trained
        separator in ``model/``, written as SpeechBrain writes them, e.g. ``"161.9k"``);
        a key is absent when the run does not have the file.

    Example
    -------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "train_log.jsonl"), "w").write(
    ...     '{"optimizer_step": 20, "train_seconds": 30.0}\\n{"optimizer_step": 2, "train_seconds": 3.0}\\n'
    ...     '{"optimizer_step": 40, "train_seconds": 70.5, "valid": {"si-snr": 1.0}}\\n')
    >>> parse_train_log(d)
    {'train_seconds': 70.5, 'steps': 40}
    """
    out = {}
    path = os.path.join(folder, "train_log.jsonl")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:  # in file order; a line cut by a kill is skipped
            records = []
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        seconds = [r.get("train_seconds") for r in records if isinstance(r.get("train_seconds"), (int, float))]
        session = seconds
        for i in range(len(seconds) - 1, 0, -1):  # a resumed session starts again from 0
            if seconds[i] < seconds[i - 1]:
                session = seconds[i:]
                break
        if session:
            out["train_seconds"] = round(session[-1], 1)
        logged = [r["optimizer_step"] for r in records if isinstance(r.get("optimizer_step"), int)]
        if logged:
            out["steps"] = max(logged)
    model = os.path.join(folder, "model")
    if os.path.isfile(os.path.join(model, "model_card.json")):
        from speechbrain.utils.logger import format_order_of_magnitude

        from nass.inference import load_separator

        separator, _ = load_separator(model)
        out["params_trained"] = format_order_of_magnitude(sum(p.numel() for p in separator.parameters()))
    return out


def parse_hyperparams(path):
    """Plain values of a saved ``hyperparams.yaml`` (:func:`nass.export.training_values`; objects are None)."""
    if not os.path.isfile(path):
        return {}
    from nass.export import training_values

    return training_values(path)


def collect_runs(out_root, configs, seeds):
    """Per-(config, seed) facts of the runs under ``out_root`` (``<config>-seed<seed>``).

    Returns
    -------
    list of dict
        One per pair: ``config, seed, status`` ("done" or "missing") and, when done, the
        mean test metrics, ``num_test_utterances``, ``train_seconds``, ``steps``,
        ``params_trained``, ``sample_rate``, ``batch_size``, ``segment_s``, ``test_split``,
        and, when ``<run>/test_fast-geco/`` exists (see :func:`correct_runs`), ``fast_geco``
        (mean metrics after Fast-GeCo) and ``fast_geco_n`` (utterances scored). The
        separator-alone scores of that folder (same checkpoint, same utterances as the
        Fast-GeCo scores) give ``fast_geco_delta`` (after minus before, per metric) and
        supply PESQ / ESTOI missing from the run's own scores when they cover the same
        number of utterances.
    """
    rows = []
    for config in configs:
        for seed in seeds:
            folder = os.path.join(out_root, f"{config}-seed{seed}")
            metrics = os.path.join(folder, "test", "test_metrics.csv")
            row = {"config": config, "seed": seed, "folder": folder}
            if not os.path.isfile(metrics):
                row["status"] = "missing"
                rows.append(row)
                continue
            means, count = read_means(metrics)
            hp = parse_hyperparams(os.path.join(folder, "hyperparams.yaml"))
            row.update(means)
            corrected = os.path.join(folder, FAST_GECO_DIR, "test_metrics_fast-geco.csv")
            if os.path.isfile(corrected):
                row["fast_geco"], row["fast_geco_n"] = read_means(corrected)
                alone_csv = os.path.join(folder, FAST_GECO_DIR, "test_metrics.csv")
                alone, alone_n = read_means(alone_csv) if os.path.isfile(alone_csv) else ({}, -1)
                # The same checkpoint scored alone on the same utterances as the Fast-GeCo scores:
                # the paired difference says what the corrector did. With the run's own number of
                # test utterances it also supplies PESQ / ESTOI that the run's own scoring skipped.
                if alone:
                    row["fast_geco_delta"] = {k: row["fast_geco"][k] - alone[k]
                                              for k in row["fast_geco"] if k in alone}
                if alone_n == count:
                    for key in ("pesq", "estoi"):
                        if not math.isfinite(row.get(key, float("nan"))) and math.isfinite(alone.get(key, float("nan"))):
                            row[key] = alone[key]
            row.update(parse_train_log(folder))
            row["status"] = "done"
            row["num_test_utterances"] = count
            row["sample_rate"] = hp.get("sample_rate", "")
            row["batch_size"] = hp.get("batch_size", "")
            row["test_split"] = hp.get("test_split", "test")
            seg, rate = hp.get("training_signal_len"), hp.get("sample_rate")
            row["segment_s"] = round(seg / rate, 2) if isinstance(seg, int) and seg > 0 and isinstance(rate, int) else ""
            rows.append(row)
    return rows


def mean_std(values):
    """Mean and sample standard deviation of the finite values (``nan`` when undefined)."""
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else float("nan"))


def aggregate(runs, configs, params=None):
    """One row per configuration: mean and spread over its finished seeds.

    Parameters
    ----------
    runs : list of dict
        From :func:`collect_runs`.
    configs : list of str
    params : dict, optional
        ``config -> number of separator parameters`` (inference model).

    Returns
    -------
    list of dict
        Keys of :data:`CSV_FIELDS` that depend on the runs (the environment is added by
        :func:`write_results`).
    """
    params = params or {}
    table = []
    for config in configs:
        done = [r for r in runs if r["config"] == config and r["status"] == "done"]
        row = {
            "row": "quality", "config": config, "method": METHOD_NAMES.get(config, config),
            "dataset": "demo corpus (Libri2Mix-shaped, noisy, min)", "model_size": "tiny",
            "params_separator": params.get(config, ""),
            "seeds": " ".join(str(r["seed"]) for r in done), "n_seeds": len(done),
            "status": "done" if done else "not run",
        }
        if done:
            first = done[0]
            row["split"] = first.get("test_split", "test")
            row["num_test_utterances"] = first.get("num_test_utterances", "")
            row["sample_rate"] = first.get("sample_rate", "")
            row["batch_size"] = first.get("batch_size", "")
            row["segment_s"] = first.get("segment_s", "")
            row["params_trained"] = first.get("params_trained", "")
            steps = sorted({r.get("steps") for r in done if r.get("steps") is not None})
            row["steps"] = " / ".join(map(str, steps)) if steps else "?"
            row["train_seconds_mean"] = _round(mean_std([r.get("train_seconds") for r in done])[0], 1)
            for key, _, digits in METRICS:
                m, s = mean_std([r.get(key) for r in done])
                row[f"{key}_mean"], row[f"{key}_std"] = _round(m, digits + 3), _round(s, digits + 3)
        table.append(row)
        corrected = [r for r in done if r.get("fast_geco")]
        fg = {
            **{k: row.get(k, "") for k in ("dataset", "model_size", "params_separator", "split", "sample_rate",
                                           "batch_size", "segment_s", "params_trained", "steps",
                                           "train_seconds_mean")},
            "row": "quality+fast-geco", "config": f"{config} + fast-geco-tiny",
            "method": METHOD_NAMES.get(config, config) + " + Fast-GeCo",
            "seeds": " ".join(str(r["seed"]) for r in corrected), "n_seeds": len(corrected),
            "status": "done" if corrected else "not run",
        }
        if corrected:
            fg["num_test_utterances"] = corrected[0]["fast_geco_n"]
            for key, _, digits in METRICS:
                m, s = mean_std([r["fast_geco"].get(key) for r in corrected])
                fg[f"{key}_mean"], fg[f"{key}_std"] = _round(m, digits + 3), _round(s, digits + 3)
            m, s = mean_std([r.get("fast_geco_delta", {}).get("si-snr_i") for r in corrected])
            fg["si-snr_i_delta_mean"], fg["si-snr_i_delta_std"] = _round(m, 3), _round(s, 3)
        table.append(fg)
    return table


def correct_runs(runs, corrector, manifest, max_utterances=None):
    """Score every finished run before and after one shared Fast-GeCo corrector.

    For each ``done`` run without ``<run>/test_fast-geco/test_metrics_fast-geco.csv``,
    runs ``nass-evaluate --corrector <corrector> --correction fast-geco --pesq_estoi``
    on ``manifest`` (the test split). The corrector is the one trained by
    ``bench_correction_quality.py`` on the triplets of one separator and is applied
    unchanged to every separator (drop-in use; a corrector trained on each separator's
    own estimates, as in the paper, would likely do better).

    Parameters
    ----------
    runs : list of dict
        From :func:`collect_runs`; runs whose ``status`` is not ``"done"`` are skipped.
    corrector : str
        Folder of the exported Fast-GeCo corrector (``corrector.json`` + ``corrector.ckpt``).
    manifest : str
        Test-split manifest CSV (``nass.dataio.prepare.prepare_dataset``).
    max_utterances : int, optional
        Score only the first N utterances of ``manifest`` (default: all).

    Returns
    -------
    int
        Number of evaluations that failed (their runs keep no Fast-GeCo row; the output
        of each evaluation is in ``<run>/fast_geco_eval.log``).

    Example
    -------
    Exercised with a stubbed runner in ``tests/test_bench_smoke.py``
    (``test_correct_runs_evaluates_only_missing``).
    """
    failed = 0
    for r in runs:
        out = os.path.join(r["folder"], FAST_GECO_DIR)
        if r["status"] != "done" or os.path.isfile(os.path.join(out, "test_metrics_fast-geco.csv")):
            continue
        cmd = [sys.executable, "-c", "import sys; from nass.cli import evaluate_main; evaluate_main(sys.argv[1:])",
               "--model", r["folder"], "--manifest", manifest, "--out", out, "--corrector", corrector,
               "--correction", "fast-geco", "--pesq_estoi", "--sdr_backend", "fast_bss_eval",
               "--save_examples", "0", "--num_workers", "1",
               "--overwrite"]  # a retry replaces the separator-only table of an interrupted attempt
        if max_utterances:
            cmd += ["--max_utterances", str(max_utterances)]
        if run(cmd, log_path=os.path.join(r["folder"], "fast_geco_eval.log")) != 0:
            failed += 1
    return failed


def _round(x, digits):
    return round(x, digits) if isinstance(x, float) and math.isfinite(x) else ""


# ----------------------------------------------------------------------------- correction rows
CORRECTION_LINE = re.compile(r"^(separator alone \[\d+\]|\+ Fast-GeCo \[\d+\]|\+ GeCo N=\d+ \[\d+\])\s+"
                             r"(-?[\d.]+|nan)\s+(-?[\d.]+|nan)\s+(-?[\d.]+|nan)\s+(-?[\d.]+|nan)\s*$")


def parse_correction_output(text):
    """Rows of the table ``bench_correction_quality.py`` prints.

    Returns
    -------
    list of dict
        ``name, si-snr_i, sdr_i, pesq, estoi`` per printed row (empty when none found).
    """
    rows = []
    for line in text.splitlines():
        m = CORRECTION_LINE.match(line.strip())
        if m:
            rows.append({"name": m.group(1), "si-snr_i": _float(m.group(2)), "sdr_i": _float(m.group(3)),
                         "pesq": _float(m.group(4)), "estoi": _float(m.group(5))})
    return rows


def correction_rows(parsed, separator, note):
    """CSV rows for the correction results (or the 'not run' rows when ``parsed`` is empty)."""
    names = ["separator alone", "+ Fast-GeCo", "+ GeCo N=30"]
    if not parsed:
        return [{"row": "correction", "config": "geco-tiny", "method": n, "status": note,
                 "dataset": "demo corpus (Libri2Mix-shaped, noisy, min)", "model_size": "tiny"} for n in names]
    out = []
    for p in parsed:
        m = re.search(r"\[(\d+)\]", p["name"])
        row = {"row": "correction", "config": "geco-tiny / fast-geco-tiny", "method": p["name"], "status": "done",
               "dataset": "demo corpus (Libri2Mix-shaped, noisy, min)", "split": "test",
               "num_test_utterances": m.group(1) if m else "", "sample_rate": 8000, "model_size": "tiny",
               "seeds": os.path.basename(separator), "n_seeds": 1}
        for key in ("si-snr_i", "sdr_i", "pesq", "estoi"):
            row[f"{key}_mean"] = _round(p[key], 4)
        out.append(row)
    return out


def separator_params(configs):
    """Number of parameters of each configuration's separator (what inference runs)."""
    from hyperpyyaml import load_hyperpyyaml

    out = {}
    for config in configs:
        path = os.path.join(DEMO_HPARAMS, config + ".yaml")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            hp = load_hyperpyyaml(f, {"output_folder": os.path.join("/tmp", "run_all_params", config)})
        out[config] = sum(p.numel() for p in hp["separator"].parameters())
    return out


# ----------------------------------------------------------------------------- writing
def _cell(row, key, digits):
    m, s = row.get(f"{key}_mean", ""), row.get(f"{key}_std", "")
    if m == "" or m is None:
        return "n/a"
    text = f"{float(m):.{digits}f}"
    if s not in ("", None):
        text += f" ± {float(s):.{digits}f}"
    return text


def render_markdown(quality, correction, env, setup, runs, speed_md=None):
    """The text of ``docs/results.md``.

    Parameters
    ----------
    quality : list of dict
        :func:`aggregate` rows.
    correction : list of dict
        :func:`correction_rows`.
    env : dict
        :func:`environment`.
    setup : dict
        ``command``, ``steps``, ``seeds``, ``data_folder``, ``date``, ``quick`` and optionally
        ``corpus`` (:func:`corpus_recipe`).
    runs : list of dict
        :func:`collect_runs` (per-seed appendix).
    speed_md : str, optional
        ``bench_speed.md`` to append.
    """
    lines = [
        "# Results",
        "",
        "> **These are short CPU runs of tiny models on the demo corpus, not paper-scale numbers.** "
        "They show that every method trains and in which direction it moves at an equal, small budget. "
        "The papers' numbers (full-size models, LibriMix / WHAM!, GPU-days of training) are not "
        "comparable with this table; they live in `nass/reproduce.py` (`python tools/reproduce.py --list`), "
        "see the section below.",
        "",
        f"Generated by `{setup['command']}` on {setup['date']}"
        + (" (**--quick smoke run**: very few steps, one seed)" if setup.get("quick") else "") + ".",
        "",
        "## Setup (every row)",
        "",
        f"- Data: demo corpus (`tools/build_demo_corpus.py`, Libri2Mix-shaped, real recordings, noisy "
        f"`mix_both`, min mode) at `{setup['data_folder']}`"
        + (f" ({setup['corpus']}, as read from its `corpus_stats.json` when this page was written)"
           if setup.get("corpus") else "")
        + "; trained on `train`, best checkpoint by `dev` "
        "SI-SNR, scored on the `test` split (number of utterances per row below).",
        "- Models: tiny SepFormer configurations `recipes/LibriMix/separation/hparams/demo/<config>.yaml`.",
        f"- Budget: {setup['steps']} optimiser steps per run (equal for every row), seeds {setup['seeds']}; "
        "training seconds per run are wall time of the training loop on this machine "
        "(runs share the CPU when `--jobs` > 1 or other jobs run: compare seconds only between runs "
        "made under the same load).",
        f"- Hardware: {env['cpu']}, {env['cores']} cores, GPU: {env['gpu']}.",
        f"- Software: Python {env['python']}, torch {env['torch']}, speechbrain {env['speechbrain']}, "
        f"nass commit {env['nass_commit']}.",
        "- Metrics: mean over test utterances; `±` is the sample standard deviation over seeds "
        "(absent with one seed). SDR: BSS Eval v3 SDR (mir_eval, or fast_bss_eval where a run's "
        "`eval_sdr_backend` says so: identical within 1e-13 dB, tested); PESQ narrow-band; ESTOI.",
        "",
        "## Quality at an equal training budget (tiny SepFormer, demo corpus)",
        "",
    ]
    head = (["config", "method", "params (separator)", "steps", "train s (mean)", "seeds", "test utt."]
            + [t for _, t, _ in METRICS] + ["Δ SI-SNRi by Fast-GeCo (same utt.)"])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in quality:
        if r["status"] != "done":
            params = r.get("params_separator")
            lines.append("| " + " | ".join([r["config"], r["method"], f"{params:,}" if isinstance(params, int) else "", "", "",
                                             "not run", ""] + ["n/a"] * len(METRICS) + [""]) + " |")
            continue
        params = r.get("params_separator")
        lines.append("| " + " | ".join(
            [r["config"], r["method"], f"{params:,}" if isinstance(params, int) else str(params or "?"),
             str(r.get("steps", "")), str(r.get("train_seconds_mean", "")), f"{r['seeds']} (n={r['n_seeds']})",
             str(r.get("num_test_utterances", ""))]
            + [_cell(r, k, d) for k, _, d in METRICS]
            + [_cell(r, "si-snr_i_delta", 2) if r.get("row") == "quality+fast-geco" else ""]) + " |")
    lines += ["", f"Test utterances per run: "
              f"{', '.join(sorted({str(r.get('num_test_utterances')) for r in quality if r['status'] == 'done'})) or 'n/a'}; "
              f"sample rate {', '.join(sorted({str(r.get('sample_rate')) for r in quality if r['status'] == 'done'})) or 'n/a'} Hz; "
              f"batch {', '.join(sorted({str(r.get('batch_size')) for r in quality if r['status'] == 'done'})) or 'n/a'} x "
              f"{', '.join(sorted({str(r.get('segment_s')) for r in quality if r['status'] == 'done'})) or 'n/a'} s crops."]
    fg_done = [r for r in quality if r.get("row") == "quality+fast-geco" and r["status"] == "done"]
    if fg_done:
        lines += ["", "Rows `+ Fast-GeCo`: ONE tiny Fast-GeCo corrector (trained by "
                  "`bench/bench_correction_quality.py` on the estimates of the first seed's `sepformer-tiny-noise`, "
                  "see the next section) applied unchanged, one step per speaker, to each separator; scored on "
                  f"{', '.join(sorted({str(r.get('num_test_utterances')) for r in fg_done}))} test utterances. "
                  "Steps and seconds are the separator's (the corrector's training is not included)."]
    lines += ["", "## Generative correction (GeCo / Fast-GeCo, tiny corrector, demo corpus)", ""]
    head = ["rows", "status", "SI-SNRi (dB)", "SDRi (dB)", "PESQ-NB", "ESTOI"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in correction:
        vals = [f"{float(r[k + '_mean']):.{d}f}" if r.get(k + "_mean") not in ("", None) else "n/a"
                for k, d in (("si-snr_i", 2), ("sdr_i", 2), ("pesq", 3), ("estoi", 3))]
        lines.append("| " + " | ".join([r["method"], r["status"]] + vals) + " |")
    if correction and correction[0]["status"] == "done":
        lines += ["", f"Separator: `{correction[0].get('seeds')}`; `[n]` = first n demo test mixtures; see "
                  "`bench/bench_correction_quality.py` for the corrector's budget."]
    lines += ["", "## The papers' reference numbers (not comparable with the tables above)", ""]
    lines.append(PAPER_POINTER)
    lines += learning_curves_section()
    lines += ["", "## Per-seed runs", ""]
    lines.append("| config | seed | status | steps | train s | " + " | ".join(t for _, t, _ in METRICS) + " |")
    lines.append("|" + "---|" * (5 + len(METRICS)))
    for r in runs:
        vals = [f"{r[k]:.{d}f}" if isinstance(r.get(k), float) and math.isfinite(r[k]) else "n/a" for k, _, d in METRICS]
        lines.append("| " + " | ".join([r["config"], str(r["seed"]), r["status"], str(r.get("steps", "")),
                                         str(r.get("train_seconds", ""))] + vals) + " |")
    if speed_md:
        lines += ["", "## Speed and memory", "", speed_md.replace("\n# ", "\n### ").replace("\n## ", "\n### ")
                  .lstrip("# ").strip()]
    else:
        lines += ["", "## Speed and memory", "", "not run (`bench/bench_speed.py`)."]
    return "\n".join(lines) + "\n"


#: Hand-kept learning-curve section (bench/learning_curve.py runs), copied into results.md.
LEARNING_CURVES_MD = os.path.join(ROOT, "docs", "learning_curves.md")


def learning_curves_section(path=LEARNING_CURVES_MD):
    """The lines of ``docs/learning_curves.md`` as a ``##`` section of ``results.md``
    (its headings one level down; image links made relative to ``docs/``), or none.

    Example
    -------
    >>> learning_curves_section("/nonexistent.md")
    []
    """
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        text = f.read().strip()
    out = [""]
    for line in text.splitlines():
        out.append("#" + line if line.startswith("#") else line)
    return out


def write_results(docs_dir, quality, correction, env, setup, runs, speed_md=None):
    """Write ``results.md`` and ``results.csv`` into ``docs_dir`` (atomic renames).

    Returns
    -------
    (str, str)
        The two paths.
    """
    os.makedirs(docs_dir, exist_ok=True)
    md_path, csv_path = os.path.join(docs_dir, "results.md"), os.path.join(docs_dir, "results.csv")
    with open(md_path + ".tmp", "w", encoding="utf-8") as f:
        f.write(render_markdown(quality, correction, env, setup, runs, speed_md))
    os.replace(md_path + ".tmp", md_path)
    with open(csv_path + ".tmp", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in quality + correction:
            writer.writerow({**{k: env.get(k, "") for k in ("cpu", "cores", "gpu", "python", "torch", "speechbrain",
                                                            "nass_commit")}, **row})
    os.replace(csv_path + ".tmp", csv_path)
    return md_path, csv_path


# ----------------------------------------------------------------------------- steps
def run(cmd, log_path=None):
    """Run a command from the repository root (output to ``log_path`` when given); its return code."""
    print("+ " + " ".join(cmd), flush=True)
    if log_path is None:
        return subprocess.run(cmd, cwd=ROOT).returncode
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode


def main(argv=None):
    """Run the benchmarks (reusing finished runs) and write ``docs/results.md`` / ``.csv``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: few steps, one seed, separate output folders")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per quality run (default 400, quick 20)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default 1234 1235 (quick: 1234)")
    p.add_argument("--configs", nargs="+", default=CONFIGS)
    p.add_argument("--jobs", type=int, default=2, help="quality runs in parallel")
    p.add_argument("--data_folder", default=os.path.join(ROOT, "data", "demo", "Libri2Mix"))
    p.add_argument("--results", default=None,
                   help="root of the run folders (default results/, quick: results/run_all_quick/)")
    p.add_argument("--docs", default=os.path.join(ROOT, "docs"), help="where results.md / results.csv go")
    p.add_argument("--speed-threads", type=int, default=None,
                   help="--threads for bench_speed.py (1 on a loaded machine)")
    p.add_argument("--fast-geco-utterances", type=int, default=None,
                   help="score the '+ Fast-GeCo' rows on the first N test utterances (default: all)")
    p.add_argument("--speed-md", nargs="*", default=[],
                   help="further bench_speed.md files to append (e.g. sections run separately on an idle machine)")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-correction", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--tables-only", action="store_true", help="run nothing; tabulate what is finished")
    args = p.parse_args(argv)
    steps = args.steps or (20 if args.quick else 400)
    seeds = args.seeds or ([1234] if args.quick else [1234, 1235])
    results = args.results or os.path.join(ROOT, "results", "run_all_quick" if args.quick else "")
    quality_out = os.path.join(results, "bench_quality")
    correction_out = os.path.join(results, "bench_correction_quality")
    speed_out = os.path.join(results, "bench_speed")
    py = sys.executable

    if not (args.skip_quality or args.tables_only):
        code = run([py, os.path.join(BENCH, "quality_at_budget.py"), "--configs", *args.configs,
                    "--seeds", *map(str, seeds), "--steps", str(steps), "--jobs", str(args.jobs),
                    "--data_folder", args.data_folder, "--out", quality_out, "--extra=--eval_pesq_estoi=True"])
        if code != 0:
            print(f"quality_at_budget.py failed (exit {code}); tabulating the runs that finished", file=sys.stderr)

    correction_script = os.path.join(BENCH, "bench_correction_quality.py")
    correction_log = os.path.join(correction_out, "run_all_stdout.txt")
    separator = os.path.join(quality_out, f"sepformer-tiny-noise-seed{seeds[0]}")
    note = "not run"
    if not os.path.isfile(correction_script):
        note = "not run (bench/bench_correction_quality.py absent)"
    elif not (args.skip_correction or args.tables_only) and not os.path.isfile(correction_log):
        quick = ["--geco_steps", "20", "--fast_steps", "10", "--n_test", "5", "--n_test_geco", "2"] if args.quick else []
        code = run([py, correction_script, "--separator", separator, "--data_folder", args.data_folder,
                    "--out", correction_out, *quick], log_path=correction_log + ".partial")
        if code == 0:
            os.replace(correction_log + ".partial", correction_log)
        else:
            note = f"failed (exit {code}, see {correction_log}.partial)"
    parsed = []
    if os.path.isfile(correction_log):
        with open(correction_log, encoding="utf-8", errors="replace") as f:
            parsed = parse_correction_output(f.read())

    speed_md_path = os.path.join(speed_out, "bench_speed.md")
    if not (args.skip_speed or args.tables_only) and not os.path.isfile(speed_md_path):
        run([py, os.path.join(BENCH, "bench_speed.py"), "--out", speed_out] + (["--quick"] if args.quick else [])
            + (["--threads", str(args.speed_threads)] if args.speed_threads else []))
    speed_parts = []
    for path in [speed_md_path] + list(args.speed_md):
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                speed_parts.append(f.read().strip())
        elif path != speed_md_path:
            print(f"--speed-md {path}: no such file; left out", file=sys.stderr)
    speed_md = "\n\n".join(speed_parts) or None

    corrector = os.path.join(correction_out, "fast-geco", "corrector")
    if not (args.skip_correction or args.tables_only) and os.path.isdir(corrector):
        from nass.dataio.prepare import prepare_dataset

        manifest = prepare_dataset("librimix", args.data_folder, os.path.join(results, "manifests"),
                                   splits=["test"])["test"]
        failed = correct_runs(collect_runs(quality_out, args.configs, seeds), corrector, manifest,
                              max_utterances=5 if args.quick else args.fast_geco_utterances)
        if failed:
            print(f"{failed} Fast-GeCo evaluation(s) failed; see <run>/fast_geco_eval.log", file=sys.stderr)

    runs = collect_runs(quality_out, args.configs, seeds)
    try:
        params = separator_params(args.configs)
    except Exception as exc:  # noqa: BLE001 - the table is still written without the counts
        print(f"parameter count failed ({exc}); column left empty", file=sys.stderr)
        params = {}
    env = environment()
    setup = {
        "command": " ".join(["bench/run_all.py"] + (sys.argv[1:] if argv is None else list(argv))),
        "steps": steps, "seeds": " ".join(map(str, seeds)), "data_folder": os.path.relpath(args.data_folder, ROOT),
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
        "corpus": corpus_recipe(args.data_folder),
    }
    quality = aggregate(runs, args.configs, params)
    seen = sorted({r["steps"] for r in runs if r["status"] == "done" and r.get("steps") is not None})
    if seen and seen != [steps]:  # reused runs trained with another budget: say what they used
        setup["steps"] = f"{' / '.join(map(str, seen))} (as logged by the runs; {steps} requested)"
    correction = correction_rows(parsed, separator, note)
    md_path, csv_path = write_results(args.docs, quality, correction, env, setup, runs, speed_md)
    print(f"written {md_path} and {csv_path}")
    return quality


if __name__ == "__main__":
    main()

"""The benchmark runners' bookkeeping on fake inputs (no training, no timing)."""

import csv
import importlib.util
import json
import math
import os

import pytest
import torch

from conftest import REPO


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "bench", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_all = _load("run_all")
bench_speed = _load("bench_speed")

# train_log.jsonl of a run that was resumed once: the first session's rows, then the second's
TRAIN_LOG = [
    {"optimizer_step": 10, "train_running": {"loss": 1.0}, "train_seconds": 12.0},
    {"epoch": 1, "optimizer_step": 20, "valid": {"si-snr": 1.0}, "train_seconds": 30.0},
    {"optimizer_step": 30, "train_running": {"loss": 0.5}, "train_seconds": 20.25},
    {"epoch": 2, "optimizer_step": 40, "valid": {"si-snr": 2.0}, "train_seconds": 70.5},
]
#: A separator of 10 * 400 + 400 = 4400 parameters in the run's model folder.
MODEL_YAML = "sample_rate: 8000\nnum_spks: 2\nseparator: !new:torch.nn.Linear [10, 400]\n"


def write_metrics(path, si_snr_i, pesq=True, pesq_value=2.0, n=2):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cols = ["ID", "si-snr", "si-snr_i", "sdr", "sdr_i", "mix_si-snr"] + (["pesq", "estoi"] if pesq else [])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for i in range(n):
            v = si_snr_i + (1 if i % 2 else -1)
            w.writerow([f"u{i}", 1, v, 2, v + 0.5, 0] + ([pesq_value, 0.7] if pesq else []))
        w.writerow(["mean", 1, si_snr_i, 2, si_snr_i + 0.5, 0] + ([pesq_value, 0.7] if pesq else []))


def fake_run(root, config, seed, si_snr_i, pesq=True):
    folder = os.path.join(root, f"{config}-seed{seed}")
    write_metrics(os.path.join(folder, "test", "test_metrics.csv"), si_snr_i, pesq)
    with open(os.path.join(folder, "train_log.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in TRAIN_LOG) + '{"optimizer_step": 4')  # cut by a kill
    import io

    from nass.export import FORMAT, write_model_folder

    buf = io.BytesIO()
    torch.save(torch.nn.Linear(10, 400).state_dict(), buf)
    write_model_folder(os.path.join(folder, "model"), MODEL_YAML, buf.getvalue(), {"format": FORMAT})
    with open(os.path.join(folder, "hyperparams.yaml"), "w") as f:
        f.write("seed: 1234\nsample_rate: 8000   # Hz\nbatch_size: 4\ntraining_signal_len: 24000\n"
                "test_split: test\nspeed_perturb: !new:foo.Bar\n")
    return folder


def test_log_and_run_collection(tmp_path):
    fake_run(str(tmp_path), "sepformer-tiny", 1, 3.0)
    fake_run(str(tmp_path), "sepformer-tiny", 2, 5.0, pesq=False)
    runs = run_all.collect_runs(str(tmp_path), ["sepformer-tiny", "sepformer-tiny-nass"], [1, 2])
    assert [r["status"] for r in runs] == ["done", "done", "missing", "missing"]
    first = runs[0]
    assert first["train_seconds"] == pytest.approx(70.5)
    assert first["steps"] == 40 and first["params_trained"] == "4.4k"
    assert first["sample_rate"] == 8000 and first["segment_s"] == 3.0 and first["num_test_utterances"] == 2
    table = run_all.aggregate(runs, ["sepformer-tiny", "sepformer-tiny-nass"], params={"sepformer-tiny": 1234})
    row = table[0]
    assert row["si-snr_i_mean"] == pytest.approx(4.0) and row["si-snr_i_std"] == pytest.approx(math.sqrt(2), abs=1e-3)
    assert row["pesq_mean"] == pytest.approx(2.0) and row["pesq_std"] == ""  # one finite seed: no spread
    assert row["n_seeds"] == 2 and row["steps"] == "40"
    assert table[1]["status"] == "not run"


def test_fast_geco_rows_and_pesq_backfill(tmp_path):
    # seed 1: scored without PESQ; its Fast-GeCo folder has separator-alone PESQ for the same 2 utterances
    for seed, fg in ((1, 2.0), (2, 4.0)):
        folder = fake_run(str(tmp_path), "sepformer-tiny", seed, 3.0, pesq=False)
        write_metrics(os.path.join(folder, run_all.FAST_GECO_DIR, "test_metrics.csv"), 3.0, pesq_value=1.5)
        write_metrics(os.path.join(folder, run_all.FAST_GECO_DIR, "test_metrics_fast-geco.csv"), fg, pesq_value=1.8)
    # a run scored on 2 utterances, re-scored on 5 next to its Fast-GeCo scores
    folder = fake_run(str(tmp_path), "sepformer-tiny-noise", 1, 1.0, pesq=False)
    write_metrics(os.path.join(folder, run_all.FAST_GECO_DIR, "test_metrics.csv"), 1.0, pesq_value=1.5, n=5)
    write_metrics(os.path.join(folder, run_all.FAST_GECO_DIR, "test_metrics_fast-geco.csv"), 0.5, n=5)
    runs = run_all.collect_runs(str(tmp_path), ["sepformer-tiny", "sepformer-tiny-noise"], [1, 2])
    assert runs[0]["pesq"] == pytest.approx(1.5) and runs[0]["fast_geco"]["si-snr_i"] == pytest.approx(2.0)
    assert runs[0]["si-snr_i"] == pytest.approx(3.0) and runs[0]["fast_geco_delta"]["si-snr_i"] == pytest.approx(-1.0)
    # re-scored on other utterances (5 vs the run's own 2): the run's own scores stay, no back-fill,
    # the delta is still paired (alone and corrected on the same 5)
    noise = runs[2]
    assert noise["num_test_utterances"] == 2 and noise["si-snr_i"] == pytest.approx(1.0)
    assert math.isnan(noise.get("pesq", float("nan"))) and noise["fast_geco_delta"]["si-snr_i"] == pytest.approx(-0.5)
    table = run_all.aggregate(runs, ["sepformer-tiny", "sepformer-tiny-noise"])
    assert [r["row"] for r in table] == ["quality", "quality+fast-geco"] * 2
    fg = table[1]
    assert fg["status"] == "done" and fg["n_seeds"] == 2 and fg["method"].endswith("+ Fast-GeCo")
    assert fg["si-snr_i_mean"] == pytest.approx(3.0) and fg["si-snr_i_std"] == pytest.approx(math.sqrt(2), abs=1e-3)
    assert fg["pesq_mean"] == pytest.approx(1.8) and table[0]["pesq_mean"] == pytest.approx(1.5)
    assert fg["si-snr_i_delta_mean"] == pytest.approx(0.0) and fg["si-snr_i_delta_std"] == pytest.approx(math.sqrt(2), abs=1e-3)
    assert table[3]["num_test_utterances"] == 5 and table[3]["n_seeds"] == 1


def test_correct_runs_evaluates_only_missing(tmp_path, monkeypatch):
    done = fake_run(str(tmp_path), "sepformer-tiny", 1, 3.0)
    finished = fake_run(str(tmp_path), "sepformer-tiny", 2, 3.0)
    write_metrics(os.path.join(finished, run_all.FAST_GECO_DIR, "test_metrics_fast-geco.csv"), 2.0)
    calls = []
    monkeypatch.setattr(run_all, "run", lambda cmd, log_path=None: calls.append(cmd) or 1)
    runs = run_all.collect_runs(str(tmp_path), ["sepformer-tiny"], [1, 2, 3])
    assert run_all.correct_runs(runs, "corr", "test.csv", max_utterances=7) == 1  # the failure is counted
    assert len(calls) == 1
    cmd = calls[0]
    assert cmd[cmd.index("--model") + 1] == done and cmd[cmd.index("--corrector") + 1] == "corr"
    assert cmd[cmd.index("--max_utterances") + 1] == "7" and "--pesq_estoi" in cmd


def test_results_files_are_well_formed(tmp_path):
    fake_run(str(tmp_path), "sepformer-tiny", 1, 3.0)
    runs = run_all.collect_runs(str(tmp_path), ["sepformer-tiny", "sepformer-tiny-gm"], [1])
    quality = run_all.aggregate(runs, ["sepformer-tiny", "sepformer-tiny-gm"], params={"sepformer-tiny": 1234})
    printed = ("separator alone [5]           3.10     3.50    1.900    0.650\n"
               "+ Fast-GeCo [5]               2.00     2.20    1.800    0.600\n"
               "separator alone [2]           3.00     3.40      nan    0.640\n"
               "+ GeCo N=30 [2]               1.00     1.10    1.500    0.500\nwall time x: 1 min\n")
    parsed = run_all.parse_correction_output(printed)
    assert [p["name"] for p in parsed] == ["separator alone [5]", "+ Fast-GeCo [5]", "separator alone [2]",
                                           "+ GeCo N=30 [2]"]
    assert math.isnan(parsed[2]["pesq"]) and parsed[3]["si-snr_i"] == 1.0
    correction = run_all.correction_rows(parsed, "x/sepformer-tiny-noise-seed1", "not run")
    env = {"cpu": "Fake CPU", "cores": 2, "gpu": "none", "python": "3.x", "torch": "t", "speechbrain": "s",
           "nass_commit": "abc"}
    corpus = tmp_path / "corpus"
    (corpus / "Libri2Mix").mkdir(parents=True)
    assert run_all.corpus_recipe(str(corpus / "Libri2Mix")) is None  # no stats file: not a demo corpus
    (corpus / "corpus_stats.json").write_text(json.dumps(
        {"options": {"recipe_version": 7, "sources": ["a", "b"]}, "voices": {"v1": {}, "v2": {}, "v3": {}}}))
    setup = {"command": "bench/run_all.py --quick", "steps": 40, "seeds": "1", "data_folder": "data/demo",
             "date": "today", "quick": True, "corpus": run_all.corpus_recipe(str(corpus / "Libri2Mix"))}
    md_path, csv_path = run_all.write_results(str(tmp_path / "docs"), quality, correction, env, setup, runs,
                                              speed_md="# Speed\n\n## 1. x\n\n| a |\n|---|\n| 1 |\n")
    md = open(md_path).read()
    assert "not paper-scale numbers" in md and "Fake CPU" in md  # disclaimer, hardware
    # the papers' numbers are not repeated: the page points to their one place (issue 22)
    assert "`nass/reproduce.py`" in md and "tools/reproduce.py --list" in md and "14.9" not in md
    assert "| sepformer-tiny-gm |" in md and "not run" in md
    assert "recipe version 7, 2 sources, 3 voices" in md  # which corpus build the runs used
    for line in md.splitlines():  # every table row has as many cells as its header
        if line.startswith("|"):
            assert line.endswith("|")
    tables = [block for block in md.split("\n\n") if block.startswith("|")]
    for block in tables:
        widths = {row.count("|") for row in block.splitlines()}
        assert len(widths) == 1, block
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["row"] for r in rows] == ["quality", "quality+fast-geco"] * 2 + ["correction"] * 4
    assert rows[0]["cpu"] == "Fake CPU" and rows[0]["si-snr_i_mean"] == "3.0" and rows[0]["params_separator"] == "1234"
    assert rows[1]["status"] == "not run" and rows[1]["si-snr_i_mean"] == ""  # no Fast-GeCo scores: no numbers
    assert rows[4]["method"] == "separator alone [5]" and rows[4]["num_test_utterances"] == "5"
    # without the correction script's output the rows are present and marked
    assert {r["status"] for r in run_all.correction_rows([], "x", "not run (absent)")} == {"not run (absent)"}


def test_speed_markdown_from_fake_result(tmp_path):
    def row(name, t, suffix=""):
        return {"variant": name, "params": 100, "method": suffix or "plain", "suffix": suffix, "median_s": t,
                "min_s": t, "times_s": [t], "ratio_to_plain_brain": t / 1.0,
                "memory": {"rss_after_imports_mb": 400.0, "peak_rss_mb": 500.0}}

    training = {"size": "tiny", "batch_size": 4, "seconds_per_utterance": 3.0, "reps": 3,
                "framework_overhead_pct": 2.0, "load_after": [1, 1, 1],
                "rows": [row("sepformer-tiny", 1.0), row("plain PyTorch loop", 0.98),
                         row("sepformer-tiny-noise", 1.1, "-noise"), row("sepformer-tiny-nass", 1.2, "-nass"),
                         row("sepformer-tiny-unified", 1.3, "-unified"),
                         row("sepformer-tiny-unified-gm", 2.0, "-unified-gm")]}
    result = {
        "environment": {"date": "d", "cpu": "Fake CPU", "cores": 2, "torch_threads": 2, "python": "3", "torch": "t",
                        "device": "cpu", "load_avg_start": [1, 1, 1], "nass_commit": "abc"},
        "command": "bench/bench_speed.py --quick", "load_avg_end": [2, 2, 2], "training": [training],
        "inference": {"reps": 3, "rows": [{"model": "sepformer", "size": "tiny", "params": 10, "audio_s": 4.0,
                                           "median_s": 0.4, "rtf": 0.1}]},
        "geco": {"rows": [{"size": "tiny", "params": 5, "fast_geco_s_per_s": 0.1, "geco30_s_per_s": 6.0,
                           "geco_steps_run": 30, "extrapolated": False, "speedup": 60.0}]},
        "sdr": {"num_utterances": 20, "audio_s": 100, "reps": 1,
                "rows": [{"method": "serial", "median_s": 10.0, "speedup_vs_serial_mir_eval": 1.0}],
                "fast_bss_eval": {"version": "0.1.4", "max_abs_diff_sdr_db": 1e-3, "max_abs_diff_mixture_sdr_db": 1e-3,
                                  "max_abs_diff_sdri_db": 1e-3, "passes_0.05_db": True}},
    }
    md = bench_speed.write_outputs(result, str(tmp_path))
    assert os.path.isfile(tmp_path / "bench_speed.json")
    assert "+2.0 %" in md and "within the 5 % goal" in md
    assert "PatchNCE overhead (nass vs noise): +9.1 %" in md and "x1.54" in md
    assert "500 MiB (100 above imports)" in md and "PASSES" in md and "60.0x" in md
    for block in md.split("\n\n"):
        if block.startswith("|"):
            assert len({r.count("|") for r in block.splitlines()}) == 1, block


def test_corpus_breadth_cross_table_from_finished_runs(tmp_path, capsys):
    """bench/corpus_breadth.py on finished runs: nothing is retrained or re-scored, the
    cross table has every (trained on, tested on) pair and the paired differences are
    taken on the same mixtures."""
    cb = _load("corpus_breadth")
    out = str(tmp_path / "out")

    def scores(path, values, clean_ref=None):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ID", "si-snr_i"] + (["mix_clean_si-snr_i"] if clean_ref is not None else []))
            for utt, v in zip(ids, values):
                w.writerow([utt, v] + ([clean_ref] if clean_ref is not None else []))
            w.writerow(["mean", sum(values) / len(values)] + ([clean_ref] if clean_ref is not None else []))

    # LibriMix-style mixture IDs: voice A is in mixtures 0 and 1, B in 0 and 2, C in 1 and 2
    ids = ["A-1-0_B-1-0", "A-1-1_C-1-1", "B-1-2_C-1-2"]
    # broad model: +3 / +2 dB, narrow model: +1 / +2.5 dB (per mixture: +-0.5 around the mean)
    table = {("broad", "broad"): 3.0, ("narrow", "broad"): 1.0, ("broad", "narrow"): 2.0, ("narrow", "narrow"): 2.5}
    for (train, test), mean in table.items():
        run = os.path.join(out, train, "sepformer-tiny-seed7")
        scores(cb.metrics_path(run, test, train), [mean - 0.5, mean + 0.5, mean], clean_ref=1.6)
        os.makedirs(os.path.join(run, "save"), exist_ok=True)
        open(os.path.join(run, "save", "libri2mix_test.csv"), "w").close()

    cb.main(["--corpora", "broad=/nowhere/a", "narrow=/nowhere/b", "--config", "sepformer-tiny",
             "--steps", "5", "--seeds", "7", "--out", out])
    text = capsys.readouterr().out
    rows = {(r["trained_on"], r["tested_on"]): r for r in cb.tabulate(out, ["broad", "narrow"], "sepformer-tiny", [7])}
    for key, mean in table.items():
        assert rows[key]["si_snr_i"] == pytest.approx(mean)
    assert rows[("narrow", "broad")]["delta"] == pytest.approx(2.0)  # broad model better on the broad test
    assert rows[("narrow", "narrow")]["delta"] == pytest.approx(-0.5)
    assert rows[("narrow", "broad")]["delta_ci"] == pytest.approx(0.0, abs=1e-9)  # identical spread: no noise
    assert math.isnan(rows[("broad", "broad")]["delta"])
    assert rows[("broad", "broad")]["mix_clean_si_snr_i"] == pytest.approx(1.6)
    assert "| broad | narrow | +1.00 | +1.00 | +2.00 ± 0.00 | +1.60 |" in text
    # per test voice: mean of the mixtures holding it (values mean-0.5, mean+0.5, mean)
    voices = {(r["tested_on"], r["voice"]): r for r in cb.per_voice(out, ["broad", "narrow"], "sepformer-tiny", [7])}
    assert sorted(voices) == [(t, v) for t in ("broad", "narrow") for v in "ABC"]
    assert voices[("broad", "A")]["mixtures"] == 2
    assert voices[("broad", "A")]["broad"] == pytest.approx(3.0)
    assert voices[("broad", "B")]["narrow"] == pytest.approx(1.0 - 0.25)
    assert voices[("narrow", "C")]["narrow"] == pytest.approx(2.5 + 0.25)
    assert "| broad | C | 2 | +3.25 | +1.25 |" in text
    assert os.path.isfile(os.path.join(out, "corpus_breadth_sepformer-tiny_voices.csv"))
    assert cb.mixture_speakers("u3") == []
    assert cb.mixture_speakers("asterisk.allison-a-0001_kde.he-k-0007") == ["asterisk.allison", "kde.he"]
    for ext in ("md", "csv"):
        assert os.path.isfile(os.path.join(out, f"corpus_breadth_sepformer-tiny.{ext}"))
    with pytest.raises(SystemExit):
        cb.main(["--corpora", "broad=/a", "--config", "x", "--steps", "1", "--out", out])  # one corpus: nothing to compare
    with pytest.raises(ValueError, match="no utterance in common"):
        cb.paired_delta({"a": 1.0}, {"b": 2.0})


# ----------------------------------------------------------------------------- bench/gpu_check.py
gpu_check = _load("gpu_check")


def test_gpu_check_without_cuda_says_so_and_exits_2(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "nothing was measured" in err


def test_gpu_check_help_documents_the_check(capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("fp16", "bf16", "max_memory_allocated", "torchrun", "--tiny", "Exit status", "Fast-GeCo"):
        assert word in text


def test_gpu_check_code_path_on_cpu(tmp_path, capsys):
    """--device cpu --tiny: the stacked NASS + unified-GM step, GeCo and Fast-GeCo rows under bf16."""
    out = tmp_path / "table.md"
    rc = gpu_check.main(["--device", "cpu", "--tiny", "--steps", "2", "--warmup", "0", "--precisions", "bf16",
                         "--only", "sepformer-nass-unified-gm", "geco", "fast-geco", "--out", str(out)])
    table = out.read_text()
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    rows = [[c.strip() for c in r] for r in rows if r[0].strip() != "config"]
    assert [r[0] for r in rows] == ["sepformer-nass-unified-gm", "geco", "fast-geco"], table
    assert all(r[1] == "bf16" and r[8] == "yes" for r in rows), table  # ran, finite
    assert rc == (0 if all(r[9] == "yes" for r in rows) else 1)
    assert table in capsys.readouterr().out + "\n"


def test_learning_curve_snapshots_every_interval_and_scores_each(tmp_path, tiny_librimix):
    """bench/learning_curve.py end to end on a 4-mixture folder: a snapshot per interval,
    each scored, the table's steps and minutes increasing."""
    import subprocess
    import sys

    out = tmp_path / "lc"
    cmd = [sys.executable, os.path.join(REPO, "bench", "learning_curve.py"), "--config", "demo/convtasnet-tiny-noise",
           "--steps", "4", "--every", "2", "--test_utterances", "2", "--data_folder", tiny_librimix, "--out", str(out),
           "--", "--batch_size=2", "--training_signal_len=2000"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "learning_curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(math.isfinite(float(r["si-snr_i"])) for r in rows)
    assert float(rows[0]["minutes"]) <= float(rows[1]["minutes"])
    assert "first 2 of the test split" in (out / "learning_curve.md").read_text()
    png = tmp_path / "curves.png"
    lc = _load("learning_curve")
    lc.plot([str(out)], str(png))
    assert png.stat().st_size > 1000


def _metrics_csv(path, values):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["ID", "si-snr_i", "sdr_i"])
        for k, v in values.items():
            w.writerow([k, v, v + 0.5])
        w.writerow(["mean", sum(values.values()) / len(values), sum(values.values()) / len(values) + 0.5])


def test_quality_at_budget_method_table_pairs_mixtures_across_seeds(tmp_path, capsys):
    """The three-seed method table: mean ± std over seeds and the paired difference to the
    baseline, per seed and pooled over mixtures (each mixture's Δ averaged over seeds)."""
    q = _load("quality_at_budget")
    out = str(tmp_path)
    base = {1: {"a": 1.0, "b": 2.0, "c": 0.0}, 2: {"a": 1.5, "b": 2.5, "c": 0.5}}
    # method = baseline + a per-mixture shift that differs by seed
    shift = {1: {"a": 0.2, "b": 0.4, "c": 0.0}, 2: {"a": 0.4, "b": 0.0, "c": 0.2}}
    for seed in (1, 2):
        _metrics_csv(os.path.join(q.run_dir(out, "base", seed), "test", "test_metrics.csv"), base[seed])
        _metrics_csv(os.path.join(q.run_dir(out, "meth", seed), "test", "test_metrics.csv"),
                     {k: base[seed][k] + shift[seed][k] for k in base[seed]})
    (row,) = q.paired_table(out, ["base", "meth"], [1, 2], "base")
    assert [s for s, _, _ in row["per_seed"]] == [1, 2]
    assert math.isclose(row["per_seed"][0][1], 0.2) and math.isclose(row["per_seed"][1][1], 0.2)
    pooled = [0.3, 0.2, 0.1]  # mixture a: (0.2 + 0.4) / 2, b: (0.4 + 0) / 2, c: (0 + 0.2) / 2
    assert math.isclose(row["pooled"], sum(pooled) / 3) and row["n"] == 3
    sd = math.sqrt(sum((x - 0.2) ** 2 for x in pooled) / 2)
    assert math.isclose(row["pooled_ci"], 1.96 * sd / math.sqrt(3))
    rows = [{"config": c, "seed": s, **q.read_means(os.path.join(q.run_dir(out, c, s), "test", "test_metrics.csv"))}
            for c in ("base", "meth") for s in (1, 2)]
    text = q.print_method_table(rows, out, ["base", "meth"], [1, 2], "base")
    assert "| base | 2 | +1.25 ± 0.35 |" in text and "+0.20 ± 0.11 (seeds: +0.20, +0.20)" in text


def test_bench_step_time_prints_each_precision_and_variant(capsys):
    """bench/bench_step_time.py: one row per config and --set variant, a column per
    precision and their ratio; the variant really changes the model built."""
    bst = _load("bench_step_time")
    bst.main(["--threads", "1", "--configs", "demo/convtasnet-tiny-noise", "--precision", "fp32", "bf16",
              "--reps", "1", "--set", "kernel_size=32", "--set", "kernel_size=16"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| demo/")]
    assert len(rows) == 2
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert [c[1] for c in cells] == ["kernel_size=32", "kernel_size=16"]
    assert all(float(c[4]) > 0 and float(c[5]) > 0 and float(c[6]) > 0 for c in cells)
    sep32, _ = bst.build_separator("demo/convtasnet-tiny-noise", {"kernel_size": 32})
    sep16, _ = bst.build_separator("demo/convtasnet-tiny-noise", {"kernel_size": 16})
    assert sep32.encoder.conv1d.kernel_size != sep16.encoder.conv1d.kernel_size


def test_permutation_switches_rows_per_pair_and_all():
    """bench/permutation_switches.py: pairs from LibriMix-style IDs (voice IDs with dots),
    pairs under --min_mixtures only in ALL, switched share over the rows' segments."""
    ps = _load("permutation_switches")
    assert ps.pair_of("kde.fr-kde-fr-0017_asterisk.allison-asterisk-allison-0001", 2) == "asterisk.allison + kde.fr"
    assert ps.pair_of("utt0001", 2) == "?"
    rec = [{"pair": "a + b", "si-snr_i": x, "segment_oracle_si-snr_i": x + 1, "segments": 4, "switched": k}
           for x, k in ((1.0, 0), (3.0, 2))] + [
        {"pair": "a + c", "si-snr_i": 5.0, "segment_oracle_si-snr_i": 5.0, "segments": 2, "switched": 0}]
    rows = ps.summarise(rec, min_mixtures=2)
    assert [r["pair"] for r in rows] == ["a + b", "ALL"]
    assert rows[0]["si-snr_i"] == 2.0 and rows[0]["segment_oracle_si-snr_i"] == 3.0
    assert rows[0]["switched_share"] == 2 / 8 and rows[1]["switched_share"] == 2 / 10
    assert rows[1]["mixtures"] == 3 and abs(rows[1]["si-snr_i"] - 3.0) < 1e-12

"""tools/reproduce.py (nass.reproduce): rows, --list, --dry-run, runs, --tiny, reports."""

import contextlib
import csv
import glob
import os
import re
import runpy
import subprocess
import sys
import traceback

import pytest
import torch

from conftest import REPO, write_librimix_tree
from nass import reproduce as rp

# the rows the issue names: (paper, data, system); every one must be in the table
REQUIRED = [("nass", d, s) for d in ("libri2mix", "wham")
            for s in ("SepFormer (baseline)", "NASS-SepFormer", "DPRNN (baseline)", "NASS-DPRNN")]
REQUIRED += [("gm", d, s) for d in ("libri2mix", "libri3mix")
             for s in ("SepFormer", "unified SE+SS SepFormer, no GM", "GM-SepFormer")]
REQUIRED += [("geco", "libri2mix", s) for s in ("SepFormer", "SepFormer + GeCo", "SepFormer + Fast-GeCo")]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One torch thread, and no `pip freeze` per in-process run (as tests/test_reliability.py)."""
    import speechbrain.utils.logger

    monkeypatch.setattr(speechbrain.utils.logger, "get_environment_description", lambda: "(skipped in tests)\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def inprocess_runner(calls):
    """Run a recipe command in this process (``runpy`` on the recipe file named by the command)."""

    def run(cmd, log_path):
        calls.append(cmd)
        assert cmd[0] == sys.executable and cmd[1].startswith("recipes/") and cmd[1].endswith("/train.py")
        old_argv, old_cwd = sys.argv, os.getcwd()
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        try:
            sys.argv = cmd[1:]
            os.chdir(REPO)
            with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                try:
                    runpy.run_path(cmd[1], run_name="__main__")
                except Exception:  # noqa: BLE001 - reported as a failed run, as a subprocess would
                    traceback.print_exc()
                    return 1
            return 0
        finally:
            sys.argv = old_argv
            os.chdir(old_cwd)

    return run


def test_rows_cover_the_issue_and_cite_every_value():
    have = {(r.paper, r.data, r.system) for r in rp.ROWS}
    assert set(REQUIRED) <= have, sorted(set(REQUIRED) - have)
    assert len({r.key for r in rp.ROWS}) == len(rp.ROWS)
    for r in rp.ROWS:
        assert set(r.published) == set(rp.METRICS)
        assert os.path.isfile(os.path.join(REPO, r.recipe)) and os.path.isfile(os.path.join(REPO, r.yaml))
        assert os.path.isfile(os.path.join(REPO, rp.tiny_yaml(r))), rp.tiny_yaml(r)
        if all(v is None for v in r.published.values()):
            assert "not in DESIGN.md" in r.source, r.key
        else:
            assert r.source.startswith(("Zhang et al.", "Hu et al.", "Wang et al.")), r.key
    # the paper's splits and epochs are in the commands
    assert "--train_split=train-100" in rp.find_row("nass/libri2mix/sepformer-nass").overrides
    assert "--train_split=tr" in rp.find_row("nass/wham/dprnn").overrides
    gm = rp.find_row("gm/libri3mix/sepformer-unified-gm").overrides
    assert "--train_split=train-360" in gm and "--N_epochs=120" in gm and "--dynamic_mixing=False" in gm
    # GeCo needs the separator, Fast-GeCo the separator and GeCo; the separator run is NASS's baseline run
    fast = rp.find_row("geco/libri2mix/sepformer+fast-geco")
    assert dict(fast.depends) == {"separator_folder": "geco/libri2mix/sepformer",
                                  "geco_folder": "geco/libri2mix/sepformer+geco"}
    assert rp.run_name(rp.find_row("geco/libri2mix/sepformer")) == rp.run_name(rp.find_row("nass/libri2mix/sepformer"))


def test_list_prints_every_row_with_its_published_value():
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", "reproduce.py"), "--list"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    for r in rp.ROWS:
        start = out.index(r.key + "\n")
        block = out[start:start + 2000].split("\n    seeds:")[0]
        for m, v in r.published.items():
            assert f"{rp.METRICS[m]} {'not in DESIGN.md' if v is None else v}" in block, r.key
        assert r.yaml in block and rp.PAPERS[r.paper] in block and " ".join(r.overrides) in block


def test_dry_run_prints_every_row_and_seed_single_and_torchrun(capsys, tmp_path):
    assert rp.main(["--dry-run", "--data_root", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    lines = capsys.readouterr().out.splitlines()
    for r in rp.ROWS:
        for seed in r.seeds:
            i = lines.index(f"# {r.key} seed {seed}")
            cmd = lines[i + 1].split()
            assert cmd[:3] == [sys.executable, r.recipe, r.yaml]
            assert f"--seed={seed}" in cmd and f"--output_folder={tmp_path / 'o'}" in lines[i + 1]
            for k, dep in r.depends:  # the dependency's output folder, same seed
                assert f"--{k}={tmp_path / 'o' / rp.run_name(rp.find_row(dep))}/{seed}" in cmd
    assert rp.main(["--dry-run", "--nproc_per_node", "2", "--rows", "geco/libri2mix/sepformer+geco"]) == 0
    cmds = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(cmds) == 6 and all(c.startswith("torchrun --nproc_per_node=2 recipes/") for c in cmds)
    assert all(c.endswith("--distributed_backend=nccl") for c in cmds if "correction" in c)


# ----------------------------------------------------------------------------- every command, one step
# shrink the paper-size models (only N_encoder_out is a top-level size key of the full YAMLs) and
# stop after one optimiser step; the correction's reference NCSN++ is replaced by a tiny one
ONE_STEP = dict(N_encoder_out=8, optimizer_step_limit=1, N_epochs=1, training_signal_len=2000, test_split="null")
ONE_STEP_CORRECTION = dict(crop_samples=2048, batch_size=2, valid_utterances=1, optimizer_step_limit=1, N_epochs=1,
                           test_split="null", dataloader_opts="{batch_size: 2, num_workers: 0, shuffle: True, "
                                                              "drop_last: True}")
TINY_SCORE = ("!new:nass.correction.ScoreModel {base_channels: 8, channel_mults: [1, 2], num_res_blocks: 1, "
              "attn_resolutions: [], num_freqs: 256, norm_num_groups: 4}")


def test_every_dry_run_command_starts_its_recipe_for_one_step(tmp_path):
    kw = dict(n_per_split=1, seconds=0.25)
    folders = {
        "libri2mix": write_librimix_tree(str(tmp_path / "Libri2Mix"), splits=("train-100", "train-360", "dev", "test"),
                                         **kw),
        "libri3mix": write_librimix_tree(str(tmp_path / "Libri3Mix"), splits=("train-360", "dev", "test"), num_spks=3,
                                         **kw),
        "wham": write_librimix_tree(str(tmp_path / "wham"), splits=("tr", "cv", "tt"), **kw),
    }
    plan = rp.Plan(str(tmp_path / "out"), folders, seeds=(1234,))
    calls = []
    run = inprocess_runner(calls)
    started = {}
    for row in rp.ROWS:
        folder = plan.run_folder(row, 1234)
        if folder in started:
            continue
        cmd = plan.command(row, 1234)
        if row.recipe == rp.CORRECTION:
            extra = dict(ONE_STEP_CORRECTION)
            if "fast-geco" not in row.yaml:
                extra.update(valid_steps=2, valid_si_snr_utterances=1, score_model=TINY_SCORE)
            cmd = rp.with_overrides(cmd, **extra)
        else:
            cmd = rp.with_overrides(cmd, **ONE_STEP)
        log = str(tmp_path / "logs" / f"{len(started)}.log")
        rc = run(cmd, log)
        assert rc == 0, f"{row.key}: {' '.join(cmd)}\n" + open(log).read()[-3000:]
        started[folder] = row.key
        # the recipe it names ran with the row's YAML, data and overrides (SpeechBrain saved them)
        saved = open(os.path.join(folder, "hyperparams.yaml")).read()
        assert folders[row.data] in saved
        train_split = dict(o[2:].split("=", 1) for o in row.overrides)["train_split"]
        assert re.search(rf"^train_split: {re.escape(train_split)}\s", saved, re.M), row.key
        if row.recipe != rp.CORRECTION:  # the paper's training split was prepared from the row's data folder
            spks = 3 if row.data == "libri3mix" else 2
            prefix = "wham" if row.data == "wham" else f"libri{spks}mix"
            with open(os.path.join(folder, "save", f"{prefix}_{train_split}.csv")) as f:
                assert next(csv.DictReader(f))["mix_wav"].startswith(folders[row.data])
        # it trained: the last checkpoint's optimiser took exactly one step
        (ckpt,) = glob.glob(os.path.join(folder, "save", "CKPT+*", "optimizer.ckpt"))
        assert torch.load(ckpt, weights_only=True)["state"][0]["step"].item() == 1, row.key
    assert len(started) == len({plan.run_folder(r, 1234) for r in rp.ROWS}) == len(calls)
    assert os.path.isfile(os.path.join(plan.run_folder(rp.find_row("geco/libri2mix/sepformer+fast-geco"), 1234),
                                       "corrector", "corrector.json"))


# ----------------------------------------------------------------------------- runs, reuse, skip
def fake_runner(calls, values, fail=()):
    """Write a test table with the mean ``values[run folder name]`` instead of training."""

    def run(cmd, log_path):
        calls.append(cmd)
        out = [a.split("=", 1)[1] for a in cmd if a.startswith("--output_folder=")][0]
        if any(f in out for f in fail):
            return 3
        name = "test_metrics.csv"
        if "correction" in cmd[1]:
            name = "test_metrics_fast-geco.csv" if "fast-geco" in cmd[2] else "test_metrics_geco.csv"
        v = values.get(os.path.basename(os.path.dirname(out)), 1.0) + int(os.path.basename(out)) - 1234
        os.makedirs(os.path.join(out, "test"))
        with open(os.path.join(out, "test", name), "w") as f:
            f.write(f"ID,si-snr_i,sdr_i\nu1,{v},{v + 1}\nmean,{v},{v + 1}\n")
        return 0

    return run


def test_run_trains_missing_reuses_finished_and_reports_mean_std_and_difference(tmp_path, capsys):
    data = write_librimix_tree(str(tmp_path / "wham"), splits=("tr", "cv", "tt"), n_per_split=1, seconds=0.1)
    out = tmp_path / "out"
    args = ["--rows", "nass/wham/sepformer-nass", "--wham", data, "--out", str(out), "--seeds", "1234", "1236"]
    calls = []
    run = fake_runner(calls, {"sepformer-nass_tr_200ep": 15.0})
    assert rp.main(args, runner=run) == 0
    assert len(calls) == 2  # two seeds: 15.0 and 17.0 dB
    with open(out / "reproduction.csv") as f:
        (rec,) = list(csv.DictReader(f))
    assert float(rec["si-snr_i_mean"]) == pytest.approx(16.0) and float(rec["si-snr_i_std"]) == pytest.approx(2 ** 0.5)
    assert float(rec["si-snr_i_published"]) == 16.5 and float(rec["si-snr_i_diff"]) == pytest.approx(-0.5)
    assert float(rec["sdr_i_diff"]) == pytest.approx(17.0 - 16.8) and rec["status"] == "done"
    md = (out / "reproduction.md").read_text()
    assert "| nass/wham/sepformer-nass |" in md and "| 16.50 | 16.00 ± 1.41 (n=2) | -0.50 |" in md
    assert "nass commit" in md and "cores" in md and "torch" in md and "Wall time" in md
    # a second invocation reuses both runs (their test tables have a mean row) and trains nothing
    assert rp.main(args, runner=run) == 0
    assert len(calls) == 2 and capsys.readouterr().out.count("reuse ") == 2
    # an interrupted evaluation (no mean row) is an error naming the file and the fix
    table = out / "WHAM-separation" / "sepformer-nass_tr_200ep" / "1234" / "test" / "test_metrics.csv"
    table.write_text("ID,si-snr_i,sdr_i\nu1,1,2\n")
    assert rp.main(args, runner=run) == 2
    err = capsys.readouterr().err
    assert str(table) in err and "delete it and re-run" in err


def test_missing_data_folder_is_skipped_with_its_name(tmp_path, capsys):
    calls = []
    out = tmp_path / "out"
    missing = tmp_path / "nowhere" / "Libri2Mix"
    assert rp.main(["--rows", "gm/libri2mix/sepformer-unified-gm", "geco/libri2mix/sepformer+fast-geco",
                    "--libri2mix", str(missing), "--out", str(out)], runner=fake_runner(calls, {})) == 0
    assert calls == []
    printed = capsys.readouterr().out
    assert f"skip gm/libri2mix/sepformer-unified-gm: data folder {missing} absent" in printed
    md = (out / "reproduction.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| gm/") or line.startswith("| geco/")]
    assert len(rows) == 4  # the selected rows and the rows they depend on
    assert all("skipped: " in line and str(missing) in line for line in rows)
    assert "needs geco/libri2mix/sepformer: data folder" in md and "| 16.00 |" in md
    # an existing folder without the paper's split names the split folder
    data = write_librimix_tree(str(tmp_path / "L2"), splits=("dev", "test"), n_per_split=1, seconds=0.1)
    assert rp.main(["--rows", "nass/libri2mix/sepformer", "--libri2mix", data, "--out", str(out)],
                   runner=fake_runner(calls, {})) == 0
    assert os.path.join(data, "wav8k", "min", "train-100") in capsys.readouterr().out and calls == []


def test_a_failed_separator_stops_the_correction_rows(tmp_path):
    data = write_librimix_tree(str(tmp_path / "Libri2Mix"), splits=("train-100", "dev", "test"), n_per_split=1,
                               seconds=0.1)
    out = tmp_path / "out"
    calls = []
    rc = rp.main(["--rows", "geco/libri2mix/sepformer+fast-geco", "--libri2mix", data, "--out", str(out),
                  "--seeds", "1234"], runner=fake_runner(calls, {}, fail=("sepformer_train-100",)))
    assert rc == 1 and len(calls) == 1
    with open(out / "reproduction.csv") as f:
        status = {r["key"]: r["status"] for r in csv.DictReader(f)}
    assert status["geco/libri2mix/sepformer"].startswith("failed: exit 3")
    assert status["geco/libri2mix/sepformer+geco"] == "not run: geco/libri2mix/sepformer failed"
    assert status["geco/libri2mix/sepformer+fast-geco"].startswith("not run:")


# ----------------------------------------------------------------------------- --tiny
def test_tiny_runs_every_row_on_a_demo_folder_and_writes_reproduction_md(tmp_path):
    demo = write_librimix_tree(str(tmp_path / "demo" / "Libri2Mix"), n_per_split=3, seconds=0.5)
    out = tmp_path / "out"
    calls = []
    rc = rp.main(["--tiny", "--demo_folder", demo, "--tiny_utterances", "2", "--out", str(out)],
                 runner=inprocess_runner(calls))
    logs = "".join(open(os.path.join(out, "logs", f)).read()[-2000:] for f in sorted(os.listdir(out / "logs")))
    assert rc == 0, logs
    md = (out / "reproduction.md").read_text()
    assert f"**{rp.TINY_NOTE}.**" in md
    table = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ") and "/" in line[:8]}
    assert set(table) == {r.key for r in rp.ROWS}  # one line per row
    for r in rp.ROWS:
        line = table[r.key]
        for v in r.published.values():
            assert ("not in DESIGN.md" if v is None else f"| {v:.2f} |") in line
        if r.data == "libri3mix":
            assert "skipped: tiny: the demo corpus has 2 speakers" in line
            assert "(n=" not in line  # no values of the 2-speaker run that shares its tiny YAML
        else:
            assert line.endswith(f"{rp.TINY_NOTE}; done |") and "(n=1)" in line, line
    # rows sharing a tiny run trained it once; 3-speaker rows trained nothing
    tiny_runs = {rp.run_name(r, tiny=True) for r in rp.ROWS if r.data != "libri3mix"}
    assert len(calls) == len(tiny_runs)
    assert all("/hparams/demo/" in c[2] for c in calls)
    assert all("--optimizer_step_limit=2" in c for c in calls)
    with open(out / "reproduction.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rp.ROWS)

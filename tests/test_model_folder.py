"""Issue 19, part 1: a model folder is a read-only, portable artifact (nass.export, nass.inference).

One real training (convtasnet-tiny with noise output, one epoch on the tiny corpus) is run
once per module; every test copies it before changing anything.
"""

import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

from nass.cli import evaluate_main, export_main, separate_main
from nass.dataio.audio import write_audio
from nass.inference import ModelLoadError, ModelOutputError, Separator, find_checkpoint, load_separator
from nass.separation import SeparationOutput

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YAML = os.path.join(REPO, "recipes", "LibriMix", "separation", "hparams", "demo", "convtasnet-tiny-noise.yaml")
SR = 8000


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_librimix):
    """A finished training output folder (checkpoints, test metrics, ``model/``)."""
    out = tmp_path_factory.mktemp("run") / "out"
    cmd = [
        sys.executable, os.path.join(REPO, "recipes", "LibriMix", "separation", "train.py"), YAML,
        f"--data_folder={tiny_librimix}", f"--output_folder={out}", "--training_signal_len=2000",
        "--batch_size=2", "--eval_num_workers=0", "--n_audio_to_save=1", "--N_epochs=1",
        "--speed_perturb=null", "--noprogressbar",
    ]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(out.parent), timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(out)


def _wav(path, n=4000, rate=SR, seed=0):
    write_audio(path, np.random.default_rng(seed).uniform(-0.3, 0.3, n).astype("float32"), rate)
    return str(path)


def _snapshot(root):
    """{path: (mtime_ns, size)} of every file and folder under ``root``."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(folder, name)
            st = os.lstat(p)
            out[p] = (st.st_mtime_ns, st.st_size)
    return out


def _changed(before, after):
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def _chmod_tree(root, writable):
    for folder, dirs, files in os.walk(root):
        for name in files + dirs:
            p = os.path.join(folder, name)
            mode = os.lstat(p).st_mode
            os.chmod(p, (mode | stat.S_IWUSR) if writable else (mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)))
    mode = os.stat(root).st_mode
    os.chmod(root, (mode | stat.S_IWUSR) if writable else (mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)))


def _nan_in_place(path, count=200):
    """Set ``count`` values of the largest float tensor to NaN and re-save: same size, other bytes."""
    state = torch.load(path, weights_only=True)
    name = max((k for k, v in state.items() if v.is_floating_point()), key=lambda k: state[k].numel())
    flat = state[name].view(-1)
    flat[: min(count, flat.numel())] = float("nan")
    size = os.path.getsize(path)
    torch.save(state, path)
    assert os.path.getsize(path) == size  # the damage a size check cannot see
    return name


# ----------------------------------------------------------------------------- export
def test_training_writes_a_model_folder_with_card(trained_run):
    model = os.path.join(trained_run, "model")
    assert sorted(os.listdir(model)) == ["hyperparams.yaml", "model_card.json", "separator.ckpt"]
    card = json.load(open(os.path.join(model, "model_card.json")))
    assert card["format"] == "nass-separator/1"
    assert (card["sample_rate"], card["num_spks"], card["noise_output"]) == (8000, 2, True)
    assert card["training"]["dataset"] == "librimix" and card["training"]["train_split"] == "train"
    assert card["training"]["test_split"] == "test" and card["training"]["checkpoint"].startswith("CKPT+")
    assert isinstance(card["test_metrics"]["si-snr_i"], float) and card["test_metrics"]["num_utterances"] == 4
    assert card["nass_version"] and "git_commit" in card
    assert len(card["files"]["separator.ckpt"]["sha256"]) == 64
    text = open(os.path.join(model, "hyperparams.yaml")).read()
    for training_only in ("checkpointer", "output_folder", "save_folder", "train_log", "optimizer", "__set_seed",
                          trained_run):
        assert training_only not in text, training_only


def test_exported_copy_read_only_loads_from_a_third_cwd_and_writes_nothing_else(trained_run, tmp_path, monkeypatch):
    a, b, cwd, out = tmp_path / "A", tmp_path / "B", tmp_path / "cwd", tmp_path / "out"
    assert export_main([trained_run, str(a)]) == 0
    shutil.copytree(a, b)
    shutil.rmtree(a)  # the export path is gone, as on another machine
    cwd.mkdir()
    wav = _wav(tmp_path / "mix.wav")
    # the training's tree too (not the whole basetemp: other tests' lingering log handlers write there)
    root = os.path.dirname(trained_run)
    _chmod_tree(str(b), writable=False)
    try:
        monkeypatch.chdir(cwd)
        before = {**_snapshot(str(tmp_path)), **_snapshot(root)}
        assert separate_main([wav, "--model", str(b), "--out", str(out)]) == 0
        sep = Separator.from_hparams(source=str(b), savedir=None, run_opts={"device": "cpu"})
        est, noise = sep(torch.randn(1, 3000) * 0.1)  # callable on [batch, time]
        after = {**_snapshot(str(tmp_path)), **_snapshot(root)}
    finally:
        _chmod_tree(str(b), writable=True)
    assert est.shape == (1, 3000, 2) and noise.shape == (1, 3000)
    assert sep.card["num_spks"] == 2
    changed = [p for p in _changed(before, after) if p != str(tmp_path)]  # tmp_path: its entry "out" is new
    assert changed and all(p == str(out) or p.startswith(str(out) + os.sep) for p in changed), changed
    assert sorted(os.listdir(out)) == ["noise.wav", "s1.wav", "s2.wav"]
    assert os.listdir(cwd) == []
    # the exported weights are the run's best checkpoint, so both separate alike
    x = torch.randn(1, 2400) * 0.1
    from_run = Separator.from_hparams(trained_run, chunk_seconds=0)(x)[0]
    assert torch.allclose(Separator.from_hparams(str(b), chunk_seconds=0)(x)[0], from_run, atol=1e-6)


def test_savedir_receives_a_portable_copy_and_nothing_else_is_written(trained_run, tmp_path):
    root = os.path.dirname(trained_run)  # the training's tree
    before = _snapshot(root)
    Separator.from_hparams(source=trained_run, savedir=str(tmp_path / "saved"))
    assert _changed(before, _snapshot(root)) == []
    assert sorted(os.listdir(tmp_path / "saved")) == ["hyperparams.yaml", "model_card.json", "separator.ckpt"]
    load_separator(str(tmp_path / "saved"))  # verifies


def test_export_refuses_an_existing_folder_without_overwrite(trained_run, tmp_path, capsys):
    target = tmp_path / "m"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert export_main([trained_run, str(target)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert os.listdir(target) == ["keep.txt"]
    assert export_main([trained_run, str(target), "--overwrite"]) == 0
    assert "keep.txt" not in os.listdir(target)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no staging left


# ----------------------------------------------------------------------------- damaged weights
def test_nan_weights_same_size_are_refused_by_name(trained_run, tmp_path, capsys):
    exported = tmp_path / "exported"
    assert export_main([trained_run, str(exported)]) == 0
    _nan_in_place(str(exported / "separator.ckpt"))
    with pytest.raises(ModelLoadError, match=r"separator\.ckpt: SHA-256 .* differs .*model_card\.json"):
        load_separator(str(exported))
    wav = _wav(tmp_path / "x.wav")
    assert separate_main([wav, "--model", str(exported), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "separator.ckpt" in err and "SHA-256" in err
    assert not (tmp_path / "o").exists()

    run = tmp_path / "run"  # a training folder: the CRC-32 of CKPT.yaml catches it
    shutil.copytree(trained_run, run)
    best = find_checkpoint(str(run))
    _nan_in_place(best)
    with pytest.raises(ModelLoadError, match=r"separator\.ckpt: contents differ .*CRC-32"):
        load_separator(str(run))

    legacy = tmp_path / "legacy"  # no checksum at all: the values themselves are checked
    legacy.mkdir()
    shutil.copy(exported / "hyperparams.yaml", legacy)
    shutil.copy(best, legacy / "separator.ckpt")
    with pytest.raises(ModelLoadError, match=r"separator\.ckpt: tensor .* NaN/Inf"):
        load_separator(str(legacy))


def test_non_finite_model_output_is_refused():
    class Broken(torch.nn.Module):
        def forward(self, mix):
            est = torch.full((mix.shape[0], mix.shape[1], 2), float("nan"))
            return SeparationOutput(est, None, mix, None, est)

    with pytest.raises(ModelOutputError, match="NaN or Inf"):
        Separator(Broken(), SR)(torch.randn(1, 4000))


# ----------------------------------------------------------------------------- training folder
def test_reading_a_training_folder_leaves_a_running_save_intact(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    # as if the training were running here: its YAML names this folder
    yaml_path = run / "hyperparams.yaml"
    yaml_path.write_text(yaml_path.read_text().replace(trained_run, str(run)))
    shutil.rmtree(run / "model", ignore_errors=True)  # read through the training folder itself
    pending = run / "save" / ".incomplete-CKPT+2099-01-01+00-00-00+00"
    pending.mkdir()
    (pending / "brain.ckpt").write_bytes(b"being written")
    before = _snapshot(str(run))
    wav = _wav(tmp_path / "x.wav")
    assert separate_main([wav, "--model", str(run), "--out", str(tmp_path / "o")]) == 0
    manifest = os.path.join(trained_run, "save", "libri2mix_test.csv")
    assert evaluate_main(["--model", str(run), "--manifest", manifest, "--out", str(tmp_path / "e"),
                          "--num_workers", "0", "--save_examples", "0"]) == 0
    assert (pending / "brain.ckpt").read_bytes() == b"being written"
    assert _changed(before, _snapshot(str(run))) == []


# ----------------------------------------------------------------------------- correctors
def test_corrector_folder_weights_are_checked_by_sha256(tmp_path):
    from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform, load_corrector, save_corrector

    folder = str(tmp_path / "corrector")
    save_corrector(GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform()), folder)
    card = json.load(open(os.path.join(folder, "model_card.json")))  # the separators' card
    assert card["format"] == "nass-corrector/1" and sorted(card["files"]) == ["corrector.ckpt", "corrector.json"]
    load_corrector(folder)
    weights = os.path.join(folder, "corrector.ckpt")
    with open(weights, "r+b") as f:  # 200 float32 NaN in the middle of the tensor data, same size
        f.seek(os.path.getsize(weights) // 2)
        f.write(np.full(200, np.nan, dtype="<f4").tobytes())
    with pytest.raises(ModelLoadError, match=r"corrector\.ckpt: SHA-256 .* differs .*model_card\.json"):
        load_corrector(folder)

"""Console commands nass-separate / nass-evaluate (nass.cli) and tools/evaluate.py."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from nass.cli import evaluate_main, separate_main
from nass.dataio.audio import write_audio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_inference import write_model_folder  # noqa: E402  (shared tiny model folder)

SR = 8000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny 2-speaker model folder without noise output (shared by test_outputs, test_bad_input)."""
    folder = str(tmp_path_factory.mktemp("model"))
    write_model_folder(folder, noise=False, scores=(1.0,))
    return folder


def _wav(path, n=1200, rate=SR, seed=0):
    """A 16-bit WAV of uniform noise in [-0.3, 0.3] (shared by test_outputs); returns ``str(path)``."""
    write_audio(str(path), np.random.default_rng(seed).uniform(-0.3, 0.3, n).astype("float32"), rate)
    return str(path)


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_separate_one_and_several_inputs(tmp_path, model_dir, capsys):
    a = _wav(str(tmp_path / "a.wav"))
    b = _wav(str(tmp_path / "b.wav"), n=900, rate=16000, seed=1)
    assert separate_main([a, "--model", model_dir, "--out", str(tmp_path / "one")]) == 0
    assert sorted(os.listdir(tmp_path / "one")) == ["s1.wav", "s2.wav"]
    assert separate_main([a, b, "--model", model_dir, "--out", str(tmp_path / "many"), "--chunk_seconds", "0.1",
                          "--overlap_seconds", "0.02"]) == 0
    assert sorted(os.listdir(tmp_path / "many")) == ["a", "b"]
    info = sf.info(str(tmp_path / "many" / "b" / "s2.wav"))
    assert (info.samplerate, info.frames) == (16000, 900)


def test_separate_bad_input_exits_2_without_outputs(tmp_path, model_dir, capsys):
    good = _wav(str(tmp_path / "good.wav"))
    out = tmp_path / "out"
    code = separate_main([good, str(tmp_path / "missing.wav"), "--model", model_dir, "--out", str(out)])
    assert code == 2
    _one_line_error(capsys, "nass-separate: error:", "missing.wav", "not found")
    assert not out.exists()
    # a bad file found only while reading (NaN), after the first input was separated
    nan = str(tmp_path / "nan.wav")
    sf.write(nan, np.array([0.1, np.nan] * 400, dtype="float32"), SR, subtype="FLOAT")
    assert separate_main([good, nan, "--model", model_dir, "--out", str(out)]) == 2
    _one_line_error(capsys, "nan.wav", "NaN")
    assert not out.exists()
    assert separate_main([good, "--model", model_dir, "--out", str(out), "--device", "nonsense"]) == 2
    _one_line_error(capsys, "--device 'nonsense'")
    # a model folder without checkpoint
    (tmp_path / "untrained").mkdir()
    with open(os.path.join(model_dir, "hyperparams.yaml")) as f:
        (tmp_path / "untrained" / "hyperparams.yaml").write_text(f.read())
    assert separate_main([good, "--model", str(tmp_path / "untrained"), "--out", str(out)]) == 2
    _one_line_error(capsys, "Train first or point --model at the training output folder")
    assert not out.exists()


def _manifest(folder, ids, n=1600):
    rows = []
    rng = np.random.default_rng(0)
    for k, utt in enumerate(ids):
        s = rng.uniform(-0.3, 0.3, (n, 2)).astype("float32")
        paths = [os.path.join(folder, f"{k}_{name}.wav") for name in ("mix", "s1", "s2")]
        for p, wav in zip(paths, (s.sum(1) / 2, s[:, 0] / 2, s[:, 1] / 2)):
            write_audio(p, wav, SR, subtype="FLOAT")
        rows.append([utt, n / SR] + paths + ["", ""])
    path = os.path.join(folder, "test.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "duration", "mix_wav", "s1_wav", "s2_wav", "noise_wav", "mix_clean_wav"])
        w.writerows(rows)
    return path


def test_evaluate_main(tmp_path, model_dir, capsys):
    manifest = _manifest(str(tmp_path), ["u1", "u2"])
    out = tmp_path / "eval"
    assert evaluate_main(["--model", model_dir, "--manifest", manifest, "--out", str(out),
                          "--num_workers", "0", "--save_examples", "1"]) == 0
    printed = capsys.readouterr().out
    assert "mixture SI-SNR" in printed and "WARNING: SI-SNRi below" in printed  # untrained model flagged
    with open(out / "test_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["ID"] for r in rows] == ["u1", "u2", "mean"]
    assert os.listdir(out / "examples") == ["u1"]

    assert evaluate_main(["--model", model_dir, "--manifest", str(tmp_path / "nope.csv"), "--out", str(out)]) == 2
    _one_line_error(capsys, "nope.csv", "manifest not found")


def test_tools_evaluate_help():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "evaluate.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--manifest" in proc.stdout

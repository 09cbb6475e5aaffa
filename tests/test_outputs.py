"""Issue 19, parts 2-4: nothing written by inference or evaluation is lost; audio at any
rate in bounded memory; a training lock; the small cases (docs/reliability.md)."""

import errno
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from nass.cli import evaluate_main, separate_main
from nass.dataio import audio as audio_mod
from nass.dataio.audio import atomic_write, read_audio, write_audio
from nass.inference import Separator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import _manifest, _one_line_error, _wav, model_dir  # noqa: E402,F401 (model_dir: a fixture)
from test_inference import BandSplit  # noqa: E402

SR = 8000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _contents(folder):
    """{relative path: bytes} of every file under ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


def _hidden(folder):
    return [os.path.join(r, n) for r, ds, fs in os.walk(folder) for n in ds + fs if n.startswith(".")]


# ----------------------------------------------------------------------------- nothing lost
def test_earlier_outputs_are_refused_then_kept_when_a_later_input_fails(tmp_path, model_dir, capsys):
    good, other = _wav(tmp_path / "good.wav"), _wav(tmp_path / "other.wav", seed=1)
    out = tmp_path / "O"
    assert separate_main([good, other, "--model", model_dir, "--out", str(out)]) == 0
    first = _contents(out)
    assert sorted(first) == ["good/s1.wav", "good/s2.wav", "other/s1.wav", "other/s2.wav"]
    capsys.readouterr()
    # again without --overwrite: refused before anything is separated
    assert separate_main([good, other, "--model", model_dir, "--out", str(out)]) == 2
    _one_line_error(capsys, "already exists", "--overwrite")
    # with --overwrite, the second input is bad (NaN, found only when read): nothing replaced
    nan = str(tmp_path / "other2.wav")
    sf.write(nan, np.array([0.1, np.nan] * 600, dtype="float32"), SR, subtype="FLOAT")
    os.replace(nan, tmp_path / "other.wav")
    assert separate_main([good, str(tmp_path / "other.wav"), "--model", model_dir, "--out", str(out),
                          "--overwrite"]) == 2
    _one_line_error(capsys, "other.wav", "NaN")
    assert _contents(out) == first and _hidden(str(out)) == []
    # an unrelated s1.wav in --out is not overwritten without a word
    single = tmp_path / "single"
    single.mkdir()
    (single / "s1.wav").write_bytes(b"mine")
    assert separate_main([good, "--model", model_dir, "--out", str(single)]) == 2
    _one_line_error(capsys, "s1.wav", "already exists")
    assert (single / "s1.wav").read_bytes() == b"mine" and os.listdir(single) == ["s1.wav"]
    assert separate_main([good, "--model", model_dir, "--out", str(single), "--overwrite"]) == 0
    assert sf.info(str(single / "s1.wav")).frames == 1200


def test_full_disk_is_one_line_naming_the_folder_and_loses_nothing(tmp_path, model_dir, capsys, monkeypatch):
    good = _wav(tmp_path / "good.wav")
    out = tmp_path / "full"
    assert separate_main([good, "--model", model_dir, "--out", str(out)]) == 0
    earlier = _contents(out)
    real_write = sf.write
    calls = []

    def full(file, data, samplerate, *args, **kwargs):  # the second file of the run hits a full disk
        calls.append(file)
        if len(calls) == 2:
            with open(file, "wb") as f:
                f.write(b"RIFF")  # half-written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(file, data, samplerate, *args, **kwargs)

    monkeypatch.setattr(audio_mod.sf, "write", full)
    capsys.readouterr()
    assert separate_main([good, "--model", model_dir, "--out", str(out), "--overwrite"]) == 2
    _one_line_error(capsys, "no space left on device", str(out), "Free disk space")
    assert _contents(out) == earlier and _hidden(str(out)) == []
    # libsndfile's own report of a full disk ("System error.") reads the same
    monkeypatch.setattr(audio_mod.sf, "write", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("System error.")))
    monkeypatch.setattr(audio_mod.shutil, "disk_usage", lambda p: type("U", (), {"free": 0})())
    with pytest.raises(OSError, match="no space left on device while writing into"):
        write_audio(str(tmp_path / "x" / "a.wav"), np.zeros(8, "float32"), SR)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_audio(str(tmp_path / "a.wav"), np.zeros(8, "float32"), SR)
        with atomic_write(str(tmp_path / "b.csv")) as tmp:
            open(tmp, "w").write("x")
    finally:
        os.umask(old)
    for name in ("a.wav", "b.csv"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask, name


def test_evaluation_refuses_earlier_results_and_keeps_them_on_failure(tmp_path, model_dir, capsys):
    manifest = _manifest(str(tmp_path), ["u1", "u2"])
    out = tmp_path / "eval"
    args = ["--model", model_dir, "--manifest", manifest, "--out", str(out), "--num_workers", "0",
            "--save_examples", "1"]
    assert evaluate_main(args) == 0
    earlier = _contents(out)
    capsys.readouterr()
    assert evaluate_main(args) == 2
    _one_line_error(capsys, "test_metrics.csv", "--overwrite")
    # a reference of the wrong length is an error (was: a warning, trimmed, exit 0), and the
    # earlier results stay as they were
    ref = open(manifest).read().splitlines()[2].split(",")[3]  # u2's s1_wav
    write_audio(ref, np.zeros(1000, "float32"), SR, subtype="FLOAT")
    assert evaluate_main(args + ["--overwrite"]) == 2
    _one_line_error(capsys, "u2", "reference length differs", ref)
    assert _contents(out) == earlier and _hidden(str(out)) == []
    # into a fresh folder: u1's example was staged, then removed with the folders it made
    fresh = tmp_path / "fresh"
    assert evaluate_main(args[:4] + ["--out", str(fresh)] + args[6:]) == 2
    _one_line_error(capsys, "reference length differs")
    assert not fresh.exists()


def test_max_utterances_must_be_positive(tmp_path, model_dir, capsys):
    manifest = _manifest(str(tmp_path), ["u1", "u2"])
    for value in ("-1", "0"):
        assert evaluate_main(["--model", model_dir, "--manifest", manifest, "--out", str(tmp_path / "e"),
                              "--max_utterances", value]) == 2
        _one_line_error(capsys, f"--max_utterances {value}", "positive")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_chunk_seconds_inf_nan_negative_are_one_line_errors(tmp_path, model_dir, capsys, value):
    good = _wav(tmp_path / "good.wav")
    assert separate_main([good, "--model", model_dir, "--out", str(tmp_path / "o"), "--chunk_seconds", value]) == 2
    _one_line_error(capsys, "--chunk_seconds", "finite number of seconds")
    with pytest.raises(ValueError, match="chunk_seconds"):
        Separator(BandSplit(), SR, chunk_seconds=float(value))


# ----------------------------------------------------------------------------- audio
def test_odd_rate_resamples_with_a_small_filter_bank_and_warns(tmp_path, monkeypatch):
    import torchaudio.functional as AF

    path = str(tmp_path / "odd.wav")
    t = np.arange(2 * 44101) / 44101
    write_audio(path, 0.3 * np.sin(2 * np.pi * 300 * t).astype("float32"), 44101, subtype="FLOAT")
    seen = []
    real = AF.resample

    def spy(x, orig_freq, new_freq, *a, **k):
        seen.append((orig_freq, new_freq))
        return real(x, orig_freq, new_freq, *a, **k)

    monkeypatch.setattr(AF, "resample", spy)
    with pytest.warns(UserWarning, match=r"odd\.wav: odd sample rate 44101 Hz"):
        est, _ = Separator(BandSplit(), SR, chunk_seconds=None).separate_file(path)
    assert est.shape == (2 * 44101, 2)
    # the bank is (numerator x denominator)-sized: both terms bounded (was 8000 and 44101)
    assert seen and all(max(o, n) <= audio_mod.MAX_RATIO_TERM for o, n in seen), seen
    low = est[:, 1].numpy()[4410:-4410]  # the 300 Hz tone comes back in the low band, at its rate
    ref = 0.3 * np.sin(2 * np.pi * 300 * t)[4410:-4410]
    assert np.corrcoef(low, ref)[0, 1] > 0.99
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a common pair stays exact and silent
        audio_mod.resample(torch.zeros(1, 44100), 44100, 8000)


def test_wav_shorter_than_its_header_warns(tmp_path):
    path = str(tmp_path / "cut.wav")
    write_audio(path, np.zeros(8000, "float32"), SR)
    os.truncate(path, os.path.getsize(path) - 6000)  # 3000 samples of 16-bit PCM cut away
    with pytest.warns(UserWarning, match=r"cut\.wav: the WAV header says 8000 samples but the file holds 5000"):
        x, _ = read_audio(path)
    assert x.shape == (5000,)


# ----------------------------------------------------------------------------- manifests
def test_manifest_with_a_utf8_byte_order_mark_is_read(tmp_path):
    from nass.dataio.manifest import read_manifest

    manifest = _manifest(str(tmp_path), ["u1"])
    data = open(manifest, "rb").read()
    open(manifest, "wb").write(b"\xef\xbb\xbf" + data)
    assert [r["ID"] for r in read_manifest(manifest, 2)] == ["u1"]


def test_same_name_with_two_extensions_is_refused(tmp_path):
    from conftest import write_librimix_tree

    from nass.dataio.manifest import DatasetError
    from nass.dataio.prepare import prepare_dataset

    root = write_librimix_tree(str(tmp_path / "L"), splits=("test",), n_per_split=2)
    base = os.path.join(root, "wav8k", "min", "test")
    for sub in os.listdir(base):
        x, rate = sf.read(os.path.join(base, sub, "test_000.wav"), dtype="float32")
        sf.write(os.path.join(base, sub, "test_000.flac"), x * 0.5, rate)
    with pytest.raises(DatasetError, match=r"test_000\.flac and test_000\.wav.*one of them would be lost"):
        prepare_dataset(dataset="librimix", data_folder=root, save_folder=str(tmp_path / "s"), num_spks=2,
                        sample_rate=SR, splits=["test"])


# ----------------------------------------------------------------------------- lock
LOCK_PROBE = """
import sys
from nass.checkpoints import AtomicCheckpointer, FolderInUseError
try:
    AtomicCheckpointer(sys.argv[1])
except FolderInUseError as exc:
    print(exc)
    sys.exit(3)
"""


def test_a_second_training_in_the_same_folder_is_refused_naming_the_pid(tmp_path):
    import gc

    from nass.checkpoints import AtomicCheckpointer

    save = tmp_path / "save"
    running = AtomicCheckpointer(str(save))  # this process plays the running training
    pending = save / ".incomplete-CKPT+2099-01-01+00-00-00+00"
    pending.mkdir()
    (pending / "separator.ckpt").write_bytes(b"being written")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    probe = subprocess.run([sys.executable, "-c", LOCK_PROBE, str(save)], capture_output=True, text=True,
                           env=env, timeout=300)
    assert probe.returncode == 3, probe.stderr[-2000:]
    assert f"PID {os.getpid()}" in probe.stdout and "--output_folder" in probe.stdout
    assert (pending / "separator.ckpt").read_bytes() == b"being written"  # not removed as a leftover
    AtomicCheckpointer(str(save))  # the same process (resume, evaluation) may open it again
    del running
    gc.collect()
    probe = subprocess.run([sys.executable, "-c", LOCK_PROBE, str(save)], capture_output=True, text=True,
                           env=env, timeout=300)
    assert probe.returncode == 0, probe.stdout + probe.stderr[-2000:]


# ----------------------------------------------------------------------------- preparation
def test_training_data_is_read_in_full_once_at_preparation(tmp_path, monkeypatch):
    from conftest import write_librimix_tree

    from nass.dataio import manifest as manifest_mod
    from nass.dataio.manifest import DatasetError
    from nass.dataio.prepare import prepare_dataset

    root = write_librimix_tree(str(tmp_path / "L"), splits=("train",), n_per_split=3)
    base = os.path.join(root, "wav8k", "min", "train")
    kwargs = dict(dataset="librimix", data_folder=root, save_folder=str(tmp_path / "s"), num_spks=2,
                  sample_rate=SR, splits=["train"])
    bad = os.path.join(base, "s2", "train_001.wav")
    x, _ = sf.read(bad, dtype="float32")
    x[1234] = np.nan  # one sample: a random crop would rarely hit it
    sf.write(bad, x, SR, subtype="FLOAT")
    with pytest.raises(DatasetError, match=r"contain NaN or Inf samples: .*train_001\.wav \(1 NaN/Inf samples\)"):
        prepare_dataset(**kwargs)
    x[1234] = 0.0
    sf.write(bad, x, SR, subtype="FLOAT")
    scanned = []
    real = manifest_mod.scan_samples
    monkeypatch.setattr(manifest_mod, "scan_samples", lambda p: scanned.append(p) or real(p))
    prepare_dataset(**kwargs)
    assert len(scanned) == 3 * 5  # mix_both, mix_clean, s1, s2, noise: every file, once
    scanned.clear()
    prepare_dataset(**kwargs)  # unchanged files: the manifest is reused, nothing is read
    assert scanned == []


def test_full_disk_during_a_checkpoint_save_is_one_line_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    from nass.checkpoints import AtomicCheckpointer

    model = torch.nn.Linear(2, 2)
    ckpter = AtomicCheckpointer(str(tmp_path / "save"), recoverables={"model": model})
    first = ckpter.save_checkpoint(meta={"si-snr": 1.0})

    def full(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\niostream error")

    ckpter.custom_save_hooks["model"] = full
    monkeypatch.setattr(audio_mod.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(OSError, match=r"no space left on device while writing into .*save\. .*--output_folder"):
        ckpter.save_checkpoint(meta={"si-snr": 2.0})
    assert [c.path for c in ckpter.list_checkpoints()] == [first.path]
    assert sorted(os.listdir(tmp_path / "save")) == [".nass-training.lock", first.path.name]  # no hidden save left

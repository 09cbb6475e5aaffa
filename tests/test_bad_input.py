"""Bad inputs stop early with a message naming the file and the fix (table in docs/reliability.md).

Rows already covered elsewhere are named in the table and not repeated here
(tests/test_prepare.py, tests/test_inference.py, tests/test_cli.py, tests/test_separation.py,
tests/test_metrics.py).
"""

import csv
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import REPO, write_librimix_tree
from nass.dataio.audio import AudioError, write_audio
from nass.dataio.manifest import DatasetError, read_manifest
from nass.dataio.pipeline import read_segment
from nass.dataio.prepare import prepare_dataset
from nass.losses.si_snr import neg_si_snr, si_snr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import model_dir  # noqa: E402,F401 (a fixture: the shared tiny model folder)

SR = 8000


def _tree(tmp_path):
    root = str(tmp_path / "L")
    write_librimix_tree(root, splits=("dev",), n_per_split=2, seconds=0.25)
    return root, os.path.join(root, "wav8k", "min", "dev")


def _prepare(root, tmp_path):
    return prepare_dataset(dataset="librimix", data_folder=root, save_folder=str(tmp_path / "save"), num_spks=2,
                           sample_rate=SR, splits=["dev"])


# ----------------------------------------------------------------------------- audio files
def test_truncated_wav_is_named_by_prepare(tmp_path):
    root, base = _tree(tmp_path)
    bad = os.path.join(base, "mix_both", "dev_000.wav")
    data = open(bad, "rb").read()
    open(bad, "wb").write(data[: len(data) // 2])  # a cut download: header promises more than is there
    with pytest.raises(DatasetError, match="differ in length") as err:
        _prepare(root, tmp_path)
    assert "mixture 990" in str(err.value) and os.path.join(base, "s1", "dev_000.wav") in str(err.value)
    assert not os.path.exists(tmp_path / "save" / "libri2mix_dev.csv")  # no manifest written


def test_zero_byte_file_is_named_by_prepare(tmp_path):
    root, base = _tree(tmp_path)
    bad = os.path.join(base, "noise", "dev_001.wav")
    open(bad, "wb").close()
    with pytest.raises(DatasetError, match="cannot be read as audio") as err:
        _prepare(root, tmp_path)
    assert bad in str(err.value) and "Re-create or re-download" in str(err.value)


def test_nan_samples_in_a_training_file_are_named_when_read(tmp_path):
    # headers cannot show NaN: prepare accepts the file, the data pipeline refuses it when it is read
    path = str(tmp_path / "mix.wav")
    x = np.full(800, 0.1, dtype="float32")
    x[10] = np.nan
    write_audio(path, x, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or Inf") as err:
        read_segment(path, 0, 400, SR)
    assert path in str(err.value) and "Re-create the file" in str(err.value)


def test_all_zero_reference_gives_finite_loss_and_gradient():
    est = torch.randn(2, 800, requires_grad=True)
    target = torch.zeros(2, 800)
    loss = neg_si_snr(est, target).mean()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(est.grad).all()
    # both silent: still finite (epsilon documented in nass/losses/si_snr.py)
    assert torch.isfinite(si_snr(torch.zeros(1, 800), torch.zeros(1, 800))).all()


# ----------------------------------------------------------------------------- manifests / YAML
def test_header_only_manifest_is_an_empty_split(tmp_path):
    path = str(tmp_path / "train.csv")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerow(["ID", "duration", "mix_wav", "s1_wav", "s2_wav", "noise_wav", "mix_clean_wav"])
    with pytest.raises(DatasetError) as err:
        read_manifest(path, 2)
    assert path in str(err.value)


LIBRI2MIX_YAML = os.path.join(REPO, "recipes", "LibriMix", "separation", "hparams", "libri2mix", "convtasnet.yaml")


def test_yaml_missing_placeholder_and_unknown_key(tmp_path):
    from nass.runner import load_hparams

    with pytest.raises(SystemExit) as err:
        load_hparams([LIBRI2MIX_YAML, f"--output_folder={tmp_path}"])
    assert "data_folder" in str(err.value) and "--data_folder=/path" in str(err.value)
    with pytest.raises(SystemExit) as err:
        load_hparams([LIBRI2MIX_YAML, f"--data_folder={tmp_path}", f"--output_folder={tmp_path}", "--lerning_rate=1"])
    assert "lerning_rate" in str(err.value) and "spelling" in str(err.value)


# ----------------------------------------------------------------------------- nass-separate
def test_separate_cli_directory_input_exits_2_without_outputs(tmp_path, model_dir, capsys):
    """A folder is read as its audio files (issue 20); one without any is refused."""
    from nass.cli import separate_main

    folder = tmp_path / "recordings"
    folder.mkdir()
    out = tmp_path / "out"
    assert separate_main([str(folder), "--model", model_dir, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "folder without audio files" in err and "Traceback" not in err
    assert not out.exists()


def test_separate_cli_tenth_of_a_second_clip(tmp_path, model_dir):
    from nass.cli import separate_main

    clip = str(tmp_path / "short.wav")
    write_audio(clip, np.random.default_rng(0).uniform(-0.3, 0.3, 800).astype("float32"), SR)
    out = tmp_path / "out"
    assert separate_main([clip, "--model", model_dir, "--out", str(out)]) == 0
    written = sorted(p for p in out.rglob("*.wav"))
    assert len(written) == 2 and all(sf.info(str(p)).frames == 800 for p in written)


MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys, torch
    from nass.inference import Separator, separate_to_folder
    from nass.separation import SeparationOutput

    class Wide(torch.nn.Module):
        # cheap stand-in separator whose activations are 16x the input: one pass over 30 min
        # would need ~0.9 GB; chunking keeps one 8 s chunk's worth
        def forward(self, mix):
            wide = mix.unsqueeze(1).repeat(1, 16, 1)
            est = torch.stack([wide.mean(1) * 0.5, wide.mean(1) * 0.5], dim=-1)
            return SeparationOutput(est, None, mix, None, est)

    torch.set_num_threads(1)
    sep = Separator(Wide(), sample_rate=8000)
    sep.separate_batch(torch.zeros(1, 8000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    paths = separate_to_folder(sep, sys.argv[1], sys.argv[2])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (after - before) / 1024, "paths": paths}))
    """
)


def test_thirty_minute_file_memory_stays_bounded(tmp_path):
    n = 30 * 60 * SR  # 14.4 M samples: 57.6 MB as float32
    path = str(tmp_path / "long.wav")
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        for _ in range(30):
            f.write((0.1 * rng.standard_normal(n // 30)).astype("float32"))
    script = tmp_path / "probe.py"
    script.write_text(MEMORY_PROBE)
    res = subprocess.run([sys.executable, str(script), path, str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(report["paths"]) == 2 and all(sf.info(p).frames == n for p in report["paths"])
    # input + two outputs (float32) + writing buffers: a few times 57.6 MB, far below one 16x pass
    assert report["growth_mb"] < 600, report


# ----------------------------------------------------------------------------- per-ID file names
def test_evaluation_example_names_cannot_escape(tmp_path):
    from nass.evaluation import evaluate_manifest

    rng = np.random.default_rng(0)
    paths = {}
    for name in ("mix", "s1", "s2"):
        paths[name] = str(tmp_path / f"{name}.wav")
        write_audio(paths[name], (0.1 * rng.standard_normal(1600)).astype("float32"), SR, subtype="FLOAT")
    manifest = str(tmp_path / "test.csv")
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "duration", "mix_wav", "s1_wav", "s2_wav", "noise_wav", "mix_clean_wav"])
        w.writerow(["../../escaped", 0.2, paths["mix"], paths["s1"], paths["s2"], "", ""])
        w.writerow(["/abs/olute", 0.2, paths["mix"], paths["s1"], paths["s2"], "", ""])

    def separate(mix):
        return torch.stack([mix / 2, mix / 2], dim=-1), None

    out = tmp_path / "deep" / "eval"
    evaluate_manifest(separate, manifest, str(out), num_spks=2, sample_rate=SR, num_workers=0, save_examples=2)
    inside = os.path.realpath(out)
    written = [os.path.realpath(os.path.join(d, f)) for d, _, files in os.walk(tmp_path) for f in files
               if f.endswith(".wav") and f not in ("mix.wav", "s1.wav", "s2.wav")]
    assert written and all(p.startswith(inside + os.sep) for p in written), written
    assert not (tmp_path / "escaped").exists() and not os.path.exists("/abs/olute")

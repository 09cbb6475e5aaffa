"""Data preparation: LibriMix / WHAM! / custom manifests, validation errors, reuse."""

import csv
import json
import os

import numpy as np
import pytest
import soundfile as sf

from nass.dataio import manifest as manifest_mod
from nass.dataio.custom import prepare_custom
from nass.dataio.librimix import prepare_librimix
from nass.dataio.manifest import DatasetError, read_manifest, sidecar_path
from nass.dataio.prepare import DATASETS, prepare_dataset
from nass.dataio.wham import prepare_wham

SR = 8000
# Three mixtures of different lengths (samples) so durations are distinguishable.
LENGTHS = {"m1.wav": 800, "m2.wav": 1600, "m3.wav": 2000}


def _wav(path, n, sr=SR, channels=1, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.standard_normal((n, channels)).astype("float32")
    sf.write(path, x if channels > 1 else x[:, 0], sr, subtype="PCM_16")


def _make_split(split_dir, subs, lengths=LENGTHS, sr=SR):
    for sub in subs:
        for name, n in lengths.items():
            _wav(os.path.join(split_dir, sub, name), n, sr=sr)


def _librimix(root, num_spks=2, sr=SR, mode="min", splits=("train", "dev", "test"), subs=None):
    if subs is None:
        subs = ["mix_both", "mix_clean", "noise"] + [f"s{i}" for i in range(1, num_spks + 1)]
    for split in splits:
        _make_split(os.path.join(root, f"wav{sr // 1000}k", mode, split), subs, sr=sr)
    return str(root)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _header(path):
    with open(path) as f:
        return f.readline().strip()


# ---------------------------------------------------------------- manifest contents


def test_librimix_2spk_noisy_contents(tmp_path):
    data = _librimix(tmp_path / "Libri2Mix")
    out = prepare_librimix(data, tmp_path / "save", splits=("train", "dev", "test"))
    assert sorted(out) == ["dev", "test", "train"]
    assert out["dev"] == str(tmp_path / "save" / "libri2mix_dev.csv")
    assert _header(out["dev"]) == "ID,duration,mix_wav,s1_wav,s2_wav,noise_wav,mix_clean_wav"
    rows = _rows(out["dev"])
    assert [r["ID"] for r in rows] == ["m1", "m2", "m3"]
    assert [float(r["duration"]) for r in rows] == [0.1, 0.2, 0.25]
    split_dir = os.path.join(data, "wav8k", "min", "dev")
    for r in rows:
        name = r["ID"] + ".wav"
        assert r["mix_wav"] == os.path.join(split_dir, "mix_both", name)
        assert r["s1_wav"] == os.path.join(split_dir, "s1", name)
        assert r["s2_wav"] == os.path.join(split_dir, "s2", name)
        assert r["noise_wav"] == os.path.join(split_dir, "noise", name)
        assert r["mix_clean_wav"] == os.path.join(split_dir, "mix_clean", name)
        assert all(os.path.isabs(r[c]) for c in ("mix_wav", "s1_wav", "s2_wav", "noise_wav", "mix_clean_wav"))
    side = json.load(open(sidecar_path(out["dev"])))
    assert side["options"]["mixture"] == "noisy" and side["options"]["sample_rate"] == SR


def test_librimix_3spk_clean_contents(tmp_path):
    data = _librimix(tmp_path / "Libri3Mix", num_spks=3, splits=("test",))
    out = prepare_librimix(data, tmp_path / "save", num_spks=3, mixture="clean", splits=["test"])
    assert os.path.basename(out["test"]) == "libri3mix_test.csv"
    assert _header(out["test"]) == "ID,duration,mix_wav,s1_wav,s2_wav,s3_wav,noise_wav,mix_clean_wav"
    rows = _rows(out["test"])
    assert [float(r["duration"]) for r in rows] == [0.1, 0.2, 0.25]
    for r in rows:
        assert os.path.basename(os.path.dirname(r["mix_wav"])) == "mix_clean"
        assert r["mix_clean_wav"] == r["mix_wav"]
        assert r["s3_wav"].endswith(os.path.join("s3", r["ID"] + ".wav"))
        assert r["noise_wav"].endswith(os.path.join("noise", r["ID"] + ".wav"))  # folder exists: filled


def test_librimix_clean_without_noise_folder_and_16k_max(tmp_path):
    data = _librimix(tmp_path / "L", sr=16000, mode="max", splits=("dev",), subs=["mix_clean", "s1", "s2"])
    out = prepare_librimix(data, tmp_path / "save", sample_rate=16000, mode="max", mixture="clean", splits=["dev"])
    rows = _rows(out["dev"])
    assert [float(r["duration"]) for r in rows] == [0.05, 0.1, 0.125]  # same samples at 16 kHz
    assert all(r["noise_wav"] == "" for r in rows)
    assert all("wav16k" in r["mix_wav"] and os.sep + "max" + os.sep in r["mix_wav"] for r in rows)


def test_wham_contents(tmp_path):
    root = tmp_path / "wham"
    for split in ("tr", "cv", "tt"):
        _make_split(os.path.join(root, "wav8k", "min", split), ["mix_both", "mix_clean", "s1", "s2", "noise"])
    out = prepare_wham(str(root), tmp_path / "save")
    assert sorted(out) == ["cv", "tr", "tt"]
    assert os.path.basename(out["tt"]) == "wham_tt.csv"
    rows = _rows(out["tt"])
    assert [float(r["duration"]) for r in rows] == [0.1, 0.2, 0.25]
    assert all("mix_both" in r["mix_wav"] and r["mix_clean_wav"] and r["noise_wav"] for r in rows)


@pytest.mark.parametrize("with_clean", [True, False])
def test_custom_contents(tmp_path, with_clean):
    subs = ["mix_both", "s1", "s2", "noise"] + (["mix_clean"] if with_clean else [])
    for split in ("train", "valid", "test"):
        _make_split(str(tmp_path / "data" / split), subs)
    out = prepare_custom(str(tmp_path / "data"), tmp_path / "save")
    assert sorted(out) == ["test", "train", "valid"]
    rows = _rows(out["valid"])
    assert [float(r["duration"]) for r in rows] == [0.1, 0.2, 0.25]
    assert all(r["noise_wav"].endswith(os.path.join("valid", "noise", r["ID"] + ".wav")) for r in rows)
    if with_clean:
        assert all(r["mix_clean_wav"].endswith(os.path.join("mix_clean", r["ID"] + ".wav")) for r in rows)
    else:
        assert all(r["mix_clean_wav"] == "" for r in rows)


def test_manifest_loads_in_speechbrain(tmp_path):
    from speechbrain.dataio.dataset import DynamicItemDataset

    data = _librimix(tmp_path / "L", splits=("dev",))
    out = prepare_librimix(data, tmp_path / "save", splits=["dev"])
    ds = DynamicItemDataset.from_csv(out["dev"])
    assert len(ds) == 3
    assert ds.data["m3"]["duration"] == pytest.approx(0.25)


# ---------------------------------------------------------------- validation errors


def test_missing_data_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as e:
        prepare_librimix(str(tmp_path / "nowhere"), tmp_path / "save")
    assert "nowhere" in str(e.value) and "data_folder" in str(e.value)


def test_missing_rate_folder_lists_what_exists(tmp_path):
    data = _librimix(tmp_path / "L", splits=("dev",))
    with pytest.raises(DatasetError, match="wav8k/min") as e:
        prepare_librimix(data, tmp_path / "save", sample_rate=16000, splits=["dev"])
    assert "wav16k" in str(e.value)


def test_parent_folder_hint(tmp_path):
    _librimix(tmp_path / "Libri2Mix", splits=("dev",))
    with pytest.raises(DatasetError, match="Libri2Mix"):
        prepare_librimix(str(tmp_path), tmp_path / "save", splits=["dev"])


def test_unknown_split_lists_existing(tmp_path):
    data = _librimix(tmp_path / "L")
    with pytest.raises(DatasetError) as e:
        prepare_librimix(data, tmp_path / "save")  # default train-360 does not exist
    msg = str(e.value)
    assert "'train-360'" in msg and "dev, test, train" in msg


def test_missing_subfolder(tmp_path):
    data = _librimix(tmp_path / "L", splits=("dev",), subs=["mix_both", "s1", "noise"])
    with pytest.raises(DatasetError, match="missing sub-folder") as e:
        prepare_librimix(data, tmp_path / "save", splits=["dev"])
    assert "s2" in str(e.value) and os.path.join("wav8k", "min", "dev") in str(e.value)


def test_missing_split_folder_custom(tmp_path):
    _make_split(str(tmp_path / "data" / "train"), ["mix_both", "s1", "s2", "noise"])
    with pytest.raises(DatasetError, match="'valid'") as e:
        prepare_custom(str(tmp_path / "data"), tmp_path / "save", splits=["train", "valid"])
    assert "Splits that exist: train" in str(e.value)


def test_noisy_requires_noise_folder(tmp_path):
    _make_split(str(tmp_path / "data" / "train"), ["mix_both", "s1", "s2"])
    with pytest.raises(DatasetError, match="noise"):
        prepare_custom(str(tmp_path / "data"), tmp_path / "save", splits=["train"])


def test_extra_speaker_folder_refused(tmp_path):
    data = _librimix(tmp_path / "Libri3Mix", num_spks=3, splits=("dev",))
    with pytest.raises(DatasetError, match="num_spks=3") as e:
        prepare_librimix(data, tmp_path / "save", num_spks=2, splits=["dev"])
    assert "s3" in str(e.value)


def test_mixture_without_sources(tmp_path):
    data = _librimix(tmp_path / "L", splits=("dev",))
    split_dir = os.path.join(data, "wav8k", "min", "dev")
    os.remove(os.path.join(split_dir, "s2", "m2.wav"))
    with pytest.raises(DatasetError, match="no file of the same name") as e:
        prepare_librimix(data, tmp_path / "save", splits=["dev"])
    assert os.path.join(split_dir, "mix_both", "m2.wav") in str(e.value)
    assert not os.path.exists(tmp_path / "save" / "libri2mix_dev.csv")


def test_sources_without_mixture(tmp_path):
    data = _librimix(tmp_path / "L", splits=("dev",))
    split_dir = os.path.join(data, "wav8k", "min", "dev")
    _wav(os.path.join(split_dir, "s1", "orphan.wav"), 800)
    _wav(os.path.join(split_dir, "noise", "orphan.wav"), 800)
    with pytest.raises(DatasetError, match="no mixture of the same name") as e:
        prepare_librimix(data, tmp_path / "save", splits=["dev"])
    msg = str(e.value)
    assert os.path.join(split_dir, "s1", "orphan.wav") in msg and os.path.join(split_dir, "noise", "orphan.wav") in msg


def test_error_in_last_split_before_any_header_read(tmp_path, monkeypatch):
    data = _librimix(tmp_path / "L", splits=("train", "test"))
    os.remove(os.path.join(data, "wav8k", "min", "test", "s1", "m1.wav"))
    monkeypatch.setattr(manifest_mod, "audio_info", lambda p: pytest.fail("headers read before pairing check"))
    with pytest.raises(DatasetError, match="m1.wav"):
        prepare_librimix(data, tmp_path / "save", splits=["train", "test"])
    assert not os.path.exists(tmp_path / "save" / "libri2mix_train.csv")


def test_wrong_sample_rate(tmp_path):
    data = _librimix(tmp_path / "L", splits=("dev",))
    bad = os.path.join(data, "wav8k", "min", "dev", "s1", "m3.wav")
    _wav(bad, 4000, sr=16000)  # same length in samples, wrong rate
    with pytest.raises(DatasetError, match="sample_rate=8000") as e:
        prepare_librimix(data, tmp_path / "save", splits=["dev"])
    assert bad in str(e.value) and "16000 Hz" in str(e.value)


def test_stereo_file(tmp_path):
    data = _librimix(tmp_path / "L", splits=("dev",))
    bad = os.path.join(data, "wav8k", "min", "dev", "s2", "m1.wav")
    _wav(bad, 800, channels=2)
    with pytest.raises(DatasetError, match="not mono") as e:
        prepare_librimix(data, tmp_path / "save", splits=["dev"])
    assert bad in str(e.value)


@pytest.mark.parametrize("sub", ["s1", "noise", "mix_clean"])
def test_length_mismatch(tmp_path, sub):
    data = _librimix(tmp_path / "L", splits=("dev",))
    bad = os.path.join(data, "wav8k", "min", "dev", sub, "m2.wav")
    _wav(bad, 1599)
    with pytest.raises(DatasetError, match="differ in length") as e:
        prepare_librimix(data, tmp_path / "save", splits=["dev"])
    assert bad in str(e.value) and "1599 samples, mixture 1600" in str(e.value)


def test_empty_split(tmp_path):
    data = _librimix(tmp_path / "L", splits=("dev",))
    for sub in os.listdir(os.path.join(data, "wav8k", "min", "dev")):
        folder = os.path.join(data, "wav8k", "min", "dev", sub)
        for f in os.listdir(folder):
            os.remove(os.path.join(folder, f))
    with pytest.raises(DatasetError, match="the split is empty") as e:
        prepare_librimix(data, tmp_path / "save", splits=["dev"])
    assert os.path.join("dev", "mix_both") in str(e.value)


def test_unreadable_file(tmp_path):
    data = _librimix(tmp_path / "L", splits=("dev",))
    bad = os.path.join(data, "wav8k", "min", "dev", "noise", "m1.wav")
    with open(bad, "wb") as f:
        f.write(b"not a wav file at all")
    with pytest.raises(DatasetError, match="cannot be read as audio") as e:
        prepare_librimix(data, tmp_path / "save", splits=["dev"])
    assert bad in str(e.value)


def test_many_problems_listed_first_few_and_count(tmp_path):
    lengths = {f"u{i:02d}.wav": 800 for i in range(8)}
    _make_split(str(tmp_path / "data" / "train"), ["mix_both", "s1", "s2", "noise"], lengths=lengths)
    for name in lengths:
        _wav(str(tmp_path / "data" / "train" / "s1" / name), 800, sr=16000)
    with pytest.raises(DatasetError) as e:
        prepare_custom(str(tmp_path / "data"), tmp_path / "save", splits=["train"])
    msg = str(e.value)
    assert "8 file(s)" in msg and "and 3 more (8 in total)" in msg and "u00.wav" in msg and "u07.wav" not in msg


def test_bad_options(tmp_path):
    data = _librimix(tmp_path / "L", splits=("dev",))
    with pytest.raises(DatasetError, match="mode='mid'"):
        prepare_librimix(data, tmp_path / "save", mode="mid", splits=["dev"])
    with pytest.raises(DatasetError, match="mixture='both'"):
        prepare_librimix(data, tmp_path / "save", mixture="both", splits=["dev"])
    with pytest.raises(DatasetError, match="num_spks=4"):
        prepare_librimix(data, tmp_path / "save", num_spks=4, splits=["dev"])
    with pytest.raises(DatasetError, match="sample_rate=8500"):
        prepare_librimix(data, tmp_path / "save", sample_rate=8500, splits=["dev"])


# ---------------------------------------------------------------- reuse and skip_prep


def test_valid_manifest_is_reused_without_rescan(tmp_path, monkeypatch):
    data = _librimix(tmp_path / "L", splits=("dev",))
    out = prepare_librimix(data, tmp_path / "save", splits=["dev"])
    before = os.stat(out["dev"]).st_mtime_ns
    content = open(out["dev"]).read()

    def no_header_reads(path):
        raise AssertionError(f"header of {path} re-read")

    monkeypatch.setattr(manifest_mod, "audio_info", no_header_reads)
    again = prepare_librimix(data, tmp_path / "save", splits=["dev"])
    assert again == out
    assert os.stat(out["dev"]).st_mtime_ns == before and open(out["dev"]).read() == content


def test_changes_force_rescan(tmp_path, monkeypatch):
    data = _librimix(tmp_path / "L", splits=("dev",))
    out = prepare_librimix(data, tmp_path / "save", splits=["dev"])
    calls = []
    real = manifest_mod.audio_info
    monkeypatch.setattr(manifest_mod, "audio_info", lambda p: calls.append(p) or real(p))

    # Option change: clean input -> rebuilt with mix_clean as mix_wav.
    prepare_librimix(data, tmp_path / "save", mixture="clean", splits=["dev"])
    assert calls and all("mix_clean" in r["mix_wav"] for r in _rows(out["dev"]))

    # A new mixture on disk -> rebuilt with four rows.
    calls.clear()
    split_dir = os.path.join(data, "wav8k", "min", "dev")
    for sub in ("mix_both", "mix_clean", "s1", "s2", "noise"):
        _wav(os.path.join(split_dir, sub, "m4.wav"), 1200)
    prepare_librimix(data, tmp_path / "save", mixture="clean", splits=["dev"])
    rows = _rows(out["dev"])
    assert calls and [r["ID"] for r in rows] == ["m1", "m2", "m3", "m4"] and float(rows[-1]["duration"]) == 0.15

    # A corpus rebuilt in place (same names, new content and length) -> rebuilt, new durations.
    calls.clear()
    for sub in ("mix_both", "mix_clean", "s1", "s2", "noise"):
        _wav(os.path.join(split_dir, sub, "m1.wav"), 2000, seed=1)
    prepare_librimix(data, tmp_path / "save", mixture="clean", splits=["dev"])
    assert calls and float(_rows(out["dev"])[0]["duration"]) == 0.25
    # ... and one source rewritten with another length is caught, not reused
    _wav(os.path.join(split_dir, "s2", "m1.wav"), 1000, seed=2)
    with pytest.raises(DatasetError, match="m1.wav"):
        prepare_librimix(data, tmp_path / "save", mixture="clean", splits=["dev"])
    _wav(os.path.join(split_dir, "s2", "m1.wav"), 2000, seed=1)

    # A pairing problem is still caught when the manifest could be reused.
    os.remove(os.path.join(split_dir, "s1", "m4.wav"))
    with pytest.raises(DatasetError, match="m4.wav"):
        prepare_librimix(data, tmp_path / "save", mixture="clean", splits=["dev"])


def test_skip_prep(tmp_path):
    with pytest.raises(DatasetError, match="skip_prep=True") as e:
        prepare_librimix(str(tmp_path / "nowhere"), tmp_path / "save", splits=["dev"], skip_prep=True)
    assert "libri2mix_dev.csv" in str(e.value)
    data = _librimix(tmp_path / "L", splits=("dev",))
    out = prepare_librimix(data, tmp_path / "save", splits=["dev"])
    assert prepare_librimix(str(tmp_path / "moved"), tmp_path / "save", splits=["dev"], skip_prep=True) == out


# ---------------------------------------------------------------- read_manifest


def test_read_manifest_ok_and_checks(tmp_path):
    data = _librimix(tmp_path / "L", splits=("dev",))
    out = prepare_librimix(data, tmp_path / "save", splits=["dev"])["dev"]
    rows = read_manifest(out, num_spks=2)
    assert [r["duration"] for r in rows] == [0.1, 0.2, 0.25]
    assert isinstance(rows[0]["duration"], float)

    with pytest.raises(DatasetError, match="missing column") as e:
        read_manifest(out, num_spks=3)
    assert out in str(e.value) and "s3_wav" in str(e.value)

    # A column dropped from the file.
    broken = str(tmp_path / "broken.csv")
    with open(out) as src, open(broken, "w") as dst:
        for line in src:
            dst.write(",".join(line.rstrip("\n").split(",")[:-2]) + "\n")  # drop noise_wav, mix_clean_wav
    with pytest.raises(DatasetError, match="noise_wav") as e:
        read_manifest(broken, num_spks=2)
    assert broken in str(e.value)

    # Referenced files deleted.
    os.remove(rows[0]["s1_wav"])
    os.remove(rows[2]["noise_wav"])
    with pytest.raises(DatasetError, match="2 referenced file") as e:
        read_manifest(out, num_spks=2)
    assert rows[0]["s1_wav"] in str(e.value) and rows[2]["noise_wav"] in str(e.value)


def test_read_manifest_refuses_more_speakers(tmp_path):
    data = _librimix(tmp_path / "L", num_spks=3, splits=("dev",))
    out = prepare_librimix(data, tmp_path / "save", num_spks=3, splits=["dev"])["dev"]
    assert len(read_manifest(out, num_spks=3)) == 3
    with pytest.raises(DatasetError, match="s3_wav"):
        read_manifest(out, num_spks=2)


def test_read_manifest_missing(tmp_path):
    with pytest.raises(DatasetError, match="manifest not found"):
        read_manifest(str(tmp_path / "x.csv"), 2)


# ---------------------------------------------------------------- dispatcher


def test_dispatcher_unknown_key(tmp_path):
    with pytest.raises(ValueError, match="'custom', 'librimix', 'wham'"):
        prepare_dataset("Libri2Mix", str(tmp_path), str(tmp_path))
    assert set(DATASETS) == {"librimix", "wham", "custom"}


def test_dispatcher_routes_and_defaults(tmp_path):
    data = _librimix(tmp_path / "L", splits=("train", "dev", "test"))
    out = prepare_dataset("librimix", data, tmp_path / "save", splits=["dev", "test"])
    assert sorted(out) == ["dev", "test"] and _rows(out["test"])[0]["ID"] == "m1"
    with pytest.raises(DatasetError, match="train-360"):  # LibriMix default splits
        prepare_dataset("librimix", data, tmp_path / "save")
    with pytest.raises(DatasetError, match="num_spks=2"):
        prepare_dataset("wham", data, tmp_path / "save", num_spks=3)
    # Same folder, explicit key: custom reads a LibriMix root at its wav8k/min level (issue 20),
    # and a split that is not there is listed with those that are
    with pytest.raises(DatasetError, match="'valid' not found in .*wav8k.min. Splits that exist: dev, test, train"):
        prepare_dataset("custom", data, tmp_path / "save")

"""Tests of on-the-fly LibriMix-style dynamic mixing (nass.dataio.dynamic_mixing)."""

import numpy as np
import pytest
import torch
from speechbrain.dataio.batch import PaddedBatch

from conftest import dominant_hz
from nass.dataio.audio import write_audio
from nass.dataio.dynamic_mixing import DynamicMixingDataset, librimix_speaker
from nass.dataio.mixing import measure_loudness

SR = 8000
FREQ = {"11": 250.0, "22": 500.0, "33": 1000.0, "44": 1750.0}  # one tone per speaker
PAIRS = [("11", "22"), ("33", "44"), ("22", "33"), ("44", "11"), ("11", "33")]


def _tone(spk, seconds, rng):
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 + 0.1 * rng.random()) * np.sin(2 * np.pi * FREQ[spk] * t + rng.uniform(0, 6))


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm")
    rng = np.random.default_rng(0)
    out = []
    for j, (a, b) in enumerate(PAIRS):
        mid = f"{a}-100-{j}_{b}-200-{j}"  # LibriMix naming: <spk>-<chapter>-<utt>_...
        sec = 0.3 if j == 0 else 0.7  # one source shorter than the segment (padded)
        row = {"ID": mid, "duration": sec}
        for key, spk in (("s1", a), ("s2", b)):
            row[f"{key}_wav"] = str(root / key / f"{mid}.wav")
            write_audio(row[f"{key}_wav"], _tone(spk, sec, rng), SR)
        row["noise_wav"] = str(root / "noise" / f"{mid}.wav")
        write_audio(row["noise_wav"], 0.05 * rng.standard_normal(int((0.2 if j == 1 else 0.9) * SR)), SR)
        out.append(row)
    return out


def _speaker(sig):
    f = dominant_hz(sig.numpy(), SR)
    return min(FREQ, key=lambda s: abs(FREQ[s] - f))


def test_keys_shapes_and_sums(rows):
    ds = DynamicMixingDataset(rows, num_spks=2, sample_rate=SR, segment_seconds=0.5, seed=1)
    assert len(ds) == len(rows)
    for i in range(len(ds)):
        item = ds[i]
        assert sorted(item) == ["id", "mix_clean_sig", "mix_sig", "noise_sig", "s1_sig", "s2_sig"]
        for k, v in item.items():
            if k != "id":
                assert v.dtype == torch.float32 and v.shape == (4000,), k
        torch.testing.assert_close(item["mix_clean_sig"], item["s1_sig"] + item["s2_sig"], atol=1e-6, rtol=0)
        torch.testing.assert_close(item["mix_sig"], item["s1_sig"] + item["s2_sig"] + item["noise_sig"], atol=1e-6, rtol=0)
        assert item["noise_sig"].abs().max() > 0 and item["mix_sig"].abs().max() <= 0.9 + 1e-5
        # speech at the LibriMix loudness unless the joint anti-clipping factor lowered it
        lufs = measure_loudness(item["s2_sig"].numpy(), SR)
        assert lufs <= -24.5 and (lufs >= -33.5 or np.isclose(item["mix_sig"].abs().max(), 0.9, atol=1e-3))
    batch = PaddedBatch([ds[0], ds[1]])
    assert batch.mix_sig.data.shape == (2, 4000) and batch.s1_sig.data.shape == (2, 4000)


def test_sources_are_of_different_speakers(rows):
    ds = DynamicMixingDataset(rows, num_spks=2, sample_rate=SR, segment_seconds=0.25, seed=3)
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            a, b = _speaker(item["s1_sig"]), _speaker(item["s2_sig"])
            assert a != b
            seen.add((a, b))
    assert len(seen) > len(PAIRS)  # new combinations, not the manifest's pairs only


def test_reproducible_given_seed_epoch_index(rows):
    a = DynamicMixingDataset(rows, num_spks=2, sample_rate=SR, segment_seconds=0.5, seed=5)
    b = DynamicMixingDataset(rows, num_spks=2, sample_rate=SR, segment_seconds=0.5, seed=5)
    b[3]  # access order does not matter
    for i in (0, 2, 4):
        assert torch.equal(a[i]["mix_sig"], b[i]["mix_sig"])
        assert torch.equal(a[i]["s1_sig"], b[i]["s1_sig"])
    assert not torch.equal(a[0]["mix_sig"], a[1]["mix_sig"])
    first = a[0]["mix_sig"]
    a.set_epoch(1)
    assert not torch.equal(a[0]["mix_sig"], first)
    a.set_epoch(0)
    assert torch.equal(a[0]["mix_sig"], first)
    c = DynamicMixingDataset(rows, num_spks=2, sample_rate=SR, segment_seconds=0.5, seed=6)
    assert not torch.equal(c[0]["mix_sig"], first)
    # DataLoader workers give the same items as direct indexing
    loader = torch.utils.data.DataLoader(a, batch_size=1, num_workers=2, collate_fn=PaddedBatch)
    for i, batch in enumerate(loader):
        assert torch.equal(batch.mix_sig.data[0], a[i]["mix_sig"])


def test_no_noise_min_length_and_speaker_of(rows):
    quiet = [{**r, "noise_wav": ""} for r in rows]
    ds = DynamicMixingDataset(quiet, num_spks=2, sample_rate=SR, segment_seconds=None, seed=0)
    for i in range(len(ds)):
        item = ds[i]
        assert torch.count_nonzero(item["noise_sig"]) == 0
        assert torch.equal(item["mix_sig"], item["mix_clean_sig"])
        assert item["mix_sig"].numel() in (int(0.3 * SR), int(0.7 * SR))  # the shortest drawn source
    zero = DynamicMixingDataset(quiet, num_spks=2, sample_rate=SR, segment_seconds=0, seed=0)
    assert torch.equal(zero[1]["mix_sig"], ds[1]["mix_sig"])  # 0 means "no crop", as None
    with pytest.raises(ValueError, match="segment_seconds"):
        DynamicMixingDataset(rows, num_spks=2, sample_rate=SR, segment_seconds=-1.0)
    # a speaker_of that puts everybody in one speaker cannot form mixtures
    with pytest.raises(ValueError, match="speaker"):
        DynamicMixingDataset(rows, num_spks=2, sample_rate=SR, speaker_of=lambda p: "same")
    with pytest.raises(ValueError, match="s3_wav"):
        DynamicMixingDataset(rows, num_spks=3, sample_rate=SR)


def test_librimix_speaker_names():
    assert librimix_speaker("/x/s1/19-198-0001_26-495-0004.wav", 0, 2) == "19"
    assert librimix_speaker("/x/s2/19-198-0001_26-495-0004.wav", 1, 2) == "26"
    assert librimix_speaker("/x/s3/1-1-1_2-2-2_3-3-3.wav", 2, 3) == "3"
    assert librimix_speaker("/x/s2/01aa010b_0.97_209a010p_-0.97.wav", 1, 2) == "wsj0:209"
    assert librimix_speaker("/x/s1/utt-0001.wav", 0, 2) is None
    assert librimix_speaker("/x/s1/mixture7.wav", 0, 2) is None

"""Tests of the LibriMix-style mixture generator (nass.dataio.mixing)."""

import csv
import glob
import os

import numpy as np
import pytest
import soundfile as sf

from nass.dataio import mixing
from nass.dataio.audio import write_audio
from nass.dataio.mixing import (
    MixtureConfigError,
    create_mixtures,
    librimix_gains,
    list_noise,
    list_speech,
    loop_noise,
    measure_loudness,
    split_files,
    split_speakers,
)

SR_IN = 16000
SPEAKERS = [f"spk{i}" for i in range(6)]
FRACTIONS = {"train": 0.5, "dev": 0.25, "test": 0.25}
N_MIX = {"train": 3, "dev": 2, "test": 2}


def _utterance(rng, f0, seconds):
    t = np.arange(int(seconds * SR_IN)) / SR_IN
    tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in (1, 2, 3))
    env = np.convolve(np.abs(rng.standard_normal(t.size)), np.ones(800) / 800, mode="same")
    return 0.3 * tone * env / env.max()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(123)
    for i, spk in enumerate(SPEAKERS):
        for j, sec in enumerate((0.6, 0.8, 1.0)):
            # nested chapter folder, LibriSpeech-like names
            write_audio(root / "speech" / spk / "ch1" / f"{spk}-1-{j}.wav", _utterance(rng, 100 + 20 * i, sec), SR_IN)
    # two short noises (must be looped), two long ones
    for k, sec in enumerate((0.3, 0.5, 2.0, 2.5)):
        write_audio(root / "noise" / f"n{k}.wav", 0.2 * rng.standard_normal(int(sec * SR_IN)), SR_IN)
    return root


@pytest.fixture(scope="module")
def libri2mix(corpus):
    out = corpus / "out_a" / "Libri2Mix"
    rows = create_mixtures(
        corpus / "speech", corpus / "noise", out, num_spks=2, sample_rate=8000,
        modes=("min", "max"), n_mixtures=N_MIX, fractions=FRACTIONS, seed=7,
    )
    return out, rows


def _read_int(path):
    x, sr = sf.read(path, dtype="int16")
    return x.astype(np.int64), sr


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_layout_rate_and_sum_identity(libri2mix):
    out, rows = libri2mix
    assert {k: len(v) for k, v in rows.items()} == N_MIX
    for mode in ("min", "max"):
        for split, srows in rows.items():
            folder = out / "wav8k" / mode / split
            assert sorted(os.listdir(folder)) == ["mix_both", "mix_clean", "mix_single", "noise", "s1", "s2"]
            for r in srows:
                parts = {}
                for sub in os.listdir(folder):
                    x, sr = _read_int(folder / sub / f"{r['mixture_ID']}.wav")
                    assert sr == 8000 and sf.info(folder / sub / f"{r['mixture_ID']}.wav").subtype == "PCM_16"
                    parts[sub] = x
                np.testing.assert_array_equal(parts["mix_both"], parts["s1"] + parts["s2"] + parts["noise"])
                np.testing.assert_array_equal(parts["mix_clean"], parts["s1"] + parts["s2"])
                np.testing.assert_array_equal(parts["mix_single"], parts["s1"] + parts["noise"])
                assert np.abs(parts["mix_both"]).max() <= round(0.9 * 32768) + 2
                assert np.abs(parts["s1"]).max() > 0 and np.abs(parts["noise"]).max() > 0


def test_min_max_lengths(libri2mix):
    out, rows = libri2mix
    for r in rows["train"]:
        n_in = [sf.info(r[f"source_{k}_path"]).frames for k in (1, 2)]
        n_out = [int(np.ceil(n / 2)) for n in n_in]  # 16 kHz -> 8 kHz
        n_min = sf.info(out / "wav8k" / "min" / "train" / "s1" / f"{r['mixture_ID']}.wav").frames
        n_max = sf.info(out / "wav8k" / "max" / "train" / "mix_both" / f"{r['mixture_ID']}.wav").frames
        assert (n_min, n_max) == (min(n_out), max(n_out))
        assert int(r["length"]) == n_max
        # max mode = min mode zero-padded: the first n_min samples agree
        a, _ = _read_int(out / "wav8k" / "min" / "train" / "s2" / f"{r['mixture_ID']}.wav")
        b, _ = _read_int(out / "wav8k" / "max" / "train" / "s2" / f"{r['mixture_ID']}.wav")
        np.testing.assert_array_equal(a, b[:n_min])


def test_metadata_csvs(libri2mix):
    out, rows = libri2mix
    md = _csv(out / "metadata" / "libri2mix_train.csv")
    assert list(md[0]) == [
        "mixture_ID", "source_1_path", "source_1_gain", "source_2_path", "source_2_gain",
        "noise_path", "noise_gain", "length", "noise_offset",
    ]
    assert [r["mixture_ID"] for r in md] == [r["mixture_ID"] for r in rows["train"]]
    assert all(float(r["source_1_gain"]) > 0 for r in md)
    both = _csv(out / "wav8k" / "max" / "metadata" / "mixture_dev_mix_both.csv")
    assert list(both[0]) == ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "noise_path", "length"]
    assert all(os.path.isfile(r["mixture_path"]) and os.path.isfile(r["noise_path"]) for r in both)
    clean = _csv(out / "wav8k" / "min" / "metadata" / "mixture_test_mix_clean.csv")
    assert list(clean[0]) == ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length"]
    single = _csv(out / "wav8k" / "min" / "metadata" / "mixture_test_mix_single.csv")
    assert list(single[0]) == ["mixture_ID", "mixture_path", "source_1_path", "noise_path", "length"]
    assert int(single[0]["length"]) == sf.info(single[0]["mixture_path"]).frames


def test_speaker_and_noise_disjoint(libri2mix):
    out, rows = libri2mix
    spk, noise = {}, {}
    for split in FRACTIONS:
        info = _csv(out / "metadata" / f"libri2mix_{split}_info.csv")
        for r in info:
            assert r["speaker_1_ID"] != r["speaker_2_ID"]  # different speakers in a mixture
        spk[split] = {r[c] for r in info for c in ("speaker_1_ID", "speaker_2_ID")}
        noise[split] = {r["noise_path"] for r in rows[split]}
        # the mixture ID names the utterances (LibriMix style)
        for r in rows[split]:
            stems = [os.path.splitext(os.path.basename(r[f"source_{k}_path"]))[0] for k in (1, 2)]
            assert r["mixture_ID"] == "_".join(stems)
    for a in FRACTIONS:
        for b in FRACTIONS:
            if a < b:
                assert not spk[a] & spk[b] and not noise[a] & noise[b]


def test_deterministic_and_independent_of_workers(corpus, libri2mix):
    out_a, _ = libri2mix
    out_b = corpus / "out_b" / "Libri2Mix"
    create_mixtures(
        corpus / "speech", corpus / "noise", out_b, num_spks=2, sample_rate=8000,
        modes=("min", "max"), n_mixtures=N_MIX, fractions=FRACTIONS, seed=7, num_workers=2,
    )
    files_a = sorted(os.path.relpath(p, out_a) for p in glob.glob(str(out_a / "**" / "*.wav"), recursive=True))
    files_b = sorted(os.path.relpath(p, out_b) for p in glob.glob(str(out_b / "**" / "*.wav"), recursive=True))
    assert files_a == files_b and len(files_a) == 2 * sum(N_MIX.values()) * 6
    for rel in files_a:
        assert (out_a / rel).read_bytes() == (out_b / rel).read_bytes(), rel
    for split in FRACTIONS:
        name = f"metadata/libri2mix_{split}.csv"
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes()
    # another seed gives other mixtures
    out_c = corpus / "out_c"
    rows_c = mixing.generate_split(
        list_speech(corpus / "speech"), list_noise(corpus / "noise"), out_c, "train", 2, seed=8,
    )
    rows_a = mixing.generate_split(
        list_speech(corpus / "speech"), list_noise(corpus / "noise"), corpus / "out_d", "train", 2, seed=7,
    )
    assert [r["source_1_gain"] for r in rows_c] != [r["source_1_gain"] for r in rows_a]


def test_three_speakers_16k(corpus):
    out = corpus / "out3" / "Libri3Mix"
    utts = list_speech(corpus / "speech")
    rows = mixing.generate_split(utts, list_noise(corpus / "noise"), out, "test", 3, num_spks=3, sample_rate=16000,
                                 modes=("max",), seed=1)
    folder = out / "wav16k" / "max" / "test"
    assert sorted(os.listdir(folder)) == ["mix_both", "mix_clean", "mix_single", "noise", "s1", "s2", "s3"]
    info = _csv(out / "metadata" / "libri3mix_test_info.csv")
    for r, i in zip(rows, info):
        assert len({i["speaker_1_ID"], i["speaker_2_ID"], i["speaker_3_ID"]}) == 3
        p = {s: _read_int(folder / s / f"{r['mixture_ID']}.wav")[0] for s in os.listdir(folder)}
        np.testing.assert_array_equal(p["mix_both"], p["s1"] + p["s2"] + p["s3"] + p["noise"])
        np.testing.assert_array_equal(p["mix_clean"], p["s1"] + p["s2"] + p["s3"])
        assert sf.info(folder / "s1" / f"{r['mixture_ID']}.wav").samplerate == 16000
    assert "source_3_gain" in _csv(out / "metadata" / "libri3mix_test.csv")[0]


def test_gains_reach_targets_and_clip_renormalisation():
    rng = np.random.default_rng(0)
    sr = 8000
    sigs = [
        0.05 * rng.standard_normal(sr),  # white noise
        np.sin(2 * np.pi * 300 * np.arange(sr) / sr) * np.linspace(0, 1, sr),  # ramped tone
        0.3 * rng.standard_normal(int(0.2 * sr)),  # shorter than the 0.4 s gating block
        0.1 * rng.standard_normal(int(1.5 * sr)),  # noise
    ]
    for _ in range(5):
        targets = mixing.draw_loudness_targets(rng, 3)
        assert np.all((targets[:3] >= -33) & (targets[:3] <= -25)) and -38 <= targets[3] <= -30
        g = librimix_gains(sigs, sr, targets)
        for s, k, t in zip(sigs, g.loudness_gains, targets):
            assert abs(measure_loudness(s * k, sr) - t) <= 0.5
        assert g.mixture_scale == 1.0 and not g.source_clipped.any()
        np.testing.assert_allclose(g.gains, g.loudness_gains)

    # loud targets on peaky signals: the mixture would clip -> common factor, peak 0.9
    spiky = [np.zeros(sr) for _ in range(3)]
    for s in spiky:
        s[::800] = 0.5
        s += 0.001 * rng.standard_normal(sr)
    g = librimix_gains(spiky, sr, [-10.0, -10.0, -12.0])
    # the spikes alone would clip: LibriMix rescales such a source to peak 0.9
    assert g.source_clipped.all()
    mix = sum(s * k for s, k in zip(spiky, g.gains))
    assert g.mixture_scale < 1.0
    assert np.isclose(np.abs(mix).max(), 0.9)
    # gains of unclipped sources keep their ratios (one common factor)
    g2 = librimix_gains([0.1 * rng.standard_normal(sr) for _ in range(3)], sr, [-15.0, -15.0, -15.0])
    assert g2.mixture_scale < 1.0 and not g2.source_clipped.any()
    np.testing.assert_allclose(g2.gains, g2.loudness_gains * g2.mixture_scale)


def test_silent_and_quiet_signals():
    sr = 8000
    assert measure_loudness(np.zeros(sr), sr) == -np.inf
    quiet = 1e-5 * np.random.default_rng(1).standard_normal(sr)  # below the -70 LUFS gate
    assert np.isfinite(measure_loudness(quiet, sr))
    with pytest.warns(UserWarning, match="silent"):
        g = librimix_gains([np.zeros(sr), quiet], sr, [-30.0, -30.0], with_noise=False)
    assert g.gains[0] == 1.0 and np.isfinite(g.gains).all()


def test_loop_noise_seam_is_smooth():
    sr = 8000
    n = int(0.3 * sr)
    x = np.sin(2 * np.pi * 37.3 * np.arange(n) / sr)  # not a whole number of cycles
    normal = np.abs(np.diff(x)).max()
    naive = np.tile(x, 4)
    assert np.abs(np.diff(naive)).max() > 3 * normal  # naive looping has a jump
    y = loop_noise(x, 4 * n, sr)
    assert y.shape == (4 * n,)
    assert np.abs(np.diff(y)).max() <= 1.05 * normal
    assert np.abs(y).max() <= 1.0 + 1e-9
    np.testing.assert_array_equal(y[: n - 400], x[: n - 400])  # untouched before the first seam
    np.testing.assert_array_equal(loop_noise(x, 100, sr), x[:100])


def test_splits_and_listing_errors(tmp_path, corpus):
    utts = list_speech(corpus / "speech")
    assert len(utts) == 18 and {s for _, s in utts} == set(SPEAKERS)
    parts = split_speakers(utts, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=3)
    assert {k: len({s for _, s in v}) for k, v in parts.items()} == {"train": 2, "dev": 2, "test": 2}
    assert sum(len(v) for v in parts.values()) == 18
    rev = split_speakers(list(reversed(utts)), FRACTIONS, seed=3)  # input order does not matter
    assert {k: {s for _, s in v} for k, v in rev.items()} == {
        k: {s for _, s in v} for k, v in split_speakers(utts, FRACTIONS, seed=3).items()
    }
    with pytest.raises(MixtureConfigError, match="at least 3"):
        split_speakers(utts, FRACTIONS, num_spks=3)
    with pytest.raises(MixtureConfigError, match="sum to 1"):
        split_speakers(utts, {"train": 0.5})
    nf = split_files([f"n{i}" for i in range(10)], {"a": 0.7, "b": 0.3}, seed=1)
    assert sorted(nf["a"] + nf["b"]) == sorted(f"n{i}" for i in range(10)) and not set(nf["a"]) & set(nf["b"])
    with pytest.raises(MixtureConfigError, match="files"):
        split_files(["one"], {"a": 0.5, "b": 0.5})

    (tmp_path / "empty").mkdir()
    with pytest.raises(MixtureConfigError, match="no audio file"):
        list_speech(tmp_path / "empty")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,spk\nx.wav,a\n")
    with pytest.raises(MixtureConfigError, match="speaker"):
        list_speech(bad)
    good = tmp_path / "good.csv"
    good.write_text("path,speaker\n" + "".join(f"{p},{s}\n" for p, s in utts[:4]))
    assert list_speech(good) == sorted(utts[:4])
    with pytest.raises(MixtureConfigError, match="3 speaker"):
        mixing.generate_split(utts[:9], list_noise(corpus / "noise"), tmp_path / "o", "x", 1, num_spks=4)


def test_cli(corpus, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "create_mixtures_cli", os.path.join(os.path.dirname(__file__), "..", "tools", "create_mixtures.py")
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "L2"
    rc = cli.main([
        "--speech", str(corpus / "speech"), "--noise", str(corpus / "noise"), "--out", str(out),
        "--fractions", "train=0.5", "test=0.5", "--n_train", "1", "--n_test", "1", "--modes", "min",
    ])
    assert rc == 0
    assert len(os.listdir(out / "wav8k" / "min" / "train" / "mix_both")) == 1
    assert len(os.listdir(out / "wav8k" / "min" / "test" / "mix_both")) == 1

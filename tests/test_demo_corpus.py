"""Tests of the demo corpus builder (nass_demo.corpus).

Unit tests need no Debian package; the small end-to-end build skips (naming the
missing packages) when the foundation packages are not installed.
"""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from nass_demo import corpus as dc
from nass.dataio.audio import write_audio

SR = 8000


def _word(rng, seconds, f0):
    """A voiced 'word': harmonic tone with an envelope, wrapped in digital silence."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5)) * np.hanning(t.size)
    pad = np.zeros(int(0.2 * SR))
    return np.concatenate([pad, 0.3 * x + 1e-4 * rng.standard_normal(t.size), pad])


def _f0(x, lo=60, hi=500):
    """Pitch by autocorrelation peak, Hz."""
    x = x - x.mean()
    ac = np.correlate(x, x, "full")[x.size - 1:]
    lags = np.arange(int(SR / hi), int(SR / lo))
    return SR / lags[np.argmax(ac[lags])]


def test_join_prompts_lengths_and_room_tone():
    rng = np.random.default_rng(0)
    words = [_word(rng, rng.uniform(0.3, 1.2), 150) for _ in range(60)]
    utts = dc.join_prompts(words, np.random.default_rng(1), SR)
    assert len(utts) >= 4
    durs = [len(u) / SR for u in utts]
    assert all(3.0 <= d <= 8.0 for d in durs), durs
    # the gaps between words carry room tone near -60 dBFS, never digital zeros
    u = utts[0].astype(np.float64)
    frame = int(0.02 * SR)
    rms = np.sqrt(np.mean(u[: len(u) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    quiet = rms[rms < 0.01]
    assert quiet.size > 3, "expected pauses between joined words"
    assert np.all(quiet > 0), "pauses must not be digital silence"
    level = 20 * np.log10(np.median(quiet))
    assert -70 < level < -50, level
    # the 0.2 s of leading silence of the first word was trimmed: speech within 160 ms
    assert rms[:8].max() > 0.02


def test_join_prompts_deterministic_and_cap():
    rng = np.random.default_rng(0)
    words = [_word(rng, 0.8, 200) for _ in range(80)]
    a = dc.join_prompts(words, np.random.default_rng(5), SR, max_seconds_total=12)
    b = dc.join_prompts(words, np.random.default_rng(5), SR, max_seconds_total=12)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sum(len(u) for u in a) / SR < 12 + 8


def test_split_long_cuts_at_pause():
    rng = np.random.default_rng(0)
    x = np.concatenate([_word(rng, 5.0, 120), _word(rng, 5.0, 120)])
    pieces = dc.split_long(x, SR)
    assert len(pieces) == 2 and sum(map(len, pieces)) == len(x)
    # the cut falls in the quiet stretch between the two words (0.4 s of padding)
    assert abs(len(pieces[0]) - len(x) / 2) < 0.25 * SR


def test_trim_silence():
    x = np.concatenate([np.zeros(4000), 0.5 * np.sin(np.arange(4000)), np.zeros(4000)])
    y = dc.trim_silence(x, SR, margin=0.0)
    assert len(y) == 4000


def test_compress_pauses_shortens_long_silences_only():
    rng = np.random.default_rng(0)
    a, b = _word(rng, 0.5, 150)[int(0.2 * SR):-int(0.2 * SR)], _word(rng, 0.5, 220)[int(0.2 * SR):-int(0.2 * SR)]
    short, long_ = np.zeros(int(0.2 * SR)), np.zeros(int(1.5 * SR))
    # a 0.2 s pause is kept whole
    x = np.concatenate([a, short, b])
    assert len(dc.compress_pauses(x, SR, max_pause=0.3)) == len(x)
    # a 1.5 s pause (plus the faint word edges, > 30 dB down) shrinks to 0.3 s
    x = np.concatenate([a, long_, b])
    y = dc.compress_pauses(x, SR, max_pause=0.3)
    assert 1.2 <= (len(x) - len(y)) / SR <= 1.3
    assert np.allclose(y[: len(a) - 80], a[: len(a) - 80])
    assert np.allclose(y[-(len(b) - 80):], b[-(len(b) - 80):])
    assert dc.compress_pauses(x, SR, max_pause=None) is x


def test_join_prompts_words_are_denser_than_sentences():
    """Short prompts get the short word gap and their inner pauses are compressed."""
    rng = np.random.default_rng(0)
    pause = np.zeros(int(1.0 * SR))
    # word-list recordings: a word, a long pause, a second short sound
    words = [np.concatenate([_word(rng, 0.4, 150), pause, _word(rng, 0.3, 150)]) for _ in range(40)]

    def active(utts):
        frame = int(0.01 * SR)
        fr = []
        for u in utts:
            u = u.astype(np.float64)
            rms = np.sqrt(np.mean(u[: len(u) // frame * frame].reshape(-1, frame) ** 2, axis=1))
            fr.append(np.mean(rms > 0.01))
        return float(np.mean(fr))

    dense = dc.join_prompts(words, np.random.default_rng(1), SR)
    sparse = dc.join_prompts(words, np.random.default_rng(1), SR, max_pause=None,
                             word_gap_seconds=dc.GAP_SECONDS)
    assert active(dense) > active(sparse) + 0.15, (active(dense), active(sparse))


@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_perturb_voice_changes_pitch_and_duration(factor):
    t = np.arange(SR) / SR
    x = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    y = dc.perturb_voice(x, SR, factor)
    assert y.dtype == np.float32
    assert abs(len(y) - len(x) / factor) <= 2
    assert abs(_f0(y) - 200 * factor) < 6, _f0(y)
    assert np.array_equal(dc.perturb_voice(x, SR, 1.0), x)
    with pytest.raises(ValueError):
        dc.perturb_voice(x, SR, 0.0)


def test_pseudo_factors_distinct():
    f = dc.pseudo_factors(3)
    assert len(set(f)) == 3 and 1.0 not in f and min(f) >= 0.85 and max(f) <= 1.15
    assert dc.pseudo_factors(0) == []


def _voices(n_real=30, k=2, n_synth=8):
    v = {}
    for i in range(n_real):
        g = "grp" if i < 6 else f"r{i}"  # six voices of uncertain identity share a group
        v[f"r{i}"] = {"kind": "real", "group": g}
        for j in range(1, k + 1):
            v[f"r{i}-p{j}"] = {"kind": "pseudo", "group": g, "reader": f"r{i}"}
    for i in range(n_synth):
        v[f"s{i}"] = {"kind": "synthetic", "group": f"s{i}"}
    return v


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assign_splits_speaker_disjoint_groups_and_pseudo(seed):
    v = _voices()
    split = dc.assign_splits(v, seed=seed)
    assert set(split) == set(v)
    for spk, info in v.items():
        if info["kind"] == "pseudo":
            assert split[spk] == split[info["reader"]]
    groups = {}
    for spk, info in v.items():
        groups.setdefault(info["group"], set()).add(split[spk])
    assert all(len(s) == 1 for s in groups.values()), "a group was split across splits"
    for s in ("dev", "test"):
        real = [x for x in v if split[x] == s and v[x]["kind"] == "real"]
        assert len(real) >= 2
    assert sum(split[x] == "train" for x in v if v[x]["kind"] == "real") > 15
    assert dc.assign_splits(v, seed=seed) == split


def test_assign_splits_too_few_voices():
    v = {f"r{i}": {"kind": "real", "group": f"r{i}"} for i in range(4)}
    with pytest.raises(ValueError, match="too few"):
        dc.assign_splits(v)


def test_split_noise_disjoint():
    files = {"a": [f"a{i}" for i in range(20)], "b": [f"b{i}" for i in range(5)], "c": ["c0"]}
    s = dc.split_noise(files)
    allf = s["train"] + s["dev"] + s["test"]
    assert sorted(allf) == sorted(sum(files.values(), []))
    assert len(set(allf)) == len(allf)
    for k in ("dev", "test"):
        assert any(f.startswith("a") for f in s[k]) and any(f.startswith("b") for f in s[k])


def test_babble_only_from_training_voices(tmp_path):
    rng = np.random.default_rng(0)
    utts = {}
    for spk in ["t1", "t2", "t3", "t4", "d1", "e1"]:
        p = tmp_path / spk / f"{spk}-0.wav"
        write_audio(str(p), (0.1 * rng.standard_normal(3 * SR)).astype(np.float32), SR)
        utts[spk] = [str(p)]
    out = dc.make_babble(utts, ["t1", "t2", "t3", "t4"], 12, np.random.default_rng(1), seconds=2.0)
    assert len(out) == 12
    for y, spks in out:
        assert set(spks) <= {"t1", "t2", "t3", "t4"} and 3 <= len(spks) <= 4 and len(set(spks)) == len(spks)
        assert y.shape == (2 * SR,) and 0 < np.abs(y).max() <= 0.5 + 1e-6
    with pytest.raises(ValueError):
        dc.make_babble(utts, ["t1", "t2"], 1, rng)


def test_sources_registry_and_missing_package_message(tmp_path):
    assert len(dc.FOUNDATION) == 9
    assert set(dc.select_sources("foundation")) == set(dc.FOUNDATION)
    assert dc.select_sources("all") == list(dc.SPEECH_SOURCES)
    with pytest.raises(ValueError, match="unknown demo speech source"):
        dc.select_sources("nope")
    with pytest.raises(dc.MissingPackageError, match=r"apt-get install .*asterisk-core-sounds-en-wav"):
        dc.check_packages(["asterisk-en"], root=str(tmp_path))
    with pytest.raises(dc.MissingPackageError, match="fillets-ng-data-cs"):
        list(dc.SPEECH_SOURCES["fillets-cs"](str(tmp_path)))


def test_fake_package_tree_listing(tmp_path):
    """Sources read the documented package layouts (a fake tree, no real package)."""
    root = tmp_path
    lvl = root / "usr/share/games/fillets-ng/sound/airplane/cs"
    for name in ["let-v-a.ogg", "let-m-b.ogg", "let-p-c.ogg"]:
        (lvl / name).parent.mkdir(parents=True, exist_ok=True)
        (lvl / name).write_bytes(b"")
    got = sorted(spk for _, spk, _ in dc.SPEECH_SOURCES["fillets-cs"](str(root)))
    assert got == ["fillets-cs-big", "fillets-cs-small"]
    ast = root / "usr/share/asterisk/sounds/en_US_f_Allison"
    for name in ["hello.wav", "beep.wav", "silence/1.wav"]:
        (ast / name).parent.mkdir(parents=True, exist_ok=True)
        (ast / name).write_bytes(b"")
    got = [os.path.basename(p) for p, _, _ in dc.SPEECH_SOURCES["asterisk-en"](str(root))]
    assert got == ["hello.wav"]


def test_build_small_corpus(tmp_path):
    missing = sorted({p for n in dc.FOUNDATION for p in dc.SPEECH_SOURCES[n].packages
                      if not dc.SPEECH_SOURCES[n].installed()}
                     | {p for s in dc.NOISE_SOURCES.values() for p in s.packages if not s.installed()})
    if missing:
        pytest.skip("Debian packages not installed: " + " ".join(missing) + " (run `make demo`)")
    out = str(tmp_path / "demo")
    kw = dict(n_train=20, n_dev=5, n_test=5, sources="foundation", pseudo_speakers=1,
              max_minutes_per_speaker=0.3, n_babble=(3, 2, 2), verbose=False)
    stats = dc.build_demo_corpus(out, **kw)
    root = os.path.join(out, "Libri2Mix", "wav8k", "min")
    for split, n in (("train", 20), ("dev", 5), ("test", 5)):
        for sub in ("mix_both", "mix_clean", "mix_single", "s1", "s2", "noise"):
            files = sorted(os.listdir(os.path.join(root, split, sub)))
            assert len([f for f in files if f.endswith(".wav")]) == n, (split, sub)
        assert stats["splits"][split]["mixtures"] == n
        assert stats["splits"][split]["speakers"]["real"] >= 2
    f = sorted(os.listdir(os.path.join(root, "test", "mix_both")))[0]
    mix, sr = sf.read(os.path.join(root, "test", "mix_both", f), dtype="int16")
    parts = [sf.read(os.path.join(root, "test", s, f), dtype="int16")[0].astype(np.int32)
             for s in ("s1", "s2", "noise")]
    assert sr == 8000 and np.array_equal(mix.astype(np.int32), sum(parts))
    voices = stats["voices"]
    train = {s for s, v in voices.items() if v["split"] == "train"}
    for s, v in voices.items():
        if v["kind"] == "pseudo":
            assert v["split"] == voices[v["reader"]]["split"]
        if v["split"] != "train":
            assert not any(s == t for t in train)
    assert len([v for v in voices.values() if v["kind"] == "real"]) == 11
    with open(os.path.join(out, "corpus_stats.json")) as fh:
        assert json.load(fh)["options"]["n_train"] == 20
    # a second call with the same options is a no-op
    mtime = os.path.getmtime(os.path.join(out, "corpus_stats.json"))
    again = dc.build_demo_corpus(out, **kw)
    assert again == stats and os.path.getmtime(os.path.join(out, "corpus_stats.json")) == mtime

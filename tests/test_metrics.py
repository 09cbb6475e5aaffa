"""Metrics and the manifest evaluation loop (nass.metrics, nass.evaluation)."""

import csv
import math
import os
import re
import warnings

import numpy as np
import pytest
import torch

from nass.dataio.audio import read_audio, write_audio
from nass.metrics import sdr_mir_eval, separation_metrics

SR = 8000


def _sources(n=2000, seed=0):
    """Two band-limited noises (below 700 Hz / above 1600 Hz): a well-conditioned BSS Eval
    problem (pure tones make mir_eval's Gram matrix singular and slow) that a fixed
    1 kHz band split separates."""
    from scipy.signal import firwin, lfilter

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n + 200, 2))
    s1 = lfilter(firwin(101, 700, fs=SR), 1, w[:, 0])[200:]
    s2 = 0.5 * lfilter(firwin(101, 1600, fs=SR, pass_zero=False), 1, w[:, 1])[200:]
    return np.stack([s1, s2], axis=1)


def test_perfect_estimates_give_large_improvement():
    s = _sources()
    m = separation_metrics(s.sum(1), s, s, SR)
    assert m["si-snr"] > 60 and m["si-snr_i"] > 55
    assert m["sdr_i"] > 40
    assert m["perm"] == (0, 1)
    # the mixture scores poorly against each reference: it holds the other speaker too
    assert m["mix_si-snr"] < 5
    assert m["si-snr_i"] == pytest.approx(m["si-snr"] - m["mix_si-snr"])


def test_swapped_estimates_score_like_aligned_ones():
    s = _sources()
    rng = np.random.default_rng(1)
    est = s + 0.1 * rng.standard_normal(s.shape)
    aligned = separation_metrics(s.sum(1), est, s, SR)
    swapped = separation_metrics(s.sum(1), est[:, ::-1], s, SR)
    assert swapped["perm"] == (1, 0)
    for key in ("si-snr", "si-snr_i", "sdr", "sdr_i", "mix_si-snr"):
        assert swapped[key] == pytest.approx(aligned[key], abs=1e-9), key
    assert 5 < aligned["si-snr"] < 40


def test_sdr_matches_mir_eval():
    import mir_eval.separation

    s = _sources()
    rng = np.random.default_rng(2)
    est = s + 0.2 * rng.standard_normal(s.shape)
    mix = s.sum(1)
    m = separation_metrics(mix, est, s, SR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref_sdr = mir_eval.separation.bss_eval_sources(s.T, est.T, compute_permutation=False)[0]
        mix_sdr = mir_eval.separation.bss_eval_sources(s.T, np.stack([mix, mix]), compute_permutation=False)[0]
    assert m["sdr"] == pytest.approx(ref_sdr.mean(), abs=1e-6)
    assert m["sdr_i"] == pytest.approx((ref_sdr - mix_sdr).mean(), abs=1e-6)
    sdr, perm = sdr_mir_eval(est[:, ::-1].T, s.T)
    assert perm.tolist() == [1, 0] and sdr == pytest.approx(ref_sdr, abs=1e-6)


def test_all_zero_reference_gives_nan_sdr_not_nan_si_snr():
    s = _sources()
    s[:, 1] = 0.0
    with pytest.warns(UserWarning, match="utt-zero.*SDR"):
        m = separation_metrics(s.sum(1), s + 0.01, s, SR, utt_id="utt-zero")
    assert math.isfinite(m["si-snr"]) and math.isfinite(m["si-snr_i"]) and math.isfinite(m["mix_si-snr"])
    assert math.isnan(m["sdr"]) and math.isnan(m["sdr_i"])


def test_noise_si_snr_and_shape_errors():
    s = _sources()
    noise = 0.1 * np.random.default_rng(3).standard_normal(len(s))
    m = separation_metrics(s.sum(1) + noise, torch.from_numpy(s), s, SR, est_noise=noise, noise=noise)
    assert m["noise_si-snr"] > 60
    with pytest.raises(ValueError, match="time, num_spks"):
        separation_metrics(s.sum(1), s[:100], s, SR)


@pytest.mark.filterwarnings("ignore:short-utt. SDR")
def test_pesq_estoi_values_and_nan_on_silence():
    n = SR  # 1 s
    t = np.arange(n) / SR
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(float)
    s1 = env * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 440 * t))
    s2 = (1 - env) * 0.5 * np.sin(2 * np.pi * 700 * t)
    s = np.stack([s1, s2], 1)
    m = separation_metrics(s.sum(1), s, s, SR, pesq_estoi=True)
    assert m["pesq"] > 4.0  # identical signals: PESQ-NB near its maximum (4.5)
    assert m["estoi"] > 0.99
    short = s[:800]  # 0.1 s: PESQ needs at least 0.25 s (BufferTooShortError)
    with pytest.warns(UserWarning, match="short-utt: PESQ could not be computed"):
        m = separation_metrics(short.sum(1), short, short, SR, pesq_estoi=True, utt_id="short-utt")
    assert math.isnan(m["pesq"]) and m["si-snr"] > 40


# ------------------------------------------------------------------ evaluate_manifest
def _band_split(mix):
    """Deterministic stand-in separator: low band / high band of the mixture, swapped."""
    from scipy.signal import firwin

    taps = 101
    h = torch.tensor(firwin(taps, 1000, fs=SR), dtype=torch.float32)
    low = torch.nn.functional.conv1d(mix.unsqueeze(1).float(), h.view(1, 1, -1), padding=taps // 2)[:, 0]
    est = torch.stack([mix - low, low], dim=-1)  # high first: deliberately mis-ordered
    return est, 0.1 * mix


def _write_split(folder, ids, n=2000):
    rows = []
    for k, utt in enumerate(ids):
        s = _sources(n, seed=k) * 0.4
        d = os.path.join(folder, f"u{k}")
        paths = {}
        for name, wav in (("mix", s.sum(1)), ("s1", s[:, 0]), ("s2", s[:, 1])):
            paths[name] = os.path.join(d, name + ".wav")
            write_audio(paths[name], wav.astype("float32"), SR, subtype="FLOAT")
        rows.append([utt, n / SR, paths["mix"], paths["s1"], paths["s2"], "", ""])
    csv_path = os.path.join(folder, "test.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "duration", "mix_wav", "s1_wav", "s2_wav", "noise_wav", "mix_clean_wav"])
        w.writerows(rows)
    return csv_path


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_manifest_serial_and_parallel(tmp_path, capsys):
    from nass.dataio.paths import safe_name
    from nass.evaluation import evaluate_manifest

    ids = ["a", "../../evil", "c/d"]
    manifest = _write_split(str(tmp_path / "data"), ids)
    out_serial = tmp_path / "out" / "serial"
    out_par = tmp_path / "out" / "par"
    means = evaluate_manifest(_band_split, manifest, str(out_serial), 2, SR, num_workers=0, save_examples=2)
    means_par = evaluate_manifest(_band_split, manifest, str(out_par), 2, SR, num_workers=2, save_examples=0)
    printed = capsys.readouterr().out
    assert "mixture SI-SNR" in printed and "SI-SNRi" in printed

    rows = _read_csv(out_serial / "test_metrics.csv")
    assert list(rows[0]) == ["ID", "si-snr", "si-snr_i", "sdr", "sdr_i", "mix_si-snr", "noise_si-snr"]
    assert [r["ID"] for r in rows] == ids + ["mean"]
    assert _read_csv(out_par / "test_metrics.csv") == rows  # parallel == serial, to the digit
    si = np.array([float(r["si-snr_i"]) for r in rows[:3]])
    assert float(rows[3]["si-snr_i"]) == pytest.approx(si.mean(), abs=1e-3)
    assert means["si-snr_i"] == pytest.approx(means_par["si-snr_i"]) and means["si-snr_i"] > 10
    assert means["num_utterances"] == 3 and math.isnan(means["noise_si-snr"])  # no noise reference

    # examples: the first two, estimates re-ordered to match the references
    ex = out_serial / "examples"
    assert sorted(os.listdir(ex)) == [safe_name("../../evil"), "a"]
    assert safe_name("../../evil").startswith("___.._evil-")
    assert sorted(os.listdir(ex / "a")) == ["mix.wav", "noise_est.wav", "s1.wav", "s1_ref.wav", "s2.wav", "s2_ref.wav"]
    est1, _ = read_audio(str(ex / "a" / "s1.wav"))
    ref1, _ = read_audio(str(ex / "a" / "s1_ref.wav"))
    assert np.corrcoef(est1[200:-200], ref1[200:-200])[0, 1] > 0.95
    # nothing escaped out_dir: the only entries of tmp_path are ours
    assert sorted(os.listdir(tmp_path)) == ["data", "out"]
    assert not (out_par / "examples").exists() or not os.listdir(out_par / "examples")


def test_evaluate_manifest_denoise_only_reference(tmp_path, capsys):
    """Noisy input with a known clean mixture: ``mix_clean_si-snr_i`` is what the clean
    mixture scores as every estimate, so a "separator" returning it matches it exactly
    and is told that it has not separated the speakers; clean input gets no such column."""
    from nass.evaluation import evaluate_manifest
    from nass.losses.si_snr import si_snr

    n, rng = 2000, np.random.default_rng(5)
    rows, clean_mix = [], {}
    for k in range(2):
        s = _sources(n, seed=10 + k) * 0.4
        noise = 0.3 * rng.standard_normal(n)
        d = tmp_path / f"u{k}"
        paths = {}
        for name, wav in (("mix", s.sum(1) + noise), ("s1", s[:, 0]), ("s2", s[:, 1]), ("noise", noise),
                          ("mix_clean", s.sum(1))):
            paths[name] = str(d / f"{name}.wav")
            write_audio(paths[name], wav.astype("float32"), SR, subtype="FLOAT")
        clean_mix[paths["mix"]] = s.sum(1)
        rows.append([f"u{k}", n / SR, paths["mix"], paths["s1"], paths["s2"], paths["noise"], paths["mix_clean"]])
    noisy = tmp_path / "noisy.csv"
    clean = tmp_path / "clean.csv"
    for path, table in ((noisy, rows), (clean, [r[:2] + [r[6]] + r[3:6] + [r[6]] for r in rows])):
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ID", "duration", "mix_wav", "s1_wav", "s2_wav", "noise_wav", "mix_clean_wav"])
            w.writerows(table)

    calls = iter(torch.from_numpy(clean_mix[r[2]]).float().unsqueeze(0) for r in rows)

    def denoise_only(mix):  # the clean mixture as both estimates
        c = next(calls)
        return torch.stack([c, c], dim=-1), None

    means = evaluate_manifest(denoise_only, str(noisy), str(tmp_path / "o"), 2, SR, num_workers=0, save_examples=0)
    out = capsys.readouterr().out
    table = _read_csv(tmp_path / "o" / "test_metrics.csv")
    assert list(table[0])[-1] == "mix_clean_si-snr_i"
    for row, r in zip(table, rows):
        refs = torch.from_numpy(np.stack([read_audio(r[3])[0], read_audio(r[4])[0]])).double()
        mix = torch.from_numpy(read_audio(r[2])[0]).double().expand(2, -1)
        cm = torch.from_numpy(clean_mix[r[2]]).double().expand(2, -1)
        expected = float((si_snr(cm, refs) - si_snr(mix, refs)).mean())
        assert float(row["mix_clean_si-snr_i"]) == pytest.approx(expected, abs=1e-3)
        assert float(row["si-snr_i"]) == pytest.approx(expected, abs=1e-3)
    assert means["mix_clean_si-snr_i"] > 1  # the noise cost the mixture more than 1 dB
    assert "denoise-only reference" in out
    # the noisy mixture itself as both estimates: below the reference, and told so
    evaluate_manifest(lambda m: (torch.stack([m, m], dim=-1), None), str(noisy), str(tmp_path / "m"), 2, SR,
                      num_workers=0, save_examples=0)
    assert "does not show that it separates the speakers" in capsys.readouterr().out

    evaluate_manifest(lambda m: (torch.stack([m, m], dim=-1), None), str(clean), str(tmp_path / "c"), 2, SR,
                      num_workers=0, save_examples=0)
    assert "mix_clean_si-snr_i" not in _read_csv(tmp_path / "c" / "test_metrics.csv")[0]
    assert "denoise-only" not in capsys.readouterr().out


def test_evaluate_manifest_rejects_wrong_output_shape(tmp_path):
    from nass.evaluation import evaluate_manifest

    manifest = _write_split(str(tmp_path), ["x"], n=800)
    with pytest.raises(ValueError, match="x: separate_fn returned"):
        evaluate_manifest(lambda m: (m.unsqueeze(-1), None), manifest, str(tmp_path / "o"), 2, SR, num_workers=0)


def test_fast_bss_eval_backend_agrees_with_mir_eval():
    """The faster SDR gives mir_eval's values (issue 7: within 0.05 dB), also for poor estimates."""
    from nass.metrics import sdr_fast_bss_eval, sdr_mir_eval

    rng = np.random.default_rng(7)
    ref = rng.standard_normal((2, 6000))
    for est in (ref + 0.1 * rng.standard_normal(ref.shape), 0.5 * ref + 0.4 * ref[::-1] + rng.standard_normal(ref.shape)):
        fast = sdr_fast_bss_eval(est, ref)
        slow, _ = sdr_mir_eval(est, ref, compute_permutation=False)
        assert np.abs(fast - slow).max() < 0.05
    mix = ref.sum(0)
    a = separation_metrics(mix, ref.T[:, ::-1] + 0.05 * rng.standard_normal((6000, 2)), ref.T, 8000)
    b = separation_metrics(mix, ref.T[:, ::-1] + 0.05 * rng.standard_normal((6000, 2)), ref.T, 8000,
                           sdr_backend="fast_bss_eval")
    assert abs(a["sdr_i"] - b["sdr_i"]) < 0.1  # different noise draws, same scale
    with pytest.raises(ValueError, match="sdr_backend"):
        separation_metrics(mix, ref.T, ref.T, 8000, sdr_backend="bss")


def test_separation_metrics_mix_clean_must_match_the_mixture():
    s = _sources(1000)
    noise = 0.5 * np.random.default_rng(1).standard_normal(1000)
    m = separation_metrics(s.sum(1) + noise, s, s, SR, mix_clean=s.sum(1))
    assert m["mix_clean_si-snr_i"] > 1  # removing the noise alone gains over the noisy mixture
    with pytest.raises(ValueError, match=r"\(u7\): mix_clean"):
        separation_metrics(s.sum(1), s, s, SR, mix_clean=s[:500].sum(1), utt_id="u7")


def test_safe_name_never_merges_two_ids():
    # two IDs must never share a file name: the s1/s2 cache files of a long (e.g. 3-speaker
    # demo-corpus) ID differ only after 120 characters; "a b" and "a_b" sanitise alike
    from nass.dataio.paths import safe_name

    long_id = "-".join(["hedgewars.default-hedgewars-default-0001"] * 4)
    ids = [long_id + "_s1", long_id + "_s2", "a b", "a_b", "a/b", ".hidden", "_hidden", "..", "x" * 121]
    names = [safe_name(i) for i in ids]
    assert len(set(names)) == len(ids), names
    assert all(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,119}", n) for n in names), names
    assert safe_name("spk1-0001_spk2-0002") == "spk1-0001_spk2-0002"  # ordinary IDs stay readable
    assert safe_name(long_id + "_s1") == safe_name(long_id + "_s1")  # deterministic


def test_segment_permutation_switches_finds_a_swap_and_what_reordering_recovers():
    from nass.metrics import segment_permutation_switches

    rng = np.random.default_rng(3)
    s = rng.standard_normal((16000, 2))
    good = s + 0.1 * rng.standard_normal(s.shape)  # ~20 dB, one speaker order throughout
    m = segment_permutation_switches(good[:, ::-1], s, SR, segment_seconds=0.5)
    assert (m["segments"], m["switched"], m["perm"]) == (4, 0, (1, 0))
    assert m["segment_oracle_si-snr"] == m["si-snr"] > 15
    swapped = good.copy()
    swapped[12000:] = good[12000:, ::-1]  # the last quarter swaps outputs
    m = segment_permutation_switches(swapped, s, SR, segment_seconds=0.5)
    assert (m["segments"], m["switched"]) == (4, 1)
    assert m["si-snr"] < 10 < 15 < m["segment_oracle_si-snr"]


def test_segment_permutation_switches_skips_segments_where_a_speaker_is_silent():
    from nass.metrics import segment_permutation_switches

    rng = np.random.default_rng(4)
    s = rng.standard_normal((16000, 2))
    s[:8000, 1] = 0  # speaker 2 starts after 1 s: the first two 0.5 s segments do not count
    est = s.copy()
    est[8000:12000] = s[8000:12000, ::-1]
    m = segment_permutation_switches(est, s, SR, segment_seconds=0.5)
    assert (m["segments"], m["switched"]) == (2, 1)
    # a swap of less than margin_db is not a switch: near-identical outputs
    both = np.repeat(s.sum(1, keepdims=True), 2, axis=1)
    assert segment_permutation_switches(both, s, SR, segment_seconds=0.5)["switched"] == 0
    with pytest.raises(ValueError, match="differ"):
        segment_permutation_switches(s[:100], s, SR)
    with pytest.raises(ValueError, match="under 2 samples"):
        segment_permutation_switches(s, s, SR, segment_seconds=1e-5)
    with pytest.raises(ValueError, match=r"segment_permutation_switches: est_sources must be \[time, num_spks\]"):
        segment_permutation_switches(s[:, 0], s, SR)

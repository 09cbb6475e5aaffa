"""The LibriMix recipe applied to any speech and noise corpora: a mixture generator.

Given a folder (or CSV) of speech utterances grouped by speaker and a folder of
noise recordings, this module writes a corpus laid out exactly as Libri2Mix /
Libri3Mix::

    <out_root>/metadata/libri{N}mix_{split}.csv          # gains, one row per mixture
    <out_root>/metadata/libri{N}mix_{split}_info.csv     # speaker IDs
    <out_root>/wav{sr//1000}k/{mode}/{split}/{mix_clean,mix_both,mix_single,s1,s2[,s3],noise}/<mixture_ID>.wav
    <out_root>/wav{sr//1000}k/{mode}/metadata/mixture_{split}_{mix_clean,mix_both,mix_single}.csv

The recipe follows LibriMix (Cosentino et al., "LibriMix: An Open-Source Dataset
for Generalizable Speech Separation", 2020, arXiv 2005.11262; repository
JorisCos/LibriMix, scripts ``create_librimix_metadata.py`` and
``create_librimix_from_metadata.py``), facts only:

* every speech source is normalised to an integrated loudness drawn from
  U[-33, -25] LUFS and the noise to one drawn from U[-38, -30] LUFS, measured with
  pyloudnorm (ITU-R BS.1770-4 K-weighting and gating);
* a source that would clip on its own (peak >= 1) is instead scaled to peak 0.9;
* if the mixture would clip (peak > 0.9), every part is scaled by the same factor
  so that the mixture peak is 0.9;
* ``min`` mode crops every part to the shortest utterance, ``max`` zero-pads to the
  longest; the gains are computed once (on the ``max`` signals) and shared by both
  modes;
* a noise shorter than needed is looped with a cross-fade;
* resampling uses a polyphase filter (``scipy.signal.resample_poly``);
* mixture IDs are the utterance names joined by ``_`` (``19-198-0001_26-495-0004``).

Differences from LibriMix, and why:

* loudness is measured at the *output* rate on the resampled signals (LibriMix
  measures at 16 kHz before resampling), because arbitrary corpora mix rates and the
  written files should carry the drawn loudness;
* the clipping check covers every written mixture (``mix_both``, ``mix_clean`` and
  ``mix_single``), not only ``mix_both``, so no written file can clip;
* every part is quantised to the 16-bit grid *before* the mixtures are summed, so
  ``mix_both == s1 + s2 (+ s3) + noise`` and ``mix_clean == s1 + s2 (+ s3)`` hold
  exactly, sample for sample, in the written files (LibriMix quantises each file
  separately, leaving +-1 LSB errors);
* the noise starts at a random offset (LibriMix starts at 0) and the loop
  cross-fade is a 50 ms raised cosine (LibriMix uses a 1 s Hann window);
* utterances are drawn with replacement across mixtures (a fixed count per split is
  requested), avoiding repeated utterance sets when possible.

The recipe is three modules: :mod:`nass.dataio.sources` (listing the speech and noise,
disjoint splits, reading sources at the output rate), :mod:`nass.dataio.loudness`
(loudness, gains, noise looping, the 16-bit grid) and this one, the generator (planning,
mixing and writing the corpus). The names of the other two stay importable from here.

Randomness: each mixture has its own generator,
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(crc32(split), index)))``,
so its content does not depend on the processing order or on the number of
worker processes; the same arguments give bit-identical files.
"""

import csv
import hashlib
import os
import re
import zlib
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import soundfile as sf

from nass.dataio.audio import atomic_write, fit_samples
from nass.dataio.audio import resample_polyphase as resample
from nass.dataio.loudness import (  # noqa: F401 (re-exported: the old import path)
    BLOCK_SECONDS,
    CROSSFADE_SECONDS,
    MAX_AMP,
    NOISE_LUFS,
    SPEECH_LUFS,
    LoudnessGains,
    draw_loudness_targets,
    librimix_gains,
    loop_noise,
    measure_loudness,
    quantize_int16,
)
from nass.dataio.sources import (  # noqa: F401 (re-exported: the old import path)
    AUDIO_EXTENSIONS,
    DEFAULT_FRACTIONS,
    MixtureConfigError,
    draw_utterances,
    first_few,
    list_noise,
    list_speech,
    read_noise,
    read_speech,
    split_files,
    split_speakers,
)

# the names of the recipe's three modules, importable from here as before the split
__all__ = [
    "MixtureConfigError",
    "DEFAULT_FRACTIONS",
    "SPEECH_LUFS",
    "NOISE_LUFS",
    "MAX_AMP",
    "list_speech",
    "list_noise",
    "split_speakers",
    "split_files",
    "resample",
    "measure_loudness",
    "draw_loudness_targets",
    "LoudnessGains",
    "librimix_gains",
    "loop_noise",
    "quantize_int16",
    "generate_split",
    "create_mixtures",
]

MIXTURE_TYPES = ("mix_clean", "mix_both", "mix_single")


def _write_int16(path, q, sample_rate):
    with atomic_write(path) as tmp:
        sf.write(tmp, q, sample_rate, subtype="PCM_16", format="WAV")


def _id_part(path, speaker):
    stem = os.path.splitext(os.path.basename(path))[0]
    spk = re.sub(r"[^A-Za-z0-9.]", ".", str(speaker))
    stem = re.sub(r"[^A-Za-z0-9.\-]", ".", stem)
    return stem if stem.startswith(spk + "-") else f"{spk}-{stem}"


def _mixture_id(parts):
    mid = "_".join(parts)
    if len(mid) > 150:  # file-name limit; LibriMix hashes long IDs the same way
        mid = hashlib.md5(mid.encode()).hexdigest()
    return mid


def _mixture_rng(seed, split, index):
    key = (zlib.crc32(str(split).encode()), int(index))
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def _plan_split(utterances, noise_files, split, n_mixtures, num_spks, seed):
    speakers = sorted({s for _, s in utterances})
    if len(speakers) < num_spks:
        raise MixtureConfigError(
            f"split {split!r}: {len(speakers)} speaker(s) ({first_few(speakers)}) but "
            f"num_spks={num_spks} different speakers are needed per mixture. Add speakers."
        )
    if not noise_files:
        raise MixtureConfigError(f"split {split!r}: no noise file. Give at least one noise file per split.")
    spk_pos = {s: i for i, s in enumerate(speakers)}
    spk_idx = np.array([spk_pos[s] for _, s in utterances])
    seen, ids, plans = set(), set(), []
    for index in range(int(n_mixtures)):
        rng = _mixture_rng(seed, split, index)
        for _ in range(10):  # avoid repeating an utterance set when the corpus allows it
            utt = draw_utterances(rng, spk_idx, num_spks)
            if frozenset(utt) not in seen:
                break
        seen.add(frozenset(utt))
        noise = int(rng.integers(len(noise_files)))
        noise_u = float(rng.random())
        targets = draw_loudness_targets(rng, num_spks)
        mid = _mixture_id([_id_part(*utterances[j]) for j in utt])
        if mid in ids:
            mid = f"{mid}_{index}"
        ids.add(mid)
        plans.append(
            {
                "mixture_ID": mid,
                "sources": [utterances[j][0] for j in utt],
                "speakers": [utterances[j][1] for j in utt],
                "noise": noise_files[noise],
                "noise_u": noise_u,
                "targets": targets,
            }
        )
    return plans


def _make_mixture(plan, sample_rate):
    """Quantised parts (int16, max length) and the metadata row of one planned mixture."""
    sources = [read_speech(p, sample_rate) for p in plan["sources"]]
    lengths = [s.size for s in sources]
    n_max = max(lengths)
    noise, offset = read_noise(plan["noise"], n_max, sample_rate, plan["noise_u"])
    g = librimix_gains(sources + [noise], sample_rate, plan["targets"], with_noise=True)
    parts = [quantize_int16(fit_samples(s * k, n_max)) for s, k in zip(sources + [noise], g.gains)]
    row = {"mixture_ID": plan["mixture_ID"]}
    for k, (p, gain) in enumerate(zip(plan["sources"], g.gains[:-1])):
        row[f"source_{k + 1}_path"] = p
        row[f"source_{k + 1}_gain"] = float(gain)
    row.update(
        noise_path=plan["noise"],
        noise_gain=float(g.gains[-1]),
        length=n_max,
        noise_offset=offset,
    )
    return parts, min(lengths), row


def _mix_int16(parts, name):
    total = np.sum([p.astype(np.int32) for p in parts], axis=0)
    if total.size and (total.max() > 32767 or total.min() < -32768):
        raise RuntimeError(f"{name}: mixture overflows 16 bits after quantisation; lower max_amp")
    return total.astype(np.int16)


def _write_mixture(args):
    plan, sample_rate, num_spks, out_root, split, modes = args
    parts, n_min, row = _make_mixture(plan, sample_rate)
    mid = plan["mixture_ID"]
    written = {}
    for mode in modes:
        n = n_min if mode == "min" else row["length"]
        p = [q[:n] for q in parts]
        folder = os.path.join(out_root, f"wav{sample_rate // 1000}k", mode, split)
        files = {}
        for k in range(num_spks):
            files[f"s{k + 1}"] = p[k]
        files["noise"] = p[-1]
        files["mix_clean"] = _mix_int16(p[:-1], mid)
        files["mix_both"] = _mix_int16(p, mid)
        files["mix_single"] = _mix_int16([p[0], p[-1]], mid)
        paths = {}
        for sub, q in files.items():
            path = os.path.abspath(os.path.join(folder, sub, mid + ".wav"))
            _write_int16(path, q, sample_rate)
            paths[sub] = path
        written[mode] = (paths, n)
    return row, written


def _write_csv(path, header, rows):
    with atomic_write(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=header)
            w.writeheader()
            for r in rows:
                w.writerow({k: r[k] for k in header})


def generate_split(
    utterances,
    noise_files,
    out_root,
    split,
    n_mixtures,
    num_spks=2,
    sample_rate=8000,
    modes=("min",),
    seed=0,
    num_workers=1,
):
    """Generate one split of a LibriMix-shaped noisy corpus.

    Each mixture takes ``num_spks`` utterances of different speakers (the first
    drawn uniformly among all utterances, each next one among the utterances of the
    speakers not yet chosen) and a noise file (random offset; looped with a 50 ms
    cross-fade if short). Every input is resampled to ``sample_rate``
    (:func:`resample`), gains follow :func:`librimix_gains`, every part is quantised
    to 16 bits and the mixtures are built from the quantised parts, so
    ``mix_both == s1 + ... + noise``, ``mix_clean == s1 + ...`` and
    ``mix_single == s1 + noise`` exactly in the written PCM-16 files.

    Parameters
    ----------
    utterances : list of (str, str)
        ``(path, speaker)`` of this split (:func:`list_speech` / :func:`split_speakers`).
    noise_files : list of str
        Noise files of this split.
    out_root : str
        Corpus root, e.g. ``.../Libri2Mix``.
    split : str
        Split name (folder name), e.g. ``"train"``.
    n_mixtures : int
        Number of mixtures.
    num_spks : int
        Speakers per mixture (2 or 3 for Libri2Mix / Libri3Mix; any >= 1 works).
    sample_rate : int
        Output rate in Hz (a multiple of 1000; the folder is ``wav{sample_rate//1000}k``).
    modes : tuple of str
        Any of ``"min"`` (crop to the shortest utterance) and ``"max"`` (zero-pad to
        the longest).
    seed : int
        Base seed; mixture ``i`` of split ``s`` uses its own derived generator.
    num_workers : int
        Processes (``1``: in this process). The output does not depend on it.

    Returns
    -------
    list of dict
        The rows of ``metadata/libri{N}mix_{split}.csv``: ``mixture_ID``,
        ``source_k_path``, ``source_k_gain`` (k = 1..num_spks), ``noise_path``,
        ``noise_gain``, ``length`` (samples at ``sample_rate`` of the ``max`` mixture),
        ``noise_offset`` (first noise sample used, at the noise file's own rate, in
        the looped noise when it had to be looped). Gains apply to the inputs
        resampled to ``sample_rate``.

    Raises
    ------
    MixtureConfigError
        Fewer speakers than ``num_spks``, no noise, bad mode or rate.
    nass.dataio.audio.AudioError
        Unreadable, empty, non-finite or multi-channel speech file (noise files may
        be multi-channel: the first channel is used, as LibriMix does with WHAM!).

    Example
    -------
    >>> import os, tempfile
    >>> from nass.dataio.audio import write_audio
    >>> d = tempfile.mkdtemp(); rng = np.random.default_rng(0)
    >>> utts = []
    >>> for spk in ("a", "b"):
    ...     p = os.path.join(d, "speech", spk, spk + "-1.wav")
    ...     write_audio(p, 0.1 * rng.standard_normal(8000), 16000); utts.append((p, spk))
    >>> write_audio(os.path.join(d, "n.wav"), 0.1 * rng.standard_normal(4000), 16000)
    >>> rows = generate_split(utts, [os.path.join(d, "n.wav")], os.path.join(d, "L2"), "test", 1)
    >>> sorted(rows[0]["mixture_ID"].split("_")), rows[0]["length"]
    (['a-1', 'b-1'], 4000)
    >>> sorted(os.listdir(os.path.join(d, "L2", "wav8k", "min", "test")))
    ['mix_both', 'mix_clean', 'mix_single', 'noise', 's1', 's2']
    """
    modes = tuple(modes)
    bad = [m for m in modes if m not in ("min", "max")]
    if bad or not modes:
        raise MixtureConfigError(f"modes must be among ('min', 'max'), got {modes}.")
    if int(sample_rate) <= 0 or int(sample_rate) % 1000:
        raise MixtureConfigError(f"sample_rate must be a positive multiple of 1000 Hz, got {sample_rate}.")
    if int(num_spks) < 1:
        raise MixtureConfigError(f"num_spks must be >= 1, got {num_spks}.")
    sample_rate, num_spks = int(sample_rate), int(num_spks)
    out_root = os.path.abspath(os.fspath(out_root))
    plans = _plan_split(list(utterances), sorted(noise_files), split, n_mixtures, num_spks, seed)
    jobs = [(p, sample_rate, num_spks, out_root, split, modes) for p in plans]
    from tqdm import tqdm

    bar = dict(total=len(jobs), desc=f"{split} mixtures", unit="mix", disable=None)  # bar on a terminal only
    if num_workers and num_workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=int(num_workers)) as ex:
            mapped = ex.map(_write_mixture, jobs, chunksize=max(1, len(jobs) // (4 * num_workers)))
            results = list(tqdm(mapped, **bar))
    else:
        results = [_write_mixture(j) for j in tqdm(jobs, **bar)]

    rows = [r for r, _ in results]
    src_cols = [c for k in range(num_spks) for c in (f"source_{k + 1}_path", f"source_{k + 1}_gain")]
    header = ["mixture_ID"] + src_cols + ["noise_path", "noise_gain", "length", "noise_offset"]
    md = os.path.join(out_root, "metadata")
    _write_csv(os.path.join(md, f"libri{num_spks}mix_{split}.csv"), header, rows)
    info = [{"mixture_ID": p["mixture_ID"], **{f"speaker_{k + 1}_ID": s for k, s in enumerate(p["speakers"])}} for p in plans]
    _write_csv(
        os.path.join(md, f"libri{num_spks}mix_{split}_info.csv"),
        ["mixture_ID"] + [f"speaker_{k + 1}_ID" for k in range(num_spks)],
        info,
    )
    for mode in modes:
        mode_md = os.path.join(out_root, f"wav{sample_rate // 1000}k", mode, "metadata")
        for mix in MIXTURE_TYPES:
            if mix == "mix_single":
                srcs = ["s1"]
            else:
                srcs = [f"s{k + 1}" for k in range(num_spks)]
            cols = ["mixture_ID", "mixture_path"] + [f"source_{s[1:]}_path" for s in srcs]
            if mix != "mix_clean":
                cols.append("noise_path")
            cols.append("length")
            mrows = []
            for row, written in results:
                paths, n = written[mode]
                r = {"mixture_ID": row["mixture_ID"], "mixture_path": paths[mix], "noise_path": paths["noise"], "length": n}
                r.update({f"source_{s[1:]}_path": paths[s] for s in srcs})
                mrows.append(r)
            _write_csv(os.path.join(mode_md, f"mixture_{split}_{mix}.csv"), cols, mrows)
    return rows


def create_mixtures(
    speech,
    noise,
    out_root,
    num_spks=2,
    sample_rate=8000,
    modes=("min",),
    n_mixtures=None,
    fractions=None,
    seed=0,
    num_workers=1,
):
    """End to end: list, split speakers and noise disjointly, generate every split.

    Parameters
    ----------
    speech : str
        Speech folder (one sub-folder per speaker) or CSV ``path,speaker``
        (:func:`list_speech`).
    noise : str
        Noise folder or CSV with a ``path`` column (:func:`list_noise`).
    out_root : str
        Corpus root, e.g. ``.../Libri2Mix``.
    num_spks, sample_rate, modes, seed, num_workers
        As :func:`generate_split`.
    n_mixtures : dict, optional
        Split -> number of mixtures. Default: for each split, its number of
        utterances divided by ``num_spks`` (each utterance used about once, as in
        LibriMix's training sets), at least 1. Splits missing from the dict get
        that default too.
    fractions : dict, optional
        Split -> fraction of speakers and of noise files (default train 0.8, dev 0.1,
        test 0.1).
    seed : int
        Seeds the speaker split, the noise split and every mixture.

    Returns
    -------
    dict
        Split -> list of metadata rows (:func:`generate_split`).

    Raises
    ------
    MixtureConfigError
        Unknown split in ``n_mixtures``, too few speakers or noise files.

    Example
    -------
    >>> import os, tempfile
    >>> from nass.dataio.audio import write_audio
    >>> d = tempfile.mkdtemp(); rng = np.random.default_rng(0)
    >>> for spk in "abcd":
    ...     write_audio(os.path.join(d, "sp", spk, spk + "-1.wav"), 0.1 * rng.standard_normal(4000), 8000)
    >>> for i in range(2):
    ...     write_audio(os.path.join(d, "no", f"n{i}.wav"), 0.1 * rng.standard_normal(4000), 8000)
    >>> out = create_mixtures(os.path.join(d, "sp"), os.path.join(d, "no"), os.path.join(d, "L2"),
    ...                       fractions={"train": 0.5, "test": 0.5})
    >>> {k: len(v) for k, v in out.items()}
    {'train': 1, 'test': 1}
    """
    fractions = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    n_mixtures = dict(n_mixtures or {})
    unknown = sorted(set(n_mixtures) - set(fractions))
    if unknown:
        raise MixtureConfigError(f"n_mixtures names splits {unknown} absent from fractions {list(fractions)}.")
    utts = list_speech(speech)
    noise_files = list_noise(noise)
    spk_split = split_speakers(utts, fractions, seed=seed, num_spks=num_spks)
    noise_split = split_files(noise_files, fractions, seed=seed)
    out = {}
    for split in fractions:
        n = n_mixtures.get(split)
        if n is None:
            n = max(1, len(spk_split[split]) // num_spks)
        out[split] = generate_split(
            spk_split[split],
            noise_split[split],
            out_root,
            split,
            n,
            num_spks=num_spks,
            sample_rate=sample_rate,
            modes=modes,
            seed=seed,
            num_workers=num_workers,
        )
    return out

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

Randomness: each mixture has its own generator,
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(crc32(split), index)))``,
so its content does not depend on the processing order or on the number of
worker processes; the same arguments give bit-identical files.
"""

import csv
import functools
import hashlib
import math
import os
import re
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from nass.dataio.audio import AudioError, atomic_write, audio_info

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

#: Loudness range of each speech source, LUFS (LibriMix MIN_LOUDNESS, MAX_LOUDNESS).
SPEECH_LUFS = (-33.0, -25.0)
#: Loudness range of the noise, LUFS (5 LU below the speech range, as LibriMix).
NOISE_LUFS = (-38.0, -30.0)
#: Peak amplitude that no mixture may exceed (LibriMix MAX_AMP).
MAX_AMP = 0.9
#: Gating block of BS.1770-4 (s); pyloudnorm refuses shorter signals.
BLOCK_SECONDS = 0.4
#: Default cross-fade of a looped noise (s).
CROSSFADE_SECONDS = 0.05
AUDIO_EXTENSIONS = (".wav", ".flac", ".gsm", ".ogg")
MIXTURE_TYPES = ("mix_clean", "mix_both", "mix_single")


class MixtureConfigError(ValueError):
    """Unusable generator input (empty folder, missing column, too few speakers...)."""


def _first_few(items, n=3):
    items = list(items)
    shown = ", ".join(str(x) for x in items[:n])
    return f"{shown}{' ...' if len(items) > n else ''} ({len(items)} in all)"


# --------------------------------------------------------------------------- listing


def _has_ext(name, extensions):
    return name.lower().endswith(tuple(e.lower() for e in extensions))


def _read_csv_column_table(csv_path, required):
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise MixtureConfigError(
                f"{csv_path}: missing column(s) {missing}; the header is {header}. "
                f"The CSV needs a header line with the columns {list(required)}."
            )
        rows = list(reader)
    if not rows:
        raise MixtureConfigError(f"{csv_path}: no rows below the header. Add one row per file.")
    base = os.path.dirname(os.path.abspath(csv_path))
    for r in rows:
        p = r["path"].strip()
        r["path"] = p if os.path.isabs(p) else os.path.join(base, p)
    missing_files = [r["path"] for r in rows if not os.path.isfile(r["path"])]
    if missing_files:
        raise MixtureConfigError(
            f"{csv_path}: files not found: {_first_few(missing_files)}. Fix the paths "
            "(relative paths are taken from the CSV's folder)."
        )
    return rows


def list_speech(speech, extensions=AUDIO_EXTENSIONS):
    """List speech utterances with their speaker.

    Parameters
    ----------
    speech : str
        Either a folder with one sub-folder per speaker (files may be nested deeper
        inside a speaker folder, as ``LibriSpeech/train-clean-100/<spk>/<chapter>/``),
        or a CSV file with the columns ``path,speaker`` (relative paths are taken from
        the CSV's folder). Audio files directly in the folder's root, outside any
        speaker folder, are ignored with a warning.
    extensions : tuple of str
        File name endings accepted (case-insensitive).

    Returns
    -------
    list of (str, str)
        ``(absolute path, speaker)`` sorted by path.

    Raises
    ------
    MixtureConfigError
        Missing folder/CSV, no audio file found, a missing column or file in the CSV.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> from nass.dataio.audio import write_audio
    >>> root = tempfile.mkdtemp()
    >>> for spk in ("a", "b"):
    ...     write_audio(os.path.join(root, spk, "ch1", spk + "-1.wav"), np.zeros(80), 8000)
    >>> [(os.path.basename(p), s) for p, s in list_speech(root)]
    [('a-1.wav', 'a'), ('b-1.wav', 'b')]
    """
    speech = os.fspath(speech)
    if os.path.isfile(speech) and speech.lower().endswith(".csv"):
        rows = _read_csv_column_table(speech, ("path", "speaker"))
        out = [(os.path.abspath(r["path"]), str(r["speaker"]).strip()) for r in rows]
        empty = [p for p, s in out if not s]
        if empty:
            raise MixtureConfigError(f"{speech}: empty speaker for {_first_few(empty)}. Fill the speaker column.")
        return sorted(out)
    if not os.path.isdir(speech):
        raise MixtureConfigError(
            f"{speech}: not a folder nor a .csv file. Pass a folder with one sub-folder per "
            "speaker, or a CSV with the columns path,speaker."
        )
    out, loose = [], []
    for dirpath, dirnames, filenames in os.walk(speech, followlinks=True):
        dirnames.sort()
        rel = os.path.relpath(dirpath, speech)
        for name in sorted(filenames):
            if not _has_ext(name, extensions):
                continue
            path = os.path.abspath(os.path.join(dirpath, name))
            if rel == os.curdir:
                loose.append(path)
            else:
                out.append((path, rel.split(os.sep)[0]))
    if loose:
        warnings.warn(
            f"{speech}: {len(loose)} audio file(s) outside any speaker folder ignored "
            f"({_first_few(loose)})",
            stacklevel=2,
        )
    if not out:
        raise MixtureConfigError(
            f"{speech}: no audio file ({', '.join(extensions)}) inside speaker sub-folders. "
            "Put each speaker's files in its own sub-folder (speech/<speaker>/...)."
        )
    return sorted(out)


def list_noise(noise, extensions=AUDIO_EXTENSIONS):
    """List noise files: every audio file under a folder (recursive), or a CSV's ``path`` column.

    Parameters
    ----------
    noise : str
        Folder or CSV file (column ``path``).
    extensions : tuple of str
        File name endings accepted (case-insensitive).

    Returns
    -------
    list of str
        Absolute paths, sorted.

    Raises
    ------
    MixtureConfigError
        Nothing found, missing column or files.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> from nass.dataio.audio import write_audio
    >>> root = tempfile.mkdtemp()
    >>> write_audio(os.path.join(root, "x", "n1.wav"), np.zeros(80), 8000)
    >>> [os.path.basename(p) for p in list_noise(root)]
    ['n1.wav']
    """
    noise = os.fspath(noise)
    if os.path.isfile(noise) and noise.lower().endswith(".csv"):
        return sorted(os.path.abspath(r["path"]) for r in _read_csv_column_table(noise, ("path",)))
    if not os.path.isdir(noise):
        raise MixtureConfigError(f"{noise}: not a folder nor a .csv file. Pass the noise folder.")
    out = []
    for dirpath, dirnames, filenames in os.walk(noise, followlinks=True):
        out += [os.path.abspath(os.path.join(dirpath, n)) for n in filenames if _has_ext(n, extensions)]
    if not out:
        raise MixtureConfigError(f"{noise}: no audio file ({', '.join(extensions)}) found. Check the noise folder.")
    return sorted(out)


# ---------------------------------------------------------------------------- splits


def _check_fractions(fractions):
    if not fractions:
        raise MixtureConfigError("fractions is empty; give e.g. {'train': 0.8, 'dev': 0.1, 'test': 0.1}.")
    bad = {k: v for k, v in fractions.items() if not (v > 0)}
    if bad:
        raise MixtureConfigError(f"fractions must be positive, got {bad}.")
    total = float(sum(fractions.values()))
    if abs(total - 1.0) > 1e-6:
        raise MixtureConfigError(f"fractions must sum to 1, got {dict(fractions)} (sum {total:g}).")
    return {k: float(v) for k, v in fractions.items()}


def _allocate(n_items, fractions, minimum, what):
    """Counts per split by largest remainder, each at least ``minimum``."""
    names = list(fractions)
    if n_items < minimum * len(names):
        raise MixtureConfigError(
            f"{n_items} {what} cannot be split into {len(names)} splits {names} with at least "
            f"{minimum} each. Add {what}, or use fewer splits."
        )
    raw = [fractions[k] * n_items for k in names]
    counts = [int(math.floor(r)) for r in raw]
    order = sorted(range(len(names)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n_items - sum(counts)]:
        counts[i] += 1
    for i in range(len(names)):
        while counts[i] < minimum:
            j = max(range(len(names)), key=lambda m: (counts[m] - minimum, -m))
            counts[j] -= 1
            counts[i] += 1
    return dict(zip(names, counts))


def split_speakers(utterances, fractions, seed=0, num_spks=2):
    """Speaker-disjoint split of utterances.

    Speakers are sorted, shuffled with ``numpy.random.default_rng(seed)`` and cut by
    ``fractions`` (largest-remainder rounding); every split gets at least
    ``num_spks`` speakers so that it can form mixtures of different speakers.

    Parameters
    ----------
    utterances : list of (str, str)
        ``(path, speaker)`` as returned by :func:`list_speech`.
    fractions : dict
        Split name -> fraction of the speakers, positive, summing to 1,
        e.g. ``{"train": 0.8, "dev": 0.1, "test": 0.1}``.
    seed : int
        Seed of the shuffle.
    num_spks : int
        Minimum number of speakers per split.

    Returns
    -------
    dict
        Split name -> list of ``(path, speaker)`` (input order kept), in the order of
        ``fractions``.

    Raises
    ------
    MixtureConfigError
        Bad fractions, or fewer than ``num_spks * len(fractions)`` speakers.

    Example
    -------
    >>> utts = [(f"{s}-{i}.wav", s) for s in "abcdefgh" for i in range(2)]
    >>> parts = split_speakers(utts, {"train": 0.5, "dev": 0.25, "test": 0.25})
    >>> {k: len({s for _, s in v}) for k, v in parts.items()}
    {'train': 4, 'dev': 2, 'test': 2}
    """
    fractions = _check_fractions(fractions)
    speakers = sorted({s for _, s in utterances})
    counts = _allocate(len(speakers), fractions, num_spks, "speakers")
    perm = np.random.default_rng(seed).permutation(len(speakers))
    assign, start = {}, 0
    for name, c in counts.items():
        for i in perm[start : start + c]:
            assign[speakers[i]] = name
        start += c
    out = {name: [] for name in fractions}
    for path, spk in utterances:
        out[assign[spk]].append((path, spk))
    return out


def split_files(files, fractions, seed=0):
    """Disjoint split of files (e.g. noise recordings), at least one file per split.

    Parameters
    ----------
    files : list of str
        Paths (duplicates are removed).
    fractions : dict
        Split name -> fraction, positive, summing to 1.
    seed : int
        Seed of the shuffle (files are sorted first, so input order does not matter).

    Returns
    -------
    dict
        Split name -> sorted list of paths.

    Raises
    ------
    MixtureConfigError
        Bad fractions or fewer files than splits.

    Example
    -------
    >>> parts = split_files([f"n{i}.wav" for i in range(10)], {"train": 0.8, "test": 0.2})
    >>> {k: len(v) for k, v in parts.items()}
    {'train': 8, 'test': 2}
    """
    fractions = _check_fractions(fractions)
    files = sorted(set(files))
    counts = _allocate(len(files), fractions, 1, "files")
    perm = np.random.default_rng(seed).permutation(len(files))
    out, start = {}, 0
    for name, c in counts.items():
        out[name] = sorted(files[i] for i in perm[start : start + c])
        start += c
    return out


# ------------------------------------------------------------------- signal helpers


def resample(x, orig_sr, target_sr):
    """Polyphase resampling with the reduced ratio ``target_sr/g : orig_sr/g``, g = gcd.

    ``scipy.signal.resample_poly`` (Kaiser-windowed FIR anti-aliasing filter), as
    LibriMix ``create_librimix_from_metadata.py``.

    Parameters
    ----------
    x : numpy.ndarray
        ``[time]`` samples.
    orig_sr, target_sr : int
        Rates in Hz.

    Returns
    -------
    numpy.ndarray
        ``[ceil(time * target_sr / orig_sr)]`` float64 (``x`` as float64 if the rates match).

    Example
    -------
    >>> resample(np.ones(1600), 16000, 8000).shape
    (800,)
    """
    x = np.asarray(x, dtype=np.float64)
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr == target_sr:
        return x
    g = gcd(orig_sr, target_sr)
    return resample_poly(x, target_sr // g, orig_sr // g)


@functools.lru_cache(maxsize=8)
def _meter(rate):
    import pyloudnorm

    return pyloudnorm.Meter(rate)


def measure_loudness(x, sample_rate):
    """Integrated loudness (LUFS) of a mono signal, ITU-R BS.1770-4 via pyloudnorm.

    ``pyloudnorm.Meter(sample_rate).integrated_loudness(x)`` with two fallbacks:

    * a signal shorter than one 0.4 s gating block (which pyloudnorm refuses) is
      repeated cyclically up to 0.4 s; repetition keeps its mean square, so the
      result is the loudness of the signal itself (zero-padding would understate it);
    * a non-silent signal whose every block falls below the -70 LUFS absolute gate
      (pyloudnorm returns -inf) gets the ungated, unweighted estimate
      ``-0.691 + 10 log10(mean(x**2))``, so it can still be normalised.

    Digital silence (all zeros or empty) returns ``-inf``.

    Parameters
    ----------
    x : numpy.ndarray
        ``[time]`` samples.
    sample_rate : int
        Hz.

    Returns
    -------
    float
        Loudness in LUFS, or ``-inf`` for silence.

    Example
    -------
    >>> t = np.arange(16000) / 16000  # 1 kHz sine at -20 dBFS peak: about -23 LUFS
    >>> round(measure_loudness(0.1 * np.sin(2 * np.pi * 1000 * t), 16000), 1)
    -23.1
    >>> measure_loudness(np.zeros(100), 8000)
    -inf
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size == 0 or not np.any(x):
        return float("-inf")
    block = int(math.ceil(BLOCK_SECONDS * sample_rate))
    if x.size < block:
        x = np.resize(x, block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lufs = float(_meter(int(sample_rate)).integrated_loudness(x))
    if not math.isfinite(lufs):
        lufs = -0.691 + 10.0 * math.log10(float(np.mean(x**2)))
    return lufs


def draw_loudness_targets(rng, num_speech, with_noise=True, speech_lufs=SPEECH_LUFS, noise_lufs=NOISE_LUFS):
    """Draw target loudness values: ``num_speech`` from U[speech_lufs] then one from U[noise_lufs].

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    num_speech : int
        Number of speech sources.
    with_noise : bool
        Append the noise target.
    speech_lufs, noise_lufs : (float, float)
        Ranges in LUFS (defaults -33..-25 and -38..-30, LibriMix).

    Returns
    -------
    numpy.ndarray
        ``[num_speech (+1)]`` targets in LUFS.

    Example
    -------
    >>> t = draw_loudness_targets(np.random.default_rng(0), 2)
    >>> t.shape, bool(((t[:2] >= -33) & (t[:2] <= -25)).all()), bool(-38 <= t[2] <= -30)
    ((3,), True, True)
    """
    t = list(rng.uniform(speech_lufs[0], speech_lufs[1], size=num_speech))
    if with_noise:
        t.append(rng.uniform(noise_lufs[0], noise_lufs[1]))
    return np.asarray(t, dtype=np.float64)


@dataclass
class LoudnessGains:
    """Result of :func:`librimix_gains` (arrays have one entry per signal).

    Attributes
    ----------
    gains : numpy.ndarray
        Final linear gains to apply.
    loudness_gains : numpy.ndarray
        Gains that bring each signal to its target (``10**((target - input)/20)``),
        before any clipping correction; 1 for a silent signal.
    target_lufs : numpy.ndarray
        Drawn targets (LUFS).
    input_lufs : numpy.ndarray
        Measured loudness of the inputs (LUFS; ``-inf`` for silence).
    source_clipped : numpy.ndarray
        bool, the signal alone would have clipped and was scaled to peak ``max_amp``.
    mixture_scale : float
        Common factor (<= 1) applied to every signal so that no mixture exceeds ``max_amp``.
    """

    gains: np.ndarray
    loudness_gains: np.ndarray
    target_lufs: np.ndarray
    input_lufs: np.ndarray
    source_clipped: np.ndarray
    mixture_scale: float


def _pad_to(x, n):
    return x if x.size >= n else np.pad(x, (0, n - x.size))


def librimix_gains(signals, sample_rate, target_lufs, with_noise=True, max_amp=MAX_AMP):
    """LibriMix loudness normalisation and anti-clipping gains for one mixture.

    Steps (JorisCos/LibriMix ``create_librimix_metadata.py``, facts only):

    1. measure each signal's loudness (:func:`measure_loudness`) and take the gain
       ``10**((target - loudness) / 20)``; a silent signal keeps gain 1 (it stays
       silent; a warning is issued);
    2. if a scaled signal alone would reach a peak >= 1, its gain becomes
       ``max_amp / peak`` instead;
    3. the mixtures ``mix_both`` (all signals), ``mix_clean`` (speech only) and
       ``mix_single`` (first source + noise) are formed with the signals zero-padded
       at the end to the longest; if their peak exceeds ``max_amp`` every gain is
       multiplied by ``max_amp / peak``.

    Parameters
    ----------
    signals : list of numpy.ndarray
        ``[time]`` signals at ``sample_rate``: the speech sources, then the noise last
        if ``with_noise``. Lengths may differ.
    sample_rate : int
        Hz (of the meter).
    target_lufs : array-like
        One target per signal (:func:`draw_loudness_targets`).
    with_noise : bool
        Whether the last signal is the noise (only changes which mixtures are checked).
    max_amp : float
        Highest allowed mixture peak (0.9).

    Returns
    -------
    LoudnessGains

    Raises
    ------
    ValueError
        If the number of targets differs from the number of signals.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> sig = [rng.standard_normal(8000) * a for a in (0.1, 0.3, 0.05)]
    >>> g = librimix_gains(sig, 8000, [-30.0, -27.0, -35.0])
    >>> [round(measure_loudness(s * k, 8000), 2) for s, k in zip(sig, g.loudness_gains)]
    [-30.0, -27.0, -35.0]
    >>> g.mixture_scale <= 1.0
    True
    """
    signals = [np.asarray(s, dtype=np.float64).reshape(-1) for s in signals]
    target_lufs = np.asarray(target_lufs, dtype=np.float64).reshape(-1)
    if target_lufs.size != len(signals):
        raise ValueError(f"librimix_gains: {len(signals)} signals but {target_lufs.size} targets")
    input_lufs = np.array([measure_loudness(s, sample_rate) for s in signals])
    loud = np.ones(len(signals))
    gains = np.ones(len(signals))
    clipped = np.zeros(len(signals), dtype=bool)
    for i, s in enumerate(signals):
        if not math.isfinite(input_lufs[i]):
            warnings.warn("librimix_gains: a silent signal is left unscaled", stacklevel=2)
            continue
        loud[i] = 10.0 ** ((target_lufs[i] - input_lufs[i]) / 20.0)
        gains[i] = loud[i]
        peak = float(np.max(np.abs(s))) if s.size else 0.0
        if peak * loud[i] >= 1.0:
            gains[i] = max_amp / peak
            clipped[i] = True
    n = max(s.size for s in signals)
    scaled = [_pad_to(s * g, n) for s, g in zip(signals, gains)]
    mixes = [np.sum(scaled, axis=0)]
    if with_noise and len(signals) > 1:
        mixes.append(np.sum(scaled[:-1], axis=0))
        mixes.append(scaled[0] + scaled[-1])
    peak = max(float(np.max(np.abs(m))) if m.size else 0.0 for m in mixes)
    scale = max_amp / peak if peak > max_amp else 1.0
    return LoudnessGains(
        gains=gains * scale,
        loudness_gains=loud,
        target_lufs=target_lufs,
        input_lufs=input_lufs,
        source_clipped=clipped,
        mixture_scale=float(scale),
    )


def loop_noise(noise, length, sample_rate, crossfade_seconds=CROSSFADE_SECONDS):
    """Repeat a noise until it is ``length`` samples long, cross-fading at every seam.

    At each seam the last ``C`` samples of one copy fade out (``cos**2``) while the
    first ``C`` samples of the next fade in (``sin**2``): a raised-cosine cross-fade
    whose weights sum to 1, so there is no jump and the level is kept for correlated
    content (LibriMix ``extend_noise`` does the same with a 1 s Hann window).
    ``C = round(crossfade_seconds * sample_rate)``, at most half the noise.

    Parameters
    ----------
    noise : numpy.ndarray
        ``[time]`` samples.
    length : int
        Output length in samples.
    sample_rate : int
        Hz.
    crossfade_seconds : float
        Cross-fade duration (s), 50 ms by default.

    Returns
    -------
    numpy.ndarray
        ``[length]`` float64; ``noise[:length]`` when it is long enough.

    Example
    -------
    >>> y = loop_noise(np.ones(1000), 2500, 8000)
    >>> y.shape, bool(np.allclose(y, 1.0))
    ((2500,), True)
    """
    x = np.asarray(noise, dtype=np.float64).reshape(-1)
    length = int(length)
    if x.size == 0:
        raise ValueError("loop_noise: empty noise")
    if x.size >= length:
        return x[:length].copy()
    c = min(int(round(crossfade_seconds * sample_rate)), x.size // 2)
    if c < 1:
        return np.resize(x, length)
    t = (np.arange(c) + 0.5) / c
    fade_in = np.sin(0.5 * np.pi * t) ** 2
    seam = x[-c:] * (1.0 - fade_in) + x[:c] * fade_in
    period = np.concatenate([seam, x[c : x.size - c]])  # length N - C
    reps = int(math.ceil(max(length - (x.size - c), 0) / period.size))
    y = np.concatenate([x[: x.size - c]] + [period] * reps + [x[x.size - c :]])
    return y[:length]


def quantize_int16(x):
    """Round float samples to the 16-bit PCM grid: ``round(x * 32768)`` clipped to int16.

    Reading the integers back as float (``soundfile`` ``dtype='float32'``) gives
    ``q / 32768``, so sums of quantised parts are exact.

    Example
    -------
    >>> quantize_int16(np.array([0.5, -1.0, 1.0])).tolist()
    [16384, -32768, 32767]
    """
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def _read_first_channel(path, start=0, stop=None):
    info = audio_info(path)
    try:
        data, rate = sf.read(path, start=start, stop=stop, dtype="float64", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot be decoded ({exc}). The file is probably truncated; re-create it.") from exc
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or Inf samples. Re-create the file or remove it.")
    return data[:, 0], rate, info


def _read_speech(path, sample_rate):
    x, rate, info = _read_first_channel(path)
    if info.channels > 1:
        raise AudioError(
            f"{path}: has {info.channels} channels but speech must be mono. Mix it down "
            "(e.g. `sox in.wav -c 1 out.wav`) or remove it."
        )
    if x.size == 0:
        raise AudioError(f"{path}: the file holds no samples. Remove it from the speech folder.")
    return resample(x, rate, sample_rate)


def _write_int16(path, q, sample_rate):
    with atomic_write(path) as tmp:
        sf.write(tmp, q, sample_rate, subtype="PCM_16", format="WAV")


# ------------------------------------------------------------------------ generator


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


def _draw_utterances(rng, spk_idx, num_spks):
    chosen, spks = [], []
    for _ in range(num_spks):
        if spks:
            cand = np.flatnonzero(~np.isin(spk_idx, spks))
        else:
            cand = np.arange(spk_idx.size)
        j = int(cand[rng.integers(cand.size)])
        chosen.append(j)
        spks.append(spk_idx[j])
    return chosen


def _plan_split(utterances, noise_files, split, n_mixtures, num_spks, seed):
    speakers = sorted({s for _, s in utterances})
    if len(speakers) < num_spks:
        raise MixtureConfigError(
            f"split {split!r}: {len(speakers)} speaker(s) ({_first_few(speakers)}) but "
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
            utt = _draw_utterances(rng, spk_idx, num_spks)
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


def _read_noise(path, length, sample_rate, u):
    """Noise of ``length`` output samples from a random offset (looped when too short)."""
    info = audio_info(path)
    rate = info.samplerate
    need = int(math.ceil(length * rate / sample_rate))
    if info.frames >= need:
        offset = int(u * (info.frames - need + 1))
        x, _, _ = _read_first_channel(path, start=offset, stop=offset + need)
    else:
        x, _, _ = _read_first_channel(path)
        if x.size == 0:
            raise AudioError(f"{path}: the file holds no samples. Remove it from the noise folder.")
        c = min(int(round(CROSSFADE_SECONDS * rate)), x.size // 2)
        offset = int(u * max(x.size - c, 1))
        x = loop_noise(x, offset + need, rate)[offset:]
    y = resample(x, rate, sample_rate)
    return _pad_to(y, length)[:length], offset


def _make_mixture(plan, sample_rate):
    """Quantised parts (int16, max length) and the metadata row of one planned mixture."""
    sources = [_read_speech(p, sample_rate) for p in plan["sources"]]
    lengths = [s.size for s in sources]
    n_max = max(lengths)
    noise, offset = _read_noise(plan["noise"], n_max, sample_rate, plan["noise_u"])
    g = librimix_gains(sources + [noise], sample_rate, plan["targets"], with_noise=True)
    parts = [quantize_int16(_pad_to(s * k, n_max)) for s, k in zip(sources + [noise], g.gains)]
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


DEFAULT_FRACTIONS = {"train": 0.8, "dev": 0.1, "test": 0.1}


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

"""The sources of a mixture corpus: speech and noise listings, disjoint splits, reading sources.

Used by the mixture generator (:mod:`nass.dataio.mixing`) and dynamic mixing
(:mod:`nass.dataio.dynamic_mixing`): :func:`list_speech` / :func:`list_noise` find the
files, :func:`split_speakers` / :func:`split_files` make speaker-disjoint / file-disjoint
splits, :func:`draw_utterances` picks the utterances of one mixture (distinct speakers),
:func:`read_speech` / :func:`read_noise` read them at the output rate
(:func:`nass.dataio.audio.read_audio`, :func:`nass.dataio.audio.resample_polyphase`).
"""

import csv
import math
import os
import warnings

import numpy as np

from nass.dataio.audio import SOURCE_EXTENSIONS, AudioError, audio_info, fit_samples, read_audio
from nass.dataio.audio import resample_polyphase as resample
from nass.dataio.loudness import CROSSFADE_SECONDS, loop_noise

__all__ = [
    "MixtureConfigError",
    "AUDIO_EXTENSIONS",
    "DEFAULT_FRACTIONS",
    "list_speech",
    "list_noise",
    "split_speakers",
    "split_files",
    "draw_utterances",
    "read_speech",
    "read_noise",
]

#: Extensions of the source files listed (:data:`nass.dataio.audio.SOURCE_EXTENSIONS`).
AUDIO_EXTENSIONS = SOURCE_EXTENSIONS

DEFAULT_FRACTIONS = {"train": 0.8, "dev": 0.1, "test": 0.1}


class MixtureConfigError(ValueError):
    """Unusable generator input (empty folder, missing column, too few speakers...)."""


def first_few(items, n=3):
    """The first ``n`` items and the count, for messages.

    Example
    -------
    >>> first_few(["a", "b", "c", "d"])
    'a, b, c ... (4 in all)'
    """
    items = list(items)
    shown = ", ".join(str(x) for x in items[:n])
    return f"{shown}{' ...' if len(items) > n else ''} ({len(items)} in all)"


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
            f"{csv_path}: files not found: {first_few(missing_files)}. Fix the paths "
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
            raise MixtureConfigError(f"{speech}: empty speaker for {first_few(empty)}. Fill the speaker column.")
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
            f"({first_few(loose)})",
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


def _read_first_channel(path, start=0, stop=None):
    """``(samples [time] float64 of the first channel, rate, soundfile info)`` of ``[start, stop)``."""
    info = audio_info(path)
    x, rate = read_audio(path, mono="first", start=start, stop=stop, dtype="float64")
    return x, rate, info


def read_speech(path, sample_rate):
    """A whole speech utterance, mono float64 at ``sample_rate`` (:func:`nass.dataio.audio.resample_polyphase`).

    Parameters
    ----------
    path : str
        Mono audio file (any rate).
    sample_rate : int
        Output rate (Hz).

    Returns
    -------
    numpy.ndarray
        ``[time]`` float64 at ``sample_rate``.

    Raises
    ------
    nass.dataio.audio.AudioError
        Missing, unreadable, non-finite, multi-channel or empty file.

    Example
    -------
    >>> import os, tempfile
    >>> from nass.dataio.audio import write_audio
    >>> p = os.path.join(tempfile.mkdtemp(), "u.wav")
    >>> write_audio(p, np.zeros(1600, "float32"), 16000)
    >>> read_speech(p, 8000).shape
    (800,)
    """
    x, rate, info = _read_first_channel(path)
    if info.channels > 1:
        raise AudioError(
            f"{path}: has {info.channels} channels but speech must be mono. Mix it down "
            "(e.g. `sox in.wav -c 1 out.wav`) or remove it."
        )
    if x.size == 0:
        raise AudioError(f"{path}: the file holds no samples. Remove it from the speech folder.")
    return resample(x, rate, sample_rate)


def read_noise(path, length, sample_rate, u):
    """Noise of ``length`` output samples from a random offset (looped when too short).

    Parameters
    ----------
    path : str
        Noise file (any rate; the first channel is used).
    length : int
        Samples wanted at ``sample_rate``.
    sample_rate : int
        Output rate (Hz).
    u : float
        In ``[0, 1)``: where the segment starts (``u`` times the possible offsets).

    Returns
    -------
    tuple
        ``(noise [length] float64, offset)`` with ``offset`` in samples of the file (of the
        looped signal when the file is shorter than needed, cross-faded with
        :func:`nass.dataio.loudness.loop_noise`).

    Raises
    ------
    nass.dataio.audio.AudioError
        Missing, unreadable, non-finite or empty file.

    Example
    -------
    >>> import os, tempfile
    >>> from nass.dataio.audio import write_audio
    >>> p = os.path.join(tempfile.mkdtemp(), "n.wav")
    >>> write_audio(p, np.full(800, 0.1, "float32"), 8000)
    >>> x, offset = read_noise(p, 2000, 8000, 0.5)
    >>> x.shape, offset
    ((2000,), 200)
    """
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
    return fit_samples(y, length), offset


def draw_utterances(rng, spk_idx, num_spks):
    """Indices of ``num_spks`` utterances of distinct speakers, drawn uniformly with ``rng``.

    Parameters
    ----------
    rng : numpy.random.Generator
    spk_idx : numpy.ndarray
        ``[utterances]`` speaker index of each utterance.
    num_spks : int

    Returns
    -------
    list of int
        Utterance indices, each of a speaker not drawn before.

    Example
    -------
    >>> idx = draw_utterances(np.random.default_rng(0), np.array([0, 0, 1, 1, 2]), 3)
    >>> sorted(np.array([0, 0, 1, 1, 2])[idx].tolist())
    [0, 1, 2]
    """
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

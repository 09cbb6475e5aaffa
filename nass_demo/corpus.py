"""Demo corpus: an 8 kHz Libri2Mix-shaped noisy corpus from recordings shipped in Debian.

The corpus is built at set-up time from Debian packages (no audio is ever committed):
real recorded voices (telephony prompts, game and educational-software voice actors,
codec test speech), optional synthetic voices (Festival / Flite) and optional
pseudo-speakers (speed perturbation of each real reader), mixed with recorded
ambience, music, sound effects and babble by :mod:`nass.dataio.mixing`.

Layout written under ``out_dir``::

    speech/<speaker>/<speaker>-<nnnn>.wav      3-8 s utterances, 8 kHz (joined prompts)
    noise/<name>.wav                           noise tracks, 8 kHz
    Libri2Mix/wav8k/min/{train,dev,test}/{mix_both,mix_clean,mix_single,s1,s2,noise}/
    Libri2Mix/metadata/...                     written by nass.dataio.mixing.generate_split
    corpus_stats.json                          options + per-split statistics

Sources are listed in :data:`SPEECH_SOURCES` (real voices) and :data:`NOISE_SOURCES`;
``docs/demo_corpus.md`` has the table of packages, speakers, minutes and licences, and
``CREDITS`` the attributions.
"""

import functools
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
import zlib
from fractions import Fraction
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import firwin, lfilter

from nass.dataio.audio import AudioError, atomic_write, audio_info, read_audio, resample_polyphase, write_audio

SAMPLE_RATE = 8000
#: Utterance length range in seconds (prompts are joined until a length drawn in it).
UTT_SECONDS = (3.0, 8.0)
#: Pause between joined prompts, seconds.
GAP_SECONDS = (0.15, 0.45)
#: Pause before a prompt shorter than :data:`WORD_SECONDS` (single words, letters and
#: syllables are joined like connected speech, not like a list read aloud).
WORD_GAP_SECONDS = (0.03, 0.12)
#: Prompts shorter than this (seconds, after trimming) are joined with :data:`WORD_GAP_SECONDS`.
WORD_SECONDS = 1.0
#: Longest silence kept inside a prompt, seconds (:func:`compress_pauses`).
MAX_PAUSE_SECONDS = 0.3
#: Level of the room tone laid under every utterance (RMS, dBFS).
ROOM_TONE_DBFS = -60.0
#: Cap of speech per voice (minutes) so a few prolific readers do not dominate.
MAX_MINUTES_PER_SPEAKER = 5.0
#: Speed-perturbation factors of pseudo-speakers span this range (Ko et al. 2015 used 0.9-1.1).
PSEUDO_RANGE = (0.85, 1.15)
#: Fraction of voices per split (speaker-disjoint; at least ``num_spks`` voices each).
SPLIT_FRACTIONS = {"train": 0.8, "dev": 0.1, "test": 0.1}
SPLITS = ("train", "dev", "test")
AUDIO_EXT = (".wav", ".gsm", ".ogg", ".raw")
STATS_FILE = "corpus_stats.json"
#: Version of the build recipe; bump it when the output changes for the same options.
RECIPE_VERSION = 2


class MissingPackageError(ValueError):
    """A Debian package that a selected source needs is not installed."""


# --------------------------------------------------------------------------------------
# Source registry
# --------------------------------------------------------------------------------------


def _walk(root, extensions=AUDIO_EXT, skip_dirs=("silence",)):
    """Sorted audio files under ``root`` (symbolic links to folders are not followed)."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs)
        for name in sorted(files):
            if name.lower().endswith(extensions):
                out.append(os.path.join(folder, name))
    return sorted(out)


_NOT_SPEECH = re.compile(r"^(beep|beeperr|ascending-2tone|descending-2tone)\.", re.I)


class Source:
    """One source of recordings.

    Parameters
    ----------
    name : str
        Registry key.
    packages : tuple of str
        Debian packages it reads.
    probe : str
        Path (relative to the packages root) that exists when the packages are installed.
    lister : callable
        ``lister(root) -> iterable of (path, speaker)``, ``root`` the packages root.
    licence : str
        Licence of the recordings (see ``CREDITS``).
    group : str or None
        Split group shared by all voices of the source when readers may be shared
        between them (kept together in one split); ``None``: one group per voice.
    foundation : bool
        Part of the 11-voice foundation list (``--sources foundation``).
    """

    def __init__(self, name, packages, probe, lister, licence, group=None, foundation=False):
        self.name = name
        self.packages = tuple(packages)
        self.probe = probe
        self.lister = lister
        self.licence = licence
        self.group = group
        self.foundation = foundation

    def installed(self, root="/"):
        return os.path.exists(os.path.join(root, self.probe))

    def __call__(self, root="/"):
        """Yield ``(path, speaker, source_name)``; raises :class:`MissingPackageError`."""
        if not self.installed(root):
            raise MissingPackageError(_missing_message(self.packages, [self.name]))
        for path, speaker in self.lister(root):
            yield path, speaker, self.name

    def group_of(self, speaker):
        return self.group or speaker


def _asterisk(folder, speaker):
    def lister(root):
        for p in _walk(os.path.join(root, "usr/share/asterisk/sounds", folder)):
            if not _NOT_SPEECH.match(os.path.basename(p)):
                yield p, speaker

    return lister


def _fillets(lang):
    def lister(root):
        base = os.path.join(root, "usr/share/games/fillets-ng/sound")
        for level in sorted(os.listdir(base)):
            folder = os.path.join(base, level, lang)
            if not os.path.isdir(folder):
                continue
            for p in _walk(folder):
                m = re.search(r"-([vm])-", os.path.basename(p))
                if m:  # v: big fish, m: small fish; other letters are other characters
                    yield p, f"fillets-{lang}-{'big' if m.group(1) == 'v' else 'small'}"

    return lister


def _kde_speaker(lang):
    lang = lang.split("@")[0]
    return "kde-" + lang.replace("_", "")


def _kde_group(speaker):
    # Readers of one language may be the same person in ktuberling and klettres, and
    # en / en_GB, pt / pt_BR, nb / nn may share a reader: keep them in one split.
    lang = speaker[len("kde-"):]
    return "kde-" + {"nn": "no", "nb": "no", "enGB": "en", "ptBR": "pt"}.get(lang, lang)


def _ktuberling(root):
    base = os.path.join(root, "usr/share/ktuberling/sounds")
    for lang in sorted(os.listdir(base)):
        if os.path.isdir(os.path.join(base, lang)):
            for p in _walk(os.path.join(base, lang)):
                yield p, _kde_speaker(lang)


def _klettres(root):
    base = os.path.join(root, "usr/share/klettres")
    for lang in sorted(os.listdir(base)):
        if lang in ("icons", "pics") or not os.path.isdir(os.path.join(base, lang)):
            continue
        for p in _walk(os.path.join(base, lang)):
            yield p, _kde_speaker(lang)


# Hedgewars voice packs; "Robot" is a processed voice and left out. Several packs may
# be voiced by one actor (the copyright file names none), so they form one split group;
# the *_xx language variants of a pack are counted as the pack's speaker.
_HEDGEWARS_PACKS = {
    "Default": "default", "Default_uk": "default", "Default_es": "default",
    "Default_pl": "default", "Default_ru": "default", "British": "british",
    "Classic": "classic", "HillBilly": "hillbilly", "Mobster": "mobster",
    "Pirate": "pirate", "Russian": "russian", "Russian_pl": "russian",
    "Singer": "singer", "Surfer": "surfer",
}


def _hedgewars(root):
    base = os.path.join(root, "usr/share/games/hedgewars/Data/Sounds/voices")
    for pack in sorted(os.listdir(base)):
        if pack in _HEDGEWARS_PACKS:
            for p in _walk(os.path.join(base, pack)):
                yield p, "hedgewars-" + _HEDGEWARS_PACKS[pack]


# codec2 test speech (8 kHz 16-bit raw). *a / *_10s / *2400 files are excerpts or coded
# versions of others; hts.raw holds several talkers. Identities are not documented.
_CODEC2 = ("hts1", "hts2", "cq_ref", "g3plx", "kristoff", "mmt1", "ve9qrp", "vk5qi")


def _codec2(root):
    for name in _CODEC2:
        p = os.path.join(root, "usr/share/codec2/raw", name + ".raw")
        if os.path.exists(p):
            yield p, "codec2-" + name.replace("_", "")


def _gcin(root):
    # gcin-voice: every Mandarin syllable by two readers, <syllable>/3.ogg (Edward
    # Der-Hua Liu) and <syllable>/5.ogg (Chu Lo).
    for p in _walk(os.path.join(root, "usr/share/gcin-voice/ogg")):
        reader = {"3.ogg": "liu", "5.ogg": "lo"}.get(os.path.basename(p))
        if reader:
            yield p, "gcin-" + reader


_SRC = [
    Source("asterisk-en", ["asterisk-core-sounds-en-wav"], "usr/share/asterisk/sounds/en_US_f_Allison",
           _asterisk("en_US_f_Allison", "asterisk-allison"), "CC-BY-SA-3.0", foundation=True),
    Source("asterisk-fr", ["asterisk-core-sounds-fr-wav"], "usr/share/asterisk/sounds/fr_CA_f_June",
           _asterisk("fr_CA_f_June", "asterisk-june"), "CC-BY-SA-3.0", foundation=True),
    Source("asterisk-it", ["asterisk-core-sounds-it-wav"], "usr/share/asterisk/sounds/it_IT_m_Carlo",
           _asterisk("it_IT_m_Carlo", "asterisk-carlo"), "CC-BY-SA-3.0", foundation=True),
    Source("asterisk-ru", ["asterisk-core-sounds-ru-wav"], "usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU",
           _asterisk("ru_RU_f_IvrvoiceRU", "asterisk-ivrvoiceru"), "CC-BY-SA-3.0", foundation=True),
    Source("asterisk-it-menardi", ["asterisk-prompt-it-menardi-wav"], "usr/share/asterisk/sounds/it_IT_f_Menardi",
           _asterisk("it_IT_f_Menardi", "asterisk-menardi"), "GPL-2", foundation=True),
    Source("asterisk-fr-armelle", ["asterisk-prompt-fr-armelle"], "usr/share/asterisk/sounds/fr/agent-pass.gsm",
           _asterisk("fr", "asterisk-armelle"), "GPL-2+ (see CREDITS)", foundation=True),
    Source("asterisk-es-co", ["asterisk-prompt-es-co"], "usr/share/asterisk/sounds/es/agent-pass.gsm",
           _asterisk("es", "asterisk-esco"), "GPL-2 (see CREDITS)", foundation=True),
    Source("fillets-cs", ["fillets-ng-data-cs"], "usr/share/games/fillets-ng/sound/airplane/cs",
           _fillets("cs"), "GPL-2+", foundation=True),
    Source("fillets-nl", ["fillets-ng-data-nl"], "usr/share/games/fillets-ng/sound/airplane/nl",
           _fillets("nl"), "GPL-2+", foundation=True),
    # Same reader as asterisk-en (Allison): more material for the same speaker id.
    Source("asterisk-es", ["asterisk-core-sounds-es-wav"], "usr/share/asterisk/sounds/es_MX_f_Allison",
           _asterisk("es_MX_f_Allison", "asterisk-allison"), "CC-BY-SA-3.0"),
    Source("ktuberling", ["ktuberling-data"], "usr/share/ktuberling/sounds", _ktuberling, "GPL-2+"),
    Source("klettres", ["klettres-data"], "usr/share/klettres", _klettres, "GPL-2+"),
    Source("hedgewars", ["hedgewars-data"], "usr/share/games/hedgewars/Data/Sounds/voices", _hedgewars,
           "GFDL-1.3", group="hedgewars"),
    Source("codec2", ["codec2-examples"], "usr/share/codec2/raw/ve9qrp.raw", _codec2, "LGPL-2.1",
           group="codec2"),
    Source("gcin", ["gcin-voice"], "usr/share/gcin-voice/ogg", _gcin, "GPL-3/LGPL-3 (Liu), CC-BY-3.0 (Lo)"),
]

#: Registry of real-voice sources: name -> :class:`Source` (callable yielding
#: ``(path, speaker, source_name)``).
SPEECH_SOURCES = {s.name: s for s in _SRC}
#: The 11-voice foundation list.
FOUNDATION = tuple(s.name for s in _SRC if s.foundation)


def _group_for(speaker):
    if speaker.startswith("kde-"):
        return _kde_group(speaker)
    for s in _SRC:
        if s.group and speaker.startswith(s.group + "-"):
            return s.group
    return speaker


def select_sources(sources=None):
    """Resolve a ``--sources`` value to source names.

    Parameters
    ----------
    sources : None, str or list of str
        ``None`` or ``"all"``: every real source; ``"foundation"``: the 11-voice
        foundation list; otherwise names of :data:`SPEECH_SOURCES` (a comma-separated
        string or a list; ``foundation`` may appear among them).

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones).

    Example
    -------
    >>> len(select_sources("foundation"))
    9
    >>> select_sources("codec2,gcin")
    ['codec2', 'gcin']
    """
    if sources is None:
        sources = ["all"]
    if isinstance(sources, str):
        sources = [s.strip() for s in sources.split(",") if s.strip()]
    out = []
    for s in sources:
        names = list(SPEECH_SOURCES) if s == "all" else list(FOUNDATION) if s == "foundation" else [s]
        for n in names:
            if n not in SPEECH_SOURCES:
                raise ValueError(
                    f"unknown demo speech source {n!r}; choose among all, foundation, "
                    + ", ".join(SPEECH_SOURCES)
                )
            if n not in out:
                out.append(n)
    return out


def _missing_message(packages, what):
    pk = " ".join(sorted(set(packages)))
    return (
        f"Debian package(s) not installed: {pk} (needed by {', '.join(what)}). Install them with "
        f"`sudo apt-get install {pk}` (or `make demo`, which installs tools/demo_packages.txt), "
        "or leave those sources out with --sources."
    )


def check_packages(names, root="/", synthetic=False):
    """Raise :class:`MissingPackageError` naming every missing package at once.

    Parameters
    ----------
    names : list of str
        Source names (speech and noise).
    root : str
        Packages root (``/`` on a normal system).
    synthetic : bool
        Also require Festival and Flite.
    """
    missing, what = [], []
    for n in names:
        src = SPEECH_SOURCES.get(n) or NOISE_SOURCES[n]
        if not src.installed(root):
            missing += list(src.packages)
            what.append(n)
    if synthetic and not (shutil.which("text2wave") and shutil.which("flite")):
        missing += ["festival", "flite"]
        what.append("synthetic voices")
    if missing:
        raise MissingPackageError(_missing_message(missing, what))


# --------------------------------------------------------------------------------------
# Noise sources
# --------------------------------------------------------------------------------------


def _files(sub, extensions=(".wav", ".ogg", ".oga"), exclude=None):
    def lister(root):
        for p in _walk(os.path.join(root, sub), extensions):
            if exclude is None or not re.search(exclude, p):
                yield p, None

    return lister


_NOISE = [
    Source("lincity", ["lincity-ng-data"], "usr/share/games/lincity-ng/sounds",
           _files("usr/share/games/lincity-ng"), "GPL-2+ (sounds), CC-BY-SA (music)"),
    Source("moh-opsound", ["asterisk-moh-opsound-wav"], "usr/share/asterisk/moh",
           _files("usr/share/asterisk/moh"), "CC-BY-SA-3.0"),
    Source("hedgewars-sfx", ["hedgewars-data"], "usr/share/games/hedgewars/Data/Sounds",
           _files("usr/share/games/hedgewars/Data", exclude=r"/voices/"), "GFDL-1.3 / CC-BY-SA-3.0"),
    Source("frozen-bubble", ["frozen-bubble-data"], "usr/share/games/frozen-bubble/snd",
           _files("usr/share/games/frozen-bubble/snd"), "GPL-2"),
    Source("freedesktop-sounds", ["sound-theme-freedesktop"], "usr/share/sounds/freedesktop",
           _files("usr/share/sounds/freedesktop", exclude=r"audio-channel|audio-test"), "GPL-2+ / CC-BY-SA / CC-BY-3.0"),
    Source("oxygen-sounds", ["oxygen-sounds"], "usr/share/sounds/Oxygen-Sys-Log-In.ogg",
           _files("usr/share/sounds", exclude=r"/(freedesktop|alsa)/|^(?!.*/Oxygen-)"), "LGPL-3+ / CC-BY-SA-4.0"),
]
#: Registry of noise sources: name -> :class:`Source` (speaker is ``None``).
NOISE_SOURCES = {s.name: s for s in _NOISE}


# --------------------------------------------------------------------------------------
# Signal helpers
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _lowpass(up, down):
    # The filter scipy.signal.resample_poly designs by default (Kaiser, beta 5,
    # half-length 10 * max(up, down)), designed once per ratio instead of once per call.
    max_rate = max(up, down)
    return firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def _resample(x, orig_sr, target_sr):
    """:func:`nass.dataio.audio.resample_polyphase` of float64 samples, with a cached filter."""
    x = np.asarray(x, dtype=np.float64)
    g = gcd(int(orig_sr), int(target_sr))
    up, down = int(target_sr) // g, int(orig_sr) // g
    if up == down:
        return x
    return resample_polyphase(x, orig_sr, target_sr, window=_lowpass(up, down))


def read_any(path, sample_rate=SAMPLE_RATE, max_seconds=None):
    """Read a recording as mono float64 at ``sample_rate`` (``.raw``: 8 kHz 16-bit PCM).

    Parameters
    ----------
    path : str
        WAV, GSM, Ogg/Vorbis (anything libsndfile reads) or codec2 ``.raw``.
    sample_rate : int
        Output rate, Hz.
    max_seconds : float, optional
        Read only the beginning of the file (long music tracks).

    Returns
    -------
    numpy.ndarray
        ``[time]`` float64.

    Raises
    ------
    nass.dataio.audio.AudioError
        Unreadable or empty file.
    """
    if path.endswith(".raw"):
        try:
            x, rate = sf.read(path, samplerate=8000, channels=1, subtype="PCM_16", format="RAW",
                              endian="LITTLE", dtype="float64")
        except Exception as exc:
            raise AudioError(f"{path}: cannot be read as 8 kHz 16-bit raw PCM ({exc}).") from exc
        x = x[:, 0] if x.ndim == 2 else x
    else:
        try:
            info = audio_info(path)
            stop = None if max_seconds is None else min(info.frames, int(max_seconds * info.samplerate))
            with warnings.catch_warnings():  # stereo music and noise: the channels averaged, silently
                warnings.filterwarnings("ignore", message=".*channels mixed down to mono")
                x, rate = read_audio(path, mono="mix", stop=stop, dtype="float64")
        except AudioError as exc:
            raise AudioError(f"{exc} (a file of a Debian package: reinstall its package)") from exc
    if x.size == 0:
        raise AudioError(f"{path}: no samples")
    return _resample(x, rate, sample_rate)


def _frame_db(x, frame):
    n = max(1, len(x) // frame)
    e = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) if len(x) >= frame else np.array([np.mean(x**2)])
    return 10 * np.log10(e + 1e-12)


def _active_frames(x, sample_rate, top_db, floor_db):
    """``(frame, active)``: 10 ms frame length and, per frame, energy within ``top_db`` of the
    loudest frame and above ``floor_db`` dBFS."""
    frame = max(1, int(0.01 * sample_rate))
    db = _frame_db(x, frame)
    return frame, (db > db.max() - top_db) & (db > floor_db)


def trim_silence(x, sample_rate=SAMPLE_RATE, top_db=40.0, floor_db=-55.0, margin=0.03):
    """Remove leading and trailing silence.

    A 10 ms frame is speech when its energy is within ``top_db`` of the loudest frame and
    above ``floor_db`` dBFS; ``margin`` seconds are kept around the first and last such
    frame.

    Parameters
    ----------
    x : numpy.ndarray
        ``[time]`` samples.
    sample_rate : int
        Hz.
    top_db, floor_db : float
        Thresholds in dB (relative to the loudest frame, absolute in dBFS).
    margin : float
        Seconds kept on both sides.

    Returns
    -------
    numpy.ndarray
        The trimmed signal (empty if nothing passes the thresholds).

    Example
    -------
    >>> x = np.concatenate([np.zeros(800), 0.5 * np.ones(800), np.zeros(800)])
    >>> len(trim_silence(x, 8000, margin=0.0))
    800
    """
    frame, active = _active_frames(x, sample_rate, top_db, floor_db)
    active = np.flatnonzero(active)
    if active.size == 0:
        return x[:0]
    m = int(margin * sample_rate)
    start = max(0, active[0] * frame - m)
    stop = min(len(x), (active[-1] + 1) * frame + m)
    return x[start:stop]


def compress_pauses(x, sample_rate=SAMPLE_RATE, max_pause=MAX_PAUSE_SECONDS, top_db=30.0, floor_db=-55.0):
    """Shorten every silence inside a recording to at most ``max_pause`` seconds.

    Frames (10 ms) are silent by the rule of :func:`trim_silence` with a stricter
    ``top_db`` (30 dB: the hiss and clicks between the words of some word-list
    recordings sit 30-50 dB below their peak). A run of silent
    frames longer than ``max_pause`` keeps its first and last ``max_pause / 2``
    seconds, so the decay of the sound before it and the onset after it are kept.
    Word-list recordings (a letter, a long pause, a click, the next word) otherwise
    give mixtures in which one speaker is silent for much of the time. A corpus-building
    heuristic of this project (no paper); it never raises.

    Parameters
    ----------
    x : numpy.ndarray
        ``[time]`` samples.
    sample_rate : int
        Hz.
    max_pause : float
        Seconds; ``None`` or ``<= 0`` returns ``x`` unchanged.
    top_db, floor_db : float
        Silence thresholds in dB (relative to the loudest frame, absolute in dBFS).

    Returns
    -------
    numpy.ndarray
        ``[time']`` with ``time' <= time``.

    Example
    -------
    >>> x = np.concatenate([np.ones(800), np.zeros(8000), np.ones(800)])
    >>> len(compress_pauses(x, 8000, max_pause=0.3)) / 8000
    0.5
    """
    if not max_pause or max_pause <= 0:
        return x
    frame, active = _active_frames(x, sample_rate, top_db, floor_db)
    silent = ~active
    keep_frames = max(1, int(round(max_pause * sample_rate / frame)))
    half = keep_frames // 2
    cut = np.zeros(len(silent), dtype=bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        if stop - start > keep_frames:
            cut[start + half: stop - (keep_frames - half)] = True
    if not cut.any():
        return x
    keep = np.ones(len(x), dtype=bool)
    keep[: len(cut) * frame] = ~np.repeat(cut, frame)
    return x[keep]


def room_tone(n, rng, level_dbfs=ROOM_TONE_DBFS):
    """Low-level shaped noise standing in for the room tone of a recording.

    White Gaussian noise through a one-pole low-pass (``y[t] = x[t] + 0.9 y[t-1]``, a
    brown-ish tilt like the low-frequency hum of a quiet room) scaled to an RMS of
    ``level_dbfs``.

    Parameters
    ----------
    n : int
        Samples.
    rng : numpy.random.Generator
    level_dbfs : float
        RMS level, dB relative to full scale.

    Returns
    -------
    numpy.ndarray
        ``[n]`` float64.

    Example
    -------
    >>> t = room_tone(8000, np.random.default_rng(0))
    >>> round(float(20 * np.log10(np.sqrt(np.mean(t ** 2)))), 1)
    -60.0
    """
    if n <= 0:
        return np.zeros(0)
    y = lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    y -= y.mean()
    return y * (10 ** (level_dbfs / 20) / (np.sqrt(np.mean(y**2)) + 1e-12))


def split_long(x, sample_rate=SAMPLE_RATE, max_seconds=UTT_SECONDS[1], min_seconds=UTT_SECONDS[0]):
    """Cut a long recording into pieces of at most ``max_seconds`` at its quietest points.

    Each cut is at the quietest 20 ms frame between ``min_seconds`` and ``max_seconds``
    from the previous cut (a pause between words when there is one).

    Returns
    -------
    list of numpy.ndarray

    Example
    -------
    >>> x = np.concatenate([np.ones(8000 * 5), np.zeros(800), np.ones(8000 * 5)])
    >>> [len(p) / 8000 for p in split_long(x, 8000)]
    [5.0, 5.1]
    """
    out = []
    lo, hi = int(min_seconds * sample_rate), int(max_seconds * sample_rate)
    frame = max(1, int(0.02 * sample_rate))
    while len(x) > hi:
        seg = x[lo:hi]
        db = _frame_db(seg, frame)
        cut = lo + int(np.argmin(db)) * frame
        out.append(x[:cut])
        x = x[cut:]
    out.append(x)
    return out


def join_prompts(prompts, rng, sample_rate=SAMPLE_RATE, utt_seconds=UTT_SECONDS, gap_seconds=GAP_SECONDS,
                 room_tone_dbfs=ROOM_TONE_DBFS, max_seconds_total=None, word_gap_seconds=WORD_GAP_SECONDS,
                 word_seconds=WORD_SECONDS, max_pause=MAX_PAUSE_SECONDS):
    """Join consecutive prompts of one speaker into utterances of ``utt_seconds``.

    Prompts are taken in order; each is trimmed (:func:`trim_silence`), its inner pauses
    are shortened to ``max_pause`` (:func:`compress_pauses`) and long ones are cut
    (:func:`split_long`). They are concatenated with pauses drawn in ``gap_seconds``
    (``word_gap_seconds`` before a prompt shorter than ``word_seconds``: words, letters
    and syllables) until a length drawn in ``utt_seconds`` is reached (never beyond its
    upper bound).
    A room tone (:func:`room_tone`) at ``room_tone_dbfs`` lies under the whole
    utterance, so pauses are quiet but not digital zeros. A remainder shorter than the
    lower bound is dropped.

    Parameters
    ----------
    prompts : iterable of numpy.ndarray
        ``[time]`` signals at ``sample_rate``, in reading order.
    rng : numpy.random.Generator
    sample_rate : int
        Hz.
    utt_seconds, gap_seconds : (float, float)
        Ranges in seconds.
    room_tone_dbfs : float
        RMS of the room tone, dBFS.
    max_seconds_total : float, optional
        Stop once this much speech has been produced.
    word_gap_seconds : (float, float)
        Pause range before a short prompt, seconds.
    word_seconds : float
        Prompts shorter than this (seconds) count as words.
    max_pause : float or None
        Longest pause kept inside a prompt, seconds (``None``: keep them all).

    Returns
    -------
    list of numpy.ndarray
        Utterances, float32, each within ``utt_seconds``.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> words = [0.3 * np.sin(np.arange(6000) * 0.3) for _ in range(10)]
    >>> utts = join_prompts(words, rng, 8000)
    >>> all(3.0 <= len(u) / 8000 <= 8.0 for u in utts), len(utts) >= 1
    (True, True)
    """
    lo, hi = int(utt_seconds[0] * sample_rate), int(utt_seconds[1] * sample_rate)
    out, cur, cur_len, total = [], [], 0, 0
    target = int(rng.uniform(*utt_seconds) * sample_rate)

    def emit(parts):
        nonlocal total
        y = np.concatenate(parts)
        y = y + room_tone(len(y), rng, room_tone_dbfs)
        peak = np.max(np.abs(y))
        if peak > 0.99:
            y *= 0.99 / peak
        out.append(y.astype(np.float32))
        total += len(y)

    for prompt in prompts:
        if max_seconds_total is not None and total >= max_seconds_total * sample_rate:
            break
        x = compress_pauses(trim_silence(np.asarray(prompt, dtype=np.float64), sample_rate), sample_rate, max_pause)
        if len(x) < int(0.1 * sample_rate):
            continue
        for piece in split_long(x, sample_rate, utt_seconds[1], utt_seconds[0]):
            if max_seconds_total is not None and total >= max_seconds_total * sample_rate:
                break
            pause = word_gap_seconds if len(piece) < word_seconds * sample_rate else gap_seconds
            gap = np.zeros(int(rng.uniform(*pause) * sample_rate)) if cur else np.zeros(0)
            if cur and cur_len + len(gap) + len(piece) > hi:
                if cur_len >= lo:
                    emit(cur)
                cur, cur_len = [], 0
                target = int(rng.uniform(*utt_seconds) * sample_rate)
                gap = np.zeros(0)
            cur += [gap, piece]
            cur_len += len(gap) + len(piece)
            if cur_len >= target:
                emit(cur)
                cur, cur_len = [], 0
                target = int(rng.uniform(*utt_seconds) * sample_rate)
    if cur and cur_len >= lo:
        emit(cur)
    return out


def perturb_voice(wave, sample_rate, factor):
    """Speed perturbation: a new apparent voice from a recording.

    The signal is resampled by ``1/factor`` and played at the original rate, so it lasts
    ``1/factor`` times as long and its pitch *and* formants are multiplied by
    ``factor`` — the vocal tract sounds shorter (``factor > 1``) or longer
    (``factor < 1``), which changes the apparent speaker (Ko, Peddinti, Povey and
    Khudanpur, "Audio augmentation for speech recognition", Interspeech 2015, factors
    0.9/1.0/1.1; a time-domain relative of the VTLP of Jaitly and Hinton, ICML WDLASL
    2013, which warps only the spectrum). ``factor`` is approximated by a fraction with
    a denominator of at most 100 and applied with ``scipy.signal.resample_poly``.

    Usable at corpus-build time (pseudo-speakers) and as an on-the-fly augmentation.

    Parameters
    ----------
    wave : numpy.ndarray
        ``[time]`` samples.
    sample_rate : int
        Hz (unchanged; only used to validate the input).
    factor : float
        Speed factor, > 0 (typically 0.85-1.15). 1 returns a copy.

    Returns
    -------
    numpy.ndarray
        ``[round(time / factor)]`` (± 1 sample), same dtype as ``wave`` when floating.

    Raises
    ------
    ValueError
        ``factor <= 0`` or ``sample_rate <= 0``.

    Example
    -------
    >>> y = perturb_voice(np.zeros(8000, dtype="float32"), 8000, 1.25)
    >>> y.shape, y.dtype
    ((6400,), dtype('float32'))
    """
    if not factor > 0 or not sample_rate > 0:
        raise ValueError(f"perturb_voice: factor ({factor}) and sample_rate ({sample_rate}) must be > 0")
    wave = np.asarray(wave)
    dtype = wave.dtype if np.issubdtype(wave.dtype, np.floating) else np.float64
    frac = Fraction(float(factor)).limit_denominator(100)
    if frac == 1:
        return wave.astype(dtype, copy=True)
    y = _resample(wave, frac.numerator, frac.denominator)
    return y.astype(dtype)


def pseudo_factors(k, span=PSEUDO_RANGE):
    """``k`` distinct speed factors for the pseudo-speakers of one reader.

    Evenly spaced on both sides of 1 up to the ends of ``span``, alternating below and
    above 1 (lowest first): ``k=1 -> [0.85]``, ``k=2 -> [0.85, 1.15]``.

    Example
    -------
    >>> pseudo_factors(4)
    [0.925, 1.075, 0.85, 1.15]
    """
    if k <= 0:
        return []
    n = (k + 1) // 2
    out = []
    for i in range(1, n + 1):
        out += [round(1 - (1 - span[0]) * i / n, 4), round(1 + (span[1] - 1) * i / n, 4)]
    return out[:k]


# --------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------


def assign_splits(voices, fractions=SPLIT_FRACTIONS, seed=0, num_spks=2):
    """Speaker-disjoint split of voices that keeps groups and pseudo-speakers together.

    Real voices are split by *group* (voices whose readers may be the same person share
    a group; a pseudo-speaker has its reader's group), synthetic voices separately with
    the same fractions. Groups are shuffled with ``seed``; test then dev take groups
    until they hold their share of real voices (at least ``num_spks``), skipping
    groups larger than what they still need; the rest goes to train. So dev/test
    voices are never in train and test always has real voices.

    Parameters
    ----------
    voices : dict
        speaker -> dict with ``group`` (str), ``kind`` (``"real"``, ``"synthetic"`` or
        ``"pseudo"``) and, for pseudo-speakers, ``reader`` (the real speaker).
    fractions : dict
        Split -> fraction of the voices (``train``, ``dev``, ``test``).
    seed : int
    num_spks : int
        Minimum number of voices of each kind present per dev/test split.

    Returns
    -------
    dict
        speaker -> split name.

    Raises
    ------
    ValueError
        Too few real voices (fewer than ``3 * num_spks`` groups' worth).

    Example
    -------
    >>> v = {f"r{i}": {"group": f"r{i}", "kind": "real"} for i in range(10)}
    >>> v["r0-p1"] = {"group": "r0", "kind": "pseudo", "reader": "r0"}
    >>> s = assign_splits(v)
    >>> s["r0-p1"] == s["r0"], sorted(set(s.values()))
    (True, ['dev', 'test', 'train'])
    """
    out = {}
    for kind in ("real", "synthetic"):
        groups = {}
        for spk in sorted(voices):
            info = voices[spk]
            if info["kind"] == kind:
                groups.setdefault(info["group"], []).append(spk)
        if not groups:
            continue
        n = sum(len(v) for v in groups.values())
        names = sorted(groups)
        order = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(kind.encode())])).permutation(len(names))
        names = [names[i] for i in order]
        need = {s: max(num_spks, int(round(fractions[s] * n))) for s in ("test", "dev")}
        if kind == "real" and n < need["test"] + need["dev"] + num_spks:
            raise ValueError(
                f"{n} real voices are too few for speaker-disjoint train/dev/test splits with "
                f"num_spks={num_spks}; select more --sources."
            )
        have = {"test": 0, "dev": 0}
        for g in names:
            size = len(groups[g])
            split = "train"
            for s in ("test", "dev"):
                left = need[s] - have[s]
                if left > 0 and size <= max(left, num_spks) and (kind == "real" or n >= 3 * num_spks):
                    split = s
                    have[s] += size
                    break
            for spk in groups[g]:
                out[spk] = split
        if kind == "real":
            for s in ("test", "dev"):
                if have[s] < num_spks:
                    raise ValueError(
                        f"could not give the {s} split {num_spks} real voices (the groups are too "
                        "large); select more --sources."
                    )
    for spk, info in voices.items():
        if info["kind"] == "pseudo":
            out[spk] = out[info["reader"]]
    return out


def split_noise(files_by_source, fractions=SPLIT_FRACTIONS, seed=0):
    """Disjoint train/dev/test split of noise files, stratified by source.

    Each source's files are shuffled (seeded) and cut by ``fractions``; a source with
    at least 3 files gives every split at least one.

    Parameters
    ----------
    files_by_source : dict
        source -> list of paths.

    Returns
    -------
    dict
        split -> sorted list of paths.

    Example
    -------
    >>> s = split_noise({"a": [f"{i}.wav" for i in range(10)]})
    >>> [len(s[k]) for k in ("train", "dev", "test")]
    [8, 1, 1]
    """
    out = {s: [] for s in SPLITS}
    for src in sorted(files_by_source):
        files = sorted(files_by_source[src])
        rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(src.encode())]))
        files = [files[i] for i in rng.permutation(len(files))]
        n = len(files)
        if n >= 3:
            n_test = max(1, int(round(fractions["test"] * n)))
            n_dev = max(1, int(round(fractions["dev"] * n)))
        else:
            n_test = n_dev = 0
        out["test"] += files[:n_test]
        out["dev"] += files[n_test:n_test + n_dev]
        out["train"] += files[n_test + n_dev:]
    return {k: sorted(v) for k, v in out.items()}


def make_babble(utterances_by_speaker, train_speakers, n_files, rng, sample_rate=SAMPLE_RATE,
                seconds=10.0, talkers=(3, 6)):
    """Babble noise: sums of 3-6 utterances of different *training* speakers.

    Parameters
    ----------
    utterances_by_speaker : dict
        speaker -> list of utterance paths (8 kHz WAV).
    train_speakers : iterable of str
        The only speakers used.
    n_files : int
    rng : numpy.random.Generator
    sample_rate : int
    seconds : float
        Length of each babble file (utterances are looped/cut to it).
    talkers : (int, int)
        Inclusive range of the number of talkers.

    Returns
    -------
    list of (numpy.ndarray, list of str)
        Each babble signal (float32, peak 0.5) and the speakers it contains.
    """
    spks = sorted(s for s in set(train_speakers) if utterances_by_speaker.get(s))
    if len(spks) < talkers[0]:
        raise ValueError(f"babble needs at least {talkers[0]} training speakers, got {len(spks)}")
    n = int(seconds * sample_rate)
    out = []
    for _ in range(n_files):
        k = int(rng.integers(talkers[0], min(talkers[1], len(spks)) + 1))
        chosen = [spks[i] for i in rng.choice(len(spks), size=k, replace=False)]
        y = np.zeros(n)
        for spk in chosen:
            utts = utterances_by_speaker[spk]
            x, _ = read_audio(utts[int(rng.integers(len(utts)))])
            x = np.tile(x, int(np.ceil(n / len(x))))
            start = int(rng.integers(len(x) - n + 1))
            seg = x[start:start + n].astype(np.float64)
            y += seg / (np.sqrt(np.mean(seg**2)) + 1e-9)
        y *= 0.5 / (np.max(np.abs(y)) + 1e-9)
        out.append((y.astype(np.float32), chosen))
    return out


# --------------------------------------------------------------------------------------
# Synthetic voices
# --------------------------------------------------------------------------------------

#: Festival voices (package, festival voice function). kal_diphone is the same
#: recording as Flite's "kal" and us-slt-hts the same speaker as Flite's "slt":
#: each is counted once (the Flite one is left out).
FESTIVAL_VOICES = {
    "fest-kal": ("festvox-kallpc16k", "voice_kal_diphone"),
    "fest-ked": ("festvox-kdlpc16k", "voice_ked_diphone"),
    "fest-slt": ("festvox-us-slt-hts", "voice_cmu_us_slt_arctic_hts"),
    "fest-ona": ("festvox-ca-ona-hts", "voice_upc_ca_ona_hts"),
    "fest-dita": ("festvox-czech-dita", "voice_czech_dita"),
    "fest-krb": ("festvox-czech-krb", "voice_czech_krb"),
    "fest-machac": ("festvox-czech-machac", "voice_czech_machac"),
    "fest-ph": ("festvox-czech-ph", "voice_czech_ph"),
    "fest-lp": ("festvox-italp16k", "voice_lp_diphone"),
    "fest-pc": ("festvox-itapc16k", "voice_pc_diphone"),
    "fest-ru": ("festvox-ru", "voice_msu_ru_nsh_clunits"),
    "fest-lj": ("festvox-suopuhe-lj", "voice_suo_fi_lj_diphone"),
    "fest-mv": ("festvox-suopuhe-mv", "voice_hy_fi_mv_diphone"),
}
FLITE_VOICES = {"flite-awb": "awb", "flite-rms": "rms"}


def _sentences(max_sentences=4000):
    """Varied English sentences from the licence texts Debian ships."""
    folder = "/usr/share/common-licenses"
    text = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        p = os.path.join(folder, name)
        if os.path.isfile(p) and not os.path.islink(p):
            with open(p, errors="ignore") as f:
                text.append(f.read())
    words = " ".join(" ".join(text).split())
    sents = [s.strip() for s in re.split(r"(?<=[.;:!?])\s+", words)]
    sents = [s for s in sents if not re.search(r"https?:|@|[<>{}]", s)]
    # Only letters and plain punctuation: some voices' letter-to-sound rules stop on
    # digits or brackets ("2.1(b)", "claim(s)").
    sents = [" ".join(re.sub(r"[^A-Za-z,.;' ]+", " ", s).split()) for s in sents]
    sents = [s for s in sents if 30 <= len(s) <= 200 and re.search(r"[a-z]", s)]
    return sents[:max_sentences]


def synthesize_voice(voice, out_wav, text, timeout=300):
    """Synthesise ``text`` with a Festival (``fest-*``) or Flite (``flite-*``) voice to a WAV.

    Returns
    -------
    bool
        Whether a non-silent file was produced (a voice whose package is missing fails).
    """
    with tempfile.TemporaryDirectory() as tmp:
        txt = os.path.join(tmp, "t.txt")
        with open(txt, "w") as f:
            f.write(text)
        if voice in FESTIVAL_VOICES:
            cmd = ["text2wave", "-eval", f"({FESTIVAL_VOICES[voice][1]})", txt, "-o", out_wav]
        else:
            cmd = ["flite", "-voice", FLITE_VOICES[voice], "-f", txt, "-o", out_wav]
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            return False
    if r.returncode != 0 or not os.path.exists(out_wav):
        return False
    try:
        x, _ = read_audio(out_wav, mono="keep", dtype="float64")
    except (AudioError, RuntimeError):
        return False
    return x.size > 8000 and float(np.max(np.abs(x))) > 1e-3


# --------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------


def _speaker_job(args):
    """Worker: read, join and write the utterances of one voice (real or pseudo)."""
    speaker, paths, out_dir, seed, max_minutes, factor = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(speaker.encode())]))

    errors = []

    def prompts():
        seen = set()
        for p in paths:
            try:
                x = read_any(p)
            except AudioError as exc:  # one bad file does not stop the voice
                errors.append(str(exc))
                continue
            key = hash(x.tobytes())
            if key in seen:  # identical files shipped twice (e.g. sr and sr@latin)
                continue
            seen.add(key)
            yield x if factor == 1 else perturb_voice(x, SAMPLE_RATE, factor)

    utts = join_prompts(prompts(), rng, SAMPLE_RATE, max_seconds_total=max_minutes * 60)
    if errors and not utts:
        raise AudioError(f"voice {speaker}: no file could be read ({len(errors)} errors), first: {errors[0]}")
    folder = os.path.join(out_dir, "speech", speaker)
    out = []
    for i, u in enumerate(utts):
        p = os.path.join(folder, f"{speaker}-{i:04d}.wav")
        write_audio(p, u, SAMPLE_RATE)
        out.append(p)
    return speaker, out, sum(len(u) for u in utts) / SAMPLE_RATE


def _noise_job(args):
    """Worker: turn the files of one noise source into 8 kHz noise tracks."""
    name, paths, out_dir, min_seconds, max_seconds = args
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    sigs = []
    for p in paths:
        try:
            x = trim_silence(read_any(p, max_seconds=max_seconds + 5), top_db=60.0, floor_db=-70.0)
        except AudioError:
            continue
        if len(x) >= int(0.05 * SAMPLE_RATE):
            sigs.append(x)
    tracks, cur = [], []
    for x in sigs:  # long files: their first max_seconds; short effects are chained
        if len(x) >= min_seconds * SAMPLE_RATE:
            tracks.append(x[: int(max_seconds * SAMPLE_RATE)])
            continue
        cur += [x, np.zeros(int(rng.uniform(0.0, 0.3) * SAMPLE_RATE))]
        if sum(len(c) for c in cur) >= min_seconds * SAMPLE_RATE:
            tracks.append(np.concatenate(cur))
            cur = []
    if cur and sum(len(c) for c in cur) >= 1.0 * SAMPLE_RATE:
        tracks.append(np.concatenate(cur))
    out = []
    for i, t in enumerate(tracks):
        t = t * (0.5 / (np.max(np.abs(t)) + 1e-9))
        p = os.path.join(out_dir, "noise", f"{name}-{i:03d}.wav")
        write_audio(p, t.astype(np.float32), SAMPLE_RATE)
        out.append(p)
    return name, out, sum(len(t) for t in tracks) / SAMPLE_RATE


def _map(fn, jobs, workers):
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    with ctx.Pool(workers) as pool:
        return pool.map(fn, jobs, chunksize=1)


def _options(n_train, n_dev, n_test, synthetic, pseudo_speakers, seed, sources, max_minutes):
    return {
        "recipe_version": RECIPE_VERSION, "n_train": n_train, "n_dev": n_dev, "n_test": n_test,
        "synthetic": bool(synthetic), "pseudo_speakers": int(pseudo_speakers), "seed": int(seed),
        "sources": list(sources), "max_minutes_per_speaker": float(max_minutes),
        "sample_rate": SAMPLE_RATE, "num_spks": 2, "mode": "min",
    }


def build_demo_corpus(out_dir="data/demo", n_train=3000, n_dev=300, n_test=300, synthetic=False,
                      pseudo_speakers=0, seed=0, packages_root="/", force=False, sources=None,
                      max_minutes_per_speaker=MAX_MINUTES_PER_SPEAKER, num_workers=2,
                      n_babble=(24, 4, 4), verbose=True):
    """Build the demo corpus (see the module docstring for the layout).

    Parameters
    ----------
    out_dir : str
        Output folder (default ``data/demo``, git-ignored).
    n_train, n_dev, n_test : int
        Mixtures per split (2 speakers, 8 kHz, ``min`` mode, noisy).
    synthetic : bool
        Add the Festival/Flite voices (:data:`FESTIVAL_VOICES`, :data:`FLITE_VOICES`).
        Off by default: they are robotic and the real voices already exceed 40.
    pseudo_speakers : int
        Pseudo-speakers per real reader (:func:`perturb_voice` with
        :func:`pseudo_factors`), kept in their reader's split.
    seed : int
        Seed of every random choice; the output is a function of the options.
    packages_root : str
        Root under which the Debian packages are installed (``/``).
    force : bool
        Rebuild even when ``corpus_stats.json`` matches the options.
    sources : None, str or list of str
        Real-voice sources (:func:`select_sources`): ``None``/``"all"`` or
        ``"foundation"`` (the 11-voice list) or names.
    max_minutes_per_speaker : float
        Cap on the speech kept per voice, minutes.
    num_workers : int
        Processes for the per-voice and mixing work.
    n_babble : (int, int, int)
        Babble files for train, dev, test (all made of training voices).
    verbose : bool
        Print progress and the statistics table.

    Returns
    -------
    dict
        The content of ``corpus_stats.json``: ``options``, ``splits`` (per split:
        ``speakers`` {real, synthetic, pseudo}, ``speech_minutes``, ``noise_files``,
        ``mixtures``, ``hours``), ``voices`` (speaker -> kind, group, source, split,
        minutes), ``sources`` (per source: voices, minutes) and ``build_seconds``.

    Raises
    ------
    MissingPackageError
        A needed Debian package is not installed (the message gives the install command).
    ValueError
        Unknown source, or too few voices for three speaker-disjoint splits.
    """
    from nass.dataio.mixing import generate_split

    t0 = time.time()
    names = select_sources(sources)
    opts = _options(n_train, n_dev, n_test, synthetic, pseudo_speakers, seed, names, max_minutes_per_speaker)
    stats_path = os.path.join(out_dir, STATS_FILE)
    if not force and os.path.exists(stats_path):
        with open(stats_path) as f:
            old = json.load(f)
        if old.get("options") == opts:
            if verbose:
                print(f"{stats_path} matches the options: corpus already built (use --force to rebuild).")
                print(format_stats(old))
            return old
    check_packages(names + list(NOISE_SOURCES), packages_root, synthetic)
    for sub in ("speech", "noise", "synth", "Libri2Mix"):
        shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
    if os.path.exists(stats_path):
        os.remove(stats_path)

    def log(msg):
        if verbose:
            print(f"[{time.time() - t0:6.1f} s] {msg}", flush=True)

    # 1. voices
    files, voices = {}, {}
    for n in names:
        for path, spk, src in SPEECH_SOURCES[n](packages_root):
            files.setdefault(spk, []).append(path)
            voices.setdefault(spk, {"kind": "real", "group": _group_for(spk), "source": src})
    jobs = [(spk, files[spk], out_dir, seed, max_minutes_per_speaker, 1.0) for spk in sorted(files)]
    for k, f in enumerate(pseudo_factors(pseudo_speakers), start=1):
        for spk in sorted(files):
            ps = f"{spk}-p{k}"
            voices[ps] = {"kind": "pseudo", "group": voices[spk]["group"], "source": voices[spk]["source"],
                          "reader": spk, "factor": f}
            jobs.append((ps, files[spk], out_dir, seed, max_minutes_per_speaker, f))
    if synthetic:
        jobs += _synthetic_jobs(out_dir, voices, seed, max_minutes_per_speaker, log, num_workers)
    log(f"{len(jobs)} voices: reading, trimming, joining prompts")
    utts, minutes = {}, {}
    for spk, paths, seconds in _map(_speaker_job, sorted(jobs, key=lambda j: -len(j[1])), num_workers):
        if len(paths) >= 1:
            utts[spk], minutes[spk] = paths, seconds / 60
    for spk in list(voices):
        if spk not in utts:  # too little audio for one 3 s utterance
            del voices[spk]
    for spk in list(voices):
        if voices[spk]["kind"] == "pseudo" and voices[spk]["reader"] not in voices:
            del voices[spk]
    split_of = assign_splits(voices, seed=seed)

    # 2. noise
    log("noise tracks")
    noise_jobs = []
    for n, src in NOISE_SOURCES.items():
        paths = [p for p, _ in src.lister(packages_root)]
        noise_jobs.append((n, paths, out_dir, 4.0, 30.0))
    noise_by_source = {n: p for n, p, _ in _map(_noise_job, noise_jobs, num_workers)}
    noise_split = split_noise({k: v for k, v in noise_by_source.items() if v}, seed=seed)
    train_spks = [s for s in voices if split_of[s] == "train"]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    babble_speakers = set()
    for split, nb in zip(SPLITS, n_babble):
        for i, (y, spks) in enumerate(make_babble(utts, train_spks, nb, rng)):
            p = os.path.join(out_dir, "noise", f"babble-{split}-{i:03d}.wav")
            write_audio(p, y, SAMPLE_RATE)
            noise_split[split].append(p)
            babble_speakers.update(spks)
    assert all(split_of[s] == "train" for s in babble_speakers)

    # 3. mixtures
    root = os.path.join(out_dir, "Libri2Mix")
    counts = {"train": n_train, "dev": n_dev, "test": n_test}
    splits = {}
    for split in SPLITS:
        su = [(p, spk) for spk in sorted(voices) if split_of[spk] == split for p in utts[spk]]
        log(f"{split}: {counts[split]} mixtures from {len({s for _, s in su})} voices")
        generate_split(su, noise_split[split], root, split, counts[split], num_spks=2, sample_rate=SAMPLE_RATE,
                       modes=("min",), seed=seed, num_workers=num_workers)
        mix_dir = os.path.join(root, "wav8k", "min", split, "mix_both")
        frames = sum(audio_info(os.path.join(mix_dir, f)).frames for f in os.listdir(mix_dir) if f.endswith(".wav"))
        spk_here = [s for s in voices if split_of[s] == split]
        splits[split] = {
            "speakers": {k: sum(voices[s]["kind"] == k for s in spk_here) for k in ("real", "synthetic", "pseudo")},
            "speech_minutes": round(sum(minutes[s] for s in spk_here), 1),
            "utterances": sum(len(utts[s]) for s in spk_here),
            "noise_files": len(noise_split[split]),
            "mixtures": counts[split],
            "hours": round(frames / SAMPLE_RATE / 3600, 3),
        }
    per_source = {}
    for spk, info in voices.items():
        d = per_source.setdefault(info["source"] if info["kind"] != "pseudo" else "pseudo", {"voices": 0, "minutes": 0.0})
        d["voices"] += 1
        d["minutes"] = round(d["minutes"] + minutes[spk], 1)
    stats = {
        "options": opts,
        "splits": splits,
        "voices": {s: {**{k: v for k, v in voices[s].items()}, "split": split_of[s],
                       "minutes": round(minutes[s], 2), "utterances": len(utts[s])} for s in sorted(voices)},
        "sources": per_source,
        "noise": {k: len(v) for k, v in noise_by_source.items()},
        "build_seconds": round(time.time() - t0, 1),
    }
    with atomic_write(stats_path) as tmp:
        with open(tmp, "w") as f:
            json.dump(stats, f, indent=1, sort_keys=True)
    log("done")
    if verbose:
        print(format_stats(stats))
    return stats


def _synth_task(args):
    return synthesize_voice(*args)


def _synthetic_jobs(out_dir, voices, seed, max_minutes, log, num_workers=2, n_sentences=14):
    """Synthesise the Festival/Flite voices into long WAVs; return speaker jobs for them."""
    sents = _sentences()
    if not sents:
        raise MissingPackageError("no text found in /usr/share/common-licenses (package base-files)")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    folder = os.path.join(out_dir, "synth")
    os.makedirs(folder, exist_ok=True)
    jobs = []
    names = list(FESTIVAL_VOICES) + list(FLITE_VOICES)
    log(f"synthesising {len(names)} voices")
    tasks = []
    for v in names:
        pick = rng.choice(len(sents), size=min(len(sents), n_sentences), replace=False)
        tasks.append((v, os.path.join(folder, v + ".wav"), "\n".join(sents[i] for i in sorted(pick))))
    for (v, wav, _), ok in zip(tasks, _map(_synth_task, tasks, num_workers)):
        if ok:
            voices[v] = {"kind": "synthetic", "group": v, "source": "festival" if v.startswith("fest") else "flite"}
            jobs.append((v, [wav], out_dir, seed, max_minutes, 1.0))
        else:
            log(f"  {v}: no audio (package {FESTIVAL_VOICES.get(v, ('flite',))[0]} missing?), skipped")
    return jobs


def format_stats(stats):
    """The per-split statistics as a text table.

    Example
    -------
    >>> s = {"splits": {"train": {"speakers": {"real": 3, "synthetic": 0, "pseudo": 0},
    ...      "speech_minutes": 1.0, "noise_files": 2, "mixtures": 5, "hours": 0.01}}}
    >>> print(format_stats(s).splitlines()[2])
    train     3     0      0       1.0      2        5   0.01
    """
    lines = ["split  real synth pseudo  speech_min  noise  mixtures  hours", "-" * 58]
    for split, d in stats["splits"].items():
        sp = d["speakers"]
        lines.append(f"{split:<6}{sp['real']:>5}{sp['synthetic']:>6}{sp['pseudo']:>7}{d['speech_minutes']:>10}"
                     f"{d['noise_files']:>7}{d['mixtures']:>9}{d['hours']:>7}")
    return "\n".join(lines)

"""LibriMix loudness normalisation: loudness measurement, targets, gains, noise looping, 16-bit grid.

The signal half of the mixture recipe (:mod:`nass.dataio.mixing` writes a corpus with it,
:mod:`nass.dataio.dynamic_mixing` remixes on the fly with it). LibriMix (Cosentino et al.,
arXiv 2005.11262; ``JorisCos/LibriMix``, ``create_librimix_metadata.py``), facts only:
every speech source is normalised to an integrated loudness drawn from U[-33, -25] LUFS and
the noise to one drawn from U[-38, -30] LUFS (pyloudnorm, ITU-R BS.1770-4); a source that
would clip on its own is scaled to peak 0.9; a mixture that would clip is scaled as a whole
to peak 0.9. See :mod:`nass.dataio.mixing` for where this implementation differs and why.
"""

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np

from nass.dataio.audio import fit_samples

__all__ = [
    "SPEECH_LUFS",
    "NOISE_LUFS",
    "MAX_AMP",
    "BLOCK_SECONDS",
    "CROSSFADE_SECONDS",
    "measure_loudness",
    "draw_loudness_targets",
    "LoudnessGains",
    "librimix_gains",
    "loop_noise",
    "quantize_int16",
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
    scaled = [fit_samples(s * g, n) for s, g in zip(signals, gains)]
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

"""Separation metrics: SI-SNR(i), SDR(i) (mir_eval BSS Eval), PESQ-NB, ESTOI.

Definitions used by the papers this project reproduces (Zhang et al. 2024, Hu et al.
2023, Wang et al. 2024), all of which evaluate like the SpeechBrain LibriMix recipe
(``recipes/LibriMix/separation/train.py``, ``save_results``):

* SI-SNR: :func:`nass.losses.si_snr.si_snr` (Le Roux et al., ICASSP 2019, Eq. 2-4) of
  each estimate against its reference, speakers matched by the permutation with the
  best mean SI-SNR (:func:`nass.losses.pit.pit_si_snr`), averaged over speakers.
* SI-SNRi: ``mean_j [SI-SNR(est_j, s_j) - SI-SNR(mix, s_j)]`` (the improvement over
  the unprocessed mixture scored against every reference).
* SDR: BSS Eval v3 (Vincent, Gribonval & Fevotte, IEEE TASLP 2006, Eq. 10-12 with a
  512-tap distortion filter), as implemented by ``mir_eval.separation.bss_eval_sources``.
* SDRi: ``mean_j [SDR(est_j) - SDR(mix as estimate of s_j)]``, the mixture repeated
  ``num_spks`` times as the baseline estimate.
* ``mix_clean_si-snr_i`` (noisy input only, a project diagnostic, no paper): the SI-SNRi
  that the clean mixture would score as every estimate, ``mean_j [SI-SNR(mix_clean, s_j)
  - SI-SNR(mix, s_j)]``, i.e. what removing the noise perfectly while separating nothing
  gains. A model whose SI-SNRi is below it gains less than noise removal alone, so its score
  does not show that it separates the speakers (+1.59 dB on the demo corpus's test split).
* PESQ narrow-band (ITU-T P.862, ``pesq`` package, mode ``"nb"``) and ESTOI (Jensen &
  Taal, IEEE/ACM TASLP 2016, ``pystoi.stoi(..., extended=True)``), averaged over speakers.

A metric that cannot be computed for an utterance (e.g. BSS Eval with an all-zero
reference, PESQ without detectable speech) is reported as NaN with a warning naming the
utterance; means over a set ignore NaN (:func:`numpy.nanmean`).
"""

import warnings

import numpy as np
import torch

from nass.losses.pit import apply_perm, pit_si_snr
from nass.losses.si_snr import si_snr

#: Column order of the per-utterance metrics (optional columns appended when computed).
BASE_METRICS = ("si-snr", "si-snr_i", "sdr", "sdr_i", "mix_si-snr")
#: Perceptual metrics added with ``pesq_estoi=True``.
PERCEPTUAL_METRICS = ("pesq", "estoi")
#: Added when a noise estimate and a noise reference are both available.
NOISE_METRICS = ("noise_si-snr",)
#: Added when the input is noisy and its clean mixture is known (denoise-only reference).
CLEAN_MIX_METRICS = ("mix_clean_si-snr_i",)

#: PESQ narrow-band is defined at these rates (Hz); other rates are resampled to 16 kHz.
PESQ_RATES = (8000, 16000)


def _as_pair(est, ref, caller):
    """``est`` and ``ref`` as float64 arrays of one shape ``[num_spks, time]``; ValueError otherwise."""
    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if est.shape != ref.shape or est.ndim != 2:
        raise ValueError(
            f"{caller}: expected est and ref of the same shape [num_spks, time], got {est.shape} and {ref.shape}"
        )
    return est, ref


def sdr_mir_eval(est, ref, compute_permutation=True):
    """BSS Eval SDR (dB) of each reference, via ``mir_eval.separation.bss_eval_sources``.

    Parameters
    ----------
    est : numpy.ndarray
        Estimated sources ``[num_spks, time]``.
    ref : numpy.ndarray
        Reference sources ``[num_spks, time]``.
    compute_permutation : bool
        ``True`` (mir_eval's and the SpeechBrain recipe's default): mir_eval matches
        estimates to references by the permutation with the best mean SIR, so the
        result does not depend on the order of ``est``. ``False``: ``est[j]`` is scored
        against ``ref[j]`` (faster by a factor ``num_spks``; use it when the estimates
        are known to be aligned, or identical like the mixture baseline).

    Returns
    -------
    sdr : numpy.ndarray
        ``[num_spks]`` SDR in dB, indexed by reference.
    perm : numpy.ndarray
        ``[num_spks]``: ``perm[j]`` is the estimate matched to reference ``j``.

    Raises
    ------
    ValueError
        Shapes differ, or (from mir_eval) an all-zero reference or estimate.

    Source
    ------
    Vincent et al., "Performance measurement in blind audio source separation",
    IEEE TASLP 14(4), 2006; ``mir_eval.separation`` (Raffel et al., ISMIR 2014).

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.standard_normal((2, 4000))
    >>> sdr, perm = sdr_mir_eval(ref[::-1] + 0.01 * rng.standard_normal((2, 4000)), ref)
    >>> perm.tolist(), bool((sdr > 30).all())
    ([1, 0], True)
    """
    import mir_eval.separation

    est, ref = _as_pair(est, ref, "sdr_mir_eval")
    with warnings.catch_warnings():
        # mir_eval 0.8 marks bss_eval_sources deprecated (FutureWarning) but it is the
        # implementation every paper in the field reports; the pin keeps it available.
        warnings.simplefilter("ignore", FutureWarning)
        sdr, _sir, _sar, perm = mir_eval.separation.bss_eval_sources(
            ref, est, compute_permutation=compute_permutation
        )
    return np.asarray(sdr, dtype=np.float64), np.asarray(perm, dtype=np.int64)


def sdr_fast_bss_eval(est, ref):
    """BSS Eval SDR (dB) of ``est[j]`` against ``ref[j]``, via ``fast_bss_eval``.

    The same quantity as :func:`sdr_mir_eval` with ``compute_permutation=False``
    (512-tap distortion filter, exact solve): the SDR of estimate ``j`` depends only on
    the pair ``(est[j], ref[j])``, so each pair is solved alone, which is several times
    faster than mir_eval. ``tests/test_metrics.py`` checks the agreement (< 0.05 dB;
    about 1e-14 dB in practice).

    Parameters
    ----------
    est, ref : numpy.ndarray
        ``[num_spks, time]``, already aligned.

    Returns
    -------
    numpy.ndarray
        ``[num_spks]`` SDR in dB.

    Raises
    ------
    ValueError
        Shapes differ, or an all-zero reference (as mir_eval).

    Source
    ------
    Scheibler, "SDR -- Medium Rare with Fast Computations", ICASSP 2022
    (package ``fast_bss_eval``); Vincent et al., IEEE TASLP 2006.

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.standard_normal((2, 4000))
    >>> bool((sdr_fast_bss_eval(ref + 0.01 * rng.standard_normal((2, 4000)), ref) > 30).all())
    True
    """
    import fast_bss_eval

    est, ref = _as_pair(est, ref, "sdr_fast_bss_eval")
    if not np.all(np.any(ref != 0, axis=1)):
        raise ValueError("sdr_fast_bss_eval: an all-zero reference has no SDR")
    return np.array(
        [float(fast_bss_eval.sdr(ref[j : j + 1], est[j : j + 1], filter_length=512)[0]) for j in range(ref.shape[0])]
    )


#: ``sdr_backend`` choices of :func:`separation_metrics`.
SDR_BACKENDS = ("mir_eval", "fast_bss_eval")


def _pesq_nb(ref, est, sample_rate, utt_id):
    """PESQ narrow-band of one signal pair, NaN (with a warning) when PESQ refuses."""
    from pesq import pesq

    if sample_rate not in PESQ_RATES:
        from nass.dataio.audio import resample_polyphase

        ref = resample_polyphase(ref, sample_rate, 16000)
        est = resample_polyphase(est, sample_rate, 16000)
        sample_rate = 16000
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # pesq divides silent input by 0
            return float(pesq(sample_rate, ref.astype(np.float64), est.astype(np.float64), "nb"))
    except Exception as exc:  # NoUtterancesError, BufferTooShortError, PesqError, ...
        warnings.warn(f"{utt_id}: PESQ could not be computed ({type(exc).__name__}: {exc}); reported as NaN")
        return float("nan")


def _estoi(ref, est, sample_rate, utt_id):
    from pystoi import stoi

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            value = float(stoi(ref, est, sample_rate, extended=True))
    except Exception as exc:
        warnings.warn(f"{utt_id}: ESTOI could not be computed ({type(exc).__name__}: {exc}); reported as NaN")
        return float("nan")
    return value


def _as_numpy(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float64)


def _as_2d_time_major(x, name, caller):
    x = _as_numpy(x)
    if x.ndim != 2:
        raise ValueError(f"{caller}: {name} must be [time, num_spks], got shape {x.shape}")
    return x


def separation_metrics(
    mix,
    est_sources,
    targets,
    sample_rate,
    est_noise=None,
    noise=None,
    pesq_estoi=False,
    utt_id="utterance",
    sdr_backend="mir_eval",
    mix_clean=None,
):
    """All metrics of one utterance, speakers matched by the best SI-SNR permutation.

    Parameters
    ----------
    mix : numpy.ndarray or torch.Tensor
        Mixture ``[time]``.
    est_sources : numpy.ndarray or torch.Tensor
        Estimates ``[time, num_spks]``, any speaker order.
    targets : numpy.ndarray or torch.Tensor
        References ``[time, num_spks]``.
    sample_rate : int
        Hz (PESQ and ESTOI only).
    est_noise, noise : array, optional
        Noise estimate and reference ``[time]``; ``noise_si-snr`` is added when both are given.
    pesq_estoi : bool
        Also compute PESQ-NB and ESTOI (slow; several seconds per minute of audio).
    utt_id : str
        Named in warnings.
    sdr_backend : {"mir_eval", "fast_bss_eval"}
        ``mir_eval.separation.bss_eval_sources`` (the papers' definition) or
        :func:`sdr_fast_bss_eval` (the same values, several times faster).
    mix_clean : array, optional
        The noise-free mixture ``[time]`` of a noisy ``mix``; adds ``mix_clean_si-snr_i``.

    Returns
    -------
    dict
        ``si-snr``, ``si-snr_i``, ``sdr``, ``sdr_i``, ``mix_si-snr`` (dB, averaged over
        speakers); ``pesq``, ``estoi`` with ``pesq_estoi``; ``noise_si-snr`` (dB) with a
        noise pair; ``mix_clean_si-snr_i`` (dB) with ``mix_clean``; and ``perm`` (tuple,
        ``perm[j]`` = estimate index matched to reference ``j``). SDR values are NaN
        (warning) when mir_eval refuses the input, e.g. an all-zero reference.

    Raises
    ------
    ValueError
        Shapes that do not match.

    Notes
    -----
    SDR is computed on the SI-SNR-aligned estimates with ``compute_permutation=False``
    (estimate ``j`` scored against reference ``j``). The SpeechBrain recipe lets
    mir_eval choose its own matching (best mean SIR, ``compute_permutation=True``),
    which costs ``num_spks`` times more (BSS Eval re-solves a ``512 num_spks``-sized
    system per estimate/reference pair) and differs only when the estimates are so
    poor that the two criteria disagree on the matching.

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s = rng.standard_normal((4000, 2))
    >>> m = separation_metrics(s.sum(1), s[:, ::-1], s, 8000)
    >>> m["perm"], m["si-snr"] > 60, abs(m["mix_si-snr"]) < 1
    ((1, 0), True, True)
    """
    mix = _as_numpy(mix)
    est = _as_2d_time_major(est_sources, "est_sources", "separation_metrics")
    ref = _as_2d_time_major(targets, "targets", "separation_metrics")
    if mix.ndim != 1 or est.shape != ref.shape or mix.shape[0] != ref.shape[0]:
        raise ValueError(
            f"separation_metrics ({utt_id}): expected mix [time], est_sources and targets "
            f"[time, num_spks] of one length; got {mix.shape}, {est.shape}, {ref.shape}"
        )
    num_spks = ref.shape[1]
    est_t = torch.from_numpy(est).unsqueeze(0)
    ref_t = torch.from_numpy(ref).unsqueeze(0)
    _, perm = pit_si_snr(est_t, ref_t)
    aligned_t = apply_perm(est_t, perm)[0]  # [T, S]
    perm = tuple(int(p) for p in perm[0])
    sisnr = si_snr(aligned_t.T, ref_t[0].T)  # [S]
    mix_t = torch.from_numpy(mix).unsqueeze(0).expand(num_spks, -1)
    mix_sisnr = si_snr(mix_t, ref_t[0].T)  # [S]
    out = {
        "si-snr": float(sisnr.mean()),
        "si-snr_i": float((sisnr - mix_sisnr).mean()),
    }
    aligned = aligned_t.numpy()
    if sdr_backend not in SDR_BACKENDS:
        raise ValueError(f"sdr_backend must be one of {SDR_BACKENDS}, got {sdr_backend!r}")
    if sdr_backend == "fast_bss_eval":
        sdr_fn = sdr_fast_bss_eval
    else:
        sdr_fn = lambda e, r: sdr_mir_eval(e, r, compute_permutation=False)[0]  # noqa: E731
    try:
        sdr = sdr_fn(aligned.T, ref.T)
        sdr_mix = sdr_fn(np.repeat(mix[None], num_spks, axis=0), ref.T)
        out["sdr"] = float(sdr.mean())
        out["sdr_i"] = float((sdr - sdr_mix).mean())
    except ValueError as exc:
        warnings.warn(f"{utt_id}: SDR ({sdr_backend}) could not be computed ({exc}); reported as NaN")
        out["sdr"] = out["sdr_i"] = float("nan")
    out["mix_si-snr"] = float(mix_sisnr.mean())
    if mix_clean is not None:
        clean = _as_numpy(mix_clean)
        if clean.shape != mix.shape:
            raise ValueError(f"separation_metrics ({utt_id}): mix_clean {clean.shape} and mix {mix.shape} differ")
        clean_t = torch.from_numpy(clean).unsqueeze(0).expand(num_spks, -1)
        out["mix_clean_si-snr_i"] = float((si_snr(clean_t, ref_t[0].T) - mix_sisnr).mean())
    if pesq_estoi:
        out["pesq"] = float(
            np.mean([_pesq_nb(ref[:, j], aligned[:, j], sample_rate, utt_id) for j in range(num_spks)])
        )
        out["estoi"] = float(
            np.mean([_estoi(ref[:, j], aligned[:, j], sample_rate, utt_id) for j in range(num_spks)])
        )
    if est_noise is not None and noise is not None:
        en = torch.from_numpy(_as_numpy(est_noise))
        nz = torch.from_numpy(_as_numpy(noise))
        if en.shape != nz.shape:
            raise ValueError(f"separation_metrics ({utt_id}): est_noise {tuple(en.shape)} and noise {tuple(nz.shape)} differ")
        out["noise_si-snr"] = float(si_snr(en, nz))
    out["perm"] = perm
    return out


def segment_permutation_switches(est_sources, targets, sample_rate, segment_seconds=0.5, margin_db=1.0,
                                 min_energy_ratio=1e-3):
    """Speaker switches inside one utterance: the utterance's permutation against each segment's best.

    Utterance-level PIT (Kolbaek et al., IEEE/ACM TASLP 2017, arXiv 1703.06284) scores one
    speaker order for the whole utterance, so a model that swaps its outputs half-way is
    scored as if it had separated badly. This diagnostic re-scores each ``segment_seconds``
    segment in which every speaker is active: when the other order is better than the
    utterance's by more than ``margin_db`` (sum of the speakers' SI-SNR, dB), the segment
    counts as switched, and its outputs are re-ordered in a second estimate. The SI-SNR of
    that re-ordered estimate bounds what removing the switches alone could gain; on a poor
    separation some segments flip by chance, so the share is an upper bound of real
    switches. A project diagnostic (issue 21); no paper defines it.

    Parameters
    ----------
    est_sources : numpy.ndarray or torch.Tensor
        Estimates ``[time, num_spks]``, any speaker order.
    targets : numpy.ndarray or torch.Tensor
        References ``[time, num_spks]``.
    sample_rate : int
        Hz.
    segment_seconds : float
        Segment length (s); a last segment shorter than half of it is left out.
    margin_db : float
        How much better (dB, summed over speakers) the other order must be for a switch.
    min_energy_ratio : float
        A segment counts only when every reference holds at least this share of the
        energy of the loudest reference's segment (every speaker talks).

    Returns
    -------
    dict
        ``si-snr`` (dB, utterance PIT, mean over speakers), ``segment_oracle_si-snr`` (dB,
        the same after re-ordering the switched segments), ``segments`` (segments where
        every speaker talks), ``switched`` (how many of them are switched) and ``perm``
        (the utterance's permutation, as :func:`separation_metrics`).

    Raises
    ------
    ValueError
        Shapes that differ or are not ``[time, num_spks]``, or a segment shorter than
        two samples.

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s = rng.standard_normal((8000, 2))
    >>> est = s.copy(); est[4000:] = s[4000:, ::-1]  # outputs swapped after 0.5 s
    >>> m = segment_permutation_switches(est, s, 8000, segment_seconds=0.25)
    >>> m["segments"], m["switched"], round(m["segment_oracle_si-snr"]) > 60, m["si-snr"] < 1
    (4, 2, True, True)
    """
    est = _as_2d_time_major(est_sources, "est_sources", "segment_permutation_switches")
    ref = _as_2d_time_major(targets, "targets", "segment_permutation_switches")
    if est.shape != ref.shape:
        raise ValueError(f"segment_permutation_switches: est_sources {est.shape} and targets {ref.shape} differ")
    seg = int(round(segment_seconds * sample_rate))
    if seg < 2:
        raise ValueError(f"segment_permutation_switches: segment_seconds={segment_seconds} is under 2 samples")
    est_t = torch.from_numpy(est).unsqueeze(0)
    ref_t = torch.from_numpy(ref).unsqueeze(0)
    _, perm = pit_si_snr(est_t, ref_t)
    aligned = apply_perm(est_t, perm)[0].numpy()
    oracle = aligned.copy()
    segments = switched = 0
    for start in range(0, ref.shape[0], seg):
        stop = min(ref.shape[0], start + seg)
        if stop - start < max(2, seg // 2):
            continue
        energy = (ref[start:stop] ** 2).sum(0)
        if energy.max() <= 0 or (energy < min_energy_ratio * energy.max()).any():
            continue
        segments += 1
        e = torch.from_numpy(aligned[start:stop]).unsqueeze(0)
        r = torch.from_numpy(ref[start:stop]).unsqueeze(0)
        loss, seg_perm = pit_si_snr(e, r)
        kept = float(si_snr(e[0].T, r[0].T).sum())
        best = -float(loss[0]) * ref.shape[1]
        if best > kept + margin_db:
            switched += 1
            oracle[start:stop] = aligned[start:stop][:, seg_perm[0].numpy()]
    ref_tt = torch.from_numpy(ref).T
    return {
        "si-snr": float(si_snr(torch.from_numpy(aligned).T, ref_tt).mean()),
        "segment_oracle_si-snr": float(si_snr(torch.from_numpy(oracle).T, ref_tt).mean()),
        "segments": segments,
        "switched": switched,
        "perm": tuple(int(p) for p in perm[0]),
    }

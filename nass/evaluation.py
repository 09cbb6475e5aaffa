"""Evaluate a separator on a prepared split: per-utterance CSV, means, example audio.

The separator runs sequentially in this process (``torch.no_grad``); the metrics
(mir_eval's BSS Eval dominates the cost) are computed by ``num_workers`` worker
processes while the next utterances are being separated. Metrics follow
:mod:`nass.metrics` (the protocol of the SpeechBrain LibriMix recipe, which the NASS,
GM and GeCo papers report).
"""

import concurrent.futures
import csv
import logging
import math
import multiprocessing
import os

import numpy as np
import torch

from nass.correction.modes import DEFAULT_MODE, get_mode
from nass.dataio.audio import limit_peak, read_audio, write_audio
from nass.dataio.paths import path_inside, safe_name  # noqa: F401 (also imported from here)
from nass.losses.pit import apply_perm, pit_si_snr
from nass.metrics import BASE_METRICS, CLEAN_MIX_METRICS, NOISE_METRICS, PERCEPTUAL_METRICS, separation_metrics

logger = logging.getLogger(__name__)

#: An SI-SNRi below this (dB) means the model hardly separates: flagged in the summary.
LOW_SI_SNR_I = 1.0


def _load_refs(row, num_spks, sample_rate):
    """Mixture ``[T]``, references ``[T, S]``, noise ``[T]`` or None, and clean mixture
    ``[T]`` or None (None unless the input is noisy and the row names its clean mixture:
    ``mix_clean_wav`` set and not ``mix_wav``) of one row."""
    mix, _ = read_audio(row["mix_wav"], sample_rate=sample_rate)
    refs = [read_audio(row[f"s{j}_wav"], sample_rate=sample_rate)[0] for j in range(1, num_spks + 1)]
    noise = read_audio(row["noise_wav"], sample_rate=sample_rate)[0] if row.get("noise_wav") else None
    clean_wav = row.get("mix_clean_wav")
    clean = None
    if clean_wav and os.path.abspath(clean_wav) != os.path.abspath(row["mix_wav"]):
        clean = read_audio(clean_wav, sample_rate=sample_rate)[0]
    extra = [x for x in (noise, clean) if x is not None]
    named = [("mix_wav", mix)] + [(f"s{j}_wav", r) for j, r in enumerate(refs, 1)]
    named += [(k, x) for k, x in (("noise_wav", noise), ("mix_clean_wav", clean)) if x is not None]
    n = len(mix)
    wrong = [f"{row[k]} ({len(x)} samples)" for k, x in named[1:] if len(x) != n]
    if wrong:
        from nass.dataio.audio import AudioError

        raise AudioError(
            f"{row['ID']}: reference length differs from the mixture {row['mix_wav']} ({n} samples): "
            f"{', '.join(wrong)}. Scoring against a cut or padded reference would be wrong; re-create the "
            "files or re-run the data preparation (which checks lengths)."
        )
    targets = np.stack([r[:n] for r in refs], axis=1)
    return tuple(x[:n] if x is not None else None for x in (mix, targets, noise, clean))


def _score(task):
    """Worker: read the references of one utterance and compute its metrics."""
    row, est, est_noise, num_spks, sample_rate, pesq_estoi, sdr_backend = task
    mix, targets, noise, clean = _load_refs(row, num_spks, sample_rate)
    est = est[: len(mix)]
    est_noise = est_noise[: len(mix)] if est_noise is not None else None
    metrics = separation_metrics(
        mix, est, targets, sample_rate, est_noise=est_noise, noise=noise, pesq_estoi=pesq_estoi, utt_id=row["ID"],
        sdr_backend=sdr_backend, mix_clean=clean,
    )
    if est_noise is not None and noise is None:
        metrics["noise_si-snr"] = float("nan")
    return metrics


def _worker_init():
    torch.set_num_threads(1)


def _start_pool(num_workers):
    """The process pool computing the metrics.

    ``fork`` where the platform has it: workers start in milliseconds (no re-import of
    torch) and the calling script needs no ``if __name__ == "__main__"`` guard. The
    workers only run NumPy/SciPy (mir_eval, PESQ, ESTOI) and single-threaded torch
    (``torch.set_num_threads(1)``, as PyTorch's own DataLoader workers do), never CUDA.
    Elsewhere ``spawn`` (then the caller's script must have the main guard).
    """
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=int(num_workers), mp_context=context, initializer=_worker_init
    )


def _write_examples(folder, row, mix, est, est_noise, targets, sample_rate, stage=None):
    """Write one example, estimates reordered to match the references (staged in ``stage``)."""
    perm = pit_si_snr(torch.from_numpy(est).unsqueeze(0).double(), torch.from_numpy(targets).unsqueeze(0).double())[1]
    aligned = apply_perm(torch.from_numpy(est).unsqueeze(0), perm)[0].numpy()
    files = {"mix.wav": mix}
    for j in range(aligned.shape[1]):
        files[f"s{j + 1}.wav"] = aligned[:, j]
        files[f"s{j + 1}_ref.wav"] = targets[:, j]
    if est_noise is not None:
        files["noise_est.wav"] = est_noise
    for name, wav in files.items():
        wav = limit_peak(wav)
        if stage is None:
            write_audio(os.path.join(folder, name), wav, sample_rate)
        else:
            stage.write_audio(os.path.join(folder, name), wav, sample_rate)


def _fmt(value):
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def evaluate_manifest(
    separate_fn,
    manifest_csv,
    out_dir,
    num_spks,
    sample_rate,
    num_workers=2,
    save_examples=5,
    pesq_estoi=False,
    csv_name="test_metrics.csv",
    examples_name="examples",
    max_utterances=None,
    sdr_backend="mir_eval",
    overwrite=False,
    progress=None,
):
    """Separate every utterance of a manifest and score it.

    Parameters
    ----------
    separate_fn : callable
        ``separate_fn(mix [1, T] float tensor) -> (est_sources [1, T, S], est_noise [1, T] or None)``,
        e.g. :meth:`nass.inference.Separator.separate_batch` (which applies a GeCo
        corrector when it holds one). Called under ``torch.no_grad``, one utterance at a time.
    manifest_csv : str
        Manifest (:func:`nass.dataio.manifest.read_manifest`): every file is checked first.
    out_dir : str
        Receives ``test_metrics.csv`` and ``examples/<ID>/`` (IDs sanitised with
        :func:`safe_name`, so nothing is written outside ``out_dir``).
    num_spks : int
        Number of speakers (2 or 3).
    sample_rate : int
        Hz; every file must have this rate.
    num_workers : int
        Worker processes for the metrics; ``0`` computes them in this process. Results
        are identical either way.
    save_examples : int
        How many utterances (the first ones) to save as WAV: ``mix``, ``s<j>`` (estimate
        aligned to reference ``j`` by the best SI-SNR permutation), ``s<j>_ref`` and
        ``noise_est`` when the model estimates noise.
    pesq_estoi : bool
        Also compute PESQ-NB and ESTOI.
    csv_name : str
        Name of the per-utterance CSV in ``out_dir`` (default ``test_metrics.csv``).
    examples_name : str
        Sub-folder of ``out_dir`` for the example audio (default ``examples``).
    max_utterances : int, optional
        Score only the first ``max_utterances`` rows of the manifest (quick runs); a
        positive number (``ValueError`` otherwise: ``-1`` would silently drop the last row).
    sdr_backend : {"mir_eval", "fast_bss_eval"}
        SDR implementation (:func:`nass.metrics.separation_metrics`): the same values,
        ``fast_bss_eval`` several times faster.
    overwrite : bool
        Replace the CSV and examples of an earlier evaluation in ``out_dir``; otherwise
        they are refused (``FileExistsError``) before anything is separated. All outputs
        are staged and renamed into place at the end
        (:class:`nass.dataio.audio.OutputStage`): a failure leaves earlier results as they
        were and removes only what this call created.
    progress : bool, optional
        A ``tqdm`` progress bar on stderr (utterances separated): ``None`` (default)
        shows it on a terminal only, ``True`` always, ``False`` never.

    Returns
    -------
    dict
        Means over utterances (NaN ignored) of ``si-snr``, ``si-snr_i``, ``sdr``,
        ``sdr_i``, ``mix_si-snr`` [, ``pesq``, ``estoi``] [, ``noise_si-snr``]
        [, ``mix_clean_si-snr_i``: the denoise-only reference of
        :func:`nass.metrics.separation_metrics`, when the input is noisy and the manifest
        names its clean mixtures], plus ``num_utterances``.

    Raises
    ------
    nass.dataio.manifest.DatasetError, nass.dataio.audio.AudioError
        Bad manifest or audio (named).
    ValueError
        ``separate_fn`` output of the wrong shape; ``max_utterances`` < 1; a reference
        whose length differs from its mixture (``AudioError``, files named).
    FileExistsError
        Earlier results in ``out_dir`` and ``overwrite`` is False.

    Writes
    ------
    ``<out_dir>/<csv_name>`` (atomic): columns ``ID`` then the metrics, one row per
    utterance and a final row ``ID=mean``.
    """
    from nass.dataio.manifest import read_manifest

    from nass.dataio.audio import OutputStage

    if max_utterances is not None and int(max_utterances) < 1:
        raise ValueError(f"--max_utterances {max_utterances}: must be a positive number of utterances (omit it for all)")
    rows = read_manifest(manifest_csv, num_spks)
    if max_utterances is not None:
        rows = rows[: int(max_utterances)]
    stage = OutputStage(overwrite=overwrite)
    csv_path = stage.claim(path_inside(out_dir, csv_name))
    examples_dir = path_inside(out_dir, examples_name)
    if save_examples and not overwrite and os.path.isdir(examples_dir) and os.listdir(examples_dir):
        raise FileExistsError(
            f"{examples_dir}: holds examples of an earlier evaluation. Pass --overwrite to replace them, or "
            "choose another --out folder."
        )
    try:
        means = _evaluate_rows(stage, rows, separate_fn, csv_path, examples_dir, num_spks, sample_rate, num_workers,
                               save_examples, pesq_estoi, sdr_backend, manifest_csv, progress)
        stage.commit()
    except BaseException:
        stage.abort()
        raise
    summary = format_summary(means)
    logger.info("%s", summary)
    print(summary)
    return means


def _evaluate_rows(stage, rows, separate_fn, csv_path, examples_dir, num_spks, sample_rate, num_workers,
                   save_examples, pesq_estoi, sdr_backend, manifest_csv, progress):
    """The body of :func:`evaluate_manifest`: every output goes through ``stage``."""
    used_names = set()
    results = [None] * len(rows)
    has_noise_est = None

    executor = _start_pool(num_workers) if num_workers and num_workers > 0 else None
    pending = {}
    max_pending = 4 * int(num_workers or 1)

    def drain(block_until):
        while len(pending) > block_until:
            done, _ = concurrent.futures.wait(list(pending), return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                results[pending.pop(fut)] = fut.result()

    try:
        from tqdm import tqdm

        bar = tqdm(rows, desc=f"separating {os.path.basename(manifest_csv)}", unit="utt",
                   disable=None if progress is None else not progress)
        for i, row in enumerate(bar):
            mix, _ = read_audio(row["mix_wav"], sample_rate=sample_rate)
            with torch.no_grad():
                est, est_noise = separate_fn(torch.from_numpy(mix).unsqueeze(0))
            if est.dim() != 3 or est.shape[0] != 1 or est.shape[2] != num_spks:
                raise ValueError(
                    f"{row['ID']}: separate_fn returned est_sources of shape {tuple(est.shape)}, "
                    f"expected [1, {len(mix)}, {num_spks}]"
                )
            est = est[0].detach().cpu().float().numpy()
            est_noise = est_noise[0].detach().cpu().float().numpy() if est_noise is not None else None
            has_noise_est = est_noise is not None if has_noise_est is None else has_noise_est
            if i < save_examples:
                name = safe_name(row["ID"])
                while name in used_names:
                    name += "_"
                used_names.add(name)
                ref_mix, targets, _, _ = _load_refs(row, num_spks, sample_rate)
                n = len(ref_mix)
                _write_examples(
                    path_inside(examples_dir, name), row, ref_mix, est[:n],
                    est_noise[:n] if est_noise is not None else None, targets, sample_rate, stage=stage,
                )
            task = (row, est, est_noise, num_spks, sample_rate, pesq_estoi, sdr_backend)
            if executor is None:
                results[i] = _score(task)
            else:
                pending[executor.submit(_score, task)] = i
                drain(max_pending)
        drain(0)
    except BaseException:
        for fut in pending:
            fut.cancel()
        raise
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    columns = list(BASE_METRICS)
    if pesq_estoi:
        columns += list(PERCEPTUAL_METRICS)
    if has_noise_est:
        columns += list(NOISE_METRICS)
    if any(c in r for r in results for c in CLEAN_MIX_METRICS):
        columns += list(CLEAN_MIX_METRICS)
    means = {}
    for c in columns:
        values = np.array([r.get(c, float("nan")) for r in results], dtype=np.float64)
        means[c] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    with open(stage.path(csv_path), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ID"] + columns)
        for row, res in zip(rows, results):
            writer.writerow([row["ID"]] + [_fmt(res.get(c, float("nan"))) for c in columns])
        writer.writerow(["mean"] + [_fmt(means[c]) for c in columns])
    means["num_utterances"] = len(rows)
    return means


def format_summary(means):
    """A short human-readable table of the means (mixture SI-SNR next to SI-SNRi).

    Example
    -------
    >>> print(format_summary({"si-snr": 10.0, "si-snr_i": 0.2, "sdr": 9.0, "sdr_i": 0.1,
    ...                       "mix_si-snr": 9.8, "num_utterances": 3}).splitlines()[1])
    mixture SI-SNR   9.80 dB | SI-SNR  10.00 dB | SI-SNRi   0.20 dB
    """
    g = lambda k: means.get(k, float("nan"))  # noqa: E731
    lines = [
        f"evaluated {means.get('num_utterances', '?')} utterances",
        f"mixture SI-SNR {g('mix_si-snr'):6.2f} dB | SI-SNR {g('si-snr'):6.2f} dB | SI-SNRi {g('si-snr_i'):6.2f} dB",
        f"SDR {g('sdr'):6.2f} dB | SDRi {g('sdr_i'):6.2f} dB",
    ]
    if "pesq" in means:
        lines.append(f"PESQ-NB {g('pesq'):.3f} | ESTOI {g('estoi'):.3f}")
    if "noise_si-snr" in means:
        lines.append(f"noise SI-SNR {g('noise_si-snr'):6.2f} dB")
    if "mix_clean_si-snr_i" in means:
        lines.append(
            f"denoise-only reference (the clean mixture as every estimate) SI-SNRi {g('mix_clean_si-snr_i'):6.2f} dB"
        )
        if g("si-snr_i") < g("mix_clean_si-snr_i"):
            lines.append(
                "NOTE: SI-SNRi below the denoise-only reference: the model gains less than removing "
                "the noise alone would, so this score does not show that it separates the speakers"
            )
    if not g("si-snr_i") >= LOW_SI_SNR_I:
        lines.append(
            f"WARNING: SI-SNRi below {LOW_SI_SNR_I} dB: the model barely improves on the mixture "
            "(untrained, wrong checkpoint, or mismatched data?)"
        )
    return "\n".join(lines)


def evaluate_with_correction(
    model,
    sample_rate,
    num_spks,
    manifest_csv,
    out_dir,
    corrector=None,
    correction_mode=DEFAULT_MODE,
    correction_steps=30,
    device="cpu",
    chunk_seconds=0.0,
    num_workers=2,
    save_examples=5,
    pesq_estoi=False,
    max_utterances=None,
    seed=0,
    sdr_backend="mir_eval",
    overwrite=False,
):
    """Score a separator alone and, with a GeCo / Fast-GeCo corrector, after correction.

    Every utterance and every speaker is scored both times (the reference
    ``WangHelin1997/Fast-GeCo`` ``eval-fastgeco.py`` scores speaker 1 only, and with its
    default ``--debug`` only 2 files). Separation is deterministic, so both tables score
    the same estimates, before and after correction.

    Parameters
    ----------
    model : torch.nn.Module
        The separator (:func:`nass.inference.load_separator`).
    sample_rate, num_spks : int
        Hz; speakers.
    manifest_csv, out_dir : str
        As :func:`evaluate_manifest`.
    corrector : nass.correction.GeCoModel, optional
        Without it only the separator is scored.
    correction_mode : str or sequence of str
        Keys of :data:`nass.correction.modes.CORRECTION_MODES`: ``"fast-geco"``, ``"geco"``
        or both (one table each).
    correction_steps : int
        GeCo reverse steps (reference: 30).
    device : str
    chunk_seconds : float
        :class:`nass.inference.Separator` chunking (0: whole utterances, the papers' protocol).
    num_workers, save_examples, pesq_estoi, max_utterances, sdr_backend, overwrite
        As :func:`evaluate_manifest` (PESQ-NB and ESTOI on by default here).
    seed : int
        ``torch.manual_seed`` before each corrected pass (the samplers draw noise).

    Returns
    -------
    dict
        ``{"separator": means, "<mode>": means, ...}`` (see :func:`evaluate_manifest`).

    Writes
    ------
    ``<out_dir>/test_metrics.csv`` and ``examples/`` (separator alone);
    ``<out_dir>/test_metrics_<mode>.csv`` and ``examples_<mode>/`` per correction mode;
    ``<out_dir>/correction_summary.csv``: each mode's paired SI-SNRi difference to the
    separator alone with its 95 % interval (printed, with a WARNING when worse;
    :func:`nass.correction.report.correction_summary`).

    Example
    -------
    See ``tests/test_correction_recipe.py`` (``nass-evaluate --corrector``).
    """
    from nass.inference import Separator

    modes = [correction_mode] if isinstance(correction_mode, str) else list(correction_mode)
    modes = [get_mode(mode, "correction_mode").name for mode in modes]  # unknown: fails before any scoring
    common = dict(num_spks=num_spks, sample_rate=int(sample_rate), num_workers=num_workers,
                  save_examples=save_examples, pesq_estoi=pesq_estoi, max_utterances=max_utterances,
                  sdr_backend=sdr_backend, overwrite=overwrite)
    plain = Separator(model, sample_rate, chunk_seconds=chunk_seconds, device=device)
    results = {"separator": evaluate_manifest(plain.separate_batch, manifest_csv, out_dir, **common)}
    if corrector is None:
        return results
    for mode in modes:
        corrected = Separator(model, sample_rate, chunk_seconds=chunk_seconds, device=device, corrector=corrector,
                              correction_mode=mode, correction_steps=correction_steps)
        torch.manual_seed(seed)
        print(get_mode(mode).label(correction_steps))
        results[mode] = evaluate_manifest(
            corrected.separate_batch, manifest_csv, out_dir, csv_name=f"test_metrics_{mode}.csv",
            examples_name=f"examples_{mode}", **common,
        )
    from nass.correction.report import correction_summary  # paired delta to the identity, warnings

    correction_summary(out_dir, {mode: f"test_metrics_{mode}.csv" for mode in modes})
    return results


class MissingMeanRow(ValueError):
    """A ``test_metrics.csv`` without its ``mean`` row: the evaluation did not finish."""


def read_mean_row(csv_path):
    """The ``mean`` row of a ``test_metrics.csv`` and the number of utterances scored.

    Parameters
    ----------
    csv_path : str
        A table written by :func:`evaluate_manifest` (one row per utterance, values in dB,
        then a row whose ``ID`` is ``mean``).

    Returns
    -------
    tuple
        ``(means, count)``: ``{column: float}`` of the mean row (an empty or non-numeric
        cell is ``nan``) and the number of utterance rows.

    Raises
    ------
    OSError
        The file cannot be read.
    MissingMeanRow
        (a ``ValueError``) no ``mean`` row: the evaluation did not finish; the message
        names the file.

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "test_metrics.csv")
    >>> _ = open(p, "w").write("ID,si-snr_i,sdr_i\\nu1,1.0,2.0\\nu2,3.0,\\nmean,2.0,\\n")
    >>> read_mean_row(p)
    ({'si-snr_i': 2.0, 'sdr_i': nan}, 2)
    """
    means, count = None, 0
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("ID") == "mean":
                means = {k: _float_or_nan(v) for k, v in row.items() if k != "ID"}
            else:
                count += 1
    if means is None:
        raise MissingMeanRow(f"{csv_path}: no 'mean' row; the evaluation did not finish")
    return means, count


def _float_or_nan(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def read_column(csv_path, column="si-snr_i"):
    """``{utterance ID: value}`` of one column of a ``test_metrics.csv`` (``mean`` row left out).

    Used to pair two runs scored on the same test split (:func:`paired_delta`).

    Parameters
    ----------
    csv_path : str
        A ``test_metrics.csv`` written by :func:`evaluate_manifest` (one row per utterance,
        values in dB, and a ``mean`` row).
    column : str
        The metric, e.g. ``si-snr_i`` or ``sdr_i``.

    Returns
    -------
    dict
        Utterance ID -> value (dB); empty and ``nan`` cells are left out.

    Raises
    ------
    ValueError
        The file has no such column.

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "test_metrics.csv")
    >>> _ = open(p, "w").write("ID,si-snr_i\\na,1.5\\nb,nan\\nmean,1.5\\n")
    >>> read_column(p)
    {'a': 1.5}
    """
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"{csv_path}: no column {column!r}")
        return {r["ID"]: float(r[column]) for r in reader if r["ID"] != "mean" and r[column] not in ("", "nan")}


def paired_delta(a, b):
    """Mean of ``a[id] - b[id]`` over the IDs both have, and 1.96 standard errors.

    Parameters
    ----------
    a, b : dict
        ``{utterance ID: value}`` (:func:`read_column`).

    Returns
    -------
    (float, float, int)
        Mean difference, half-width of its 95 % normal interval (NaN with fewer than two
        pairs), number of pairs.

    Raises
    ------
    ValueError
        No ID in common (the two were scored on different test splits).

    Example
    -------
    >>> mean, ci, n = paired_delta({"x": 3.0, "y": 5.0, "z": 1.0}, {"x": 1.0, "y": 2.0})
    >>> round(mean, 2), round(ci, 2), n
    (2.5, 0.98, 2)
    """
    ids = sorted(set(a) & set(b))
    if not ids:
        raise ValueError("paired_delta: no utterance in common")
    d = [a[i] - b[i] for i in ids]
    mean = sum(d) / len(d)
    if len(d) < 2:
        return mean, float("nan"), len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    return mean, 1.96 * sd / math.sqrt(len(d)), len(d)

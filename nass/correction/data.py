"""Training data of GeCo / Fast-GeCo: (mixture, separator estimate, reference) triplets.

GeCo (Wang et al., Interspeech 2024, arXiv 2406.07461, Sec. 2.2) learns to refine the
estimates of a *fixed, trained* separator. Its training set is the separator's output
on the training split, each estimated speaker paired with the reference speaker it
estimates. The reference code (``WangHelin1997/Fast-GeCo``) exports these as
``<name>_source<k>hatP.wav`` (estimate, already in the best order), ``_source<k>.wav``
and ``_mix.wav`` from a SpeechBrain separation recipe and reads both speakers of every
mixture (``geco/data_module.py``, ``Specs``).

Here :func:`build_triplets` runs the separator over a prepared manifest, pairs every
estimate with its reference by the permutation that maximises the mean SI-SNR
(:func:`nass.losses.pit.pit_si_snr`) and caches the result::

    <cache>/<split>/est/<ID>_s<k>.wav     estimate matched to reference speaker k
    <cache>/<split>/ref/<ID>_s<k>.wav     reference speaker k
    <cache>/<split>/mix/<ID>_s<k>.wav     the mixture (one copy per row)
    <cache>/<split>/triplets.csv          ID,duration,mix_wav,est_wav,ref_wav (one row per speaker)
    <cache>/<split>/triplets.json         what the cache was built from

The cache is reused when ``triplets.json`` names the same separator checkpoint (path,
size and modification time), a manifest with the same content (SHA-1; runs preparing
their own copy of one split share the cache) and
every file of ``triplets.csv`` exists; otherwise it is rebuilt. All files are written
atomically (:func:`nass.dataio.audio.atomic_write`), the CSV and JSON last.

:class:`TripletDataset` serves random crops of the same region of mixture, estimate
and reference (reference ``Specs.__getitem__``: ``(num_frames - 1) * hop_length`` =
255 * 64 = 16320 samples at 8 kHz, a random start, start 0 when the estimate's crop
peaks below 0.05, symmetric zero padding of shorter files). Each file is first divided
by its own peak: the reference's files are written so by SpeechBrain's separation
recipe (``save_audio``: ``signal / signal.abs().max()`` for every estimate, source and
mixture), which its 0.05 quiet-crop threshold presumes. Applied to raw levels, that
absolute threshold sends every crop of a quiet separator (estimates peaking below
0.05) to the start of the file; here it is relative to the estimate file's peak.
"""

import csv
import json
import logging
import os

import numpy as np
import torch

from nass.dataio.audio import atomic_write, read_audio, write_audio
from nass.dataio.paths import path_inside, safe_name
from nass.losses.pit import apply_perm, pit_si_snr

logger = logging.getLogger(__name__)

TRIPLET_COLUMNS = ("ID", "duration", "mix_wav", "est_wav", "ref_wav")
CSV_NAME = "triplets.csv"
SIDECAR_NAME = "triplets.json"
#: Reference crop: (num_frames - 1) * hop_length = (256 - 1) * 64 samples.
REFERENCE_CROP = 16320
#: Reference ``Specs``: a crop whose estimate peak is below this restarts at 0.
QUIET_PEAK = 0.05


class TripletError(ValueError):
    """A triplet manifest or cache that cannot be used; the message names it and the fix."""


def _file_stamp(path):
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime": st.st_mtime}


def _sha1(path):
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def separator_fingerprint(separator_folder):
    """Identify the checkpoint :func:`nass.inference.load_separator` would load.

    Parameters
    ----------
    separator_folder : str
        Training output folder or exported model folder.

    Returns
    -------
    dict
        ``path`` (absolute), ``size`` (bytes) and ``mtime`` (s) of the checkpoint.

    Raises
    ------
    nass.inference.ModelLoadError
        When the folder has no checkpoint.

    Example
    -------
    >>> import os, tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> torch.save({}, os.path.join(d, "separator.ckpt"))
    >>> sorted(separator_fingerprint(d))
    ['mtime', 'path', 'size']
    """
    from nass.inference import find_checkpoint

    return _file_stamp(find_checkpoint(os.fspath(separator_folder)))


def read_triplets(path):
    """Read a triplet manifest written by :func:`build_triplets`, checking its files.

    Parameters
    ----------
    path : str
        ``triplets.csv`` (columns ``ID,duration,mix_wav,est_wav,ref_wav``).

    Returns
    -------
    list of dict
        One dict per (utterance, speaker); ``duration`` as float (s).

    Raises
    ------
    TripletError
        Missing file, missing column, no rows, or referenced files that do not exist
        (first few and a count).

    Example
    -------
    >>> read_triplets("/nonexistent/triplets.csv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nass.correction.data.TripletError: /nonexistent/triplets.csv: triplet manifest not found...
    """
    from nass.dataio.manifest import describe_files

    if not os.path.isfile(path):
        raise TripletError(
            f"{path}: triplet manifest not found. Build it with nass.correction.data.build_triplets "
            "(the correction recipe does it before training)."
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in TRIPLET_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TripletError(f"{path}: missing column(s) {', '.join(missing)}; rebuild it with build_triplets.")
        rows = list(reader)
    if not rows:
        raise TripletError(f"{path}: no rows; rebuild it with build_triplets from a non-empty split.")
    absent = [r[c] for r in rows for c in ("mix_wav", "est_wav", "ref_wav") if not os.path.isfile(r[c])]
    if absent:
        raise TripletError(
            f"{path}: {len(absent)} referenced file(s) do not exist: {describe_files(absent)}. "
            "Delete the cache folder and rebuild it."
        )
    for r in rows:
        r["duration"] = float(r["duration"])
    return rows


def _cache_is_valid(csv_path, sidecar_path, expected):
    if not (os.path.isfile(csv_path) and os.path.isfile(sidecar_path)):
        return False
    try:
        with open(sidecar_path, encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    if any(stored.get(k) != v for k, v in expected.items()):
        return False
    try:
        rows = read_triplets(csv_path)
    except TripletError:
        return False
    return len(rows) == stored.get("num_rows")


def _load_separate_fn(separator, device):
    """A callable ``mix [1, T] -> est [1, T, S]`` and the fingerprint of its checkpoint."""
    if callable(separator):
        return separator, None
    from nass.inference import Separator, load_separator

    fingerprint = separator_fingerprint(separator)
    model, hparams = load_separator(separator, device=device)
    sep = Separator(model, int(hparams["sample_rate"]), chunk_seconds=0, device=device)

    def separate(mix):
        return sep.separate_batch(mix)[0]

    return separate, fingerprint


def build_triplets(separator, manifest_csv, cache_folder, split, num_spks=2, sample_rate=8000,
                   device="cpu", fingerprint=None, max_utterances=None):
    """Run a separator over a split and cache (mixture, matched estimate, reference) triplets.

    Parameters
    ----------
    separator : str or callable
        A trained separator folder (:func:`nass.inference.load_separator`, whole
        utterances, no chunking), or a callable ``separate(mix [1, T]) -> est_sources
        [1, T, num_spks]`` (tests, custom models).
    manifest_csv : str
        Prepared manifest of the split (:func:`nass.dataio.manifest.read_manifest`).
    cache_folder : str
        Root of the cache; the split goes to ``<cache_folder>/<split>/``.
    split : str
        Name of the split (sub-folder name).
    num_spks : int
        Speakers per mixture.
    sample_rate : int
        Hz; every file must have it.
    device : str
        Where a separator folder's model runs.
    fingerprint : dict, optional
        Identity of a callable ``separator`` (e.g. its checkpoint path and mtime); with a
        callable and no fingerprint the cache is never reused.
    max_utterances : int, optional
        Only the first ``max_utterances`` rows of the manifest (quick runs).

    Returns
    -------
    str
        Path of ``<cache_folder>/<split>/triplets.csv``.

    Raises
    ------
    nass.dataio.manifest.DatasetError, nass.dataio.audio.AudioError
        Bad manifest or audio.
    ValueError
        A separator returning the wrong shape (names the utterance).

    Example
    -------
    >>> import os, tempfile, numpy as np, torch
    >>> from nass.dataio.manifest import write_manifest
    >>> d = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> for n in ("a", "b"):
    ...     write_audio(os.path.join(d, n + ".wav"), 0.1 * rng.standard_normal(800).astype("float32"), 8000)
    >>> a, b = (read_audio(os.path.join(d, n + ".wav"))[0] for n in ("a", "b"))
    >>> write_audio(os.path.join(d, "m.wav"), a + b, 8000, subtype="FLOAT")
    >>> row = dict(ID="u", duration=0.1, mix_wav=os.path.join(d, "m.wav"), s1_wav=os.path.join(d, "a.wav"),
    ...            s2_wav=os.path.join(d, "b.wav"), noise_wav="", mix_clean_wav="")
    >>> write_manifest([row], os.path.join(d, "test.csv"), 2)
    >>> swap = lambda mix: torch.stack([torch.from_numpy(b), torch.from_numpy(a)], -1)[None]
    >>> rows = read_triplets(build_triplets(swap, os.path.join(d, "test.csv"), d, "test"))
    >>> [r["ID"] for r in rows], np.allclose(read_audio(rows[0]["est_wav"])[0], a, atol=1e-6)
    (['u_s1', 'u_s2'], True)
    """
    from nass.dataio.manifest import read_manifest

    separate, folder_fp = _load_separate_fn(separator, device)
    fingerprint = folder_fp if folder_fp is not None else fingerprint
    split_dir = os.path.join(os.path.abspath(cache_folder), split)
    csv_path = os.path.join(split_dir, CSV_NAME)
    sidecar_path = os.path.join(split_dir, SIDECAR_NAME)
    expected = {
        "separator": fingerprint,
        "manifest_sha1": _sha1(manifest_csv),
        "num_spks": int(num_spks),
        "sample_rate": int(sample_rate),
        "max_utterances": max_utterances,
    }
    if fingerprint is not None and _cache_is_valid(csv_path, sidecar_path, expected):
        logger.info("reusing triplets %s", csv_path)
        return csv_path

    rows = read_manifest(manifest_csv, num_spks)
    if max_utterances is not None:
        rows = rows[: int(max_utterances)]
    out_rows, scores = [], []
    for row in rows:
        mix, _ = read_audio(row["mix_wav"], sample_rate=sample_rate)
        refs = [read_audio(row[f"s{j}_wav"], sample_rate=sample_rate)[0] for j in range(1, num_spks + 1)]
        n = min([len(mix)] + [len(r) for r in refs])
        mix_t = torch.from_numpy(mix[:n]).unsqueeze(0)
        with torch.no_grad():
            est = separate(mix_t)
        if not torch.is_tensor(est) or est.dim() != 3 or est.shape[0] != 1 or est.shape[2] != num_spks \
                or est.shape[1] < n:
            raise ValueError(
                f"{row['ID']}: the separator returned {tuple(getattr(est, 'shape', ()))}, expected "
                f"[1, {n}, {num_spks}] (est_sources of the whole utterance)"
            )
        est = est[:, :n].detach().cpu().double()
        targets = torch.from_numpy(np.stack([r[:n] for r in refs], -1)).unsqueeze(0).double()
        loss, perm = pit_si_snr(est, targets)
        aligned = apply_perm(est, perm)[0].float().numpy()  # column k estimates reference k
        scores.append(-float(loss))
        for k in range(num_spks):
            rid = f"{row['ID']}_s{k + 1}"
            # file names from IDs never leave the cache folder (`../` in an ID)
            paths = {sub: path_inside(os.path.join(split_dir, sub), safe_name(rid) + ".wav") for sub in ("mix", "est", "ref")}
            # FLOAT: estimates may exceed [-1, 1]; nothing is clipped
            write_audio(paths["mix"], mix[:n], sample_rate, subtype="FLOAT")
            write_audio(paths["est"], aligned[:, k], sample_rate, subtype="FLOAT")
            write_audio(paths["ref"], refs[k][:n], sample_rate, subtype="FLOAT")
            out_rows.append({"ID": rid, "duration": f"{n / sample_rate:.6f}", "mix_wav": paths["mix"],
                             "est_wav": paths["est"], "ref_wav": paths["ref"]})
    os.makedirs(split_dir, exist_ok=True)
    if os.path.exists(sidecar_path):  # invalidate first: a crash below leaves no stale sidecar
        os.remove(sidecar_path)
    with atomic_write(csv_path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(TRIPLET_COLUMNS))
            writer.writeheader()
            writer.writerows(out_rows)
    if fingerprint is not None:
        sidecar = dict(expected, num_rows=len(out_rows), mean_si_snr=float(np.mean(scores)))
        with atomic_write(sidecar_path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(sidecar, f, indent=2)
    logger.info("wrote %d triplets (%d utterances, separator SI-SNR %.2f dB) to %s",
                len(out_rows), len(rows), float(np.mean(scores)), csv_path)
    return csv_path


def crop_triplet(mix, est, ref, length, rng=None, quiet_peak=QUIET_PEAK):
    """Cut the same region of ``length`` samples from three aligned 1-D signals.

    Parameters
    ----------
    mix, est, ref : numpy.ndarray
        ``[time]`` (trimmed to the shortest).
    length : int
        Crop length in samples (reference: 16320 at 8 kHz).
    rng : numpy.random.Generator, optional
        Random start; ``None`` takes the centre (the reference's validation crop).
    quiet_peak : float
        When the estimate's crop peaks below this fraction of the estimate's whole-file
        peak, the crop starts at 0 instead (reference ``Specs``: ``if
        y[start:start+L].abs().max() < 0.05: start = 0`` on files with peak 1).

    Returns
    -------
    tuple of numpy.ndarray
        ``(mix, est, ref)`` of exactly ``length`` samples; shorter inputs are zero-padded
        symmetrically (``pad // 2`` left, the rest right).

    Example
    -------
    >>> import numpy as np
    >>> x = np.arange(10.0)
    >>> [c.tolist() for c in crop_triplet(x, x, x, 4)][0]
    [3.0, 4.0, 5.0, 6.0]
    >>> crop_triplet(x[:3], x[:3], x[:3], 6)[1].tolist()
    [0.0, 0.0, 1.0, 2.0, 0.0, 0.0]
    """
    n = min(len(mix), len(est), len(ref))
    mix, est, ref = mix[:n], est[:n], ref[:n]
    if n <= length:
        pad = length - n
        widths = (pad // 2, pad - pad // 2)
        return tuple(np.pad(x, widths) for x in (mix, est, ref))
    start = int(rng.integers(0, n - length + 1)) if rng is not None else (n - length) // 2
    if np.abs(est[start:start + length]).max() < quiet_peak * np.abs(est).max():
        start = 0
    return tuple(x[start:start + length] for x in (mix, est, ref))


def _peak_normalised(x):
    """``x / max|x|`` (``x`` unchanged when silent)."""
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return x / peak if peak > 0 else x


class TripletDataset(torch.utils.data.Dataset):
    """Triplets for :class:`nass.brains.correction.CorrectionBrain`.

    Items are dicts ``{"id": str, "mix": [T], "est": [T], "ref": [T]}`` (float32).

    Parameters
    ----------
    rows : list of dict
        :func:`read_triplets` rows.
    sample_rate : int
        Hz, checked on every read.
    crop_samples : int or None
        Crop length (samples); ``None`` or ``0`` serves whole utterances (use
        ``batch_size: 1`` then).
    random_crop : bool
        Random crop start (training) or the centre (validation).
    epoch_size : int or None
        Items per epoch; ``None`` = ``len(rows)``. With fewer items than rows each epoch
        visits a different part of a fixed random order (:meth:`set_epoch`).
    seed : int
        Seeds the crops and the epoch order (reproducible for a given epoch).
    peak_normalise : bool
        Divide each file (mixture, estimate, reference) by its own peak before cropping,
        as the reference's files are (default True; see the module docstring).

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> for n in ("m", "e", "r"):
    ...     write_audio(os.path.join(d, n + ".wav"), np.full(100, 0.5, "float32"), 8000)
    >>> row = dict(ID="u_s1", duration=0.0125, mix_wav=os.path.join(d, "m.wav"),
    ...            est_wav=os.path.join(d, "e.wav"), ref_wav=os.path.join(d, "r.wav"))
    >>> ds = TripletDataset([row], 8000, crop_samples=64)
    >>> ds[0]["est"].shape, len(ds), float(ds[0]["est"].max())
    (torch.Size([64]), 1, 1.0)
    """

    def __init__(self, rows, sample_rate, crop_samples=REFERENCE_CROP, random_crop=True, epoch_size=None,
                 seed=0, peak_normalise=True):
        if not rows:
            raise TripletError("TripletDataset: no rows; build the triplets of a non-empty split first")
        self.rows = list(rows)
        self.sample_rate = int(sample_rate)
        self.crop_samples = int(crop_samples or 0)
        self.random_crop = bool(random_crop)
        self.epoch_size = int(epoch_size) if epoch_size else len(self.rows)
        self.seed = int(seed)
        self.peak_normalise = bool(peak_normalise)
        self.epoch = 0

    def set_epoch(self, epoch):
        """Select the rows and crops of ``epoch`` (called by the Brain at each training epoch)."""
        self.epoch = int(epoch or 0)

    def __len__(self):
        return self.epoch_size

    def _row_index(self, index):
        if self.epoch_size == len(self.rows):
            return index
        order = np.random.default_rng([self.seed, 7919]).permutation(len(self.rows))
        return int(order[(self.epoch * self.epoch_size + index) % len(self.rows)])

    def __getitem__(self, index):
        row = self.rows[self._row_index(index)]
        mix, est, ref = (read_audio(row[c], sample_rate=self.sample_rate)[0] for c in ("mix_wav", "est_wav", "ref_wav"))
        if self.peak_normalise:
            mix, est, ref = (_peak_normalised(x) for x in (mix, est, ref))
        if self.crop_samples:
            rng = np.random.default_rng([self.seed, self.epoch, index]) if self.random_crop else None
            mix, est, ref = crop_triplet(mix, est, ref, self.crop_samples, rng)
        else:
            n = min(len(mix), len(est), len(ref))
            mix, est, ref = mix[:n], est[:n], ref[:n]
        as_t = lambda x: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # noqa: E731
        return {"id": row["ID"], "mix": as_t(mix), "est": as_t(est), "ref": as_t(ref)}

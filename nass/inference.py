"""Inference: load a trained separator and separate files of any length and rate.

>>> # sep = Separator.from_hparams("results/sepformer-noisy/1234")   # training output folder
>>> # est_sources, est_noise = sep.separate_file("meeting.wav")     # [T, S], [T] at the file's rate

Model folders
-------------
:func:`load_separator` accepts either

* an **exported model folder** (:mod:`nass.export`; ``nass-export RUN_DIR OUT_DIR``, and
  ``<output_folder>/model`` at the end of every training): ``hyperparams.yaml`` (model
  objects only), ``separator.ckpt`` and ``model_card.json`` whose SHA-256 of both files
  is verified before anything is read;
* a **training output folder**: SpeechBrain's copy of the training ``hyperparams.yaml``
  and checkpoints ``save/CKPT+*/separator.ckpt`` with ``CKPT.yaml``; the checkpoint with
  the highest ``si-snr`` meta (validation SI-SNR, dB) is used, else the most recent, and
  its size and CRC-32 are checked against ``CKPT.yaml``; or
* an older export without card: ``hyperparams.yaml`` and ``separator.ckpt`` side by side.

In every case only the separator's objects of the YAML are built
(:func:`nass.export.model_yaml`), never the training checkpointer, loggers or data
objects: loading creates, changes and deletes nothing, works from any working directory
and from a read-only copy, and leaves a training that is running in the folder alone.
Weights holding NaN / Inf are refused, and so is a model output that is not finite.

.. warning::
   ``hyperparams.yaml`` is HyperPyYAML: loading it imports modules and calls the
   Python objects it names (``!new:``, ``!name:``, ``!apply:``). Only load model folders
   you trust. Weights are read with ``torch.load(..., weights_only=True)``, which refuses
   pickles that would run code.

Long recordings
---------------
Inputs longer than ``chunk_seconds`` are separated in chunks that overlap by
``overlap_seconds`` and are recombined by overlap-add with complementary Hann
cross-fades (``sin^2`` / ``cos^2``, which sum to one). A separator's output order is
arbitrary per forward pass, so every chunk's speakers are reordered to maximise the
normalised correlation with the previous chunk over their common samples (the
"stitching" of Chen et al., "Continuous speech separation", ICASSP 2020, Sec. 3).
Outputs are preallocated; at most one chunk's activations exist at a time.
"""

import contextlib
import glob
import io
import itertools
import json
import logging
import math
import os
import pickle
import warnings

import numpy as np
import torch

from nass.correction.modes import DEFAULT_MODE, get_mode
from nass.dataio.audio import AudioError, limit_peak, read_audio, resample
from nass.separation import fit_length

logger = logging.getLogger(__name__)

#: Inputs (and chunks) shorter than this many seconds are zero-padded before the model
#: runs and trimmed after (convolutional encoders need at least one frame).
MIN_SECONDS = 0.25


class ModelLoadError(ValueError):
    """A model folder or checkpoint that cannot be used; the message names it and the fix."""


class ModelOutputError(ValueError):
    """The model's output is unusable (NaN / Inf for a finite input)."""


# --------------------------------------------------------------------------- loading
def load_state_dict(path, device="cpu", data=None):
    """Read a ``state_dict`` with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path : str
        Checkpoint file (``torch.save(module.state_dict(), path)``).
    device : str or torch.device
        ``map_location``.
    data : bytes, optional
        The file's contents, already read (and verified); ``path`` then only names it.

    Returns
    -------
    dict
        Parameter name -> tensor.

    Raises
    ------
    ModelLoadError
        Missing or corrupt file, or a pickle holding anything but tensors and plain
        containers (which could run code when loaded): such a file is refused, never executed.

    Example
    -------
    >>> import os, tempfile, torch
    >>> p = os.path.join(tempfile.mkdtemp(), "w.ckpt")
    >>> torch.save(torch.nn.Linear(2, 1).state_dict(), p)
    >>> sorted(load_state_dict(p))
    ['bias', 'weight']
    """
    if data is None and not os.path.isfile(path):
        raise ModelLoadError(f"{path}: checkpoint not found. Train first or point --model at the training output folder.")
    try:
        state = torch.load(io.BytesIO(data) if data is not None else path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(
            f"{path}: refused to load: the file holds objects other than tensors (a pickle that could "
            "run code), so it was not executed. Only use checkpoints from a source you trust, saved "
            "with torch.save(model.state_dict(), path)."
        ) from exc
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc}). "
            "The file is truncated or not a checkpoint; re-export or re-train."
        ) from exc
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: expected a state_dict (dict of tensors), got {type(state).__name__}.")
    return state


def _checkpoint_meta(ckpt_dir):
    import yaml

    # SpeechBrain's Checkpointer (and nass.checkpoints) write CKPT.yaml; CHECKPOINT.yaml is
    # accepted too for folders made by hand
    for meta_name in ("CKPT.yaml", "CHECKPOINT.yaml"):
        meta_path = os.path.join(ckpt_dir, meta_name)
        if os.path.isfile(meta_path):
            break
    else:
        return {}
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = yaml.safe_load(f)
    except Exception as exc:  # an unreadable meta only costs us the ranking
        warnings.warn(f"{meta_path}: unreadable checkpoint metadata ({exc}); ignored")
        return {}
    return meta if isinstance(meta, dict) else {}


def find_checkpoint(source):
    """The separator checkpoint to load from a model folder.

    Parameters
    ----------
    source : str
        Training output folder or exported model folder (see the module docstring).

    Returns
    -------
    str
        Path of ``separator.ckpt``: the exported one when ``source/separator.ckpt``
        exists; else, among ``source/save/CKPT+*/separator.ckpt``, the one whose
        ``CKPT.yaml`` (SpeechBrain's meta file; ``CHECKPOINT.yaml`` is also read) has the
        highest ``si-snr`` (dB, higher is better); when
        none has that key, the most recent (``unixtime`` meta, then folder name, which
        SpeechBrain makes a timestamp).

    Raises
    ------
    ModelLoadError
        No checkpoint.

    Example
    -------
    >>> import os, tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> for name, score in (("CKPT+a", 3.0), ("CKPT+b", 9.0), ("CKPT+c", None)):
    ...     os.makedirs(os.path.join(d, "save", name))
    ...     torch.save({}, os.path.join(d, "save", name, "separator.ckpt"))
    ...     if score is not None:
    ...         _ = open(os.path.join(d, "save", name, "CHECKPOINT.yaml"), "w").write(f"si-snr: {score}\\n")
    >>> os.path.basename(os.path.dirname(find_checkpoint(d)))
    'CKPT+b'
    """
    exported = os.path.join(source, "separator.ckpt")
    if os.path.isfile(exported):
        return exported
    candidates = []
    for ckpt_dir in sorted(glob.glob(os.path.join(glob.escape(source), "save", "CKPT+*"))):
        path = os.path.join(ckpt_dir, "separator.ckpt")
        if not os.path.isfile(path):
            continue
        meta = _checkpoint_meta(ckpt_dir)
        score = meta.get("si-snr")
        try:
            score = float(score) if score is not None else None
        except (TypeError, ValueError):
            score = None
        if score is not None and not math.isfinite(score):
            score = None
        try:
            when = float(meta.get("unixtime", float("-inf")))
        except (TypeError, ValueError):
            when = float("-inf")
        candidates.append((score, when, os.path.basename(ckpt_dir), path))
    if not candidates:
        raise ModelLoadError(
            f"{source}: no checkpoint found (neither separator.ckpt nor save/CKPT+*/separator.ckpt). "
            "Train first or point --model at the training output folder."
        )
    scored = [c for c in candidates if c[0] is not None]
    if scored:
        return max(scored, key=lambda c: (c[0], c[1], c[2]))[3]
    return max(candidates, key=lambda c: (c[1], c[2]))[3]


class ModelFiles:
    """The verified contents of a model folder, read once into memory (nothing is executed).

    Attributes
    ----------
    kind : {"exported", "legacy", "training"}
        A model folder with ``model_card.json``; ``hyperparams.yaml`` + ``separator.ckpt``
        without a card (older exports); a training output folder.
    yaml_path : str
        The ``hyperparams.yaml`` read.
    yaml_text : str
        Its model-only form (:func:`nass.export.model_yaml`): building it creates nothing.
    weights : bytes
        The ``separator.ckpt`` bytes that were verified.
    weights_path : str
        Where they were read.
    card : dict or None
        ``model_card.json`` of an exported folder.
    ckpt_meta : dict or None
        ``CKPT.yaml`` of the training checkpoint used.
    """

    def __init__(self, kind, yaml_path, yaml_text, weights, weights_path, card=None, ckpt_meta=None):
        self.kind, self.yaml_path, self.yaml_text = kind, yaml_path, yaml_text
        self.weights, self.weights_path, self.card, self.ckpt_meta = weights, weights_path, card, ckpt_meta

    def check_weights(self):
        """The weights as a state_dict, refusing non-finite values.

        Returns
        -------
        dict
            Parameter name -> tensor (CPU).

        Raises
        ------
        ModelLoadError
            Not a plain state_dict (refused unexecuted), or NaN / Inf in a tensor (named).
        """
        state = load_state_dict(self.weights_path, data=self.weights)
        for name, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                bad = int((~torch.isfinite(value)).sum())
                raise ModelLoadError(
                    f"{self.weights_path}: tensor {name!r} holds {bad} NaN/Inf value(s): the weights are damaged "
                    "(or the training diverged). Re-copy or re-export the model, or use an earlier checkpoint."
                )
        return state


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def read_model_folder(source):
    """Read and verify a model folder without building or writing anything.

    Parameters
    ----------
    source : str
        An exported model folder (``model_card.json``, :mod:`nass.export`), an older
        ``hyperparams.yaml`` + ``separator.ckpt`` folder, or a training output folder
        (its best checkpoint, :func:`find_checkpoint`). Any working directory.

    Returns
    -------
    ModelFiles

    Raises
    ------
    ModelLoadError
        Missing folder or files; a file whose SHA-256 differs from the card's, or whose
        size / CRC-32 differs from its ``CKPT.yaml`` (named, with the fix).

    Example
    -------
    >>> read_model_folder("/nonexistent/model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nass.inference.ModelLoadError: /nonexistent/model: model folder not found...
    """
    from nass import export

    source = os.fspath(source)
    if not os.path.isdir(source):
        raise ModelLoadError(
            f"{source}: model folder not found. Point --model at a training output folder "
            "(holding hyperparams.yaml and save/) or an exported model folder."
        )
    if os.path.isfile(os.path.join(source, export.CARD)):
        card, contents = export.read_verified(source, (export.MODEL_YAML, export.WEIGHTS))
        return ModelFiles("exported", os.path.join(source, export.MODEL_YAML),
                          contents[export.MODEL_YAML].decode("utf-8"), contents[export.WEIGHTS],
                          os.path.join(source, export.WEIGHTS), card=card)
    yaml_path = os.path.join(source, export.MODEL_YAML)
    if not os.path.isfile(yaml_path):
        raise ModelLoadError(
            f"{source}: no hyperparams.yaml. Point --model at the training output folder "
            "(where training wrote hyperparams.yaml), not at a checkpoint subfolder."
        )
    flat = os.path.join(source, export.WEIGHTS)
    if os.path.isfile(flat):
        kind, weights_path, weights, meta = "legacy", flat, _read_bytes(flat), None
    else:
        kind = "training"
        for attempt in range(3):  # a running training may delete its older checkpoint meanwhile
            weights_path = find_checkpoint(source)
            try:
                weights = _read_bytes(weights_path)  # verified and loaded from these very bytes
            except FileNotFoundError:
                if attempt == 2:
                    raise ModelLoadError(f"{weights_path}: vanished while being read; retry.") from None
                continue
            break
        ckpt_dir = os.path.dirname(weights_path)
        meta = _checkpoint_meta(ckpt_dir)
        expected = (meta.get("files") or {}).get(export.WEIGHTS) if isinstance(meta.get("files"), dict) else None
        if expected:
            from nass.checkpoints import CheckpointLoadError, verify_file

            try:
                verify_file(weights_path, expected, ckpt_dir, data=weights)
            except CheckpointLoadError as exc:
                raise ModelLoadError(str(exc)) from exc
    return ModelFiles(kind, yaml_path, export.model_yaml(yaml_path), weights, weights_path, ckpt_meta=meta)


def load_separator(source, device="cpu", savedir=None):
    """Build the separator of a model folder and load its weights, read-only.

    Only the separator's objects are built (:func:`nass.export.model_yaml`): never the
    training checkpointer, loggers or data objects of a training YAML, so loading a model
    creates, changes and deletes nothing (no folders at the training ``output_folder``,
    no removal of a running training's ``.incomplete-CKPT+*``), from any working directory,
    from a copied or read-only folder.

    Parameters
    ----------
    source : str
        Model folder or training output folder (:func:`read_model_folder`). Its YAML is
        trusted code (HyperPyYAML executes Python).
    device : str
        Where the model goes (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    savedir : str, optional
        When given, a portable copy of the model (:mod:`nass.export` layout) is written
        there (left as is when it already holds these exact files). The only place anything
        is written.

    Returns
    -------
    model : torch.nn.Module
        The ``separator`` of the YAML (a :class:`nass.separation.MaskingSeparator`),
        weights loaded, in ``eval()`` mode on ``device``.
    hparams : dict
        The loaded model YAML (``sample_rate``, ``num_spks``, ``noise_target``,
        ``separator``) and ``model_card`` (the card, or None).

    Raises
    ------
    ModelLoadError
        Folder missing, no ``hyperparams.yaml``, a YAML without ``separator`` /
        ``sample_rate``, no checkpoint, a checksum mismatch, a checkpoint that is not a
        plain state_dict (refused unexecuted), holds NaN / Inf, or does not match the model.

    Example
    -------
    >>> load_separator("/nonexistent/model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nass.inference.ModelLoadError: /nonexistent/model: model folder not found...
    """
    from hyperpyyaml import load_hyperpyyaml

    files = read_model_folder(source)
    state = files.check_weights()  # before running the YAML: fail fast and cheap
    try:
        hparams = load_hyperpyyaml(files.yaml_text)
    except Exception as exc:
        raise ModelLoadError(
            f"{files.yaml_path}: cannot be loaded ({type(exc).__name__}: {exc}). The YAML must load "
            "without overrides; fix the entry named above."
        ) from exc
    model = hparams["separator"]
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"{files.yaml_path}: 'separator' is a {type(model).__name__}, not a torch.nn.Module.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"{files.weights_path}: does not match the model of {files.yaml_path} ({str(exc).splitlines()[0]}). "
            "The checkpoint belongs to another configuration; use the folder it was trained in."
        ) from exc
    logger.info("loaded %s", files.weights_path)
    model.to(device).eval()
    hparams["model_card"] = files.card
    if savedir is not None:
        from nass import export

        card_path = os.path.join(os.fspath(savedir), export.CARD)
        same = False
        if os.path.isfile(card_path):
            with contextlib.suppress(ModelLoadError):
                same = read_model_folder(savedir).weights == files.weights
        if not same:
            export.write_model_folder(savedir, files.yaml_text, files.weights,
                                      export.build_card(files, os.fspath(source)), overwrite=True)
    return model, hparams


# --------------------------------------------------------------------------- separation
def _fade(length, device, dtype):
    """Rising Hann half-window of ``length`` samples; ``1 - _fade`` is the falling one."""
    n = torch.arange(length, device=device, dtype=torch.float64)
    return (torch.sin(0.5 * math.pi * (n + 0.5) / length) ** 2).to(dtype)


def _best_order(prev_tail, cur_head):
    """Per utterance, the speaker order of ``cur_head`` best correlated with ``prev_tail``.

    Both ``[B, O, S]``; returns ``[B, S]`` long with ``order[b, j]`` = current index
    placed in slot ``j``.
    """
    num_spks = prev_tail.shape[-1]
    a = prev_tail / (prev_tail.norm(dim=1, keepdim=True) + 1e-8)
    b = cur_head / (cur_head.norm(dim=1, keepdim=True) + 1e-8)
    corr = torch.einsum("bts,btc->bsc", a, b)  # [B, S_prev, S_cur]
    perms = torch.tensor(list(itertools.permutations(range(num_spks))), device=corr.device)
    slots = torch.arange(num_spks, device=corr.device)
    scores = corr[:, slots, perms].sum(-1)  # [B, P]: sum_j corr[b, j, perms[p, j]]
    return perms[scores.argmax(-1)]


class Separator:
    """Separate mixtures with a trained model: batches, files, long recordings.

    Parameters
    ----------
    model : torch.nn.Module
        ``model(mix [B, T])`` returns an object with ``est_sources [B, T, S]`` and
        ``est_noise [B, T]`` or ``None`` (:class:`nass.separation.MaskingSeparator`).
    sample_rate : int
        The model's rate (Hz); files at other rates are resampled to it and back.
    chunk_seconds : float or None
        Longer inputs are processed in chunks of this length (s); ``None`` or ``0``:
        always one pass (the evaluation protocol of the papers).
    overlap_seconds : float
        Overlap between consecutive chunks (s), ``0 <= overlap < chunk``; the speaker
        order is matched on it, so ``0`` disables the matching.
    device : str
        Device the model runs on.
    corrector : nass.correction.modes.Corrector, optional
        Generative corrector (GeCo / Fast-GeCo) with
        ``correct(y_wave [B, T], m_wave [B, T], mode, num_steps) -> [B, T]`` (the corrector
        contract); applied to every separated speaker of every chunk.
    correction_mode : str
        Passed to ``corrector.correct``: a key of :data:`nass.correction.modes.CORRECTION_MODES`
        (``"fast-geco"`` or ``"geco"``); checked here when a corrector is given.
    correction_steps : int
        Reverse-diffusion steps passed to ``corrector.correct``.

    Raises
    ------
    ValueError
        Non-positive rate; ``chunk_seconds`` / ``overlap_seconds`` negative, NaN or
        infinite; an overlap not shorter than the chunk; with a corrector, an unknown
        ``correction_mode`` (:class:`nass.correction.modes.UnknownCorrectionMode`).
    ModelOutputError
        (when separating) the model returned NaN / Inf for a finite input.

    Example
    -------
    >>> import torch
    >>> from nass.separation import SeparationOutput
    >>> class Halves(torch.nn.Module):   # a stand-in model: two sources = mix / 2
    ...     def forward(self, mix):
    ...         est = torch.stack([mix / 2, mix / 2], -1)
    ...         return SeparationOutput(est, None, mix, None, est)
    >>> sep = Separator(Halves(), sample_rate=8000, chunk_seconds=1.0, overlap_seconds=0.25)
    >>> est, noise = sep.separate_batch(torch.randn(1, 20000))
    >>> est.shape, noise
    (torch.Size([1, 20000, 2]), None)
    """

    def __init__(
        self,
        model,
        sample_rate,
        chunk_seconds=8.0,
        overlap_seconds=1.0,
        device="cpu",
        corrector=None,
        correction_mode=DEFAULT_MODE,
        correction_steps=30,
    ):
        if not sample_rate or int(sample_rate) <= 0:
            raise ValueError(f"Separator: sample_rate must be a positive number of Hz, got {sample_rate!r}")
        self.sample_rate = int(sample_rate)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        for name, value in (("chunk_seconds", chunk_seconds), ("overlap_seconds", overlap_seconds)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"Separator: {name}={value!r} must be a finite number of seconds >= 0 "
                    f"({'0 = one pass' if name == 'chunk_seconds' else 'e.g. 1.0'})"
                )
        self.chunk = int(round(chunk_seconds * self.sample_rate)) if chunk_seconds else 0
        self.overlap = int(round(overlap_seconds * self.sample_rate)) if self.chunk else 0
        if self.chunk and not 0 <= self.overlap < self.chunk:
            raise ValueError(
                f"Separator: overlap_seconds={overlap_seconds} must be >= 0 and smaller than "
                f"chunk_seconds={chunk_seconds}"
            )
        self.min_samples = max(int(MIN_SECONDS * self.sample_rate), 1)
        self.corrector = corrector
        if corrector is not None:  # an unknown mode fails here, not at the first file
            correction_mode = get_mode(correction_mode, "Separator: correction_mode").name
        self.correction_mode = correction_mode
        self.correction_steps = int(correction_steps)

    @classmethod
    def from_hparams(cls, source, savedir=None, run_opts=None, device=None, **kw):
        """Load a model folder read-only (:func:`load_separator`) and wrap it.

        The keywords follow SpeechBrain's ``Pretrained.from_hparams``.

        Parameters
        ----------
        source : str
            Exported model folder or training output folder (trusted code), any cwd.
        savedir : str, optional
            Where a portable copy of the model is written (nothing is written without it).
        run_opts : dict, optional
            SpeechBrain's run options; ``run_opts["device"]`` is used (other keys are ignored).
        device : str, optional
            Where the model runs (overrides ``run_opts``; default ``"cpu"``).
        **kw
            Other :class:`Separator` arguments (``chunk_seconds``, ``corrector``, ...).

        Returns
        -------
        Separator
            With ``hparams`` (the model YAML) and ``card`` (``model_card.json`` or None).

        Raises
        ------
        ModelLoadError
            See :func:`load_separator`.
        """
        if device is None:
            device = (run_opts or {}).get("device", "cpu")
        model, hparams = load_separator(source, device=device, savedir=savedir)
        sep = cls(model, hparams["sample_rate"], device=device, **kw)
        sep.hparams = hparams
        sep.card = hparams.get("model_card")
        return sep

    def __call__(self, mix):
        """``separator(mix [B, T])`` is :meth:`separate_batch`: ``(est_sources [B, T, S], est_noise [B, T] or None)``."""
        return self.separate_batch(mix)

    # -- core ---------------------------------------------------------------
    def _forward(self, mix):
        """One model pass on ``[B, T]`` (padded to ``min_samples``), then correction."""
        length = mix.shape[-1]
        padded = fit_length(mix, max(length, self.min_samples))
        out = self.model(padded)
        est = out.est_sources[:, :length]
        noise = out.est_noise[:, :length] if out.est_noise is not None else None
        if not torch.isfinite(est).all() or (noise is not None and not torch.isfinite(noise).all()):
            raise ModelOutputError(
                "the separator produced NaN or Inf samples for a finite input: its weights are damaged or "
                "it diverged in training. Re-export or re-train the model (nothing was written)."
            )
        if self.corrector is not None:
            m = mix
            est = torch.stack(
                [
                    self.corrector.correct(est[..., j], m, self.correction_mode, self.correction_steps)
                    for j in range(est.shape[-1])
                ],
                dim=-1,
            )
        return est, noise

    @torch.no_grad()
    def separate_batch(self, mix):
        """Separate a batch of mixtures at the model's rate.

        Parameters
        ----------
        mix : torch.Tensor
            ``[B, T]`` waveforms (``[T]`` is accepted as one utterance).

        Returns
        -------
        est_sources : torch.Tensor
            ``[B, T, S]`` on the CPU.
        est_noise : torch.Tensor or None
            ``[B, T]`` on the CPU, or ``None`` for a model without noise output.

        Raises
        ------
        ValueError
            Not 1-D/2-D, empty, or non-finite input.
        """
        if mix.dim() == 1:
            mix = mix.unsqueeze(0)
        if mix.dim() != 2 or mix.shape[-1] == 0:
            raise ValueError(f"separate_batch expects a non-empty [batch, time] tensor, got shape {tuple(mix.shape)}")
        if not torch.isfinite(mix).all():
            raise ValueError("separate_batch: the mixture contains NaN or Inf samples")
        mix = mix.float()
        batch, total = mix.shape
        if not self.chunk or total <= self.chunk:
            est, noise = self._forward(mix.to(self.device))
            return est.cpu(), (noise.cpu() if noise is not None else None)
        hop = self.chunk - self.overlap
        est_out = noise_out = None
        prev_tail = None
        start = 0
        while True:
            end = min(start + self.chunk, total)
            est, noise = self._forward(mix[:, start:end].to(self.device))
            est, noise = est.cpu(), (noise.cpu() if noise is not None else None)
            if est_out is None:  # preallocate once the number of outputs is known
                est_out = torch.zeros(batch, total, est.shape[-1])
                noise_out = torch.zeros(batch, total) if noise is not None else None
            n = end - start
            left = self.overlap if start > 0 else 0
            last = end >= total
            right = 0 if last else self.overlap
            if left and prev_tail is not None:
                order = _best_order(prev_tail, est[:, :left])
                est = est.gather(-1, order.unsqueeze(1).expand(-1, n, -1))
            weight = torch.ones(n)
            if left:
                weight[:left] = _fade(left, weight.device, weight.dtype)
            if right:
                weight[n - right :] = 1 - _fade(right, weight.device, weight.dtype)
            est_out[:, start:end] += est * weight[None, :, None]
            if noise_out is not None:
                noise_out[:, start:end] += noise * weight[None, :]
            if last:
                break
            prev_tail = est[:, n - right :].clone()
            start += hop
        return est_out, noise_out

    def _separate_file(self, path):
        if os.path.isdir(path):
            raise AudioError(f"{path}: is a folder, not an audio file. Pass the audio files themselves (e.g. {os.path.join(path, '*.wav')}).")
        samples, rate = read_audio(path, mono="mix")
        if samples.size == 0:
            raise AudioError(f"{path}: the file holds no samples. Pass a recording with audio in it.")
        x = torch.from_numpy(np.ascontiguousarray(samples)).unsqueeze(0)
        length = x.shape[-1]
        if rate != self.sample_rate:
            x = resample(x, rate, self.sample_rate, name=path)  # an odd rate warns, naming the file
        est, noise = self.separate_batch(x)
        est = est[0].T  # [S, T']
        noise = noise[0] if noise is not None else None
        if rate != self.sample_rate:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the same odd-rate warning again, already given
                est = resample(est, self.sample_rate, rate)
                if noise is not None:
                    noise = resample(noise.unsqueeze(0), self.sample_rate, rate)[0]
        est = fit_length(est, length).T.contiguous()
        if noise is not None:
            noise = fit_length(noise, length)
        return est, noise, rate

    def separate_file(self, path):
        """Separate an audio file of any rate, channel count and length.

        Parameters
        ----------
        path : str
            Audio file (WAV, FLAC, ...). Multi-channel audio is averaged to mono with a
            warning; other rates are resampled to the model's and the estimates back.

        Returns
        -------
        est_sources : torch.Tensor
            ``[T, S]`` at the file's rate and length.
        est_noise : torch.Tensor or None
            ``[T]``, or ``None`` for a model without noise output.

        Raises
        ------
        nass.dataio.audio.AudioError
            Missing, unreadable, empty or non-finite file, or a folder; the message
            names the file and the fix.
        """
        est, noise, _ = self._separate_file(path)
        return est, noise


def output_names(separator):
    """File names :func:`separate_to_folder` writes for this separator's model.

    Example
    -------
    >>> import torch
    >>> m = torch.nn.Identity(); m.num_spks, m.noise_target = 2, "extra_output"
    >>> output_names(Separator(m, 8000))
    ['s1.wav', 's2.wav', 'noise.wav']
    """
    model = separator.model
    names = [f"s{j + 1}.wav" for j in range(int(getattr(model, "num_spks", 2)))]
    if getattr(model, "noise_target", "none") == "extra_output":
        names.append("noise.wav")
    return names


def separate_to_folder(separator, path, out_dir, overwrite=False, stage=None):
    """Separate one file and write ``s1.wav``, ``s2.wav`` [, ``s3.wav``] [, ``noise.wav``].

    Files are 16-bit PCM at the input's rate; an estimate whose peak exceeds 1 is scaled
    down to 0.99 (separators are scale-invariant). They are staged under hidden names
    and renamed into place only when all are written (:class:`nass.dataio.audio.OutputStage`);
    a failure removes only what this call staged or created. An existing output is
    refused unless ``overwrite``.

    Parameters
    ----------
    separator : Separator
    path : str
        Input audio file.
    out_dir : str
        Output folder (created).
    overwrite : bool
        Replace existing outputs.
    stage : nass.dataio.audio.OutputStage, optional
        Stage of a larger run (``nass-separate`` with several inputs): the files are
        staged there and renamed when the caller commits it. Without it, this call commits.

    Returns
    -------
    list of str
        The output paths (final names).

    Raises
    ------
    nass.dataio.audio.AudioError
        Bad input (see :meth:`Separator.separate_file`); nothing is written.
    FileExistsError
        An output exists and ``overwrite`` is False (checked before separating).
    OSError
        A full disk (one line naming the folder).
    """
    from nass.dataio.audio import OutputStage

    own = stage is None
    stage = OutputStage(overwrite=overwrite) if own else stage
    try:
        finals = [os.path.join(out_dir, name) for name in output_names(separator)]
        for final in finals:
            stage.claim(final)
        est, noise, rate = separator._separate_file(path)
        outputs = [(f"s{j + 1}.wav", est[:, j]) for j in range(est.shape[1])]
        if noise is not None:
            outputs.append(("noise.wav", noise))
        written = []
        for name, wav in outputs:
            target = os.path.join(out_dir, name)
            stage.write_audio(target, limit_peak(wav), rate)
            written.append(os.path.abspath(target))
        if own:
            stage.commit()
    except BaseException:
        if own:
            stage.abort()
        raise
    return written

r"""GeCo / Fast-GeCo corrector: training losses and waveform-in, waveform-out correction.

Wang et al., "Noise-robust Speech Separation with Fast Generative Correction",
Interspeech 2024, arXiv 2406.07461; reference ``WangHelin1997/Fast-GeCo``
(``geco/model.py``: score matching; ``fastgeco/model.py``: one-step fine-tuning;
``geco/util/inference.py``, ``eval-fastgeco.py``: inference).

Pipeline for one separated source ``y`` (``[batch, time]``) of a mixture ``m``:

1. peak normalisation: ``a = max |y|`` per utterance; ``y`` (and the clean target in
   training) are divided by ``a``, the mixture by its own peak; the output is multiplied
   back by ``a`` (reference: ``normfac = y.abs().max()``, ``normalize="noisy"``, applied
   to files that SpeechBrain's separation recipe wrote peak-normalised one by one, so the
   mixture the reference network sees has peak 1 whatever the separator's gain). A
   silent estimate (``a = 0``) uses the mixture's peak instead.
2. the waveforms are zero-padded on the right so that their centred STFT has a multiple
   of ``2 ** (levels - 1)`` frames (the reference pads the *spectrogram* with zero
   frames, ``pad_spec``, 64), then the compressed complex STFT
   (:class:`~nass.correction.transforms.SpecTransform`) is taken. Padding the waveform
   keeps every frame the STFT of a real signal; zero frames appended to a spectrogram
   are not, and inverting them with the rest divides the last samples by a window
   envelope that the zero frames enlarge (measured on an 8000-sample signal, 128
   frames: -1.2 dB at 50 samples from the end, -3.2 dB at the last sample, nothing
   beyond about 190 samples; ``tests/test_correction.py``).
3. GeCo: predictor-corrector sampling (:func:`~nass.correction.samplers.pc_sample`,
   N = 30, snr 0.5, one corrector step); Fast-GeCo: one reverse step from ``t = 0.5``
   (:func:`~nass.correction.samplers.fast_geco_sample`).
4. inverse transform of the whole padded length, then the padding is cut off, then the
   normalisation is undone.

Losses:

* denoising score matching (``geco/model.py``, ``_step`` and ``_loss`` with
  ``loss_type='mse'``): ``t ~ U[t_eps, T]``, ``z ~ CN(0, I)``,
  ``x_t = mean(x0, y, t) + std(t) z`` and
  ``L = mean_batch( 1/2 sum_{f, l} |std(t) s(x_t, t, y, m) + z|^2 )``,
  i.e. the network is trained towards ``s = -z / std``;
* Fast-GeCo (``fastgeco/model.py``, ``training_step`` with one step from 0.5 and
  ``stop_iteration_random='last'``): ``L = mean_batch(-SI-SNR(istft(x0_hat), x))``
  with ``x0_hat`` the one-step estimate and ``x`` the clean source
  (:func:`nass.losses.si_snr.neg_si_snr`). The reference compares with
  ``to_audio(X)`` (the clean spectrogram taken back through the transform), identical
  to the clean waveform up to STFT round-off.
"""

import io
import json
import os

import torch

from nass.correction.modes import DEFAULT_MODE, MODES, get_mode  # noqa: F401 (MODES: its old import path)
from nass.correction.samplers import fast_geco_sample, pc_sample
from nass.correction.score_model import ScoreModel
from nass.correction.sdes import SDE, get_sde, randn_like
from nass.correction.transforms import SpecTransform
from nass.dataio.audio import atomic_write
from nass.losses.si_snr import neg_si_snr

#: ``GeCoModel.forward``'s objectives (a mode's :attr:`~nass.correction.modes.CorrectionMode.objective`)
#: -> the loss method computing it.
OBJECTIVES = {"dsm": "dsm_loss_wave", "fast-geco": "fast_geco_loss"}


class GeCoModel(torch.nn.Module):
    """Diffusion corrector of a separator's estimate (GeCo and its one-step Fast-GeCo).

    Parameters
    ----------
    sde : nass.correction.sdes.SDE
        Forward process (GeCo: ``BBEDSDE()``).
    score_model : torch.nn.Module
        ``score_model(x, t, y, m) -> score``, complex ``[batch, F, frames]``
        (:class:`~nass.correction.score_model.ScoreModel`).
    transform : nass.correction.transforms.SpecTransform
        Waveform <-> compressed spectrogram.
    reverse_start : float
        Fast-GeCo's starting time ``s`` (default 0.5).
    fast_steps : int
        Fast-GeCo's reverse steps (default 1).
    frame_multiple : int or None
        Pad frames to a multiple of this; ``None`` takes ``score_model.divisor`` when
        it exists (64 for the reference size), else 64.

    Raises
    ------
    ValueError
        If ``reverse_start`` is outside ``[t_eps, T]``, ``fast_steps < 1`` or
        ``frame_multiple < 1``.

    Example
    -------
    >>> import torch
    >>> from nass.correction import BBEDSDE, ScoreModel, SpecTransform
    >>> model = GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform())
    >>> y, m = torch.randn(1, 2000), torch.randn(1, 2000)
    >>> model.correct(y, m, mode="fast-geco").shape
    torch.Size([1, 2000])
    """

    def __init__(self, sde, score_model, transform, reverse_start=0.5, fast_steps=1,
                 frame_multiple=None):
        super().__init__()
        if not sde.t_eps <= reverse_start <= sde.T:
            raise ValueError(
                f"GeCoModel: reverse_start must be in [t_eps, T] = [{sde.t_eps}, {sde.T}], "
                f"got {reverse_start}"
            )
        if int(fast_steps) < 1:
            raise ValueError(f"GeCoModel: fast_steps must be >= 1, got {fast_steps}")
        if frame_multiple is None:
            frame_multiple = getattr(score_model, "divisor", 64)
        if int(frame_multiple) < 1:
            raise ValueError(f"GeCoModel: frame_multiple must be >= 1, got {frame_multiple}")
        self.sde = sde
        self.score_model = score_model
        self.transform = transform
        self.reverse_start = float(reverse_start)
        self.fast_steps = int(fast_steps)
        self.frame_multiple = int(frame_multiple)

    # training entry point --------------------------------------------------------------
    def forward(self, y_wave, m_wave, target_wave, objective="dsm"):
        """A training loss from waveforms: what a training loop (and a DDP wrapper) calls.

        Every score evaluation that a loss back-propagates through runs inside this
        ``forward``, so ``DistributedDataParallel(GeCoModel)`` sees it and
        synchronises the gradients (a loss method called on the wrapped module would
        bypass the wrapper; ``DESIGN.md``).

        Parameters
        ----------
        y_wave, m_wave, target_wave : torch.Tensor
            Estimate, mixture and clean source ``[batch, time]``.
        objective : str
            A key of :data:`OBJECTIVES`: ``"dsm"`` (GeCo, :meth:`dsm_loss_wave`) or
            ``"fast-geco"`` (:meth:`fast_geco_loss`); a mode's
            :attr:`~nass.correction.modes.CorrectionMode.objective`.

        Returns
        -------
        torch.Tensor
            Scalar loss.

        Raises
        ------
        ValueError
            On an unknown objective or bad waveforms.
        """
        if objective not in OBJECTIVES:
            raise ValueError(
                f"GeCoModel.forward: objective must be one of {', '.join(map(repr, OBJECTIVES))}, got {objective!r}"
            )
        return getattr(self, OBJECTIVES[objective])(y_wave, m_wave, target_wave)

    def score(self, x, t, y, m):
        """The score ``s(x, t, y, m)`` (delegates to ``score_model``)."""
        return self.score_model(x, t, y, m)

    # data preparation -----------------------------------------------------------------
    @staticmethod
    def _check_waves(**waves):
        shape = None
        for name, w in waves.items():
            if w is None:
                continue
            if not torch.is_tensor(w) or w.dim() != 2 or w.is_complex():
                raise ValueError(
                    f"GeCoModel: {name} must be a real tensor [batch, time], got "
                    f"{getattr(w, 'shape', type(w))}; add a batch axis with .unsqueeze(0)"
                )
            if shape is not None and w.shape != shape:
                raise ValueError(
                    f"GeCoModel: {', '.join(k for k, v in waves.items() if v is not None)} "
                    f"must have one shape, got {[tuple(v.shape) for v in waves.values() if v is not None]}"
                )
            shape = w.shape
            if not bool(torch.isfinite(w).all()):
                raise ValueError(f"GeCoModel: {name} contains NaN or Inf samples")
        if shape[-1] < 2:
            raise ValueError(f"GeCoModel: need at least 2 samples, got {shape[-1]}")

    def pad_frames(self, spec):
        """Zero-pad ``[batch, F, frames]`` on the right to a multiple of ``frame_multiple``.

        For spectrograms that do not come from a waveform (tests); waveforms are padded
        in the time domain instead (:meth:`padded_length`).
        """
        extra = (-spec.shape[-1]) % self.frame_multiple
        return torch.nn.functional.pad(spec, (0, extra)) if extra else spec

    def padded_length(self, length):
        """Shortest length ``>= length`` (samples) whose STFT has a multiple of ``frame_multiple`` frames.

        A centred STFT of ``L`` samples has ``L // hop + 1`` frames; the result is
        ``max(length, (k * frame_multiple - 1) * hop)`` with the smallest such ``k``.

        Example
        -------
        >>> from nass.correction import BBEDSDE, ScoreModel, SpecTransform
        >>> model = GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform())  # 4 x 64-sample hops
        >>> model.padded_length(16320), model.padded_length(16321), model.padded_length(8000)
        (16320, 16321, 8128)
        """
        hop, mult = self.transform.hop_length, self.frame_multiple
        frames = int(length) // hop + 1
        k = -(-frames // mult)
        return max(int(length), (k * mult - 1) * hop)

    def _to_spec(self, wave):
        extra = self.padded_length(wave.shape[-1]) - wave.shape[-1]
        if extra:
            wave = torch.nn.functional.pad(wave, (0, extra))
        return self.transform.stft(wave)

    def spec_to_wave(self, spec, length):
        """Invert a (padded) spectrogram of :meth:`waves_to_specs` to ``length`` samples.

        The whole padded length is inverted, then the padding is cut off (so no frame
        is dropped and none is inverted that is not the STFT of a signal).

        Parameters
        ----------
        spec : torch.Tensor
            Complex ``[batch, F, frames]`` with ``frames`` the STFT frames of
            ``padded_length(length)`` samples.
        length : int
            Samples of the unpadded signal.

        Returns
        -------
        torch.Tensor
            Real ``[batch, length]`` (normalised scale).
        """
        return self.transform.istft(spec, self.padded_length(length))[..., : int(length)]

    @staticmethod
    def _peak(wave, fallback=None):
        peak = wave.abs().amax(dim=-1, keepdim=True)
        if fallback is not None:
            peak = torch.where(peak > 0, peak, fallback)
        return torch.where(peak > 0, peak, torch.ones_like(peak))

    def waves_to_specs(self, y_wave, m_wave, target_wave=None):
        """Peak-normalise, pad (time domain) and transform.

        ``y`` and the target are divided by the estimate's peak, the mixture by its own
        peak (see the module docstring).

        Parameters
        ----------
        y_wave, m_wave : torch.Tensor
            Estimate and mixture ``[batch, time]``.
        target_wave : torch.Tensor, optional
            Clean source ``[batch, time]``.

        Returns
        -------
        tuple
            ``(Y, M, X, norm)``: complex ``[batch, F, frames]`` (``X`` is ``None``
            without a target; ``frames`` a multiple of ``frame_multiple``) and the
            estimate's normalisation factors ``[batch, 1]``.

        Raises
        ------
        ValueError
            On shapes other than one common ``[batch, time]`` or non-finite samples.
        """
        self._check_waves(y_wave=y_wave, m_wave=m_wave, target_wave=target_wave)
        peak_m = self._peak(m_wave)
        norm = self._peak(y_wave, fallback=peak_m)
        Y = self._to_spec(y_wave / norm)
        M = self._to_spec(m_wave / peak_m)
        X = None
        if target_wave is not None:
            X = self._to_spec(target_wave / norm)
        return Y, M, X, norm

    # losses ---------------------------------------------------------------------------
    def dsm_loss(self, x0, y, m, t=None, z=None):
        """Denoising score-matching loss (sigma-weighted), see the module docstring.

        Parameters
        ----------
        x0, y, m : torch.Tensor
            Complex ``[batch, F, frames]``: clean, estimate, mixture spectrograms.
        t : torch.Tensor, optional
            Times ``[batch]``; drawn from ``U[t_eps, T]`` if omitted.
        z : torch.Tensor, optional
            Complex noise shaped like ``x0``; drawn if omitted.

        Returns
        -------
        torch.Tensor
            Scalar ``mean_batch(1/2 sum |std s + z|^2)``.

        Raises
        ------
        ValueError
            On mismatched shapes or non-complex input.
        """
        for name, v in (("x0", x0), ("y", y), ("m", m)):
            if not torch.is_tensor(v) or not v.is_complex() or v.shape != x0.shape:
                raise ValueError(
                    f"GeCoModel.dsm_loss: x0, y, m must be complex with one shape; {name} is "
                    f"{getattr(v, 'shape', type(v))} {getattr(v, 'dtype', '')}"
                )
        batch = x0.shape[0]
        if t is None:
            t = torch.rand(batch, device=x0.device) * (self.sde.T - self.sde.t_eps) + self.sde.t_eps
        t = SDE._time(t, x0)
        if z is None:
            z = randn_like(x0)
        mean, std = self.sde.marginal_prob(x0, t, y)
        sigma = SDE._bcast(std, x0)
        score = self.score_model(mean + sigma * z, t, y, m)
        err = (sigma * score + z).abs() ** 2
        return torch.mean(0.5 * err.reshape(batch, -1).sum(dim=-1))

    def dsm_loss_wave(self, y_wave, m_wave, target_wave, t=None, z=None):
        """:meth:`dsm_loss` from waveforms ``[batch, time]`` (normalised, transformed)."""
        Y, M, X, _ = self.waves_to_specs(y_wave, m_wave, target_wave)
        return self.dsm_loss(X, Y, M, t=t, z=z)

    def fast_geco_loss(self, y_wave, m_wave, target_wave, z=None, generator=None):
        """Fast-GeCo fine-tuning loss: negative SI-SNR (dB) of the one-step estimate.

        Parameters
        ----------
        y_wave, m_wave, target_wave : torch.Tensor
            Estimate, mixture and clean source ``[batch, time]``.
        z : torch.Tensor, optional
            Starting noise, complex ``[batch, F, frames]`` (padded frames); drawn if
            omitted.
        generator : torch.Generator, optional

        Returns
        -------
        torch.Tensor
            Scalar, mean over the batch of ``-SI-SNR``.

        Raises
        ------
        ValueError
            On bad waveform shapes or values.
        """
        Y, M, _, _ = self.waves_to_specs(y_wave, m_wave, None)
        x0_hat = self.sample_one_step(Y, M, z=z, generator=generator)
        est = self.spec_to_wave(x0_hat, y_wave.shape[-1])
        return neg_si_snr(est, target_wave).mean()

    # samplers (what the modes of nass.correction.modes call) ---------------------------
    def sample_one_step(self, y, m, z=None, generator=None):
        """Fast-GeCo: ``fast_steps`` reverse steps from ``reverse_start`` (differentiable).

        The estimate that :meth:`fast_geco_loss` trains and mode ``"fast-geco"`` returns
        (:func:`~nass.correction.samplers.fast_geco_sample`).

        Parameters
        ----------
        y, m : torch.Tensor
            Complex ``[batch, F, frames]``: estimate and mixture spectrograms.
        z : torch.Tensor, optional
            Starting noise shaped like ``y``; drawn if omitted.
        generator : torch.Generator, optional

        Returns
        -------
        torch.Tensor
            Complex ``[batch, F, frames]``.
        """
        return fast_geco_sample(self.sde, self.score_model, y, m, t_start=self.reverse_start,
                                num_steps=self.fast_steps, z=z, generator=generator)

    def sample_pc(self, y, m, num_steps=None, snr=0.5, corrector_steps=1, generator=None):
        """GeCo: predictor-corrector sampling from ``T`` (:func:`~nass.correction.samplers.pc_sample`).

        Parameters
        ----------
        y, m : torch.Tensor
            Complex ``[batch, F, frames]``: estimate and mixture spectrograms.
        num_steps : int, optional
            Reverse steps (default ``sde.N``, 30).
        snr : float
            Corrector signal-to-noise ratio (default 0.5).
        corrector_steps : int
            Langevin steps per time (default 1).
        generator : torch.Generator, optional

        Returns
        -------
        torch.Tensor
            Complex ``[batch, F, frames]``, the last predictor's noise-free mean.
        """
        x0_hat, _ = pc_sample(self.sde, self.score_model, y, m, num_steps=num_steps, snr=snr,
                              corrector_steps=corrector_steps, generator=generator)
        return x0_hat

    # inference ------------------------------------------------------------------------
    @torch.no_grad()
    def correct(self, y_wave, m_wave, mode=DEFAULT_MODE, num_steps=None, snr=0.5,
                corrector_steps=1, generator=None):
        """Refine separated waveforms.

        Parameters
        ----------
        y_wave : torch.Tensor
            Separator estimates ``[batch, time]`` (one source per row).
        m_wave : torch.Tensor
            The mixture of each row ``[batch, time]``.
        mode : str
            A key of :data:`nass.correction.modes.CORRECTION_MODES`: ``"fast-geco"`` (one
            step from ``reverse_start``) or ``"geco"`` (predictor-corrector sampling).
        num_steps : int, optional
            GeCo reverse steps (default ``sde.N``, 30). Ignored by Fast-GeCo, which
            always takes the ``fast_steps`` it was fine-tuned for (so callers can pass
            one ``num_steps`` whatever the mode).
        snr : float
            GeCo corrector SNR (default 0.5).
        corrector_steps : int
            GeCo Langevin steps per time (default 1).
        generator : torch.Generator, optional

        Returns
        -------
        torch.Tensor
            Corrected waveforms ``[batch, time]``, at the input's scale.

        Raises
        ------
        ValueError
            On an unknown mode (:class:`~nass.correction.modes.UnknownCorrectionMode`, the
            message lists the known ones) or bad waveforms.
        """
        sampler = get_mode(mode, "GeCoModel.correct").sampler
        Y, M, _, norm = self.waves_to_specs(y_wave, m_wave, None)
        x0_hat = sampler(self, Y, M, num_steps, snr, corrector_steps, generator)
        return self.spec_to_wave(x0_hat, y_wave.shape[-1]) * norm


CONFIG_NAME = "corrector.json"
WEIGHTS_NAME = "corrector.ckpt"
#: ``format`` of a corrector folder's ``model_card.json`` (the card of :mod:`nass.export`).
CORRECTOR_FORMAT = "nass-corrector/1"


def save_corrector(model, folder, ema=None):
    """Write a :class:`GeCoModel` to ``folder`` (``corrector.json``, ``corrector.ckpt``, ``model_card.json``).

    Parameters
    ----------
    model : GeCoModel
        With a :class:`ScoreModel`, a registered SDE and a :class:`SpecTransform`.
    folder : str
        Written as a whole (:func:`nass.export.write_artifact_folder`: staged, then renamed;
        an earlier folder there is replaced); the card lists both files' SHA-256.
    ema : ExponentialMovingAverage, optional
        When given, the averaged weights are saved (the model is left unchanged).

    Example
    -------
    >>> import tempfile, torch
    >>> from nass.correction import BBEDSDE, ScoreModel, SpecTransform
    >>> d = tempfile.mkdtemp()
    >>> save_corrector(GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform()), d)
    >>> type(load_corrector(d).score_model).__name__
    'ScoreModel'
    """
    params = list(model.score_model.parameters())
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    try:
        state = {k: v.detach().cpu().clone() for k, v in model.score_model.state_dict().items()}
    finally:
        if ema is not None:
            ema.restore(params)
    tr = model.transform
    config = {
        "sde": model.sde.config(),
        "score_model": model.score_model.config,
        "transform": dict(n_fft=tr.n_fft, hop_length=tr.hop_length, alpha=tr.alpha, beta=tr.beta),
        "reverse_start": model.reverse_start,
        "fast_steps": model.fast_steps,
        "frame_multiple": model.frame_multiple,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    import nass
    from nass.export import git_commit, write_artifact_folder

    card = {"format": CORRECTOR_FORMAT, "sde": config["sde"].get("name"), "nass_version": nass.__version__,
            "git_commit": git_commit()}
    files = {CONFIG_NAME: (json.dumps(config, indent=2) + "\n").encode("utf-8"), WEIGHTS_NAME: buffer.getvalue()}
    write_artifact_folder(folder, files, card, overwrite=True, option="--output_folder")


def load_corrector(folder, device="cpu"):
    """Load a corrector written by :func:`save_corrector` (in eval mode on ``device``).

    The folder shares the model card of separator folders (:mod:`nass.export`):
    ``model_card.json`` lists the SHA-256 of ``corrector.json`` and ``corrector.ckpt``,
    checked before anything is used (folders written before the card are read unchecked).
    Weights are read with ``torch.load(..., weights_only=True)`` from the bytes checked.
    Nothing is written.

    Parameters
    ----------
    folder : str
        Folder holding ``corrector.json`` and ``corrector.ckpt``.
    device : str or torch.device
        Where to put the model (default ``"cpu"``).

    Returns
    -------
    GeCoModel

    Raises
    ------
    ValueError
        If a file is missing or does not match (message names the folder), or a file's
        SHA-256 differs from the card's (``nass.inference.ModelLoadError``, file named).
    """
    cfg_path = os.path.join(folder, CONFIG_NAME)
    w_path = os.path.join(folder, WEIGHTS_NAME)
    missing = [p for p in (cfg_path, w_path) if not os.path.isfile(p)]
    if missing:
        raise ValueError(
            f"load_corrector: {folder} lacks {', '.join(os.path.basename(p) for p in missing)}; "
            "write the folder with nass.correction.save_corrector"
        )
    from nass.export import CARD, read_verified

    if os.path.isfile(os.path.join(folder, CARD)):  # SHA-256 of both files checked, then read from memory
        _, contents = read_verified(folder, (CONFIG_NAME, WEIGHTS_NAME))
    else:  # a folder written before the card: unchecked
        contents = {}
        for name, path in ((CONFIG_NAME, cfg_path), (WEIGHTS_NAME, w_path)):
            with open(path, "rb") as fh:
                contents[name] = fh.read()
    try:
        cfg = json.loads(contents[CONFIG_NAME].decode("utf-8"))
        sde_cfg = dict(cfg["sde"])
        sde = get_sde(sde_cfg.pop("name"), **sde_cfg)
        net = ScoreModel(**cfg["score_model"])
        model = GeCoModel(sde, net, SpecTransform(**cfg["transform"]),
                          reverse_start=cfg["reverse_start"], fast_steps=cfg["fast_steps"],
                          frame_multiple=cfg["frame_multiple"])
        net.load_state_dict(torch.load(io.BytesIO(contents[WEIGHTS_NAME]), map_location="cpu", weights_only=True))
    except (KeyError, TypeError, RuntimeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"load_corrector: {folder} is not a valid corrector folder: {exc}") from exc
    return model.to(device).eval()

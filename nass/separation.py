"""The one masking-separator forward used by training, evaluation and inference.

``encoder -> [enhancer] -> mask network -> decoder -> trim/pad to the input length``

The building blocks are SpeechBrain's (``speechbrain.lobes.models.dual_path``:
``Encoder``, ``Dual_Path_Model`` with ``SBTransformerBlock`` (SepFormer, Subakan et al.
ICASSP 2021) or ``SBRNNBlock`` (DPRNN, Luo et al. ICASSP 2020), ``Decoder``; and
``speechbrain.lobes.models.conv_tasnet.MaskNet`` (Conv-TasNet, Luo & Mesgarani 2019)),
wired in YAML. Every mask network maps ``[batch, N, L]`` to ``[num_masks, batch, N, L]``.

Noise output (NASS, Zhang et al., ICASSP 2024, arXiv 2305.10761, Sec. 2.1): with
``noise_target="extra_output"`` the mask network is built with ``num_spks + 1`` outputs;
the last mask, decoded like the others, is the noise estimate ``est_noise``.

Enhancement front-end (Hu et al., ICASSP 2023, arXiv 2302.11131, Fig. 1): an optional
one-output mask network between encoder and separator; ``enhanced_w = mix_w * mask_e``
is the representation the separator's masks act on, supervised by the encoder output of
the clean mixture (see :mod:`nass.brains.separation`).

NASS stacked on the enhancer: with ``noise_input="enhanced"`` (the straightforward
stacking) the noise mask, and so the PatchNCE negatives, act on ``enhanced_w``, which the SE
loss pushes towards noise-free; ``noise_input="mixture"`` (our option) applies the noise
mask to the encoder output of the mixture ``mix_w`` instead, taken before the enhancer.
"""

import dataclasses
from typing import Callable, List, Optional, Protocol, runtime_checkable

import torch

NOISE_TARGETS = ("none", "extra_output")
NOISE_INPUTS = ("enhanced", "mixture")
MASK_NORMALIZATIONS = ("none", "sum")  # STFTMaskingSeparator: masks as given, or shared out over the outputs
_SHARE_EPS = 1e-6  # added to every gain before sharing out: a bin no mask claims is split evenly
INPUT_NORMALIZATIONS = ("none", "frequency")  # STFTMaskingSeparator: mask network input as is, or per-frequency mean/variance normalised
_NORM_EPS = 1e-5  # variance floor of the per-frequency input normalisation


def source_key(k):
    """Batch key of speaker ``k`` (1-based): ``s1_sig``, ``s2_sig``, ...

    Example
    -------
    >>> source_key(2)
    's2_sig'
    """
    return f"s{int(k)}_sig"


def item_keys(num_spks):
    """The waveform keys of one dataset item, in order: ``mix_sig, s1_sig .. s{num_spks}_sig,
    noise_sig, mix_clean_sig`` (every dataset and batch builder uses this list).

    Example
    -------
    >>> item_keys(2)
    ['mix_sig', 's1_sig', 's2_sig', 'noise_sig', 'mix_clean_sig']
    """
    return ["mix_sig", *[source_key(k + 1) for k in range(int(num_spks))], "noise_sig", "mix_clean_sig"]


def make_item(utt_id, mix, sources, noise, mix_clean):
    """One dataset item (a dict of 1-D waveforms keyed by :func:`item_keys`).

    Parameters
    ----------
    utt_id : str
    mix, noise, mix_clean : torch.Tensor
        ``[time]`` waveforms (``noise`` all-zero when the data has none).
    sources : sequence of torch.Tensor
        ``num_spks`` waveforms ``[time]``.

    Returns
    -------
    dict
        ``{"id": utt_id, "mix_sig": .., "s1_sig": .., .., "noise_sig": .., "mix_clean_sig": ..}``.

    Example
    -------
    >>> import torch
    >>> item = make_item("u0", torch.zeros(4), [torch.zeros(4), torch.zeros(4)], torch.zeros(4), torch.zeros(4))
    >>> sorted(item)
    ['id', 'mix_clean_sig', 'mix_sig', 'noise_sig', 's1_sig', 's2_sig']
    """
    keys = item_keys(len(sources))
    return {"id": utt_id, **dict(zip(keys, [mix, *sources, noise, mix_clean]))}


@dataclasses.dataclass
class SeparationBatch:
    """One batch as every loss term and the Brain see it (built once, by :meth:`from_padded`).

    Attributes
    ----------
    mix : torch.Tensor
        ``[batch, time]`` input mixtures.
    sources : torch.Tensor
        ``[batch, time, num_spks]`` reference speakers.
    noise : torch.Tensor
        ``[batch, time]`` reference noise (all-zero when the data has none).
    mix_clean : torch.Tensor
        ``[batch, time]`` the sum of the sources.
    ids : list of str
        Utterance IDs.
    lengths : torch.Tensor or None
        ``[batch]`` relative lengths (1.0: the whole row; the rest is zero padding).

    Example
    -------
    >>> import torch
    >>> from speechbrain.dataio.batch import PaddedBatch
    >>> w = torch.ones(8)
    >>> b = SeparationBatch.from_padded(PaddedBatch([make_item("u0", w, [w, w], w, w)]), num_spks=2)
    >>> b.sources.shape, b.ids
    (torch.Size([1, 8, 2]), ['u0'])
    """

    mix: torch.Tensor
    sources: torch.Tensor
    noise: torch.Tensor
    mix_clean: torch.Tensor
    ids: List[str]
    lengths: Optional[torch.Tensor] = None

    @property
    def num_spks(self):
        """Number of reference speakers."""
        return int(self.sources.shape[-1])

    @classmethod
    def from_padded(cls, batch, num_spks):
        """Read a SpeechBrain ``PaddedBatch`` of :func:`make_item` items.

        Parameters
        ----------
        batch : speechbrain.dataio.batch.PaddedBatch
        num_spks : int

        Raises
        ------
        KeyError
            A key of :func:`item_keys` is missing, named with the keys the batch has.
        """
        keys = item_keys(num_spks)
        missing = [k for k in keys if not hasattr(batch, k)]
        if missing:
            raise KeyError(f"the batch lacks {missing} (num_spks={num_spks}); items must be built by "
                           "nass.separation.make_item (keys: " + ", ".join(keys) + ")")
        sources = torch.stack([getattr(batch, source_key(k + 1)).data for k in range(int(num_spks))], dim=-1)
        return cls(
            mix=batch.mix_sig.data,
            sources=sources,
            noise=batch.noise_sig.data,
            mix_clean=batch.mix_clean_sig.data,
            ids=[str(i) for i in batch.id],
            lengths=batch.mix_sig.lengths,
        )


@dataclasses.dataclass
class SeparationOutput:
    """Everything one forward pass produces.

    Attributes
    ----------
    est_sources : torch.Tensor
        ``[batch, time, num_spks]`` separated speakers, same length as the input.
    est_noise : torch.Tensor or None
        ``[batch, time]`` noise estimate (``noise_target="extra_output"``), else ``None``.
    mix_w : torch.Tensor
        ``[batch, N, L]`` encoder output of the mixture.
    enhanced_w : torch.Tensor or None
        ``[batch, N, L]`` enhanced representation (with an enhancer), else ``None``.
    masked_reps : torch.Tensor
        ``[num_masks, batch, N, L]`` decoder inputs (``rep * mask``); speakers first, the
        noise last when present. These are the NASS contrastive queries / negatives.
    encode : callable or None
        Maps waveforms ``[batch, time]`` to ``[batch, N, L]`` in the space of ``mix_w`` /
        ``masked_reps`` (the separator's encoder): the PatchNCE positives ``Encoder(s_j)``
        and the SE target ``Encoder(mix_clean)``. ``None``: no loss term may need it.
    """

    est_sources: torch.Tensor
    est_noise: Optional[torch.Tensor]
    mix_w: torch.Tensor
    enhanced_w: Optional[torch.Tensor]
    masked_reps: torch.Tensor
    encode: Optional[Callable] = None


@runtime_checkable
class SeparationModel(Protocol):
    """What a separator gives the training code (the Brain and the loss terms); stated once.

    A separator is a ``torch.nn.Module`` with:

    - ``forward(mix)``: ``[batch, time]`` -> :class:`SeparationOutput` whose waveforms have
      exactly ``time`` samples. ``est_sources`` is always set; ``est_noise`` when
      ``noise_target == "extra_output"``; ``enhanced_w`` when ``has_enhancer``;
      ``mix_w``, ``masked_reps`` and ``encode`` for the terms that read representations.
    - ``num_spks`` (int) and ``noise_target`` (``"none"`` | ``"extra_output"``).
    - ``encoder_parameters()``: the parameters of the part that maps waveforms to the
      representation (the encoder), the tensors ``freeze_encoder: True`` keeps fixed when
      fine-tuning (:func:`nass.runner.freeze_encoder`); a separator without such a part
      returns an empty list (and ``freeze_encoder: True`` is then refused).
    - ``has_enhancer`` (bool): the unified SE+SS front-end is present.
    - ``enhancement_shared_parameters()``: the parameters on both the SE and the SS path
      (encoder + enhancer), the tensors gradient modulation projects (``backward:
      gradient_modulation``); only called when ``has_enhancer``.

    What each method needs from it, checked before training by
    :func:`nass.losses.terms.check_loss_terms`: NASS's noise term reads ``est_noise``;
    PatchNCE reads ``masked_reps`` (speakers then the noise) and ``encode`` (positives);
    the enhancement (SE) term reads ``enhanced_w``, ``mix_w`` and ``encode``; gradient
    modulation calls ``enhancement_shared_parameters()``. A mapping network without
    representations gives ``masked_reps``/``encode`` it can define, or only trains with
    the waveform terms (speaker PIT, noise).

    Example
    -------
    >>> from speechbrain.lobes.models.dual_path import Encoder, Decoder
    >>> from speechbrain.lobes.models.conv_tasnet import MaskNet
    >>> model = MaskingSeparator(Encoder(16, 32), MaskNet(32, 16, 32, 3, 2, 1, C=2), Decoder(32, 1, 16, 8), num_spks=2)
    >>> isinstance(model, SeparationModel), isinstance(torch.nn.Linear(2, 2), SeparationModel)
    (True, False)
    """

    num_spks: int
    noise_target: str

    @property
    def has_enhancer(self) -> bool:
        """Whether ``forward`` gives ``enhanced_w``."""

    def enhancement_shared_parameters(self) -> list:
        """Parameters on both the SE and the SS path (gradient modulation)."""

    def encoder_parameters(self) -> list:
        """Parameters of the encoder (``freeze_encoder``); empty without one."""

    def forward(self, mix: torch.Tensor) -> SeparationOutput:
        """``[batch, time]`` -> :class:`SeparationOutput`."""


class MaskingSeparator(torch.nn.Module):
    """Encoder / mask network / decoder separator with optional noise output and enhancer.

    Parameters
    ----------
    encoder : torch.nn.Module
        Maps ``[batch, time]`` to ``[batch, N, L]`` (e.g. ``dual_path.Encoder``).
    masknet : torch.nn.Module
        Maps ``[batch, N, L]`` to ``[num_masks, batch, N, L]``; must be built with
        ``num_spks`` outputs, or ``num_spks + 1`` when ``noise_target="extra_output"``.
    decoder : torch.nn.Module
        Maps ``[batch, N, L]`` to ``[batch, time']`` (e.g. ``dual_path.Decoder``).
    num_spks : int
        Number of speakers.
    noise_target : {"none", "extra_output"}
        ``"extra_output"`` decodes the last mask as the noise estimate (NASS).
    enhancer : torch.nn.Module, optional
        One-output mask network ``[batch, N, L] -> [1, batch, N, L]`` (unified SE+SS).
    noise_input : {"enhanced", "mixture"}
        With an enhancer and the noise output: the representation the noise mask acts on
        (``enhanced_w``, or ``mix_w`` from before the enhancer). Ignored otherwise.

    Raises
    ------
    ValueError
        Unknown ``noise_target`` or ``noise_input``; or, at the first forward, a mask network whose number
        of outputs does not match ``num_spks`` and ``noise_target``.

    Example
    -------
    >>> import torch
    >>> from speechbrain.lobes.models.dual_path import Encoder, Decoder, Dual_Path_Model, SBTransformerBlock
    >>> enc = Encoder(kernel_size=16, out_channels=32)
    >>> block = SBTransformerBlock(num_layers=1, d_model=32, nhead=4, d_ffn=64)
    >>> masknet = Dual_Path_Model(32, 32, block, block, num_layers=1, K=50, num_spks=3)
    >>> dec = Decoder(in_channels=32, out_channels=1, kernel_size=16, stride=8, bias=False)
    >>> model = MaskingSeparator(enc, masknet, dec, num_spks=2, noise_target="extra_output")
    >>> out = model(torch.randn(2, 1603))
    >>> out.est_sources.shape, out.est_noise.shape
    (torch.Size([2, 1603, 2]), torch.Size([2, 1603]))
    """

    def __init__(self, encoder, masknet, decoder, num_spks, noise_target="none", enhancer=None, noise_input="enhanced"):
        super().__init__()
        if noise_target not in NOISE_TARGETS:
            raise ValueError(f"noise_target must be one of {NOISE_TARGETS}, got {noise_target!r}")
        if noise_input not in NOISE_INPUTS:
            raise ValueError(f"noise_input must be one of {NOISE_INPUTS}, got {noise_input!r}")
        self.noise_input = noise_input
        self.encoder = encoder
        self.masknet = masknet
        self.decoder = decoder
        self.enhancer = enhancer
        self.num_spks = int(num_spks)
        self.noise_target = noise_target
        self._check_declared_outputs(masknet, enhancer)

    def _check_declared_outputs(self, masknet, enhancer):
        """A mask network (and enhancer) that declares its number of outputs is checked now, not at the first forward."""
        declared = declared_num_masks(masknet)
        if declared is not None and declared != self.num_masks:
            raise ValueError(self._mask_count_message(declared))
        declared = declared_num_masks(enhancer)
        if declared is not None and declared != 1:
            raise ValueError(f"the enhancer must be a one-output mask network, but it is built with {declared} outputs")

    @property
    def _noise_on_mixture(self):
        """Whether the noise mask acts on ``mix_w`` (before the enhancer) rather than on ``enhanced_w``."""
        return self.enhancer is not None and self.noise_target == "extra_output" and self.noise_input == "mixture"

    @property
    def num_masks(self):
        """Number of mask-network outputs: ``num_spks`` (+1 with the noise output)."""
        return self.num_spks + (1 if self.noise_target == "extra_output" else 0)

    def _mask_count_message(self, got):
        return (
            f"the mask network gives {got} masks but num_spks={self.num_spks} "
            f"with noise_target={self.noise_target!r} needs {self.num_masks}: set the mask "
            "network's num_spks (Dual_Path_Model) or C (ConvTasNet MaskNet) accordingly "
            "(the recipe YAMLs: num_masks)"
        )

    @property
    def has_enhancer(self):
        """Whether the unified SE+SS enhancer is present (``forward`` then gives ``enhanced_w``)."""
        return self.enhancer is not None

    def enhancement_shared_parameters(self):
        """Encoder + enhancer parameters: on both the SE and the SS path (gradient modulation).

        Raises
        ------
        ValueError
            Without an enhancer.
        """
        from nass.losses.gradient_modulation import shared_parameters

        if self.enhancer is None:
            raise ValueError("enhancement_shared_parameters: this separator has no enhancer")
        return shared_parameters(self.encoder, self.enhancer)

    def encoder_parameters(self):
        """The encoder's parameters (what ``freeze_encoder: True`` keeps fixed).

        Returns
        -------
        list of torch.nn.Parameter

        Example
        -------
        >>> from speechbrain.lobes.models.dual_path import Encoder, Decoder
        >>> from speechbrain.lobes.models.conv_tasnet import MaskNet
        >>> model = MaskingSeparator(Encoder(16, 32), MaskNet(32, 16, 32, 3, 2, 1, C=2), Decoder(32, 1, 16, 8), 2)
        >>> [tuple(p.shape) for p in model.encoder_parameters()]
        [(32, 1, 16)]
        """
        return list(self.encoder.parameters())

    def encode(self, wav):
        """Encoder representation ``[batch, N, L]`` of waveforms ``[batch, time]``.

        Used for the NASS positives (``Encoder(s_a)``) and the unified-SE target
        (``Encoder(mix_clean)``); handed to the loss terms as ``SeparationOutput.encode``.
        """
        return self.encoder(wav)

    def forward(self, mix):
        """Separate a batch of mixtures.

        Parameters
        ----------
        mix : torch.Tensor
            ``[batch, time]`` waveforms.

        Returns
        -------
        SeparationOutput
            See :class:`SeparationOutput`; waveforms have exactly ``time`` samples.
        """
        if mix.dim() != 2:
            raise ValueError(f"MaskingSeparator expects mix of shape [batch, time], got {tuple(mix.shape)}")
        mix_w = self.encoder(mix)
        enhanced_w = None
        rep = mix_w
        if self.enhancer is not None:
            enh_mask = self.enhancer(mix_w)
            enhanced_w = mix_w * enh_mask[0]
            rep = enhanced_w
        masks = self.masknet(rep)
        if masks.shape[0] != self.num_masks:
            raise ValueError(self._mask_count_message(masks.shape[0]))
        masked_reps = rep.unsqueeze(0) * masks  # [M, B, N, L]
        if self._noise_on_mixture:
            noise_rep = mix_w * masks[self.num_spks]
            masked_reps = torch.cat([masked_reps[: self.num_spks], noise_rep.unsqueeze(0)])
        num_masks, batch = masked_reps.shape[:2]
        decoded = self.decoder(masked_reps.flatten(0, 1))  # [M*B, T']
        decoded = fit_length(decoded, mix.shape[-1]).view(num_masks, batch, -1)
        est_sources, est_noise = self._split_outputs(decoded)
        return SeparationOutput(est_sources, est_noise, mix_w, enhanced_w, masked_reps, encode=self.encode)

    def _split_outputs(self, decoded):
        """``[M, B, T]`` decoded outputs -> ``est_sources [B, T, num_spks]``, ``est_noise [B, T]`` or None."""
        decoded = decoded.permute(1, 2, 0)  # [B, T, M]
        est_noise = decoded[..., self.num_spks] if self.noise_target == "extra_output" else None
        return decoded[..., : self.num_spks], est_noise


def declared_num_masks(masknet):
    """The number of masks a SpeechBrain mask network is built to give, or None when unknown.

    ``Dual_Path_Model.num_spks`` (SepFormer, DPRNN) and ``conv_tasnet.MaskNet.C``; any
    other module is only checked at its first forward.

    Example
    -------
    >>> from speechbrain.lobes.models.conv_tasnet import MaskNet
    >>> declared_num_masks(MaskNet(32, 16, 32, 3, 2, 1, C=3)), declared_num_masks(torch.nn.Identity())
    (3, None)
    """
    if masknet is None:
        return None
    from speechbrain.lobes.models.conv_tasnet import MaskNet
    from speechbrain.lobes.models.dual_path import Dual_Path_Model

    if isinstance(masknet, Dual_Path_Model):
        return int(masknet.num_spks)
    if isinstance(masknet, MaskNet):
        return int(masknet.C)
    return None


def fit_length(wav, length):
    """Trim or zero-pad the last axis of ``wav`` to ``length`` samples.

    Example
    -------
    >>> import torch
    >>> fit_length(torch.ones(2, 5), 3).shape, fit_length(torch.ones(2, 5), 7)[0].tolist()
    (torch.Size([2, 3]), [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    """
    cur = wav.shape[-1]
    if isinstance(cur, torch.SymInt) or isinstance(length, torch.SymInt):
        # symbolic sizes (torch.export, ONNX with a dynamic time axis): the same, without a branch on them
        return torch.nn.functional.pad(wav, (0, torch.sym_max(length - cur, 0)))[..., :length]
    if cur >= length:
        return wav[..., :length]
    return torch.nn.functional.pad(wav, (0, length - cur))


class STFTMaskingSeparator(torch.nn.Module):
    """Time-frequency masking separator: STFT, mask network on compressed magnitudes, iSTFT.

    The mask network sees ``|X|^power`` of the mixture's STFT ``X`` (``[batch, F, L]``,
    ``F = n_fft // 2 + 1``) and gives one non-negative mask per output; an output is
    ``mask * |X|^power`` in the compressed domain, i.e. the spectrum ``mask^(1/power) * X``
    (the mixture's phase), turned back into a waveform by the inverse STFT. A 32 ms window
    resolves the harmonics of a voice (31 Hz bins at 8 kHz), which a 4 ms learned encoder
    does not; on short CPU budgets this representation learns faster (``docs/results.md``,
    'An STFT front end'). The STFT runs in float32 even under autocast.

    Source: STFT-magnitude masking with the mixture's phase, as in uPIT (Kolbaek et al.,
    "Multi-talker speech separation with utterance-level permutation invariant training",
    IEEE/ACM TASLP 2017, arXiv 1703.06284; 32 ms windows at 8 kHz); the masks here act on
    power-compressed magnitudes. Times in samples at the model's sample rate.

    Same contract as :class:`MaskingSeparator` (:class:`SeparationModel`): ``mix_w`` and
    ``encode(wav)`` are compressed magnitudes ``[batch, F, L]``; ``masked_reps`` the
    outputs in that space, so PatchNCE compares an output with ``encode(s_j)`` of its
    target. No learned encoder (``encoder_parameters()`` is empty). With an ``enhancer``
    (unified SE+SS, Hu et al., ICASSP 2023, arXiv 2302.11131) the enhancer's mask acts on
    the compressed magnitude first (``enhanced_w``, the SE loss compares it with
    ``encode(mix_clean)``) and the separation masks on the enhanced magnitude; the
    spectrum gain of an output is then ``(enhancer mask * mask)^(1/power)``.

    Parameters
    ----------
    masknet : torch.nn.Module
        Maps ``[batch, F, L]`` to ``[num_masks, batch, F, L]`` (e.g. ``Dual_Path_Model``
        with ``in_channels = n_fft // 2 + 1``).
    num_spks : int
        Number of speakers.
    noise_target : {"none", "extra_output"}
        ``"extra_output"``: the last mask gives the noise estimate (NASS).
    n_fft : int
        Window and FFT length in samples (Hann window).
    hop_length : int
        Frame shift in samples.
    power : float
        Magnitude compression of the mask network's input (0 < power <= 1).
    enhancer : torch.nn.Module, optional
        One-output mask network ``[batch, F, L] -> [1, batch, F, L]`` (unified SE+SS).
    noise_input : {"enhanced", "mixture"}
        With an enhancer and the noise output: the magnitude the noise mask acts on
        (``enhanced_w``, or ``mix_w`` from before the enhancer). Ignored otherwise.
    mask_normalization : {"none", "sum"}
        ``"none"``: the mask network's non-negative masks are used as they are.
        ``"sum"``: the magnitude gains ``mask^(1/power)`` are divided by their sum over the
        outputs, so every time-frequency bin of the (enhanced) magnitude is shared out among
        the outputs (a ratio mask, as the ideal ratio mask of Wang, Narayanan and Wang, "On
        training targets for supervised speech separation", IEEE/ACM TASLP 22(12), 2014); with
        the noise output on, the speakers and the noise then add up to the spectrum the masks
        act on (the mixture's, or the enhanced one with an enhancer), so the estimates are
        mixture-consistent (Wisdom et al., "Differentiable consistency constraints for improved
        deep speech enhancement", ICASSP 2019, arXiv 1811.08521) by construction; not with
        ``noise_input="mixture"``, whose noise mask acts on ``mix_w`` instead.
    input_normalization : {"none", "frequency"}
        ``"none"``: the mask network (and enhancer) sees ``|X|^power`` as it is.
        ``"frequency"``: it sees ``|X|^power`` normalised to zero mean and unit variance over
        the frames of each frequency bin of each utterance (utterance-level mean and variance
        normalisation per feature, as for ASR features; Viikki and Laurila, Speech
        Communication 25, 1998), so a channel's spectral colouring and the strong low
        frequencies do not dominate the input. The masks still act on ``|X|^power``.

    Raises
    ------
    ValueError
        Unknown ``noise_target``, ``noise_input``, ``mask_normalization`` or
        ``input_normalization``, ``power`` outside (0, 1], a mask network
        (or enhancer) built with the wrong number of outputs, or a mix that is not
        ``[batch, time]``.

    Example
    -------
    >>> import torch
    >>> from speechbrain.lobes.models.dual_path import Dual_Path_Model, SBRNNBlock
    >>> block = SBRNNBlock(input_size=16, hidden_channels=8, num_layers=1, bidirectional=True)
    >>> masknet = Dual_Path_Model(129, 16, block, block, num_layers=1, K=20, num_spks=3)
    >>> model = STFTMaskingSeparator(masknet, num_spks=2, noise_target="extra_output")
    >>> out = model(torch.randn(2, 1603))
    >>> out.est_sources.shape, out.est_noise.shape, out.mix_w.shape
    (torch.Size([2, 1603, 2]), torch.Size([2, 1603]), torch.Size([2, 129, 26]))
    """

    def __init__(self, masknet, num_spks, noise_target="none", n_fft=256, hop_length=64, power=0.5,
                 enhancer=None, noise_input="enhanced", mask_normalization="none", input_normalization="none"):
        super().__init__()
        if input_normalization not in INPUT_NORMALIZATIONS:
            raise ValueError(f"input_normalization must be one of {INPUT_NORMALIZATIONS}, got {input_normalization!r}")
        self.input_normalization = input_normalization
        if mask_normalization not in MASK_NORMALIZATIONS:
            raise ValueError(f"mask_normalization must be one of {MASK_NORMALIZATIONS}, got {mask_normalization!r}")
        if noise_target not in NOISE_TARGETS:
            raise ValueError(f"noise_target must be one of {NOISE_TARGETS}, got {noise_target!r}")
        if noise_input not in NOISE_INPUTS:
            raise ValueError(f"noise_input must be one of {NOISE_INPUTS}, got {noise_input!r}")
        if not 0 < power <= 1:
            raise ValueError(f"power must be in (0, 1], got {power}")
        self.masknet = masknet
        self.enhancer = enhancer
        self.noise_input = noise_input
        self.num_spks = int(num_spks)
        self.noise_target = noise_target
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.power = float(power)
        self.mask_normalization = mask_normalization
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self._check_declared_outputs(masknet, enhancer)

    num_masks = MaskingSeparator.num_masks
    _check_declared_outputs = MaskingSeparator._check_declared_outputs
    _noise_on_mixture = MaskingSeparator._noise_on_mixture
    _mask_count_message = MaskingSeparator._mask_count_message
    _split_outputs = MaskingSeparator._split_outputs
    has_enhancer = MaskingSeparator.has_enhancer

    def enhancement_shared_parameters(self):
        """The enhancer's parameters: on both the SE and the SS path (gradient modulation).

        Raises
        ------
        ValueError
            Without an enhancer.
        """
        from nass.losses.gradient_modulation import shared_parameters

        if self.enhancer is None:
            raise ValueError("enhancement_shared_parameters: this separator has no enhancer")
        return shared_parameters(self.enhancer)

    def encoder_parameters(self):
        """Empty: the STFT has no weights (``freeze_encoder: True`` is refused)."""
        return []

    def _stft(self, wav):
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return torch.stft(wav.float(), self.n_fft, self.hop_length, window=self.window,
                              center=True, return_complex=True)

    def _compress(self, spec):
        return spec.abs().clamp_min(1e-8).pow(self.power)

    def encode(self, wav):
        """Compressed magnitude ``|STFT(wav)|^power``, ``[batch, F, L]``, of ``[batch, time]``."""
        return self._compress(self._stft(wav))

    def _share_out(self, masks):
        """Masks ``[M, B, F, L]`` whose magnitude gains ``mask^(1/power)`` sum to 1 over ``M``.

        A bin where every mask is 0 (ReLU outputs) is split evenly, so nothing is lost.
        """
        with torch.autocast(device_type=masks.device.type, enabled=False):
            gains = masks.float().clamp_min(0).pow(1.0 / self.power) + _SHARE_EPS
            return (gains / gains.sum(0, keepdim=True)).pow(self.power)

    def _normalize_input(self, rep):
        """The mask network's input: ``rep`` or, with ``input_normalization="frequency"``,
        ``rep`` normalised to zero mean and unit variance over the frames of each frequency
        bin of each utterance (``[batch, F, L]``, float32 statistics)."""
        if self.input_normalization == "none":
            return rep
        with torch.autocast(device_type=rep.device.type, enabled=False):
            x = rep.float()
            mean = x.mean(-1, keepdim=True)
            var = x.var(-1, keepdim=True, unbiased=False)
            return (x - mean) * torch.rsqrt(var + _NORM_EPS)

    def forward(self, mix):
        """Separate ``[batch, time]`` mixtures; returns a :class:`SeparationOutput`."""
        if mix.dim() != 2:
            raise ValueError(f"STFTMaskingSeparator expects mix of shape [batch, time], got {tuple(mix.shape)}")
        spec = self._stft(mix)  # [B, F, L] complex
        mix_w = self._compress(spec)
        enhanced_w, rep = None, mix_w
        if self.enhancer is not None:
            enh_mask = self.enhancer(self._normalize_input(mix_w))[0]
            enhanced_w = rep = mix_w * enh_mask
        masks = self.masknet(self._normalize_input(rep))
        if masks.shape[0] != self.num_masks:
            raise ValueError(self._mask_count_message(masks.shape[0]))
        if self.mask_normalization == "sum":
            masks = self._share_out(masks)
        masked_reps = rep.unsqueeze(0) * masks  # [M, B, F, L]
        total = masks  # mask of each output relative to mix_w
        if enhanced_w is not None:
            total = masks * enh_mask.unsqueeze(0)
            if self._noise_on_mixture:
                masked_reps = torch.cat([masked_reps[: self.num_spks], (mix_w * masks[self.num_spks]).unsqueeze(0)])
                total = torch.cat([total[: self.num_spks], masks[self.num_spks :]])
        num_masks, batch = masks.shape[:2]
        with torch.autocast(device_type=mix.device.type, enabled=False):
            gains = total.float().clamp_min(0).pow(1.0 / self.power)
            est_spec = (gains * spec.unsqueeze(0)).flatten(0, 1)
            decoded = torch.istft(est_spec, self.n_fft, self.hop_length, window=self.window,
                                  center=True, length=mix.shape[-1])
        est_sources, est_noise = self._split_outputs(decoded.view(num_masks, batch, -1))
        return SeparationOutput(est_sources, est_noise, mix_w, enhanced_w, masked_reps, encode=self.encode)

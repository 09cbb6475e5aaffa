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
from typing import Optional

import torch

NOISE_TARGETS = ("none", "extra_output")
NOISE_INPUTS = ("enhanced", "mixture")


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
    """

    est_sources: torch.Tensor
    est_noise: Optional[torch.Tensor]
    mix_w: torch.Tensor
    enhanced_w: Optional[torch.Tensor]
    masked_reps: torch.Tensor


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

    @property
    def num_masks(self):
        """Number of mask-network outputs: ``num_spks`` (+1 with the noise output)."""
        return self.num_spks + (1 if self.noise_target == "extra_output" else 0)

    def encode(self, wav):
        """Encoder representation ``[batch, N, L]`` of waveforms ``[batch, time]``.

        Used for the NASS positives (``Encoder(s_a)``) and the unified-SE target
        (``Encoder(mix_clean)``).
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
            raise ValueError(
                f"the mask network returned {masks.shape[0]} masks but num_spks={self.num_spks} "
                f"with noise_target={self.noise_target!r} needs {self.num_masks}: set the mask "
                "network's num_spks (Dual_Path_Model) or C (ConvTasNet MaskNet) accordingly"
            )
        masked_reps = rep.unsqueeze(0) * masks  # [M, B, N, L]
        if enhanced_w is not None and self.noise_target == "extra_output" and self.noise_input == "mixture":
            noise_rep = mix_w * masks[self.num_spks]
            masked_reps = torch.cat([masked_reps[: self.num_spks], noise_rep.unsqueeze(0)])
        num_masks, batch = masked_reps.shape[:2]
        decoded = self.decoder(masked_reps.flatten(0, 1))  # [M*B, T']
        decoded = fit_length(decoded, mix.shape[-1]).view(num_masks, batch, -1)
        decoded = decoded.permute(1, 2, 0)  # [B, T, M]
        est_sources = decoded[..., : self.num_spks]
        est_noise = decoded[..., self.num_spks] if self.noise_target == "extra_output" else None
        return SeparationOutput(est_sources, est_noise, mix_w, enhanced_w, masked_reps)


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

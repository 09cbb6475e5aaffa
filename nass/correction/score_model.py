"""Score network of GeCo: an NCSN++-style U-Net on six real channels (diffusers backbone).

The network sees the current state ``x_t``, the separator's estimate ``y`` and the
mixture ``m`` (complex spectrograms ``[batch, F, frames]``) stacked as six real
channels ``(Re x, Im x, Re y, Im y, Re m, Im m)`` (the order of the reference
``WangHelin1997/Fast-GeCo``, ``geco/backbones/ncsnpp.py``, ``NCSNpp.forward``), and
returns two channels read as one complex score.

Backbone: :class:`diffusers.UNet2DModel` (no hand-written U-Net) with
``time_embedding_type="fourier"``: Gaussian Fourier features of ``log t`` (scale 16),
as NCSN++ (``fourier_scale=16``, ``temb = GaussianFourierProjection(log(t))`` in the
reference). Plain ``DownBlock2D``/``AttnDownBlock2D``/``UpBlock2D``/``AttnUpBlock2D``
blocks are used: diffusers' ``Skip*`` (NCSN++ "output_skip") blocks are hard-wired
for 3 image channels. Attention is single-head (``attention_head_dim = channels``,
as NCSN++'s ``AttnBlockpp``) and applied at the levels whose frequency size is in
``attn_resolutions`` (the reference tests ``h.shape[-2]``, the frequency axis), plus
the middle block.

Output parametrisation::

    score(x_t, t, y, m) = - UNet([x_t, y, m], t) / t

``diffusers`` divides the output by the timestep when ``time_embedding_type ==
"fourier"``; the reference NCSN++ divides by ``used_sigmas = t`` as well (GeCo:
``h = h / used_sigmas`` with ``time_cond = t``; Fast-GeCo: ``h = h / scale_divide``
with ``output_scale='time'``) and negates (``score = -self.dnn(...)`` in
``geco/model.py``). One difference: the reference divides *before* its last 1x1
convolution (so its bias is not divided), diffusers after ``conv_out``.

Reference size (defaults): 128 base channels, multipliers ``(1, 1, 2, 2, 2, 2, 2)``
(7 levels, 6 halvings: the frequency axis goes 256 -> 4 and the frame axis must be a
multiple of 64, hence the reference's ``pad_spec`` to 64 frames), 2 residual blocks
per level, attention at frequency size 16. ``ScoreModel.tiny()`` is a CPU-test size.
"""

import torch
from diffusers import UNet2DModel


class ScoreModel(torch.nn.Module):
    """Complex score network ``s(x_t, t, y, m)`` on ``[batch, F, frames]`` spectrograms.

    Parameters
    ----------
    base_channels : int
        Channels of the first level (default 128).
    channel_mults : tuple of int
        Per-level multipliers of ``base_channels`` (default ``(1, 1, 2, 2, 2, 2, 2)``).
    num_res_blocks : int
        Residual blocks per level in the encoder (the decoder has one more), default 2.
    attn_resolutions : tuple of int
        Frequency sizes at which a level gets self-attention (default ``(16,)``).
    num_freqs : int
        Frequency bins ``F`` of the input (default 256 = 510 // 2 + 1); must be
        divisible by ``2 ** (len(channel_mults) - 1)``.
    norm_num_groups : int or None
        GroupNorm groups; ``None`` picks ``min(base_channels // 4, 32)`` as NCSN++.
    dropout : float
        Dropout in the residual blocks (default 0).

    Raises
    ------
    ValueError
        On inconsistent sizes (see ``num_freqs``, group counts).

    Source
    ------
    Wang et al., Interspeech 2024 (arXiv 2406.07461); ``WangHelin1997/Fast-GeCo``,
    ``geco/backbones/ncsnpp.py`` (defaults ``nf=128, ch_mult=(1,1,2,2,2,2,2),
    num_res_blocks=2, attn_resolutions=(16,), fourier_scale=16``); Song et al. ICLR 2021
    (NCSN++).

    Example
    -------
    >>> import torch
    >>> net = ScoreModel.tiny()
    >>> x = torch.randn(2, 256, 16, dtype=torch.cfloat)
    >>> net(x, torch.tensor([0.5, 0.9]), x, x).shape
    torch.Size([2, 256, 16])
    """

    def __init__(
        self,
        base_channels=128,
        channel_mults=(1, 1, 2, 2, 2, 2, 2),
        num_res_blocks=2,
        attn_resolutions=(16,),
        num_freqs=256,
        norm_num_groups=None,
        dropout=0.0,
    ):
        super().__init__()
        channel_mults = tuple(int(c) for c in channel_mults)
        attn_resolutions = tuple(int(a) for a in attn_resolutions)
        if len(channel_mults) < 1 or base_channels < 1 or num_res_blocks < 1:
            raise ValueError(
                "ScoreModel: need base_channels >= 1, num_res_blocks >= 1 and at least one "
                f"level, got {base_channels}, {num_res_blocks}, {channel_mults}"
            )
        self.num_levels = len(channel_mults)
        self.divisor = 2 ** (self.num_levels - 1)
        if num_freqs % self.divisor:
            raise ValueError(
                f"ScoreModel: num_freqs={num_freqs} is not divisible by 2**(levels-1)="
                f"{self.divisor}; use fewer levels or n_fft with (n_fft//2+1) divisible"
            )
        if norm_num_groups is None:
            norm_num_groups = max(1, min(base_channels // 4, 32))
        channels = tuple(base_channels * c for c in channel_mults)
        for c in channels:
            if c % norm_num_groups:
                raise ValueError(
                    f"ScoreModel: norm_num_groups={norm_num_groups} must divide every level's "
                    f"channels {channels}"
                )
        self.num_freqs = int(num_freqs)
        self.attn_resolutions = attn_resolutions
        self.config = dict(
            base_channels=int(base_channels), channel_mults=list(channel_mults),
            num_res_blocks=int(num_res_blocks), attn_resolutions=list(attn_resolutions),
            num_freqs=int(num_freqs), norm_num_groups=int(norm_num_groups), dropout=float(dropout),
        )
        level_freqs = [num_freqs // 2**i for i in range(self.num_levels)]
        has_attn = [f in attn_resolutions for f in level_freqs]
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in has_attn)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn))
        self.unet = UNet2DModel(
            in_channels=6,
            out_channels=2,
            time_embedding_type="fourier",
            down_block_types=down,
            up_block_types=up,
            block_out_channels=channels,
            layers_per_block=int(num_res_blocks),
            attention_head_dim=None,
            norm_num_groups=int(norm_num_groups),
            dropout=float(dropout),
        )

    @classmethod
    def tiny(cls, num_freqs=256):
        """A CPU-test configuration: 16 channels, 3 levels (x1, x2, x2), 1 block, no attention
        besides the middle block."""
        return cls(
            base_channels=16,
            channel_mults=(1, 2, 2),
            num_res_blocks=1,
            attn_resolutions=(),
            num_freqs=num_freqs,
            norm_num_groups=4,
        )

    def num_parameters(self):
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, x, t, y, m):
        """Score of ``p_t(x | y, m)`` in the project's convention (see :mod:`.sdes`).

        Parameters
        ----------
        x, y, m : torch.Tensor
            Complex ``[batch, F, frames]``: current state, separator estimate, mixture
            (compressed spectrograms, :class:`~nass.correction.transforms.SpecTransform`).
            ``frames`` must be a multiple of ``2 ** (levels - 1)`` (64 for the
            reference size; :class:`~nass.correction.model.GeCoModel` pads).
        t : torch.Tensor
            Diffusion times ``[batch]`` (or a scalar), > 0.

        Returns
        -------
        torch.Tensor
            Complex ``[batch, F, frames]``.

        Raises
        ------
        ValueError
            On non-complex input, different shapes, wrong ``F``, frames not divisible,
            ``t`` of the wrong shape or not positive.
        """
        for name, v in (("x", x), ("y", y), ("m", m)):
            if not torch.is_tensor(v) or not v.is_complex() or v.dim() != 3:
                raise ValueError(
                    f"ScoreModel: {name} must be a complex tensor [batch, F, frames], got "
                    f"{getattr(v, 'shape', type(v))} {getattr(v, 'dtype', '')}"
                )
        if not (x.shape == y.shape == m.shape):
            raise ValueError(
                f"ScoreModel: x, y, m must have one shape, got {tuple(x.shape)}, "
                f"{tuple(y.shape)}, {tuple(m.shape)}"
            )
        batch, freqs, frames = x.shape
        if freqs != self.num_freqs:
            raise ValueError(f"ScoreModel: expected F={self.num_freqs} bins, got {freqs}")
        if frames % self.divisor:
            raise ValueError(
                f"ScoreModel: frames={frames} must be a multiple of {self.divisor}; pad the "
                "spectrograms (GeCoModel.pad_frames)"
            )
        t = torch.as_tensor(t, device=x.device, dtype=x.real.dtype)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"ScoreModel: t must have shape [{batch}], got {tuple(t.shape)}")
        if not bool((t > 0).all()):
            raise ValueError("ScoreModel: t must be > 0 (the time embedding takes log t)")
        inp = torch.stack(
            (x.real, x.imag, y.real, y.imag, m.real, m.imag), dim=1
        )  # [B, 6, F, L]
        out = self.unet(inp, t).sample  # divided by t inside (fourier embedding)
        # under autocast (bf16 / fp16) the U-Net returns half precision, which has no
        # complex dtype: the score is returned in the input's precision
        out = out.to(x.real.dtype).permute(0, 2, 3, 1).contiguous()
        return -torch.view_as_complex(out)

"""Complex STFT representation used by GeCo / Fast-GeCo.

The score model works on a *compressed complex spectrogram* (SGMSE, Welker et al.
2022; Richter et al. 2023; kept by GeCo, Wang et al. 2024, arXiv 2406.07461)::

    X = STFT(x)                                  n_fft 510, hop 64, periodic Hann, centred
    c = beta * |X|^alpha * exp(i angle X)        alpha 0.5, beta 0.15   (forward)
    X = (|c / beta|)^(1 / alpha) * exp(i angle c)                        (backward, exact)

``n_fft = 510`` gives ``510 // 2 + 1 = 256`` frequency bins, a power of two the U-Net
can halve six times. A 256-frame training crop is ``(256 - 1) * 64 = 16320`` samples
(about 2.04 s at 8 kHz) with ``center=True``. Values from the reference
``WangHelin1997/Fast-GeCo``, ``geco/data_module.py`` (``SpecsDataModule.__init__``
defaults ``n_fft=510, hop_length=64, num_frames=256, window='hann',
spec_factor=0.15, spec_abs_exponent=0.5``; note its argparse default for
``--hop_length`` is 128, the constructor default and the brief say 64).

The compression is written as ``X * |X|^(alpha - 1)`` (and ``c * |c|^(1/alpha - 1)``),
which equals the formula above but has a finite gradient at ``X = 0`` (``angle`` does
not), so a waveform loss can be back-propagated through :meth:`SpecTransform.istft`.
"""

import torch


class SpecTransform(torch.nn.Module):
    """Waveform <-> compressed complex STFT (forward and exact inverse).

    Parameters
    ----------
    n_fft : int
        FFT size in samples (default 510 -> 256 frequency bins).
    hop_length : int
        Hop in samples (default 64, i.e. 8 ms at 8 kHz).
    alpha : float
        Magnitude exponent (default 0.5), in (0, 1].
    beta : float
        Scale factor (default 0.15).

    Raises
    ------
    ValueError
        On non-positive sizes or an exponent outside (0, 1].

    Source
    ------
    Wang et al., Interspeech 2024 (arXiv 2406.07461), Sec. 3; reference repository
    ``WangHelin1997/Fast-GeCo``, ``geco/data_module.py`` (``spec_fwd``/``spec_back``).

    Example
    -------
    >>> import torch
    >>> tr = SpecTransform()
    >>> x = torch.randn(2, 16320)
    >>> c = tr.stft(x)
    >>> c.shape, c.dtype
    (torch.Size([2, 256, 256]), torch.complex64)
    >>> bool((tr.istft(c, 16320) - x).abs().max() < 1e-4)
    True
    """

    def __init__(self, n_fft=510, hop_length=64, alpha=0.5, beta=0.15):
        super().__init__()
        if n_fft <= 0 or hop_length <= 0 or hop_length > n_fft:
            raise ValueError(
                f"SpecTransform: need 0 < hop_length <= n_fft, got n_fft={n_fft}, "
                f"hop_length={hop_length}"
            )
        if not 0 < alpha <= 1:
            raise ValueError(f"SpecTransform: alpha must be in (0, 1], got {alpha}")
        if beta <= 0:
            raise ValueError(f"SpecTransform: beta must be > 0, got {beta}")
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.register_buffer(
            "window", torch.hann_window(self.n_fft, periodic=True), persistent=False
        )

    @property
    def num_freqs(self):
        """Number of frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def num_frames(self, length):
        """Frames of a centred STFT of ``length`` samples: ``length // hop + 1``."""
        return int(length) // self.hop_length + 1

    # compression -----------------------------------------------------------------
    @staticmethod
    def _pow_mag(z, p):
        """``z * |z|^p`` with value 0 and a finite gradient at ``z = 0``."""
        mag = z.abs()
        safe = torch.where(mag > 0, mag, torch.ones_like(mag))
        return z * safe.pow(p)

    def compress(self, spec):
        """``beta * |X|^alpha * exp(i angle X)`` of a complex STFT ``[..., F, frames]``."""
        if self.alpha == 1:
            return spec * self.beta
        return self._pow_mag(spec, self.alpha - 1) * self.beta

    def decompress(self, spec):
        """Exact inverse of :meth:`compress`."""
        spec = spec / self.beta
        if self.alpha == 1:
            return spec
        return self._pow_mag(spec, 1 / self.alpha - 1)

    # STFT --------------------------------------------------------------------------
    def stft(self, wave):
        """Compressed complex STFT.

        Parameters
        ----------
        wave : torch.Tensor
            Real waveforms ``[batch, time]`` (samples).

        Returns
        -------
        torch.Tensor
            Complex ``[batch, n_fft // 2 + 1, time // hop_length + 1]``.

        Raises
        ------
        ValueError
            If ``wave`` is not a real 2-D tensor.
        """
        if wave.dim() != 2 or wave.is_complex():
            raise ValueError(
                f"SpecTransform.stft: expected real waveforms [batch, time], got "
                f"shape {tuple(wave.shape)} dtype {wave.dtype}"
            )
        spec = torch.stft(
            wave,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window.to(device=wave.device, dtype=wave.dtype),
            center=True,
            return_complex=True,
        )
        return self.compress(spec)

    def istft(self, spec, length):
        """Waveform from a compressed complex STFT (exact inverse of :meth:`stft`).

        Parameters
        ----------
        spec : torch.Tensor
            Complex ``[batch, n_fft // 2 + 1, frames]``. Extra frames (padding) are
            overlap-added and the result is cut to ``length`` (as the reference's
            ``to_audio(spec, length)``).
        length : int
            Output length in samples.

        Returns
        -------
        torch.Tensor
            Real ``[batch, length]``.

        Raises
        ------
        ValueError
            If ``spec`` is not complex 3-D with ``n_fft // 2 + 1`` bins.
        """
        if spec.dim() != 3 or not spec.is_complex() or spec.shape[1] != self.num_freqs:
            raise ValueError(
                f"SpecTransform.istft: expected complex [batch, {self.num_freqs}, frames], "
                f"got shape {tuple(spec.shape)} dtype {spec.dtype}"
            )
        needed = self.num_frames(length)
        if spec.shape[-1] < needed:
            raise ValueError(
                f"SpecTransform.istft: {length} samples need {needed} frames, got "
                f"{spec.shape[-1]}"
            )
        spec = self.decompress(spec)
        real_dtype = spec.real.dtype
        return torch.istft(
            spec,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window.to(device=spec.device, dtype=real_dtype),
            center=True,
            length=int(length),
        )

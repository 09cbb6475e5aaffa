"""Training-time augmentation of single sources (before they are re-mixed)."""

import torch


class RandomShelfEQ(torch.nn.Module):
    """Random spectral colouring of each waveform: a bass and a treble shelf of random gain.

    Every row of a ``[batch, time]`` input gets its own two gains drawn uniformly from
    ``[-max_gain_db, max_gain_db]`` dB: a low shelf at ``bass_freq`` and a high shelf at
    ``treble_freq``, zero-phase, applied in the frequency domain (one ``rfft`` of the whole
    row): the gain in dB at frequency ``f`` is ``g_bass / (1 + (f / bass_freq)^2) +
    g_treble / (1 + (treble_freq / f)^2)``, i.e. first-order shelf shapes (half the shelf
    gain at the shelf frequency). The output is rescaled to the input's RMS, so the mixing
    levels (LibriMix loudness) are kept. Applied to each speaker separately before re-mixing (``source_augment`` of the
    separation recipes), a voice's channel colouring (microphone, codec, band limit) stops
    telling the speakers apart, so the model has to separate by the voices themselves:
    the random-EQ / channel augmentation common in speaker and speech recognition.
    Source: no reference implementation; the shelf shapes are first-order (the formula
    above), chosen for this project (``docs/learning_curves.md``, seventh and eighth sessions).

    Parameters
    ----------
    sample_rate : int
        Hz.
    max_gain_db : float
        Largest boost or cut of each shelf in dB (>= 0; 0 leaves the input as it is).
    bass_freq, treble_freq : float
        Shelf frequencies in Hz (0 < bass_freq < treble_freq < sample_rate / 2).

    Raises
    ------
    ValueError
        A negative gain, frequencies out of order or above Nyquist, or an input that is
        not ``[batch, time]``.

    Example
    -------
    >>> import torch
    >>> eq = RandomShelfEQ(8000, max_gain_db=10)
    >>> x = torch.randn(3, 8000)
    >>> y = eq(x)
    >>> y.shape
    torch.Size([3, 8000])
    >>> torch.allclose(y.pow(2).mean(-1), x.pow(2).mean(-1), rtol=1e-3)
    True
    """

    def __init__(self, sample_rate, max_gain_db=10.0, bass_freq=300.0, treble_freq=2000.0):
        super().__init__()
        if max_gain_db < 0:
            raise ValueError(f"RandomShelfEQ: max_gain_db must be >= 0, got {max_gain_db}")
        if not 0 < bass_freq < treble_freq < sample_rate / 2:
            raise ValueError(
                f"RandomShelfEQ: need 0 < bass_freq < treble_freq < sample_rate / 2, got "
                f"{bass_freq}, {treble_freq} at {sample_rate} Hz")
        self.sample_rate = int(sample_rate)
        self.max_gain_db = float(max_gain_db)
        self.bass_freq = float(bass_freq)
        self.treble_freq = float(treble_freq)

    @torch.no_grad()
    def forward(self, wav):
        """Colour every row of ``wav`` ``[batch, time]`` with its own random shelves.

        Returns
        -------
        torch.Tensor
            ``[batch, time]``, the dtype of ``wav``, each row at its input RMS.
        """
        if wav.dim() != 2:
            raise ValueError(f"RandomShelfEQ expects [batch, time], got {tuple(wav.shape)}")
        if self.max_gain_db == 0:
            return wav
        x = wav.float()
        length = x.shape[-1]
        spec = torch.fft.rfft(x, dim=-1)
        freqs = torch.fft.rfftfreq(length, d=1.0 / self.sample_rate, device=x.device)
        low = 1.0 / (1.0 + (freqs / self.bass_freq) ** 2)
        high = 1.0 / (1.0 + (self.treble_freq / freqs.clamp_min(1e-3)) ** 2)
        gains = (torch.rand(x.shape[0], 2, device=x.device) * 2 - 1) * self.max_gain_db
        gain_db = gains[:, :1] * low + gains[:, 1:] * high  # [batch, F]
        y = torch.fft.irfft(spec * torch.pow(10.0, gain_db / 20.0), n=length, dim=-1)
        scale = (x.pow(2).mean(-1, keepdim=True) / y.pow(2).mean(-1, keepdim=True).clamp_min(1e-12)).sqrt()
        return (y * scale).to(wav.dtype)

"""On-the-fly (dynamic) remixing of the training sources and noise, LibriMix style.

Dynamic mixing draws new source combinations at every epoch instead of replaying
the fixed training mixtures, a strong regulariser for separation models (it is how
SepFormer's best WSJ0-2mix/LibriMix results were trained; SpeechBrain recipe
``recipes/LibriMix/separation/dynamic_mixing.py`` - facts only). Here each item:

1. draws ``num_spks`` source files of *different speakers* from the pool of every
   ``s1_wav``, ``s2_wav`` (, ``s3_wav``) file of the training manifest (the first
   uniformly among all files, each next one among the files of speakers not yet
   chosen), and one noise file from the pool of ``noise_wav`` files;
2. takes a random crop of ``segment_seconds`` of each source (zero-padded at the
   end when shorter) and of the noise (looped with a cross-fade when shorter,
   :func:`nass.dataio.loudness.loop_noise`);
3. applies the LibriMix gains of :func:`nass.dataio.loudness.librimix_gains`
   (speech to U[-33, -25] LUFS, noise to U[-38, -30] LUFS, pyloudnorm; joint
   rescaling when a mixture would exceed a peak of 0.9) - SpeechBrain draws its gains
   the same way with pyloudnorm;
4. returns the parts and their sums as float32 tensors (not quantised).

Randomness: item ``i`` of epoch ``e`` uses
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(e, i)))``: the same
seed, epoch and index give the same item in any process or DataLoader worker, and
no global random state is touched. Call :meth:`DynamicMixingDataset.set_epoch`
before each epoch (for example in ``Brain.on_stage_start``); the DataLoader must
not keep workers alive across epochs (``persistent_workers=False``, the default),
or the workers keep their copy of the old epoch.

Audio is decoded at every access, not cached: training sources are small, the page
cache keeps them in memory, and a cache per worker would multiply memory use. A
file at another rate than ``sample_rate`` is resampled
(:func:`nass.dataio.audio.resample_polyphase`); a file already at ``sample_rate`` is read
only over the crop.
"""

import math
import os
import re

import numpy as np
import torch

from nass.dataio.audio import AudioError, audio_info, read_audio
from nass.dataio.loudness import draw_loudness_targets, librimix_gains
from nass.dataio.sources import draw_utterances, read_noise, read_speech
from nass.separation import make_item

__all__ = ["librimix_speaker", "DynamicMixingDataset"]

_WSJ_UTT = re.compile(r"^[0-9a-z]{8}$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def librimix_speaker(path, source_index, num_spks):
    """Speaker of a source file from its mixture-named file name, or ``None``.

    * LibriMix (and :mod:`nass.dataio.mixing`) names a mixture by its utterances,
      ``<spk>-<chapter>-<utt>_<spk>-<chapter>-<utt>[_...]``: the speaker of source
      ``k`` is the text before the first ``-`` of part ``k`` (the LibriSpeech speaker
      ID). Used only when the name has ``num_spks`` parts (or ``num_spks + 1``, for a
      de-duplication suffix) that all contain a ``-``.
    * WHAM! / wsj0-mix name a mixture ``<utt1>_<gain1>_<utt2>_<gain2>[...]`` with
      8-character WSJ0 utterance IDs whose first 3 characters are the speaker
      (Hershey et al., ICASSP 2016, wsj0-2mix): the speaker of source ``k`` is
      ``wsj0:`` + the first 3 characters of utterance ``k``.

    Parameters
    ----------
    path : str
        Source file, e.g. ``.../s2/19-198-0001_26-495-0004.wav``.
    source_index : int
        0 for the ``s1`` column, 1 for ``s2``, ...
    num_spks : int
        Sources per mixture.

    Returns
    -------
    str or None
        The speaker, or ``None`` when the name follows neither convention.

    Example
    -------
    >>> librimix_speaker("s2/19-198-0001_26-495-0004.wav", 1, 2)
    '26'
    >>> librimix_speaker("s1/01aa010b_0.97482_209a010p_-0.97482.wav", 1, 2)
    'wsj0:209'
    >>> librimix_speaker("s1/utt-0001.wav", 0, 2) is None
    True
    """
    parts = os.path.splitext(os.path.basename(path))[0].split("_")
    n = len(parts) // 2
    if (
        len(parts) % 2 == 0
        and n >= num_spks
        and all(_WSJ_UTT.match(parts[2 * k]) and _NUMBER.match(parts[2 * k + 1]) for k in range(n))
    ):
        return "wsj0:" + parts[2 * source_index][:3]
    if len(parts) in (num_spks, num_spks + 1) and all("-" in p for p in parts[:num_spks]):
        return parts[source_index].split("-")[0]
    return None


class DynamicMixingDataset(torch.utils.data.Dataset):
    """Training dataset that remixes the training sources and noise at every access.

    Parameters
    ----------
    rows : list of dict
        Training manifest rows with keys ``ID``, ``s1_wav``, ``s2_wav`` (, ``s3_wav``)
        and ``noise_wav`` (may be empty or absent: then the noise is silent and
        ``mix_sig == mix_clean_sig``). See ``docs/DEVELOPING.md`` for the manifest.
    num_spks : int
        Sources per mixture.
    sample_rate : int
        Hz of the returned signals.
    segment_seconds : float or None
        Length of every item (s). ``None`` or ``0``: the length of the shortest drawn
        source (LibriMix ``min`` mode), so items vary in length.
    seed : int
        Base seed.
    speaker_of : callable, optional
        ``speaker_of(path) -> str`` for every source file. Default:
        :func:`librimix_speaker` with the file's column, and every file its own
        speaker where the name does not tell.

    Raises
    ------
    ValueError
        Empty ``rows``, a missing ``s{k}_wav`` key, fewer than ``num_spks`` speakers,
        or a negative segment.

    Notes
    -----
    ``len(dataset) == len(rows)``; item ``i`` is a fresh mixture that depends only on
    ``(seed, epoch, i)``. Items are dicts with ``id`` (str) and the 1-D float32
    tensors ``mix_sig``, ``s1_sig`` ... ``s{num_spks}_sig``, ``noise_sig``,
    ``mix_clean_sig`` of equal length, the keys of the static training batches, so
    they collate with ``speechbrain.dataio.batch.PaddedBatch``.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> from nass.dataio.audio import write_audio
    >>> d = tempfile.mkdtemp(); rng = np.random.default_rng(0); rows = []
    >>> for i, (a, b) in enumerate([("1-1-1", "2-1-1"), ("3-1-1", "4-1-1")]):
    ...     row = {"ID": str(i)}
    ...     for k, name in (("s1", a), ("s2", b), ("noise", "n")):
    ...         row[k + "_wav"] = p = os.path.join(d, k, f"{a}_{b}.wav")
    ...         write_audio(p, 0.1 * rng.standard_normal(8000), 8000)
    ...     rows.append(row)
    >>> ds = DynamicMixingDataset(rows, num_spks=2, sample_rate=8000, segment_seconds=0.5)
    >>> item = ds[0]
    >>> sorted(item), item["mix_sig"].shape
    (['id', 'mix_clean_sig', 'mix_sig', 'noise_sig', 's1_sig', 's2_sig'], torch.Size([4000]))
    """

    def __init__(self, rows, num_spks, sample_rate, segment_seconds=4.0, seed=0, speaker_of=None):
        rows = list(rows)
        if not rows:
            raise ValueError("DynamicMixingDataset: no rows. Pass the training manifest rows.")
        self.num_spks = int(num_spks)
        self.sample_rate = int(sample_rate)
        if segment_seconds is not None and not segment_seconds >= 0:
            raise ValueError(f"DynamicMixingDataset: segment_seconds must be >= 0 or None, got {segment_seconds}")
        self.segment = int(round(segment_seconds * self.sample_rate)) if segment_seconds else None
        self.seed = int(seed)
        self.epoch = 0
        self.num_rows = len(rows)
        keys = [f"s{k + 1}_wav" for k in range(self.num_spks)]
        bad = [str(r.get("ID", "?")) for r in rows if any(not r.get(k) for k in keys)]
        if bad:
            ids = ", ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
            raise ValueError(
                f"DynamicMixingDataset: rows {ids} ({len(bad)} in all) lack one of {keys}. "
                f"Check num_spks={self.num_spks} against the manifest."
            )
        files = {}
        for r in rows:
            for k, key in enumerate(keys):
                p = r[key]
                if p in files:
                    continue
                if speaker_of is not None:
                    spk = str(speaker_of(p))
                else:
                    spk = librimix_speaker(p, k, self.num_spks)
                    spk = "file:" + p if spk is None else spk
                files[p] = spk
        self.sources = sorted(files)
        speakers = sorted(set(files.values()))
        if len(speakers) < self.num_spks:
            raise ValueError(
                f"DynamicMixingDataset: the sources come from {len(speakers)} speaker(s) but "
                f"{self.num_spks} different ones are needed per mixture; pass speaker_of."
            )
        pos = {s: i for i, s in enumerate(speakers)}
        self.source_speaker = [speakers[pos[files[p]]] for p in self.sources]
        self._spk_idx = np.array([pos[files[p]] for p in self.sources])
        self.noises = sorted({r["noise_wav"] for r in rows if r.get("noise_wav")})

    def __len__(self):
        return self.num_rows

    def set_epoch(self, epoch):
        """Select the epoch: items of another epoch are different mixtures.

        Parameters
        ----------
        epoch : int
            Epoch number (any integer >= 0).
        """
        self.epoch = int(epoch)

    def _rng(self, index):
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(self.epoch, int(index))))

    def _length_at_rate(self, path):
        info = audio_info(path)
        return int(math.ceil(info.frames * self.sample_rate / info.samplerate)), info

    def _read_crop(self, path, info, length, rng):
        if info.channels > 1:
            raise AudioError(f"{path}: has {info.channels} channels but sources must be mono. Mix it down.")
        if info.samplerate == self.sample_rate and info.frames > length:
            start = int(rng.integers(info.frames - length + 1))
            x, _ = read_audio(path, mono="first", start=start, stop=start + length, dtype="float64")
        else:
            x = read_speech(path, self.sample_rate)
            if x.size > length:
                start = int(rng.integers(x.size - length + 1))
                x = x[start : start + length]
        if not np.isfinite(x).all():
            raise AudioError(f"{path}: contains NaN or Inf samples. Re-create the file.")
        return np.pad(x, (0, length - x.size)) if x.size < length else x

    def __getitem__(self, index):
        if not -self.num_rows <= index < self.num_rows:
            raise IndexError(f"index {index} out of range for {self.num_rows} items")
        index = index % self.num_rows
        rng = self._rng(index)
        chosen = [self.sources[j] for j in draw_utterances(rng, self._spk_idx, self.num_spks)]
        infos = [self._length_at_rate(p) for p in chosen]
        length = self.segment if self.segment is not None else min(n for n, _ in infos)
        sources = [self._read_crop(p, info, length, rng) for p, (_, info) in zip(chosen, infos)]
        has_noise = bool(self.noises)
        if has_noise:
            noise_path = self.noises[int(rng.integers(len(self.noises)))]
            noise, _ = read_noise(noise_path, length, self.sample_rate, float(rng.random()))
            signals = sources + [noise]
        else:
            signals = sources
        targets = draw_loudness_targets(rng, self.num_spks, with_noise=has_noise)
        gains = librimix_gains(signals, self.sample_rate, targets, with_noise=has_noise).gains
        parts = [(s * g).astype(np.float32) for s, g in zip(signals, gains)]
        if not has_noise:
            parts.append(np.zeros(length, dtype=np.float32))
        clean = parts[0].copy()
        for p in parts[1 : self.num_spks]:
            clean += p
        noise = torch.from_numpy(parts[-1])
        sources = [torch.from_numpy(parts[k]) for k in range(self.num_spks)]
        return make_item(f"dm_e{self.epoch}_{index}", torch.from_numpy(clean + parts[-1]), sources, noise,
                         torch.from_numpy(clean))

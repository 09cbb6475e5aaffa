"""SpeechBrain data pipelines that turn a manifest into training / evaluation batches.

Every batch (static manifest or dynamic mixing) carries the same keys:
``id, mix_sig, s1_sig, s2_sig[, s3_sig], noise_sig, mix_clean_sig`` (1-D float32 tensors,
padded by :class:`speechbrain.dataio.batch.PaddedBatch`).
"""

import zlib

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch

from nass.dataio.audio import AudioError
from nass.separation import item_keys


def source_keys(num_spks):
    """Manifest columns of the speaker references: ``["s1_wav", "s2_wav", ...]``.

    Example
    -------
    >>> source_keys(3)
    ['s1_wav', 's2_wav', 's3_wav']
    """
    return [f"s{i + 1}_wav" for i in range(num_spks)]


def read_segment(path, start, stop, sample_rate):
    """Read samples ``[start, stop)`` of a mono file as float32 (zero-padded past the end).

    Parameters
    ----------
    path : str
        Audio file.
    start, stop : int
        Sample indices; ``stop=None`` reads to the end.
    sample_rate : int
        Expected rate in Hz (a different rate raises :class:`AudioError`).

    Returns
    -------
    numpy.ndarray
        ``[stop - start]`` float32 (``[frames - start]`` when ``stop`` is None).

    Example
    -------
    >>> import os, tempfile
    >>> from nass.dataio.audio import write_audio
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> write_audio(p, np.full(100, 0.5, dtype="float32"), 8000)
    >>> read_segment(p, 90, 110, 8000).shape
    (20,)
    """
    try:
        with sf.SoundFile(path) as f:
            if f.samplerate != sample_rate:
                raise AudioError(
                    f"{path}: sample rate {f.samplerate} Hz, expected {sample_rate} Hz. Prepare the data "
                    f"at {sample_rate} Hz or set sample_rate={f.samplerate}."
                )
            if f.channels != 1:
                raise AudioError(f"{path}: {f.channels} channels, mono expected. Mix it down first.")
            f.seek(min(start, f.frames))
            frames = -1 if stop is None else stop - start
            data = f.read(frames, dtype="float32")
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{path}: cannot be read ({exc}). Re-create the file or remove its manifest row.") from exc
    if stop is not None and data.shape[0] < stop - start:
        data = np.pad(data, (0, stop - start - data.shape[0]))
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or Inf samples. Re-create the file.")
    return data


def make_dataset(rows, num_spks, sample_rate, segment_samples=None, seed=0):
    """A :class:`speechbrain.dataio.dataset.DynamicItemDataset` over manifest rows.

    Parameters
    ----------
    rows : list of dict
        Manifest rows (``nass.dataio.manifest.read_manifest``), keys ``ID, duration,
        mix_wav, s1_wav, ..., noise_wav, mix_clean_wav``.
    num_spks : int
        Number of speakers.
    sample_rate : int
        Hz; every file must have this rate.
    segment_samples : int, optional
        Random crop length in samples (training); shorter utterances are zero-padded.
        ``None`` or ``<= 0`` reads whole utterances.
    seed : int
        Seed of the crop offsets (each item draws from its own generator seeded by
        ``seed``, the item ID and a per-dataset counter, so runs are reproducible).

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        Items with keys ``id, mix_sig, s1_sig, .., noise_sig, mix_clean_sig`` (1-D float32
        tensors). ``noise_sig`` is all-zero when the row has no noise file;
        ``mix_clean_sig`` is the sum of the sources when the row has no clean mixture.

    Example
    -------
    >>> import os, tempfile
    >>> from nass.dataio.audio import write_audio
    >>> d = tempfile.mkdtemp()
    >>> for name in ["mix", "s1", "s2", "noise"]:
    ...     write_audio(os.path.join(d, name + ".wav"), np.zeros(800, dtype="float32"), 8000)
    >>> row = {"ID": "u1", "duration": "0.1", "mix_wav": os.path.join(d, "mix.wav"),
    ...        "s1_wav": os.path.join(d, "s1.wav"), "s2_wav": os.path.join(d, "s2.wav"),
    ...        "noise_wav": os.path.join(d, "noise.wav"), "mix_clean_wav": ""}
    >>> ds = make_dataset([row], 2, 8000, segment_samples=400)
    >>> ds[0]["mix_sig"].shape
    torch.Size([400])
    """
    data = {r["ID"]: dict(r) for r in rows}
    keys = source_keys(num_spks)
    counter = {"n": 0}

    def load(row_id, duration, mix_wav, noise_wav, mix_clean_wav, *sources):
        total = int(round(float(duration) * sample_rate))
        start, stop = 0, None
        if segment_samples and segment_samples > 0 and total > segment_samples:
            counter["n"] += 1
            rng = np.random.default_rng([seed, counter["n"], zlib.crc32(row_id.encode())])
            start = int(rng.integers(0, total - segment_samples + 1))
            stop = start + segment_samples
        elif segment_samples and segment_samples > 0:
            stop = segment_samples
        mix = read_segment(mix_wav, start, stop, sample_rate)
        srcs = [read_segment(p, start, stop, sample_rate) for p in sources]
        length = min([mix.shape[0]] + [s.shape[0] for s in srcs])
        if any(s.shape[0] != mix.shape[0] for s in srcs):
            raise AudioError(
                f"{mix_wav}: the sources of utterance {row_id} have different lengths than the mixture. "
                "Re-run data preparation (it validates lengths)."
            )
        noise = read_segment(noise_wav, start, stop, sample_rate) if noise_wav else np.zeros(length, "float32")
        if mix_clean_wav:
            mix_clean = read_segment(mix_clean_wav, start, stop, sample_rate)
        else:
            mix_clean = np.sum(srcs, axis=0).astype("float32")
        out = [mix, *srcs, noise, mix_clean]
        return [torch.from_numpy(np.ascontiguousarray(x[:length])) for x in out]

    provides = item_keys(num_spks)  # mix_sig, s1_sig .., noise_sig, mix_clean_sig

    @sb.utils.data_pipeline.takes("id", "duration", "mix_wav", "noise_wav", "mix_clean_wav", *keys)
    @sb.utils.data_pipeline.provides(*provides)
    def audio_pipeline(row_id, duration, mix_wav, noise_wav, mix_clean_wav, *sources):
        yield from load(row_id, duration, mix_wav, noise_wav, mix_clean_wav, *sources)

    dataset = sb.dataio.dataset.DynamicItemDataset(data)
    dataset.add_dynamic_item(audio_pipeline)
    dataset.set_output_keys(["id", *provides])
    return dataset

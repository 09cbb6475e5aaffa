"""Audio and file I/O shared by the whole package: checked reads, atomic writes.

Every file ``nass`` writes (WAV, CSV, checkpoints, HTML) goes through
:func:`atomic_write`, so an interrupted run never leaves a half-written file under
the final name.
"""

import contextlib
import os
import tempfile
import warnings

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file and the fix."""


@contextlib.contextmanager
def atomic_write(path, suffix=None):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination. Its folder is created if needed.
    suffix : str, optional
        Suffix of the temporary name (default: the suffix of ``path``, so libraries
        that infer the format from the extension still work).

    Yields
    ------
    str
        The temporary path to write to.

    Example
    -------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with atomic_write(os.path.join(d, "a.txt")) as tmp:
    ...     _ = open(tmp, "w").write("hello")
    >>> sorted(os.listdir(d))
    ['a.txt']
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if suffix is None:
        suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def audio_info(path):
    """Sample rate, channels and length of an audio file without reading the samples.

    Parameters
    ----------
    path : str
        Audio file (anything libsndfile reads: WAV, FLAC, GSM, ...).

    Returns
    -------
    soundfile._SoundFileInfo
        With ``samplerate`` (Hz), ``channels``, ``frames`` (samples), ``duration`` (s).

    Raises
    ------
    AudioError
        If the file is missing or unreadable.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "x.wav")
    >>> write_audio(p, np.zeros(800, dtype="float32"), 8000)
    >>> audio_info(p).duration
    0.1
    """
    if not os.path.isfile(path):
        raise AudioError(f"{path}: file not found. Check the path (and the manifest that names it).")
    try:
        return sf.info(path)
    except Exception as exc:  # soundfile raises several types
        raise AudioError(
            f"{path}: cannot be read as audio ({exc}). Re-create or re-download the file, "
            "or remove it from the data folder."
        ) from exc


def read_audio(path, sample_rate=None, mono="error"):
    """Read an audio file as float32 samples in [-1, 1].

    Parameters
    ----------
    path : str
        Audio file.
    sample_rate : int, optional
        Expected rate in Hz; a different rate raises :class:`AudioError`. ``None`` accepts any.
    mono : {"error", "mix", "keep"}
        What to do with a multi-channel file: raise (``"error"``), average the channels
        with a warning (``"mix"``), or return ``[time, channels]`` (``"keep"``).

    Returns
    -------
    samples : numpy.ndarray
        ``[time]`` float32 (``[time, channels]`` with ``mono="keep"``).
    rate : int
        Sample rate in Hz.

    Raises
    ------
    AudioError
        Missing, unreadable, empty, non-finite, wrong rate, or multi-channel with
        ``mono="error"``.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "x.wav")
    >>> write_audio(p, 0.1 * np.ones(80, dtype="float32"), 8000)
    >>> x, sr = read_audio(p, sample_rate=8000)
    >>> x.shape, sr
    ((80,), 8000)
    """
    audio_info(path)  # existence / readability with a clear message
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot be decoded ({exc}). The file is probably truncated; re-create it.") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no samples. Remove it or replace it with real audio.")
    if sample_rate is not None and rate != sample_rate:
        raise AudioError(
            f"{path}: sample rate is {rate} Hz but {sample_rate} Hz is expected. Resample the "
            f"data (e.g. `sox in.wav -r {sample_rate} out.wav`) or set sample_rate={rate} in the config."
        )
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or Inf samples. Re-create the file.")
    if data.shape[1] > 1:
        if mono == "error":
            raise AudioError(
                f"{path}: has {data.shape[1]} channels but mono audio is expected. Mix it down "
                "(e.g. `sox in.wav -c 1 out.wav`)."
            )
        if mono == "mix":
            warnings.warn(f"{path}: {data.shape[1]} channels mixed down to mono", stacklevel=2)
            return data.mean(axis=1), rate
        return data, rate
    return data[:, 0], rate


def write_audio(path, samples, sample_rate, subtype="PCM_16"):
    """Write audio atomically (temporary name, then rename).

    Parameters
    ----------
    path : str
        Destination ``.wav`` path; folders are created.
    samples : numpy.ndarray or torch.Tensor
        ``[time]`` or ``[time, channels]``, float in [-1, 1].
    sample_rate : int
        Hz.
    subtype : str
        libsndfile subtype (default 16-bit PCM). Values outside [-1, 1] are clipped by
        libsndfile for integer subtypes; a warning is issued.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "y.wav")
    >>> write_audio(p, np.zeros(10, dtype="float32"), 8000)
    >>> os.path.exists(p)
    True
    """
    if hasattr(samples, "detach"):
        samples = samples.detach().cpu().numpy()
    samples = np.asarray(samples, dtype=np.float32)
    if subtype.startswith("PCM") and samples.size and np.abs(samples).max() > 1.0:
        warnings.warn(f"{path}: samples exceed [-1, 1] and will be clipped", stacklevel=2)
    with atomic_write(path) as tmp:
        sf.write(tmp, samples, sample_rate, subtype=subtype, format="WAV")

"""Audio and file I/O shared by the whole package: checked reads, resampling, atomic writes.

Every file ``nass`` writes (WAV, CSV, checkpoints, HTML) goes through
:func:`atomic_write`, so an interrupted run never leaves a half-written file under
the final name. Every audio file is read by :func:`read_audio` (the demo app's codec2
``.raw`` prompts aside). Resampling: :func:`resample` for tensors (inference: windowed
sinc, bounded memory) and :func:`resample_polyphase` for NumPy arrays (the mixture
generator, dynamic mixing, PESQ at 16 kHz, the demo corpus: LibriMix's polyphase filter);
the two are kept apart because the data and the metrics must stay bit-identical to
what they were.
"""

import contextlib
import errno
import fractions
import math
import os
import shutil
import struct
import tempfile
import warnings

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file and the fix."""


#: File extensions of the audio in a dataset split folder (manifests, ``nass-separate`` folders).
AUDIO_EXTENSIONS = (".wav", ".flac")
#: File extensions of the speech / noise source folders of the mixture generator (libsndfile reads them).
SOURCE_EXTENSIONS = (".wav", ".flac", ".gsm", ".ogg")

#: Largest numerator / denominator of the rate ratio resampled exactly; beyond it the
#: ratio is approximated (:func:`resample`) so that the filter bank stays small.
MAX_RATIO_TERM = 1000


def current_umask():
    """The process's file-mode creation mask (``umask``), without changing it for long.

    Read from ``/proc/self/status`` where Linux has it; elsewhere set and restored at once.

    Example
    -------
    >>> 0 <= current_umask() <= 0o777
    True
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def disk_full_error(folder, exc, option="--out"):
    """An ``OSError`` with a one-line message for a write into ``folder`` that failed.

    ``ENOSPC`` / ``EDQUOT`` (and libsndfile's bare "System error", torch's "iostream
    error", while free space is below 1 MiB) become "no space left on device"; the folder
    and the fix (``option``: the command-line option choosing another folder) are named.

    Example
    -------
    >>> err = disk_full_error("/out", OSError(errno.ENOSPC, "No space left on device"))
    >>> print(err); err.errno == errno.ENOSPC
    no space left on device while writing into /out. Free disk space or write to another folder (--out).
    True
    """
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
    if not full:
        with contextlib.suppress(OSError):
            full = shutil.disk_usage(folder).free < (1 << 20)
    if full:
        err = OSError(f"no space left on device while writing into {folder}. Free disk space "
                      f"or write to another folder ({option}).")
        err.errno = errno.ENOSPC
    else:
        first = (str(exc).strip().splitlines() or [""])[0]
        err = OSError(f"cannot write into {folder} ({type(exc).__name__}: {first}). Check the folder's permissions "
                      f"and free space, or write to another folder ({option}).")
        err.errno = getattr(exc, "errno", None) or errno.EIO
    return err


@contextlib.contextmanager
def atomic_write(path, suffix=None):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched. The
    file's mode follows the umask (``0666 & ~umask``, as ``open`` would create it), not
    the ``0600`` of :func:`tempfile.mkstemp`.

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
    # mkstemp creates 0600; the final file gets what open() would give (0666 minus the umask)
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


class OutputStage:
    """Write a run's outputs under hidden temporary names; commit renames them all at once.

    Used by ``nass-separate`` and evaluation so that nothing written earlier is lost:
    an output that exists is refused unless ``overwrite`` (:meth:`claim`, checked before
    any work), every file is staged next to its final name (``.tmp-<name>-*``, mode
    following the umask), and only when the whole run succeeded :meth:`commit` renames
    them into place. :meth:`abort` (or an exception inside ``with``) removes only the
    staged files and the folders this run created, never an earlier output. A full disk
    becomes one ``OSError`` line naming the folder (:func:`disk_full_error`).

    Parameters
    ----------
    overwrite : bool
        Replace existing outputs (at commit time) instead of refusing them.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> with OutputStage() as stage:
    ...     stage.write_audio(os.path.join(d, "out", "s1.wav"), np.zeros(8, "float32"), 8000)
    ...     print(os.listdir(os.path.join(d, "out"))[0].startswith(".tmp-s1.wav"))
    True
    >>> os.listdir(os.path.join(d, "out"))
    ['s1.wav']
    >>> OutputStage().claim(os.path.join(d, "out", "s1.wav"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: .../out/s1.wav: already exists (an earlier output). Pass --overwrite to replace it, or choose another --out folder.
    """

    def __init__(self, overwrite=False):
        self.overwrite = bool(overwrite)
        self.staged = []  # (temporary, final)
        self.created = []  # folders created by this run, parents first
        self._claimed = set()

    def claim(self, final):
        """Refuse ``final`` when it exists and ``overwrite`` is off (claiming it twice is harmless).

        Raises
        ------
        FileExistsError
            Naming the file and the fix.
        """
        final = os.path.abspath(os.fspath(final))
        if final in self._claimed:
            return final
        if os.path.lexists(final) and not self.overwrite:
            raise FileExistsError(
                f"{final}: already exists (an earlier output). Pass --overwrite to replace it, or choose another "
                "--out folder."
            )
        self._claimed.add(final)
        return final

    def makedirs(self, folder):
        """Create ``folder`` and missing parents, remembering the ones created (removed by :meth:`abort`)."""
        folder = os.path.abspath(os.fspath(folder))
        missing = []
        while not os.path.isdir(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                continue
            except OSError as exc:
                raise disk_full_error(os.path.dirname(d), exc) from exc
            self.created.append(d)

    def path(self, final):
        """A temporary path to write ``final``'s content to (claimed, folder created)."""
        if os.path.abspath(os.fspath(final)) not in self._claimed:
            self.claim(final)
        final = os.path.abspath(os.fspath(final))
        folder = os.path.dirname(final)
        self.makedirs(folder)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(final) + "-",
                                       suffix=os.path.splitext(final)[1], dir=folder)
            os.close(fd)
            os.chmod(tmp, 0o666 & ~current_umask())
        except OSError as exc:
            raise disk_full_error(folder, exc) from exc
        self.staged.append((tmp, final))
        return tmp

    def write_audio(self, final, samples, sample_rate, subtype="PCM_16"):
        """:func:`write_audio` into a staged temporary of ``final``."""
        write_audio(self.path(final), samples, sample_rate, subtype=subtype)

    def commit(self):
        """Rename every staged file to its final name; returns the final paths."""
        done = []
        for tmp, final in self.staged:
            if os.path.lexists(final) and not self.overwrite:  # appeared while this run worked
                raise FileExistsError(f"{final}: created by someone else during this run; pass --overwrite or retry.")
            os.replace(tmp, final)
            done.append(final)
        self.staged = []
        return done

    def abort(self):
        """Remove the staged files and the (then empty) folders this run created."""
        for tmp, _ in self.staged:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        self.staged = []
        for d in reversed(self.created):
            with contextlib.suppress(OSError):
                os.rmdir(d)  # only if empty: never remove what someone else put there
        self.created = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
            return False
        folders = [os.path.dirname(f) for _, f in self.staged]
        self.abort()
        full = isinstance(exc, OSError) and getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        if full and folders and not str(exc).startswith("no space left"):
            raise disk_full_error(folders[-1], exc) from exc
        return False


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


def wav_frames(path):
    """Samples per channel a WAV header declares, and how many the file really holds.

    Reads the RIFF chunk headers only (``fmt `` block align, ``data`` size) — the
    samples that libsndfile silently stops at when a file was cut short.

    Parameters
    ----------
    path : str
        Any file; only RIFF/WAVE files are inspected.

    Returns
    -------
    tuple of int or None
        ``(declared, present)`` samples per channel, or ``None`` for a file that is not
        a plain RIFF WAV or whose header gives no size (streamed WAVs write 0 or 2^32-1).

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "x.wav")
    >>> write_audio(p, np.zeros(800, dtype="float32"), 8000)
    >>> wav_frames(p)
    (800, 800)
    >>> os.truncate(p, os.path.getsize(p) - 600)  # cut like an interrupted download
    >>> wav_frames(p)
    (800, 500)
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(csize + (csize & 1))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    if not block_align or csize in (0, 0xFFFFFFFF):
                        return None
                    present = max(size - f.tell(), 0)
                    return csize // block_align, min(csize, present) // block_align
                else:
                    f.seek(csize + (csize & 1), os.SEEK_CUR)
    except (OSError, struct.error):
        return None


def scan_samples(path, block=1 << 16):
    """Read every sample of a file once, in blocks (bounded memory), and summarise it.

    Parameters
    ----------
    path : str
        A readable audio file.
    block : int
        Frames per read.

    Returns
    -------
    dict
        ``frames`` (read), ``nonfinite`` (NaN / Inf samples), ``peak`` (largest finite
        absolute value), ``declared`` (samples per channel the WAV header promises, or None).

    Raises
    ------
    AudioError
        The file cannot be decoded to its end.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "x.wav")
    >>> x = np.full(100, 0.5, dtype="float32"); x[3] = np.nan
    >>> write_audio(p, x, 8000, subtype="FLOAT")
    >>> scan_samples(p)
    {'frames': 100, 'nonfinite': 1, 'peak': 0.5, 'declared': 100}
    """
    frames = nonfinite = 0
    peak = 0.0
    try:
        for chunk in sf.blocks(path, blocksize=block, dtype="float32", always_2d=True):
            frames += chunk.shape[0]
            finite = np.isfinite(chunk)
            nonfinite += int(chunk.size - finite.sum())
            if finite.any():
                peak = max(peak, float(np.abs(chunk[finite]).max()))
    except Exception as exc:
        raise AudioError(f"{path}: cannot be decoded to its end ({exc}). Re-create or re-download the file.") from exc
    declared = wav_frames(path)
    return {"frames": frames, "nonfinite": nonfinite, "peak": peak, "declared": declared[0] if declared else None}


def resample(x, orig_rate, new_rate, name=None):
    """Resample ``[..., time]`` audio with a filter bank of bounded size.

    The ratio ``new_rate / orig_rate`` is reduced to lowest terms ``up / down``. When
    both terms are at most :data:`MAX_RATIO_TERM` (every common rate pair: 44100 -> 8000
    is 80 / 441) the resampling is exact (``torchaudio.functional.resample``). An odd rate
    such as 44101 Hz has a ratio of 8000 / 44101, whose windowed-sinc bank would be
    gcd-sized (the issue measured 6.6 GB for 2 s); it is replaced by the nearest ratio with
    small terms (``fractions.Fraction.limit_denominator``), a warning names the file and
    the effective rate, and the caller trims or pads to the length it needs.

    Parameters
    ----------
    x : torch.Tensor
        ``[..., time]`` float samples at ``orig_rate``.
    orig_rate, new_rate : int
        Hz (positive).
    name : str, optional
        The file the audio came from, for the warning.

    Returns
    -------
    torch.Tensor
        ``[..., time']`` at ``new_rate`` (``time' ≈ time * new_rate / orig_rate``).

    Example
    -------
    >>> import torch, warnings
    >>> resample(torch.zeros(1, 16000), 16000, 8000).shape
    torch.Size([1, 8000])
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     y = resample(torch.zeros(1, 44101), 44101, 8000, name="odd.wav")
    >>> abs(y.shape[-1] - 8000) <= 1, "odd.wav" in str(w[0].message)
    (True, True)
    """
    import torchaudio.functional as AF

    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate == new_rate:
        return x
    ratio = fractions.Fraction(new_rate, orig_rate)
    if max(ratio.numerator, ratio.denominator) > MAX_RATIO_TERM:
        # bound the larger term: the denominator when down-sampling, the numerator when up-sampling
        approx = ratio.limit_denominator(MAX_RATIO_TERM) if ratio < 1 else 1 / (1 / ratio).limit_denominator(MAX_RATIO_TERM)
        effective = new_rate / float(approx)
        warnings.warn(
            f"{name or 'audio'}: odd sample rate {orig_rate} Hz -> {new_rate} Hz resampled with the ratio "
            f"{approx.numerator}/{approx.denominator} (as if the input were {effective:.1f} Hz, "
            f"{abs(effective - orig_rate) / orig_rate * 100:.4f} % off) to keep memory bounded. "
            f"Resample the file to a common rate first (e.g. `sox in.wav -r {new_rate} out.wav`) for an exact result.",
            stacklevel=2,
        )
        ratio = approx
    return AF.resample(x.contiguous(), ratio.denominator, ratio.numerator)


def read_audio(path, sample_rate=None, mono="error", start=0, stop=None, dtype="float32"):
    """Read an audio file (or a segment of it) as float samples in [-1, 1]: the one reader.

    Parameters
    ----------
    path : str
        Audio file (anything libsndfile decodes: WAV, FLAC, GSM, Ogg/Vorbis, ...).
    sample_rate : int, optional
        Expected rate in Hz; a different rate raises :class:`AudioError`. ``None`` accepts any.
    mono : {"error", "mix", "keep", "first"}
        What to do with a multi-channel file: raise (``"error"``), average the channels
        with a warning (``"mix"``), return ``[time, channels]`` (``"keep"``), or take the
        first channel (``"first"``, no warning: the mixture generator's sources).
    start, stop : int, optional
        The segment ``[start, stop)`` in samples of the file (default: all of it).
    dtype : {"float32", "float64"}
        Sample type (16-bit PCM is exact in both).

    Returns
    -------
    samples : numpy.ndarray
        ``[time]`` (``[time, channels]`` with ``mono="keep"``) of ``dtype``.
    rate : int
        Sample rate in Hz.

    Raises
    ------
    AudioError
        Missing, unreadable, empty, non-finite, wrong rate, or multi-channel with
        ``mono="error"``.

    Warns
    -----
    UserWarning
        A WAV shorter than its header says (:func:`wav_frames`): the samples present are returned.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "x.wav")
    >>> write_audio(p, 0.1 * np.ones(80, dtype="float32"), 8000)
    >>> x, sr = read_audio(p, sample_rate=8000)
    >>> x.shape, sr
    ((80,), 8000)
    >>> read_audio(p, start=10, stop=30, dtype="float64")[0].shape
    (20,)
    """
    if mono not in ("error", "mix", "keep", "first"):
        raise ValueError(f"read_audio: mono must be 'error', 'mix', 'keep' or 'first', got {mono!r}")
    audio_info(path)  # existence / readability with a clear message
    try:
        data, rate = sf.read(path, start=start, stop=stop, dtype=dtype, always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot be decoded ({exc}). The file is probably truncated; re-create it.") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no samples. Remove it or replace it with real audio.")
    frames = wav_frames(path)
    if frames is not None and frames[0] > frames[1]:
        warnings.warn(
            f"{path}: the WAV header says {frames[0]} samples but the file holds {frames[1]}: it is truncated "
            f"(an interrupted copy or download?); only the {data.shape[0]} samples present are used. "
            "Re-create or re-download the file.",
            stacklevel=2,
        )
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
        if mono == "keep":
            return data, rate
    return data[:, 0], rate


def resample_polyphase(x, orig_rate, new_rate, window=("kaiser", 5.0)):
    """Resample NumPy audio with a polyphase filter (``scipy.signal.resample_poly``).

    The ratio is reduced to lowest terms ``new_rate / g : orig_rate / g`` (``g`` the gcd);
    the anti-aliasing filter is scipy's default Kaiser-windowed FIR (beta 5), as LibriMix's
    ``create_librimix_from_metadata.py``. What the mixture generator, dynamic mixing, PESQ
    at 16 kHz (:mod:`nass.metrics`) and the demo corpus resample with; tensors at inference
    go through :func:`resample`.

    Parameters
    ----------
    x : numpy.ndarray
        ``[time]`` samples at ``orig_rate`` (a non-float array is taken as float64).
    orig_rate, new_rate : int
        Hz (positive).
    window : tuple or numpy.ndarray
        ``resample_poly``'s ``window``: a window spec or the FIR filter itself (a cached
        filter of the same design saves its construction on many short calls).

    Returns
    -------
    numpy.ndarray
        ``[ceil(time * new_rate / orig_rate)]``, ``x``'s float type; ``x`` itself when the
        rates are equal.

    Example
    -------
    >>> import numpy as np
    >>> y = resample_polyphase(np.ones(1600), 16000, 8000)
    >>> y.shape, y.dtype, resample_polyphase(np.ones(3, "float32"), 8000, 8000).dtype
    ((800,), dtype('float64'), dtype('float32'))
    """
    from scipy.signal import resample_poly

    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate == new_rate:
        return x
    g = math.gcd(orig_rate, new_rate)
    return resample_poly(x, new_rate // g, orig_rate // g, window=window)


def fit_samples(x, length):
    """Trim or zero-pad a NumPy ``[time]`` array to ``length`` samples (its dtype kept).

    The NumPy twin of :func:`nass.separation.fit_length` (tensors, last axis).

    Example
    -------
    >>> import numpy as np
    >>> fit_samples(np.ones(5), 3).tolist(), fit_samples(np.ones(2, "float32"), 4).tolist()
    ([1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0])
    """
    x = np.asarray(x)
    return x[:length] if x.shape[0] >= length else np.pad(x, (0, length - x.shape[0]))


def limit_peak(wav, peak=0.99):
    """Scale a waveform down to ``peak`` when it would clip in 16-bit PCM (``max |wav| > 1``).

    Parameters
    ----------
    wav : numpy.ndarray or torch.Tensor
        Samples, any shape.
    peak : float
        The peak after scaling (default 0.99).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``wav`` itself when it does not clip (or is empty), else ``wav * peak / max |wav|``.

    Example
    -------
    >>> import numpy as np, torch
    >>> limit_peak(np.array([0.5, -2.0])).tolist(), limit_peak(torch.tensor([0.5])).tolist()
    ([0.2475, -0.99], [0.5])
    """
    size = wav.numel() if hasattr(wav, "numel") else np.asarray(wav).size
    top = float(abs(wav).max()) if size else 0.0
    return wav * (peak / top) if top > 1.0 else wav


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

    Raises
    ------
    OSError
        The write failed (full disk, permissions): one line naming the folder
        (:func:`disk_full_error`); ``path`` is unchanged and no temporary is left.

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
    try:
        with atomic_write(path) as tmp:
            sf.write(tmp, samples, sample_rate, subtype=subtype, format="WAV")
    except (OSError, RuntimeError) as exc:  # libsndfile reports a full disk as "System error."
        raise disk_full_error(os.path.dirname(os.path.abspath(os.fspath(path))), exc) from exc

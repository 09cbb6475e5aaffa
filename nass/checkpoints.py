"""Crash-safe checkpoints: a checkpoint is visible only once it is complete and verified.

Why
---
SpeechBrain 1.1.2's :class:`speechbrain.utils.checkpoints.Checkpointer.save_checkpoint`
creates the final ``CKPT+<time>`` folder, writes ``CKPT.yaml`` into it *first* and then the
parameter files one by one. A folder holding ``CKPT.yaml`` counts as a checkpoint
(``Checkpointer._is_checkpoint_dir``), so a run killed (SIGKILL, out-of-memory killer,
pre-empted job, full disk) while it writes leaves a checkpoint that is listed, chosen as the
most recent one on resume, and fails to load (a missing or truncated ``separator.ckpt``).
Deleting old checkpoints (``shutil.rmtree`` on the live folder) can likewise leave a
half-deleted one behind. ``tests/test_reliability.py`` shows both with SpeechBrain's class.

What :class:`AtomicCheckpointer` changes (same constructor, drop-in for the YAML)
--------------------------------------------------------------------------------
* **Save**: every file is written into a hidden ``.incomplete-CKPT+<time>`` folder;
  ``CKPT.yaml`` is written last and records each file's size and CRC-32; the files and the
  folder are ``fsync``-ed and the folder is renamed to ``CKPT+<time>`` (``rename`` is
  atomic within one file system). A checkpoint is therefore visible only when complete.
* **Delete**: the folder is first renamed to a hidden ``.deleting-CKPT+<time>``, then removed.
* **Start**: the folder's training lock is taken (:func:`lock_folder`: a second training in
  the same folder stops with the PID of the first instead of deleting its half-written
  checkpoint), then hidden leftovers of an interrupted save or delete are removed (logged).
* **Load**: sizes and CRC-32 are checked before anything is read; every ``torch.load``
  made by the load hooks (SpeechBrain's included) runs with ``weights_only=True``, so a
  pickle that would run code is refused, never executed; any failure raises
  :class:`CheckpointLoadError` naming the file and the reason.
* **Resume** (``recover_if_possible``): when the chosen checkpoint cannot be loaded, the
  error is logged and the next one in the same order (the previous checkpoint for
  recency, the next best for ``max_key`` / ``min_key``) is tried. When none loads, a
  :class:`CheckpointLoadError` lists them all.

Source: behaviour of ``speechbrain/utils/checkpoints.py`` (SpeechBrain 1.1.2) read for
this module; no code copied. See ``docs/reliability.md``.
"""

import contextlib
import datetime
import errno
import fcntl
import logging
import os
import pathlib
import pickle
import shutil
import socket
import threading
import weakref
import zlib

import torch
import yaml
from speechbrain.utils.checkpoints import (
    DEFAULT_LOAD_HOOKS,
    DEFAULT_SAVE_HOOKS,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    ckpt_recency,
    get_default_hook,
)
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, get_rank, if_main_process

logger = logging.getLogger(__name__)

#: Hidden prefix of a checkpoint being written (never listed as a checkpoint).
INCOMPLETE_PREFIX = ".incomplete-"
#: Hidden prefix of a checkpoint being deleted.
DELETING_PREFIX = ".deleting-"
#: Meta key holding ``{file name: {"bytes": int, "crc32": int}}``.
FILES_KEY = "files"
#: Lock file of a checkpoint folder in use by a training (``flock``; holds PID, host, start time).
LOCK_NAME = ".nass-training.lock"

__all__ = [
    "AtomicCheckpointer", "CheckpointLoadError", "FolderInUseError", "lock_folder", "weights_only_torch_load",
    "file_crc32", "verify_file",
]


class CheckpointLoadError(ValueError):
    """A checkpoint file that cannot be loaded; the message names the file, the reason and the fix."""


class FolderInUseError(OSError):
    """A checkpoint folder locked by another running training; the message names its PID."""


_LOCKS = {}  # real path -> [fd, number of holders] in this process
_LOCKS_GUARD = threading.Lock()


def _release(real):
    with _LOCKS_GUARD:
        entry = _LOCKS.get(real)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _LOCKS[real]
            with contextlib.suppress(OSError):
                os.close(entry[0])  # closing the descriptor releases the flock


def lock_folder(folder, owner=None):
    """Take the training lock of ``folder`` for as long as ``owner`` lives (or the process, without one).

    The lock is an ``flock`` on ``folder/.nass-training.lock``: the kernel releases it when
    the process ends, even on ``kill -9``, so a stale lock file never blocks a new run. The
    file records the PID, host and start time of the holder for the message. Re-entrant
    within one process (several checkpointers of one training share it).

    Parameters
    ----------
    folder : str or pathlib.Path
        An existing folder.
    owner : object, optional
        The lock is released when the last such owner is garbage-collected.

    Raises
    ------
    FolderInUseError
        Another process holds the lock (its PID, host and start time are named).

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> lock_folder(d); lock_folder(d)  # the same process may take it again
    """
    real = os.path.realpath(os.fspath(folder))
    with _LOCKS_GUARD:
        entry = _LOCKS.get(real)
        if entry is None:
            try:
                fd = os.open(os.path.join(real, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:  # a read-only folder: nothing can be saved there, so nothing to protect
                logger.warning("%s: cannot create the training lock (%s); continuing without it", real,
                               exc.strerror or exc)
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise FolderInUseError(
                    f"{real} is in use by a training that is still running ({holder}). Two trainings in one "
                    "output folder would delete each other's checkpoints: wait for it to end, stop it "
                    "(kill <PID>), or pass --output_folder=<another folder>."
                ) from None
            os.ftruncate(fd, 0)
            started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}, started {started}\n".encode(), 0)
            entry = _LOCKS[real] = [fd, 0]
        entry[1] += 1
    if owner is not None:
        weakref.finalize(owner, _release, real)


def file_crc32(path, block=1 << 20):
    """CRC-32 (``zlib.crc32``) of a file's bytes.

    Parameters
    ----------
    path : str or pathlib.Path
        File to read.
    block : int
        Read size in bytes.

    Returns
    -------
    int
        Unsigned 32-bit checksum.

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "x")
    >>> _ = open(p, "wb").write(b"abc")
    >>> file_crc32(p) == zlib.crc32(b"abc")
    True
    """
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            crc = zlib.crc32(chunk, crc)
    return crc


def verify_file(path, expected, checkpoint_dir, data=None):
    """Check one checkpoint file against the ``bytes`` and ``crc32`` recorded in its ``CKPT.yaml``.

    Parameters
    ----------
    path : str or pathlib.Path
        The file.
    expected : dict
        ``{"bytes": int, "crc32": int}`` (an entry of the meta key ``files``).
    checkpoint_dir : str or pathlib.Path
        Its checkpoint folder (named in the fix).
    data : bytes, optional
        The file's contents already read (checked instead of reading the file again, so
        that what is verified is exactly what is loaded).

    Raises
    ------
    CheckpointLoadError
        Missing, truncated or altered file (named).

    Example
    -------
    >>> import os, tempfile, zlib
    >>> p = os.path.join(tempfile.mkdtemp(), "x.ckpt")
    >>> _ = open(p, "wb").write(b"abc")
    >>> verify_file(p, {"bytes": 3, "crc32": zlib.crc32(b"abc")}, os.path.dirname(p))
    >>> verify_file(p, {"bytes": 3, "crc32": 0}, "CKPT+x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nass.checkpoints.CheckpointLoadError: .../x.ckpt: contents differ from when it was saved (CRC-32 mismatch)...
    """
    path = pathlib.Path(path)
    if data is None and not path.is_file():
        raise CheckpointLoadError(f"{path}: missing from its checkpoint. Delete or move away {checkpoint_dir}.")
    size = len(data) if data is not None else path.stat().st_size
    if size != expected["bytes"]:
        raise CheckpointLoadError(
            f"{path}: size {size} bytes, {expected['bytes']} when saved: the file is truncated or "
            f"damaged. Delete or move away {checkpoint_dir}."
        )
    crc = zlib.crc32(data) if data is not None else file_crc32(path)
    if crc != expected["crc32"]:
        raise CheckpointLoadError(
            f"{path}: contents differ from when it was saved (CRC-32 mismatch): the file is "
            f"damaged. Delete or move away {checkpoint_dir}."
        )


@contextlib.contextmanager
def weights_only_torch_load():
    """Within the block, every ``torch.load`` call runs with ``weights_only=True``.

    SpeechBrain's load hooks call ``torch.load(path, map_location=...)`` without the
    argument (its value then depends on the torch version and on the environment variable
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``); this pins it, so a file holding anything but
    tensors and plain containers raises ``pickle.UnpicklingError`` instead of running code.
    Not thread-safe (it rebinds ``torch.load`` for the duration of the block).

    Example
    -------
    >>> import io
    >>> buf = io.BytesIO(pickle.dumps(print, protocol=2))  # a pickle naming a callable
    >>> with weights_only_torch_load():
    ...     torch.load(buf, weights_only=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    _pickle.UnpicklingError: Weights only load failed...
    """
    original = torch.load

    def load(f, map_location=None, pickle_module=None, *, weights_only=None, **kwargs):
        del pickle_module, weights_only  # a custom unpickler or weights_only=False is not honoured
        return original(f, map_location=map_location, weights_only=True, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(path, exc):
    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
        return (
            f"{path}: refused to load: the file holds objects other than tensors and plain containers "
            "(a pickle that could run code), so it was not executed. Resume only from checkpoints this "
            "code wrote; delete or move away this checkpoint folder."
        )
    return (
        f"{path}: cannot be loaded ({type(exc).__name__}: {first}). The file is truncated or damaged "
        "(disk full, copy interrupted, or written by a run killed mid-save without nass.checkpoints); "
        "delete or move away its checkpoint folder."
    )


class AtomicCheckpointer(Checkpointer):
    """A :class:`speechbrain.utils.checkpoints.Checkpointer` whose checkpoints appear only when complete.

    See the module docstring for what changes; the constructor is SpeechBrain's.

    Parameters
    ----------
    checkpoints_dir : str or pathlib.Path
        Folder holding the ``CKPT+*`` checkpoint folders (created if needed).
    recoverables : dict, optional
        Name -> object to save and recover (a file ``<name>.ckpt`` each).
    custom_load_hooks, custom_save_hooks : dict, optional
        Name -> hook, as SpeechBrain.
    allow_partial_load : bool
        As SpeechBrain: tolerate recoverables missing from a checkpoint.

    Raises
    ------
    FolderInUseError
        At construction, when another running training holds the folder (PID named).
    CheckpointLoadError
        From ``load_checkpoint`` (the file and the reason), and from
        ``recover_if_possible`` when no candidate checkpoint loads.

    Example
    -------
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> model = torch.nn.Linear(2, 2)
    >>> ckpter = AtomicCheckpointer(d, recoverables={"model": model})
    >>> ckpt = ckpter.save_checkpoint(meta={"si-snr": 3.0})
    >>> sorted(p.name for p in ckpt.path.iterdir())
    ['CKPT.yaml', 'model.ckpt']
    >>> _ = open(ckpt.path / "model.ckpt", "ab").write(b"garbage")
    >>> ckpter.load_checkpoint(ckpt)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nass.checkpoints.CheckpointLoadError: .../model.ckpt: size ... bytes, ... when saved...
    """

    def __init__(
        self,
        checkpoints_dir,
        recoverables=None,
        custom_load_hooks=None,
        custom_save_hooks=None,
        allow_partial_load=False,
    ):
        try:
            super().__init__(
                checkpoints_dir,
                recoverables=recoverables,
                custom_load_hooks=custom_load_hooks,
                custom_save_hooks=custom_save_hooks,
                allow_partial_load=allow_partial_load,
            )
        except OSError as exc:  # raised while the YAML loads, before nass.runner.check_writable
            raise OSError(
                exc.errno,
                f"checkpoint folder {os.fspath(checkpoints_dir)!r} cannot be created ({exc.strerror or exc}). "
                "Free disk space, fix the permissions, or pass --output_folder=<a writable folder>.",
            ) from exc
        # the environment's rank: the YAML (and so this constructor) is loaded before the
        # process group exists, when if_main_process() is True on every rank
        if get_rank() in (None, 0) and if_main_process():
            lock_folder(self.checkpoints_dir, owner=self)  # before touching a running training's files
            self.remove_leftovers()

    # ------------------------------------------------------------------ housekeeping
    def remove_leftovers(self):
        """Remove hidden folders left by a save or a delete that was interrupted.

        Returns
        -------
        list of pathlib.Path
            The folders removed.
        """
        removed = []
        for entry in sorted(self.checkpoints_dir.iterdir()):
            if entry.is_dir() and entry.name.startswith((INCOMPLETE_PREFIX, DELETING_PREFIX)):
                shutil.rmtree(entry, ignore_errors=True)
                logger.warning("removed %s, left by an interrupted checkpoint save or delete", entry)
                removed.append(entry)
        return removed

    def _remove_checkpoint_dir(self, path, verbosity=logging.INFO):
        path = pathlib.Path(path)
        doomed = path.parent / (DELETING_PREFIX + path.name)
        os.rename(path, doomed)  # atomic: the checkpoint disappears as a whole
        shutil.rmtree(doomed)
        logger.log(verbosity, f"Deleted checkpoint in {path}")

    # ------------------------------------------------------------------ save
    def _save_recoverable(self, name, obj, path):
        """Write one recoverable with its custom or default save hook."""
        hook = self.custom_save_hooks.get(name) or get_default_hook(obj, DEFAULT_SAVE_HOOKS)
        if hook is None:
            raise RuntimeError(
                f"don't know how to save {name!r} ({type(obj).__name__}): give it a save hook "
                "(speechbrain.utils.checkpoints.mark_as_saver) or a custom_save_hooks entry"
            )
        hook(obj, path)

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Save every recoverable into a hidden folder, then rename it into place.

        Parameters and return value as SpeechBrain's ``save_checkpoint``; the meta file
        also records ``files`` (each parameter file's ``bytes`` and ``crc32``).
        """
        final = staging = None
        if if_main_process():
            final = self._new_checkpoint_dirpath() if name is None else self._custom_checkpoint_dirpath(name)
            staging = final.parent / (INCOMPLETE_PREFIX + final.name)
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
        final, staging = ddp_broadcast((final, staging), src=0)
        paramfiles = {}
        for rec_name, obj in self.recoverables.items():
            fname = rec_name + PARAMFILE_EXT
            try:
                self._save_recoverable(rec_name, obj, staging / fname)
            except (OSError, RuntimeError) as exc:  # torch.save on a full disk: "... iostream error"
                err = self._write_error(staging, exc)
                if err is exc:
                    raise
                raise err from exc
            paramfiles[rec_name] = final / fname
        ddp_barrier()  # every process has written its part
        if not if_main_process():
            return None
        files = {}
        for entry in sorted(staging.iterdir()):
            _fsync(entry)
            files[entry.name] = {"bytes": entry.stat().st_size, "crc32": file_crc32(entry)}
        saved_meta = self._save_checkpoint_metafile(staging / METAFNAME, {**meta, FILES_KEY: files}, end_of_epoch)
        _fsync(staging / METAFNAME)
        _fsync(staging)
        if final.exists():  # a named checkpoint saved again: replace it as a whole
            self._remove_checkpoint_dir(final, verbosity=logging.DEBUG)
        os.rename(staging, final)
        _fsync(final.parent)
        kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, f"Saved an {kind} checkpoint in {final}")
        return Checkpoint(final, saved_meta, paramfiles)

    def _write_error(self, staging, exc):
        """A failed write of a checkpoint file: remove this save's hidden folder; one line naming the folder.

        A full disk (``ENOSPC``, or torch's bare "iostream error" with under 1 MiB free)
        reads "no space left on device while writing into <save folder>"; other failures
        keep their message. Earlier checkpoints are untouched.
        """
        from nass.dataio.audio import disk_full_error

        if if_main_process():
            shutil.rmtree(staging, ignore_errors=True)
        err = disk_full_error(os.fspath(self.checkpoints_dir), exc, option="--output_folder")
        if getattr(err, "errno", None) != errno.ENOSPC and isinstance(exc, RuntimeError):
            return exc  # not a write problem (a hook's own error): unchanged
        return err

    def delete_checkpoints(
        self,
        *,
        num_to_keep=1,
        min_keys=None,
        max_keys=None,
        importance_keys=[ckpt_recency],
        ckpt_predicate=None,
        verbosity=logging.INFO,
    ):
        """Delete the least important checkpoints; each disappears atomically.

        Same selection rule as SpeechBrain's: for every order (each ``min_keys`` /
        ``max_keys`` entry and each importance key) the ``num_to_keep`` best checkpoints
        that pass ``ckpt_predicate`` are kept; the others that pass it are deleted.
        """
        if num_to_keep < 0:
            raise ValueError("Number of checkpoints to keep must be positive.")
        orders = [{"min_key": k} for k in min_keys or []]
        orders += [{"max_key": k} for k in max_keys or []]
        orders += [{"importance_key": k} for k in importance_keys]
        candidates, keep = set(), set()
        for order in orders:
            ranked = self.find_checkpoints(ckpt_predicate=ckpt_predicate, **order)
            candidates.update(ranked)
            keep.update(ranked[:num_to_keep])
        ddp_barrier()
        if if_main_process():
            for ckpt in candidates - keep:
                self._remove_checkpoint_dir(ckpt.path, verbosity=verbosity)
        ddp_barrier()

    # ------------------------------------------------------------------ list
    @staticmethod
    def _construct_checkpoint_objects(checkpoint_dirs):
        """As SpeechBrain's, but a checkpoint whose ``CKPT.yaml`` is unreadable is skipped (logged)."""
        checkpoints = []
        for ckpt_dir in checkpoint_dirs:
            meta_path = ckpt_dir / METAFNAME
            try:
                with open(meta_path, encoding="utf-8") as f:
                    meta = yaml.safe_load(f)
                if not isinstance(meta, dict) or "unixtime" not in meta or "end-of-epoch" not in meta:
                    raise ValueError("not a checkpoint meta file (no unixtime / end-of-epoch)")
            except Exception as exc:
                logger.error("%s: unreadable checkpoint metadata (%s); checkpoint ignored", meta_path, exc)
                continue
            paramfiles = {p.stem: p for p in ckpt_dir.iterdir() if p.suffix == PARAMFILE_EXT}
            checkpoints.append(Checkpoint(ckpt_dir, meta, paramfiles))
        return checkpoints

    # ------------------------------------------------------------------ load
    def verify(self, checkpoint):
        """Check the files of ``checkpoint`` against the sizes and CRC-32 of its meta.

        Checkpoints without the ``files`` meta (written by SpeechBrain's class) pass.

        Raises
        ------
        CheckpointLoadError
            A missing, truncated or altered file (named).
        """
        for fname, expected in (checkpoint.meta.get(FILES_KEY) or {}).items():
            verify_file(pathlib.Path(checkpoint.path) / fname, expected, checkpoint.path)

    def _call_load_hooks(self, checkpoint):
        logger.info(f"Loading a checkpoint from {checkpoint.path}")
        self.verify(checkpoint)
        end_of_epoch = checkpoint.meta["end-of-epoch"]
        with weights_only_torch_load():
            for name, obj in self.recoverables.items():
                path = checkpoint.paramfiles.get(name)
                if path is None:
                    if self.allow_partial_load or self.optional_recoverables.get(name) or "dataloader" in name:
                        logger.warning("%s has no %s%s; %r not restored", checkpoint.path, name, PARAMFILE_EXT, name)
                        continue
                    raise CheckpointLoadError(
                        f"{pathlib.Path(checkpoint.path) / (name + PARAMFILE_EXT)}: missing from its checkpoint "
                        f"(incomplete save). Delete or move away {checkpoint.path}."
                    )
                hook = self.custom_load_hooks.get(name) or get_default_hook(obj, DEFAULT_LOAD_HOOKS)
                if hook is None:
                    raise RuntimeError(
                        f"don't know how to load {name!r} ({type(obj).__name__}): give it a load hook "
                        "(speechbrain.utils.checkpoints.mark_as_loader) or a custom_load_hooks entry"
                    )
                try:
                    hook(obj, path, end_of_epoch)
                except Exception as exc:
                    raise CheckpointLoadError(_describe(path, exc)) from exc

    def recover_if_possible(self, importance_key=None, max_key=None, min_key=None, ckpt_predicate=None):
        """Load the preferred checkpoint; when it cannot be loaded, fall back to the next one.

        The order is SpeechBrain's ``find_checkpoints`` order (most recent first by
        default, else by ``importance_key`` / ``max_key`` / ``min_key``).

        Returns
        -------
        Checkpoint or None
            The checkpoint loaded, None when there is none.

        Raises
        ------
        CheckpointLoadError
            Checkpoints exist but none loads (every file and reason listed).
        """
        candidates = self.find_checkpoints(
            importance_key=importance_key, max_key=max_key, min_key=min_key, ckpt_predicate=ckpt_predicate
        )
        if not candidates:
            logger.info("Would load a checkpoint here, but none found yet.")
            return None
        errors = []
        for ckpt in candidates:
            try:
                self.load_checkpoint(ckpt)
            except CheckpointLoadError as exc:
                errors.append(str(exc))
                logger.error("%s Trying the previous checkpoint.", exc)
                continue
            if errors:
                logger.warning("loaded %s after %d checkpoint(s) that could not be loaded", ckpt.path, len(errors))
            return ckpt
        raise CheckpointLoadError(
            f"none of the {len(candidates)} checkpoint(s) in {self.checkpoints_dir} can be loaded:\n  "
            + "\n  ".join(errors)
            + "\nMove them away to start from scratch, or restore them from a backup."
        )

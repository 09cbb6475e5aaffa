"""Manifests (CSV) for separation data: scanning, validation, atomic writing, reading.

A manifest is a SpeechBrain-style CSV (``speechbrain.dataio.dataset.DynamicItemDataset.from_csv``
reads it), one row per mixture, with the header::

    ID,duration,mix_wav,s1_wav,s2_wav[,s3_wav],noise_wav,mix_clean_wav

``duration`` is the mixture length in seconds read from the file header
(``soundfile.info``); paths are absolute; ``noise_wav`` and ``mix_clean_wav`` are
empty when the dataset has no such file (then the clean mixture is the sum of the
sources). The dataset-specific modules (:mod:`nass.dataio.librimix`,
:mod:`nass.dataio.wham`, :mod:`nass.dataio.custom`) only locate folders; every
check and the writing live here, so all layouts are validated the same way.

Unlike the SpeechBrain LibriMix recipe (``recipes/LibriMix/prepare_data.py``,
SpeechBrain 1.x), which writes ``duration`` 1.0 on every row, ignores its ``fs``
argument and never checks that the files exist, the manifests here carry the true
durations, every file's sample rate, channel count and length are checked against
the mixture and the config, and a problem stops preparation with a
:class:`DatasetError` that names the files and the fix.

A manifest is written with a JSON sidecar (``<name>.options.json``) holding the
options and folders it was built from and a fingerprint (size and modification time)
of every file it lists; a later call with the same options, the same columns, the same
set of mixture files on disk and no listed file replaced or rewritten reuses it without
reading any audio header again.
"""

import csv
import dataclasses
import hashlib
import json
import logging
import os

from nass.dataio.audio import AUDIO_EXTENSIONS as _AUDIO_EXTENSIONS
from nass.dataio.audio import AudioError, atomic_write, audio_info, scan_samples

logger = logging.getLogger(__name__)

#: Bumped whenever the manifest format changes, so that old manifests are rebuilt.
#: 2: the sidecar holds a fingerprint of the listed files (:func:`files_fingerprint`).
MANIFEST_VERSION = 2

#: File extensions listed as audio in a data folder (matched case-insensitively;
#: :data:`nass.dataio.audio.AUDIO_EXTENSIONS`).
AUDIO_EXTENSIONS = _AUDIO_EXTENSIONS

#: How many offending files an error message names before giving the count.
MAX_LISTED = 5


class DatasetError(ValueError):
    """A data folder or manifest that cannot be used; the message names the files and the fix."""


def manifest_columns(num_spks):
    """Column names of a manifest for ``num_spks`` speakers.

    Parameters
    ----------
    num_spks : int
        Number of speakers (2 or 3).

    Returns
    -------
    list of str
        ``["ID", "duration", "mix_wav", "s1_wav", ..., "noise_wav", "mix_clean_wav"]``.

    Raises
    ------
    ValueError
        If ``num_spks`` is not 2 or 3.

    Example
    -------
    >>> manifest_columns(2)
    ['ID', 'duration', 'mix_wav', 's1_wav', 's2_wav', 'noise_wav', 'mix_clean_wav']
    """
    check_num_spks(num_spks)
    return ["ID", "duration", "mix_wav"] + [f"s{i}_wav" for i in range(1, num_spks + 1)] + ["noise_wav", "mix_clean_wav"]


def check_num_spks(num_spks):
    """Raise a :class:`DatasetError` unless ``num_spks`` is 2 or 3.

    Example
    -------
    >>> check_num_spks(3)
    """
    if isinstance(num_spks, bool) or num_spks not in (2, 3):
        raise DatasetError(f"num_spks={num_spks!r} is not supported: set num_spks to 2 or 3.")


def describe_files(paths, limit=MAX_LISTED):
    """The first ``limit`` paths and the total count, for error messages.

    Parameters
    ----------
    paths : sequence of str
        Offending files (or any strings).
    limit : int
        How many to name.

    Returns
    -------
    str

    Example
    -------
    >>> describe_files(["a.wav", "b.wav", "c.wav"], limit=2)
    'a.wav, b.wav and 1 more (3 in total)'
    """
    paths = list(paths)
    shown = ", ".join(str(p) for p in paths[:limit])
    if len(paths) > limit:
        shown += f" and {len(paths) - limit} more ({len(paths)} in total)"
    return shown


def list_subfolders(folder):
    """Sorted names of the (non-hidden) sub-folders of ``folder``; empty if it is missing.

    Example
    -------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); os.mkdir(os.path.join(d, "dev"))
    >>> list_subfolders(d)
    ['dev']
    """
    if not os.path.isdir(folder):
        return []
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def list_audio_files(folder):
    """Audio files of one folder (not recursive), by file name.

    Hidden files (such as the temporary names of :func:`nass.dataio.audio.atomic_write`)
    and files whose extension is not in :data:`AUDIO_EXTENSIONS` are left out.

    Parameters
    ----------
    folder : str
        An existing folder.

    Returns
    -------
    dict
        File name -> absolute path, sorted by name.

    Example
    -------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for n in ("b.wav", "a.WAV", "notes.txt", ".tmp-x.wav"):
    ...     _ = open(os.path.join(d, n), "w").write("")
    >>> list(list_audio_files(d))
    ['a.WAV', 'b.wav']
    """
    folder = os.path.abspath(folder)
    names = sorted(
        e.name
        for e in os.scandir(folder)
        if e.is_file() and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in AUDIO_EXTENSIONS
    )
    return {n: os.path.join(folder, n) for n in names}


def require_data_folder(data_folder, dataset_label):
    """Absolute ``data_folder``; a :class:`DatasetError` if it is not an existing folder.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> require_data_folder(d, "LibriMix") == d
    True
    """
    if data_folder is None or str(data_folder) == "" or not os.path.isdir(data_folder):
        raise DatasetError(
            f"{dataset_label}: data folder {data_folder!r} does not exist. Set data_folder "
            f"(e.g. `--data_folder=/path/to/corpus`) to the folder that holds the {dataset_label} data."
        )
    return os.path.abspath(data_folder)


def resolve_subfolders(split_dir, required, optional, label, fix):
    """Locate the sub-folders of one split; all missing required ones in one error.

    Parameters
    ----------
    split_dir : str
        Folder of the split (e.g. ``.../wav8k/min/dev``).
    required : sequence of str
        Sub-folder names that must exist.
    optional : sequence of str
        Sub-folder names used when present.
    label : str
        Human name of the split for messages (e.g. ``"Libri2Mix dev"``).
    fix : str
        Sentence telling the user how to fix a missing folder.

    Returns
    -------
    dict
        Name -> absolute folder path, or ``None`` for an absent optional folder.

    Raises
    ------
    DatasetError
        If ``split_dir`` or a required sub-folder is missing.

    Example
    -------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp(); os.mkdir(os.path.join(d, "s1"))
    >>> r = resolve_subfolders(d, ["s1"], ["noise"], "demo", "")
    >>> os.path.basename(r["s1"]), r["noise"]
    ('s1', None)
    """
    split_dir = os.path.abspath(split_dir)
    if not os.path.isdir(split_dir):
        raise DatasetError(f"{label}: split folder {split_dir} does not exist. {fix}")
    missing = [n for n in required if not os.path.isdir(os.path.join(split_dir, n))]
    if missing:
        present = list_subfolders(split_dir)
        raise DatasetError(
            f"{label}: missing sub-folder(s) {', '.join(missing)} in {split_dir} "
            f"(found: {', '.join(present) or 'nothing'}). {fix}"
        )
    out = {n: os.path.join(split_dir, n) for n in required}
    for n in optional:
        p = os.path.join(split_dir, n)
        out[n] = p if os.path.isdir(p) else None
    return out


@dataclasses.dataclass
class SplitSpec:
    """Where one split's files are and where its manifest goes.

    Attributes
    ----------
    label : str
        Human name for messages and logs (e.g. ``"Libri2Mix dev"``).
    mix_dir : str
        Folder of the network input mixtures (``mix_wav``).
    source_dirs : list of str
        One folder per speaker (``s1``, ``s2``[, ``s3``]).
    noise_dir : str or None
        Folder of the noise signals, ``None`` if absent (``noise_wav`` left empty).
    mix_clean_dir : str or None
        Folder of the clean mixtures, ``None`` if absent (``mix_clean_wav`` left empty).
        May equal ``mix_dir`` (clean input).
    csv_path : str
        Manifest to write.
    options : dict
        JSON-serialisable options stored in the sidecar; a change forces a rescan.
    """

    label: str
    mix_dir: str
    source_dirs: list
    noise_dir: object
    mix_clean_dir: object
    csv_path: str
    options: dict


def sidecar_path(csv_path):
    """Path of the JSON options sidecar of a manifest.

    Example
    -------
    >>> sidecar_path("/x/libri2mix_dev.csv")
    '/x/libri2mix_dev.options.json'
    """
    return os.path.splitext(csv_path)[0] + ".options.json"


def _other_dirs(spec):
    """(column, folder) of every non-mixture folder of a split, in manifest order."""
    out = [(f"s{i}_wav", d) for i, d in enumerate(spec.source_dirs, start=1)]
    if spec.noise_dir is not None:
        out.append(("noise_wav", spec.noise_dir))
    if spec.mix_clean_dir is not None and os.path.abspath(spec.mix_clean_dir) != os.path.abspath(spec.mix_dir):
        out.append(("mix_clean_wav", spec.mix_clean_dir))
    return out


def _pair_files(spec):
    """List a split's folders and match files by name; all pairing problems in one error."""
    mixtures = list_audio_files(spec.mix_dir)
    if not mixtures:
        raise DatasetError(
            f"{spec.label}: the split is empty: no audio file ({', '.join(AUDIO_EXTENSIONS)}) in "
            f"{spec.mix_dir}. Generate the data for this split or remove the split from `splits`."
        )
    listings = {}
    problems = []
    for folder, files in [(spec.mix_dir, mixtures)] + [(d, list_audio_files(d)) for _, d in _other_dirs(spec)]:
        by_stem = {}
        for name in files:
            by_stem.setdefault(os.path.splitext(name)[0], []).append(name)
        clashes = [" and ".join(names) for names in by_stem.values() if len(names) > 1]
        if clashes:
            problems.append(
                f"{len(clashes)} name(s) in {folder} exist with two extensions ({describe_files(clashes)}): an "
                "utterance ID is the file name without its extension, so one of them would be lost. Keep one "
                "format per utterance (remove or convert the others)."
            )
    for column, folder in _other_dirs(spec):
        files = list_audio_files(folder)
        listings[column] = files
        without = [mixtures[n] for n in mixtures if n not in files]
        orphans = [files[n] for n in files if n not in mixtures]
        if without:
            problems.append(
                f"{len(without)} mixture(s) in {spec.mix_dir} have no file of the same name in {folder}: "
                f"{describe_files(without)}. Every mixture needs its {column[:-4]} file; re-generate the "
                "missing files or remove those mixtures."
            )
        if orphans:
            problems.append(
                f"{len(orphans)} file(s) in {folder} have no mixture of the same name in {spec.mix_dir}: "
                f"{describe_files(orphans)}. Remove them or generate their mixtures (an incomplete copy "
                "of the dataset?)."
            )
    if problems:
        raise DatasetError(f"{spec.label}: mixtures and sources do not match.\n- " + "\n- ".join(problems))
    return mixtures, listings


def _build_rows(spec, mixtures, listings, sample_rate, num_spks):
    """Read every header once, check rate / channels / length, and return the rows."""
    unreadable, empty, bad_rate, bad_channels, bad_length = [], [], [], [], []
    nonfinite, silent, truncated = [], [], []
    rows = []
    for name, mix_path in mixtures.items():
        infos = {}
        paths = {"mix_wav": mix_path}
        for column, files in listings.items():
            paths[column] = files[name]
        for column, path in paths.items():
            try:
                info = audio_info(path)
            except AudioError as exc:
                reason = str(exc.__cause__ or exc).replace(f"Error opening {path!r}: ", "")
                unreadable.append(f"{path} ({reason})")
                continue
            infos[column] = info
            if info.frames == 0:
                empty.append(path)
                continue
            try:  # every sample, once: what a header cannot show (cached with the manifest)
                scan = scan_samples(path)
            except AudioError as exc:
                unreadable.append(f"{path} ({str(exc.__cause__ or exc)})")
                continue
            if scan["nonfinite"]:
                nonfinite.append(f"{path} ({scan['nonfinite']} NaN/Inf samples)")
            if column == "mix_wav" and scan["nonfinite"] == 0 and scan["peak"] == 0.0:
                silent.append(path)
            if scan["declared"] is not None and scan["declared"] > scan["frames"]:
                truncated.append(f"{path} (header {scan['declared']} samples, file {scan['frames']})")
            if info.samplerate != sample_rate:
                bad_rate.append(f"{path} ({info.samplerate} Hz)")
            if info.channels != 1:
                bad_channels.append(f"{path} ({info.channels} channels)")
        if "mix_wav" not in infos:
            continue
        mix_frames = infos["mix_wav"].frames
        for column, info in infos.items():
            if column != "mix_wav" and info.frames != mix_frames:
                bad_length.append(f"{paths[column]} ({info.frames} samples, mixture {mix_frames})")
        mix_info = infos["mix_wav"]
        row = {"ID": os.path.splitext(name)[0], "duration": repr(round(mix_info.frames / mix_info.samplerate, 6))}
        row["mix_wav"] = mix_path
        for i in range(1, num_spks + 1):
            row[f"s{i}_wav"] = paths[f"s{i}_wav"]
        row["noise_wav"] = paths.get("noise_wav", "")
        if spec.mix_clean_dir is not None and os.path.abspath(spec.mix_clean_dir) == os.path.abspath(spec.mix_dir):
            row["mix_clean_wav"] = mix_path
        else:
            row["mix_clean_wav"] = paths.get("mix_clean_wav", "")
        rows.append(row)

    problems = []
    if unreadable:
        problems.append(
            f"{len(unreadable)} file(s) cannot be read as audio: {describe_files(unreadable)}. "
            "Re-create or re-download them (a truncated download?)."
        )
    if empty:
        problems.append(f"{len(empty)} file(s) hold no samples: {describe_files(empty)}. Re-create them.")
    if bad_rate:
        problems.append(
            f"{len(bad_rate)} file(s) are not at the configured sample_rate={sample_rate} Hz: "
            f"{describe_files(bad_rate)}. Set sample_rate to the data's rate or resample the files "
            f"(e.g. `sox in.wav -r {sample_rate} out.wav`)."
        )
    if bad_channels:
        problems.append(
            f"{len(bad_channels)} file(s) are not mono: {describe_files(bad_channels)}. Mix them down "
            "(e.g. `sox in.wav -c 1 out.wav`)."
        )
    if nonfinite:
        problems.append(
            f"{len(nonfinite)} file(s) contain NaN or Inf samples: {describe_files(nonfinite)}. Re-create them "
            "(a training crop that hits one would stop the run)."
        )
    if silent:  # legal (and used by tests), but worth knowing before hours of training
        logger.warning("%s: %d mixture(s) are all zeros (silent): %s", spec.label, len(silent), describe_files(silent))
    if truncated:
        problems.append(
            f"{len(truncated)} file(s) are shorter than their WAV header says: {describe_files(truncated)}. "
            "They were cut (an interrupted copy or download?); re-create or re-download them."
        )
    if bad_length:
        problems.append(
            f"{len(bad_length)} file(s) differ in length from their mixture: {describe_files(bad_length)}. "
            "Sources, noise and clean mixture must have exactly the mixture's number of samples "
            "(LibriMix/WHAM! 'min' and 'max' modes both guarantee it); re-generate or trim them."
        )
    if problems:
        raise DatasetError(f"{spec.label}: invalid audio files.\n- " + "\n- ".join(problems))
    return rows


def files_fingerprint(rows):
    """SHA-1 over the path, size and modification time of every file a manifest lists.

    Changes when a listed file is replaced or rewritten in place (a corpus rebuilt into the
    same folder keeps its file names), so a stale manifest is not reused. Costs one
    ``os.stat`` per file, no audio is read.

    Parameters
    ----------
    rows : iterable of dict
        Manifest rows; every non-empty ``*_wav`` value is a file path.

    Returns
    -------
    str
        40 hex digits.

    Raises
    ------
    OSError
        A listed file no longer exists.

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav"); _ = open(p, "wb").write(b"1")
    >>> before = files_fingerprint([{"ID": "a", "mix_wav": p, "noise_wav": ""}])
    >>> _ = open(p, "wb").write(b"22")
    >>> files_fingerprint([{"ID": "a", "mix_wav": p, "noise_wav": ""}]) != before
    True
    """
    paths = sorted({v for row in rows for k, v in row.items() if k.endswith("_wav") and v})
    h = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _reusable(spec, mixtures, columns):
    """True if the manifest at ``spec.csv_path`` was built with the same options and files."""
    side = sidecar_path(spec.csv_path)
    if not (os.path.isfile(spec.csv_path) and os.path.isfile(side)):
        return False
    try:
        with open(side, encoding="utf-8") as f:
            stored = json.load(f)
        with open(spec.csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != columns:
                return False
            rows = list(reader)
        listed = {row["mix_wav"] for row in rows}
        if stored != _sidecar_content(spec, stored.get("files_fingerprint")) or listed != set(mixtures.values()):
            return False
        return stored["files_fingerprint"] == files_fingerprint(rows)
    except (OSError, ValueError, KeyError, AttributeError, csv.Error):
        return False


def _sidecar_content(spec, fingerprint):
    folders = {
        "mix_dir": spec.mix_dir,
        "source_dirs": list(spec.source_dirs),
        "noise_dir": spec.noise_dir,
        "mix_clean_dir": spec.mix_clean_dir,
    }
    return {"manifest_version": MANIFEST_VERSION, "options": spec.options, "folders": folders,
            "files_fingerprint": fingerprint}


def write_manifest(rows, csv_path, num_spks):
    """Write manifest rows atomically (temporary name, then rename).

    Parameters
    ----------
    rows : list of dict
        One dict per mixture with every column of :func:`manifest_columns`.
    csv_path : str
        Destination; its folder is created.
    num_spks : int
        Number of speakers (selects the columns).

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "m.csv")
    >>> write_manifest([{"ID": "a", "duration": 0.1, "mix_wav": "/m.wav", "s1_wav": "/1.wav",
    ...                  "s2_wav": "/2.wav", "noise_wav": "", "mix_clean_wav": ""}], p, 2)
    >>> open(p).read().splitlines()[1]
    'a,0.1,/m.wav,/1.wav,/2.wav,,'
    """
    columns = manifest_columns(num_spks)
    with atomic_write(csv_path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="raise", lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow(row)


def prepare_splits(specs, sample_rate, num_spks):
    """Validate every split, then write (or reuse) one manifest per split.

    All folders of all splits are listed and paired first (cheap), so a missing file
    in the test split is reported before minutes are spent reading training headers.
    A split whose manifest is still valid (same options and folders in the sidecar,
    same columns, same mixture files on disk, no listed file rewritten since:
    :func:`files_fingerprint`) is reused without reading any header. Otherwise every
    file is also read in full once (:func:`nass.dataio.audio.scan_samples`, in blocks),
    so NaN / Inf samples and files shorter than their header are reported before
    training, by name (silent mixtures are logged); the next run reuses the manifest and reads nothing.

    Parameters
    ----------
    specs : sequence of SplitSpec
        One per split.
    sample_rate : int
        Expected rate of every file (Hz).
    num_spks : int
        Number of speakers (2 or 3).

    Returns
    -------
    list of str
        Manifest paths, in the order of ``specs``.

    Raises
    ------
    DatasetError
        Empty split, mixtures without sources or sources without mixtures, unreadable
        or empty files, wrong sample rate, multi-channel files, length mismatches, NaN /
        Inf samples, files shorter than their header, two files of one name with
        different extensions (all-zero mixtures are logged as a warning).

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> from nass.dataio.audio import write_audio
    >>> d = tempfile.mkdtemp()
    >>> for sub in ("mix", "s1", "s2"):
    ...     write_audio(os.path.join(d, sub, "u1.wav"), np.zeros(800, "float32"), 8000)
    >>> spec = SplitSpec("demo", os.path.join(d, "mix"), [os.path.join(d, "s1"), os.path.join(d, "s2")],
    ...                  None, None, os.path.join(d, "demo.csv"), {})
    >>> [os.path.basename(p) for p in prepare_splits([spec], 8000, 2)]
    ['demo.csv']
    >>> read_manifest(os.path.join(d, "demo.csv"), 2)[0]["duration"]
    0.1
    """
    check_num_spks(num_spks)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise DatasetError(f"sample_rate={sample_rate!r} is not valid: give the data's rate in Hz (e.g. 8000).")
    columns = manifest_columns(num_spks)
    paired = []
    for spec in specs:
        if len(spec.source_dirs) != num_spks:
            raise DatasetError(f"{spec.label}: {len(spec.source_dirs)} source folders for num_spks={num_spks}.")
        paired.append(_pair_files(spec))
    out = []
    for spec, (mixtures, listings) in zip(specs, paired):
        if _reusable(spec, mixtures, columns):
            logger.info("%s: reusing %s (%d mixtures; options and files unchanged)", spec.label, spec.csv_path, len(mixtures))
            out.append(spec.csv_path)
            continue
        rows = _build_rows(spec, mixtures, listings, sample_rate, num_spks)
        write_manifest(rows, spec.csv_path, num_spks)
        with atomic_write(sidecar_path(spec.csv_path)) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(_sidecar_content(spec, files_fingerprint(rows)), f, indent=2, sort_keys=True)
        hours = sum(float(r["duration"]) for r in rows) / 3600
        logger.info("%s: wrote %s (%d mixtures, %.2f h)", spec.label, spec.csv_path, len(rows), hours)
        out.append(spec.csv_path)
    return out


def existing_manifests(csv_paths, label):
    """For ``skip_prep=True``: check the manifests exist and return them unchanged.

    Example
    -------
    >>> existing_manifests({}, "LibriMix")
    {}
    """
    missing = [p for p in csv_paths.values() if not os.path.isfile(p)]
    if missing:
        raise DatasetError(
            f"{label}: skip_prep=True but manifest(s) {describe_files(missing)} do not exist. "
            "Set skip_prep=False to create them, or point save_folder at the folder that holds them."
        )
    logger.info("%s: skip_prep=True, using existing manifests %s", label, ", ".join(csv_paths.values()))
    return dict(csv_paths)


def read_manifest(path, num_spks):
    """Read a manifest, checking its columns and that every file it names exists.

    Used by training and evaluation before anything runs.

    Parameters
    ----------
    path : str
        Manifest CSV (:func:`manifest_columns` header).
    num_spks : int
        Number of speakers of the config; a manifest for another number is refused.

    Returns
    -------
    list of dict
        One dict per row, keyed by column; ``duration`` as float (s), paths as str
        (``noise_wav`` / ``mix_clean_wav`` may be ``""``).

    Raises
    ------
    DatasetError
        Missing or empty manifest, missing column (named), speaker columns that do not
        match ``num_spks``, bad duration, or referenced files that do not exist
        (first few and a count).

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> from nass.dataio.audio import write_audio
    >>> d = tempfile.mkdtemp()
    >>> for n in ("m", "a", "b"):
    ...     write_audio(os.path.join(d, n + ".wav"), np.zeros(80, "float32"), 8000)
    >>> row = {"ID": "u", "duration": 0.01, "mix_wav": os.path.join(d, "m.wav"), "s1_wav": os.path.join(d, "a.wav"),
    ...        "s2_wav": os.path.join(d, "b.wav"), "noise_wav": "", "mix_clean_wav": ""}
    >>> write_manifest([row], os.path.join(d, "x.csv"), 2)
    >>> rows = read_manifest(os.path.join(d, "x.csv"), num_spks=2)
    >>> rows[0]["ID"], rows[0]["duration"], rows[0]["noise_wav"]
    ('u', 0.01, '')
    """
    check_num_spks(num_spks)
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: manifest not found. Run the data preparation (skip_prep=False) or fix the path.")
    columns = manifest_columns(num_spks)
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Excel) is skipped
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise DatasetError(
                f"{path}: missing column(s) {', '.join(missing)} (header: {','.join(header) or 'empty'}). "
                f"A manifest for num_spks={num_spks} needs {','.join(columns)}; re-create it with "
                "nass.dataio.prepare.prepare_dataset."
            )
        extra_spk = [c for c in header if c.startswith("s") and c.endswith("_wav") and c not in columns]
        if extra_spk:
            raise DatasetError(
                f"{path}: has column(s) {', '.join(extra_spk)} but num_spks={num_spks}. The manifest is for "
                "more speakers: set num_spks to match the data or prepare the right dataset."
            )
        rows = list(reader)
    if not rows:
        raise DatasetError(f"{path}: the manifest has no rows. Re-create it from a non-empty split.")
    missing_files, bad_duration = [], []
    required = ["mix_wav"] + [f"s{i}_wav" for i in range(1, num_spks + 1)]
    for row in rows:
        try:
            row["duration"] = float(row["duration"])
            if not row["duration"] > 0:
                raise ValueError
        except (TypeError, ValueError):
            bad_duration.append(f"{row.get('ID')} ({row['duration']!r})")
        for column in columns[2:]:
            value = row[column] or ""
            row[column] = value
            if value == "":
                if column in required:
                    missing_files.append(f"(empty {column} for {row.get('ID')})")
                continue
            if not os.path.isfile(value):
                missing_files.append(value)
    if bad_duration:
        raise DatasetError(
            f"{path}: {len(bad_duration)} row(s) without a positive duration: {describe_files(bad_duration)}. "
            "Re-create the manifest."
        )
    if missing_files:
        raise DatasetError(
            f"{path}: {len(missing_files)} referenced file(s) do not exist: {describe_files(missing_files)}. "
            "The data moved or was deleted: re-run the preparation (skip_prep=False) on the current data folder."
        )
    return rows

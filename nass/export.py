"""Portable model folders: what ``nass-export`` and the end of every training write.

A model folder is a read-only artifact that can be copied to any path or machine:

* ``hyperparams.yaml``: the separator's own objects only (``sample_rate``, ``num_spks``,
  ``noise_target``, ``separator``), every reference resolved, so it holds nothing that
  prepares data, logs, checkpoints or creates folders (no ``output_folder``, no
  checkpointer, no ``__set_seed``);
* ``separator.ckpt``: the weights (``torch.save(state_dict)``, read back with
  ``weights_only=True``);
* ``model_card.json``: format, sample rate, speakers, noise output, training data and
  split, the checkpoint it came from, test metrics when the run has them, nass version
  and git commit, and the ``bytes`` and ``sha256`` of both files above;
* with ``nass-export --onnx`` / ``--torch_export``: ``separator.onnx`` / ``separator.pt2``,
  each checked against the PyTorch output, listed in ``files`` and described in the card's
  ``exports`` (input / output names and shapes, sample rate, fixed or dynamic length, max
  abs diff): :mod:`nass.graph_export`.

:func:`nass.inference.load_separator` verifies every SHA-256 of the card before it reads
anything and refuses a mismatch naming the file; it creates, changes and deletes nothing
(outside ``savedir`` when one is given). The folder is written into a hidden staging
folder next to ``OUT_DIR`` and renamed into place, so it appears whole or not at all.

Corrector folders (GeCo / Fast-GeCo, :func:`nass.correction.model.save_corrector`) use the
same card and checks (:func:`write_artifact_folder`, :func:`read_verified`) around their
``corrector.json`` and ``corrector.ckpt``.

.. warning::
   ``hyperparams.yaml`` is HyperPyYAML: loading it calls the Python objects it names.
   Read it before loading a folder from someone else.

Example
-------
>>> # nass-export results/sepformer-noisy/1234 models/sepformer-noisy
>>> # Separator.from_hparams("models/sepformer-noisy").separate_file("meeting.wav")
"""

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile

import yaml

from nass.dataio.audio import current_umask, disk_full_error

logger = logging.getLogger(__name__)

#: Card ``format`` value of this layout.
FORMAT = "nass-separator/1"
MODEL_YAML = "hyperparams.yaml"
WEIGHTS = "separator.ckpt"
CARD = "model_card.json"
#: Top-level keys of a training YAML kept in a model folder's YAML (``separator`` with
#: everything it references, which the resolved YAML inlines).
MODEL_KEYS = ("sample_rate", "num_spks", "noise_target", "separator")
#: Training-YAML values copied into the card (what data and split the model saw).
TRAINING_KEYS = (
    "experiment_name", "dataset", "data_folder", "mode", "mixture", "train_split", "valid_split",
    "test_split", "seed", "dynamic_mixing", "training_signal_len", "optimizer_step_limit", "N_epochs",
)


def sha256_bytes(data):
    """Hex SHA-256 of ``data``.

    Example
    -------
    >>> sha256_bytes(b"abc")[:16]
    'ba7816bf8f01cfea'
    """
    return hashlib.sha256(data).hexdigest()


def _resolved(yaml_path):
    from hyperpyyaml import resolve_references

    try:
        with open(yaml_path, encoding="utf-8") as f:  # a file object: !include resolves next to it
            return resolve_references(f).getvalue()
    except Exception as exc:
        from nass.inference import ModelLoadError

        raise ModelLoadError(
            f"{yaml_path}: cannot be read as HyperPyYAML ({type(exc).__name__}: {exc}). Fix the entry named "
            "above or re-export the model."
        ) from exc


def read_verified(folder, names):
    """Read ``names`` of an artifact folder and check each against its ``model_card.json``.

    The shared check of separator and corrector folders: every name must be listed in the
    card's ``files`` with its SHA-256, and the bytes returned are the bytes checked.

    Parameters
    ----------
    folder : str
        A folder written by :func:`write_artifact_folder`.
    names : sequence of str
        Files to read (e.g. ``hyperparams.yaml`` and ``separator.ckpt``).

    Returns
    -------
    card : dict
        The parsed card.
    contents : dict
        Name -> bytes.

    Raises
    ------
    nass.inference.ModelLoadError
        Unreadable card or file, a name the card does not list, a SHA-256 mismatch (the
        file named, with the fix).

    Example
    -------
    >>> import os, tempfile
    >>> d = write_artifact_folder(os.path.join(tempfile.mkdtemp(), "m"), {"a.bin": b"1"}, {"format": "x"})
    >>> read_verified(d, ["a.bin"])[1]
    {'a.bin': b'1'}
    >>> _ = open(os.path.join(d, "a.bin"), "wb").write(b"2")
    >>> read_verified(d, ["a.bin"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nass.inference.ModelLoadError: .../a.bin: SHA-256 d4735e3a265e16ee... differs from 6b86b273ff34fce1... recorded in model_card.json...
    """
    from nass.inference import ModelLoadError

    card_path = os.path.join(folder, CARD)
    try:
        with open(card_path, encoding="utf-8") as f:
            card = json.load(f)
        expected = {name: card["files"][name] for name in names}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"{card_path}: not a usable model card ({type(exc).__name__}: {exc}). Re-copy the folder, or re-export "
            "it (nass-export for a separator run)."
        ) from exc
    contents = {}
    for name, want in expected.items():
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ModelLoadError(f"{path}: cannot be read ({exc.strerror or exc}). Re-copy the folder.") from exc
        got = sha256_bytes(data)
        if got != (want or {}).get("sha256"):
            raise ModelLoadError(
                f"{path}: SHA-256 {got[:16]}... differs from {str((want or {}).get('sha256'))[:16]}... recorded in "
                f"{CARD}: the file is damaged or was changed after it was written. Re-copy the folder or "
                "re-export it."
            )
        contents[name] = data
    return card, contents


def model_yaml(yaml_path):
    """The model-only YAML text of a training (or model) ``hyperparams.yaml``; nothing is executed.

    References are resolved with ``hyperpyyaml.resolve_references`` (which only rewrites
    text), then the YAML node graph keeps :data:`MODEL_KEYS`; objects the separator
    shares with other keys are inlined, all others (checkpointer, loggers, data, paths)
    are dropped.

    Parameters
    ----------
    yaml_path : str
        SpeechBrain's copy of the training YAML in a run folder, or a model folder's YAML.

    Returns
    -------
    str
        YAML text that ``load_hyperpyyaml`` turns into ``{"separator": module, ...}``.

    Raises
    ------
    nass.inference.ModelLoadError
        Unreadable YAML, no ``separator`` or ``sample_rate`` key.

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "hyperparams.yaml")
    >>> _ = open(p, "w").write("sample_rate: 8000\\nout: /somewhere/else\\nlin: !new:torch.nn.Linear [2, 2]\\n"
    ...                        "separator: !ref <lin>\\nckpt: !new:os.makedirs [!ref <out>]\\n")
    >>> print(model_yaml(p).split("\\n", 3)[3])
    sample_rate: 8000
    separator: !new:torch.nn.Linear [2, 2]
    <BLANKLINE>
    """
    from nass.inference import ModelLoadError

    root = yaml.compose(_resolved(yaml_path), Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        raise ModelLoadError(f"{yaml_path}: not a YAML mapping; it is not a separator's hyperparams.yaml.")
    pairs = {k.value: (k, v) for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    missing = [k for k in ("separator", "sample_rate") if k not in pairs]
    if missing:
        raise ModelLoadError(f"{yaml_path}: missing key(s) {', '.join(missing)}; it is not a separator's hyperparams.yaml.")
    node = yaml.MappingNode("tag:yaml.org,2002:map", [pairs[k] for k in MODEL_KEYS if k in pairs])
    header = (
        f"# nass model folder ({FORMAT}): the separator's objects only, from {os.path.basename(yaml_path)}.\n"
        "# HyperPyYAML: loading this file calls the Python objects it names. Load only folders you trust.\n"
        "# Nothing here prepares data, logs, checkpoints or writes files.\n"
    )
    return header + yaml.serialize(node, Dumper=yaml.SafeDumper)


class _ValuesLoader(yaml.SafeLoader):
    """Safe loader that turns every HyperPyYAML tag (``!new:``, ``!ref``...) into None."""


_ValuesLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def training_values(yaml_path):
    """Plain values (numbers, strings, lists) of a training YAML; objects become None, nothing runs.

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "h.yaml")
    >>> _ = open(p, "w").write("sample_rate: 8000\\nmodel: !new:torch.nn.Linear [2, 2]\\n")
    >>> training_values(p)
    {'sample_rate': 8000, 'model': None}
    """
    values = yaml.load(_resolved(yaml_path), Loader=_ValuesLoader)
    return values if isinstance(values, dict) else {}


def git_commit():
    """``git describe --always --dirty`` of the nass source tree, or None outside a git checkout.

    Example
    -------
    >>> git_commit() is None or isinstance(git_commit(), str)
    True
    """
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True, text=True, timeout=20, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def read_test_metrics(csv_path):
    """The ``mean`` row of a ``test_metrics.csv`` (:func:`nass.evaluation.evaluate_manifest`) as floats.

    Returns
    -------
    dict or None
        Metric -> mean (None for NaN), plus ``num_utterances``; None without the file.

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "test_metrics.csv")
    >>> _ = open(p, "w").write("ID,si-snr_i,sdr_i\\nu1,10.0,nan\\nmean,10.0,nan\\n")
    >>> read_test_metrics(p)
    {'si-snr_i': 10.0, 'sdr_i': None, 'num_utterances': 1}
    """
    if not os.path.isfile(csv_path):
        return None
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    mean = next((r for r in rows if r.get("ID") == "mean"), None)
    if mean is None:
        return None
    out = {}
    for k, v in mean.items():
        if k == "ID":
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        out[k] = x if math.isfinite(x) else None
    out["num_utterances"] = sum(1 for r in rows if r.get("ID") != "mean")
    return out


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def build_card(files, run_dir, test_metrics=None):
    """The ``model_card.json`` content for files read by :func:`nass.inference.read_model_folder`.

    Parameters
    ----------
    files : nass.inference.ModelFiles
        The verified model YAML and weights (and, for a training folder, its YAML path
        and checkpoint meta).
    run_dir : str
        Folder they were read from.
    test_metrics : dict, optional
        Mean test metrics; default: ``<run_dir>/test/test_metrics.csv`` when present, else
        those of an earlier card.

    Returns
    -------
    dict
        JSON-serialisable card (without ``files``, which :func:`write_model_folder` adds).
    """
    import nass

    previous = files.card or {}
    values = training_values(files.yaml_path) if files.kind != "exported" else {}
    model_values = yaml.load(files.yaml_text, Loader=_ValuesLoader) or {}
    training = dict(previous.get("training") or {})
    training.update({k: values[k] for k in TRAINING_KEYS if k in values})
    if files.kind == "training":
        meta = {k: v for k, v in (files.ckpt_meta or {}).items() if k not in ("files",)}
        training.update(run_dir=os.path.abspath(run_dir), checkpoint=os.path.basename(os.path.dirname(files.weights_path)),
                        checkpoint_meta=meta)
    if test_metrics is None:
        test_metrics = read_test_metrics(os.path.join(run_dir, "test", "test_metrics.csv"))
    if test_metrics is None:
        test_metrics = previous.get("test_metrics")
    noise_target = model_values.get("noise_target") or "none"
    card = {
        "format": FORMAT,
        "sample_rate": int(model_values["sample_rate"]),
        "num_spks": int(model_values.get("num_spks") or 2),
        "noise_target": noise_target,
        "noise_output": noise_target != "none",
        "training": training,
        "test_metrics": test_metrics,
        "nass_version": nass.__version__,
        "git_commit": git_commit(),
    }
    if files.kind == "exported":  # re-exported: keep where the weights came from
        card["nass_version"] = previous.get("nass_version", card["nass_version"])
        card["git_commit"] = previous.get("git_commit", card["git_commit"])
    return _json_safe(card)


def _write_file(path, data, mode):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, mode)


def write_artifact_folder(out_dir, files, card, overwrite=False, option="OUT_DIR"):
    """Write a folder of ``files`` and a ``model_card.json`` listing their SHA-256, atomically.

    The files are written (and fsync-ed) into a hidden staging folder next to ``out_dir``,
    which is then renamed to ``out_dir``; an existing ``out_dir`` is moved aside first and
    removed only once the new one is in place. Modes follow the umask. Shared by separator
    model folders (:func:`write_model_folder`) and corrector folders
    (:func:`nass.correction.model.save_corrector`).

    Parameters
    ----------
    out_dir : str
        Destination folder (its parent is created).
    files : dict
        File name -> bytes.
    card : dict
        Card content; ``files`` (``bytes`` and ``sha256`` of each file) is added.
    overwrite : bool
        Replace an existing non-empty ``out_dir``; otherwise it is refused.
    option : str
        How the user picks another folder, for the full-disk message.

    Returns
    -------
    str
        ``out_dir``.

    Raises
    ------
    FileExistsError
        ``out_dir`` exists, is not empty, and ``overwrite`` is False.
    OSError
        A write failed (full disk: one line naming the folder); nothing is left behind.

    Example
    -------
    >>> import os, tempfile
    >>> d = os.path.join(tempfile.mkdtemp(), "m")
    >>> _ = write_artifact_folder(d, {"a.bin": b"1"}, {"format": "x"})
    >>> sorted(os.listdir(d))
    ['a.bin', 'model_card.json']
    >>> write_artifact_folder(d, {}, {})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: .../m: already exists. Pass --overwrite to replace it, or choose another folder.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    parent = os.path.dirname(out_dir)
    if os.path.lexists(out_dir) and not overwrite and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise FileExistsError(f"{out_dir}: already exists. Pass --overwrite to replace it, or choose another folder.")
    card = dict(card)
    card["files"] = {name: {"bytes": len(data), "sha256": sha256_bytes(data)} for name, data in files.items()}
    card_bytes = (json.dumps(card, indent=2, sort_keys=False) + "\n").encode("utf-8")
    umask = current_umask()
    staging = None
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(out_dir) + "-", dir=parent)
        for name, data in list(files.items()) + [(CARD, card_bytes)]:
            _write_file(os.path.join(staging, name), data, 0o666 & ~umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700
        if os.path.lexists(out_dir):
            old = tempfile.mkdtemp(prefix=".old-" + os.path.basename(out_dir) + "-", dir=parent)
            os.rename(out_dir, os.path.join(old, "previous"))
            os.rename(staging, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, out_dir)
        staging = None
    except OSError as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise disk_full_error(parent, exc, option=option) from exc
    logger.info("wrote %s", out_dir)
    return out_dir


def write_model_folder(out_dir, yaml_text, weights, card, overwrite=False, extra_files=None):
    """Write a separator model folder (module docstring) with :func:`write_artifact_folder`.

    Parameters
    ----------
    out_dir : str
        Destination folder.
    yaml_text : str
        Model-only YAML (:func:`model_yaml`).
    weights : bytes
        ``torch.save`` bytes of the separator's ``state_dict``.
    card : dict
        :func:`build_card`.
    overwrite : bool
        Replace an existing non-empty ``out_dir``.
    extra_files : dict, optional
        More file name -> bytes (``separator.onnx``, ``separator.pt2``: :mod:`nass.graph_export`),
        listed in the card with their SHA-256 like the others.

    Returns
    -------
    str
        ``out_dir``.

    Raises
    ------
    FileExistsError, OSError
        As :func:`write_artifact_folder`.

    Example
    -------
    >>> import os, tempfile
    >>> d = os.path.join(tempfile.mkdtemp(), "m")
    >>> _ = write_model_folder(d, "sample_rate: 8000\\n", b"w", {"format": FORMAT})
    >>> sorted(os.listdir(d))
    ['hyperparams.yaml', 'model_card.json', 'separator.ckpt']
    """
    files = {MODEL_YAML: yaml_text.encode("utf-8"), WEIGHTS: weights, **(extra_files or {})}
    return write_artifact_folder(out_dir, files, card, overwrite=overwrite)


def export_model(run_dir, out_dir, overwrite=False, test_metrics=None, formats=(), length_seconds=4.0,
                 dynamic_length=False, tolerance=None, onnx_exporter="dynamo"):
    """Export a training run (or copy a model folder) into a portable model folder.

    Parameters
    ----------
    run_dir : str
        Training output folder (its best checkpoint: highest validation ``si-snr``, else
        the newest; sizes and CRC-32 of its ``CKPT.yaml`` are checked) or a model folder.
        Read only: its training objects are never built.
    out_dir : str
        The model folder to write (module docstring), atomically.
    overwrite : bool
        Replace an existing ``out_dir``.
    test_metrics : dict, optional
        Mean test metrics for the card (default: ``<run_dir>/test/test_metrics.csv``).
    formats : sequence of {"onnx", "torch_export"}
        Also write ``separator.onnx`` / ``separator.pt2`` (:func:`nass.graph_export.export_program`),
        each checked against the PyTorch output and described in the card's ``exports``.
    length_seconds : float
        Input length of those programs (s): their fixed length, or the first length checked
        with ``dynamic_length``.
    dynamic_length : bool
        Export with a dynamic time axis (refused, with the reason, where it does not work).
    tolerance : float, optional
        Largest absolute difference to PyTorch (default :data:`nass.graph_export.TOLERANCE`).
    onnx_exporter : {"dynamo", "torchscript"}
        ``torch.onnx.export`` exporter.

    Returns
    -------
    str
        ``out_dir``.

    Raises
    ------
    nass.inference.ModelLoadError
        No usable checkpoint or YAML in ``run_dir``, a damaged or non-finite checkpoint.
    nass.graph_export.ExportError
        A program that cannot be exported or does not match PyTorch (nothing is written).
    FileExistsError
        ``out_dir`` exists and ``overwrite`` is False.

    Example
    -------
    See ``tests/test_model_folder.py``.
    """
    from nass.inference import read_model_folder

    files = read_model_folder(run_dir)
    files.check_weights()
    card = build_card(files, run_dir, test_metrics=test_metrics)
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.lexists(out_dir) and not overwrite and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise FileExistsError(f"{out_dir}: already exists. Pass --overwrite to replace it, or choose another folder.")
    extra = {}
    if formats:
        from nass import graph_export
        from nass.inference import load_separator

        unknown = [f for f in formats if f not in graph_export.FORMATS]
        if unknown:
            raise graph_export.ExportError(f"unknown export format(s) {unknown}; use {', '.join(graph_export.FORMATS)}")
        if not (isinstance(length_seconds, (int, float)) and math.isfinite(length_seconds) and length_seconds > 0):
            raise graph_export.ExportError(f"--length_seconds {length_seconds}: must be a positive number of seconds")
        model, hparams = load_separator(run_dir)
        length = int(round(float(length_seconds) * int(hparams["sample_rate"])))
        card["exports"] = {}
        for fmt in dict.fromkeys(formats):
            data, info = graph_export.export_program(
                model, int(hparams["sample_rate"]), fmt, length, dynamic=dynamic_length,
                tolerance=graph_export.TOLERANCE if tolerance is None else float(tolerance), onnx_exporter=onnx_exporter,
            )
            extra[info["file"]] = data
            card["exports"][fmt] = _json_safe(info)
            logger.info("%s: max abs diff to PyTorch %.3g", info["file"], info["max_abs_diff"])
    return write_model_folder(out_dir, files.yaml_text, files.weights, card, overwrite=overwrite, extra_files=extra)


"""The runners every recipe's ``train.py`` calls: :func:`run_separation` and :func:`run_correction`.

This module sits above both Brains (:mod:`nass.brains.separation`,
:mod:`nass.brains.correction`), which never import it. ``nass.training`` and the runner
names of ``nass.brains.correction`` are kept as aliases of this module for old imports.

Separation (``recipes/*/separation/train.py`` is one line, ``run_separation(sys.argv[1:])``,
so LibriMix, WHAM! and custom folders share one tested path):
1. ``speechbrain.parse_arguments``: ``train.py hparams.yaml --key=value ...``; an override
   naming a key that the YAML does not define fails (HyperPyYAML raises ``KeyError``).
2. The output folder is checked to be writable before anything else happens.
3. DDP set-up (``torchrun``), experiment folder, data preparation on the main process
   only (``run_on_main``), then every process reads the manifests.
4. ``SeparationBrain.fit`` with automatic resume from the last checkpoint.
5. Fine-tuning (``init_from``): when the run has no checkpoint of its own yet, the
   matching weights of a trained model start it (:func:`apply_init_from`); resuming
   later continues from the run's own checkpoints.
6. On the main process: the best checkpoint (highest validation SI-SNR) is evaluated on
   the test split (``nass.evaluation.evaluate_manifest``): per-utterance CSV, means,
   separated examples, next to the checkpoints.
6. On the main process: ``<output_folder>/model``, the portable model folder
   (:mod:`nass.export`: model-only YAML, weights with SHA-256, JSON card with the test
   metrics), written atomically.

Correction: :func:`run_correction` (GeCo / Fast-GeCo on a trained separator's triplets).
"""

import copy
import dataclasses
import logging
import os
import sys
import tempfile

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

from nass.hparams import require, resolve_auto_precision_in, resolve_precision

logger = logging.getLogger(__name__)


def check_writable(folder):
    """Fail early when ``folder`` cannot be created or written (full disk, permissions).

    Parameters
    ----------
    folder : str
        The experiment output folder.

    Raises
    ------
    OSError
        With the folder in the message and the fix.

    Example
    -------
    >>> import tempfile
    >>> check_writable(tempfile.mkdtemp())
    """
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        try:
            os.write(fd, b"\0" * 1024 * 1024)  # 1 MiB: catches a full disk, not only permissions
            os.fsync(fd)
        finally:
            os.close(fd)
            os.remove(probe)
    except OSError as exc:
        raise OSError(
            f"output folder {folder!r} is not writable ({exc.strerror or exc}). Free disk space, fix its "
            "permissions, or pass --output_folder=<a writable folder>."
        ) from exc


def _device_of(argv):
    """The ``--device`` of a command line (``cuda`` under ``torchrun`` with GPUs, else ``cpu``)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--device="):
            return arg.split("=", 1)[1]
        if arg == "--device" and i + 1 < len(argv):
            return argv[i + 1]
    return "cuda" if os.environ.get("LOCAL_RANK") is not None and torch.cuda.is_available() else "cpu"


def _resolve_auto_precision(argv):
    """``argv`` with ``--precision=auto`` (or ``--precision auto``), which SpeechBrain's parser
    refuses, replaced by :func:`resolve_precision` for the command line's device, and printed."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--precision=auto" or (arg == "auto" and i > 0 and out[i - 1] == "--precision"):
            device = _device_of(argv)
            resolved = resolve_precision("auto", device)
            out[i] = f"--precision={resolved}" if arg.startswith("--") else resolved
            print(f"precision: auto -> {resolved} on {device}", flush=True)
    return out


def _step_limit_into_yaml(hparams_file, run_opts, overrides):
    """``--optimizer_step_limit=N`` is a SpeechBrain run option, so the YAML never sees it;
    when the YAML has a top-level ``optimizer_step_limit`` key, it becomes an override too,
    so that a schedule written ``!ref <optimizer_step_limit>`` (the demo's warm-up + linear
    decay) follows the budget given on the command line."""
    if "optimizer_step_limit" not in getattr(run_opts, "overridden_args", ()):
        return overrides
    try:
        with open(hparams_file, encoding="utf-8") as f:
            has_key = any(line.startswith("optimizer_step_limit:") for line in f)
    except OSError:
        return overrides
    if not has_key:
        return overrides
    line = f"optimizer_step_limit: {int(run_opts.optimizer_step_limit)}"
    return f"{overrides}\n{line}" if isinstance(overrides, str) and overrides.strip() else line


def yaml_keys_help(hparams_file):
    """The top-level keys of a recipe YAML, in file order, as help text.

    Parameters
    ----------
    hparams_file : str
        A HyperPyYAML file (read as text; nothing is executed).

    Returns
    -------
    str
        One line per top-level key (``key: value  # comment`` as written, objects shown by
        their tag); keys starting with ``__`` left out.

    Raises
    ------
    OSError
        The file cannot be read.

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "x.yaml")
    >>> _ = open(p, "w").write("__s: 1\\nlr: 0.1  # peak\\nmodel: !new:torch.nn.Linear\\n    in_features: 2\\n")
    >>> print(yaml_keys_help(p))
      --lr=0.1  # peak
      --model=!new:torch.nn.Linear
    """
    lines = []
    with open(hparams_file, encoding="utf-8") as f:
        for line in f:
            if not line[:1].isalpha() or ":" not in line:
                continue
            key, rest = line.rstrip("\n").split(":", 1)
            if key.startswith("__") or not key.replace("_", "").isalnum():
                continue
            value, _, comment = rest.strip().partition("#")
            text = f"  --{key}={value.strip()}"
            lines.append(f"{text}  # {comment.strip()}" if comment.strip() else text)
    return "\n".join(lines)


def _print_help(argv):
    """``train.py [hparams.yaml] --help``: the YAML's keys (file order), then SpeechBrain's run options."""
    import contextlib
    import io

    yaml_file = next((a for a in argv if not a.startswith("-") and a.endswith((".yaml", ".yml"))), None)
    print("usage: train.py HPARAMS.yaml [--key=value ...] [SpeechBrain run options]\n")
    if yaml_file is not None and os.path.isfile(yaml_file):
        print(f"Keys of {yaml_file} (any of them can be overridden with --key=value; file order):")
        print(yaml_keys_help(yaml_file))
        print()
    else:
        print("Give the YAML file first (train.py HPARAMS.yaml --help) to list its keys.\n")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        sb.parse_arguments(["--help"])
    text = buf.getvalue()
    text = text[text.index("\noptions:") + len("\noptions:"):] if "\noptions:" in text else text
    # SpeechBrain 1.1.2 adds its options in an order that changes between runs: sort them
    blocks = []
    for line in text.splitlines():
        if line.startswith("  -") or not blocks:
            blocks.append([line])
        else:
            blocks[-1].append(line)
    blocks = sorted((b for b in blocks if "".join(b).strip()), key=lambda b: b[0].strip().lstrip("-").lower())
    print("SpeechBrain run options:\n" + "\n".join(line for b in blocks for line in b))


def check_class_overrides(hparams_file, overrides):
    """Refuse a ``--key=!new:OtherClass {...}`` override that HyperPyYAML would silently merge.

    HyperPyYAML merges an override mapping into the YAML's node of the same key and keeps
    that node's tag: ``--train_logger=!new:...TensorboardLogger {save_dir: tb}`` on a YAML
    whose ``train_logger`` is a ``FileTrainLogger`` calls ``FileTrainLogger(save_file=...,
    save_dir=tb)`` (a TypeError). Such an override is refused up front, saying what works.

    Parameters
    ----------
    hparams_file : str
        The training YAML.
    overrides : str or dict
        SpeechBrain's parsed ``--key=value`` overrides (YAML text).

    Raises
    ------
    SystemExit
        A top-level key whose override names another class than the YAML (the message names
        both, and ``--tensorboard=True`` for TensorBoard).

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "h.yaml")
    >>> _ = open(p, "w").write("log: !new:collections.OrderedDict\\n    a: 1\\n")
    >>> check_class_overrides(p, "log: !new:collections.Counter {a: 2}")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    SystemExit: --log=!new:collections.Counter: HyperPyYAML merges an override into the YAML's !new:collections.OrderedDict ...
    >>> check_class_overrides(p, "log: {a: 2}")  # same class, other arguments: fine
    """
    import yaml

    if not overrides:
        return
    text = overrides if isinstance(overrides, str) else yaml.safe_dump(overrides)
    try:
        given = yaml.compose(text, Loader=yaml.SafeLoader)
        with open(hparams_file, encoding="utf-8") as f:
            base = yaml.compose(f, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, OSError):
        return  # HyperPyYAML reports those itself
    if not (isinstance(given, yaml.MappingNode) and isinstance(base, yaml.MappingNode)):
        return
    base_tags = {k.value: v.tag for k, v in base.value  # only mappings are merged (a scalar is replaced)
                 if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.MappingNode) and v.tag.startswith("!new:")}
    for key, node in given.value:
        old = base_tags.get(getattr(key, "value", None))
        if not (isinstance(node, yaml.MappingNode) and node.tag.startswith("!new:")) or not old or old == node.tag:
            continue
        hint = ("For TensorBoard, pass --tensorboard=True instead (event files in <output_folder>/tensorboard; "
                "pip install 'nass[tensorboard]'). " if "tensorboard" in node.tag.lower() else "")
        raise SystemExit(
            f"--{key.value}={node.tag}: HyperPyYAML merges an override into the YAML's {old} (its arguments are "
            f"added, the class stays), so {key.value} cannot be given another class on the command line. {hint}"
            f"Otherwise copy {hparams_file} and change {key.value} there."
        )


def load_hparams(argv):
    """Parse the command line and load the YAML (overrides applied).

    ``-h`` / ``--help`` prints the YAML's keys in file order (:func:`yaml_keys_help`)
    and SpeechBrain's run options, then exits.

    ``precision: auto`` (YAML or ``--precision=auto``) is resolved here by
    :func:`resolve_precision`, before SpeechBrain's ``Brain`` reads it.

    Returns
    -------
    (str, dict, str, dict)
        ``hparams_file, run_opts, overrides, hparams``.
    """
    if any(a in ("-h", "--help") for a in argv):
        _print_help(list(argv))
        raise SystemExit(0)
    argv = _resolve_auto_precision(list(argv))
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    # speechbrain 1.1.2's argument parser leaves --optimizer_step_limit as a string
    if isinstance(getattr(run_opts, "optimizer_step_limit", None), str):
        run_opts = dataclasses.replace(run_opts, optimizer_step_limit=int(run_opts.optimizer_step_limit))
    overrides = _step_limit_into_yaml(hparams_file, run_opts, overrides)
    check_class_overrides(hparams_file, overrides)
    with open(hparams_file, encoding="utf-8") as fin:
        try:
            hparams = load_hyperpyyaml(fin, overrides)
        except KeyError as exc:
            raise SystemExit(f"{hparams_file}: {exc.args[0]}. Check the spelling of the --key=value options.")
        except ValueError as exc:
            if "PLACEHOLDER" in str(exc):
                raise SystemExit(f"{hparams_file}: {exc} Pass it on the command line, e.g. --data_folder=/path.")
            raise
        except OSError as exc:  # e.g. the checkpointer cannot create the output folder
            raise SystemExit(f"{hparams_file}: {exc}")
    resolve_auto_precision_in(hparams, {"device": _device_of(argv)})
    return hparams_file, run_opts, overrides, hparams


def prepare_manifests(hparams):
    """Run data preparation (main process) and return ``{split: csv}`` on every process.

    A :class:`nass.dataio.manifest.DatasetError` (missing split, wrong layout, ...) ends
    the program with its one-line message (``SystemExit``), not a traceback.
    """
    from nass.dataio.prepare import prepare_dataset

    kwargs = dict(
        dataset=hparams["dataset"],
        data_folder=hparams["data_folder"],
        save_folder=hparams["save_folder"],
        num_spks=hparams["num_spks"],
        sample_rate=hparams["sample_rate"],
        mode=require(hparams, "mode"),
        mixture=require(hparams, "mixture"),
        splits=[require(hparams, k) for k in ("train_split", "valid_split", "test_split") if require(hparams, k)],
        skip_prep=require(hparams, "skip_prep"),
    )
    from nass.dataio.manifest import DatasetError

    try:
        run_on_main(prepare_dataset, kwargs=kwargs)
        return prepare_dataset(**kwargs)  # reuses the manifests written on the main process
    except DatasetError as exc:  # one line naming the folder and the fix, not a traceback
        raise SystemExit(f"error: {exc}") from None


def spread_subset(rows, max_rows):
    """At most ``max_rows`` rows spread evenly over ``rows`` (order kept), for a cheaper validation.

    Parameters
    ----------
    rows : list
        Manifest rows (any items).
    max_rows : int or None
        ``None`` (or a value >= ``len(rows)``) keeps every row.

    Returns
    -------
    list

    Raises
    ------
    ValueError
        ``max_rows`` below 1.

    Example
    -------
    >>> spread_subset(list(range(10)), 3), spread_subset([1, 2], None)
    ([0, 3, 6], [1, 2])
    """
    if max_rows is None or int(max_rows) >= len(rows):
        return list(rows)
    if int(max_rows) < 1:
        raise ValueError(f"valid_max_utterances: {max_rows} must be >= 1 (or null for the whole split).")
    n = int(max_rows)
    return [rows[i * len(rows) // n] for i in range(n)]


def build_datasets(hparams, manifests):
    """Train / valid / test datasets (dynamic mixing for train when enabled)."""
    from nass.dataio.manifest import read_manifest
    from nass.dataio.pipeline import make_dataset

    num_spks, rate = hparams["num_spks"], hparams["sample_rate"]
    rows = {
        k: read_manifest(manifests[hparams[f"{k}_split"]], num_spks) if require(hparams, f"{k}_split") else []
        for k in ("train", "valid", "test")
    }
    rows["valid"] = spread_subset(rows["valid"], require(hparams, "valid_max_utterances"))
    segment = int(require(hparams, "training_signal_len") or 0)
    if require(hparams, "dynamic_mixing"):
        from nass.dataio.dynamic_mixing import DynamicMixingDataset

        train = DynamicMixingDataset(
            rows["train"], num_spks, rate, segment_seconds=segment / rate, seed=require(hparams, "seed")
        )
    else:
        train = make_dataset(rows["train"], num_spks, rate, segment_samples=segment, seed=require(hparams, "seed"))
    valid = make_dataset(rows["valid"], num_spks, rate, segment_samples=int(require(hparams, "valid_signal_len") or 0))
    test_rows = rows["test"]
    return train, valid, test_rows


def evaluate_best(brain, hparams, manifests):
    """Evaluate the best checkpoint on the test split; returns the mean metrics."""
    from nass.evaluation import evaluate_manifest

    if brain.checkpointer is not None:
        brain.checkpointer.recover_if_possible(max_key="si-snr")
    separator = brain.separator()
    separator.eval()

    def separate(mix):
        with torch.no_grad():
            out = separator(mix.to(brain.device))
        noise = None if out.est_noise is None else out.est_noise.cpu()
        return out.est_sources.cpu(), noise

    return evaluate_manifest(
        separate,
        manifests[hparams["test_split"]],
        require(hparams, "eval_folder"),
        num_spks=hparams["num_spks"],
        sample_rate=hparams["sample_rate"],
        num_workers=require(hparams, "eval_num_workers"),
        save_examples=require(hparams, "n_audio_to_save"),
        pesq_estoi=require(hparams, "eval_pesq_estoi"),
        sdr_backend=require(hparams, "eval_sdr_backend"),
        overwrite=True,  # the run's own test folder: a resumed or repeated run re-scores it
    )


def copy_matching_weights(module, state):
    """Copy the tensors of ``state`` whose name and shape match ``module``'s into it.

    Parameters
    ----------
    module : torch.nn.Module
        The model to initialise (changed in place).
    state : dict
        ``name -> tensor`` (a ``state_dict``, e.g. :func:`nass.inference.load_state_dict`).

    Returns
    -------
    dict
        ``loaded`` (names copied), ``new`` (``{name: reason}`` of the module's tensors
        left as initialised: absent from ``state`` or of another shape, both shapes
        named) and ``unused`` (names of ``state`` the module has no tensor for).

    Example
    -------
    >>> import torch
    >>> old, new = torch.nn.Linear(4, 2), torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> report = copy_matching_weights(new, {"0.weight": torch.zeros(2, 4), "0.bias": torch.zeros(3)})
    >>> report["loaded"], report["new"]
    (['0.bias'], {'0.weight': 'shape (2, 4) in the source, (3, 4) here'})
    >>> bool(new[0].bias.abs().sum() == 0)
    True
    """
    own = module.state_dict()
    loaded, new, take = [], {}, {}
    for name, tensor in own.items():
        if name not in state:
            new[name] = "not in the source"
        elif tuple(state[name].shape) != tuple(tensor.shape):
            new[name] = f"shape {tuple(state[name].shape)} in the source, {tuple(tensor.shape)} here"
        else:
            take[name] = state[name]
            loaded.append(name)
    module.load_state_dict(take, strict=False)
    unused = [name for name in state if name not in own]
    return {"loaded": loaded, "new": new, "unused": unused}


def _report_init(source, ckpt, name, report):
    """Log one module's fine-tuning initialisation: what was copied and, by name, what was not."""
    print(
        f"init_from {source}: {name}: {len(report['loaded'])} tensors loaded from {ckpt}, "
        f"{len(report['new'])} new, {len(report['unused'])} unused",
        flush=True,
    )
    for key, reason in report["new"].items():
        print(f"  new (initialised fresh): {name}.{key} ({reason})", flush=True)
    for key in report["unused"]:
        print(f"  unused (in the source only): {name}.{key}", flush=True)


def apply_init_from(source, modules, checkpointer=None, output_folder=None):
    """Start a separation run from the matching weights of a trained model (fine-tuning).

    The separator weights are located with :func:`nass.inference.find_checkpoint`
    (a training output folder: its best checkpoint; an exported model folder:
    ``separator.ckpt``) and read with :func:`nass.inference.load_state_dict`
    (``weights_only``; the source's YAML is never run). Tensors whose name and shape
    match are copied (:func:`copy_matching_weights`); the others keep their fresh
    initialisation and are listed by name: adding the noise output to a 2-output model
    leaves only the mask head (``masknet.conv2d``) new. Other modules (e.g. the PatchNCE
    ``patch_sampler``) are initialised the same way from ``<module>.ckpt`` next to the
    separator's checkpoint when it exists. The optimiser and the learning-rate schedule
    are not taken from the source: they start fresh.

    Nothing is done when ``checkpointer`` already holds a checkpoint of this run: the
    run then resumes from it as usual.

    Parameters
    ----------
    source : str
        Training output folder or exported model folder.
    modules : dict
        ``name -> torch.nn.Module`` (the YAML's ``modules``; ``separator`` required).
    checkpointer : speechbrain.utils.checkpoints.Checkpointer, optional
        This run's checkpointer.
    output_folder : str, optional
        Where ``init_from.json`` (the report, written atomically) goes.

    Returns
    -------
    dict or None
        ``{module name: report}`` (see :func:`copy_matching_weights`) plus ``"source"``
        (the checkpoint file), or None when resuming.

    Raises
    ------
    nass.inference.ModelLoadError
        No checkpoint in ``source`` or a file that is not a plain state_dict.

    Example
    -------
    >>> import os, tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> torch.save(torch.nn.Linear(2, 2).state_dict(), os.path.join(d, "separator.ckpt"))
    >>> out = apply_init_from(d, {"separator": torch.nn.Linear(2, 2)})  # doctest: +ELLIPSIS
    init_from ...: separator: 2 tensors loaded from ..., 0 new, 0 unused
    >>> out["separator"]["loaded"]
    ['weight', 'bias']
    """
    import json

    from nass.dataio.audio import atomic_write
    from nass.inference import find_checkpoint, load_state_dict

    if checkpointer is not None and checkpointer.list_checkpoints():
        print(f"init_from {source}: ignored, resuming from this run's own checkpoint in "
              f"{checkpointer.checkpoints_dir}", flush=True)
        return None
    source = os.fspath(source)
    ckpt = find_checkpoint(source)
    out = {"source": ckpt}
    for name, module in modules.items():
        path = ckpt if name == "separator" else os.path.join(os.path.dirname(ckpt), f"{name}.ckpt")
        if name != "separator" and not os.path.isfile(path):
            print(f"init_from {source}: {name}: no {name}.ckpt next to {ckpt}; initialised fresh", flush=True)
            continue
        report = copy_matching_weights(module, load_state_dict(path, device="cpu"))
        _report_init(source, path, name, report)
        out[name] = report
    if output_folder is not None and sb.utils.distributed.if_main_process():
        os.makedirs(output_folder, exist_ok=True)
        with atomic_write(os.path.join(output_folder, "init_from.json")) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(out, f, indent=1)
    return out


def freeze_encoder(separator):
    """``freeze_encoder: True``: the separator's encoder is not trained (``requires_grad`` off).

    Parameters
    ----------
    separator : nass.separation.SeparationModel
        Its ``encoder_parameters()`` are frozen.

    Returns
    -------
    int
        Number of frozen parameters.

    Raises
    ------
    ValueError
        The separator has no encoder parameters (nothing would be frozen).

    Example
    -------
    >>> import torch
    >>> class S(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.front = torch.nn.Linear(2, 2)
    ...     def encoder_parameters(self):
    ...         return list(self.front.parameters())
    >>> s = S()
    >>> freeze_encoder(s), s.front.weight.requires_grad
    (2, False)
    """
    params = list(separator.encoder_parameters())
    if not params:
        raise ValueError(
            f"freeze_encoder: True, but the separator ({type(separator).__name__}) has no encoder parameters "
            "(encoder_parameters() is empty): set freeze_encoder: False"
        )
    for p in params:
        p.requires_grad_(False)
    return len(params)


def run_separation(argv=None):
    """Train and evaluate a separator from ``train.py hparams.yaml --key=value`` arguments.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict or None
        Mean test metrics on the main process (None elsewhere or with ``test_split: null``).
    """
    from nass.brains.separation import SeparationBrain

    from nass.losses.terms import check_hparams

    argv = sys.argv[1:] if argv is None else argv
    hparams_file, run_opts, overrides, hparams = load_hparams(argv)
    try:  # a configuration that cannot work stops here, before any data is prepared
        check_hparams(hparams)
    except ValueError as exc:
        raise SystemExit(f"{hparams_file}: {exc}") from None
    check_writable(hparams["output_folder"])
    sb.utils.distributed.ddp_init_group(run_opts)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    manifests = prepare_manifests(hparams)
    train, valid, test_rows = build_datasets(hparams, manifests)
    if require(hparams, "init_from"):
        apply_init_from(hparams["init_from"], hparams["modules"], require(hparams, "checkpointer"), hparams["output_folder"])
    if require(hparams, "freeze_encoder"):
        print(f"freeze_encoder: {freeze_encoder(hparams['separator'])} encoder parameters frozen", flush=True)
    brain = SeparationBrain(
        modules=hparams["modules"],
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.train_set = train  # dynamic mixing draws new mixtures each epoch (set_epoch)
    train_kwargs = dict(hparams["dataloader_opts"])
    from speechbrain.dataio.batch import PaddedBatch

    train_kwargs.setdefault("collate_fn", PaddedBatch)
    valid_kwargs = dict(require(hparams, "valid_dataloader_opts"))
    brain.fit(hparams["epoch_counter"], train, valid, train_loader_kwargs=train_kwargs, valid_loader_kwargs=valid_kwargs)
    if not sb.utils.distributed.if_main_process():
        return None
    metrics = evaluate_best(brain, hparams, manifests) if test_rows else None
    export_trained_model(hparams["output_folder"], metrics)
    return metrics


def export_trained_model(output_folder, metrics=None):
    """Write ``<output_folder>/model``, the portable model folder of a finished training.

    :func:`nass.export.export_model` of the best checkpoint (highest validation SI-SNR),
    with the test metrics in its card; atomic, replacing the folder of an earlier run of
    the same training. A failure (no checkpoint, full disk) is logged, not raised: the
    training's own results are complete without it.

    Parameters
    ----------
    output_folder : str
        The training output folder.
    metrics : dict, optional
        Mean test metrics (:func:`evaluate_best`).

    Returns
    -------
    str or None
        The model folder, or None when it could not be written.
    """
    from nass.export import export_model

    target = os.path.join(output_folder, "model")
    try:
        export_model(output_folder, target, overwrite=True, test_metrics=metrics)
    except (ValueError, OSError) as exc:
        logger.error("the model folder %s was not written: %s (export later with nass-export)", target, exc)
        return None
    logger.info("portable model folder: %s (nass-separate --model %s)", target, target)
    return target


# ---------------------------------------------------------------------------- correction
def build_correction_data(hparams):
    """Prepare the manifests and build (or reuse) the triplets of the train and valid splits.

    The triplets are built on the main process only (``run_on_main``), then read everywhere.

    Returns
    -------
    (dict, dict)
        ``{split: manifest_csv}`` and ``{"train": rows, "valid": rows}``.
    """
    from nass.correction.data import build_triplets, read_triplets
    manifests = prepare_manifests(hparams)
    rows = {}
    for key, limit in (("train", require(hparams, "train_utterances")), ("valid", require(hparams, "valid_utterances"))):
        split = hparams[f"{key}_split"]
        kwargs = dict(
            separator=hparams["separator_folder"], manifest_csv=manifests[split],
            cache_folder=hparams["triplet_folder"], split=split, num_spks=hparams["num_spks"],
            sample_rate=hparams["sample_rate"], device=require(hparams, "triplet_device"),
            max_utterances=limit,
        )
        run_on_main(build_triplets, kwargs=kwargs)
        rows[key] = read_triplets(build_triplets(**kwargs))  # reuses the main process's cache
    return manifests, rows


def corrector_init_from(source, corrector, checkpointer=None):
    """Fine-tuning: start a correction run from the matching weights of a trained corrector.

    Parameters
    ----------
    source : str
        A corrector folder (``corrector.ckpt``, :func:`nass.correction.save_corrector`)
        or a correction training output folder holding one in ``corrector/``.
    corrector : nass.correction.GeCoModel
        This run's corrector; tensors of its ``score_model`` whose name and shape match
        are copied (:func:`copy_matching_weights`), the others are listed
        by name. The optimiser, the moving average and the schedule start fresh.
    checkpointer : speechbrain.utils.checkpoints.Checkpointer, optional
        When it holds a checkpoint of this run, nothing is done (the run resumes).

    Returns
    -------
    dict or None
        The report of :func:`copy_matching_weights`, None when resuming.

    Raises
    ------
    nass.inference.ModelLoadError
        No ``corrector.ckpt`` in ``source`` (or ``source/corrector``), or not a plain state_dict.

    Example
    -------
    >>> import tempfile
    >>> from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform
    >>> from nass.correction.model import save_corrector
    >>> d = tempfile.mkdtemp()
    >>> save_corrector(GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform()), d)
    >>> new = GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform())
    >>> report = corrector_init_from(d, new)  # doctest: +ELLIPSIS
    init_from ...: corrector: ... tensors loaded from ..., 0 new, 0 unused
    """
    from nass.inference import ModelLoadError, load_state_dict

    if checkpointer is not None and checkpointer.list_checkpoints():
        print(f"init_from {source}: ignored, resuming from this run's own checkpoint", flush=True)
        return None
    source = os.fspath(source)
    for path in (os.path.join(source, "corrector.ckpt"), os.path.join(source, "corrector", "corrector.ckpt")):
        if os.path.isfile(path):
            break
    else:
        raise ModelLoadError(
            f"init_from={source}: no corrector.ckpt there nor in {os.path.join(source, 'corrector')}. "
            "Give a corrector folder or the output folder of a GeCo / Fast-GeCo run."
        )
    report = copy_matching_weights(corrector.score_model, load_state_dict(path, device="cpu"))
    _report_init(source, path, "corrector", report)
    return report


#: Table of the corrector the run started from (GeCo weights for Fast-GeCo), one step.
INITIAL_ONE_STEP = "init-one-step"


def evaluate_correction(model, sample_rate, num_spks, manifest_csv, out_dir, corrector, modes,
                        initial=None, correction_steps=30, device="cpu", num_workers=2, save_examples=5,
                        pesq_estoi=False, max_utterances=None, seed=0):
    """Score the separator alone (identity), the starting corrector's one step, and the trained corrector.

    Tables (``out_dir``): ``test_metrics.csv`` (identity: the estimate unchanged),
    ``test_metrics_init-one-step.csv`` (``initial`` in Fast-GeCo mode: the one-step
    result before fine-tuning), ``test_metrics_<mode>.csv`` per mode, and
    ``correction_summary.csv``: the paired difference of each with the identity and its
    95 % interval (:func:`nass.correction.report.correction_summary`, which prints a
    ``WARNING`` when a corrector makes the estimates worse).

    Parameters
    ----------
    model : torch.nn.Module
        The separator.
    sample_rate, num_spks : int
    manifest_csv, out_dir : str
    corrector : nass.correction.GeCoModel
        The trained (exported) corrector.
    modes : list of str
        Keys of :data:`nass.correction.modes.CORRECTION_MODES` (``fast-geco`` and / or ``geco``).
    initial : nass.correction.GeCoModel, optional
        The corrector before training (the GeCo init for Fast-GeCo).
    correction_steps, device, num_workers, save_examples, pesq_estoi, max_utterances, seed
        As :func:`nass.evaluation.evaluate_with_correction`.

    Returns
    -------
    dict
        ``{"separator": means, "init-one-step": means, "<mode>": means, "summary": rows}``.
    """
    from nass.correction.modes import DEFAULT_MODE, get_mode
    from nass.correction.report import IDENTITY, correction_summary
    from nass.evaluation import evaluate_manifest
    from nass.inference import Separator

    modes = [get_mode(mode, "eval_correction_modes").name for mode in modes]  # unknown: fails before any scoring
    common = dict(num_spks=num_spks, sample_rate=int(sample_rate), num_workers=num_workers,
                  save_examples=save_examples, pesq_estoi=pesq_estoi, max_utterances=max_utterances)
    print(f"{IDENTITY}: the separator alone")
    plain = Separator(model, sample_rate, chunk_seconds=0, device=device)
    results = {"separator": evaluate_manifest(plain.separate_batch, manifest_csv, out_dir, **common)}
    runs = ([(INITIAL_ONE_STEP, initial, DEFAULT_MODE)] if initial is not None else []) + [
        (mode, corrector, mode) for mode in modes]
    tables = {}
    for name, corr, mode in runs:
        sep = Separator(model, sample_rate, chunk_seconds=0, device=device, corrector=corr.to(device).eval(),
                        correction_mode=mode, correction_steps=correction_steps)
        torch.manual_seed(seed)
        label = ("one step of the corrector before training (fine-tuning)" if name == INITIAL_ONE_STEP
                 else get_mode(mode).label(correction_steps))
        print(label)
        results[name] = evaluate_manifest(sep.separate_batch, manifest_csv, out_dir, csv_name=f"test_metrics_{name}.csv",
                                          examples_name=f"examples_{name}", **common)
        tables["one step before fine-tuning" if name == INITIAL_ONE_STEP else name] = f"test_metrics_{name}.csv"
    results["summary"] = correction_summary(out_dir, tables)
    return results


def run_correction(argv=None):
    """Train GeCo or Fast-GeCo on a separator's triplets, export it, evaluate before/after.

    Steps: parse ``train.py hparams.yaml --key=value``; DDP set-up under ``torchrun``;
    check the output folder; prepare the manifests; build the triplets
    (:func:`nass.correction.data.build_triplets`, rank 0); :class:`CorrectionBrain`
    ``fit`` (resumes from the last checkpoint); export the best (averaged) weights to
    ``<output_folder>/corrector`` (rank 0); on the test split (rank 0)
    :func:`evaluate_correction`: the separator alone (identity), one step of the
    corrector the run started from, and the trained corrector, with SI-SNR(i), SDR(i),
    PESQ-NB and ESTOI and the paired difference to the identity.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict or None
        :func:`evaluate_correction`'s dict on rank 0; None with ``test_split: null`` and
        on the other processes.
    """
    import sys

    from nass.brains.correction import CorrectionBrain
    from nass.correction.data import TripletDataset
    from nass.correction.model import load_corrector
    from nass.inference import load_separator

    argv = sys.argv[1:] if argv is None else argv
    hparams_file, run_opts, overrides, hparams = load_hparams(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    run_on_main(check_writable, args=[hparams["output_folder"]])
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    manifests, rows = build_correction_data(hparams)
    seed = int(require(hparams, "seed"))
    train = TripletDataset(rows["train"], hparams["sample_rate"], crop_samples=hparams["crop_samples"],
                           random_crop=True, epoch_size=require(hparams, "train_rows_per_epoch"), seed=seed)
    valid = TripletDataset(rows["valid"], hparams["sample_rate"], crop_samples=require(hparams, "valid_crop_samples"),
                           random_crop=False, seed=seed)
    if require(hparams, "init_from"):
        corrector_init_from(hparams["init_from"], hparams["corrector"], require(hparams, "checkpointer"))
    # the weights the run starts from (before any checkpoint is recovered): the
    # "one step before fine-tuning" row of the evaluation
    initial = copy.deepcopy(hparams["corrector"]).cpu() if require(hparams, "test_split") else None
    brain = CorrectionBrain(
        modules={"corrector": hparams["corrector"]},
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.train_set = train
    brain.fit(
        hparams["epoch_counter"], train, valid,
        train_loader_kwargs=dict(hparams["dataloader_opts"]),
        valid_loader_kwargs=dict(require(hparams, "valid_dataloader_opts")),
    )
    corrector_folder = os.path.join(hparams["output_folder"], "corrector")
    brain.export(corrector_folder)
    if not require(hparams, "test_split") or not if_main_process():
        return None
    device = brain.device
    model, sep_hparams = load_separator(hparams["separator_folder"], device=device)
    corrector = load_corrector(corrector_folder, device=device)
    modes = require(hparams, "eval_correction_modes") or [hparams["correction_mode"]]
    return evaluate_correction(
        model, int(sep_hparams["sample_rate"]), hparams["num_spks"], manifests[hparams["test_split"]],
        os.path.join(hparams["output_folder"], "test"), corrector, modes, initial=initial,
        correction_steps=require(hparams, "eval_steps"), device=device,
        num_workers=require(hparams, "eval_num_workers"), save_examples=require(hparams, "n_audio_to_save"),
        pesq_estoi=require(hparams, "eval_pesq_estoi"), max_utterances=require(hparams, "test_max_utterances"),
        seed=seed,
    )

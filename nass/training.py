"""The logic behind every ``recipes/*/separation/train.py``: parse, prepare, fit, evaluate.

A recipe's ``train.py`` is one line (``run_separation(sys.argv[1:])``), so LibriMix,
WHAM! and custom folders share one tested path:

1. ``speechbrain.parse_arguments``: ``train.py hparams.yaml --key=value ...``; an override
   naming a key that the YAML does not define fails (HyperPyYAML raises ``KeyError``).
2. The output folder is checked to be writable before anything else happens.
3. DDP set-up (``torchrun``), experiment folder, data preparation on the main process
   only (``run_on_main``), then every process reads the manifests.
4. ``SeparationBrain.fit`` with automatic resume from the last checkpoint.
5. On the main process: the best checkpoint (highest validation SI-SNR) is evaluated on
   the test split (``nass.evaluation.evaluate_manifest``): per-utterance CSV, means,
   separated examples, next to the checkpoints.
6. On the main process: ``<output_folder>/model``, the portable model folder
   (:mod:`nass.export`: model-only YAML, weights with SHA-256, JSON card with the test
   metrics), written atomically.
"""

import dataclasses
import logging
import os
import sys
import tempfile

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

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


def load_hparams(argv):
    """Parse the command line and load the YAML (overrides applied).

    Returns
    -------
    (str, dict, str, dict)
        ``hparams_file, run_opts, overrides, hparams``.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    # speechbrain 1.1.2's argument parser leaves --optimizer_step_limit as a string
    if isinstance(getattr(run_opts, "optimizer_step_limit", None), str):
        run_opts = dataclasses.replace(run_opts, optimizer_step_limit=int(run_opts.optimizer_step_limit))
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
    return hparams_file, run_opts, overrides, hparams


def prepare_manifests(hparams):
    """Run data preparation (main process) and return ``{split: csv}`` on every process."""
    from nass.dataio.prepare import prepare_dataset

    kwargs = dict(
        dataset=hparams["dataset"],
        data_folder=hparams["data_folder"],
        save_folder=hparams["save_folder"],
        num_spks=hparams["num_spks"],
        sample_rate=hparams["sample_rate"],
        mode=hparams.get("mode", "min"),
        mixture=hparams.get("mixture", "noisy"),
        splits=[hparams[k] for k in ("train_split", "valid_split", "test_split") if hparams.get(k)],
        skip_prep=hparams.get("skip_prep", False),
    )
    run_on_main(prepare_dataset, kwargs=kwargs)
    return prepare_dataset(**kwargs)  # reuses the manifests written on the main process


def build_datasets(hparams, manifests):
    """Train / valid / test datasets (dynamic mixing for train when enabled)."""
    from nass.dataio.manifest import read_manifest
    from nass.dataio.pipeline import make_dataset

    num_spks, rate = hparams["num_spks"], hparams["sample_rate"]
    rows = {
        k: read_manifest(manifests[hparams[f"{k}_split"]], num_spks) if hparams.get(f"{k}_split") else []
        for k in ("train", "valid", "test")
    }
    segment = int(hparams.get("training_signal_len", 0) or 0)
    if hparams.get("dynamic_mixing", False):
        from nass.dataio.dynamic_mixing import DynamicMixingDataset

        train = DynamicMixingDataset(
            rows["train"], num_spks, rate, segment_seconds=segment / rate, seed=hparams.get("seed", 0)
        )
    else:
        train = make_dataset(rows["train"], num_spks, rate, segment_samples=segment, seed=hparams.get("seed", 0))
    valid = make_dataset(rows["valid"], num_spks, rate, segment_samples=int(hparams.get("valid_signal_len", 0) or 0))
    test_rows = rows["test"]
    return train, valid, test_rows


def evaluate_best(brain, hparams, manifests):
    """Evaluate the best checkpoint on the test split; returns the mean metrics."""
    from nass.evaluation import evaluate_manifest

    if brain.checkpointer is not None:
        brain.checkpointer.recover_if_possible(max_key="si-snr")
    separator = brain._separator()
    separator.eval()

    def separate(mix):
        with torch.no_grad():
            out = separator(mix.to(brain.device))
        noise = None if out.est_noise is None else out.est_noise.cpu()
        return out.est_sources.cpu(), noise

    return evaluate_manifest(
        separate,
        manifests[hparams["test_split"]],
        hparams.get("eval_folder", os.path.join(hparams["output_folder"], "test")),
        num_spks=hparams["num_spks"],
        sample_rate=hparams["sample_rate"],
        num_workers=hparams.get("eval_num_workers", 2),
        save_examples=hparams.get("n_audio_to_save", 5),
        pesq_estoi=hparams.get("eval_pesq_estoi", False),
        sdr_backend=hparams.get("eval_sdr_backend", "mir_eval"),
        overwrite=True,  # the run's own test folder: a resumed or repeated run re-scores it
    )


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

    argv = sys.argv[1:] if argv is None else argv
    hparams_file, run_opts, overrides, hparams = load_hparams(argv)
    check_writable(hparams["output_folder"])
    sb.utils.distributed.ddp_init_group(run_opts)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    manifests = prepare_manifests(hparams)
    train, valid, test_rows = build_datasets(hparams, manifests)
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
    valid_kwargs = dict(hparams.get("valid_dataloader_opts", {"batch_size": 1}))
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

"""CorrectionBrain: training of the GeCo score model and its Fast-GeCo one-step fine-tuning.

Wang et al., "Noise-robust Speech Separation with Fast Generative Correction",
Interspeech 2024, arXiv 2406.07461; reference ``WangHelin1997/Fast-GeCo``.

``correction_mode: geco`` (reference ``geco/model.py``, ``train-geco.py``): denoising
score matching (:meth:`nass.correction.GeCoModel.dsm_loss_wave`) on random crops of
(mixture, estimate, reference) triplets, Adam (lr 1e-4), and an exponential moving
average of the weights (decay 0.999) updated after every optimiser step; the averaged
weights are used for validation and exported.

``correction_mode: fast-geco`` (reference ``fastgeco/model.py``, ``train-fastgeco.py``):
starts from a trained GeCo corrector (:func:`init_fast_geco`) and minimises the negative
SI-SNR of the one-step estimate from ``t = 0.5``
(:meth:`nass.correction.GeCoModel.fast_geco_loss`), lr 1e-5 at the reference size
(reference argparse default; its ``add_para`` lists 5e-5). The demo (tiny) YAMLs use
1e-3: at 1e-5 a tiny network barely moves in a CPU budget (issue 16: 80 steps,
-17.2 -> -15.5 dB).

Validation (the averaged weights, fixed random seed, whole dev utterances):

* fast-geco: the loss itself, i.e. ``-SI-SNR`` of the one-step correction, on every
  validation utterance;
* geco: the DSM loss on every validation utterance, and the SI-SNR of a
  ``valid_steps``-step predictor-corrector correction on the first
  ``valid_si_snr_utterances`` of them (sampling is expensive).

The checkpoint meta ``si-snr`` (dB, higher is better: corrected estimate vs reference)
selects the best checkpoint; :meth:`CorrectionBrain.export` writes it (averaged
weights) with :func:`nass.correction.save_corrector` to ``<output_folder>/corrector``,
which :func:`nass.correction.load_corrector` and ``nass-separate --corrector`` read.

YAML keys read here: ``correction_mode`` (geco | fast-geco), ``ema_decay``,
``valid_steps``, ``valid_si_snr_utterances``, ``valid_seed``, ``train_logger``,
``init_from`` (fine-tuning: :func:`corrector_init_from`), ``tensorboard``,
``plot_training_curves`` (:mod:`nass.curves`: one ``train_log.jsonl`` row per validation),
``epoch_counter``; modules: ``corrector`` (a :class:`nass.correction.GeCoModel`).

Several processes (``torchrun --nproc_per_node=N train.py ... --distributed_backend=gloo``
or ``nccl``): SpeechBrain wraps ``modules.corrector`` in ``DistributedDataParallel``; the
losses are computed by calling the *wrapper* (``GeCoModel.forward(y, m, x, objective)``
runs every score evaluation that is back-propagated), so gradients are averaged across
processes; the EMA, sampling and export use the unwrapped module (``.module``). Training
rows are split by SpeechBrain's ``DistributedSampler``; validation runs on every process
(same rows, same seed, hence the same best checkpoint); the triplet cache, logs,
checkpoints, the exported corrector and the test evaluation are written by rank 0 only
(``run_on_main`` / ``if_main_process``; the others wait at a barrier).
"""

import copy
import logging
import os

import speechbrain as sb
import torch
from speechbrain.utils.distributed import ddp_barrier, if_main_process, main_process_only, run_on_main

from nass.correction.ema import ExponentialMovingAverage
from nass.hparams import require
from nass.correction.model import MODES, load_corrector, save_corrector
from nass.losses.si_snr import si_snr

logger = logging.getLogger(__name__)


def init_fast_geco(geco_folder, reverse_start=0.5, fast_steps=1, device="cpu"):
    """The starting point of Fast-GeCo: a trained GeCo corrector in training mode.

    Parameters
    ----------
    geco_folder : str
        A corrector folder written by :func:`nass.correction.save_corrector` (e.g.
        ``<geco run>/corrector``) or a GeCo training output folder holding one in
        ``corrector/``.
    reverse_start : float
        Fast-GeCo's starting time (reference ``t_rsp_min = t_rsp_max = 0.5``).
    fast_steps : int
        Reverse steps (reference: 1).
    device : str

    Returns
    -------
    nass.correction.GeCoModel
        Weights, SDE and transform of the GeCo folder; ``reverse_start`` and
        ``fast_steps`` set; ``train()`` mode.

    Raises
    ------
    ValueError
        Not a corrector folder, or ``reverse_start`` / ``fast_steps`` out of range.

    Example
    -------
    >>> import tempfile
    >>> from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform
    >>> d = tempfile.mkdtemp()
    >>> save_corrector(GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform()), d)
    >>> m = init_fast_geco(d, reverse_start=0.4)
    >>> m.reverse_start, m.training
    (0.4, True)
    """
    folder = os.fspath(geco_folder)
    if not os.path.isfile(os.path.join(folder, "corrector.json")) and os.path.isfile(
        os.path.join(folder, "corrector", "corrector.json")
    ):
        folder = os.path.join(folder, "corrector")
    model = load_corrector(folder, device=device)
    sde = model.sde
    if not sde.t_eps <= float(reverse_start) <= sde.T:
        raise ValueError(f"init_fast_geco: reverse_start must be in [{sde.t_eps}, {sde.T}], got {reverse_start}")
    if int(fast_steps) < 1:
        raise ValueError(f"init_fast_geco: fast_steps must be >= 1, got {fast_steps}")
    model.reverse_start = float(reverse_start)
    model.fast_steps = int(fast_steps)
    return model.train()


def select_sde(sde, bbed, ouve):
    """The forward process named by the YAML choice key ``sde: bbed | ouve``.

    Parameters
    ----------
    sde : str
        ``"bbed"`` (GeCo's Brownian bridge with exploding diffusion) or ``"ouve"``.
    bbed, ouve : dict
        Constructor arguments of :class:`nass.correction.BBEDSDE` /
        :class:`nass.correction.OUVESDE`; only the chosen one is used.

    Returns
    -------
    nass.correction.SDE

    Raises
    ------
    ValueError
        Unknown name (the valid names are listed).
    TypeError
        A misspelt parameter key.

    Example
    -------
    >>> select_sde("bbed", {"k": 2.6, "theta": 0.52, "N": 30}, {"gamma": 1.5}).config()["name"]
    'bbed'
    """
    from nass.correction.sdes import get_sde

    params = {"bbed": bbed, "ouve": ouve}.get(str(sde).lower())
    return get_sde(sde, **(params or {}))


class CorrectionBrain(sb.core.Brain):
    """Train a :class:`nass.correction.GeCoModel` held in ``modules.corrector``.

    Batches are dicts ``{"id", "mix", "est", "ref"}`` of ``[batch, time]`` tensors
    (:class:`nass.correction.data.TripletDataset` with the default collate).

    Example
    -------
    See ``tests/test_correction_recipe.py`` and ``recipes/*/correction/train.py``.
    """

    # ------------------------------------------------------------------ set-up
    def _corrector(self):
        c = self.modules.corrector
        return c.module if hasattr(c, "module") else c

    def _mode(self):
        mode = require(self.hparams, "correction_mode")
        if mode not in MODES:
            raise ValueError(f"correction_mode must be one of {', '.join(MODES)}, got {mode!r}")
        return mode

    def on_fit_start(self):
        """SpeechBrain's start (compile, DDP wrapping, optimiser, resume; ``Brain.on_fit_start``
        of SpeechBrain 1.1.2), with the EMA created between wrapping and resuming: after
        DDP has broadcast rank 0's weights (so every process averages the same ones) and
        before the checkpoint that holds it is loaded."""
        self._mode()
        self._compile()
        self._wrap_distributed()
        self.init_optimizers()
        self._ensure_ema()
        if self.checkpointer is not None:
            self.checkpointer.recover_if_possible()

    def _ensure_ema(self):
        if getattr(self, "ema", None) is not None:
            return
        self.ema = ExponentialMovingAverage(
            self._corrector().score_model.parameters(), decay=require(self.hparams, "ema_decay")
        )
        if self.checkpointer is not None and "ema" not in self.checkpointer.recoverables:
            self.checkpointer.add_recoverable(
                "ema", self.ema, custom_save_hook=_save_ema, custom_load_hook=_load_ema
            )

    # ------------------------------------------------------------------ losses
    def compute_forward(self, batch, stage):
        """Move the batch to the device; returns ``(est, mix, ref)`` ``[batch, time]``."""
        return tuple(batch[k].to(self.device) for k in ("est", "mix", "ref"))

    def compute_objectives(self, predictions, batch, stage):
        """DSM loss (geco) or ``-SI-SNR`` of the one-step estimate (fast-geco)."""
        est, mix, ref = predictions
        # through the (possibly DDP-wrapped) module: its forward computes the loss
        objective = "dsm" if self._mode() == "geco" else "fast-geco"
        loss = self.modules.corrector(est, mix, ref, objective=objective)
        if stage != sb.Stage.TRAIN:
            self._record_valid(loss, est, mix, ref)
        return loss

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Update the moving average after each optimiser step (reference: ``optimizer_step``)."""
        if should_step:
            self.ema.update(self._corrector().score_model.parameters())

    # ------------------------------------------------------------------ validation
    def evaluate_batch(self, batch, stage):
        """Validation of one batch with a seed fixed per batch (comparable across epochs)."""
        seed = int(require(self.hparams, "valid_seed")) + self._valid_batches
        self._valid_batches += 1
        with torch.random.fork_rng(devices=[self.device] if "cuda" in str(self.device) else []):
            torch.manual_seed(seed)
            return super().evaluate_batch(batch, stage)

    def _record_valid(self, loss, est, mix, ref):
        stats = self._stats
        stats["loss"].append(float(loss))
        stats["est_si-snr"] += si_snr(est, ref).tolist()
        if self._mode() == "fast-geco":
            # the loss is the mean -SI-SNR of the one-step correction (scale-invariant)
            stats["si-snr"] += [-float(loss)] * est.shape[0]
        elif len(stats["si-snr"]) < int(require(self.hparams, "valid_si_snr_utterances")):
            corrected = self._corrector().correct(
                est, mix, mode="geco", num_steps=int(require(self.hparams, "valid_steps"))
            )
            stats["si-snr"] += si_snr(corrected, ref).tolist()

    def on_stage_start(self, stage, epoch=None):
        """Training: select the epoch's rows. Validation: swap in the averaged weights."""
        self._stats = {"loss": [], "si-snr": [], "est_si-snr": []}
        self._valid_batches = 0
        if stage == sb.Stage.TRAIN:
            train_set = getattr(self, "train_set", None)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
        else:
            self._ensure_ema()
            params = list(self._corrector().score_model.parameters())
            self.ema.store(params)
            self.ema.copy_to(params)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Restore the training weights, log, and keep the best checkpoint by corrected SI-SNR."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": float(stage_loss)}
            return
        self.ema.restore(list(self._corrector().score_model.parameters()))
        mean = lambda v: float(sum(v) / len(v)) if v else float("nan")  # noqa: E731
        stats = {
            "loss": float(stage_loss),
            "si-snr": mean(self._stats["si-snr"]),
            "est_si-snr": mean(self._stats["est_si-snr"][: len(self._stats["si-snr"])]),
        }
        stats["si-snr_gain"] = stats["si-snr"] - stats["est_si-snr"]
        self.last_stats = stats
        if stage != sb.Stage.VALID:
            return
        meta = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "optimizer_step": self.optimizer_step}
        if require(self.hparams, "train_logger") is not None:
            self.hparams.train_logger.log_stats(
                stats_meta=meta, train_stats=getattr(self, "train_stats", None), valid_stats=stats
            )
        self._log_json(meta, stats)
        if self.checkpointer is not None:
            score = stats["si-snr"] if stats["si-snr"] == stats["si-snr"] else -float(stage_loss)
            self.checkpointer.save_and_keep_only(
                meta={"si-snr": score, "loss": float(stage_loss), "epoch": epoch},
                max_keys=["si-snr"], num_to_keep=1,
            )

    @main_process_only
    def _log_json(self, meta, stats):
        """One row per validation in ``<output_folder>/train_log.jsonl`` (TensorBoard with
        ``tensorboard: True``), and ``training_curves.png`` redrawn (``plot_training_curves: True``)."""
        from nass.curves import TensorBoardLog, append_train_log, redraw_training_curves

        folder = require(self.hparams, "output_folder")
        if folder is None:
            return
        if require(self.hparams, "tensorboard") and getattr(self, "_tensorboard", None) is None:
            self._tensorboard = TensorBoardLog(os.path.join(folder, "tensorboard"))
        append_train_log(folder, {**meta, "train": getattr(self, "train_stats", None), "valid": stats},
                         getattr(self, "_tensorboard", None))
        if require(self.hparams, "plot_training_curves"):
            redraw_training_curves(folder)

    # ------------------------------------------------------------------ export
    def export(self, folder):
        """Load the best checkpoint and write its averaged weights as a corrector folder.

        Parameters
        ----------
        folder : str
            Destination (``corrector.json``, ``corrector.ckpt``, ``model_card.json``; written as a whole).

        Returns
        -------
        str
            ``folder``.

        Under DDP every process loads the checkpoint, rank 0 writes, the others wait.
        """
        self._ensure_ema()
        if self.checkpointer is not None:
            self.checkpointer.recover_if_possible(max_key="si-snr")
        if if_main_process():
            save_corrector(self._corrector(), folder, ema=self.ema)
            logger.info("exported the corrector to %s", folder)
        ddp_barrier()
        return folder


@main_process_only
def _save_ema(ema, path):
    torch.save(ema.state_dict(), path)


def _load_ema(ema, path, end_of_epoch=True):
    del end_of_epoch
    ema.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


# ---------------------------------------------------------------------------- recipe runner
def build_correction_data(hparams):
    """Prepare the manifests and build (or reuse) the triplets of the train and valid splits.

    The triplets are built on the main process only (``run_on_main``), then read everywhere.

    Returns
    -------
    (dict, dict)
        ``{split: manifest_csv}`` and ``{"train": rows, "valid": rows}``.
    """
    from nass.correction.data import build_triplets, read_triplets
    from nass.training import prepare_manifests

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
        are copied (:func:`nass.training.copy_matching_weights`), the others are listed
        by name. The optimiser, the moving average and the schedule start fresh.
    checkpointer : speechbrain.utils.checkpoints.Checkpointer, optional
        When it holds a checkpoint of this run, nothing is done (the run resumes).

    Returns
    -------
    dict or None
        The report of :func:`nass.training.copy_matching_weights`, None when resuming.

    Raises
    ------
    nass.inference.ModelLoadError
        No ``corrector.ckpt`` in ``source`` (or ``source/corrector``), or not a plain state_dict.

    Example
    -------
    >>> import tempfile
    >>> from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform
    >>> d = tempfile.mkdtemp()
    >>> save_corrector(GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform()), d)
    >>> new = GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform())
    >>> report = corrector_init_from(d, new)  # doctest: +ELLIPSIS
    init_from ...: corrector: ... tensors loaded from ..., 0 new, 0 unused
    """
    from nass.inference import ModelLoadError, load_state_dict
    from nass.training import _report_init, copy_matching_weights

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
        ``fast-geco`` and / or ``geco``.
    initial : nass.correction.GeCoModel, optional
        The corrector before training (the GeCo init for Fast-GeCo).
    correction_steps, device, num_workers, save_examples, pesq_estoi, max_utterances, seed
        As :func:`nass.evaluation.evaluate_with_correction`.

    Returns
    -------
    dict
        ``{"separator": means, "init-one-step": means, "<mode>": means, "summary": rows}``.
    """
    from nass.correction.report import IDENTITY, correction_summary
    from nass.evaluation import evaluate_manifest
    from nass.inference import Separator

    common = dict(num_spks=num_spks, sample_rate=int(sample_rate), num_workers=num_workers,
                  save_examples=save_examples, pesq_estoi=pesq_estoi, max_utterances=max_utterances)
    print(f"{IDENTITY}: the separator alone")
    plain = Separator(model, sample_rate, chunk_seconds=0, device=device)
    results = {"separator": evaluate_manifest(plain.separate_batch, manifest_csv, out_dir, **common)}
    runs = ([(INITIAL_ONE_STEP, initial, "fast-geco")] if initial is not None else []) + [
        (mode, corrector, mode) for mode in modes]
    tables = {}
    for name, corr, mode in runs:
        sep = Separator(model, sample_rate, chunk_seconds=0, device=device, corrector=corr.to(device).eval(),
                        correction_mode=mode, correction_steps=correction_steps)
        torch.manual_seed(seed)
        label = ("one step of the corrector before training (fine-tuning)" if name == INITIAL_ONE_STEP
                 else f"after {mode} correction" + (f" (N={correction_steps})" if mode == "geco" else " (one step)"))
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

    from nass.correction.data import TripletDataset
    from nass.inference import load_separator
    from nass.training import check_writable, load_hparams

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

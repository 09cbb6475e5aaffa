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
``init_from`` (fine-tuning: :func:`nass.runner.corrector_init_from`), ``tensorboard``,
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

import logging
import os

import speechbrain as sb
import torch
from speechbrain.utils.distributed import ddp_barrier, if_main_process, main_process_only

from nass.correction.ema import ExponentialMovingAverage
from nass.correction.model import load_corrector, save_corrector
from nass.correction.modes import get_mode
from nass.hparams import require
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
        """The :class:`nass.correction.modes.CorrectionMode` of YAML ``correction_mode``."""
        return get_mode(require(self.hparams, "correction_mode"), "correction_mode")

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
        """The mode's training objective: DSM loss (geco) or ``-SI-SNR`` of the one-step estimate (fast-geco)."""
        est, mix, ref = predictions
        # through the (possibly DDP-wrapped) module: its forward computes the loss
        loss = self.modules.corrector(est, mix, ref, objective=self._mode().objective)
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
        mode = self._mode()
        if mode.loss_is_corrected_si_snr:
            # the loss is the mean -SI-SNR of the corrected estimate (scale-invariant)
            stats["si-snr"] += [-float(loss)] * est.shape[0]
        elif len(stats["si-snr"]) < int(require(self.hparams, "valid_si_snr_utterances")):
            corrected = self._corrector().correct(
                est, mix, mode=mode.name, num_steps=int(require(self.hparams, "valid_steps"))
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

"""SeparationBrain: training and validation of any separator with the loss terms of the YAML.

The Brain knows no method: it runs a separator that follows
:class:`nass.separation.SeparationModel` on a :class:`nass.separation.SeparationBatch` and
sums the YAML's ``loss_terms`` (:mod:`nass.losses.terms`), with per-term statistics keyed
by the names the terms give. The methods are terms:

- :class:`~nass.losses.terms.SpeakerPIT`: PIT separation (negative SI-SNR, speakers
  permuted per utterance);
- :class:`~nass.losses.terms.NoiseSISNR`: the noise estimate scored against the noise
  reference, weight ``noise_loss_weight`` (NASS, Zhang et al. ICASSP 2024);
- :class:`~nass.losses.terms.PatchNCE`: the NASS patch-wise contrastive loss
  (:mod:`nass.losses.patch_nce`), weight ``lambda_nce``;
- :class:`~nass.losses.terms.Enhancement`: the unified SE+SS loss (Hu et al. ICASSP 2023),
  weight ``se_loss_weight``; ``backward: gradient_modulation`` projects its gradient
  (:mod:`nass.losses.gradient_modulation`). ``se_loss_type: mse`` is the paper's
  ``sum((enhanced_w - Encoder(mix_clean))^2)`` (per utterance); it grows with the square of
  the encoder's scale while the SI-SNR separation loss is blind to it, so part of its
  gradient only shrinks the encoder (cos(g_SE, W_encoder) = +0.50 on demo batches,
  ``bench/unified_se_gradients.py``).
  ``se_loss_type: neg_snr`` is the scale-invariant alternative: the negative SNR (dB) of
  ``enhanced_w`` against ``Encoder(mix_clean)``, ``10 log10(||e - t||^2 / ||t||^2)``,
  whose gradient is orthogonal to a bias-free encoder's weights.

A configuration that cannot work (a term needing an output the separator does not give,
PatchNCE without a trained sampler, gradient modulation without an enhancer) fails when the
Brain is built (:func:`nass.losses.terms.check_hparams`), naming the YAML keys.

Training objective and the quantities fed to the schedule (as the references,
``TzuchengChang/NASS`` and SpeechBrain's LibriMix ``train.py``): per utterance the
separation loss is the weighted sum of the per-utterance terms (``PIT speakers +
noise_loss_weight * noise``, ``-SI-SNR``, dB); ``threshold_byloss`` drops utterances whose
separation loss is already below ``threshold``; then the other weighted terms (PatchNCE,
SE) are added. The LR scheduler and the best checkpoint see the *validation separation
loss* (the per-utterance terms only, as the references' ``evaluate_batch``).

Learning-rate schedulers (``lr_scheduler``): SpeechBrain's epoch schedulers
(``ReduceLROnPlateau``, ``NewBobScheduler``, ``StepScheduler``, ``LinearScheduler``) return
the next rate, which is *applied* here with ``sb.nnet.schedulers.update_learning_rate``
at the end of each validation; per-step schedulers taking the optimizer
(``NoamScheduler``, ``LinearWarmupScheduler``, ...) are called after every optimiser step.
Any other object fails at the first fit with the supported list.

Modules are always called through ``self.modules`` so the DDP wrapper is used under
``torchrun`` (terms that own a module get the wrapped one through ``LossTerm.bind``).
YAML keys read here: ``num_spks``, ``loss_terms``, ``backward`` (plain |
gradient_modulation), ``mixture`` (noisy | clean), ``threshold_byloss``, ``threshold``,
``speed_perturb`` (a ``speechbrain.augment.time_domain.SpeedPerturb`` or null),
``speed_perturb_noise``, ``source_augment`` (null, or a callable applied to each speaker's
``[batch, time]`` waveform in training before re-mixing, e.g. :class:`nass.dataio.augment.RandomShelfEQ`),
``lr_scheduler``,
``log_interval_steps``, ``epoch_counter``, ``train_logger``, ``output_folder``,
``tensorboard`` (event files in ``<output_folder>/tensorboard``, :class:`nass.curves.TensorBoardLog`),
``plot_training_curves`` (``<output_folder>/training_curves.png`` at every validation,
:func:`nass.curves.plot_training_curves`).

Health of each term: every epoch's training and validation statistics are logged with
their reference values -- ``si-snr_input`` / ``noise_si-snr_input`` (the mixture used as the
estimate), ``nce`` (unweighted InfoNCE, nats) with ``nce_chance`` (``ln K``, a query
unrelated to every key), ``se_loss`` with ``se_identity`` (the SE loss of an enhancer that
passes the mixture unchanged), ``gm_conflict_fraction`` and the applied ``lr`` -- in
``train_log.txt`` and, one JSON object per epoch, in ``<output_folder>/train_log.jsonl``;
with ``log_interval_steps: N`` the running training statistics are also appended there every
``N`` optimiser steps.

With gradient modulation, every step's statistics (shared tensors, how many conflicted,
the fraction, the mean cosine between g_SE and g_SS) are appended to
``<output_folder>/gm_stats.csv``, and the epoch mean of the conflict fraction is in the
training log (``gm_conflict_fraction``).
"""

import dataclasses
import inspect
import json
import logging
import os
import re
import time

import speechbrain as sb
import torch

from nass.hparams import require, resolve_auto_precision_in
from nass.losses.terms import check_hparams, check_loss_terms
from nass.separation import SeparationBatch

logger = logging.getLogger(__name__)

# SpeechBrain schedulers by the arguments of their __call__
EPOCH_SCHEDULER_ARGS = {
    ("optim_list", "current_epoch", "current_loss"): "plateau",  # ReduceLROnPlateau
    ("metric_value",): "metric",  # NewBobScheduler
    ("current_epoch",): "epoch",  # StepScheduler, LinearScheduler
}
STEP_SCHEDULER_ARGS = {("opt",): "step", ("opt", "num_updates"): "step_count"}


_EPOCH_LINE = re.compile(r"^epoch: (\d+),")


def prune_epoch_logs(paths, last_epoch):
    """Drop the log lines of epochs after ``last_epoch`` (the last one the recovered checkpoint holds).

    An epoch is logged at its end, just before its checkpoint is written; a run killed
    during that write redoes the epoch on resume and would log it a second time. On resume
    the lines of epochs the checkpoint does not hold are removed (atomically, with a
    warning), so every epoch appears once, with the values of the run that was kept.

    Parameters
    ----------
    paths : list of str
        ``train_log.txt`` (SpeechBrain's ``FileTrainLogger``: lines ``epoch: N, ...``) and
        ``train_log.jsonl`` (one JSON object with ``"epoch"`` per line); missing files are skipped.
    last_epoch : int
        The recovered epoch counter (0 without checkpoint).

    Returns
    -------
    int
        Lines removed.

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "train_log.txt")
    >>> _ = open(p, "w").write("epoch: 1, lr: 1 - valid si-snr: 2\\nepoch: 2, lr: 1 - valid si-snr: 3\\n")
    >>> prune_epoch_logs([p], last_epoch=1), open(p).read()
    (1, 'epoch: 1, lr: 1 - valid si-snr: 2\\n')
    """
    from nass.dataio.audio import atomic_write

    removed = 0
    for path in paths:
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
        keep = []
        for line in lines:
            epoch = None
            m = _EPOCH_LINE.match(line)
            if m:
                epoch = int(m.group(1))
            elif line.lstrip().startswith("{"):
                try:
                    epoch = int(json.loads(line).get("epoch"))
                except (ValueError, TypeError, AttributeError):
                    epoch = None
            if epoch is not None and epoch > last_epoch:
                continue
            keep.append(line)
        if len(keep) != len(lines):
            with atomic_write(path) as tmp:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.writelines(keep)
            logger.warning("%s: removed %d line(s) of epochs after %d, which no checkpoint holds (the run was "
                           "interrupted before their checkpoint was complete; they are redone)",
                           path, len(lines) - len(keep), last_epoch)
            removed += len(lines) - len(keep)
    return removed


def scheduler_kind(scheduler):
    """How a SpeechBrain learning-rate scheduler is driven: ``"plateau"``, ``"metric"``,
    ``"epoch"`` (epoch end, returns the next rate), ``"step"`` / ``"step_count"`` (after
    every optimiser step, updates the optimizer itself) or None (no scheduler).

    Parameters
    ----------
    scheduler : object or None
        The YAML's ``lr_scheduler``; told apart by the arguments of its ``__call__``
        (``speechbrain.nnet.schedulers``, SpeechBrain 1.1.2).

    Returns
    -------
    str or None

    Raises
    ------
    ValueError
        For an object whose ``__call__`` matches none of these, naming the supported ones.

    Example
    -------
    >>> from speechbrain.nnet.schedulers import ReduceLROnPlateau, NoamScheduler
    >>> scheduler_kind(ReduceLROnPlateau()), scheduler_kind(NoamScheduler(1e-3, 10)), scheduler_kind(None)
    ('plateau', 'step', None)
    """
    if scheduler is None:
        return None
    try:
        args = tuple(inspect.signature(type(scheduler).__call__).parameters)[1:]  # without self
    except (TypeError, ValueError):
        args = ()
    kind = EPOCH_SCHEDULER_ARGS.get(args) or STEP_SCHEDULER_ARGS.get(args)
    if kind is None:
        raise ValueError(
            f"lr_scheduler: {type(scheduler).__name__} is not a supported scheduler (its __call__ takes "
            f"{args}). Use a speechbrain.nnet.schedulers epoch scheduler (ReduceLROnPlateau, "
            "NewBobScheduler, StepScheduler, LinearScheduler) or a per-step one taking the optimizer "
            "(NoamScheduler, LinearWarmupScheduler, ...), or lr_scheduler: null."
        )
    return kind


class SeparationBrain(sb.core.Brain):
    """Train / validate a :class:`nass.separation.SeparationModel` held in ``modules.separator``.

    Batches are ``PaddedBatch`` es of :func:`nass.separation.make_item` items
    (:func:`nass.dataio.pipeline.make_dataset` or dynamic mixing), read once into a
    :class:`nass.separation.SeparationBatch`.

    Non-finite losses: the batch is skipped (no backward, no step), counted, and its
    utterance IDs are logged; more than ``nonfinite_patience`` such batches in one epoch
    stop the run with a ``ValueError`` (the last complete checkpoint is kept).

    Example
    -------
    See ``tests/test_separation_brain.py`` and ``recipes/*/separation/train.py``.
    """

    def __init__(self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None):
        # ``precision: auto`` in a YAML built without nass.runner.load_hparams
        resolve_auto_precision_in(hparams, run_opts)
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        # a configuration that cannot work (a term without the output it needs) fails here,
        # before any data is read
        check_hparams({**vars(self.hparams), "separator": self.modules.separator, "modules": self.modules})

    # ------------------------------------------------------------------ set-up
    def on_fit_start(self):
        """Check the method options, recover the last checkpoint, drop log lines of epochs it lacks."""
        self._check_config()
        super().on_fit_start()  # wraps the modules in DDP under torchrun
        for term in self.hparams.loss_terms:
            term.bind(self.modules)  # terms call their modules through the wrapper
        counter = (self.checkpointer.recoverables.get("counter") if self.checkpointer is not None else None)
        if counter is not None and sb.utils.distributed.if_main_process():
            folder = require(self.hparams, "output_folder")
            logger_ = require(self.hparams, "train_logger")
            paths = [getattr(logger_, "save_file", None)] + ([os.path.join(folder, "train_log.jsonl")] if folder else [])
            prune_epoch_logs([p for p in paths if p], int(getattr(counter, "current", 0)))
        self._fit_start_time = time.time()

    def _check_config(self):
        """The loss terms against the separator contract (:func:`nass.losses.terms.check_loss_terms`)."""
        hp = self.hparams
        check_loss_terms(hp.loss_terms, self.separator(), hp.backward, self.modules)
        self._scheduler_kind = scheduler_kind(hp.lr_scheduler)

    def separator(self):
        """The separator being trained (:class:`nass.separation.SeparationModel`), unwrapped.

        ``modules.separator`` itself, or the module inside SpeechBrain's
        ``DistributedDataParallel`` / ``DataParallel`` wrapper: what the runner evaluates
        and exports and what the loss-term checks read. Calling it does not switch
        train / eval mode.

        Returns
        -------
        torch.nn.Module
        """
        sep = self.modules.separator
        return sep.module if hasattr(sep, "module") else sep

    def _separator(self):
        """Old name of :meth:`separator` (kept for scripts that call it)."""
        return self.separator()

    # ------------------------------------------------------------------ forward
    def compute_forward(self, batch, stage):
        """Run the separator; in training, apply speed perturbation and re-mix first.

        Returns
        -------
        (SeparationOutput, SeparationBatch)
            The model output and the (possibly perturbed) batch it was computed from.
        """
        batch = batch.to(self.device)
        refs = SeparationBatch.from_padded(batch, self.hparams.num_spks)
        if stage == sb.Stage.TRAIN and self.hparams.speed_perturb is not None:
            refs = self._speed_perturb(refs)
        if stage == sb.Stage.TRAIN and self.hparams.source_augment is not None:
            refs = self._augment_sources(refs)
        out = self.modules.separator(refs.mix)
        return out, refs

    def _speed_perturb(self, refs):
        """Speed-perturb every source independently, crop, and re-mix.

        As SpeechBrain's LibriMix recipe (``add_speed_perturb``) and the NASS and GM
        references: each *source* gets its own random speed from ``SpeedPerturb.speeds``
        (95/100/105 % by default; SpeechBrain draws one speed per call, i.e. per batch and
        source) and the noise is added unperturbed. ``speed_perturb_noise: True`` (our
        option, in no reference) perturbs the noise too, with its own speed.
        """
        num_spks = refs.num_spks
        parts = [self.hparams.speed_perturb(refs.sources[..., i]) for i in range(num_spks)]
        noise = refs.noise
        if self.hparams.speed_perturb_noise:
            noise = self.hparams.speed_perturb(noise)
        length = min(min(p.shape[-1] for p in parts), noise.shape[-1])
        sources = torch.stack([p[:, :length] for p in parts], dim=-1)
        return self._remix(refs, sources, noise[:, :length])

    def _augment_sources(self, refs):
        """Apply ``source_augment`` (e.g. :class:`nass.dataio.augment.RandomShelfEQ`) to
        every speaker's waveform independently and re-mix; the noise is left as it is."""
        sources = torch.stack(
            [self.hparams.source_augment(refs.sources[..., i]) for i in range(refs.num_spks)], dim=-1)
        return self._remix(refs, sources, refs.noise)

    def _remix(self, refs, sources, noise):
        """``refs`` with new ``sources`` ``[batch, time, num_spks]`` and ``noise``
        ``[batch, time]``, its mixtures rebuilt from them (``mixture: noisy`` adds the noise)."""
        mix_clean = sources.sum(-1)
        mix = mix_clean + noise if self.hparams.mixture == "noisy" else mix_clean
        return dataclasses.replace(refs, mix=mix, sources=sources, noise=noise, mix_clean=mix_clean)

    # ------------------------------------------------------------------ losses
    def compute_losses(self, predictions, stage):
        """Every term of ``loss_terms`` on one batch, combined as :mod:`nass.losses.terms` says.

        Returns
        -------
        dict
            ``ss`` (training objective of the ``"ss"`` terms: the thresholded separation
            loss + the other weighted ``"ss"`` terms; scalar), ``se`` (weighted sum of the
            ``"se"`` terms, scalar, or None without one), ``separation`` (batch mean of the
            weighted per-utterance terms, no threshold: what validation reports and the LR
            schedule sees), ``values`` (``{term name: unweighted loss}``; ``[B]`` for
            per-utterance terms; train-only terms are absent outside training), ``stats``
            (``{stat key: float}`` of every term computed), ``shared`` (e.g. ``perm``
            ``[B, num_spks]``) and ``batch`` (the :class:`SeparationBatch` used).
        """
        out, refs = predictions
        hp = self.hparams
        shared, values, stats = {}, {}, {}
        for term in hp.loss_terms:
            if term.train_only and stage != sb.Stage.TRAIN:
                continue
            loss, term_stats = term(out, refs, shared)
            values[term.name] = loss
            for key, value in term_stats.items():
                if key in stats:
                    raise ValueError(f"loss_terms: two terms log the statistic {key!r}; rename one")
                stats[key] = value
        separation = None
        ss = se = None
        for term in hp.loss_terms:
            if term.name not in values:
                continue
            if term.per_utterance:
                part = term.weight * values[term.name]
                separation = part if separation is None else separation + part
        kept = separation
        if separation is not None and stage == sb.Stage.TRAIN and hp.threshold_byloss:
            # references: drop utterances whose loss is already better than `threshold` dB
            # (written so that a NaN loss is kept: the batch is then skipped as non-finite,
            # never silently dropped by the threshold)
            mask = ~(separation <= hp.threshold)
            kept = separation[mask] if mask.any() else separation
        if kept is not None:
            ss = kept.mean()
        for term in hp.loss_terms:
            if term.name not in values or term.per_utterance:
                continue
            part = term.weight * values[term.name]
            if term.task == "se":
                se = part if se is None else se + part
            else:
                ss = part if ss is None else ss + part
        return {
            "ss": ss,
            "se": se,
            "separation": separation.mean() if separation is not None else ss,
            "values": values,
            "stats": stats,
            "shared": shared,
            "batch": refs,
        }

    def compute_objectives(self, predictions, batch, stage):
        """Total loss ``ss + se`` (training) or ``separation`` (validation)."""
        losses = self.compute_losses(predictions, stage)
        self._record(losses)
        if stage != sb.Stage.TRAIN:
            # as the references' evaluate_batch: the separation loss alone drives the LR
            # schedule and the choice of the best checkpoint
            return losses["separation"]
        return self._total(losses)

    @staticmethod
    def _total(losses):
        return losses["ss"] if losses["se"] is None else losses["ss"] + losses["se"]

    # ------------------------------------------------------------------ training step
    def fit_batch(self, batch):
        """One optimisation step; the ``backward`` rule and non-finite skipping included."""
        should_step = (self.step % self.grad_accumulation_factor) == 0
        self.on_fit_batch_start(batch, should_step)
        gm = self.hparams.backward == "gradient_modulation"
        with self.no_sync(not should_step):
            with self.training_ctx:
                predictions = self.compute_forward(batch, sb.Stage.TRAIN)
                losses = self.compute_losses(predictions, sb.Stage.TRAIN)
            self._record(losses)
            total = self._total(losses)
            if not self._finite_on_every_process(total):
                self._skip_nonfinite(batch)
                return total.detach().cpu()
            factor = self.grad_accumulation_factor
            if gm:
                from nass.losses.gradient_modulation import modulated_backward

                stats = modulated_backward(
                    self.scaler.scale(losses["ss"] / factor),
                    self.scaler.scale(losses["se"] / factor),  # already weighted
                    self.separator().enhancement_shared_parameters(),
                    weight_se=1.0,
                    grad_scale=self.scaler.get_scale() if self.scaler.is_enabled() else None,
                )
                self._gm_stats.append(stats["conflict_fraction"])
                self._log_gm_step(stats)
            else:
                self.scaler.scale(total / factor).backward()
        if should_step:
            self.optimizers_step()
            self._step_scheduler()
            self._log_running_stats(float(total.detach()))
        self.on_fit_batch_end(batch, predictions, total, should_step)
        return total.detach().cpu()

    def _log_running_stats(self, batch_loss):
        """Every ``log_interval_steps`` optimiser steps, the epoch's running term statistics
        go to ``train_log.jsonl`` (``{"optimizer_step", "epoch_step", "lr", "train_running"}``),
        so a term that does not learn shows within the first epoch. ``loss`` is the epoch's
        running mean of the total loss including this batch (SpeechBrain's ``avg_train_loss``
        holds the batches before it: it is updated after ``fit_batch`` returns)."""
        interval = int(require(self.hparams, "log_interval_steps") or 0)
        if interval <= 0 or self.optimizer_step % interval != 0:
            return
        self._write_jsonl(
            {
                "optimizer_step": self.optimizer_step,
                "epoch_step": self.step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "train_running": self._stage_stats(
                    self.avg_train_loss + (batch_loss - self.avg_train_loss) / max(self.step, 1)
                ),
            }
        )

    def _step_scheduler(self):
        """Per-step schedulers (``NoamScheduler`` etc.) update the optimizer themselves."""
        kind = getattr(self, "_scheduler_kind", None)
        if kind == "step":
            self.hparams.lr_scheduler(self.optimizer)
        elif kind == "step_count":
            self.hparams.lr_scheduler(self.optimizer, self.optimizer_step)

    @staticmethod
    def _finite_on_every_process(loss):
        """Whether ``loss`` is finite on every process (one ``all_reduce`` under ``torchrun``).

        Under DDP a batch is skipped on every rank when it is non-finite on any rank: a
        rank that skipped its backward pass while the others ran theirs would leave DDP's
        gradient all-reduce unmatched (gloo aborts with a collective mismatch; NCCL can hang).

        Parameters
        ----------
        loss : torch.Tensor
            Scalar loss of this process's batch.

        Returns
        -------
        bool

        Example
        -------
        >>> SeparationBrain._finite_on_every_process(torch.tensor(1.0))
        True
        >>> SeparationBrain._finite_on_every_process(torch.tensor(float("nan")))
        False
        """
        finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
        if sb.utils.distributed.is_distributed_initialized():
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        return bool(finite.item())

    def _log_gm_step(self, stats):
        """Append this step's modulation statistics to ``<output_folder>/gm_stats.csv``."""
        folder = require(self.hparams, "output_folder")
        if folder is None or not sb.utils.distributed.if_main_process():
            return
        path = os.path.join(folder, "gm_stats.csv")
        new = not os.path.exists(path)
        with open(path, "a", encoding="utf-8") as f:
            if new:
                f.write("epoch_step,num_shared,num_conflicted,conflict_fraction,mean_cosine\n")
            f.write(
                f"{self.step},{stats['num_shared']},{stats['num_conflicted']},"
                f"{float(stats['conflict_fraction']):.4f},{float(stats['mean_cosine']):.4f}\n"
            )

    def _skip_nonfinite(self, batch):
        self.nonfinite_count += 1
        self.zero_grad(set_to_none=True)
        logger.warning(
            "non-finite loss: batch skipped (%d this epoch, patience %d); utterances: %s",
            self.nonfinite_count,
            self.nonfinite_patience,
            ", ".join(map(str, batch.id)),
        )
        if self.nonfinite_count > self.nonfinite_patience:
            raise ValueError(
                f"{self.nonfinite_count} batches with a non-finite loss this epoch (patience "
                f"{self.nonfinite_patience}); stopping. The last complete checkpoint is kept. Check the "
                f"utterances logged above (last: {', '.join(map(str, batch.id))}), lower the learning "
                "rate, or raise --nonfinite_patience."
            )

    # ------------------------------------------------------------------ bookkeeping
    def _record(self, losses):
        """Accumulate every term's statistics (epoch means per key; see :mod:`nass.losses.terms`)."""
        for key, value in losses["stats"].items():
            total, count = self._stats.get(key, (0.0, 0))
            self._stats[key] = (total + float(value), count + 1)

    def on_stage_start(self, stage, epoch=None):
        """Reset the per-stage statistics; give dynamic mixing its epoch (new mixtures each epoch)."""
        train_set = getattr(self, "train_set", None)
        if stage == sb.Stage.TRAIN and hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        self._stats = {}
        self._gm_stats = []

    def _stage_stats(self, stage_loss):
        stats = {"loss": float(stage_loss)}
        stats.update({key: total / count for key, (total, count) in self._stats.items()})
        if self._gm_stats:
            stats["gm_conflict_fraction"] = sum(self._gm_stats) / len(self._gm_stats)
        return stats

    def _apply_epoch_scheduler(self, epoch, valid_loss):
        """Step an epoch scheduler and apply its rate; returns (rate used, next rate)."""
        from speechbrain.nnet.schedulers import update_learning_rate

        current = self.optimizer.param_groups[0]["lr"]
        kind = getattr(self, "_scheduler_kind", None)
        if kind is None:
            kind = scheduler_kind(require(self.hparams, "lr_scheduler"))
        scheduler = require(self.hparams, "lr_scheduler")
        if kind == "plateau":
            _, new = scheduler([self.optimizer], current_epoch=epoch, current_loss=valid_loss)
        elif kind == "metric":
            _, new = scheduler(valid_loss)
        elif kind == "epoch":
            _, new = scheduler(epoch)
        else:
            return current, current
        update_learning_rate(self.optimizer, new)
        return current, new

    def _write_jsonl(self, record):
        """Append one record to ``<output_folder>/train_log.jsonl`` (main process), with
        ``train_seconds``: wall seconds since this session's first epoch began (validation
        included; a resumed run starts again from 0)."""
        folder = require(self.hparams, "output_folder")
        if folder is None or not sb.utils.distributed.if_main_process():
            return
        start = getattr(self, "_fit_start_time", None)
        if start is not None:
            record = {**record, "train_seconds": round(time.time() - start, 2)}
        from nass.curves import TensorBoardLog, append_train_log

        if require(self.hparams, "tensorboard") and getattr(self, "_tensorboard", None) is None:
            self._tensorboard = TensorBoardLog(os.path.join(folder, "tensorboard"))
        append_train_log(folder, record, getattr(self, "_tensorboard", None))

    def _plot_curves(self):
        """``plot_training_curves: True``: redraw ``<output_folder>/training_curves.png``
        from ``train_log.jsonl`` (main process; a plotting failure is logged, never fatal)."""
        folder = require(self.hparams, "output_folder")
        if folder is None or not require(self.hparams, "plot_training_curves"):
            return
        if sb.utils.distributed.if_main_process():
            from nass.curves import redraw_training_curves

            redraw_training_curves(folder)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the epoch, apply the LR schedule, keep the best checkpoint by validation SI-SNR.

        The logged ``lr`` is the rate the optimizer used during this epoch; ``next_lr`` the
        one the schedule set for the next.
        """
        stats = self._stage_stats(stage_loss)
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        if stage == sb.Stage.VALID:
            lr, next_lr = self._apply_epoch_scheduler(epoch, stats["loss"])
            meta = {"epoch": epoch, "lr": lr, "next_lr": next_lr, "optimizer_step": self.optimizer_step}
            train_stats = getattr(self, "train_stats", None)
            if require(self.hparams, "train_logger") is not None:
                self.hparams.train_logger.log_stats(stats_meta=meta, train_stats=train_stats, valid_stats=stats)
            self._write_jsonl({**meta, "train": train_stats, "valid": stats})
            self._plot_curves()
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"si-snr": stats["si-snr"], "epoch": epoch}, max_keys=["si-snr"], num_to_keep=1
                )
        self.last_stats = stats

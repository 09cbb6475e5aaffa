"""SeparationBrain: training and validation of masking separators with the project's methods.

One :class:`speechbrain.core.Brain` subclass covers every combination the YAML enables:

- plain PIT separation (negative SI-SNR, speakers permuted per utterance);
- ``noise_target: extra_output``: the noise estimate is scored against the noise
  reference with weight ``noise_loss_weight`` (NASS, Zhang et al. ICASSP 2024);
- ``patch_nce`` + ``patch_sampler``: the NASS patch-wise contrastive loss
  (:mod:`nass.losses.patch_nce`), weighted by ``lambda_nce``;
- an ``enhancer`` in the separator: the unified SE+SS loss (Hu et al. ICASSP 2023),
  ``se_loss_weight * se``, optionally with ``gradient_modulation: projection``
  (:mod:`nass.losses.gradient_modulation`). ``se_loss_type: mse`` is the paper's
  ``sum((enhanced_w - Encoder(mix_clean))^2)`` (per utterance); it grows with the square of
  the encoder's scale while the SI-SNR separation loss is blind to it, so part of its
  gradient only shrinks the encoder (cos(g_SE, W_encoder) = +0.50 on demo batches,
  ``bench/unified_se_gradients.py``).
  ``se_loss_type: neg_snr`` is the scale-invariant alternative: the negative SNR (dB) of
  ``enhanced_w`` against ``Encoder(mix_clean)``, ``10 log10(||e - t||^2 / ||t||^2)``,
  whose gradient is orthogonal to a bias-free encoder's weights.

Training objective and the quantities fed to the schedule (as the references,
``TzuchengChang/NASS`` and SpeechBrain's LibriMix ``train.py``): per utterance the
separation loss is ``PIT speakers + noise_loss_weight * noise`` (``-SI-SNR``, dB);
``threshold_byloss`` drops utterances whose separation loss is already below
``threshold``; then PatchNCE and the weighted SE loss are added. The LR scheduler and the
best checkpoint see the *validation separation loss* (speakers + weighted noise, no
PatchNCE or SE term, as the references' ``evaluate_batch``).

Learning-rate schedulers (``lr_scheduler``): SpeechBrain's epoch schedulers
(``ReduceLROnPlateau``, ``NewBobScheduler``, ``StepScheduler``, ``LinearScheduler``) return
the next rate, which is *applied* here with ``sb.nnet.schedulers.update_learning_rate``
at the end of each validation; per-step schedulers taking the optimizer
(``NoamScheduler``, ``LinearWarmupScheduler``, ...) are called after every optimiser step.
Any other object fails at the first fit with the supported list.

Modules are always called through ``self.modules`` so the DDP wrapper is used under
``torchrun``. YAML keys read here (all optional except ``num_spks``):
``num_spks``, ``mixture`` (noisy | clean), ``noise_loss_weight``, ``threshold_byloss``,
``threshold``, ``speed_perturb`` (a ``speechbrain.augment.time_domain.SpeedPerturb`` or
null), ``speed_perturb_noise``, ``se_loss_weight``, ``se_loss_type`` (mse | neg_snr),
``gradient_modulation`` (none | projection), ``lambda_nce``, ``lr_scheduler``,
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

import inspect
import json
import logging
import os
import re
import time

import speechbrain as sb
import torch

from nass.losses.pit import apply_perm, pit_si_snr
from nass.losses.si_snr import si_snr

logger = logging.getLogger(__name__)

GRADIENT_MODULATION = ("none", "projection")
SE_LOSS_TYPES = ("mse", "neg_snr")
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
    """Train / validate a :class:`nass.separation.MaskingSeparator` held in ``modules.separator``.

    Batches carry ``id, mix_sig, s1_sig, .., noise_sig, mix_clean_sig``
    (:func:`nass.dataio.pipeline.make_dataset` or dynamic mixing).

    Non-finite losses: the batch is skipped (no backward, no step), counted, and its
    utterance IDs are logged; more than ``nonfinite_patience`` such batches in one epoch
    stop the run with a ``ValueError`` (the last complete checkpoint is kept).

    Example
    -------
    See ``tests/test_separation_brain.py`` and ``recipes/*/separation/train.py``.
    """

    def __init__(self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None):
        # ``precision: auto`` in a YAML built without nass.training.load_hparams
        from nass.training import resolve_auto_precision_in

        resolve_auto_precision_in(hparams, run_opts)
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)

    # ------------------------------------------------------------------ set-up
    def on_fit_start(self):
        """Check the method options, recover the last checkpoint, drop log lines of epochs it lacks."""
        self._check_config()
        super().on_fit_start()
        counter = (self.checkpointer.recoverables.get("counter") if self.checkpointer is not None else None)
        if counter is not None and sb.utils.distributed.if_main_process():
            folder = getattr(self.hparams, "output_folder", None)
            logger_ = getattr(self.hparams, "train_logger", None)
            paths = [getattr(logger_, "save_file", None)] + ([os.path.join(folder, "train_log.jsonl")] if folder else [])
            prune_epoch_logs([p for p in paths if p], int(getattr(counter, "current", 0)))
        self._fit_start_time = time.time()

    def _check_config(self):
        hp = self.hparams
        separator = self._separator()
        gm = getattr(hp, "gradient_modulation", "none")
        if gm not in GRADIENT_MODULATION:
            raise ValueError(f"gradient_modulation must be one of {GRADIENT_MODULATION}, got {gm!r}")
        if gm == "projection" and separator.enhancer is None:
            raise ValueError("gradient_modulation: projection needs an enhancer in the separator (unified SE+SS)")
        se_type = getattr(hp, "se_loss_type", "mse")
        if se_type not in SE_LOSS_TYPES:
            raise ValueError(f"se_loss_type must be one of {SE_LOSS_TYPES}, got {se_type!r}")
        self._scheduler_kind = scheduler_kind(getattr(hp, "lr_scheduler", None))
        if self._use_nce() and separator.noise_target != "extra_output":
            raise ValueError(
                "the PatchNCE loss (patch_nce / patch_sampler) needs noise_target: extra_output, "
                "since its negatives are the predicted noise representation"
            )

    def _separator(self):
        sep = self.modules.separator
        return sep.module if hasattr(sep, "module") else sep

    def _use_nce(self):
        return getattr(self.hparams, "patch_nce", None) is not None and "patch_sampler" in self.modules

    # ------------------------------------------------------------------ forward
    def compute_forward(self, batch, stage):
        """Run the separator; in training, apply speed perturbation and re-mix first.

        Returns
        -------
        (SeparationOutput, dict)
            The model output and the (possibly perturbed) references: ``mix``
            ``[B, T]``, ``sources`` ``[B, T, num_spks]``, ``noise`` ``[B, T]``,
            ``mix_clean`` ``[B, T]``.
        """
        batch = batch.to(self.device)
        refs = self._references(batch)
        if stage == sb.Stage.TRAIN and getattr(self.hparams, "speed_perturb", None) is not None:
            refs = self._speed_perturb(refs)
        out = self.modules.separator(refs["mix"])
        return out, refs

    def _references(self, batch):
        num_spks = self.hparams.num_spks
        sources = torch.stack([getattr(batch, f"s{i + 1}_sig").data for i in range(num_spks)], dim=-1)
        return {
            "mix": batch.mix_sig.data,
            "sources": sources,
            "noise": batch.noise_sig.data,
            "mix_clean": batch.mix_clean_sig.data,
            "lengths": batch.mix_sig.lengths,  # [B] relative: the rest is zero padding
        }

    def _speed_perturb(self, refs):
        """Speed-perturb every source independently, crop, and re-mix.

        As SpeechBrain's LibriMix recipe (``add_speed_perturb``) and the NASS and GM
        references: each *source* gets its own random speed from ``SpeedPerturb.speeds``
        (95/100/105 % by default; SpeechBrain draws one speed per call, i.e. per batch and
        source) and the noise is added unperturbed. ``speed_perturb_noise: True`` (our
        option, in no reference) perturbs the noise too, with its own speed.
        """
        num_spks = refs["sources"].shape[-1]
        parts = [self.hparams.speed_perturb(refs["sources"][..., i]) for i in range(num_spks)]
        noise = refs["noise"]
        if getattr(self.hparams, "speed_perturb_noise", False):
            noise = self.hparams.speed_perturb(noise)
        length = min(min(p.shape[-1] for p in parts), noise.shape[-1])
        sources = torch.stack([p[:, :length] for p in parts], dim=-1)
        noise = noise[:, :length]
        mix_clean = sources.sum(-1)
        noisy = getattr(self.hparams, "mixture", "noisy") == "noisy"
        mix = mix_clean + noise if noisy else mix_clean
        return {"mix": mix, "sources": sources, "noise": noise, "mix_clean": mix_clean, "lengths": refs["lengths"]}

    # ------------------------------------------------------------------ losses
    def compute_losses(self, predictions, stage):
        """All loss terms of one batch.

        Returns
        -------
        dict
            ``ss`` (training objective without the SE term: speakers + weighted noise after
            the threshold, + PatchNCE; scalar), ``separation`` (speakers + weighted noise over
            every utterance, no threshold: what validation reports and the LR schedule sees;
            scalar), ``se`` (unweighted SE loss, scalar, or None), ``speakers``
            (per-utterance negative PIT SI-SNR ``[B]``), ``noise`` (per-utterance negative
            SI-SNR of the noise ``[B]`` or None), ``nce`` (weighted PatchNCE term, scalar, or
            None), ``nce_stats`` (see :func:`nass.losses.patch_nce.nass_contrastive_loss`),
            ``se_identity`` (the SE loss of ``mix_w`` itself, no gradient, or None), ``perm``
            ``[B, num_spks]``, ``refs`` (the references used).
        """
        out, refs = predictions
        hp = self.hparams
        spk_loss, perm = pit_si_snr(out.est_sources, refs["sources"])
        separation = spk_loss
        noise_loss = None
        if out.est_noise is not None:
            noise_loss = -si_snr(out.est_noise, refs["noise"])
            separation = separation + getattr(hp, "noise_loss_weight", 1.0) * noise_loss
        kept = separation
        if stage == sb.Stage.TRAIN and getattr(hp, "threshold_byloss", False):
            # references: drop utterances whose loss is already better than `threshold` dB
            # (written so that a NaN loss is kept: the batch is then skipped as non-finite,
            # never silently dropped by the threshold)
            mask = ~(separation <= hp.threshold)
            kept = separation[mask] if mask.any() else separation
        ss = kept.mean()
        nce, nce_stats = None, None
        if stage == sb.Stage.TRAIN and self._use_nce():
            nce, nce_stats = self._patch_nce(out, refs, perm)
            ss = ss + nce
        se = se_identity = None
        if out.enhanced_w is not None:
            # Hu et al.: the enhanced representation against the encoder output of the clean
            # mixture; gradients of the target's encoding flow into the shared encoder as in
            # the reference
            target_w = self._encode(refs["mix_clean"])
            se = self._se_loss(out.enhanced_w, target_w)
            with torch.no_grad():  # reference value: an enhancer that changes nothing
                se_identity = self._se_loss(out.mix_w.detach().float(), target_w.detach().float())
        return {
            "ss": ss,
            "separation": separation.mean(),
            "se": se,
            "se_identity": se_identity,
            "speakers": spk_loss,
            "noise": noise_loss,
            "nce": nce,
            "nce_stats": nce_stats,
            "perm": perm,
            "refs": refs,
        }

    def _se_loss(self, enhanced_w, target_w):
        """SE loss ``[B, N, L]`` x ``[B, N, L]`` -> scalar (``se_loss_type``, batch mean)."""
        if getattr(self.hparams, "se_loss_type", "mse") == "neg_snr":
            err = ((enhanced_w - target_w) ** 2).flatten(1).sum(-1)
            ref = (target_w**2).flatten(1).sum(-1)
            return (10 * torch.log10((err + 1e-8) / (ref + 1e-8))).mean()
        # paper: squared error summed over the map, averaged over the batch so that the
        # batch size does not rescale the weight
        return ((enhanced_w - target_w) ** 2).sum() / enhanced_w.shape[0]

    def _encode(self, wav):
        # the encoder is a sub-module of the (possibly DDP-wrapped) separator
        return self._separator().encode(wav)

    def _patch_nce(self, out, refs, perm):
        from nass.losses.patch_nce import nass_contrastive_loss

        num_spks = self.hparams.num_spks
        reps = out.masked_reps  # [M, B, N, L]
        speakers = reps[:num_spks].permute(1, 2, 3, 0)  # [B, N, L, S]
        # align each utterance's estimates with its references (per-utterance permutation)
        query = apply_perm(speakers, perm).permute(0, 3, 1, 2)  # [B, S, N, L]
        # positives are detached inside the criterion (reference behaviour): then no graph
        # is needed for them at all
        with torch.set_grad_enabled(not getattr(self.hparams.patch_nce, "detach_keys", False)):
            positive = torch.stack(
                [self._encode(refs["sources"][..., j]) for j in range(num_spks)], dim=1
            )  # [B, S, N, L]
        noise_rep = reps[num_spks]  # [B, N, L]
        frames = noise_rep.shape[-1]
        valid = None
        if refs.get("lengths") is not None:
            valid = (refs["lengths"].to(noise_rep.device) * frames).floor().long().clamp(1, frames)
        return nass_contrastive_loss(
            query,
            positive,
            noise_rep,
            sampler=self.modules.patch_sampler,
            criterion=self.hparams.patch_nce,
            lambda_nce=getattr(self.hparams, "lambda_nce", 2.0),
            num_valid_frames=valid,
            return_stats=True,
        )

    def compute_objectives(self, predictions, batch, stage):
        """Total loss ``ss + se_loss_weight * se`` (training) or ``separation`` (validation)."""
        losses = self.compute_losses(predictions, stage)
        self._record(losses, stage, batch)
        if stage != sb.Stage.TRAIN:
            # as the references' evaluate_batch: the separation loss alone drives the LR
            # schedule and the choice of the best checkpoint
            return losses["separation"]
        total = losses["ss"]
        if losses["se"] is not None:
            total = total + getattr(self.hparams, "se_loss_weight", 0.1) * losses["se"]
        return total

    # ------------------------------------------------------------------ training step
    def fit_batch(self, batch):
        """One optimisation step; gradient modulation and non-finite skipping included."""
        should_step = (self.step % self.grad_accumulation_factor) == 0
        self.on_fit_batch_start(batch, should_step)
        gm = getattr(self.hparams, "gradient_modulation", "none") == "projection"
        with self.no_sync(not should_step):
            with self.training_ctx:
                predictions = self.compute_forward(batch, sb.Stage.TRAIN)
                losses = self.compute_losses(predictions, sb.Stage.TRAIN)
            self._record(losses, sb.Stage.TRAIN, batch)
            weight_se = getattr(self.hparams, "se_loss_weight", 0.1)
            total = losses["ss"] if losses["se"] is None else losses["ss"] + weight_se * losses["se"]
            if not self._finite_on_every_process(total):
                self._skip_nonfinite(batch)
                return total.detach().cpu()
            factor = self.grad_accumulation_factor
            if gm:
                from nass.losses.gradient_modulation import modulated_backward, shared_parameters

                sep = self._separator()
                stats = modulated_backward(
                    self.scaler.scale(losses["ss"] / factor),
                    self.scaler.scale(losses["se"] / factor),
                    shared_parameters(sep.encoder, sep.enhancer),
                    weight_se=weight_se,
                    grad_scale=self.scaler.get_scale() if self.scaler.is_enabled() else None,
                )
                self._gm_stats.append(stats["conflict_fraction"])
                self._log_gm_step(stats)
            else:
                self.scaler.scale(total / factor).backward()
        if should_step:
            self.optimizers_step()
            self._step_scheduler()
            self._log_running_stats()
        self.on_fit_batch_end(batch, predictions, total, should_step)
        return total.detach().cpu()

    def _log_running_stats(self):
        """Every ``log_interval_steps`` optimiser steps, the epoch's running term statistics
        go to ``train_log.jsonl`` (``{"optimizer_step", "epoch_step", "lr", "train_running"}``),
        so a term that does not learn shows within the first epoch."""
        interval = int(getattr(self.hparams, "log_interval_steps", 0) or 0)
        if interval <= 0 or self.optimizer_step % interval != 0:
            return
        self._write_jsonl(
            {
                "optimizer_step": self.optimizer_step,
                "epoch_step": self.step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "train_running": self._stage_stats(float("nan")),
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
        folder = getattr(self.hparams, "output_folder", None)
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
    def _record(self, losses, stage, batch):
        """Accumulate each term and its reference value (see the module docstring)."""
        stats = self._stats
        refs = losses["refs"]
        stats["n"] += 1
        stats["si-snr"] += float(-losses["speakers"].detach().mean())
        with torch.no_grad():
            # (outside autocast: references made under bf16 autocast come back in fp32)
            mix = refs["mix"].detach().float()
            sources = refs["sources"].detach().float()
            # the mixture as every speaker's estimate: the input score SI-SNRi is measured from
            mix_score = torch.stack([si_snr(mix, sources[..., j]) for j in range(sources.shape[-1])])
            stats["si-snr_input"] += float(mix_score.mean())
            if losses["noise"] is not None:
                stats["noise_si-snr"] += float(-losses["noise"].detach().mean())
                stats["noise_si-snr_input"] += float(si_snr(mix, refs["noise"].detach().float()).mean())
            if losses["se"] is not None:
                stats["se"] += float(losses["se"].detach())
                stats["se_identity"] += float(losses["se_identity"])
        if losses["nce"] is not None:
            stats["nce_n"] += 1
            stats["nce_weighted"] += float(losses["nce"].detach())
            stats["nce"] += losses["nce_stats"]["nce"]
            stats["nce_chance"] += losses["nce_stats"]["nce_chance"]

    def on_stage_start(self, stage, epoch=None):
        """Reset the per-stage statistics; give dynamic mixing its epoch (new mixtures each epoch)."""
        train_set = getattr(self, "train_set", None)
        if stage == sb.Stage.TRAIN and hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        keys = ("si-snr", "si-snr_input", "noise_si-snr", "noise_si-snr_input", "se", "se_identity")
        self._stats = {"n": 0, "nce_n": 0, "nce": 0.0, "nce_chance": 0.0, "nce_weighted": 0.0}
        self._stats.update({k: 0.0 for k in keys})
        self._gm_stats = []

    def _stage_stats(self, stage_loss):
        st = self._stats
        n = max(st["n"], 1)
        stats = {"loss": float(stage_loss), "si-snr": st["si-snr"] / n, "si-snr_input": st["si-snr_input"] / n}
        sep = self._separator()
        if sep.noise_target == "extra_output":
            stats["noise_si-snr"] = st["noise_si-snr"] / n
            stats["noise_si-snr_input"] = st["noise_si-snr_input"] / n
        if sep.enhancer is not None:
            stats["se_loss"] = st["se"] / n
            stats["se_identity"] = st["se_identity"] / n
        if st["nce_n"]:
            m = st["nce_n"]
            stats["nce"] = st["nce"] / m
            stats["nce_chance"] = st["nce_chance"] / m
            stats["nce_loss"] = st["nce_weighted"] / m  # the weighted term added to the loss
        if self._gm_stats:
            stats["gm_conflict_fraction"] = sum(self._gm_stats) / len(self._gm_stats)
        return stats

    def _apply_epoch_scheduler(self, epoch, valid_loss):
        """Step an epoch scheduler and apply its rate; returns (rate used, next rate)."""
        from speechbrain.nnet.schedulers import update_learning_rate

        current = self.optimizer.param_groups[0]["lr"]
        kind = getattr(self, "_scheduler_kind", None)
        if kind is None:
            kind = scheduler_kind(getattr(self.hparams, "lr_scheduler", None))
        scheduler = getattr(self.hparams, "lr_scheduler", None)
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
        folder = getattr(self.hparams, "output_folder", None)
        if folder is None or not sb.utils.distributed.if_main_process():
            return
        start = getattr(self, "_fit_start_time", None)
        if start is not None:
            record = {**record, "train_seconds": round(time.time() - start, 2)}
        from nass.curves import TensorBoardLog, append_train_log

        if getattr(self.hparams, "tensorboard", False) and getattr(self, "_tensorboard", None) is None:
            self._tensorboard = TensorBoardLog(os.path.join(folder, "tensorboard"))
        append_train_log(folder, record, getattr(self, "_tensorboard", None))

    def _plot_curves(self):
        """``plot_training_curves: True``: redraw ``<output_folder>/training_curves.png``
        from ``train_log.jsonl`` (main process; a plotting failure is logged, never fatal)."""
        folder = getattr(self.hparams, "output_folder", None)
        if folder is None or not getattr(self.hparams, "plot_training_curves", False):
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
            if getattr(self.hparams, "train_logger", None) is not None:
                self.hparams.train_logger.log_stats(stats_meta=meta, train_stats=train_stats, valid_stats=stats)
            self._write_jsonl({**meta, "train": train_stats, "valid": stats})
            self._plot_curves()
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"si-snr": stats["si-snr"], "epoch": epoch}, max_keys=["si-snr"], num_to_keep=1
                )
        self.last_stats = stats

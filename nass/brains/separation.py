"""SeparationBrain: training and validation of masking separators with the project's methods.

One :class:`speechbrain.core.Brain` subclass covers every combination the YAML enables:

- plain PIT separation (negative SI-SNR, speakers permuted per utterance);
- ``noise_target: extra_output``: the noise estimate is scored against the noise
  reference with weight ``noise_loss_weight`` (NASS, Zhang et al. ICASSP 2024);
- ``patch_nce`` + ``patch_sampler``: the NASS patch-wise contrastive loss
  (:mod:`nass.losses.patch_nce`), weighted by ``lambda_nce``;
- an ``enhancer`` in the separator: the unified SE+SS loss (Hu et al. ICASSP 2023),
  ``se_loss_weight * sum((enhanced_w - Encoder(mix_clean))^2)``, optionally with
  ``gradient_modulation: projection`` (:mod:`nass.losses.gradient_modulation`).

Modules are always called through ``self.modules`` so the DDP wrapper is used under
``torchrun``. YAML keys read here (all optional except ``num_spks``):
``num_spks``, ``mixture`` (noisy | clean), ``noise_loss_weight``, ``threshold_byloss``,
``threshold``, ``speed_perturb`` (a ``speechbrain.augment.time_domain.SpeedPerturb`` or
null), ``se_loss_weight``, ``gradient_modulation`` (none | projection), ``lambda_nce``,
``lr_scheduler``, ``epoch_counter``, ``train_logger``, ``output_folder``.

With gradient modulation, every step's statistics (shared tensors, how many conflicted,
the fraction, the mean cosine between g_SE and g_SS) are appended to
``<output_folder>/gm_stats.csv``, and the epoch mean of the conflict fraction is in the
training log (``gm_conflict_fraction``).
"""

import logging
import os

import speechbrain as sb
import torch

from nass.losses.pit import apply_perm, pit_si_snr
from nass.losses.si_snr import si_snr

logger = logging.getLogger(__name__)

GRADIENT_MODULATION = ("none", "projection")


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

    # ------------------------------------------------------------------ set-up
    def on_fit_start(self):
        """Check the method options against the model before the first step."""
        self._check_config()
        super().on_fit_start()

    def _check_config(self):
        hp = self.hparams
        separator = self._separator()
        gm = getattr(hp, "gradient_modulation", "none")
        if gm not in GRADIENT_MODULATION:
            raise ValueError(f"gradient_modulation must be one of {GRADIENT_MODULATION}, got {gm!r}")
        if gm == "projection" and separator.enhancer is None:
            raise ValueError("gradient_modulation: projection needs an enhancer in the separator (unified SE+SS)")
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
        }

    def _speed_perturb(self, refs):
        """Speed-perturb every source and the noise independently, crop, and re-mix.

        As SpeechBrain's LibriMix recipe (``add_speed_perturb``): each part gets its own
        random speed from ``SpeedPerturb.speeds`` (95/100/105 % by default).
        """
        parts = [refs["sources"][..., i] for i in range(refs["sources"].shape[-1])] + [refs["noise"]]
        perturbed = [self.hparams.speed_perturb(p) for p in parts]
        length = min(p.shape[-1] for p in perturbed)
        perturbed = [p[:, :length] for p in perturbed]
        sources = torch.stack(perturbed[:-1], dim=-1)
        noise = perturbed[-1]
        mix_clean = sources.sum(-1)
        noisy = getattr(self.hparams, "mixture", "noisy") == "noisy"
        mix = mix_clean + noise if noisy else mix_clean
        return {"mix": mix, "sources": sources, "noise": noise, "mix_clean": mix_clean}

    # ------------------------------------------------------------------ losses
    def compute_losses(self, predictions, stage):
        """All loss terms of one batch.

        Returns
        -------
        dict
            ``ss`` (separation objective: speakers + noise + PatchNCE, scalar), ``se``
            (weighted-free SE loss, scalar, or None), ``speakers`` (per-utterance negative
            SI-SNR ``[B]``), ``noise`` (per-utterance negative SI-SNR of the noise ``[B]`` or
            None), ``nce`` (scalar or None), ``perm`` ``[B, num_spks]``.
        """
        out, refs = predictions
        hp = self.hparams
        spk_loss, perm = pit_si_snr(out.est_sources, refs["sources"])
        kept = spk_loss
        if stage == sb.Stage.TRAIN and getattr(hp, "threshold_byloss", False):
            # SpeechBrain LibriMix recipe: drop utterances already better than `threshold` dB
            # (written so that a NaN loss is kept: the batch is then skipped as non-finite,
            # never silently dropped by the threshold)
            mask = ~(spk_loss <= hp.threshold)
            kept = spk_loss[mask] if mask.any() else spk_loss
        ss = kept.mean()
        noise_loss = None
        if out.est_noise is not None:
            noise_loss = -si_snr(out.est_noise, refs["noise"])
            ss = ss + getattr(hp, "noise_loss_weight", 1.0) * noise_loss.mean()
        nce = None
        if stage == sb.Stage.TRAIN and self._use_nce():
            nce = self._patch_nce(out, refs, perm)
            ss = ss + nce
        se = None
        if out.enhanced_w is not None:
            # Hu et al.: squared error (sum) to the encoder output of the clean mixture,
            # averaged over the batch so batch size does not rescale the weight
            target_w = self._encode(refs["mix_clean"])
            se = ((out.enhanced_w - target_w) ** 2).sum() / out.enhanced_w.shape[0]
        return {"ss": ss, "se": se, "speakers": spk_loss, "noise": noise_loss, "nce": nce, "perm": perm}

    def _encode(self, wav):
        # the encoder is a sub-module of the (possibly DDP-wrapped) separator; gradients of
        # the targets' encodings flow into the shared encoder as in the references
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
        return nass_contrastive_loss(
            query,
            positive,
            noise_rep,
            sampler=self.modules.patch_sampler,
            criterion=self.hparams.patch_nce,
            lambda_nce=getattr(self.hparams, "lambda_nce", 2.0),
        )

    def compute_objectives(self, predictions, batch, stage):
        """Total loss ``ss + se_loss_weight * se`` (used for validation and plain training)."""
        losses = self.compute_losses(predictions, stage)
        self._record(losses, stage, batch)
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
        self.on_fit_batch_end(batch, predictions, total, should_step)
        return total.detach().cpu()

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
        stats = self._stats
        stats["n"] += 1
        stats["si-snr"] += float(-losses["speakers"].detach().mean())
        if losses["noise"] is not None:
            stats["noise_si-snr"] += float(-losses["noise"].detach().mean())
        if losses["nce"] is not None:
            stats["nce"] += float(losses["nce"].detach())
        if losses["se"] is not None:
            stats["se"] += float(losses["se"].detach())

    def on_stage_start(self, stage, epoch=None):
        """Reset the per-stage statistics; give dynamic mixing its epoch (new mixtures each epoch)."""
        train_set = getattr(self, "train_set", None)
        if stage == sb.Stage.TRAIN and hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        self._stats = {"n": 0, "si-snr": 0.0, "noise_si-snr": 0.0, "nce": 0.0, "se": 0.0}
        self._gm_stats = []

    def _stage_stats(self, stage_loss):
        n = max(self._stats["n"], 1)
        stats = {"loss": float(stage_loss), "si-snr": self._stats["si-snr"] / n}
        sep = self._separator()
        if sep.noise_target == "extra_output":
            stats["noise_si-snr"] = self._stats["noise_si-snr"] / n
        if sep.enhancer is not None:
            stats["se_loss"] = self._stats["se"] / n
        if self._stats["nce"]:
            stats["nce_loss"] = self._stats["nce"] / n
        if self._gm_stats:
            stats["gm_conflict_fraction"] = sum(self._gm_stats) / len(self._gm_stats)
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the epoch, step the LR scheduler, keep the best checkpoint by validation SI-SNR."""
        stats = self._stage_stats(stage_loss)
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            scheduler = getattr(self.hparams, "lr_scheduler", None)
            if scheduler is not None:
                _, lr = scheduler([self.optimizer], current_epoch=epoch, current_loss=stats["loss"])
            meta = {"epoch": epoch, "lr": lr}
            if getattr(self.hparams, "train_logger", None) is not None:
                self.hparams.train_logger.log_stats(
                    stats_meta=meta, train_stats=getattr(self, "train_stats", None), valid_stats=stats
                )
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"si-snr": stats["si-snr"], "epoch": epoch}, max_keys=["si-snr"], num_to_keep=1
                )
        self.last_stats = stats

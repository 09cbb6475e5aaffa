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
(:meth:`nass.correction.GeCoModel.fast_geco_loss`), lr 1e-5 (reference argparse default;
its ``add_para`` lists 5e-5).

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
``epoch_counter``; modules: ``corrector`` (a :class:`nass.correction.GeCoModel`).
Single process only: the losses call the score network inside ``GeCoModel`` methods,
which would bypass a DDP wrapper, so a ``torchrun`` launch is refused.
"""

import logging
import os

import speechbrain as sb
import torch

from nass.correction.ema import ExponentialMovingAverage
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
        mode = getattr(self.hparams, "correction_mode", "geco")
        if mode not in MODES:
            raise ValueError(f"correction_mode must be one of {', '.join(MODES)}, got {mode!r}")
        return mode

    def on_fit_start(self):
        """Check the mode, create the EMA (registered in the checkpoint), then resume."""
        self._mode()
        if self.distributed_launch:
            raise ValueError(
                "CorrectionBrain runs in one process (its losses call the score network inside "
                "GeCoModel, which a DDP wrapper would not see); start train.py with python, not torchrun"
            )
        self._ensure_ema()
        super().on_fit_start()

    def _ensure_ema(self):
        if getattr(self, "ema", None) is not None:
            return
        self.ema = ExponentialMovingAverage(
            self._corrector().score_model.parameters(), decay=getattr(self.hparams, "ema_decay", 0.999)
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
        corrector = self._corrector()
        if self._mode() == "geco":
            loss = corrector.dsm_loss_wave(est, mix, ref)
        else:
            loss = corrector.fast_geco_loss(est, mix, ref)
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
        seed = int(getattr(self.hparams, "valid_seed", 0)) + self._valid_batches
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
        elif len(stats["si-snr"]) < int(getattr(self.hparams, "valid_si_snr_utterances", 4)):
            corrected = self._corrector().correct(
                est, mix, mode="geco", num_steps=int(getattr(self.hparams, "valid_steps", 30))
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
        if getattr(self.hparams, "train_logger", None) is not None:
            self.hparams.train_logger.log_stats(
                stats_meta=meta, train_stats=getattr(self, "train_stats", None), valid_stats=stats
            )
        if self.checkpointer is not None:
            score = stats["si-snr"] if stats["si-snr"] == stats["si-snr"] else -float(stage_loss)
            self.checkpointer.save_and_keep_only(
                meta={"si-snr": score, "loss": float(stage_loss), "epoch": epoch},
                max_keys=["si-snr"], num_to_keep=1,
            )

    # ------------------------------------------------------------------ export
    def export(self, folder):
        """Load the best checkpoint and write its averaged weights as a corrector folder.

        Parameters
        ----------
        folder : str
            Destination (``corrector.json`` + ``corrector.ckpt``, atomic writes).

        Returns
        -------
        str
            ``folder``.
        """
        self._ensure_ema()
        if self.checkpointer is not None:
            self.checkpointer.recover_if_possible(max_key="si-snr")
        save_corrector(self._corrector(), folder, ema=self.ema)
        logger.info("exported the corrector to %s", folder)
        return folder


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
    from speechbrain.utils.distributed import run_on_main

    from nass.correction.data import build_triplets, read_triplets
    from nass.training import prepare_manifests

    manifests = prepare_manifests(hparams)
    rows = {}
    for key, limit in (("train", hparams.get("train_utterances")), ("valid", hparams.get("valid_utterances"))):
        split = hparams[f"{key}_split"]
        kwargs = dict(
            separator=hparams["separator_folder"], manifest_csv=manifests[split],
            cache_folder=hparams["triplet_folder"], split=split, num_spks=hparams["num_spks"],
            sample_rate=hparams["sample_rate"], device=hparams.get("triplet_device", "cpu"),
            max_utterances=limit,
        )
        run_on_main(build_triplets, kwargs=kwargs)
        rows[key] = read_triplets(build_triplets(**kwargs))  # reuses the main process's cache
    return manifests, rows


def run_correction(argv=None):
    """Train GeCo or Fast-GeCo on a separator's triplets, export it, evaluate before/after.

    Steps: parse ``train.py hparams.yaml --key=value``; check the output folder; prepare
    the manifests; build the triplets (:func:`nass.correction.data.build_triplets`);
    :class:`CorrectionBrain` ``fit`` (resumes from the last checkpoint); export the best
    (averaged) weights to ``<output_folder>/corrector``; on the test split score the
    separator alone (``test/test_metrics.csv``) and corrected
    (``test/test_metrics_<mode>.csv``) with SI-SNR(i), SDR(i), PESQ-NB and ESTOI.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict or None
        ``{"separator": means, "<mode>": means}`` or None with ``test_split: null``.
    """
    import sys

    from nass.correction.data import TripletDataset
    from nass.evaluation import evaluate_with_correction
    from nass.inference import load_separator
    from nass.training import check_writable, load_hparams

    argv = sys.argv[1:] if argv is None else argv
    hparams_file, run_opts, overrides, hparams = load_hparams(argv)
    check_writable(hparams["output_folder"])
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    manifests, rows = build_correction_data(hparams)
    seed = int(hparams.get("seed", 0))
    train = TripletDataset(rows["train"], hparams["sample_rate"], crop_samples=hparams["crop_samples"],
                           random_crop=True, epoch_size=hparams.get("train_rows_per_epoch"), seed=seed)
    valid = TripletDataset(rows["valid"], hparams["sample_rate"], crop_samples=hparams.get("valid_crop_samples"),
                           random_crop=False, seed=seed)
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
        valid_loader_kwargs=dict(hparams.get("valid_dataloader_opts", {"batch_size": 1})),
    )
    corrector_folder = os.path.join(hparams["output_folder"], "corrector")
    brain.export(corrector_folder)
    if not hparams.get("test_split"):
        return None
    device = brain.device
    model, sep_hparams = load_separator(hparams["separator_folder"], device=device)
    corrector = load_corrector(corrector_folder, device=device)
    modes = hparams.get("eval_correction_modes") or [hparams["correction_mode"]]
    return evaluate_with_correction(
        model, int(sep_hparams["sample_rate"]), hparams["num_spks"], manifests[hparams["test_split"]],
        os.path.join(hparams["output_folder"], "test"), corrector=corrector, correction_mode=modes,
        correction_steps=hparams.get("eval_steps", 30), device=device,
        num_workers=hparams.get("eval_num_workers", 2), save_examples=hparams.get("n_audio_to_save", 5),
        pesq_estoi=hparams.get("eval_pesq_estoi", True), max_utterances=hparams.get("test_max_utterances"),
        seed=seed,
    )

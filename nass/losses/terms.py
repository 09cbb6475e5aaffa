"""Loss terms as objects: what ``SeparationBrain`` sums, named in the YAML list ``loss_terms``.

A term is a small object with a ``name`` (its key in the logs), a ``weight``, the
fields it ``needs`` (checked before training by :func:`check_loss_terms`, with an error
naming the YAML key) and ``__call__(output, batch, shared) -> (loss, stats)``:

- ``output``: the separator's :class:`nass.separation.SeparationOutput`;
- ``batch``: the :class:`nass.separation.SeparationBatch` it was computed from;
- ``shared``: a dict that terms earlier in the list write to and later ones read
  (:class:`SpeakerPIT` writes ``"perm"``, the speakers' per-utterance permutation that
  :class:`PatchNCE` reuses, as ESPnet's PIT wrapper hands its permutation on);
- ``loss``: *unweighted*; ``[batch]`` per utterance when ``per_utterance`` is True, else a
  scalar;
- ``stats``: ``{key: float}`` logged under these keys (epoch means), every key unique
  across the list.

How the Brain combines them (:meth:`nass.brains.separation.SeparationBrain.compute_losses`):

1. the *separation loss* per utterance is ``sum weight * loss`` over the ``per_utterance``
   terms (speakers, noise); in training, ``threshold_byloss`` drops the utterances whose
   separation loss is already below ``threshold`` (the NASS and SpeechBrain references),
   then it is averaged over the batch. Validation's loss (LR schedule, best checkpoint) is
   the batch mean of the separation loss alone;
2. the other terms add ``weight * loss``; ``train_only`` terms (PatchNCE) are computed in
   training only;
3. ``task``: ``"ss"`` (separation) or ``"se"`` (enhancement); ``backward:
   gradient_modulation`` projects the gradient of the ``"se"`` terms' sum against that of
   the ``"ss"`` terms (:func:`nass.losses.gradient_modulation.modulated_backward`);
   ``backward: plain`` back-propagates the sum.

A new loss is a subclass in any module plus a YAML entry; no Brain edit::

    loss_terms:
        - !new:nass.losses.terms.SpeakerPIT
        - !new:mypackage.MyTerm
            weight: 0.5
"""

import logging

import torch

from nass.losses.pit import apply_perm, pit_si_snr
from nass.losses.si_snr import si_snr

logger = logging.getLogger(__name__)

BACKWARD_RULES = ("plain", "gradient_modulation")
TASKS = ("ss", "se")
SE_LOSS_TYPES = ("mse", "neg_snr")
# output fields a term may need, and what the separator must be for the forward to give them
OUTPUT_FIELDS = ("est_sources", "est_noise", "mix_w", "enhanced_w", "masked_reps", "encode")
BATCH_FIELDS = ("mix", "sources", "noise", "mix_clean", "ids", "lengths")


class LossTerm:
    """Base class of a loss term (see the module docstring for the rules).

    Subclasses set the class attributes and implement :meth:`__call__`.

    Attributes
    ----------
    name : str
        Unique key of the term (``values[name]`` in ``compute_losses``).
    needs : tuple of str
        ``"output.<field>"`` (a :class:`nass.separation.SeparationOutput` field),
        ``"batch.<field>"`` (a :class:`nass.separation.SeparationBatch` field) or
        ``"shared.<key>"`` (written by an earlier term, see ``provides``).
    provides : tuple of str
        Keys this term writes into ``shared``.
    per_utterance, train_only : bool
    task : {"ss", "se"}

    Parameters
    ----------
    weight : float
        Multiplies the term's loss in the total.

    Example
    -------
    >>> import torch
    >>> class Energy(LossTerm):
    ...     name = "energy"
    ...     needs = ("output.est_sources",)
    ...     def __call__(self, output, batch, shared):
    ...         loss = output.est_sources.pow(2).mean()
    ...         return loss, {"energy": float(loss)}
    >>> Energy(weight=0.5).weight
    0.5
    """

    name = None
    needs = ()
    provides = ()
    per_utterance = False
    train_only = False
    task = "ss"

    def __init__(self, weight=1.0):
        self.weight = float(weight)

    def modules(self):
        """Trainable modules the term owns (must be in the YAML's ``modules`` to be trained,
        moved to the device and checkpointed)."""
        return []

    def bind(self, modules):
        """Called by the Brain with its ``modules`` (DDP-wrapped under ``torchrun``) before training."""

    def __call__(self, output, batch, shared):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, weight={self.weight:g})"


class SpeakerPIT(LossTerm):
    """Negative SI-SNR of the speakers under the best permutation per utterance (dB, ``[batch]``).

    Writes the permutation ``[batch, num_spks]`` into ``shared["perm"]``. Stats:
    ``si-snr`` (mean SI-SNR of the estimates) and ``si-snr_input`` (of the mixture used as
    every speaker's estimate: the score SI-SNRi is measured from).

    Parameters
    ----------
    weight : float

    Example
    -------
    >>> import torch
    >>> from nass.separation import SeparationBatch, SeparationOutput
    >>> src = torch.randn(2, 800, 2)
    >>> batch = SeparationBatch(src.sum(-1), src, torch.zeros(2, 800), src.sum(-1), ["a", "b"])
    >>> out = SeparationOutput(src.flip(-1), None, None, None, None)
    >>> shared = {}
    >>> loss, stats = SpeakerPIT()(out, batch, shared)
    >>> loss.shape, shared["perm"].tolist(), stats["si-snr"] > 50
    (torch.Size([2]), [[1, 0], [1, 0]], True)
    """

    name = "speaker_pit"
    needs = ("output.est_sources", "batch.sources", "batch.mix")
    provides = ("perm",)
    per_utterance = True

    def __call__(self, output, batch, shared):
        loss, perm = pit_si_snr(output.est_sources, batch.sources)
        shared["perm"] = perm
        with torch.no_grad():
            # (outside autocast: references made under bf16 autocast come back in fp32)
            mix, sources = batch.mix.detach().float(), batch.sources.detach().float()
            mix_score = torch.stack([si_snr(mix, sources[..., j]) for j in range(sources.shape[-1])])
        return loss, {"si-snr": float(-loss.detach().mean()), "si-snr_input": float(mix_score.mean())}


class NoiseSISNR(LossTerm):
    """Negative SI-SNR of the noise estimate against the noise reference (NASS; dB, ``[batch]``).

    The noise slot is fixed (never permuted with the speakers). Needs ``est_noise``
    (``noise_target: extra_output``). Stats: ``noise_si-snr`` and ``noise_si-snr_input``
    (the mixture as the noise estimate).

    Parameters
    ----------
    weight : float
        The YAML's ``noise_loss_weight``.

    Example
    -------
    >>> import torch
    >>> from nass.separation import SeparationBatch, SeparationOutput
    >>> src, noise = torch.randn(1, 800, 2), torch.randn(1, 800)
    >>> batch = SeparationBatch(src.sum(-1) + noise, src, noise, src.sum(-1), ["a"])
    >>> loss, stats = NoiseSISNR(weight=0.5)(SeparationOutput(src, noise, None, None, None), batch, {})
    >>> loss.shape, stats["noise_si-snr"] > 50
    (torch.Size([1]), True)
    """

    name = "noise_si_snr"
    needs = ("output.est_noise", "batch.noise", "batch.mix")
    per_utterance = True

    def __call__(self, output, batch, shared):
        loss = -si_snr(output.est_noise, batch.noise)
        with torch.no_grad():
            mix_score = si_snr(batch.mix.detach().float(), batch.noise.detach().float())
        return loss, {"noise_si-snr": float(-loss.detach().mean()), "noise_si-snr_input": float(mix_score.mean())}


class PatchNCE(LossTerm):
    """The NASS patch-wise contrastive term (:func:`nass.losses.patch_nce.nass_contrastive_loss`).

    Queries: the speakers' masked representations, aligned with the references by the
    speaker PIT permutation (``shared["perm"]``, so :class:`SpeakerPIT` must come earlier
    in the list); positives: ``encode(s_j)``; negatives: the noise's masked representation
    (the last of ``masked_reps``, so ``noise_target: extra_output``). Training only.
    Stats: ``nce`` (unweighted InfoNCE, nats), ``nce_chance`` (``ln K``) and ``nce_loss``
    (the weighted term added to the loss).

    Parameters
    ----------
    sampler : nass.losses.patch_nce.PatchSampler
        The YAML's ``patch_sampler``; must also be in ``modules``.
    criterion : nass.losses.patch_nce.PatchNCELoss
        The YAML's ``patch_nce``.
    weight : float
        The YAML's ``lambda_nce``.

    Example
    -------
    >>> from nass.losses.patch_nce import PatchNCELoss, PatchSampler
    >>> term = PatchNCE(PatchSampler(in_channels=8, proj_dim=16, num_patches=10), PatchNCELoss(), weight=2.0)
    >>> term.name, term.weight, len(term.modules())
    ('patch_nce', 2.0, 1)
    """

    name = "patch_nce"
    needs = ("output.masked_reps", "output.est_noise", "output.encode", "batch.sources", "shared.perm")
    train_only = True

    def __init__(self, sampler, criterion, weight=1.0):
        super().__init__(weight)
        if sampler is None or criterion is None:
            missing = [k for k, v in (("sampler", sampler), ("criterion", criterion)) if v is None]
            raise ValueError(
                f"loss_terms: PatchNCE needs {' and '.join(missing)} (e.g. sampler: !ref <patch_sampler>, "
                "criterion: !ref <patch_nce>)"
            )
        self.sampler = sampler
        self.criterion = criterion
        self._sampler_call = sampler

    def modules(self):
        return [self.sampler]

    def bind(self, modules):
        # call the sampler through its (DDP) wrapper in the Brain's modules
        for key in modules:
            module = modules[key]
            if getattr(module, "module", module) is self.sampler:
                self._sampler_call = module
                return

    def __call__(self, output, batch, shared):
        from nass.losses.patch_nce import nass_contrastive_loss

        num_spks = output.est_sources.shape[-1]
        reps = output.masked_reps  # [M, B, N, L]
        speakers = reps[:num_spks].permute(1, 2, 3, 0)  # [B, N, L, S]
        # align each utterance's estimates with its references (per-utterance permutation)
        query = apply_perm(speakers, shared["perm"]).permute(0, 3, 1, 2)  # [B, S, N, L]
        # positives are detached inside the criterion (reference behaviour): then no graph
        # is needed for them at all
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.criterion.detach_keys):
            positive = torch.stack([output.encode(batch.sources[..., j]) for j in range(num_spks)], dim=1)
        noise_rep = reps[num_spks]  # [B, N, L]
        frames = noise_rep.shape[-1]
        valid = None
        if batch.lengths is not None:
            valid = (batch.lengths.to(noise_rep.device) * frames).floor().long().clamp(1, frames)
        loss, stats = nass_contrastive_loss(
            query, positive, noise_rep, sampler=self._sampler_call, criterion=self.criterion,
            lambda_nce=1.0, num_valid_frames=valid, return_stats=True,
        )
        weighted = float(loss.detach()) * self.weight
        return loss, {"nce": stats["nce"], "nce_chance": stats["nce_chance"], "nce_loss": weighted}


def se_loss(enhanced_w, target_w, loss_type):
    """SE loss of the unified SE+SS model, ``[B, N, L]`` x ``[B, N, L]`` -> scalar (batch mean).

    ``mse``: the paper's squared error summed over the map (Hu et al. ICASSP 2023),
    averaged over the batch so the batch size does not rescale the weight; ``neg_snr``:
    ``10 log10(||e - t||^2 / ||t||^2)`` (dB), invariant to the encoder's scale.

    Example
    -------
    >>> import torch
    >>> t = torch.ones(2, 3, 4)
    >>> float(se_loss(t * 0.5, t, "mse")), round(float(se_loss(t * 0.5, t, "neg_snr")), 2)
    (3.0, -6.02)
    """
    if loss_type == "neg_snr":
        err = ((enhanced_w - target_w) ** 2).flatten(1).sum(-1)
        ref = (target_w**2).flatten(1).sum(-1)
        return (10 * torch.log10((err + 1e-8) / (ref + 1e-8))).mean()
    if loss_type != "mse":
        raise ValueError(f"se_loss_type must be one of {SE_LOSS_TYPES}, got {loss_type!r}")
    return ((enhanced_w - target_w) ** 2).sum() / enhanced_w.shape[0]


class Enhancement(LossTerm):
    """The unified SE+SS enhancement loss: ``enhanced_w`` against ``encode(mix_clean)`` (Hu et al.).

    Gradients of the target's encoding flow into the shared encoder as in the reference.
    ``task = "se"``: the side gradient modulation projects. Stats: ``se_loss``
    (unweighted) and ``se_identity`` (the SE loss of an enhancer that changes nothing).

    Parameters
    ----------
    loss_type : {"mse", "neg_snr"}
        The YAML's ``se_loss_type`` (:func:`se_loss`).
    weight : float
        The YAML's ``se_loss_weight``.

    Raises
    ------
    ValueError
        Unknown ``loss_type`` (at YAML load time).

    Example
    -------
    >>> import torch
    >>> from nass.separation import SeparationBatch, SeparationOutput
    >>> enc = torch.nn.Conv1d(1, 4, 8, stride=4)
    >>> encode = lambda w: enc(w.unsqueeze(1))
    >>> clean = torch.randn(1, 400)
    >>> mix_w = encode(clean + 0.1 * torch.randn(1, 400))
    >>> out = SeparationOutput(None, None, mix_w, mix_w * 0.9, None, encode=encode)
    >>> loss, stats = Enhancement("mse", weight=0.1)(out, SeparationBatch(None, None, None, clean, ["a"]), {})
    >>> loss.shape, sorted(stats)
    (torch.Size([]), ['se_identity', 'se_loss'])
    """

    name = "enhancement"
    needs = ("output.enhanced_w", "output.mix_w", "output.encode", "batch.mix_clean")
    task = "se"

    def __init__(self, loss_type, weight=1.0):
        super().__init__(weight)
        if loss_type not in SE_LOSS_TYPES:
            raise ValueError(f"se_loss_type must be one of {SE_LOSS_TYPES}, got {loss_type!r}")
        self.loss_type = loss_type

    def __call__(self, output, batch, shared):
        target_w = output.encode(batch.mix_clean)
        loss = se_loss(output.enhanced_w, target_w, self.loss_type)
        with torch.no_grad():  # reference value: an enhancer that changes nothing
            identity = se_loss(output.mix_w.detach().float(), target_w.detach().float(), self.loss_type)
        return loss, {"se_loss": float(loss.detach()), "se_identity": float(identity)}


def _unwrap(module):
    return getattr(module, "module", module)


def check_loss_terms(terms, separator, backward, modules=None):
    """Check, before any training, that the terms can be computed with this separator.

    Parameters
    ----------
    terms : list of LossTerm
        The YAML's ``loss_terms``.
    separator : nass.separation.SeparationModel
        The YAML's ``separator`` (or the Brain's, possibly DDP-wrapped).
    backward : str
        The YAML's ``backward`` (``plain`` | ``gradient_modulation``).
    modules : dict, optional
        The YAML's ``modules``: every module a term owns must be there.

    Raises
    ------
    ValueError
        Naming the YAML keys: an empty or non-term list, duplicate names, a term needing an
        output the separator does not give (the noise term or PatchNCE with
        ``noise_target: none``, the enhancement term without an enhancer), a ``shared`` key
        no earlier term provides (PatchNCE before the speaker PIT), a module missing from
        ``modules``, an unknown ``backward`` or ``gradient_modulation`` without an enhancer
        and an ``se`` term.

    Example
    -------
    >>> from speechbrain.lobes.models.dual_path import Encoder, Decoder
    >>> from speechbrain.lobes.models.conv_tasnet import MaskNet
    >>> from nass.separation import MaskingSeparator
    >>> sep = MaskingSeparator(Encoder(16, 32), MaskNet(32, 16, 32, 3, 2, 1, C=2), Decoder(32, 1, 16, 8), num_spks=2)
    >>> check_loss_terms([SpeakerPIT()], sep, "plain")
    >>> check_loss_terms([SpeakerPIT(), NoiseSISNR()], sep, "plain")
    Traceback (most recent call last):
    ...
    ValueError: loss_terms[1] (noise_si_snr) needs output.est_noise, which the separator gives only with noise_target: extra_output (here 'none', and the mask network built with num_spks + 1 outputs); set it or remove the term
    """
    if backward not in BACKWARD_RULES:
        hint = ""
        if backward in ("none", "projection"):
            hint = " (gradient_modulation: projection is now backward: gradient_modulation)"
        raise ValueError(f"backward must be one of {BACKWARD_RULES}, got {backward!r}{hint}")
    if not isinstance(terms, (list, tuple)) or not terms:
        raise ValueError("loss_terms must be a non-empty list of nass.losses.terms.LossTerm objects")
    sep = _unwrap(separator)
    has_noise = getattr(sep, "noise_target", "none") == "extra_output"
    has_enhancer = bool(getattr(sep, "has_enhancer", False))
    names, provided = set(), set()
    owned = {id(_unwrap(m)) for m in (modules or {}).values()} if modules is not None else None
    for i, term in enumerate(terms):
        where = f"loss_terms[{i}]"
        if not isinstance(term, LossTerm):
            raise ValueError(f"{where} is a {type(term).__name__}, not a nass.losses.terms.LossTerm")
        where = f"{where} ({term.name})"
        if not term.name:
            raise ValueError(f"{where}: the term class sets no name")
        if term.name in names:
            raise ValueError(f"{where}: the name {term.name!r} appears twice in loss_terms")
        names.add(term.name)
        if term.task not in TASKS:
            raise ValueError(f"{where}: task must be one of {TASKS}, got {term.task!r}")
        for need in term.needs:
            kind, _, field = need.partition(".")
            if kind == "output":
                if field not in OUTPUT_FIELDS:
                    raise ValueError(f"{where} needs {need}, not a SeparationOutput field {OUTPUT_FIELDS}")
                if field == "est_noise" and not has_noise:
                    raise ValueError(
                        f"{where} needs output.est_noise, which the separator gives only with noise_target: "
                        f"extra_output (here {getattr(sep, 'noise_target', None)!r}, and the mask network built "
                        "with num_spks + 1 outputs); set it or remove the term"
                    )
                if field == "enhanced_w" and not has_enhancer:
                    raise ValueError(
                        f"{where} needs output.enhanced_w, which the separator gives only with an enhancer "
                        "(separator: enhancer: ...); add one or remove the term"
                    )
            elif kind == "batch":
                if field not in BATCH_FIELDS:
                    raise ValueError(f"{where} needs {need}, not a SeparationBatch field {BATCH_FIELDS}")
            elif kind == "shared":
                if field not in provided:
                    raise ValueError(
                        f"{where} needs shared.{field}, which no earlier term provides: put the term that "
                        f"provides it (e.g. speaker_pit for perm) before it in loss_terms"
                    )
            else:
                raise ValueError(f"{where}: needs entry {need!r} must start with output., batch. or shared.")
        provided.update(term.provides)
        if owned is not None:
            for module in term.modules():
                if id(_unwrap(module)) not in owned:
                    raise ValueError(
                        f"{where}: its {type(module).__name__} is not in modules, so it would be neither trained, "
                        "moved to the device nor checkpointed; add it under modules (e.g. patch_sampler: "
                        "!ref <patch_sampler>)"
                    )
    if backward == "gradient_modulation":
        if not has_enhancer:
            raise ValueError("backward: gradient_modulation needs an enhancer in the separator (unified SE+SS)")
        if not any(t.task == "se" for t in terms):
            raise ValueError("backward: gradient_modulation needs an se term (enhancement) in loss_terms")
    if has_noise and "noise_si_snr" not in names:
        logger.warning("noise_target: extra_output but no noise_si_snr term in loss_terms: the noise output is not supervised")


def check_hparams(hparams):
    """:func:`check_loss_terms` on a loaded separation YAML (before data preparation or training).

    Parameters
    ----------
    hparams : dict or object
        Its ``loss_terms``, ``separator``, ``backward`` and ``modules`` are read, and
        ``mixture`` when present (a term that estimates the noise needs ``mixture: noisy``).

    Raises
    ------
    ValueError
        A missing key, named with the fix; a noise term with ``mixture: clean``; or see
        :func:`check_loss_terms`.

    Example
    -------
    >>> check_hparams({"separator": None, "modules": {}, "backward": "plain"})
    Traceback (most recent call last):
    ...
    ValueError: the YAML has no loss_terms key: list the loss terms (e.g. loss_terms: [!new:nass.losses.terms.SpeakerPIT]); the recipe YAMLs written by tools/make_recipe_hparams.py have it
    """
    get = hparams.get if isinstance(hparams, dict) else (lambda k, d=None: getattr(hparams, k, d))
    missing = object()
    for key, example in (
        ("loss_terms", "loss_terms: [!new:nass.losses.terms.SpeakerPIT]"),
        ("backward", "backward: plain"),
        ("separator", "separator: !new:nass.separation.MaskingSeparator ..."),
        ("modules", "modules: {separator: !ref <separator>}"),
    ):
        if get(key, missing) is missing:
            hint = ""
            if key == "backward" and get("gradient_modulation", None) is not None:
                hint = f"; gradient_modulation: {get('gradient_modulation')} is now backward: plain | gradient_modulation"
            raise ValueError(
                f"the YAML has no {key} key: list the loss terms (e.g. {example}); the recipe YAMLs written by "
                f"tools/make_recipe_hparams.py have it{hint}"
                if key == "loss_terms" else
                f"the YAML has no {key} key (e.g. {example}){hint}"
            )
    check_loss_terms(get("loss_terms"), get("separator"), get("backward"), get("modules"))
    if get("mixture", None) == "clean":
        for i, term in enumerate(get("loss_terms")):
            if "batch.noise" in term.needs:
                raise ValueError(
                    f"loss_terms[{i}] ({term.name}) estimates the noise, but mixture: clean feeds the "
                    "separator the noise-free mixture, so there is no noise to estimate (its loss stays "
                    "near +30 dB and swamps the speakers' terms): use mixture: noisy, or a speakers-only "
                    "YAML (noise_target: none, e.g. demo/dprnn-tiny.yaml) for clean input"
                )

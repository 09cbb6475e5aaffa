"""The corrector contract and the registry of correction modes (GeCo, Fast-GeCo), stated once.

Wang et al., "Noise-robust Speech Separation with Fast Generative Correction",
Interspeech 2024, arXiv 2406.07461; reference ``WangHelin1997/Fast-GeCo``
(``geco/model.py`` + ``geco/util/inference.py``: GeCo; ``fastgeco/model.py`` +
``eval-fastgeco.py``: Fast-GeCo).

A *mode* is what the YAML key ``correction_mode``, the YAML list ``eval_correction_modes``
and the ``--correction`` options of ``nass-separate`` / ``nass-evaluate`` name. Each entry
of :data:`CORRECTION_MODES` says, in one place, how the mode samples at inference, how
many reverse steps it takes, which training objective :class:`~nass.brains.correction.CorrectionBrain`
minimises and how validation scores it. Everything else (the Brain, the runner, the
evaluation, the inference wrapper, the command line, the demo) looks the mode up with
:func:`get_mode` instead of comparing names.

This module imports neither torch nor the score network (a mode's sampler calls the
corrector's sampling method), so the command line can list the modes without loading them.

Adding a mode: a :class:`CorrectionMode` entry in :data:`CORRECTION_MODES` (its sampler a
function of this module calling the corrector, its objective one that ``GeCoModel.forward``
knows, :data:`nass.correction.model.OBJECTIVES`); see
``docs/DEVELOPING.md``, "Where a new ... goes".
"""

import dataclasses
from typing import Callable, Protocol, runtime_checkable


class UnknownCorrectionMode(ValueError):
    """A correction mode that is not in :data:`CORRECTION_MODES` (the message lists the known ones)."""


@runtime_checkable
class Corrector(Protocol):
    """What a corrector gives inference, evaluation and the :class:`CorrectionBrain`; stated once.

    A corrector refines *one separated source at a time*: it takes the separator's
    estimate ``y`` of a speaker and the mixture ``m`` it came from, both ``[batch, time]``
    at the separator's rate, and returns the corrected waveform ``[batch, time]``.

    - ``correct(y_wave, m_wave, mode, num_steps) -> [batch, time]``: inference
      (:class:`nass.inference.Separator` calls it once per separated speaker, with
      positional arguments; no gradient); ``mode`` a key of :data:`CORRECTION_MODES`,
      ``num_steps`` used by the modes whose :attr:`CorrectionMode.takes_num_steps` is
      true. The output is at the input's scale.
    - ``forward(y_wave, m_wave, target_wave, objective) -> scalar loss``: training
      (the Brain calls the possibly DDP-wrapped module, so every back-propagated
      evaluation runs inside ``forward``); ``objective`` is a mode's
      :attr:`CorrectionMode.objective`, ``target_wave`` the clean source ``[batch, time]``.
    - ``score_model``: the ``torch.nn.Module`` whose weights are trained, averaged (EMA)
      and saved (:func:`nass.correction.save_corrector`).

    :class:`nass.correction.GeCoModel` is the corrector of both modes.

    Example
    -------
    >>> from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform
    >>> isinstance(GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform()), Corrector)
    True
    >>> isinstance(object(), Corrector)
    False
    """

    score_model: object

    def correct(self, y_wave, m_wave, mode, num_steps):
        """``[batch, time]`` estimate and mixture -> corrected ``[batch, time]``."""

    def forward(self, y_wave, m_wave, target_wave, objective):
        """A scalar training loss for ``objective``."""


def _pc_sampler(model, y, m, num_steps, snr, corrector_steps, generator):
    """GeCo: predictor-corrector sampling from ``T`` (:meth:`GeCoModel.sample_pc`)."""
    return model.sample_pc(y, m, num_steps=num_steps, snr=snr, corrector_steps=corrector_steps, generator=generator)


def _one_step_sampler(model, y, m, num_steps, snr, corrector_steps, generator):
    """Fast-GeCo: the corrector's ``fast_steps`` steps from ``reverse_start``
    (:meth:`GeCoModel.sample_one_step`, the estimate its fine-tuning loss trains);
    ``num_steps``, ``snr`` and ``corrector_steps`` are not used."""
    del num_steps, snr, corrector_steps
    return model.sample_one_step(y, m, generator=generator)


@dataclasses.dataclass(frozen=True)
class CorrectionMode:
    """One correction mode: sampling, number of steps, training objective, validation.

    Attributes
    ----------
    name : str
        The value users write (YAML ``correction_mode``, ``--correction``); also the
        suffix of its evaluation files (``test_metrics_<name>.csv``, ``examples_<name>/``).
    title : str
        The method's name in the paper.
    objective : str
        The loss ``GeCoModel.forward(..., objective=...)`` computes in training:
        ``"dsm"`` (denoising score matching) or ``"fast-geco"`` (``-SI-SNR`` of the
        one-step estimate).
    takes_num_steps : bool
        True: the caller's ``num_steps`` (GeCo's ``N``, YAML ``eval_steps`` /
        ``valid_steps``, ``--steps``) sets the reverse steps; False: the corrector's own
        ``fast_steps`` (what it was fine-tuned for) and ``num_steps`` is ignored.
    loss_is_corrected_si_snr : bool
        True: the validation loss is ``-SI-SNR`` of the corrected estimate, so validation
        needs no sampling; False: validation samples ``valid_steps`` steps on the first
        ``valid_si_snr_utterances`` utterances to measure it.
    sampler : callable
        ``sampler(model, Y, M, num_steps, snr, corrector_steps, generator) -> X0``: complex
        spectrograms ``[batch, F, frames]`` (``model`` a :class:`~nass.correction.GeCoModel`,
        whose ``sample_pc`` / ``sample_one_step`` do the work).
    source : str
        Paper section and reference file.

    Example
    -------
    >>> get_mode("geco").label(30), get_mode("fast-geco").label(30)
    ('after geco correction (N=30)', 'after fast-geco correction (one step)')
    """

    name: str
    title: str
    objective: str
    takes_num_steps: bool
    loss_is_corrected_si_snr: bool
    sampler: Callable
    source: str

    def label(self, num_steps):
        """The line printed above this mode's evaluation table."""
        return f"after {self.name} correction" + (f" (N={num_steps})" if self.takes_num_steps else " (one step)")


#: The correction modes by name (the order of the CLI's choices).
CORRECTION_MODES = {
    "fast-geco": CorrectionMode(
        name="fast-geco", title="Fast-GeCo", objective="fast-geco", takes_num_steps=False,
        loss_is_corrected_si_snr=True, sampler=_one_step_sampler,
        source="arXiv 2406.07461 Sec. 2.3; fastgeco/model.py training_step (one step from t = 0.5), eval-fastgeco.py",
    ),
    "geco": CorrectionMode(
        name="geco", title="GeCo", objective="dsm", takes_num_steps=True,
        loss_is_corrected_si_snr=False, sampler=_pc_sampler,
        source="arXiv 2406.07461; geco/model.py (score matching), geco/util/inference.py (PC, N = 30)",
    ),
}

#: The mode names, in order (``choices`` of the command line).
MODES = tuple(CORRECTION_MODES)

#: The one-step mode: the command line's default and the evaluation's "one step of the
#: corrector before fine-tuning" row.
DEFAULT_MODE = "fast-geco"


def get_mode(name, where="correction mode"):
    """The :class:`CorrectionMode` called ``name``.

    Parameters
    ----------
    name : str or CorrectionMode
        A key of :data:`CORRECTION_MODES` (a mode is returned as it is).
    where : str
        What the value is, for the message (e.g. ``"correction_mode"``, ``"--correction"``).

    Returns
    -------
    CorrectionMode

    Raises
    ------
    UnknownCorrectionMode
        (a ``ValueError``) naming the value and the known modes.

    Example
    -------
    >>> get_mode("geco").objective
    'dsm'
    >>> get_mode("fast")
    Traceback (most recent call last):
    ...
    nass.correction.modes.UnknownCorrectionMode: correction mode: unknown mode 'fast'; known modes: fast-geco, geco
    """
    if isinstance(name, CorrectionMode):
        return name
    try:
        return CORRECTION_MODES[name]
    except (KeyError, TypeError):
        raise UnknownCorrectionMode(
            f"{where}: unknown mode {name!r}; known modes: {', '.join(MODES)}"
        ) from None

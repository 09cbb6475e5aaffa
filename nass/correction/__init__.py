"""GeCo / Fast-GeCo generative correction of separated speech.

Wang et al., "Noise-robust Speech Separation with Fast Generative Correction",
Interspeech 2024, arXiv 2406.07461 (reference code ``WangHelin1997/Fast-GeCo``).

* :mod:`.sdes` -- ``BBEDSDE``, ``OUVESDE``, ``SDE_REGISTRY``, ``get_sde``
* :mod:`.transforms` -- ``SpecTransform`` (8 kHz, n_fft 510, hop 64, |X|^0.5 * 0.15)
* :mod:`.score_model` -- ``ScoreModel`` (diffusers ``UNet2DModel``, NCSN++-style)
* :mod:`.samplers` -- ``pc_sample`` (GeCo), ``fast_geco_sample`` (Fast-GeCo)
* :mod:`.ema` -- ``ExponentialMovingAverage``
* :mod:`.modes` -- ``Corrector`` (the corrector contract), ``CORRECTION_MODES`` /
  ``get_mode`` (the registry of modes: sampler, steps, training objective, validation)
* :mod:`.model` -- ``GeCoModel`` (DSM loss, Fast-GeCo loss, ``correct``),
  ``save_corrector`` / ``load_corrector`` (a folder: ``corrector.json`` + ``corrector.ckpt``)
* :mod:`.report` -- ``correction_summary`` (paired comparison with the identity row, warnings)
* :mod:`.data` -- ``build_triplets`` (separator outputs paired with references, cached),
  ``read_triplets``, ``TripletDataset`` (training crops); training:
  :class:`nass.brains.correction.CorrectionBrain`, recipes ``recipes/*/correction/``
"""

import importlib

#: Public name -> the submodule defining it. Imported on first use (PEP 562), so that
#: ``nass.correction.modes`` (the registry of modes the command line lists) loads without
#: torch or the score network.
_EXPORTS = {
    "ExponentialMovingAverage": "ema",
    "GeCoModel": "model",
    "save_corrector": "model",
    "load_corrector": "model",
    "MODES": "modes",
    "CORRECTION_MODES": "modes",
    "CorrectionMode": "modes",
    "Corrector": "modes",
    "UnknownCorrectionMode": "modes",
    "get_mode": "modes",
    "ald_corrector": "samplers",
    "fast_geco_sample": "samplers",
    "pc_sample": "samplers",
    "reverse_diffusion_predictor": "samplers",
    "ScoreModel": "score_model",
    "SDE": "sdes",
    "SDE_REGISTRY": "sdes",
    "BBEDSDE": "sdes",
    "OUVESDE": "sdes",
    "ReverseSDE": "sdes",
    "get_sde": "sdes",
    "SpecTransform": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

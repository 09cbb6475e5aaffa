"""GeCo / Fast-GeCo generative correction of separated speech.

Wang et al., "Noise-robust Speech Separation with Fast Generative Correction",
Interspeech 2024, arXiv 2406.07461 (reference code ``WangHelin1997/Fast-GeCo``).

* :mod:`.sdes` -- ``BBEDSDE``, ``OUVESDE``, ``SDE_REGISTRY``, ``get_sde``
* :mod:`.transforms` -- ``SpecTransform`` (8 kHz, n_fft 510, hop 64, |X|^0.5 * 0.15)
* :mod:`.score_model` -- ``ScoreModel`` (diffusers ``UNet2DModel``, NCSN++-style)
* :mod:`.samplers` -- ``pc_sample`` (GeCo), ``fast_geco_sample`` (Fast-GeCo)
* :mod:`.ema` -- ``ExponentialMovingAverage``
* :mod:`.model` -- ``GeCoModel`` (DSM loss, Fast-GeCo loss, ``correct``),
  ``save_corrector`` / ``load_corrector`` (a folder: ``corrector.json`` + ``corrector.ckpt``)
* :mod:`.report` -- ``correction_summary`` (paired comparison with the identity row, warnings)
* :mod:`.data` -- ``build_triplets`` (separator outputs paired with references, cached),
  ``read_triplets``, ``TripletDataset`` (training crops); training:
  :class:`nass.brains.correction.CorrectionBrain`, recipes ``recipes/*/correction/``
"""

from nass.correction.ema import ExponentialMovingAverage
from nass.correction.model import MODES, GeCoModel, load_corrector, save_corrector
from nass.correction.samplers import (
    ald_corrector,
    fast_geco_sample,
    pc_sample,
    reverse_diffusion_predictor,
)
from nass.correction.score_model import ScoreModel
from nass.correction.sdes import SDE, SDE_REGISTRY, BBEDSDE, OUVESDE, ReverseSDE, get_sde
from nass.correction.transforms import SpecTransform

__all__ = [
    "SDE",
    "BBEDSDE",
    "OUVESDE",
    "ReverseSDE",
    "SDE_REGISTRY",
    "get_sde",
    "SpecTransform",
    "ScoreModel",
    "pc_sample",
    "fast_geco_sample",
    "reverse_diffusion_predictor",
    "ald_corrector",
    "ExponentialMovingAverage",
    "GeCoModel",
    "MODES",
    "save_corrector",
    "load_corrector",
]

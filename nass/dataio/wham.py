"""WHAM! manifests (two speakers of wsj0-2mix + real ambient noise).

Wichern et al., "WHAM!: Extending Speech Separation to Noisy Environments",
Interspeech 2019 (arXiv 1907.01160). The WHAM! generation scripts
(``wham_scripts``, ``create_wham_from_scratch.py``, http://wham.whisper.ai/) write::

    <data_folder>/wav{8k,16k}/{min,max}/{tr,cv,tt}/{mix_both,mix_clean,mix_single,s1,s2,noise}/*.wav

where ``data_folder`` is the output folder given to the script (often ``wham``).
Always two speakers.
"""

import os

from nass.dataio.librimix import MIXTURES, MODES, check_choice, prepare_versioned
from nass.dataio.manifest import existing_manifests

#: WHAM! has exactly two speakers.
NUM_SPKS = 2


def prepare_wham(
    data_folder,
    save_folder,
    mode="min",
    mixture="noisy",
    splits=("tr", "cv", "tt"),
    sample_rate=8000,
    skip_prep=False,
):
    """Validate a WHAM! version and write one manifest per split.

    Parameters
    ----------
    data_folder : str
        WHAM! root (holds ``wav8k`` / ``wav16k``).
    save_folder : str
        Where ``wham_<split>.csv`` (and ``.options.json`` sidecars) are written.
    mode : {"min", "max"}
        Length mode.
    mixture : {"noisy", "clean"}
        Network input: ``mix_both`` (needs ``noise``) or ``mix_clean`` (wsj0-2mix).
    splits : sequence of str
        Split folders (``tr``, ``cv``, ``tt``).
    sample_rate : int
        Hz; selects ``wav{sample_rate // 1000}k`` and is checked on every file.
    skip_prep : bool
        Only check that the manifests exist and return them.

    Returns
    -------
    dict
        Split -> absolute manifest path.

    Raises
    ------
    nass.dataio.manifest.DatasetError
        Missing folders, unknown splits (the existing ones are listed), and every
        problem found by :func:`nass.dataio.manifest.prepare_splits`.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> from nass.dataio.audio import write_audio
    >>> root = tempfile.mkdtemp()
    >>> for sub in ("mix_both", "s1", "s2", "noise"):
    ...     write_audio(os.path.join(root, "wav8k", "min", "tt", sub, "x.wav"), np.zeros(800, "float32"), 8000)
    >>> out = prepare_wham(root, os.path.join(root, "csv"), splits=["tt"])
    >>> os.path.basename(out["tt"])
    'wham_tt.csv'
    """
    check_choice("mode", mode, MODES)
    check_choice("mixture", mixture, tuple(MIXTURES))
    label = "WHAM!"
    splits = [splits] if isinstance(splits, str) else list(splits)
    save_folder = os.path.abspath(save_folder)
    csv_paths = {s: os.path.join(save_folder, f"wham_{s}.csv") for s in splits}
    if skip_prep:
        return existing_manifests(csv_paths, label)

    fixes = {
        "noisy": "Re-run the WHAM! scripts so that mix_both and noise are written, or set mixture: clean.",
        "clean": "Re-run the WHAM! scripts so that mix_clean is written, or set mixture: noisy.",
    }
    return prepare_versioned("wham", label, data_folder, csv_paths, NUM_SPKS, sample_rate, mode, mixture, fixes)

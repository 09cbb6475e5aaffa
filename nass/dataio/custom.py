"""Manifests for a user's own data laid out like one Libri2Mix version.

Layout (split names chosen by the user)::

    <data_folder>/<split>/mix_both/*.wav     noisy mixtures (network input)
    <data_folder>/<split>/s1/*.wav, s2/*.wav[, s3/*.wav]   one file per speaker, same names
    <data_folder>/<split>/noise/*.wav        the noise in each mixture
    <data_folder>/<split>/mix_clean/*.wav    optional: speech-only mixtures

Files are matched by name across the sub-folders and must have the mixture's
length, the configured sample rate and one channel. Unlike the NASS reference code
(``TzuchengChang/NASS``), which calls such folders "custom" but does not read them with
the Libri2Mix shape, this is exactly the ``wav8k/min/<split>`` level of LibriMix
(``JorisCos/LibriMix``), so a LibriMix split folder can be used as is.
"""

import os

from nass.dataio.librimix import MIXTURES, check_choice, check_no_extra_speaker, check_splits
from nass.dataio.manifest import (
    SplitSpec,
    check_num_spks,
    existing_manifests,
    prepare_splits,
    require_data_folder,
    resolve_subfolders,
)


def prepare_custom(
    data_folder,
    save_folder,
    num_spks=2,
    sample_rate=8000,
    splits=("train", "valid", "test"),
    skip_prep=False,
    mixture="noisy",
):
    """Validate a Libri2Mix-shaped custom folder and write one manifest per split.

    Parameters
    ----------
    data_folder : str
        Folder holding one sub-folder per split.
    save_folder : str
        Where ``custom_<split>.csv`` (and ``.options.json`` sidecars) are written.
    num_spks : int
        2 or 3 (folders ``s1`` .. ``s{num_spks}``).
    sample_rate : int
        Hz, checked on every file.
    splits : sequence of str
        Split folder names.
    skip_prep : bool
        Only check that the manifests exist and return them.
    mixture : {"noisy", "clean"}
        Network input: ``mix_both`` (default; needs ``noise``) or ``mix_clean``.

    Returns
    -------
    dict
        Split -> absolute manifest path. ``mix_clean_wav`` is empty when the split has
        no ``mix_clean`` folder.

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
    ...     write_audio(os.path.join(root, "valid", sub, "u.wav"), np.zeros(800, "float32"), 8000)
    >>> out = prepare_custom(root, os.path.join(root, "csv"), splits=["valid"])
    >>> open(out["valid"]).read().splitlines()[1].endswith(",")  # no mix_clean folder
    True
    """
    check_num_spks(num_spks)
    check_choice("mixture", mixture, tuple(MIXTURES))
    label = "custom data"
    splits = [splits] if isinstance(splits, str) else list(splits)
    save_folder = os.path.abspath(save_folder)
    csv_paths = {s: os.path.join(save_folder, f"custom_{s}.csv") for s in splits}
    if skip_prep:
        return existing_manifests(csv_paths, label)

    data_folder = require_data_folder(data_folder, label)
    check_splits(data_folder, splits, label)
    mix_name = MIXTURES[mixture]
    sources = [f"s{i}" for i in range(1, num_spks + 1)]
    specs = []
    for split in splits:
        split_dir = os.path.join(data_folder, split)
        split_label = f"{label} {split}"
        if mixture == "noisy":
            required, optional = [mix_name, *sources, "noise"], ["mix_clean"]
        else:
            required, optional = [mix_name, *sources], ["noise"]
        fix = (
            f"Each split folder needs {', '.join(required)} sub-folders with one file of the same name per "
            "mixture (optional: " + ", ".join(optional) + ")."
        )
        folders = resolve_subfolders(split_dir, required, optional, split_label, fix)
        check_no_extra_speaker(split_dir, num_spks, split_label)
        options = {
            "dataset": "custom",
            "num_spks": num_spks,
            "sample_rate": sample_rate,
            "mixture": mixture,
            "split": split,
        }
        specs.append(
            SplitSpec(
                label=split_label,
                mix_dir=folders[mix_name],
                source_dirs=[folders[s] for s in sources],
                noise_dir=folders["noise"],
                mix_clean_dir=folders[mix_name] if mixture == "clean" else folders["mix_clean"],
                csv_path=csv_paths[split],
                options=options,
            )
        )
    paths = prepare_splits(specs, sample_rate, num_spks)
    return dict(zip(splits, paths))

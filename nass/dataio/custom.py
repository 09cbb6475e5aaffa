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

``data_folder`` may be given at either depth: the folder of the splits, or a LibriMix
root as ``tools/create_mixtures.py --out`` writes it (``<root>/wav8k/min/<split>``), which
:func:`resolve_custom_folder` descends into; anything else is refused with the exact path
to give. ``tools/create_mixtures.py`` names its splits ``train``, ``dev``, ``test``: the
split names of the Custom recipes.
"""

import os

from nass.dataio.librimix import MIXTURES, check_choice, check_no_extra_speaker
from nass.dataio.manifest import (
    DatasetError,
    SplitSpec,
    check_num_spks,
    existing_manifests,
    list_subfolders,
    prepare_splits,
    require_data_folder,
    resolve_subfolders,
)


def _split_folders(folder):
    """Sub-folders of ``folder`` that look like split folders (hold a ``mix_both`` / ``mix_clean``)."""
    return [
        name for name in list_subfolders(folder)
        if any(os.path.isdir(os.path.join(folder, name, m)) for m in ("mix_both", "mix_clean"))
    ]


def resolve_custom_folder(data_folder, splits, sample_rate=8000, mode="min", label="custom data"):
    """The folder that holds the split folders, from a ``data_folder`` given at either depth.

    Parameters
    ----------
    data_folder : str
        The folder of the splits (``<folder>/<split>/mix_both``), or a LibriMix root
        (``<root>/wav{sample_rate // 1000}k/{mode}/<split>``, what
        ``tools/create_mixtures.py --out`` writes).
    splits : sequence of str
        The split names asked for.
    sample_rate : int
        Hz; selects ``wav8k`` / ``wav16k`` under a LibriMix root.
    mode : {"min", "max"}
        Selects the length mode under a LibriMix root.
    label : str
        Names the data in the messages.

    Returns
    -------
    str
        Absolute folder of the splits.

    Raises
    ------
    nass.dataio.manifest.DatasetError
        One line: a split folder itself was given (the parent to give is named), a
        LibriMix root without this sample rate / mode (the folders that exist are
        named), or a split that does not exist (the splits that do are listed, with the
        options that choose them).

    Example
    -------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for split in ("train", "dev"):
    ...     os.makedirs(os.path.join(d, "Libri2Mix", "wav8k", "min", split, "mix_both"))
    >>> os.makedirs(os.path.join(d, "Libri2Mix", "metadata"))
    >>> resolve_custom_folder(os.path.join(d, "Libri2Mix"), ["train", "dev"]) == os.path.join(d, "Libri2Mix", "wav8k", "min")
    True
    >>> resolve_custom_folder(os.path.join(d, "Libri2Mix"), ["train", "valid"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nass.dataio.manifest.DatasetError: custom data: split(s) 'valid' not found in .../wav8k/min. Splits that exist: dev, train...
    """
    folder = os.path.abspath(data_folder)
    if any(os.path.isdir(os.path.join(folder, m)) for m in ("mix_both", "mix_clean")):
        raise DatasetError(
            f"{label}: {folder} is one split folder (it holds mix_both/). Give the folder of the splits: "
            f"--data_folder={os.path.dirname(folder)}"
        )
    wav = [name for name in list_subfolders(folder) if name.startswith("wav") and name.endswith("k")]
    if wav and not all(os.path.isdir(os.path.join(folder, s)) for s in splits):
        deeper = os.path.join(folder, f"wav{int(sample_rate) // 1000}k", mode)
        if not os.path.isdir(deeper):
            found = [os.path.join(folder, w, m) for w in wav for m in list_subfolders(os.path.join(folder, w))]
            raise DatasetError(
                f"{label}: {folder} is a LibriMix-style root without {deeper}; it has "
                f"{', '.join(found) or 'no <wavNk>/<mode> folder'}. Give --data_folder=<one of them> with the "
                "matching --sample_rate and --mode."
            )
        folder = deeper
    missing = [s for s in splits if not os.path.isdir(os.path.join(folder, s))]
    if missing:
        there = _split_folders(folder)
        raise DatasetError(
            f"{label}: split(s) {', '.join(map(repr, missing))} not found in {folder}. Splits that exist: "
            f"{', '.join(there) or 'none'}. Choose them with --train_split / --valid_split / --test_split "
            "(tools/create_mixtures.py writes train, dev, test)."
        )
    return folder


def prepare_custom(
    data_folder,
    save_folder,
    num_spks=2,
    sample_rate=8000,
    splits=("train", "valid", "test"),
    skip_prep=False,
    mixture="noisy",
    mode="min",
):
    """Validate a Libri2Mix-shaped custom folder and write one manifest per split.

    Parameters
    ----------
    data_folder : str
        Folder holding one sub-folder per split, or a LibriMix root holding
        ``wav{sample_rate // 1000}k/{mode}/<split>`` (:func:`resolve_custom_folder`).
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
    mode : {"min", "max"}
        Only used under a LibriMix root (which length mode to read).

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
    if not splits:
        raise DatasetError(f"{label}: no split requested. Give at least one split.")
    data_folder = resolve_custom_folder(data_folder, splits, sample_rate, mode, label)
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

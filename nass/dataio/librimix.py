"""LibriMix (Libri2Mix / Libri3Mix) manifests.

Layout written by the LibriMix generation scripts (Cosentino et al., "LibriMix: An
Open-Source Dataset for Generalizable Speech Separation", arXiv 2005.11262;
``JorisCos/LibriMix``, README "Features": sample rate, ``min``/``max`` mode,
``mix_clean`` / ``mix_both`` / ``mix_single`` mixtures)::

    <data_folder>/wav{8k,16k}/{min,max}/<split>/{mix_clean,mix_both,mix_single,s1,s2[,s3],noise}/*.wav

where ``data_folder`` is the ``Libri2Mix`` or ``Libri3Mix`` root and the splits are
``train-100``, ``train-360``, ``dev`` and ``test`` (any split folder present on disk
is accepted, e.g. ``train`` in the demo corpus). Same folder convention as
``torchaudio.datasets.LibriMix`` (``root/Libri{N}Mix/wav{sr//1000}k/{mode}/{subset}``).
"""

import os

from nass.dataio.manifest import (
    DatasetError,
    SplitSpec,
    check_num_spks,
    describe_files,
    existing_manifests,
    list_subfolders,
    prepare_splits,
    require_data_folder,
    resolve_subfolders,
)

MIXTURES = {"noisy": "mix_both", "clean": "mix_clean"}
MODES = ("min", "max")


def rate_folder(sample_rate):
    """Folder name of a sample rate in LibriMix / WHAM! (``8000`` -> ``"wav8k"``).

    Raises
    ------
    DatasetError
        If ``sample_rate`` is not a positive multiple of 1000 Hz.

    Example
    -------
    >>> rate_folder(16000)
    'wav16k'
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0 or sample_rate % 1000:
        raise DatasetError(
            f"sample_rate={sample_rate!r}: LibriMix / WHAM! folders exist for whole kHz rates only "
            "(wav8k, wav16k). Set sample_rate=8000 or 16000."
        )
    return f"wav{sample_rate // 1000}k"


def check_choice(name, value, allowed):
    """A :class:`DatasetError` unless ``value`` is one of ``allowed``.

    Example
    -------
    >>> check_choice("mode", "min", MODES)
    """
    if value not in allowed:
        raise DatasetError(f"{name}={value!r} is not valid: use one of {', '.join(map(repr, allowed))}.")


def versions_root(data_folder, sample_rate, mode, label):
    """``<data_folder>/wav{sr}k/<mode>``, with an error that says what exists instead.

    Example
    -------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp(); os.makedirs(os.path.join(d, "wav8k", "min"))
    >>> versions_root(d, 8000, "min", "Libri2Mix").endswith(os.path.join("wav8k", "min"))
    True
    """
    root = os.path.join(data_folder, rate_folder(sample_rate), mode)
    if not os.path.isdir(root):
        rates = [n for n in list_subfolders(data_folder) if n.startswith("wav")]
        found = ", ".join(f"{r}/{m}" for r in rates for m in list_subfolders(os.path.join(data_folder, r))) or "none"
        others = [n for n in list_subfolders(data_folder) if not n.startswith("wav")]
        hint = f" Sub-folders of the data folder: {describe_files(others)}; is one of them the dataset root?" if others else ""
        raise DatasetError(
            f"{label}: {root} does not exist (rate/mode folders found: {found}). Set sample_rate and mode to a "
            f"version that was generated, or generate it.{hint}"
        )
    return root


def check_splits(root, splits, label):
    """All requested splits that are not folders of ``root`` in one error listing the real ones.

    Example
    -------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp(); os.mkdir(os.path.join(d, "dev"))
    >>> check_splits(d, ["dev"], "demo")
    """
    if isinstance(splits, str):
        raise DatasetError(f"{label}: splits must be a list of split names, not the string {splits!r}.")
    if not splits:
        raise DatasetError(f"{label}: no split requested. Give at least one split.")
    available = list_subfolders(root)
    unknown = [s for s in splits if s not in available]
    if unknown:
        raise DatasetError(
            f"{label}: split(s) {', '.join(map(repr, unknown))} not found in {root}. Splits that exist: "
            f"{', '.join(available) or 'none'}. Set `splits` to some of them."
        )


def check_no_extra_speaker(split_dir, num_spks, label):
    """Refuse a folder ``s{num_spks+1}``: the mixtures hold more speakers than configured.

    Example
    -------
    >>> import tempfile
    >>> check_no_extra_speaker(tempfile.mkdtemp(), 2, "demo")
    """
    extra = os.path.join(split_dir, f"s{num_spks + 1}")
    if os.path.isdir(extra):
        raise DatasetError(
            f"{label}: {extra} exists, so the mixtures hold more than num_spks={num_spks} speakers. Set "
            f"num_spks={num_spks + 1} (or point data_folder at the {num_spks}-speaker data)."
        )


def prepare_librimix(
    data_folder,
    save_folder,
    num_spks=2,
    sample_rate=8000,
    mode="min",
    mixture="noisy",
    splits=("train-360", "dev", "test"),
    skip_prep=False,
):
    """Validate a LibriMix version and write one manifest per split.

    Parameters
    ----------
    data_folder : str
        The ``Libri2Mix`` or ``Libri3Mix`` root (holds ``wav8k`` / ``wav16k``).
    save_folder : str
        Where the manifests ``libri{num_spks}mix_<split>.csv`` (and their
        ``.options.json`` sidecars) are written.
    num_spks : int
        2 or 3 (folders ``s1`` .. ``s{num_spks}``).
    sample_rate : int
        Hz; selects ``wav{sample_rate // 1000}k`` and is checked on every file.
    mode : {"min", "max"}
        LibriMix length mode.
    mixture : {"noisy", "clean"}
        Network input ``mix_wav``: ``mix_both`` (speech + noise; needs ``noise``) or
        ``mix_clean`` (then ``mix_clean_wav`` is the same file and ``noise_wav`` is filled
        only if a ``noise`` folder exists).
    splits : sequence of str
        Split folders to prepare (any present on disk).
    skip_prep : bool
        Only check that the manifests exist and return them.

    Returns
    -------
    dict
        Split -> absolute manifest path.

    Raises
    ------
    DatasetError
        Missing folders, unknown splits (the existing ones are listed), and every
        problem found by :func:`nass.dataio.manifest.prepare_splits`.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> from nass.dataio.audio import write_audio
    >>> root = tempfile.mkdtemp()
    >>> for sub in ("mix_both", "mix_clean", "s1", "s2", "noise"):
    ...     write_audio(os.path.join(root, "wav8k", "min", "dev", sub, "a_b.wav"), np.zeros(1600, "float32"), 8000)
    >>> out = prepare_librimix(root, os.path.join(root, "csv"), splits=["dev"])
    >>> os.path.basename(out["dev"])
    'libri2mix_dev.csv'
    >>> open(out["dev"]).readline().strip()
    'ID,duration,mix_wav,s1_wav,s2_wav,noise_wav,mix_clean_wav'
    """
    check_num_spks(num_spks)
    check_choice("mode", mode, MODES)
    check_choice("mixture", mixture, tuple(MIXTURES))
    label = f"Libri{num_spks}Mix"
    splits = [splits] if isinstance(splits, str) else list(splits)
    save_folder = os.path.abspath(save_folder)
    csv_paths = {s: os.path.join(save_folder, f"libri{num_spks}mix_{s}.csv") for s in splits}
    if skip_prep:
        return existing_manifests(csv_paths, label)

    fixes = {
        "noisy": "Generate the noisy LibriMix version (mix_both and noise), or set mixture: clean.",
        "clean": "Generate LibriMix with its mix_clean mixtures, or set mixture: noisy.",
    }
    return prepare_versioned("librimix", label, data_folder, csv_paths, num_spks, sample_rate, mode, mixture, fixes)


def prepare_versioned(dataset, label, data_folder, csv_paths, num_spks, sample_rate, mode, mixture, fixes):
    """Validate and write the manifests of a ``wav{8k,16k}/{min,max}/<split>/<part>/`` layout.

    Shared by :func:`prepare_librimix` and :func:`nass.dataio.wham.prepare_wham` (WHAM! uses
    the LibriMix layout with splits ``tr/cv/tt``).

    Parameters
    ----------
    dataset : str
        Key stored in the manifests' option sidecars (``"librimix"``, ``"wham"``).
    label : str
        Dataset name used in messages (``"Libri2Mix"``, ``"WHAM!"``).
    data_folder : str
        Root holding ``wav8k`` / ``wav16k``.
    csv_paths : dict
        Split -> manifest path (the splits to prepare, in order).
    num_spks, sample_rate, mode, mixture
        As :func:`prepare_librimix`.
    fixes : dict
        ``{"noisy": str, "clean": str}``: the fix named when a required part is missing.

    Returns
    -------
    dict
        Split -> absolute manifest path.

    Raises
    ------
    DatasetError
        See :func:`prepare_librimix`.

    Example
    -------
    See :func:`prepare_librimix` and :func:`nass.dataio.wham.prepare_wham`.
    """
    splits = list(csv_paths)
    data_folder = require_data_folder(data_folder, label)
    root = versions_root(data_folder, sample_rate, mode, label)
    check_splits(root, splits, label)
    mix_name = MIXTURES[mixture]
    sources = [f"s{i}" for i in range(1, num_spks + 1)]
    specs = []
    for split in splits:
        split_dir = os.path.join(root, split)
        split_label = f"{label} {rate_folder(sample_rate)}/{mode}/{split}"
        if mixture == "noisy":
            required, optional = [mix_name, *sources, "noise"], ["mix_clean"]
        else:
            required, optional = [mix_name, *sources], ["noise"]
        folders = resolve_subfolders(split_dir, required, optional, split_label, fixes[mixture])
        check_no_extra_speaker(split_dir, num_spks, split_label)
        options = {
            "dataset": dataset,
            "num_spks": num_spks,
            "sample_rate": sample_rate,
            "mode": mode,
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

"""One entry point for data preparation, keyed by an explicit ``dataset`` name.

Recipes call :func:`prepare_dataset` with the ``dataset`` key of their YAML; the
dataset is never guessed from the path (the NASS reference code switches on
``"Libri" in data_folder``, which silently mis-prepares a folder named otherwise).
"""

import logging

from nass.dataio.custom import prepare_custom
from nass.dataio.librimix import prepare_librimix
from nass.dataio.manifest import DatasetError
from nass.dataio.wham import NUM_SPKS as WHAM_NUM_SPKS
from nass.dataio.wham import prepare_wham

logger = logging.getLogger(__name__)


def _librimix(data_folder, save_folder, num_spks, sample_rate, mode, mixture, splits, skip_prep):
    kwargs = {} if splits is None else {"splits": splits}
    return prepare_librimix(
        data_folder,
        save_folder,
        num_spks=num_spks,
        sample_rate=sample_rate,
        mode=mode,
        mixture=mixture,
        skip_prep=skip_prep,
        **kwargs,
    )


def _wham(data_folder, save_folder, num_spks, sample_rate, mode, mixture, splits, skip_prep):
    if num_spks != WHAM_NUM_SPKS:
        raise DatasetError(f"WHAM! has {WHAM_NUM_SPKS} speakers but num_spks={num_spks}: set num_spks=2.")
    kwargs = {} if splits is None else {"splits": splits}
    return prepare_wham(
        data_folder, save_folder, mode=mode, mixture=mixture, sample_rate=sample_rate, skip_prep=skip_prep, **kwargs
    )


def _custom(data_folder, save_folder, num_spks, sample_rate, mode, mixture, splits, skip_prep):
    # ``mode`` (LibriMix min/max) only selects wav8k/<mode> when data_folder is a LibriMix root
    kwargs = {} if splits is None else {"splits": splits}
    return prepare_custom(
        data_folder,
        save_folder,
        num_spks=num_spks,
        sample_rate=sample_rate,
        skip_prep=skip_prep,
        mixture=mixture,
        mode=mode,
        **kwargs,
    )


#: ``dataset`` key -> preparation function (same arguments as :func:`prepare_dataset`).
DATASETS = {"librimix": _librimix, "wham": _wham, "custom": _custom}


def prepare_dataset(
    dataset,
    data_folder,
    save_folder,
    num_spks=2,
    sample_rate=8000,
    mode="min",
    mixture="noisy",
    splits=None,
    skip_prep=False,
):
    """Validate a dataset and write (or reuse) one manifest per split.

    Parameters
    ----------
    dataset : {"librimix", "wham", "custom"}
        Which layout ``data_folder`` has (see :mod:`nass.dataio.librimix`,
        :mod:`nass.dataio.wham`, :mod:`nass.dataio.custom`).
    data_folder : str
        Dataset root (``Libri2Mix`` / ``Libri3Mix`` root, WHAM! root, or custom folder).
    save_folder : str
        Where the manifests are written.
    num_spks : int
        2 or 3 (WHAM!: 2).
    sample_rate : int
        Hz, checked on every file.
    mode : {"min", "max"}
        LibriMix / WHAM! length mode; ignored for ``custom``.
    mixture : {"noisy", "clean"}
        Network input: ``mix_both`` or ``mix_clean``.
    splits : sequence of str, optional
        Splits to prepare; ``None`` takes the dataset's default
        (LibriMix ``train-360, dev, test``; WHAM! ``tr, cv, tt``; custom ``train, valid, test``).
    skip_prep : bool
        Only check that the manifests exist and return them.

    Returns
    -------
    dict
        Split -> absolute manifest path.

    Raises
    ------
    ValueError
        Unknown ``dataset`` (the valid keys are listed).
    nass.dataio.manifest.DatasetError
        Any problem with the data (see the dataset functions).

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> from nass.dataio.audio import write_audio
    >>> root = tempfile.mkdtemp()
    >>> for sub in ("mix_both", "s1", "s2", "noise"):
    ...     write_audio(os.path.join(root, "test", sub, "u.wav"), np.zeros(800, "float32"), 8000)
    >>> out = prepare_dataset("custom", root, os.path.join(root, "csv"), splits=["test"])
    >>> sorted(out)
    ['test']
    >>> prepare_dataset("libri", root, root)
    Traceback (most recent call last):
    ...
    ValueError: dataset='libri' is not known: use one of 'custom', 'librimix', 'wham'.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is not known: use one of {', '.join(map(repr, sorted(DATASETS)))}.")
    logger.info("Preparing %s data from %s into %s", dataset, data_folder, save_folder)
    return DATASETS[dataset](data_folder, save_folder, num_spks, sample_rate, mode, mixture, splits, skip_prep)


def main(argv=None):
    """``nass-prepare DATASET DATA_FOLDER SAVE_FOLDER [--splits ...]``: :func:`prepare_dataset` as a command.

    Validates the folder and writes one manifest CSV per split (what ``nass-evaluate
    --manifest`` and the recipes read); prints ``split: path (N utterances)``.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0, or 2 after a one-line message on stderr naming the problem and the fix.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> from nass.dataio.audio import write_audio
    >>> root = tempfile.mkdtemp()
    >>> for sub in ("mix_both", "s1", "s2", "noise"):
    ...     write_audio(os.path.join(root, "test", sub, "u.wav"), np.zeros(800, "float32"), 8000)
    >>> main(["custom", root, os.path.join(root, "csv"), "--splits", "test"])  # doctest: +ELLIPSIS
    test: .../csv/custom_test.csv (1 utterances)
    0
    """
    import argparse
    import sys

    from nass.dataio.manifest import read_manifest

    parser = argparse.ArgumentParser(
        prog="nass-prepare",
        description="Check a dataset folder and write one manifest CSV per split (nass.dataio.prepare.prepare_dataset).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("dataset", choices=sorted(DATASETS), help="layout of DATA_FOLDER (never guessed)")
    parser.add_argument("data_folder", help="LibriMix root, WHAM! root, or custom folder (or its LibriMix-style root)")
    parser.add_argument("save_folder", help="where the manifests go")
    parser.add_argument("--splits", nargs="+", default=None,
                        help="split names (none given: librimix train-360 dev test, wham tr cv tt, custom train valid test)")
    parser.add_argument("--num_spks", type=int, default=2, help="speakers per mixture")
    parser.add_argument("--sample_rate", type=int, default=8000, help="Hz, checked on every file")
    parser.add_argument("--mode", choices=("min", "max"), default="min", help="LibriMix / WHAM! length mode")
    parser.add_argument("--mixture", choices=("noisy", "clean"), default="noisy", help="network input")
    args = parser.parse_args(argv)
    try:
        out = prepare_dataset(args.dataset, args.data_folder, args.save_folder, num_spks=args.num_spks,
                              sample_rate=args.sample_rate, mode=args.mode, mixture=args.mixture, splits=args.splits)
    except (DatasetError, ValueError, OSError) as exc:
        print(f"{parser.prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    for split, path in out.items():
        print(f"{split}: {path} ({len(read_manifest(path, args.num_spks))} utterances)")
    return 0

"""The papers' table rows, the commands that reproduce them, and our results beside theirs.

This module is the ONE place where the published numbers of the three papers live
(:data:`ROWS`); ``README.md`` and ``docs/results.md`` point here. ``tools/reproduce.py``
and the ``nass-reproduce`` console command are thin wrappers around :func:`main`::

    nass-reproduce --list                      # every row: paper, table, metric, published value, YAML, seeds
    nass-reproduce --dry-run                   # the exact commands (add --nproc_per_node 4 for torchrun)
    nass-reproduce --data_root /data           # train what is missing, evaluate, write reproduction.md/.csv
    nass-reproduce --tiny                      # the same machinery on the demo corpus at 2 steps per run

Each row names a recipe (``recipes/<Dataset>/<task>/train.py``), a generated YAML and the
overrides that set the paper's split, epochs, crops, speed perturbation and dynamic mixing,
plus the seeds. Rows that use the same recipe, YAML and overrides share one run (one
output folder per seed), so a separator trained for one table row is reused by another.
A run is complete when its test table (``<run>/test/test_metrics*.csv``) has its ``mean``
row; otherwise its command is launched again with the same ``--output_folder``, where the
SpeechBrain checkpointer resumes it.

Sources of the published values: ``/work/shared/DESIGN.md`` ("Reference results") and, for
GM-DPRNN only, the README's results paragraph before issue 22. Neither names the papers'
table numbers, so ``table`` is ``None`` ("not in DESIGN.md") everywhere; a value that
neither document gives is ``None`` and never guessed.
"""

import argparse
import csv
import datetime
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from nass.dataio.audio import atomic_write

#: Repository root (recipes, YAMLs and git are looked up here).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The three papers, by key.
PAPERS = {
    "nass": 'Zhang et al., "Noise-Aware Speech Separation with Contrastive Learning", ICASSP 2024, arXiv 2305.10761',
    "gm": "Hu et al., unified speech enhancement and separation with gradient modulation, ICASSP 2023, "
          "arXiv 2302.11131",
    "geco": 'Wang et al., "Noise-robust Speech Separation with Fast Generative Correction", Interspeech 2024, '
            "arXiv 2406.07461",
}

#: Metrics compared, as named in the recipes' ``test_metrics.csv`` (dB, test-split mean).
METRICS = {"si-snr_i": "SI-SNRi (dB)", "sdr_i": "SDRi (dB)"}

#: Seeds of every paper-scale row (the papers' seed counts are not in DESIGN.md).
DEFAULT_SEEDS = (1234, 1235, 1236)

#: Banner of every ``--tiny`` row and report.
TINY_NOTE = "tiny: not comparable to the paper"

SEP_LIBRIMIX = "recipes/LibriMix/separation/train.py"
SEP_WHAM = "recipes/WHAM/separation/train.py"
CORRECTION = "recipes/LibriMix/correction/train.py"

_DESIGN = "DESIGN.md 'Reference results'; table number not in DESIGN.md"
_SPEED = ["--speed_perturb_speeds=[95,100,105]", "--speed_perturb_noise=False"]
_NO_DM = ["--dynamic_mixing=False"]
_NASS_SETUP = ("train-100, 200 epochs, batch 1, 4 s crops, Adam 1.5e-4, speed perturbation 95/100/105 % of the "
               "sources (not the noise), no dynamic mixing (not in DESIGN.md; the YAML's default)")
_GM_SETUP = ("train-360, 120 epochs, batch 1, full utterances, Adam 1.5e-4, speed perturbation 95/100/105 % of the "
             "sources, no dynamic mixing (not in DESIGN.md; the YAML's default)")


@dataclass(frozen=True)
class Row:
    """One published table row and the run that reproduces it.

    Attributes
    ----------
    key : str
        Unique name, ``<paper>/<data>/<system>``.
    paper : str
        Key of :data:`PAPERS`.
    system : str
        The row's label in the paper's terms (e.g. ``"NASS-SepFormer"``).
    data : str
        ``"libri2mix"``, ``"libri3mix"`` or ``"wham"``: which data folder it needs.
    recipe : str
        The recipe's ``train.py``, relative to the repository root.
    yaml : str
        The paper-scale YAML, relative to the repository root.
    overrides : tuple of str
        ``--key=value`` arguments after the YAML (split, epochs, crops, augmentation).
    published : dict
        ``{metric: dB or None}`` for every key of :data:`METRICS`; None: not in DESIGN.md.
    source : str
        Where the published values come from.
    setup : str
        The paper's setup in words (what the overrides encode).
    table : str or None
        The paper's table number; None: not in DESIGN.md.
    depends : tuple of (str, str)
        ``(override key, row key)``: the run folder of another row passed as
        ``--<key>=<folder>`` (the GeCo rows need a trained separator, Fast-GeCo also GeCo).
    metrics_csv : str
        The test table of the run, relative to its output folder.
    seeds : tuple of int
        Seeds of the paper-scale run (one output folder each).
    note : str
        Anything else a reader must know about the row.
    """

    key: str
    paper: str
    system: str
    data: str
    recipe: str
    yaml: str
    overrides: tuple
    published: dict
    source: str
    setup: str
    table: str = None
    depends: tuple = ()
    metrics_csv: str = "test/test_metrics.csv"
    seeds: tuple = DEFAULT_SEEDS
    note: str = ""

    @property
    def dataset(self):
        """The data set in the papers' words (``"Libri2Mix-noisy"``, ``"WHAM!"``)."""
        return {"libri2mix": "Libri2Mix-noisy", "libri3mix": "Libri3Mix-noisy", "wham": "WHAM!"}[self.data]


def _sep_row(paper, data, model, method, system, published, source, note=""):
    folder = {"libri2mix": "recipes/LibriMix/separation/hparams/libri2mix",
              "libri3mix": "recipes/LibriMix/separation/hparams/libri3mix",
              "wham": "recipes/WHAM/separation/hparams"}[data]
    if paper == "gm":
        overrides = ["--train_split=train-360", "--N_epochs=120", "--training_signal_len=0"]
        setup = _GM_SETUP
    else:
        split = "tr" if data == "wham" else "train-100"
        overrides = [f"--train_split={split}", "--N_epochs=200", "--training_signal_len=32000"]
        setup = _NASS_SETUP.replace("train-100", split) if data == "wham" else _NASS_SETUP
    return Row(key=f"{paper}/{data}/{model}{method}", paper=paper, system=system, data=data,
               recipe=SEP_WHAM if data == "wham" else SEP_LIBRIMIX, yaml=f"{folder}/{model}{method}.yaml",
               overrides=tuple(overrides + _SPEED + _NO_DM), published=published, source=source, setup=setup,
               note=note)


def _none():
    return {m: None for m in METRICS}


def _pub(si_snr_i, sdr_i):
    return {"si-snr_i": si_snr_i, "sdr_i": sdr_i}


_NASS_BASE_NOTE = ("the YAML's LR schedule halves from epoch 5 (SpeechBrain recipe); the NASS reference "
                   "(dont_halve_until_epoch 50) is in *-nass.yaml only")
_GM_BASE_NOTE = ("setup of the paper's GM rows (120 epochs, full utterances); the baseline's own setup "
                 "is not in DESIGN.md")

#: Every published table row, in the papers' order.
ROWS = (
    # ---- NASS (Zhang et al.): baseline vs NASS, train-100
    _sep_row("nass", "libri2mix", "sepformer", "", "SepFormer (baseline)", _pub(13.2, 13.8),
             "Zhang et al. via " + _DESIGN, _NASS_BASE_NOTE),
    _sep_row("nass", "libri2mix", "sepformer", "-nass", "NASS-SepFormer", _pub(14.4, 15.0), "Zhang et al. via " + _DESIGN),
    _sep_row("nass", "libri2mix", "dprnn", "", "DPRNN (baseline)", _none(), "not in DESIGN.md", _NASS_BASE_NOTE),
    _sep_row("nass", "libri2mix", "dprnn", "-nass", "NASS-DPRNN", _none(), "not in DESIGN.md"),
    _sep_row("nass", "wham", "sepformer", "", "SepFormer (baseline)", _none(), "not in DESIGN.md", _NASS_BASE_NOTE),
    _sep_row("nass", "wham", "sepformer", "-nass", "NASS-SepFormer", _pub(16.5, 16.8), "Zhang et al. via " + _DESIGN),
    _sep_row("nass", "wham", "dprnn", "", "DPRNN (baseline)", _none(), "not in DESIGN.md", _NASS_BASE_NOTE),
    _sep_row("nass", "wham", "dprnn", "-nass", "NASS-DPRNN", _none(), "not in DESIGN.md"),
    # ---- unified SE+SS with gradient modulation (Hu et al.): train-360, with and without GM
    _sep_row("gm", "libri2mix", "sepformer", "", "SepFormer", _pub(14.9, 15.4), "Hu et al. via " + _DESIGN,
             _GM_BASE_NOTE),
    _sep_row("gm", "libri2mix", "sepformer", "-unified", "unified SE+SS SepFormer, no GM", _none(), "not in DESIGN.md"),
    _sep_row("gm", "libri2mix", "sepformer", "-unified-gm", "GM-SepFormer", _pub(16.0, 16.5), "Hu et al. via " + _DESIGN),
    _sep_row("gm", "libri2mix", "dprnn", "", "DPRNN", _none(), "not in DESIGN.md", _GM_BASE_NOTE),
    _sep_row("gm", "libri2mix", "dprnn", "-unified", "unified SE+SS DPRNN, no GM", _none(), "not in DESIGN.md"),
    _sep_row("gm", "libri2mix", "dprnn", "-unified-gm", "GM-DPRNN", _pub(15.4, 16.0),
             "Hu et al. via README.md's results paragraph before issue 22; not in DESIGN.md (check against the paper)"),
    _sep_row("gm", "libri3mix", "sepformer", "", "SepFormer", _none(), "not in DESIGN.md", _GM_BASE_NOTE),
    _sep_row("gm", "libri3mix", "sepformer", "-unified", "unified SE+SS SepFormer, no GM", _none(), "not in DESIGN.md"),
    _sep_row("gm", "libri3mix", "sepformer", "-unified-gm", "GM-SepFormer", _pub(15.8, 16.4), "Hu et al. via " + _DESIGN),
    # ---- GeCo / Fast-GeCo (Wang et al.): SepFormer, + GeCo, + Fast-GeCo on Libri2Mix-noisy
    Row(key="geco/libri2mix/sepformer", paper="geco", system="SepFormer", data="libri2mix", recipe=SEP_LIBRIMIX,
        yaml="recipes/LibriMix/separation/hparams/libri2mix/sepformer.yaml",
        overrides=("--train_split=train-100", "--N_epochs=200", "--training_signal_len=32000", *_SPEED, *_NO_DM),
        published=_none(), source="not in DESIGN.md (README before issue 22: GeCo / Fast-GeCo give 22-35 % "
                                  "relative SI-SNR improvement over SepFormer; no absolute values)",
        setup="the separator GeCo corrects: " + _NASS_SETUP + " (the paper's separator setup is not in DESIGN.md; "
              "train-100 as the correction YAMLs' reference)",
        note="the same run as nass/libri2mix/sepformer"),
    Row(key="geco/libri2mix/sepformer+geco", paper="geco", system="SepFormer + GeCo", data="libri2mix",
        recipe=CORRECTION, yaml="recipes/LibriMix/correction/hparams/geco.yaml",
        overrides=("--train_split=train-100",), published=_none(), source="not in DESIGN.md",
        setup="GeCo on the SepFormer row's estimates: train-100, 100 epochs, batch 16, 256-frame crops, Adam 1e-4, "
              "30 reverse steps at test time (geco.yaml)",
        depends=(("separator_folder", "geco/libri2mix/sepformer"),), metrics_csv="test/test_metrics_geco.csv"),
    Row(key="geco/libri2mix/sepformer+fast-geco", paper="geco", system="SepFormer + Fast-GeCo", data="libri2mix",
        recipe=CORRECTION, yaml="recipes/LibriMix/correction/hparams/fast-geco.yaml",
        overrides=("--train_split=train-100",), published=_none(), source="not in DESIGN.md",
        setup="Fast-GeCo from the GeCo row: one step from t = 0.5, SI-SNR loss, train-100, 20 epochs, batch 16, "
              "Adam 1e-5 (fast-geco.yaml)",
        depends=(("separator_folder", "geco/libri2mix/sepformer"), ("geco_folder", "geco/libri2mix/sepformer+geco")),
        metrics_csv="test/test_metrics_fast-geco.csv"),
)

#: Overrides of every ``--tiny`` separation run (demo YAMLs).
TINY_SEPARATION = ("--optimizer_step_limit=2", "--N_epochs=1", "--training_signal_len=4000", "--batch_size=2",
                   "--eval_num_workers=0", "--n_audio_to_save=0", "--noprogressbar")
#: Overrides of every ``--tiny`` correction run (demo correction YAMLs).
TINY_CORRECTION = ("--optimizer_step_limit=2", "--N_epochs=1", "--train_rows_per_epoch=4", "--batch_size=2",
                   "--crop_samples=2048", "--valid_utterances=1", "--eval_steps=2", "--eval_pesq_estoi=False",
                   "--eval_num_workers=0", "--n_audio_to_save=0", "--noprogressbar")
#: Mixtures per split of the ``--tiny`` subset of the demo corpus.
TINY_UTTERANCES = 4
#: Splits of the demo corpus.
TINY_SPLITS = ("train", "dev", "test")


class ReproduceError(ValueError):
    """A row, data folder or result table the tool cannot use (the message names it and the fix)."""


# ----------------------------------------------------------------------------- rows and commands
def find_row(key, rows=ROWS):
    """The row named ``key``.

    Raises
    ------
    ReproduceError
        Unknown key (the known ones are listed).

    Example
    -------
    >>> find_row("nass/libri2mix/sepformer-nass").published
    {'si-snr_i': 14.4, 'sdr_i': 15.0}
    """
    for row in rows:
        if row.key == key:
            return row
    raise ReproduceError(f"unknown row {key!r}; known rows: {', '.join(r.key for r in rows)} (see --list)")


def select_rows(keys=None, rows=ROWS):
    """The rows named in ``keys`` (all when empty), plus the rows they depend on, in table order.

    Example
    -------
    >>> [r.key for r in select_rows(["geco/libri2mix/sepformer+fast-geco"])]
    ['geco/libri2mix/sepformer', 'geco/libri2mix/sepformer+geco', 'geco/libri2mix/sepformer+fast-geco']
    """
    if not keys:
        return list(rows)
    wanted = set()

    def add(key):
        if key not in wanted:
            wanted.add(key)
            for _, dep in find_row(key, rows).depends:
                add(dep)

    for key in keys:
        add(key)
    return [r for r in rows if r.key in wanted]


def tiny_yaml(row):
    """The demo-size YAML of a row (``hparams/demo/<model>-tiny<method>.yaml``), relative to the root.

    Example
    -------
    >>> tiny_yaml(find_row("gm/libri2mix/sepformer-unified-gm"))
    'recipes/LibriMix/separation/hparams/demo/sepformer-tiny-unified-gm.yaml'
    >>> tiny_yaml(find_row("geco/libri2mix/sepformer+geco"))
    'recipes/LibriMix/correction/hparams/demo/geco-tiny.yaml'
    """
    stem = os.path.basename(row.yaml)[: -len(".yaml")]
    if row.recipe == CORRECTION:
        return f"recipes/LibriMix/correction/hparams/demo/{stem}-tiny.yaml"
    model, _, method = stem.partition("-")
    return f"recipes/LibriMix/separation/hparams/demo/{model}-tiny{'-' + method if method else ''}.yaml"


def correction_mode_of(row):
    """The :class:`nass.correction.modes.CorrectionMode` a correction row trains.

    The correction recipes name their YAMLs after the mode (``geco.yaml``, ``fast-geco.yaml``).

    Raises
    ------
    nass.correction.modes.UnknownCorrectionMode
        A row whose YAML is not named after a mode.

    Example
    -------
    >>> correction_mode_of(find_row("geco/libri2mix/sepformer+fast-geco")).title
    'Fast-GeCo'
    """
    from nass.correction.modes import get_mode

    return get_mode(os.path.basename(row.yaml)[: -len(".yaml")], f"{row.key}: correction YAML {row.yaml}")


def run_name(row, tiny=False):
    """Output sub-folder of a row's run: equal for rows with the same recipe, YAML and overrides.

    Example
    -------
    >>> run_name(find_row("nass/libri2mix/sepformer")) == run_name(find_row("geco/libri2mix/sepformer"))
    True
    >>> run_name(find_row("nass/libri2mix/sepformer-nass"))
    'LibriMix-separation/libri2mix-sepformer-nass_train-100_200ep'
    >>> run_name(find_row("nass/wham/sepformer-nass"), tiny=True)
    'WHAM-separation/sepformer-tiny-nass'
    """
    recipe = "-".join(row.recipe.split("/")[1:3])
    yaml = tiny_yaml(row) if tiny else row.yaml
    stem = os.path.basename(yaml)[: -len(".yaml")]
    if tiny:
        return f"{recipe}/{stem}"
    parent = os.path.basename(os.path.dirname(yaml))
    prefix = f"{parent}-" if parent not in ("hparams",) else ""
    opts = dict(o[2:].split("=", 1) for o in row.overrides)
    tag = opts.get("train_split", "")
    if "N_epochs" in opts:
        tag += f"_{opts['N_epochs']}ep"
    return f"{recipe}/{prefix}{stem}{'_' + tag if tag else ''}"


def with_overrides(cmd, **values):
    """``cmd`` with ``--key=value`` set: an existing ``--key=...`` is replaced, else appended.

    Parameters
    ----------
    cmd : list of str
        A recipe command line.
    **values
        Keys and values (``None`` removes the key).

    Example
    -------
    >>> with_overrides(["train.py", "a.yaml", "--N_epochs=200"], N_epochs=1, seed=7)
    ['train.py', 'a.yaml', '--N_epochs=1', '--seed=7']
    """
    out, seen = [], set()
    for arg in cmd:
        key = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        if key in values:
            seen.add(key)
            if values[key] is not None:
                out.append(f"--{key}={values[key]}")
        else:
            out.append(arg)
    return out + [f"--{k}={v}" for k, v in values.items() if k not in seen and v is not None]


@dataclass
class Plan:
    """Where a reproduction reads its data and writes its runs.

    Attributes
    ----------
    out_root : str
        Parent of every run folder (``<out_root>/<run_name>/<seed>``) and of the reports.
    data_folders : dict
        ``{"libri2mix" | "libri3mix" | "wham": folder}``.
    tiny : bool
        Demo YAMLs, :data:`TINY_SEPARATION` / :data:`TINY_CORRECTION` overrides, every row
        on the 2-speaker demo folder ``data_folders["libri2mix"]``.
    seeds : tuple of int or None
        Seeds of every row (None: each row's own; ``--tiny``: the first of them).
    nproc_per_node : int
        > 1: launch with ``torchrun --nproc_per_node=N`` (the README's multi-GPU form).
    python : str
        Interpreter of single-process commands.
    """

    out_root: str
    data_folders: dict
    tiny: bool = False
    seeds: tuple = None
    nproc_per_node: int = 1
    python: str = field(default_factory=lambda: sys.executable)

    def row_seeds(self, row):
        """Seeds used for ``row``."""
        if self.seeds:
            return tuple(self.seeds)
        return row.seeds[:1] if self.tiny else row.seeds

    def run_folder(self, row, seed):
        """Output folder of ``row``'s run for ``seed``."""
        return os.path.join(self.out_root, run_name(row, self.tiny), str(seed))

    def command(self, row, seed, rows=ROWS):
        """The exact command line (list of str) of ``row``'s run for ``seed``.

        Example
        -------
        >>> plan = Plan("results/reproduce", {"libri2mix": "/data/Libri2Mix"}, python="python")
        >>> " ".join(plan.command(find_row("nass/libri2mix/sepformer-nass"), 1234)[:3])
        'python recipes/LibriMix/separation/train.py recipes/LibriMix/separation/hparams/libri2mix/sepformer-nass.yaml'
        >>> plan.nproc_per_node = 4
        >>> plan.command(find_row("geco/libri2mix/sepformer+geco"), 1234)[:2]
        ['torchrun', '--nproc_per_node=4']
        """
        yaml = tiny_yaml(row) if self.tiny else row.yaml
        if self.tiny:
            extra = list(TINY_CORRECTION if row.recipe == CORRECTION else TINY_SEPARATION)
            if row.recipe == CORRECTION and not correction_mode_of(row).loss_is_corrected_si_snr:
                extra.append("--valid_steps=2")  # validation samples (GeCo): fewer steps
        else:
            extra = list(row.overrides)
        deps = [f"--{k}={self.run_folder(find_row(dep, rows), seed)}" for k, dep in row.depends]
        args = [row.recipe, yaml, f"--data_folder={self.data_folders.get(row.data, '')}", *extra, *deps,
                f"--seed={seed}", f"--output_folder={self.run_folder(row, seed)}"]
        if self.nproc_per_node > 1:
            # README: torchrun --nproc_per_node=N <train.py> <yaml> ... (SpeechBrain 1.1.2 detects torchrun
            # from RANK / LOCAL_RANK); the correction recipe's documented form names the backend
            backend = ["--distributed_backend=nccl"] if row.recipe == CORRECTION else []
            return ["torchrun", f"--nproc_per_node={self.nproc_per_node}", *args, *backend]
        return [self.python, *args]


def data_folder_for(plan, row):
    """The data folder a row reads (``--tiny``: the demo folder for every row).

    Example
    -------
    >>> plan = Plan("out", {"libri2mix": "/d/demo", "wham": "/d/wham"}, tiny=True)
    >>> data_folder_for(plan, find_row("nass/wham/sepformer-nass"))
    '/d/demo'
    """
    return plan.data_folders.get("libri2mix" if plan.tiny else row.data, "")


def missing_data(plan, row, rows=ROWS):
    """Why a row cannot run on this machine (a message naming the folder), or None.

    The data folder and its ``wav8k/min/<split>`` folders (train, valid and test split of
    the row) must exist; ``--tiny`` rows need 2 speakers (the demo corpus has 2); a row
    whose dependency cannot run cannot run either.

    Example
    -------
    >>> plan = Plan("out", {"libri3mix": "/nonexistent/Libri3Mix"})
    >>> missing_data(plan, find_row("gm/libri3mix/sepformer-unified-gm"))
    'data folder /nonexistent/Libri3Mix absent (pass --libri3mix DIR or --data_root DIR holding Libri3Mix)'
    """
    for _, dep in row.depends:
        why = missing_data(plan, find_row(dep, rows), rows)
        if why:
            return f"needs {dep}: {why}"
    if plan.tiny and row.data == "libri3mix":
        return "tiny: the demo corpus has 2 speakers; a Libri3Mix row needs a 3-speaker corpus"
    folder = data_folder_for(plan, row)
    if plan.tiny:
        option = "--demo_folder"
        fix = "build the demo corpus with python tools/build_demo_corpus.py --out data/demo, or pass --demo_folder DIR"
    else:
        option = f"--{row.data}"
        name = {"libri2mix": "Libri2Mix", "libri3mix": "Libri3Mix", "wham": "wham"}[row.data]
        fix = f"pass {option} DIR or --data_root DIR holding {name}"
    if not folder or not os.path.isdir(folder):
        return f"data folder {folder or '(none given)'} absent ({fix})"
    if plan.tiny:
        splits = TINY_SPLITS
    else:
        opts = dict(o[2:].split("=", 1) for o in row.overrides)
        splits = [opts.get(f"{k}_split") or yaml_scalar(os.path.join(ROOT, row.yaml), f"{k}_split")
                  for k in ("train", "valid", "test")]
    for split in splits:
        sub = os.path.join(folder, "wav8k", "min", split)
        if split and not os.path.isdir(sub):
            return f"data folder {sub} absent (the {row.dataset} split {split!r}; generate it or pass another {option})"
    return None


def yaml_scalar(path, key):
    """The plain value of a top-level ``key: value`` line of a YAML file (no code is run).

    Raises
    ------
    ReproduceError
        The file or the key is absent.

    Example
    -------
    >>> yaml_scalar(os.path.join(ROOT, "recipes/WHAM/separation/hparams/sepformer.yaml"), "valid_split")
    'cv'
    """
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = re.match(rf"{re.escape(key)}:\s*([^#\s]+)", line)
                if m:
                    return m.group(1)
    except OSError as e:
        raise ReproduceError(f"{path}: cannot read ({e.strerror}); run from a full nass checkout") from e
    raise ReproduceError(f"{path}: no top-level {key!r}; regenerate it with python tools/make_recipe_hparams.py")


# ----------------------------------------------------------------------------- results
def read_mean_row(path):
    """The ``mean`` row of a recipe's test table as ``{metric: float}``, or None if absent.

    Raises
    ------
    ReproduceError
        The file exists but has no ``mean`` row (an interrupted evaluation).

    Example
    -------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(p, "w").write("ID,si-snr_i,sdr_i\\nu1,1.0,2.0\\nmean,1.0,2.0\\n")
    >>> read_mean_row(p)
    {'si-snr_i': 1.0, 'sdr_i': 2.0}
    """
    from nass.evaluation import MissingMeanRow, read_mean_row

    if not os.path.isfile(path):
        return None
    try:
        return read_mean_row(path)[0]
    except MissingMeanRow:
        raise ReproduceError(f"{path}: no 'mean' row (the evaluation did not finish); delete it and re-run to "
                             "evaluate") from None


def mean_std(values):
    """Mean and sample standard deviation (``nan`` for fewer than 2 values) of the finite values.

    Example
    -------
    >>> mean_std([1.0, 3.0])
    (2.0, 1.4142135623730951)
    >>> mean_std([2.0])[1]
    nan
    """
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else float("nan"))


def summarise(rows, plan, statuses):
    """One result dict per row: published value, our mean ± std over seeds, difference.

    Parameters
    ----------
    rows : list of Row
    plan : Plan
    statuses : dict
        ``{row key: status text}`` (``"skipped: ..."``, ``"not run: ..."``, ``"failed: ..."``);
        skipped and not-run rows get no values, the others are read from their run folders.

    Returns
    -------
    list of dict
        Keys ``key, paper, table, system, dataset, setup, recipe, yaml, seeds, seeds_done, wall_s``,
        per metric ``<m>_published, <m>_mean, <m>_std, <m>_diff`` (dB), and ``status, source, note``.

    Example
    -------
    >>> import tempfile
    >>> plan = Plan(tempfile.mkdtemp(), {}, seeds=(1, 2))
    >>> row = find_row("gm/libri2mix/sepformer-unified-gm")
    >>> for seed, v in ((1, 15.0), (2, 16.0)):
    ...     os.makedirs(os.path.join(plan.run_folder(row, seed), "test"))
    ...     _ = open(os.path.join(plan.run_folder(row, seed), row.metrics_csv), "w").write(
    ...         f"ID,si-snr_i,sdr_i\\nmean,{v},{v}\\n")
    >>> (rec,) = summarise([row], plan, {})
    >>> rec["si-snr_i_published"], rec["si-snr_i_mean"], rec["si-snr_i_diff"], rec["status"]
    (16.0, 15.5, -0.5, 'done')
    """
    out = []
    for row in rows:
        seeds = plan.row_seeds(row)
        per_seed, wall = [], 0.0
        status = statuses.get(row.key)
        # a skipped row has no result of its own, even where a row sharing its run has one
        for seed in (() if status and status.startswith(("skipped", "not run")) else seeds):
            folder = plan.run_folder(row, seed)
            means = read_mean_row(os.path.join(folder, row.metrics_csv))
            if means is not None:
                per_seed.append(means)
                wall += _run_wall(folder)
        rec = dict(key=row.key, paper=PAPERS[row.paper].split(",")[0], table=row.table or "not in DESIGN.md",
                   system=row.system, dataset=row.dataset, setup=TINY_NOTE if plan.tiny else row.setup,
                   recipe=row.recipe, yaml=tiny_yaml(row) if plan.tiny else row.yaml,
                   seeds=" ".join(map(str, seeds)), seeds_done=len(per_seed), wall_s=round(wall, 1),
                   source=row.source, note=row.note)
        for m in METRICS:
            mean, std = mean_std([s.get(m) for s in per_seed])
            pub = row.published.get(m)
            rec[f"{m}_published"] = pub
            rec[f"{m}_mean"], rec[f"{m}_std"] = mean, std
            rec[f"{m}_diff"] = mean - pub if pub is not None and math.isfinite(mean) else float("nan")
        if status is None:
            status = "done" if len(per_seed) == len(seeds) else f"{len(per_seed)} of {len(seeds)} seeds done"
        rec["status"] = (TINY_NOTE + "; " if plan.tiny else "") + status
        out.append(rec)
    return out


def _run_wall(folder):
    try:
        with open(os.path.join(folder, "reproduce_run.json"), encoding="utf-8") as f:
            return float(json.load(f).get("wall_s", 0.0))
    except (OSError, ValueError):
        return 0.0


def _num(x, digits=2):
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _ours(rec, m):
    mean, std = rec[f"{m}_mean"], rec[f"{m}_std"]
    if not math.isfinite(mean):
        return ""
    return _num(mean) + (f" ± {_num(std)}" if math.isfinite(std) else "") + f" (n={rec['seeds_done']})"


def render_markdown(records, env, plan, command, wall_s):
    """``reproduction.md``: our results beside the published ones, with the setup of the machine.

    Example
    -------
    >>> plan = Plan("out", {})
    >>> recs = summarise([find_row("nass/wham/sepformer-nass")], plan, {"nass/wham/sepformer-nass": "skipped"})
    >>> text = render_markdown(recs, {"cpu": "x"}, plan, "nass-reproduce", 1.0)
    >>> "| nass/wham/sepformer-nass |" in text and "| 16.50 |" in text
    True
    """
    L = ["# Reproduction of the papers' tables", ""]
    if plan.tiny:
        L += [f"> **{TINY_NOTE}.** Demo-size YAMLs on the demo corpus at a budget of a few optimiser steps: "
              "this checks that every row's recipe runs end to end, nothing else.", ""]
    L += [f"Written by `{command}` on {datetime.datetime.now().isoformat(timespec='seconds')}. "
          "Published values and their sources: `nass/reproduce.py` (`ROWS`); `--list` prints them.", "",
          f"- Hardware: {env.get('cpu', 'unknown')}, {env.get('cores', '?')} cores, GPU: {env.get('gpu', 'none')}.",
          f"- Software: Python {env.get('python', '?')}, torch {env.get('torch', '?')}, "
          f"speechbrain {env.get('speechbrain', '?')}, nass commit {env.get('nass_commit', 'unknown')}.",
          f"- Wall time: {wall_s:.0f} s for this invocation; per row, `train+eval s` sums the recorded wall time "
          "of the launches that finished its runs (0: reused runs without a record).",
          "- Ours: mean over seeds of the test-split mean, `±` sample standard deviation over seeds, "
          "`n` seeds finished; Δ = ours − published (dB).", ""]
    head = ["row", "paper", "table", "system", "data", "seeds"]
    for label in METRICS.values():
        head += [f"{label} published", f"{label} ours", "Δ"]
    head += ["train+eval s", "status"]
    L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        cells = [r["key"], r["paper"], r["table"], r["system"], r["dataset"], r["seeds"]]
        for m in METRICS:
            pub = r[f"{m}_published"]
            cells += ["not in DESIGN.md" if pub is None else _num(pub), _ours(r, m), _num(r[f"{m}_diff"])]
        cells += [_num(r["wall_s"], 0), r["status"]]
        L.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    L += ["", "## Setups and sources", ""]
    for r in records:
        L.append(f"- `{r['key']}`: {r['setup']}; `{r['recipe']} {r['yaml']}`. Published values: {r['source']}."
                 + (f" Note: {r['note']}." if r["note"] else ""))
    return "\n".join(L) + "\n"


CSV_COLUMNS = (["key", "paper", "table", "system", "dataset", "setup", "recipe", "yaml", "seeds", "seeds_done"]
               + [f"{m}_{k}" for m in METRICS for k in ("published", "mean", "std", "diff")]
               + ["wall_s", "status", "source", "note"])


def write_reports(records, env, plan, command, wall_s):
    """Write ``<out_root>/reproduction.md`` and ``.csv`` (temporary names, then renamed).

    Parameters
    ----------
    records : list of dict
        :func:`summarise`'s output.
    env : dict
        :func:`environment`'s output.
    plan : Plan
    command : str
        The command line shown in the report.
    wall_s : float
        Wall time of the invocation, seconds.

    Returns
    -------
    tuple of str
        Paths of the Markdown and CSV files.

    Example
    -------
    >>> import tempfile
    >>> plan = Plan(tempfile.mkdtemp(), {})
    >>> recs = summarise([find_row("gm/libri2mix/sepformer")], plan, {})
    >>> md, cs = write_reports(recs, {}, plan, "nass-reproduce", 0.0)
    >>> sorted(os.listdir(plan.out_root))
    ['reproduction.csv', 'reproduction.md']
    >>> open(cs).readline().split(",")[:3]
    ['key', 'paper', 'table']
    """
    md = os.path.join(plan.out_root, "reproduction.md")
    cs = os.path.join(plan.out_root, "reproduction.csv")
    with atomic_write(md) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(render_markdown(records, env, plan, command, wall_s))
    with atomic_write(cs) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            w.writeheader()
            for r in records:
                w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else
                                ("" if v is None else v)) for k, v in r.items() if k in CSV_COLUMNS})
    return md, cs


def environment():
    """Hardware and software of this machine: CPU model, cores, GPUs, versions, git commit.

    Example
    -------
    >>> sorted(environment())[:3]
    ['cores', 'cpu', 'gpu']
    """
    env = {"cpu": platform.processor() or "unknown", "cores": os.cpu_count(), "gpu": "none",
           "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    env["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for mod in ("torch", "speechbrain"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - reported, not fatal
            env[mod] = "not installed"
    try:
        import torch

        if torch.cuda.is_available():
            env["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001
        pass
    env["nass_commit"] = git_commit()
    return env


def git_commit():
    """``git rev-parse HEAD`` of the checkout (12 characters, ``-dirty`` when tracked files
    differ), or ``unknown`` outside a git checkout.

    Example
    -------
    >>> isinstance(git_commit(), str)
    True
    """
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head.stdout.strip()[:12] + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ----------------------------------------------------------------------------- running
def make_tiny_corpus(src, dst, n=TINY_UTTERANCES, splits=TINY_SPLITS):
    """A Libri2Mix-shaped subset of ``src``: the first ``n`` mixtures of each split, as symbolic links.

    Parameters
    ----------
    src : str
        A Libri2Mix root (``wav8k/min/<split>/<part>/*.wav``), e.g. the demo corpus.
    dst : str
        The subset's root (created; existing links are kept).
    n : int
        Mixtures per split.

    Returns
    -------
    str
        ``dst``.

    Raises
    ------
    ReproduceError
        A split of ``src`` is absent or has no ``mix_both`` files.

    Example
    -------
    >>> import tempfile, numpy as np
    >>> from nass.dataio.audio import write_audio
    >>> src = tempfile.mkdtemp()
    >>> for i in range(3):
    ...     for part in ("mix_both", "s1"):
    ...         write_audio(os.path.join(src, "wav8k", "min", "dev", part, f"u{i}.wav"), np.zeros(80, "float32"), 8000)
    >>> dst = make_tiny_corpus(src, os.path.join(src, "sub"), n=2, splits=("dev",))
    >>> sorted(os.listdir(os.path.join(dst, "wav8k", "min", "dev", "s1")))
    ['u0.wav', 'u1.wav']
    """
    for split in splits:
        base = os.path.join(src, "wav8k", "min", split)
        mix = os.path.join(base, "mix_both")
        if not os.path.isdir(mix):
            raise ReproduceError(f"{mix}: absent; build the demo corpus (python tools/build_demo_corpus.py "
                                 "--out data/demo) or pass --demo_folder")
        names = sorted(f for f in os.listdir(mix) if f.endswith(".wav"))[:n]
        if not names:
            raise ReproduceError(f"{mix}: no .wav files; rebuild the demo corpus")
        for part in sorted(os.listdir(base)):
            if not os.path.isdir(os.path.join(base, part)):
                continue
            os.makedirs(os.path.join(dst, "wav8k", "min", split, part), exist_ok=True)
            for name in names:
                target = os.path.join(base, part, name)
                link = os.path.join(dst, "wav8k", "min", split, part, name)
                if os.path.exists(target) and not os.path.lexists(link):
                    os.symlink(os.path.abspath(target), link)
    return dst


def subprocess_runner(cmd, log_path):
    """Run ``cmd`` from the repository root, its output appended to ``log_path``; its return code.

    Example
    -------
    >>> import tempfile
    >>> log = os.path.join(tempfile.mkdtemp(), "logs", "a.log")
    >>> subprocess_runner([sys.executable, "-c", "print('hi')"], log), open(log).read()
    (0, 'hi\\n')
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        return subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode


def reproduce(rows, plan, runner=subprocess_runner, echo=print):
    """Train what is missing, evaluate, and return ``(statuses, commands)``.

    A run is reused when its test table has a ``mean`` row; else its command is launched
    (SpeechBrain resumes from the last checkpoint in the same output folder). Rows whose
    data is absent are skipped with a message naming the folder; rows depending on a run
    that failed are not launched.

    Parameters
    ----------
    rows : list of Row
    plan : Plan
    runner : callable
        ``runner(cmd, log_path) -> return code``.
    echo : callable
        Receives one line per decision.

    Returns
    -------
    statuses : dict
        ``{row key: status}`` for rows skipped or failed (others are read from disk).
    commands : list of list of str
        The commands launched, in order.

    Example
    -------
    >>> import tempfile
    >>> plan = Plan(tempfile.mkdtemp(), {"libri3mix": "/nonexistent"})
    >>> statuses, commands = reproduce([find_row("gm/libri3mix/sepformer")], plan, echo=lambda line: None)
    >>> statuses["gm/libri3mix/sepformer"][:36], commands
    ('skipped: data folder /nonexistent ab', [])
    """
    statuses, commands, done_runs, failed = {}, [], {}, set()
    for row in rows:
        why = missing_data(plan, row, rows)
        if why:
            statuses[row.key] = f"skipped: {why}"
            echo(f"skip {row.key}: {why}")
            continue
        bad = [dep for _, dep in row.depends if dep in failed]
        if bad:
            statuses[row.key] = f"not run: {', '.join(bad)} failed"
            failed.add(row.key)
            echo(f"skip {row.key}: depends on {', '.join(bad)}, which failed")
            continue
        for seed in plan.row_seeds(row):
            folder = plan.run_folder(row, seed)
            cmd = plan.command(row, seed, rows)
            if folder in done_runs:
                rc = done_runs[folder]
            elif read_mean_row(os.path.join(folder, row.metrics_csv)) is not None:
                echo(f"reuse {folder}")
                rc = done_runs[folder] = 0
            else:
                commands.append(cmd)
                log = os.path.join(plan.out_root, "logs", run_name(row, plan.tiny).replace("/", "__") + f"-{seed}.log")
                echo(f"run  {shlex.join(cmd)}  (log: {log})")
                start = time.time()
                rc = runner(cmd, log)
                done_runs[folder] = rc
                if rc == 0:
                    with atomic_write(os.path.join(folder, "reproduce_run.json")) as tmp:
                        with open(tmp, "w", encoding="utf-8") as f:
                            json.dump({"command": cmd, "wall_s": round(time.time() - start, 1),
                                       "finished": datetime.datetime.now().isoformat(timespec="seconds")}, f)
                else:
                    echo(f"FAILED (exit {rc}) {row.key} seed {seed}: see {log}")
            if rc != 0:
                statuses[row.key] = f"failed: exit {rc}, seed {seed} (log under {os.path.join(plan.out_root, 'logs')})"
                failed.add(row.key)
                break
    return statuses, commands


def format_list(rows=ROWS):
    """The rows as text: paper, table, metric, published value, source, recipe, YAML, overrides, seeds.

    Example
    -------
    >>> "GM-SepFormer" in format_list()
    True
    """
    L = []
    for r in rows:
        pub = ", ".join(f"{METRICS[m]} {('not in DESIGN.md' if v is None else v)}" for m, v in r.published.items())
        L += [f"{r.key}",
              f"    paper:     {PAPERS[r.paper]}",
              f"    table:     {r.table or 'not in DESIGN.md'}; row: {r.system}, {r.dataset}",
              f"    published: {pub}  (source: {r.source})",
              f"    setup:     {r.setup}",
              f"    recipe:    {r.recipe} {r.yaml} {' '.join(r.overrides)}",
              f"    seeds:     {' '.join(map(str, r.seeds))}"
              + (f"; needs {', '.join(f'--{k} from {d}' for k, d in r.depends)}" if r.depends else "")]
        if r.note:
            L.append(f"    note:      {r.note}")
    return "\n".join(L)


def build_parser():
    """The command-line options of ``nass-reproduce`` / ``tools/reproduce.py``.

    Example
    -------
    >>> build_parser().parse_args(["--tiny", "--seeds", "1", "2"]).seeds
    [1, 2]
    """
    p = argparse.ArgumentParser(
        prog="nass-reproduce",
        description="Reproduce the NASS, unified SE+SS (GM) and GeCo / Fast-GeCo papers' table rows: train what is "
                    "missing, evaluate, write reproduction.md / .csv with our mean ± std beside the published value.")
    p.add_argument("--list", action="store_true", help="print the rows and exit")
    p.add_argument("--dry-run", action="store_true", help="print the exact commands and exit")
    p.add_argument("--tiny", action="store_true", help="demo YAMLs on a subset of the demo corpus, 2 steps per run "
                                                       f"({TINY_NOTE})")
    p.add_argument("--rows", nargs="+", metavar="KEY", help="only these rows (and the rows they depend on)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds of every row (default: each row's; --tiny: the first)")
    p.add_argument("--data_root", default="data", help="folder holding Libri2Mix, Libri3Mix, wham (default: data)")
    p.add_argument("--libri2mix", help="Libri2Mix root (default: <data_root>/Libri2Mix)")
    p.add_argument("--libri3mix", help="Libri3Mix root (default: <data_root>/Libri3Mix)")
    p.add_argument("--wham", help="WHAM! root holding wav8k/min/{tr,cv,tt} (default: <data_root>/wham)")
    p.add_argument("--demo_folder", default=os.path.join("data", "demo", "Libri2Mix"),
                   help="--tiny: the demo corpus's Libri2Mix root (default: data/demo/Libri2Mix)")
    p.add_argument("--tiny_utterances", type=int, default=TINY_UTTERANCES,
                   help=f"--tiny: mixtures per split taken from the demo corpus (default {TINY_UTTERANCES})")
    p.add_argument("--out", help="output root (default: results/reproduce, --tiny: results/reproduce-tiny)")
    p.add_argument("--nproc_per_node", type=int, default=1, help="> 1: torchrun --nproc_per_node=N (DDP)")
    return p


def make_plan(args):
    """The :class:`Plan` of parsed options (``--tiny`` builds the demo subset unless listing or dry-running).

    Example
    -------
    >>> plan = make_plan(build_parser().parse_args(["--data_root", "/data", "--wham", "/w"]))
    >>> plan.data_folders["libri3mix"], plan.data_folders["wham"]
    ('/data/Libri3Mix', '/w')
    """
    out = os.path.abspath(args.out or os.path.join("results", "reproduce-tiny" if args.tiny else "reproduce"))
    folders = {k: os.path.abspath(getattr(args, k) or os.path.join(args.data_root, name))
               for k, name in (("libri2mix", "Libri2Mix"), ("libri3mix", "Libri3Mix"), ("wham", "wham"))}
    if args.tiny:
        demo = os.path.abspath(args.demo_folder)
        subset = os.path.join(out, "tiny-data", "Libri2Mix")  # what the tiny runs read (printed by --dry-run too)
        folders = dict.fromkeys(folders, subset if args.dry_run or os.path.isdir(demo) else demo)
        if not args.dry_run and not args.list and os.path.isdir(demo):
            make_tiny_corpus(demo, subset, n=args.tiny_utterances)
    return Plan(out_root=out, data_folders=folders, tiny=args.tiny, seeds=tuple(args.seeds or ()) or None,
                nproc_per_node=args.nproc_per_node)


def main(argv=None, runner=subprocess_runner):
    """``nass-reproduce``: list, print or run the rows; exit code 0, 1 if a run failed, 2 on bad input.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).
    runner : callable
        ``runner(cmd, log_path) -> return code`` (tests run recipes in-process).

    Example
    -------
    >>> main(["--dry-run", "--rows", "nass/wham/sepformer-nass", "--data_root", "/data"])  # doctest: +ELLIPSIS
    # single process; --nproc_per_node N prints the same runs as torchrun --nproc_per_node=N commands
    # nass/wham/sepformer-nass seed 1234
    ... recipes/WHAM/separation/train.py recipes/WHAM/separation/hparams/sepformer-nass.yaml --data_folder=/data/wham ...
    0
    """
    args = build_parser().parse_args(argv)
    start = time.time()
    try:
        rows = select_rows(args.rows)
        if args.list:
            print(format_list(rows))
            return 0
        plan = make_plan(args)
        if args.dry_run:
            if plan.nproc_per_node == 1:
                print("# single process; --nproc_per_node N prints the same runs as torchrun --nproc_per_node=N commands")
            for row in rows:
                for seed in plan.row_seeds(row):
                    print(f"# {row.key} seed {seed}")
                    print(shlex.join(plan.command(row, seed, rows)))
            return 0
        statuses, _ = reproduce(rows, plan, runner=runner)
        records = summarise(rows, plan, statuses)
    except ReproduceError as e:
        print(f"nass-reproduce: error: {e}", file=sys.stderr)
        return 2
    command = "nass-reproduce " + shlex.join(sys.argv[1:] if argv is None else argv)
    md, cs = write_reports(records, environment(), plan, command, time.time() - start)
    print(f"wrote {md} and {cs}")
    return 1 if any(s.startswith(("failed", "not run")) for s in statuses.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

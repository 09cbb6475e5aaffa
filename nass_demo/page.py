"""Listening demo page: mixtures, references and every system's estimates side by side.

A static HTML page in the style of the GeCo demo page (Wang et al., "Noise-robust speech
separation with fast generative correction", Interspeech 2024, companion web page): for
each of ``N`` test mixtures, a table with the mixture, the references ``s1 .. sN`` (and the
noise when the split has one) and, for every system, its estimates aligned to the
references by the best-SI-SNR permutation (:func:`nass.losses.pit.pit_si_snr`), plus its
noise estimate when the model has a noise output. Every cell holds a log-magnitude
spectrogram (matplotlib, no axes, same colour scale within an example), an audio player and the
SI-SNR (dB) of the estimate against its reference. Training curves (loss and validation
SI-SNR against the optimiser step, read from each model's ``train_log.jsonl``; a model
folder without one is named in a warning and has no curve) are plotted at the top.
The HTML is rendered with jinja2 from ``nass_demo/templates/page.html`` (autoescaped).

Layout written under ``out_dir``::

    index.html                 relative links only: opens from the file system, no server
    img/curves.png             training curves (when at least one log has epochs)
    img/<example>_<cell>.png   spectrograms
    audio/<example>_<cell>.wav 16-bit PCM copies / estimates
    .demo_page_files.json      the files of the last run (stale ones are removed on re-run)

Every file is written atomically (:func:`nass.dataio.audio.atomic_write`); ``index.html``
is written last, so a page never links to a file that is not there yet. A small inline
script marks images and audio that fail to load (``data-media-broken`` on ``<body>``),
which is how the tests check the page in a real browser.

Command line: ``python tools/make_demo_page.py --help`` (see ``docs/demo_page.md``).
"""

import argparse
import contextlib
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from nass.correction.modes import CORRECTION_MODES, DEFAULT_MODE
from nass.dataio.audio import atomic_write, fit_samples, limit_peak, read_audio, write_audio
from nass.losses.pit import apply_perm, pit_si_snr
from nass.losses.si_snr import si_snr

logger = logging.getLogger(__name__)

#: Dynamic range of the spectrogram colour scale (dB below the example's maximum).
DYNAMIC_RANGE_DB = 80.0
#: Record of the files written by the last run, relative to ``out_dir``.
FILE_LIST = ".demo_page_files.json"


class DemoPageError(ValueError):
    """Bad arguments or inputs for the demo page; the message names them and the fix."""


# --------------------------------------------------------------------------- systems
@dataclass
class DemoSystem:
    """One column group of the page: a named separator (optionally with a corrector).

    Parameters
    ----------
    name : str
        Shown in the page (escaped).
    separator : object
        Has ``separate_file(path) -> (est_sources [T, S], est_noise [T] or None)`` at the
        file's rate (:class:`nass.inference.Separator`).
    log_path : str, optional
        The run's ``train_log.jsonl`` whose curves are plotted, or ``None``.
    num_spks : int, optional
        Speakers the model separates (checked against the manifest), or ``None``.

    Example
    -------
    >>> DemoSystem("oracle", separator=None).name
    'oracle'
    """

    name: str
    separator: object
    log_path: str = None
    num_spks: int = None


def load_system(name, model_folder, corrector_folder=None, correction_mode=DEFAULT_MODE, correction_steps=30,
                device="cpu"):
    """Load a trained separator folder (and optionally a corrector) as a :class:`DemoSystem`.

    Parameters
    ----------
    name : str
        System name for the page.
    model_folder : str
        Training output folder or exported model folder (:func:`nass.inference.load_separator`;
        its ``hyperparams.yaml`` is trusted code).
    corrector_folder : str, optional
        GeCo / Fast-GeCo folder (:func:`nass.correction.model.load_corrector`).
    correction_mode : str
        A key of :data:`nass.correction.modes.CORRECTION_MODES`, passed to the corrector.
    correction_steps : int
        Reverse steps for ``"geco"``.
    device : str
        Where the models run.

    Returns
    -------
    DemoSystem
        Mixtures are separated in one pass (no chunking: the evaluation protocol).

    Raises
    ------
    nass.inference.ModelLoadError
        Bad model folder.
    DemoPageError
        Unknown ``correction_mode``.

    Example
    -------
    >>> load_system("x", "/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nass.inference.ModelLoadError: /nonexistent: model folder not found...
    """
    from nass.inference import Separator, load_separator

    if correction_mode not in CORRECTION_MODES:
        raise DemoPageError(f"system {name!r}: correction mode {correction_mode!r} is not known; "
                            f"use one of {', '.join(CORRECTION_MODES)}.")
    model, hparams = load_separator(model_folder, device=device)
    corrector = None
    if corrector_folder is not None:
        from nass.correction.model import load_corrector

        corrector = load_corrector(corrector_folder, device=device)
    sep = Separator(model, hparams["sample_rate"], chunk_seconds=None, device=device, corrector=corrector,
                    correction_mode=correction_mode, correction_steps=correction_steps)
    log = os.path.join(model_folder, TRAIN_LOG)
    if not os.path.isfile(log):
        old = " (its train_log.txt is not read: it comes from a run older than the JSON log)" if os.path.isfile(
            os.path.join(model_folder, "train_log.txt")) else ""
        logger.warning("system %r: %s has no %s%s; the page shows no training curve for it", name, model_folder,
                       TRAIN_LOG, old)
        log = None
    return DemoSystem(name, sep, log, hparams.get("num_spks"))


# --------------------------------------------------------------------------- training logs
#: The training log the page plots (:func:`nass.curves.append_train_log` writes it in every run).
TRAIN_LOG = "train_log.jsonl"


def parse_train_log(path):
    """Training statistics of a run's ``train_log.jsonl``, for :func:`plot_training_curves`.

    The running training loss every ``log_interval_steps`` steps and each validation
    (epoch, training and validation loss, validation SI-SNR), read with
    :func:`nass.curves.read_train_log`. SpeechBrain's text log ``train_log.txt`` holds the
    same per-epoch numbers and is not read (runs older than the JSON log have no curves).

    Parameters
    ----------
    path : str
        A ``train_log.jsonl``.

    Returns
    -------
    list of dict
        Sorted by optimiser step; each has ``"step"``, and ``"epoch"`` for a validation, and
        every ``"<stage> <stat>"`` key found (``"train loss"``, ``"valid si-snr"``, ...) as
        float. Losses leave out the PatchNCE term. Missing or unreadable file: ``[]``.

    Raises
    ------
    DemoPageError
        ``path`` is not a ``.jsonl`` file (e.g. a ``train_log.txt``).

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "train_log.jsonl")
    >>> _ = open(p, "w").write('{"optimizer_step": 50, "lr": 0.1, "train_running": {"loss": 2.0, "nce_loss": 1.5}}\\n'
    ...                        '{"epoch": 1, "optimizer_step": 80, "lr": 0.1, "train": null, "valid": {"loss": 1.0, "si-snr": 3.0}}\\n')
    >>> parse_train_log(p)
    [{'step': 50, 'train loss': 0.5}, {'step': 80, 'epoch': 1, 'valid loss': 1.0, 'valid si-snr': 3.0}]
    """
    if not str(path).endswith(".jsonl"):
        raise DemoPageError(f"{path}: only a {TRAIN_LOG} is read (SpeechBrain's train_log.txt is not); "
                            "give the run's train_log.jsonl")
    return _jsonl_records(path)


def _jsonl_records(path):
    """The records of :func:`parse_train_log` (without the suffix check)."""
    from nass.curves import _value, read_train_log

    try:
        steps, valid = read_train_log(path)
    except OSError:
        return []
    records = []
    for row in steps:
        loss = _value(row.get("train_running"), "loss")
        if loss is not None:
            records.append({"step": row["optimizer_step"], "train loss": loss})
    for row in valid:
        record = {"step": row.get("optimizer_step"), "epoch": row.get("epoch")}
        for stage in ("train", "valid"):
            for term in ("loss", "si-snr"):
                value = _value(row.get(stage), term)
                if value is not None and not (stage == "train" and term == "si-snr"):
                    record[f"{stage} {term}"] = value
        records.append(record)
    records = [r for r in records if r["step"] is not None]
    return sorted(records, key=lambda r: (r["step"], "epoch" in r))


def plot_training_curves(curves, path):
    """Plot loss (train solid, valid dashed) and validation SI-SNR per epoch, one colour per model.

    Parameters
    ----------
    curves : dict
        Model name -> records of :func:`parse_train_log`.
    path : str
        PNG to write (atomically).

    Returns
    -------
    bool
        ``False`` (and nothing written) when no model has any epoch.

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "curves.png")
    >>> plot_training_curves({"a": [{"epoch": 1, "train loss": 3.0}, {"epoch": 2, "train loss": 1.0}]}, p)
    True
    >>> plot_training_curves({"a": []}, p + "2")
    False
    """
    curves = {name: records for name, records in curves.items() if records}
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 2.8), dpi=80)
    ax_loss, ax_snr = fig.subplots(1, 2)
    any_snr = False
    by_step = all("step" in r for records in curves.values() for r in records)  # train_log.jsonl
    x_of = (lambda r: r["step"]) if by_step else (lambda r: r["epoch"])  # noqa: E731
    for k, (name, records) in enumerate(curves.items()):
        colour = f"C{k % 10}"
        for key, style, label in (("train loss", "-", "train"), ("valid loss", "--", "valid")):
            pts = [(x_of(r), r[key]) for r in records if math.isfinite(r.get(key, math.nan))]
            if pts:
                ax_loss.plot(*zip(*pts), style, color=colour, marker=".", label=f"{name} ({label})")
        pts = [(x_of(r), r["valid si-snr"]) for r in records if math.isfinite(r.get("valid si-snr", math.nan))]
        if pts:
            any_snr = True
            ax_snr.plot(*zip(*pts), "-", color=colour, marker=".", label=name)
    xlabel = "optimiser step" if by_step else "epoch"
    ax_loss.set(title="Loss" + (" (without the PatchNCE term)" if by_step else ""), xlabel=xlabel, ylabel="loss")
    ax_snr.set(title="Validation SI-SNR", xlabel=xlabel, ylabel="dB")
    if not any_snr:
        ax_snr.text(0.5, 0.5, "no validation statistics in the logs", ha="center", va="center",
                    transform=ax_snr.transAxes, color="gray")
    last = max(x_of(r) for records in curves.values() for r in records)
    for ax in (ax_loss, ax_snr):
        ax.grid(alpha=0.3)
        ax.set_xlim(0 if by_step else 0.5, last * 1.02 + 1 if by_step else last + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return True


# --------------------------------------------------------------------------- spectrograms
def log_spectrogram(wav, sample_rate):
    """Log-magnitude STFT (dB) with a 32 ms Hann window and 8 ms hop.

    Parameters
    ----------
    wav : numpy.ndarray
        ``[time]``.
    sample_rate : int
        Hz.

    Returns
    -------
    numpy.ndarray
        ``[freq, frames]`` in dB (``20 log10(|X| + 1e-8)``).

    Example
    -------
    >>> import numpy as np
    >>> log_spectrogram(np.zeros(8000, "float32"), 8000).shape
    (129, 126)
    """
    n_fft = 1 << max(int(round(math.log2(0.032 * sample_rate))), 4)
    hop = max(int(0.008 * sample_rate), 1)
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    if x.numel() < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.numel()))
    spec = torch.stft(x, n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True, return_complex=True)
    return (20 * torch.log10(spec.abs() + 1e-8)).numpy()


def save_spectrogram(spec_db, path, vmin, vmax, size=(240, 160)):
    """Write a small spectrogram PNG (no axes: low frequencies at the bottom, time to the right).

    Parameters
    ----------
    spec_db : numpy.ndarray
        ``[freq, frames]`` dB (:func:`log_spectrogram`).
    path : str
        PNG written atomically.
    vmin, vmax : float
        Colour scale in dB, shared by the cells of one example.
    size : tuple of int
        Width and height in pixels (default 240 x 160, i.e. 3 x 2 in at 80 dpi).

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "s.png")
    >>> save_spectrogram(np.zeros((129, 10)), p, -80, 0)
    >>> open(p, "rb").read(4)
    b'\\x89PNG'
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    dpi = 80
    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_axis_off()
    ax.imshow(spec_db, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax, interpolation="antialiased")
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


# --------------------------------------------------------------------------- helpers
def safe_stem(text, index):
    """A file-name stem for example ``index`` derived from an untrusted ID.

    Only ``[A-Za-z0-9._-]`` are kept (others become ``_``), the result is cut to 60
    characters and prefixed by the zero-padded index, so it never holds a path separator
    or ``..``, never starts with a dot and two IDs never collide.

    Parameters
    ----------
    text : str
        Utterance ID (any characters).
    index : int
        Position of the example on the page.

    Returns
    -------
    str

    Example
    -------
    >>> safe_stem("../../etc/passwd", 3)
    '03_____etc_passwd'
    >>> safe_stem("a<b>", 0)
    '00_a_b_'
    """
    cleaned = re.sub(r"\.{2,}", "_", re.sub(r"[^A-Za-z0-9._-]", "_", str(text)))[:60]
    return f"{index:02d}_{cleaned}"


def num_spks_of_manifest(path):
    """Number of speakers of a manifest, from its ``s<k>_wav`` header columns.

    Parameters
    ----------
    path : str
        Manifest CSV.

    Returns
    -------
    int

    Raises
    ------
    DemoPageError
        Missing file or no speaker column.

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(p, "w").write("ID,duration,mix_wav,s1_wav,s2_wav,noise_wav,mix_clean_wav\\n")
    >>> num_spks_of_manifest(p)
    2
    """
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip().split(",")
    except OSError as exc:
        raise DemoPageError(f"{path}: manifest cannot be read ({exc}). Give a manifest CSV written by the preparation.") from exc
    count = len([c for c in header if re.fullmatch(r"s\d+_wav", c)])
    if not count:
        raise DemoPageError(f"{path}: no s1_wav/s2_wav columns in the header; it is not a separation manifest.")
    return count


def select_examples(rows, num_examples, seed=0):
    """``num_examples`` rows drawn at random (``seed``), kept in manifest order.

    Example
    -------
    >>> [r["ID"] for r in select_examples([{"ID": str(i)} for i in range(10)], 3, seed=0)]
    ['0', '6', '9']
    """
    if num_examples <= 0:
        raise DemoPageError(f"num_examples={num_examples}: give a positive number of examples.")
    picked = sorted(random.Random(seed).sample(range(len(rows)), min(num_examples, len(rows))))
    return [rows[i] for i in picked]


def _db(est, ref):
    return float(si_snr(torch.as_tensor(est, dtype=torch.float32), torch.as_tensor(ref, dtype=torch.float32)))


def _fit(x, n):
    return fit_samples(np.asarray(x, dtype=np.float32), n)


# --------------------------------------------------------------------------- page
#: The page template (jinja2), a file of this package (``package_data`` in ``setup.py``).
TEMPLATE = "page.html"


def _cell(img, audio, caption):
    """One table cell of the template: spectrogram, player and caption (escaped when rendered)."""
    return {"img": img, "audio": audio, "caption": caption}


def render_page(**context):
    """Render :data:`TEMPLATE` (``nass_demo/templates/page.html``) with autoescaping.

    Every string the template prints is escaped with :func:`html.escape` (quotes included).

    Parameters
    ----------
    **context
        The template's variables (listed at its top; :func:`make_demo_page` builds them).
        A variable the template uses and ``context`` lacks raises
        ``jinja2.exceptions.UndefinedError``.

    Returns
    -------
    str
        The HTML page.

    Example
    -------
    >>> html = render_page(title="a <b>", num_examples=0, seed=0, dynamic_range_db=80.0,
    ...                    has_curves=False, summary=[], sections=[])
    >>> "<title>a &lt;b&gt;</title>" in html, 'id="media-check"' in html
    (True, True)
    """
    import html

    import jinja2
    import markupsafe

    def escape(value):  # the standard library's escaping (&#x27; and &quot;), as the page always had
        if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
            return markupsafe.Markup(html.escape(value, quote=True))
        return value

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")),
        autoescape=True, finalize=escape, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
    )
    return env.get_template(TEMPLATE).render(**context)


def make_demo_page(rows, systems, out_dir, num_examples=5, seed=0, num_spks=None, title="nass listening demo",
                   curves=None):
    """Separate ``num_examples`` mixtures with every system and write the demo page.

    Parameters
    ----------
    rows : list of dict
        Manifest rows (:func:`nass.dataio.manifest.read_manifest`): ``ID``, ``mix_wav``,
        ``s1_wav`` .. ``s{num_spks}_wav``, ``noise_wav`` (may be ``""``).
    systems : list of DemoSystem
        Systems shown, in this order (names must be distinct).
    out_dir : str
        Output folder (created); ``index.html``, ``img/`` and ``audio/`` in it are replaced.
    num_examples : int
        How many mixtures (drawn with ``seed``; all when fewer rows).
    seed : int
        Seed of the draw.
    num_spks : int, optional
        Speakers per mixture (default: counted from the ``s<k>_wav`` keys of ``rows[0]``).
    title : str
        Page title (escaped).
    curves : dict, optional
        Name -> training-log path; default: each system's ``log_path``, one per distinct log.

    Returns
    -------
    str
        Path of ``index.html``.

    Raises
    ------
    DemoPageError
        No rows, no systems, duplicate system names, or a system whose number of
        estimated speakers differs from the manifest's.
    nass.dataio.audio.AudioError
        Unreadable audio (the message names the file).

    Example
    -------
    >>> import os, tempfile, numpy as np, torch
    >>> from nass.dataio.audio import write_audio
    >>> d = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> row = {"ID": "utt<1>", "noise_wav": ""}
    >>> for k in ("s1", "s2"):
    ...     row[k + "_wav"] = os.path.join(d, k + ".wav")
    ...     write_audio(row[k + "_wav"], 0.1 * rng.standard_normal(4000), 8000)
    >>> row["mix_wav"] = os.path.join(d, "mix.wav")
    >>> write_audio(row["mix_wav"], 0.1 * rng.standard_normal(4000), 8000)
    >>> class Halves:  # a stand-in separator: both estimates = mix / 2
    ...     def separate_file(self, path):
    ...         x = torch.from_numpy(read_audio(path)[0])
    ...         return torch.stack([x / 2, x / 2], 1), None
    >>> page = make_demo_page([row], [DemoSystem("halves", Halves())], os.path.join(d, "demo"), num_examples=1)
    >>> "utt&lt;1&gt;" in open(page).read()
    True
    >>> sorted(os.listdir(os.path.join(d, "demo", "audio")))[:2]
    ['00_utt_1__m0_halves_s1.wav', '00_utt_1__m0_halves_s2.wav']
    """
    if not rows:
        raise DemoPageError("make_demo_page: the manifest has no rows; give a prepared split with mixtures.")
    if not systems:
        raise DemoPageError("make_demo_page: no system given; pass at least one --model NAME=<folder>.")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise DemoPageError(f"make_demo_page: system names must be distinct, got {names}.")
    if num_spks is None:
        num_spks = len([k for k in rows[0] if re.fullmatch(r"s\d+_wav", k)])
    for s in systems:
        if s.num_spks is not None and int(s.num_spks) != num_spks:
            raise DemoPageError(
                f"system {s.name!r} separates {s.num_spks} speakers but the manifest has {num_spks}; "
                "use a test split with the model's number of speakers."
            )
    examples = select_examples(rows, num_examples, seed)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    written = []  # paths relative to out_dir

    def out(rel):
        written.append(rel)
        return os.path.join(out_dir, rel)

    # ---- training curves
    if curves is None:
        curves = {}
        seen = set()
        for s in systems:
            if s.log_path and os.path.abspath(s.log_path) not in seen:
                seen.add(os.path.abspath(s.log_path))
                curves[s.name] = s.log_path
    has_curves = plot_training_curves({n: parse_train_log(p) for n, p in curves.items()}, os.path.join(out_dir, "img", "curves.png"))
    if has_curves:
        written.append("img/curves.png")

    spk_labels = [f"s{j + 1}" for j in range(num_spks)]
    sections, summary = [], {s.name: [] for s in systems}
    for index, row in enumerate(examples):
        stem = safe_stem(row["ID"], index)
        mix, rate = read_audio(row["mix_wav"], mono="mix")
        n = mix.shape[0]
        refs = np.stack([_fit(read_audio(row[f"{k}_wav"], sample_rate=rate, mono="mix")[0], n) for k in spk_labels], 1)
        noise_ref = None
        if row.get("noise_wav"):
            noise_ref = _fit(read_audio(row["noise_wav"], sample_rate=rate, mono="mix")[0], n)
        # cells: (key, label, wav, caption)
        ref_cells = [("mix", "Mixture", mix, "input")]
        mix_scores = [_db(mix, refs[:, j]) for j in range(num_spks)]
        ref_cells += [(k, f"Reference {k}", refs[:, j], "reference") for j, k in enumerate(spk_labels)]
        if noise_ref is not None:
            ref_cells.append(("noise", "Reference noise", noise_ref, "reference"))
        system_cells = []
        for s in systems:
            est, est_noise = s.separator.separate_file(row["mix_wav"])
            est = torch.as_tensor(est, dtype=torch.float32)
            if est.dim() != 2 or est.shape[1] != num_spks:
                raise DemoPageError(
                    f"system {s.name!r} returned estimates of shape {tuple(est.shape)} for {row['mix_wav']}; "
                    f"expected [time, {num_spks}]."
                )
            est = torch.from_numpy(np.stack([_fit(est[:, j].numpy(), n) for j in range(num_spks)], 1))
            _, perm = pit_si_snr(est.unsqueeze(0), torch.from_numpy(refs).unsqueeze(0))
            est = apply_perm(est.unsqueeze(0), perm)[0].numpy()
            cells = []
            scores = []
            for j, k in enumerate(spk_labels):
                score = _db(est[:, j], refs[:, j])
                scores.append(score)
                cells.append((k, est[:, j], f"SI-SNR {score:.1f} dB (SI-SNRi {score - mix_scores[j]:+.1f})"))
            noise_cell = None
            if est_noise is not None:
                est_noise = _fit(torch.as_tensor(est_noise).numpy(), n)
                caption = f"SI-SNR {_db(est_noise, noise_ref):.1f} dB" if noise_ref is not None else "noise estimate"
                noise_cell = ("noise", est_noise, caption)
            summary[s.name].append((float(np.mean(scores)), float(np.mean(scores) - np.mean(mix_scores))))
            system_cells.append((s, cells, noise_cell))

        # ---- spectrograms with one colour scale per example
        all_wavs = [c[2] for c in ref_cells] + [c[1] for _, cells, nc in system_cells for c in cells + ([nc] if nc else [])]
        specs = [log_spectrogram(w, rate) for w in all_wavs]
        vmax = max(float(sp.max()) for sp in specs)
        vmin = vmax - DYNAMIC_RANGE_DB
        spec_iter = iter(specs)

        def media(name, wav):
            rel_img, rel_wav = f"img/{stem}_{name}.png", f"audio/{stem}_{name}.wav"
            save_spectrogram(next(spec_iter), out(rel_img), vmin, vmax)
            write_audio(out(rel_wav), limit_peak(np.asarray(wav, dtype=np.float32)), rate)
            return rel_img, rel_wav

        has_noise_col = noise_ref is not None or any(nc for _, _, nc in system_cells)
        img, wav = media("mix", mix)
        mix_caption = "input; SI-SNR vs " + ", ".join(f"{k}: {v:.1f} dB" for k, v in zip(spk_labels, mix_scores))
        section = {
            "id": str(row["ID"]), "duration": n / rate, "rate": rate,
            "columns": ["Mixture", ""] + [f"Speaker {j + 1}" for j in range(num_spks)] + (["Noise"] if has_noise_col else []),
            "mix": _cell(img, wav, mix_caption),
            "refs": [_cell(*media(f"ref_{key}", wav_data), caption) for key, _label, wav_data, caption in ref_cells[1:]],
            "has_noise_col": has_noise_col, "has_noise_ref": noise_ref is not None, "systems": [],
        }
        for k, (s, cells, noise_cell) in enumerate(system_cells):
            safe_sys = f"m{k}_" + re.sub(r"[^A-Za-z0-9._-]", "_", s.name)[:30]  # index: distinct even if names sanitise alike
            section["systems"].append({
                "name": s.name,
                "cells": [_cell(*media(f"{safe_sys}_{key}", wav_data), caption) for key, wav_data, caption in cells],
                "noise": None if noise_cell is None else _cell(*media(f"{safe_sys}_noise", noise_cell[1]), noise_cell[2]),
            })
        sections.append(section)

    page = render_page(
        title=title, num_examples=len(examples), seed=int(seed), dynamic_range_db=DYNAMIC_RANGE_DB,
        has_curves=has_curves, sections=sections,
        summary=[{"name": name, "si_snr": float(np.mean([v[0] for v in vals])),
                  "si_snr_i": float(np.mean([v[1] for v in vals]))} for name, vals in summary.items()],
    )
    index_path = os.path.join(out_dir, "index.html")
    with atomic_write(index_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
    _remove_stale(out_dir, written)
    return index_path


def _remove_stale(out_dir, written):
    """Delete files of the previous run that this run did not write, then record this run's."""
    record = os.path.join(out_dir, FILE_LIST)
    previous = []
    with contextlib.suppress(OSError, ValueError):
        with open(record, encoding="utf-8") as f:
            previous = json.load(f)
    keep = set(written)
    for rel in previous if isinstance(previous, list) else []:
        # only plain names inside img/ or audio/, never a path that could leave out_dir
        if not isinstance(rel, str) or rel in keep or not re.fullmatch(r"(img|audio)/[A-Za-z0-9_-][A-Za-z0-9._-]*", rel):
            continue
        with contextlib.suppress(OSError):
            os.remove(os.path.join(out_dir, rel))
    with atomic_write(record) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(sorted(keep), f, indent=0)


# --------------------------------------------------------------------------- command line
def _name_value(text, option):
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value:
        raise DemoPageError(f"{option} {text!r}: expected NAME=VALUE (e.g. {option} sepformer=results/sepformer/1234).")
    return name.strip(), value


def build_parser():
    """The ``make_demo_page`` argument parser.

    Example
    -------
    >>> a = build_parser().parse_args(["--manifest", "t.csv", "--model", "A=x"])
    >>> a.num_examples, a.out
    (5, 'docs/demo')
    """
    p = argparse.ArgumentParser(
        prog="make_demo_page",
        description="Write a static listening page (spectrograms, audio, SI-SNR, training curves) for trained separators.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="prepared test manifest CSV (nass.dataio.prepare)")
    src.add_argument("--data_folder", help="dataset root to prepare a split from (with --dataset, --split)")
    p.add_argument("--dataset", default="librimix", choices=["librimix", "wham", "custom"])
    p.add_argument("--split", default="test", help="split folder to prepare with --data_folder (default test)")
    p.add_argument("--mixture", default="noisy", choices=["noisy", "clean"], help="network input with --data_folder")
    p.add_argument("--sample_rate", type=int, default=None,
                   help="rate of the data with --data_folder (default: the first model's)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                   help="trained separator folder; repeat for several systems")
    p.add_argument("--corrector", action="append", default=[], metavar="NAME=SEP:CORR:MODE",
                   help="separator folder + GeCo corrector folder + mode (" + "|".join(CORRECTION_MODES) + ")")
    p.add_argument("--num_examples", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/demo")
    p.add_argument("--title", default="nass listening demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--correction_steps", type=int, default=30)
    return p


def main(argv=None):
    """Command-line entry point (``tools/make_demo_page.py``); returns the exit status.

    Example
    -------
    >>> main(["--manifest", "/nonexistent.csv", "--model", "A=/nonexistent"])  # message on stderr
    2
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from nass.dataio.manifest import read_manifest
    from nass.dataio.prepare import prepare_dataset

    tmp_dir = None
    try:
        if not args.model and not args.corrector:
            raise DemoPageError("no system given: pass at least one --model NAME=<trained folder>.")
        specs = [(*_name_value(m, "--model"), None, None) for m in args.model]
        for c in args.corrector:
            name, value = _name_value(c, "--corrector")
            parts = value.rsplit(":", 2)
            if len(parts) != 3:
                raise DemoPageError(f"--corrector {c!r}: expected NAME=<separator folder>:<corrector folder>:"
                                    f"<{'|'.join(CORRECTION_MODES)}>.")
            specs.append((name, parts[0], parts[1], parts[2]))
        if args.manifest:
            num_spks = num_spks_of_manifest(args.manifest)
            manifest = args.manifest
        systems = []
        for name, folder, corr, mode in specs:
            systems.append(load_system(name, folder, corr, mode or DEFAULT_MODE, args.correction_steps, args.device))
        if not args.manifest:
            rate = args.sample_rate or systems[0].separator.sample_rate
            num_spks = int(systems[0].num_spks or 2)
            tmp_dir = tempfile.mkdtemp(prefix="nass-demo-")
            manifest = prepare_dataset(args.dataset, args.data_folder, tmp_dir, num_spks=num_spks,
                                       sample_rate=rate, mixture=args.mixture, splits=[args.split])[args.split]
        rows = read_manifest(manifest, num_spks)
        page = make_demo_page(rows, systems, args.out, num_examples=args.num_examples, seed=args.seed,
                              num_spks=num_spks, title=args.title)
    except ValueError as exc:  # DemoPageError, DatasetError, ModelLoadError, AudioError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    print(f"wrote {page}")
    return 0

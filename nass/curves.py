"""Watch a run train: ``training_curves.png`` and TensorBoard scalars from ``train_log.jsonl``.

:class:`nass.brains.separation.SeparationBrain` (and, at every validation,
:class:`nass.brains.correction.CorrectionBrain`) appends one JSON object per line to
``<output_folder>/train_log.jsonl``:

- every ``log_interval_steps`` optimiser steps: ``{"optimizer_step", "epoch_step", "lr",
  "train_running": {term: value}}`` (the epoch's running means so far);
- at every validation: ``{"epoch", "lr", "next_lr", "optimizer_step", "train": {...},
  "valid": {...}}``.

Terms (all optional but ``loss`` and ``si-snr``): ``loss``, ``si-snr`` (dB),
``noise_si-snr`` (dB), ``se_loss``, ``nce`` (unweighted InfoNCE, nats), ``nce_loss``
(the weighted PatchNCE term inside ``loss``), ``gm_conflict_fraction``, and the reference
values ``si-snr_input`` / ``noise_si-snr_input`` (the mixture as the estimate),
``est_si-snr`` (GeCo / Fast-GeCo runs: the separator's estimate before correction),
``se_identity`` (an enhancer that changes nothing) and ``nce_chance`` (``ln K``).

:func:`plot_training_curves` reads that file (never the text log) and draws one axis per
term against the optimiser step, its reference value dashed on the same axis. The loss
axis shows the loss *without* the PatchNCE term (which sits near the constant
``lambda_NCE * ln K`` at chance and would hide the separation loss); the NCE axis shows
``nce`` against its chance level. The PNG is written to a temporary name and renamed.
"""

import json
import logging
import math
import os

logger = logging.getLogger(__name__)

#: (term, reference term(s), axis title) in plotting order; the first reference found is drawn
#: (``est_si-snr``: the separator's estimate before correction, in GeCo / Fast-GeCo logs).
TERMS = (
    ("loss", None, "loss (without the PatchNCE term)"),
    ("si-snr", ("si-snr_input", "est_si-snr"), "speakers SI-SNR (dB)"),
    ("noise_si-snr", "noise_si-snr_input", "noise SI-SNR (dB)"),
    ("se_loss", "se_identity", "SE loss"),
    ("nce", "nce_chance", "PatchNCE (nats)"),
    ("gm_conflict_fraction", None, "GM conflict fraction"),
)


def read_train_log(path):
    """The rows of a ``train_log.jsonl``, split into step rows and validation rows.

    Parameters
    ----------
    path : str
        ``<output_folder>/train_log.jsonl``.

    Returns
    -------
    (list of dict, list of dict)
        Rows with ``train_running`` (every N steps) and rows with ``valid`` (every
        validation), in file order. A line that is not JSON (a run killed mid-write) is
        skipped.

    Raises
    ------
    FileNotFoundError
        No such file.

    Example
    -------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "train_log.jsonl")
    >>> _ = open(p, "w").write('{"optimizer_step": 5, "lr": 0.1, "train_running": {"loss": 1.0}}\\n{"bad')
    >>> steps, valid = read_train_log(p)
    >>> len(steps), len(valid)
    (1, 0)
    """
    steps, valid = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict):
                continue
            if "train_running" in row:
                steps.append(row)
            elif "valid" in row:
                valid.append(row)
    return steps, valid


def _value(stats, term):
    """``stats[term]`` as a float (``loss`` without the weighted PatchNCE term), or None."""
    if not stats or stats.get(term) is None:
        return None
    value = float(stats[term])
    if term == "loss" and stats.get("nce_loss") is not None:
        value -= float(stats["nce_loss"])
    return value if math.isfinite(value) else None


def _series(rows, key, term):
    points = [(r.get("optimizer_step"), _value(r.get(key), term)) for r in rows]
    points = [(x, y) for x, y in points if x is not None and y is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(jsonl_path, png_path, title=None):
    """Draw ``training_curves.png`` from a ``train_log.jsonl``: one axis per loss term.

    Parameters
    ----------
    jsonl_path : str
        The run's ``train_log.jsonl`` (module docstring).
    png_path : str
        Output image; written to a temporary name and renamed
        (:func:`nass.dataio.audio.atomic_write`), so a reader never sees half a file.
    title : str, optional
        Figure title (default: the run folder).

    Returns
    -------
    list of str
        The terms drawn (axis order), always ending with ``lr``.

    Raises
    ------
    FileNotFoundError
        No ``jsonl_path``.

    Example
    -------
    >>> import json, os, tempfile
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "train_log.jsonl")
    >>> rows = [{"optimizer_step": 2, "lr": 1e-3, "train_running": {"loss": 3.0, "si-snr": -3.0, "nce": 5.6,
    ...          "nce_chance": 5.5, "nce_loss": 11.0}},
    ...         {"epoch": 1, "lr": 1e-3, "optimizer_step": 4, "train": {"loss": 2.0, "si-snr": -2.0},
    ...          "valid": {"loss": 2.5, "si-snr": -2.5, "si-snr_input": -3.0}}]
    >>> _ = open(p, "w").write("\\n".join(json.dumps(r) for r in rows))
    >>> plot_training_curves(p, os.path.join(d, "training_curves.png"))
    ['loss', 'si-snr', 'nce', 'lr']
    >>> sorted(os.listdir(d))
    ['train_log.jsonl', 'training_curves.png']
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from nass.dataio.audio import atomic_write

    steps, valid = read_train_log(jsonl_path)
    drawn = []
    for term, ref, label in TERMS:
        if any(_value(r.get("train_running"), term) is not None for r in steps) or any(
            _value(r.get(k), term) is not None for r in valid for k in ("train", "valid")
        ):
            drawn.append((term, ref, label))
    drawn.append(("lr", None, "learning rate"))
    cols = 2 if len(drawn) > 3 else 1
    nrows = math.ceil(len(drawn) / cols)
    fig = Figure(figsize=(6 * cols, 2.6 * nrows), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, (term, ref, label) in zip(axes, drawn):
        if term == "lr":
            points = sorted((r["optimizer_step"], r["lr"]) for r in steps + valid
                            if r.get("optimizer_step") is not None and r.get("lr") is not None)
            if points:
                ax.plot(*zip(*points), ".-", color="tab:gray")
        else:
            for key, rows, style, name in (
                ("train_running", steps, ".-", "train (running, every N steps)"),
                ("train", valid, "s", "train (epoch)"),
                ("valid", valid, "o-", "valid"),
            ):
                x, y = _series(rows, key, term)
                if x:
                    ax.plot(x, y, style, label=name, markersize=4)
            for one in (ref,) if isinstance(ref, str) else (ref or ()):
                x, y = _series(steps, "train_running", one)
                xv, yv = _series(valid, "valid", one)
                x, y = (x, y) if x else (xv, yv)
                if x:
                    ref_name = {"nce_chance": "chance (ln K)", "se_identity": "identity enhancer",
                                "est_si-snr": "separator's estimate"}.get(one, "mixture")
                    ax.plot(x, y, "--", color="black", linewidth=1, label=ref_name)
                    break
            ax.legend(fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("optimiser step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(drawn):]:
        ax.set_visible(False)
    fig.suptitle(title or os.path.basename(os.path.dirname(os.path.abspath(png_path))), fontsize=10)
    with atomic_write(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return [t for t, _, _ in drawn]


class TensorBoardLog:
    """TensorBoard scalars of every ``train_log.jsonl`` record, at the optimiser step.

    Uses SpeechBrain's :class:`speechbrain.utils.train_logger.TensorboardLogger` for the
    writer (created on the main process only); tags ``train_running/<term>``,
    ``train/<term>``, ``valid/<term>`` and ``lr``, with the optimiser step as the global
    step, so a resumed run continues its curves.

    Parameters
    ----------
    folder : str
        Event-file folder (``<output_folder>/tensorboard``).

    Raises
    ------
    ImportError
        The ``tensorboard`` package is missing; the message gives the install command.

    Example
    -------
    >>> import tempfile
    >>> try:
    ...     log = TensorBoardLog(tempfile.mkdtemp())
    ... except ImportError as exc:
    ...     print("install" in str(exc))
    ... else:
    ...     log.log({"optimizer_step": 1, "lr": 0.1, "train_running": {"loss": 1.0}}); print(True)
    True
    """

    def __init__(self, folder):
        try:
            from speechbrain.utils.train_logger import TensorboardLogger

            self._logger = TensorboardLogger(folder)
        except ImportError as exc:
            raise ImportError(
                f"tensorboard: True needs the tensorboard package ({exc}). Install it with "
                "pip install 'nass[tensorboard]' (or pip install tensorboard), or set --tensorboard=False."
            ) from exc
        self.folder = folder

    def log(self, record):
        """Write the scalars of one ``train_log.jsonl`` record (see the module docstring)."""
        writer = self._logger.writer
        step = record.get("optimizer_step")
        if writer is None or step is None:
            return
        if record.get("lr") is not None:
            writer.add_scalar("lr", float(record["lr"]), step)
        for key in ("train_running", "train", "valid"):
            for term, value in (record.get(key) or {}).items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    writer.add_scalar(f"{key}/{term}", float(value), step)
        writer.flush()


def append_train_log(folder, record, tensorboard=None):
    """Append one record to ``<folder>/train_log.jsonl`` (and to TensorBoard when given).

    Non-finite numbers become ``null`` (the file stays strict JSON). Call it on the main
    process only.

    Parameters
    ----------
    folder : str
        The run's output folder.
    record : dict
        One row (module docstring).
    tensorboard : TensorBoardLog, optional
        Also receives the record.

    Returns
    -------
    dict
        The record as written.

    Example
    -------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> append_train_log(d, {"optimizer_step": 1, "lr": 0.1, "train_running": {"loss": float("nan")}})
    {'optimizer_step': 1, 'lr': 0.1, 'train_running': {'loss': None}}
    """
    clean = json.loads(json.dumps(record, default=float), parse_constant=lambda c: None)
    with open(os.path.join(folder, "train_log.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(clean, allow_nan=False) + "\n")
    if tensorboard is not None:
        tensorboard.log(clean)
    return clean


def redraw_training_curves(folder):
    """Redraw ``<folder>/training_curves.png`` from ``<folder>/train_log.jsonl``.

    A failure is logged as a warning and never raised: a figure must not stop training.

    Parameters
    ----------
    folder : str
        The run's output folder.

    Returns
    -------
    bool
        Whether the figure was written.

    Example
    -------
    >>> import tempfile
    >>> redraw_training_curves(tempfile.mkdtemp())  # no train_log.jsonl yet
    False
    """
    try:
        plot_training_curves(os.path.join(folder, "train_log.jsonl"), os.path.join(folder, "training_curves.png"))
    except Exception as exc:  # noqa: BLE001
        logger.warning("training_curves.png not drawn: %s: %s", type(exc).__name__, exc)
        return False
    return True

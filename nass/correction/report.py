"""Is a corrector better than its input? Paired comparison of evaluation tables.

A generative corrector (GeCo / Fast-GeCo) can make a separator's estimates worse: an
un-fine-tuned Fast-GeCo step scores like a random network (about -12.5 dB SI-SNRi,
``DESIGN.md``), and so can an under-trained one. Means alone do not say whether a
difference is real, so every correction table is compared, utterance by utterance, with
the *identity* row (the separator's estimate left unchanged, ``test_metrics.csv``):

    d_u = SI-SNRi_u(corrected) - SI-SNRi_u(identity)      (dB, per test utterance u)
    mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n)           (95 % confidence interval)

(Student's t interval of a paired difference, e.g. Montgomery, "Design and Analysis of
Experiments", Sec. 2.5.) A corrector whose interval lies below zero is reported with a
``WARNING`` line; one whose mean is below zero with a ``NOTE``; only an interval above
zero supports "the corrector improves its input".
"""

import csv
import logging
import math
import os

import numpy as np

logger = logging.getLogger(__name__)

#: Name of the identity row (the separator's estimate unchanged).
IDENTITY = "identity (estimate unchanged)"
SUMMARY_NAME = "correction_summary.csv"


def read_metric(csv_path, metric="si-snr_i"):
    """Per-utterance values of one metric from an evaluation CSV (the ``mean`` row dropped).

    Parameters
    ----------
    csv_path : str
        A table written by :func:`nass.evaluation.evaluate_manifest`.
    metric : str
        Column name (default ``si-snr_i``, dB).

    Returns
    -------
    dict
        ``{utterance ID: value}``.

    Raises
    ------
    ValueError
        Missing file or column (both named).
    """
    if not os.path.isfile(csv_path):
        raise ValueError(f"{csv_path}: evaluation table not found")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if metric not in (reader.fieldnames or []):
            raise ValueError(f"{csv_path}: no column {metric!r} (columns: {reader.fieldnames})")
        return {r["ID"]: float(r[metric]) for r in reader if r["ID"] != "mean"}


def paired_difference(base, other):
    """Mean paired difference ``other - base`` with its 95 % Student-t interval.

    Parameters
    ----------
    base, other : dict
        ``{utterance ID: value}``; only the IDs in both (with finite values) are used.

    Returns
    -------
    dict
        ``mean``, ``lo``, ``hi`` (dB), ``n`` (utterances); ``lo``/``hi`` are NaN
        below two utterances.

    Example
    -------
    >>> d = paired_difference({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 2.0, "b": 3.5, "c": 3.5})
    >>> round(d["mean"], 3), d["n"], round(d["lo"], 3), round(d["hi"], 3)
    (1.0, 3, -0.242, 2.242)
    """
    from scipy.stats import t as student_t

    ids = [k for k in base if k in other and math.isfinite(base[k]) and math.isfinite(other[k])]
    diffs = np.array([other[k] - base[k] for k in ids], dtype=np.float64)
    n = len(diffs)
    if n == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    mean = float(diffs.mean())
    if n < 2:
        return {"mean": mean, "lo": float("nan"), "hi": float("nan"), "n": n}
    half = float(student_t.ppf(0.975, n - 1) * diffs.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def correction_summary(out_dir, tables, metric="si-snr_i", identity_csv="test_metrics.csv"):
    """Compare correction tables with the identity row; print, log and write the comparison.

    Parameters
    ----------
    out_dir : str
        Folder holding the evaluation CSVs; ``correction_summary.csv`` is written there.
    tables : dict
        ``{row name: csv file name in out_dir}`` of the corrected evaluations (e.g.
        ``{"one step before fine-tuning": "test_metrics_init-one-step.csv",
        "fast-geco": "test_metrics_fast-geco.csv"}``); missing files are skipped.
    metric : str
        Per-utterance column compared (default ``si-snr_i``, dB).
    identity_csv : str
        The separator-alone table (the estimate unchanged).

    Returns
    -------
    list of dict
        One dict per row (identity first): ``name``, ``mean`` (of ``metric``),
        ``delta``, ``lo``, ``hi``, ``n``, ``verdict`` (``"identity"``, ``"better"``,
        ``"worse"``, ``"not significant"``).

    Example
    -------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for name, vals in (("test_metrics.csv", (5, 6, 7)), ("test_metrics_x.csv", (1, 2, 2))):
    ...     with open(os.path.join(d, name), "w") as f:
    ...         _ = f.write("ID,si-snr_i\\n" + "".join(f"u{i},{v}\\n" for i, v in enumerate(vals)) + "mean,0\\n")
    >>> rows = correction_summary(d, {"x": "test_metrics_x.csv"})  # doctest: +ELLIPSIS
    correction vs identity (si-snr_i, paired over 3 utterances)
    ...
    WARNING: x makes the estimates WORSE than the separator alone: ...
    >>> [r["verdict"] for r in rows]
    ['identity', 'worse']
    """
    from nass.dataio.audio import atomic_write

    base = read_metric(os.path.join(out_dir, identity_csv), metric)
    rows = [{"name": IDENTITY, "mean": float(np.mean(list(base.values()))) if base else float("nan"),
             "delta": 0.0, "lo": 0.0, "hi": 0.0, "n": len(base), "verdict": "identity"}]
    for name, fname in tables.items():
        path = os.path.join(out_dir, fname)
        if not os.path.isfile(path):
            continue
        other = read_metric(path, metric)
        d = paired_difference(base, other)
        if d["lo"] > 0:
            verdict = "better"
        elif d["hi"] < 0 or (d["n"] < 2 and d["mean"] < 0):
            verdict = "worse"
        else:
            verdict = "not significant"
        rows.append({"name": name, "mean": float(np.mean(list(other.values()))) if other else float("nan"),
                     "delta": d["mean"], "lo": d["lo"], "hi": d["hi"], "n": d["n"], "verdict": verdict})
    lines = [f"correction vs identity ({metric}, paired over {len(base)} utterances)",
             f"{'':34s} {metric:>9s} {'delta':>8s} {'95% CI':>17s}"]
    for r in rows:
        ci = "" if r["verdict"] == "identity" else f"[{r['lo']:+6.2f}, {r['hi']:+6.2f}]"
        lines.append(f"{r['name']:34s} {r['mean']:9.2f} {r['delta']:+8.2f} {ci:>17s}  {r['verdict']}")
    for r in rows[1:]:
        if r["verdict"] == "worse":
            lines.append(
                f"WARNING: {r['name']} makes the estimates WORSE than the separator alone: {metric} "
                f"{r['delta']:+.2f} dB (95% CI [{r['lo']:+.2f}, {r['hi']:+.2f}]). The corrector is "
                "under-trained, not fine-tuned, or mismatched with this separator: do not use it."
            )
        elif r["delta"] < 0:
            lines.append(
                f"NOTE: {r['name']} scores below the separator alone ({r['delta']:+.2f} dB), "
                "not significantly; it does not improve its input."
            )
    text = "\n".join(lines)
    print(text)
    logger.info("%s", text)
    with atomic_write(os.path.join(out_dir, SUMMARY_NAME)) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["name", "mean", "delta", "lo", "hi", "n", "verdict"])
            writer.writeheader()
            writer.writerows(rows)
    return rows

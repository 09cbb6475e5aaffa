"""Reading a loaded YAML: no soft defaults, and ``precision: auto`` resolved (below the Brains and the runner).

Reading without soft defaults: a key the code reads is in the YAML, or it fails naming it.

Every recipe YAML carries every key the training code reads (``tools/make_recipe_hparams.py``
writes them, with the papers' values and a comment); a misspelt or missing key is an
error here, never a silent default.
"""

import logging

import torch

logger = logging.getLogger(__name__)

_MISSING = object()


def require(hparams, key):
    """``hparams[key]`` (a dict or SpeechBrain's ``SimpleNamespace`` of hparams), or a clear error.

    Parameters
    ----------
    hparams : dict or object
    key : str

    Returns
    -------
    object
        The value (``None`` is a value: ``test_split: null`` means no test split).

    Raises
    ------
    KeyError
        The key is absent, named with the fix.

    Example
    -------
    >>> require({"seed": 3}, "seed")
    3
    >>> require({"sed": 3}, "seed")
    Traceback (most recent call last):
    ...
    KeyError: "the YAML has no 'seed' key, which this code reads: add it (the recipe YAMLs written by tools/make_recipe_hparams.py carry every key; see their comments for the values)"
    """
    if isinstance(hparams, dict):
        value = hparams.get(key, _MISSING)
    else:
        value = getattr(hparams, key, _MISSING)
    if value is _MISSING:
        raise KeyError(
            f"the YAML has no {key!r} key, which this code reads: add it (the recipe YAMLs written by "
            "tools/make_recipe_hparams.py carry every key; see their comments for the values)"
        )
    return value


def cpu_has_bf16():
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16 in ``/proc/cpuinfo``).

    Returns
    -------
    bool
        False where ``/proc/cpuinfo`` cannot be read (non-Linux): bf16 autocast there is
        emulated and usually slower than fp32.

    Example
    -------
    >>> isinstance(cpu_has_bf16(), bool)
    True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def resolve_precision(precision, device):
    """Turn ``precision: auto`` into the precision this machine trains fastest in.

    Parameters
    ----------
    precision : str
        ``fp32``, ``fp16``, ``bf16`` (returned unchanged) or ``auto``.
    device : str
        The run's device (``cpu``, ``cuda``, ``cuda:1``).

    Returns
    -------
    str
        For ``auto``: ``bf16`` on a CUDA device that supports it and on a CPU with
        AVX512-BF16 / AMX (:func:`cpu_has_bf16`; measured on this project's 2-core
        AVX512-BF16 CPU: a tiny DPRNN step 0.42 s fp32 / 0.25 s bf16, ``bench/bench_step_time.py``),
        else ``fp32``. fp16 is never chosen: it needs a GradScaler and fails on CPUs.

    Raises
    ------
    ValueError
        Any other value.

    Example
    -------
    >>> resolve_precision("fp32", "cpu"), resolve_precision("bf16", "cuda:0")
    ('fp32', 'bf16')
    >>> resolve_precision("auto", "cpu") in ("bf16", "fp32")
    True
    """
    if precision in ("fp32", "fp16", "bf16"):
        return precision
    if precision != "auto":
        raise ValueError(f"precision: {precision!r} is not one of fp32, fp16, bf16, auto.")
    if str(device).startswith("cuda"):
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def resolve_auto_precision_in(hparams, run_opts=None):
    """Replace ``precision: auto`` / ``eval_precision: auto`` in a loaded YAML (in place) by
    :func:`resolve_precision` for the run's device, for Brains built without
    :func:`load_hparams`.

    Parameters
    ----------
    hparams : dict or None
    run_opts : dict or speechbrain RunOptions, optional
        Its ``device`` (default ``cpu``).

    Example
    -------
    >>> hp = {"precision": "fp32"}
    >>> resolve_auto_precision_in(hp)
    >>> hp
    {'precision': 'fp32'}
    """
    if not isinstance(hparams, dict):
        return
    device = "cpu"
    if run_opts is not None:
        device = (run_opts.get("device") if isinstance(run_opts, dict) else getattr(run_opts, "device", None)) or "cpu"
    for key in ("precision", "eval_precision"):
        if hparams.get(key) == "auto":
            hparams[key] = resolve_precision("auto", device)
            logger.info("%s: auto (YAML) -> %s on %s", key, hparams[key], device)
            print(f"{key}: auto (YAML) -> {hparams[key]} on {device}", flush=True)

#!/usr/bin/env python3
"""Speed and memory of the training step, inference, GeCo correction and SDR evaluation.

Every item is a RATIO measured side by side in one process: the compared variants are
built once and timed in interleaved repetitions (the order rotates every repetition), and
the median is reported, so that background load slows both sides alike. The machine load
(``os.getloadavg()``) is printed and saved with the results: on a busy machine absolute
seconds are inflated, ratios much less so.

Peak memory of each configuration is measured in a fresh subprocess that builds it and
runs it a few times: the process's peak resident set size (``VmHWM``; ``ru_maxrss`` is
not used on Linux because it keeps the parent's peak across fork + exec), which includes
Python + torch (the RSS after imports is reported too), on the CPU;
``torch.cuda.max_memory_allocated`` on CUDA.

Sections
--------
1. ``SeparationBrain.fit_batch`` vs a plain PyTorch loop (forward, PIT SI-SNR via
   :func:`nass.losses.pit.pit_si_snr`, backward, gradient clipping, Adam step) on the same
   model and batch: the framework's overhead (%).
2. Method overheads per training step: sepformer, -noise, -nass (PatchNCE), -unified,
   -unified-gm (second backward pass), -nass-unified-gm; seconds per step and ratio to
   the plain sepformer step.
3. Inference real-time factor (processing seconds / audio seconds) of each model via
   :meth:`nass.inference.Separator.separate_batch`.
4. GeCo (30 reverse steps) vs Fast-GeCo (one step), seconds per second of audio
   (reusing ``bench/bench_correction.py``).
5. SDR evaluation time: ``mir_eval.separation.bss_eval_sources`` called serially vs
   :func:`nass.evaluation.evaluate_manifest` (parallel metrics, ``num_workers=2``) on
   test utterances of the demo corpus, with the references plus a perturbed copy as the
   estimates (no model needed); and ``fast_bss_eval`` when installed, with its largest
   difference to mir_eval.

Tiny models use their YAML's batch (``batch_size`` x ``training_signal_len``); the
reference-size models (``hparams/libri2mix``) use batch 1 x ``--full-seconds`` (4 s on
CUDA; shorter by default on the CPU, where one 4 s SepFormer step takes minutes).
Speed perturbation is disabled in the timed steps (it is data augmentation, not part of
the compared methods).

Usage::

    .venv/bin/python bench/bench_speed.py              # all sections, ~10 min on 2 CPU cores
    .venv/bin/python bench/bench_speed.py --quick      # smoke run, a few minutes
    .venv/bin/python bench/bench_speed.py --sections 1 2 --device cuda --full-seconds 4

Writes ``<out>/bench_speed.json`` and ``<out>/bench_speed.md`` (default
``results/bench_speed/``).
"""

import argparse
import contextlib
import csv
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams")
DEMO_TEST = os.path.join(ROOT, "data", "demo", "Libri2Mix")
METHODS = ["", "-noise", "-nass", "-unified", "-unified-gm", "-nass-unified-gm"]

if ROOT not in sys.path:  # `python bench/bench_speed.py` from anywhere
    sys.path.insert(0, ROOT)


# ----------------------------------------------------------------------------- helpers
def load_config(model, size, method="", output_folder=None, **overrides):
    """Load a recipe YAML of ``model`` at ``size`` ("tiny" demo or "full" libri2mix).

    Parameters
    ----------
    model : str
        ``sepformer``, ``dprnn`` or ``convtasnet``.
    size : {"tiny", "full"}
        ``tiny``: ``hparams/demo/<model>-tiny<method>.yaml``; ``full``:
        ``hparams/libri2mix/<model><method>.yaml`` (paper sizes).
    method : str
        Suffix such as ``""``, ``"-noise"``, ``"-nass-unified-gm"``.
    output_folder : str, optional
        Where the YAML may create its logger file (a temporary folder by default).
    **overrides
        Further HyperPyYAML overrides.

    Returns
    -------
    (str, dict)
        The YAML name and the loaded hyperparameters.
    """
    from hyperpyyaml import load_hyperpyyaml

    if size == "tiny":
        name = f"{model}-tiny{method}"
        path = os.path.join(HPARAMS, "demo", name + ".yaml")
    elif size == "full":
        name = f"{model}{method}"
        path = os.path.join(HPARAMS, "libri2mix", name + ".yaml")
    else:
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    output_folder = output_folder or tempfile.mkdtemp(prefix="bench_speed_")
    ov = {"output_folder": output_folder, "data_folder": DEMO_TEST, "speed_perturb": None, **overrides}
    with open(path, encoding="utf-8") as f:
        return name, load_hyperpyyaml(f, ov)


def make_batch(batch_size, samples, num_spks=2, seed=0):
    """A :class:`speechbrain.dataio.batch.PaddedBatch` of random signals (shapes as training).

    Parameters
    ----------
    batch_size : int
    samples : int
        Samples per utterance.
    num_spks : int
    seed : int

    Returns
    -------
    speechbrain.dataio.batch.PaddedBatch
        Fields ``id, mix_sig, s1_sig .. , noise_sig, mix_clean_sig``.
    """
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    from nass.separation import make_item

    gen = torch.Generator().manual_seed(seed)
    items = []
    for b in range(batch_size):
        srcs = [0.1 * torch.randn(samples, generator=gen) for _ in range(num_spks)]
        noise = 0.03 * torch.randn(samples, generator=gen)
        clean = torch.stack(srcs).sum(0)
        items.append(make_item(f"u{b}", clean + noise, srcs, noise, clean))
    return PaddedBatch(items)


def batch_shape(hp, size, full_seconds):
    """``(batch_size, samples)`` of the timed training batch."""
    if size == "full":
        return 1, int(round(full_seconds * hp["sample_rate"]))
    return int(hp["batch_size"]), int(hp["training_signal_len"])


def make_brain(hp, device):
    """A started :class:`nass.brains.separation.SeparationBrain` (optimiser created)."""
    import speechbrain as sb

    from nass.brains.separation import SeparationBrain

    brain = SeparationBrain(
        modules=hp["modules"],
        opt_class=hp["optimizer"],
        hparams=hp,
        run_opts={"device": device, "precision": "fp32", "noprogressbar": True},
        checkpointer=None,
    )
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.modules.train()
    return brain


def brain_step_fn(brain, batch):
    """A closure running one ``brain.fit_batch(batch)``."""
    return lambda: brain.fit_batch(batch)


def plain_step_fn(separator, batch, lr, max_grad_norm, num_spks, device):
    """A closure running one plain PyTorch training step on ``separator``.

    forward -> PIT negative SI-SNR (mean over the batch) -> backward -> clip the gradient
    norm -> Adam step -> zero the gradients: what ``fit_batch`` does for the plain
    ``sepformer`` configuration, without the framework.
    """
    import torch

    from nass.losses.pit import pit_si_snr
    from nass.separation import SeparationBatch

    opt = torch.optim.Adam(separator.parameters(), lr=lr)
    refs = SeparationBatch.from_padded(batch, num_spks)
    mix, sources = refs.mix.to(device), refs.sources.to(device)
    separator.train()

    def step():
        out = separator(mix)
        loss, _ = pit_si_snr(out.est_sources, sources)
        loss = loss.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(separator.parameters(), max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def timed(fn, device):
    """Wall seconds of ``fn()``, with ``torch.cuda.synchronize`` around it on CUDA."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(fns, reps, device, warmup=1):
    """Median seconds of each callable, timed in interleaved, rotating order.

    Parameters
    ----------
    fns : dict
        Name -> zero-argument callable.
    reps : int
        Timed repetitions of each.
    device : str
    warmup : int
        Untimed calls of each first (allocations, Adam state, kernel selection).

    Returns
    -------
    dict
        Name -> ``{"median_s", "min_s", "times_s"}``.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            times[n].append(timed(fns[n], device))
    return {
        n: {"median_s": statistics.median(t), "min_s": min(t), "times_s": [round(x, 5) for x in t]}
        for n, t in times.items()
    }


def load_avg():
    """``os.getloadavg()`` rounded (1, 5, 15 minutes)."""
    return [round(x, 2) for x in os.getloadavg()]


def num_params(module):
    """Number of parameters of a module."""
    return int(sum(p.numel() for p in module.parameters()))


# ----------------------------------------------------------------------------- memory worker
def memory_worker(spec):
    """Build one configuration, run it ``spec["calls"]`` times, return its peak memory.

    Runs in a fresh subprocess (``--_memory JSON``) so that ``ru_maxrss`` belongs to this
    configuration only.

    Parameters
    ----------
    spec : dict
        ``kind`` (``train_brain``, ``train_plain``, ``infer``, ``geco``, ``fast-geco``),
        ``model``, ``size``, ``method``, ``device``, ``calls``, ``full_seconds``,
        ``infer_seconds``, ``threads``.

    Returns
    -------
    dict
        ``rss_after_imports_mb``, ``peak_rss_mb``, and on CUDA ``cuda_peak_mb``.
    """
    import torch
    import speechbrain  # noqa: F401 - imported before the baseline so it counts as "imports"

    import nass.brains.separation  # noqa: F401
    import nass.correction  # noqa: F401
    import nass.inference  # noqa: F401

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = spec["device"]
    base = peak_rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    fn = build_callable(spec)
    for _ in range(int(spec["calls"])):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    out = {"rss_after_imports_mb": round(base, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}
    if device.startswith("cuda"):
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def peak_rss_mb():
    """Peak resident set size of this process (MiB).

    ``VmHWM`` from ``/proc/self/status`` where it exists: Linux keeps ``ru_maxrss`` across
    ``fork`` + ``execve``, so in a subprocess started by a large parent ``ru_maxrss`` reports
    the parent's peak, while ``VmHWM`` belongs to the new program's memory only. Elsewhere
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0


def build_callable(spec):
    """The callable a memory worker runs (same construction as the timed sections)."""
    import torch

    kind, device = spec["kind"], spec["device"]
    if kind in ("train_brain", "train_plain"):
        _, hp = load_config(spec["model"], spec["size"], spec.get("method", ""))
        bs, n = batch_shape(hp, spec["size"], spec["full_seconds"])
        batch = make_batch(bs, n, hp["num_spks"])
        if kind == "train_brain":
            return brain_step_fn(make_brain(hp, device), batch)
        sep = hp["separator"].to(device)
        return plain_step_fn(sep, batch, hp["lr"], hp.get("max_grad_norm", 5), hp["num_spks"], device)
    if kind == "infer":
        from nass.inference import Separator

        _, hp = load_config(spec["model"], spec["size"])
        sep = Separator(hp["separator"], hp["sample_rate"], chunk_seconds=None, device=device)
        mix = 0.1 * torch.randn(1, int(spec["infer_seconds"] * hp["sample_rate"]))
        return lambda: sep.separate_batch(mix)
    if kind in ("geco", "fast-geco"):
        model, y, m = geco_model(spec["size"], spec["infer_seconds"], device)
        steps = int(spec.get("geco_steps", 30))
        return lambda: model.correct(y, m, mode=kind, num_steps=steps)
    raise ValueError(f"unknown memory worker kind {kind!r}")


def measure_memory(spec, timeout=900):
    """Run :func:`memory_worker` in a fresh subprocess; ``{}`` with an ``error`` on failure."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("MEMORY "):
            return json.loads(line[len("MEMORY "):])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]}


def mem_cell(mem):
    """Markdown text of a memory measurement."""
    if not mem:
        return "not measured"
    if "error" in mem:
        return "error"
    if "cuda_peak_mb" in mem:
        return f"{mem['cuda_peak_mb']:.0f} MiB (CUDA)"
    return f"{mem['peak_rss_mb']:.0f} MiB ({mem['peak_rss_mb'] - mem['rss_after_imports_mb']:.0f} above imports)"


# ----------------------------------------------------------------------------- sections 1 + 2
def bench_training(size, args):
    """Sections 1 and 2 for one model size: every method's brain step and the plain loop.

    All brains and the plain loop are timed interleaved in this process. The plain loop
    trains the same ``separator`` object as the plain ``sepformer`` brain.

    Returns
    -------
    dict
        ``rows`` (one per variant: name, params, s/step, ratio), the batch shape, reps.
    """
    import torch

    torch.manual_seed(0)
    methods = METHODS if 2 in args.sections else [""]
    reps = args.reps if size == "tiny" else args.full_reps
    fns, info = {}, {}
    shape = None
    for method in methods:
        name, hp = load_config("sepformer", size, method)
        bs, n = batch_shape(hp, size, args.full_seconds)
        shape = (bs, n, hp["sample_rate"])
        batch = make_batch(bs, n, hp["num_spks"])
        brain = make_brain(hp, args.device)
        fns[name] = brain_step_fn(brain, batch)
        info[name] = {"params": num_params(brain.modules), "method": method or "plain", "suffix": method}
        if method == "":
            sep = brain.modules.separator
            fns["plain PyTorch loop"] = plain_step_fn(
                sep, batch, hp["lr"], hp.get("max_grad_norm", 5), hp["num_spks"], args.device
            )
            info["plain PyTorch loop"] = {"params": num_params(sep), "method": "plain (no framework)", "suffix": ""}
    print(f"[train {size}] timing {len(fns)} variants x {reps} reps, batch {shape[0]} x {shape[1] / shape[2]:.2f} s "
          f"(load {load_avg()})", flush=True)
    res = interleaved(fns, reps, args.device, warmup=1)
    base_name = "sepformer-tiny" if size == "tiny" else "sepformer"
    rows = []
    for name, t in res.items():
        row = {"variant": name, **info[name], **t, "ratio_to_plain_brain": t["median_s"] / res[base_name]["median_s"]}
        rows.append(row)
    overhead = 100.0 * (res[base_name]["median_s"] / res["plain PyTorch loop"]["median_s"] - 1.0)
    if args.memory:
        for row in rows:
            name = row["variant"]
            plain = name == "plain PyTorch loop"
            spec = {
                "kind": "train_plain" if plain else "train_brain", "model": "sepformer", "size": size,
                "method": info[name]["suffix"], "device": args.device,
                "calls": args.mem_calls if size == "tiny" else args.full_mem_calls,
                "full_seconds": args.full_seconds, "threads": args.threads,
            }
            row["memory"] = measure_memory(spec)
    return {
        "size": size, "batch_size": shape[0], "seconds_per_utterance": shape[1] / shape[2], "reps": reps,
        "framework_overhead_pct": overhead, "rows": rows, "load_after": load_avg(),
    }


# ----------------------------------------------------------------------------- section 3
def bench_inference(args):
    """Section 3: real-time factor of ``Separator.separate_batch`` for every model."""
    import torch

    from nass.inference import Separator

    models = [("sepformer", "tiny"), ("dprnn", "tiny"), ("convtasnet", "tiny")]
    if not args.skip_full:
        models += [("sepformer", "full"), ("dprnn", "full"), ("convtasnet", "full")]
    fns, info = {}, {}
    for model, size in models:
        name, hp = load_config(model, size)
        seconds = args.infer_seconds if size == "tiny" else min(args.infer_seconds, args.full_infer_seconds)
        sep = Separator(hp["separator"], hp["sample_rate"], chunk_seconds=None, device=args.device)
        mix = 0.1 * torch.randn(1, int(seconds * hp["sample_rate"]), generator=torch.Generator().manual_seed(0))
        fns[name] = (lambda s=sep, x=mix: s.separate_batch(x))
        info[name] = {"model": model, "size": size, "audio_s": seconds, "params": num_params(hp["separator"])}
    print(f"[inference] {len(fns)} models x {args.reps} reps (load {load_avg()})", flush=True)
    res = interleaved(fns, args.reps, args.device, warmup=1)
    rows = []
    for name, t in res.items():
        row = {"variant": name, **info[name], **t, "rtf": t["median_s"] / info[name]["audio_s"]}
        if args.memory:
            row["memory"] = measure_memory({
                "kind": "infer", "model": info[name]["model"], "size": info[name]["size"], "device": args.device,
                "calls": 2, "infer_seconds": info[name]["audio_s"], "threads": args.threads,
            })
        rows.append(row)
    return {"rows": rows, "reps": args.reps, "load_after": load_avg()}


# ----------------------------------------------------------------------------- section 4
def geco_model(size, seconds, device):
    """An untrained GeCo model and a random clip, built as ``bench/bench_correction.py`` does."""
    import torch

    from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform

    net = ScoreModel.tiny() if size == "tiny" else ScoreModel()
    model = GeCoModel(BBEDSDE(), net, SpecTransform()).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    n = int(seconds * 8000)
    return model, torch.randn(1, n, generator=gen).to(device), torch.randn(1, n, generator=gen).to(device)


def bench_geco(args):
    """Section 4: GeCo (N = 30) vs Fast-GeCo (one step), seconds per second of audio.

    Uses ``bench_correction.timed`` and its construction; on the CPU the reference-size
    GeCo is run for ``--ref-geco-steps`` steps and scaled to 30 (its cost is linear in the
    number of steps), as ``bench_correction.py`` does. Both modes are timed interleaved.
    """
    import torch

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import bench_correction

    dev = torch.device(args.device)
    rows = []
    sizes = ["tiny"] + ([] if args.skip_full else ["full"])
    for size in sizes:
        model, y, m = geco_model(size, args.geco_seconds, args.device)
        steps = 30 if (size == "tiny" or dev.type == "cuda") else args.ref_geco_steps
        fns = {
            "fast-geco": lambda: model.correct(y, m, mode="fast-geco"),
            "geco": lambda: model.correct(y, m, mode="geco", num_steps=steps),
        }
        fns["fast-geco"]()  # warm-up
        times = {k: [] for k in fns}
        reps = args.reps if size == "tiny" else max(1, args.full_reps)
        print(f"[geco {size}] {reps} reps, GeCo run with {steps} steps (load {load_avg()})", flush=True)
        for r in range(reps):
            for k in (["fast-geco", "geco"] if r % 2 == 0 else ["geco", "fast-geco"]):
                times[k].append(bench_correction.timed(fns[k], dev))
        fast = statistics.median(times["fast-geco"])
        geco = statistics.median(times["geco"]) * 30 / steps
        row = {
            "size": "reference (NCSN++-sized)" if size == "full" else "tiny",
            "params": num_params(model),
            "audio_s": args.geco_seconds, "fast_geco_s_per_s": fast / args.geco_seconds,
            "geco30_s_per_s": geco / args.geco_seconds, "geco_steps_run": steps,
            "extrapolated": steps != 30, "speedup": geco / fast,
        }
        if args.memory:
            for kind in ("fast-geco", "geco"):
                row[f"memory_{kind}"] = measure_memory({
                    "kind": kind, "size": size, "device": args.device, "calls": 1,
                    "infer_seconds": args.geco_seconds, "geco_steps": steps, "threads": args.threads,
                })
        rows.append(row)
        del model
    return {"rows": rows, "load_after": load_avg()}


# ----------------------------------------------------------------------------- section 5
def sdr_inputs(num_utts, seed=0):
    """References, mixtures and perturbed 'estimates' of the first demo test utterances.

    Returns
    -------
    (str, list of dict, list)
        A temporary manifest of those utterances, its rows, and per utterance
        ``(mix [T], refs [S, T], est [S, T])`` float64 arrays. An estimate is its
        reference plus 10 % of the other speaker and white noise 20 dB below it.
    """
    import numpy as np

    from nass.dataio.audio import read_audio
    from nass.dataio.manifest import read_manifest, write_manifest
    from nass.dataio.prepare import prepare_dataset

    tmp = tempfile.mkdtemp(prefix="bench_sdr_")
    manifests = prepare_dataset("librimix", args_data_folder(), tmp, num_spks=2, sample_rate=8000, splits=["test"])
    rows = read_manifest(manifests["test"], 2)[:num_utts]
    csv_path = os.path.join(tmp, "subset.csv")
    write_manifest(rows, csv_path, 2)
    rng = np.random.default_rng(seed)
    data = []
    for row in rows:
        mix = read_audio(row["mix_wav"], sample_rate=8000)[0].astype(np.float64)
        refs = np.stack([read_audio(row[f"s{j}_wav"], sample_rate=8000)[0] for j in (1, 2)]).astype(np.float64)
        n = min(len(mix), refs.shape[1])
        mix, refs = mix[:n], refs[:, :n]
        power = np.sqrt(np.mean(refs**2, axis=1, keepdims=True))
        est = refs + 0.1 * refs[::-1] + 0.1 * power * rng.standard_normal(refs.shape)
        data.append((mix, refs, est))
    return csv_path, rows, data


_DATA_FOLDER = [DEMO_TEST]


def args_data_folder():
    """The demo Libri2Mix root used by section 5 (``--data_folder``)."""
    return _DATA_FOLDER[0]


def mir_eval_serial(data):
    """SDR as the SpeechBrain LibriMix recipe computes it, one utterance after another.

    ``bss_eval_sources(refs, est)`` (mir_eval chooses the permutation) and
    ``bss_eval_sources(refs, mix repeated)`` (the SDRi baseline) per utterance.
    """
    import warnings

    import mir_eval.separation
    import numpy as np

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for mix, refs, est in data:
            sdr = mir_eval.separation.bss_eval_sources(refs, est)[0]
            sdr_mix = mir_eval.separation.bss_eval_sources(refs, np.stack([mix] * len(refs)))[0]
            out.append((sdr, sdr_mix))
    return out


def fast_serial(data):
    """The same two calls with ``fast_bss_eval.bss_eval_sources`` (exact solve, 512 taps)."""
    import fast_bss_eval
    import numpy as np

    out = []
    for mix, refs, est in data:
        sdr = fast_bss_eval.bss_eval_sources(refs, est, compute_permutation=True)[0]
        # the estimates are all the mixture, so the permutation cannot change the values; fast_bss_eval
        # 0.1.4 (NumPy backend) fails with compute_permutation=False
        sdr_mix = fast_bss_eval.bss_eval_sources(refs, np.stack([mix] * len(refs)))[0]
        out.append((np.asarray(sdr), np.asarray(sdr_mix)))
    return out


def project_eval(csv_path, data, num_workers):
    """:func:`nass.evaluation.evaluate_manifest` with the perturbed copies as the separator output."""
    import torch

    from nass.evaluation import evaluate_manifest

    estimates = iter([torch.from_numpy(est.T.copy()).float().unsqueeze(0) for _, _, est in data])

    def separate(mix):
        return next(estimates), None

    out_dir = tempfile.mkdtemp(prefix="bench_eval_")
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        return evaluate_manifest(separate, csv_path, out_dir, num_spks=2, sample_rate=8000,
                                 num_workers=num_workers, save_examples=0)


def _dist_version(name):
    """Installed version of a distribution, or ``"?"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def bench_sdr(args):
    """Section 5: serial mir_eval vs the project's parallel evaluation (vs fast_bss_eval)."""
    import numpy as np

    csv_path, rows, data = sdr_inputs(args.sdr_utts)
    audio_s = sum(len(mix) for mix, _, _ in data) / 8000.0
    try:
        import fast_bss_eval  # noqa: F401

        have_fast = True
    except ImportError:
        have_fast = False
    passes = {
        "mir_eval serial (recipe protocol: permutation search + mixture baseline)": lambda: mir_eval_serial(data),
        "nass.evaluation.evaluate_manifest, num_workers=2": lambda: project_eval(csv_path, data, 2),
        "nass.evaluation.evaluate_manifest, num_workers=0 (in process)": lambda: project_eval(csv_path, data, 0),
    }
    if have_fast:
        passes["fast_bss_eval serial (same calls as mir_eval serial)"] = lambda: fast_serial(data)
    print(f"[sdr] {len(data)} utterances ({audio_s:.0f} s of audio), {args.sdr_reps} reps of {len(passes)} passes "
          f"(load {load_avg()})", flush=True)
    times = {k: [] for k in passes}
    results = {}
    names = list(passes)
    for r in range(args.sdr_reps):
        order = names if r % 2 == 0 else names[::-1]
        for k in order:
            start = time.perf_counter()
            results[k] = passes[k]()
            times[k].append(time.perf_counter() - start)
    base = statistics.median(times[names[0]])
    out_rows = [
        {"method": k, "median_s": statistics.median(t), "times_s": [round(x, 3) for x in t],
         "speedup_vs_serial_mir_eval": base / statistics.median(t)}
        for k, t in times.items()
    ]
    agreement = None
    if have_fast:
        ref = results[names[0]]
        fast = results["fast_bss_eval serial (same calls as mir_eval serial)"]
        d_est = max(float(np.max(np.abs(a[0] - b[0]))) for a, b in zip(ref, fast))
        d_mix = max(float(np.max(np.abs(a[1] - b[1]))) for a, b in zip(ref, fast))
        sdri_ref = [float(np.mean(a[0] - a[1])) for a in ref]
        sdri_fast = [float(np.mean(b[0] - b[1])) for b in fast]
        agreement = {
            "max_abs_diff_sdr_db": d_est, "max_abs_diff_mixture_sdr_db": d_mix,
            "max_abs_diff_sdri_db": max(abs(a - b) for a, b in zip(sdri_ref, sdri_fast)),
            "mean_sdr_mir_eval_db": float(np.mean([a[0] for a in ref])),
            "passes_0.05_db": max(d_est, d_mix) <= 0.05,
            "version": _dist_version("fast-bss-eval"),
        }
    return {"num_utterances": len(data), "audio_s": audio_s, "reps": args.sdr_reps, "rows": out_rows,
            "fast_bss_eval": agreement, "fast_bss_eval_installed": have_fast, "load_after": load_avg()}


# ----------------------------------------------------------------------------- reporting
def environment(device):
    """Hardware and software of this run."""
    import torch

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "device": device,
        "load_avg_start": load_avg(),
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    try:
        env["nass_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                            text=True).stdout.strip() or "unknown"
    except OSError:
        env["nass_commit"] = "unknown"
    return env


def md_table(headers, rows):
    """A Markdown table from a header list and rows of cells."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(result):
    """The Markdown report of a ``bench_speed`` result dict (see :func:`main`)."""
    env = result["environment"]
    out = [
        "# Speed and memory benchmarks (bench/bench_speed.py)",
        "",
        f"{env['date']}; {env['cpu']}, {env['cores']} cores, torch threads {env['torch_threads']}, "
        f"device {env['device']}{' (' + env['gpu'] + ')' if 'gpu' in env else ''}; torch {env['torch']}, "
        f"Python {env['python']}, nass {env.get('nass_commit', '?')}.",
        f"Machine load (1/5/15 min) at start {env['load_avg_start']}, at end {result.get('load_avg_end')}.",
        f"Command: `{result['command']}`",
        "",
        "Ratios are medians of interleaved repetitions in one process; absolute seconds depend on the load.",
        "Peak memory: fresh subprocess per configuration (CPU: peak RSS incl. Python+torch; CUDA: "
        "max_memory_allocated).",
    ]
    for tr in result.get("training", []):
        rows = {r["variant"]: r for r in tr["rows"]}
        size = tr["size"]
        out += ["", f"## 1. Framework overhead, {size} SepFormer "
                f"(batch {tr['batch_size']} x {tr['seconds_per_utterance']:.2f} s, {tr['reps']} reps)", ""]
        base = "sepformer-tiny" if size == "tiny" else "sepformer"
        plain, brain = rows["plain PyTorch loop"], rows[base]
        out.append(md_table(
            ["variant", "params", "s/step (median)", "peak memory"],
            [[k, f"{r['params']:,}", f"{r['median_s']:.3f}", mem_cell(r.get("memory"))] for k, r in
             (("plain PyTorch loop", plain), (f"SeparationBrain.fit_batch ({base})", brain))],
        ))
        ok = "within" if tr["framework_overhead_pct"] <= 5 else "ABOVE"
        out.append(f"\nFramework overhead: **{tr['framework_overhead_pct']:+.1f} %** ({ok} the 5 % goal).")
        method_rows = [r for r in tr["rows"] if r["variant"] != "plain PyTorch loop"]
        if len(method_rows) > 1:
            out += ["", f"## 2. Method overheads per training step, {size} SepFormer", ""]
            out.append(md_table(
                ["config", "params", "s/step (median)", "ratio to plain", "peak memory"],
                [[r["variant"], f"{r['params']:,}", f"{r['median_s']:.3f}", f"{r['ratio_to_plain_brain']:.2f}",
                  mem_cell(r.get("memory"))] for r in method_rows],
            ))
            suffix = "-tiny" if size == "tiny" else ""
            get = lambda m: rows.get(f"sepformer{suffix}{m}", {}).get("median_s")  # noqa: E731
            notes = []
            if get("-noise") and get("-nass"):
                notes.append(f"PatchNCE overhead (nass vs noise): {100 * (get('-nass') / get('-noise') - 1):+.1f} % "
                             "(target < 10 %)")
            if get("-unified") and get("-unified-gm"):
                notes.append(f"GM cost (unified-gm vs unified, second backward pass): "
                             f"x{get('-unified-gm') / get('-unified'):.2f}")
            out += [""] + [f"- {n}" for n in notes]
    if result.get("inference"):
        inf = result["inference"]
        out += ["", f"## 3. Inference real-time factor (Separator.separate_batch, {inf['reps']} reps)", ""]
        out.append(md_table(
            ["model", "size", "params", "audio (s)", "s (median)", "RTF", "peak memory"],
            [[r["model"], r["size"], f"{r['params']:,}", f"{r['audio_s']:.1f}", f"{r['median_s']:.3f}",
              f"{r['rtf']:.3f}", mem_cell(r.get("memory"))] for r in inf["rows"]],
        ))
    if result.get("geco"):
        out += ["", "## 4. GeCo (30 steps) vs Fast-GeCo (1 step), untrained weights, seconds per second of audio", ""]
        out.append(md_table(
            ["score model", "params", "Fast-GeCo s/s", "GeCo N=30 s/s", "speed-up", "peak memory Fast-GeCo / GeCo"],
            [[r["size"], f"{r['params']:,}" if r["params"] else "?", f"{r['fast_geco_s_per_s']:.3f}",
              f"{r['geco30_s_per_s']:.3f}" + (f" (extrapolated from N={r['geco_steps_run']})" if r["extrapolated"] else ""),
              f"{r['speedup']:.1f}x", f"{mem_cell(r.get('memory_fast-geco'))} / {mem_cell(r.get('memory_geco'))}"]
             for r in result["geco"]["rows"]],
        ))
    if result.get("sdr"):
        s = result["sdr"]
        out += ["", f"## 5. SDR evaluation time, {s['num_utterances']} demo test utterances "
                f"({s['audio_s']:.0f} s of audio, {s['reps']} reps)", ""]
        out.append(md_table(
            ["method", "seconds (median)", "speed-up vs serial mir_eval"],
            [[r["method"], f"{r['median_s']:.2f}", f"{r['speedup_vs_serial_mir_eval']:.2f}x"] for r in s["rows"]],
        ))
        fb = s.get("fast_bss_eval")
        if fb:
            verdict = "PASSES" if fb["passes_0.05_db"] else "FAILS"
            out.append(f"\nfast_bss_eval {fb['version']} vs mir_eval: max |SDR difference| "
                       f"{fb['max_abs_diff_sdr_db']:.2e} dB (estimates), {fb['max_abs_diff_mixture_sdr_db']:.2e} dB "
                       f"(mixture baseline), {fb['max_abs_diff_sdri_db']:.2e} dB (SDRi): {verdict} the 0.05 dB bound.")
        elif not s.get("fast_bss_eval_installed"):
            out.append("\nfast_bss_eval is not installed: not compared.")
    return "\n".join(out) + "\n"


def write_outputs(result, out_dir):
    """Write ``bench_speed.json`` and ``bench_speed.md`` atomically into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    md = to_markdown(result)
    for name, text in (("bench_speed.json", json.dumps(result, indent=2, default=float)), ("bench_speed.md", md)):
        path = os.path.join(out_dir, name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return md


def parse_args(argv=None):
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench_speed"))
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda")
    p.add_argument("--sections", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--quick", action="store_true", help="fewer reps, shorter clips, 20 SDR utterances")
    p.add_argument("--reps", type=int, default=None, help="timed reps for tiny models (default 5, quick 3)")
    p.add_argument("--full-reps", type=int, default=None, help="timed reps for reference sizes (default 2, quick 1)")
    p.add_argument("--full-seconds", type=float, default=None,
                   help="utterance length of the reference-size training batch (default 4 on CUDA, 1 on CPU, quick 0.5)")
    p.add_argument("--infer-seconds", type=float, default=4.0, help="clip length for the inference RTF")
    p.add_argument("--full-infer-seconds", type=float, default=None,
                   help="clip length for reference-size inference (default 4 on CUDA, 2 on CPU, quick 1)")
    p.add_argument("--geco-seconds", type=float, default=1.0)
    p.add_argument("--ref-geco-steps", type=int, default=2, help="GeCo steps run for the reference size on the CPU")
    p.add_argument("--skip-full", action="store_true", help="tiny models only")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory subprocesses")
    p.add_argument("--sdr-utts", type=int, default=None, help="demo test utterances for section 5 (default 100, quick 20)")
    p.add_argument("--sdr-reps", type=int, default=None, help="passes of each SDR method (default 2, quick 1)")
    p.add_argument("--data_folder", default=DEMO_TEST, help="demo Libri2Mix root (section 5)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (use 1 on a loaded machine: oversubscribed threads make timings erratic)")
    p.add_argument("--_memory", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._memory is None:
        import torch

        if args.device == "auto":
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        cuda = args.device.startswith("cuda")
        q = args.quick
        args.reps = args.reps or (3 if q else 5)
        args.full_reps = args.full_reps or (1 if q else 2)
        args.full_seconds = args.full_seconds or (4.0 if cuda else (0.5 if q else 1.0))
        args.full_infer_seconds = args.full_infer_seconds or (4.0 if cuda else (1.0 if q else 2.0))
        args.sdr_utts = args.sdr_utts or (20 if q else 100)
        args.sdr_reps = args.sdr_reps or (1 if q else 2)
        args.mem_calls = 2
        args.full_mem_calls = 1 if (q and not cuda) else 2
    return args


def main(argv=None):
    """Run the selected sections, print Markdown, write JSON + Markdown to ``--out``."""
    args = parse_args(argv)
    if args._memory is not None:
        print("MEMORY " + json.dumps(memory_worker(json.loads(args._memory))), flush=True)
        return None
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    _DATA_FOLDER[0] = args.data_folder
    result = {"environment": environment(args.device), "args": {k: v for k, v in vars(args).items() if k != "_memory"},
              "command": " ".join([os.path.relpath(sys.argv[0], ROOT) if sys.argv else "bench/bench_speed.py"]
                                  + (sys.argv[1:] if argv is None else list(argv)))}
    print(f"load average at start: {result['environment']['load_avg_start']}", flush=True)
    start = time.time()
    if 1 in args.sections or 2 in args.sections:
        result["training"] = [bench_training("tiny", args)]
        if not args.skip_full:
            result["training"].append(bench_training("full", args))
    if 3 in args.sections:
        result["inference"] = bench_inference(args)
    if 4 in args.sections:
        result["geco"] = bench_geco(args)
    if 5 in args.sections:
        result["sdr"] = bench_sdr(args)
    result["load_avg_end"] = load_avg()
    result["wall_s"] = round(time.time() - start, 1)
    md = write_outputs(result, args.out)
    print(md)
    print(f"(written {os.path.join(args.out, 'bench_speed.json')} and bench_speed.md; {result['wall_s']} s)")
    return result


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Device check for a CUDA machine: every reference-size training configuration in fp32 / fp16 / bf16.

    python bench/gpu_check.py                               # the whole check (aim: < 8 min on one H100/H200)
    python bench/gpu_check.py --only sepformer-nass geco --precisions bf16
    python bench/gpu_check.py --device cpu --tiny --steps 2 --precisions fp32 bf16   # code-path smoke test

Rows
----
* Separation: every ``recipes/LibriMix/separation/hparams/libri2mix/<arch><method>.yaml`` that
  exists for ``arch`` in SepFormer, DPRNN, Conv-TasNet and ``method`` in baseline, ``-nass``,
  ``-unified-gm``, ``-nass-unified-gm`` (stacked), built from the YAML unchanged except that
  speed perturbation is off (the loss of one fixed batch is compared across steps). Each
  step is ``SeparationBrain.fit_batch`` -- the recipe's step: SpeechBrain's autocast and
  GradScaler (fp16), PIT, noise term, PatchNCE, gradient modulation's two backward passes,
  clipping, Adam -- on a synthetic batch of the recipe's ``batch_size`` x
  ``training_signal_len`` (2 harmonic "voices" + noise, 8 kHz).
* GeCo (``GeCoModel.dsm_loss_wave``) and Fast-GeCo (``fast_geco_loss``, one reverse step from
  a GeCo model saved and reloaded through ``fast-geco.yaml``) from
  ``recipes/LibriMix/correction/hparams/{geco,fast-geco}.yaml``: the recipe's score network,
  ``batch_size`` and ``crop_samples``; autocast + GradScaler (fp16), clipping at
  ``max_grad_norm``, Adam at the YAML's ``lr``. Time and noise of the diffusion loss are
  drawn once, so successive losses are comparable.
* DDP: when several GPUs are visible, the separation rows are re-run under
  ``torchrun --nproc_per_node=<all GPUs>`` (NCCL, ``--ddp_precision``), each rank on its own
  batch; ``in sync`` says whether all ranks end with bit-identical parameters.

Columns: seconds per step (median after ``--warmup`` steps, CUDA-synchronised), peak
``torch.cuda.max_memory_allocated`` (GiB, model + optimiser + activations, per GPU), first
and last loss, ``finite`` (every loss finite, no batch skipped), ``falling`` (mean of the last
3 losses below the mean of the first 3; first vs last with fewer than 6 steps).

Exit status: 0 when every row ran with finite, falling losses (and DDP ranks in sync);
1 otherwise; 2 when there is no CUDA device (nothing is run) or the arguments are wrong.
``--device cpu --tiny`` runs the demo-size YAMLs on the CPU instead, to exercise the code.
"""

import argparse
import datetime
import gc
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEP_HP = os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams")
COR_HP = os.path.join(ROOT, "recipes", "LibriMix", "correction", "hparams")
ARCHS = ("sepformer", "dprnn", "convtasnet")
METHODS = ("", "-nass", "-unified-gm", "-nass-unified-gm")
PRECISIONS = ("fp32", "fp16", "bf16")
CORRECTIONS = ("geco", "fast-geco")
#: --tiny: demo YAMLs made smaller still (a CPU smoke test of the code path, not a measurement)
TINY_SEP = {"N_encoder_out": 16, "training_signal_len": 2000, "batch_size": 1}
TINY_NCE = {"num_patches": 16, "nce_proj_dim": 16}
TINY_COR = {"crop_samples": 31 * 64, "batch_size": 1}


def separation_configs(tiny):
    """``{name: yaml path}`` of the separation configurations that exist."""
    out = {}
    for arch in ARCHS:
        for method in METHODS:
            path = (os.path.join(SEP_HP, "demo", f"{arch}-tiny{method}.yaml") if tiny
                    else os.path.join(SEP_HP, "libri2mix", f"{arch}{method}.yaml"))
            if os.path.exists(path):
                out[arch + method] = path
    return out


def load_yaml(path, overrides):
    from hyperpyyaml import load_hyperpyyaml

    with open(path, encoding="utf-8") as f:
        return load_hyperpyyaml(f, overrides)


def synthetic_sources(batch, samples, num_spks, seed, sample_rate=8000):
    """``(sources [B, T, S], noise [B, T])``: harmonic tones with vibrato per speaker, white noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / sample_rate
    sources = torch.zeros(batch, samples, num_spks)
    for b in range(batch):
        for s in range(num_spks):
            f0 = 110.0 * (1.8 ** s) * (1 + 0.2 * float(torch.rand(1, generator=g)))
            phase = 2 * math.pi * f0 * (t + 0.002 * torch.sin(2 * math.pi * 4 * t))
            sources[b, :, s] = 0.3 * sum(torch.sin(k * phase) / k for k in range(1, 6)) * (
                0.6 + 0.4 * torch.sin(2 * math.pi * 2.5 * t + s))
    noise = 0.05 * torch.randn(batch, samples, generator=g)
    return sources, noise


def separation_batch(batch, samples, num_spks, seed):
    from speechbrain.dataio.batch import PaddedBatch

    from nass.separation import make_item

    sources, noise = synthetic_sources(batch, samples, num_spks, seed)
    items = []
    for b in range(batch):
        clean = sources[b].sum(-1)
        items.append(make_item(f"synthetic{b}", clean + noise[b], [sources[b, :, s] for s in range(num_spks)], noise[b], clean))
    return PaddedBatch(items)


def falling(losses):
    k = 3 if len(losses) >= 6 else 1
    return statistics.fmean(losses[-k:]) < statistics.fmean(losses[:k])


class Meter:
    """Time steps and the device's peak memory."""

    def __init__(self, device):
        import torch

        self.cuda = device.startswith("cuda")
        self.torch = torch
        self.device = device
        if self.cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        self.times = []

    def step(self, fn):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        out = fn()
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
        self.times.append(time.perf_counter() - start)
        return out

    def result(self, warmup):
        timed = self.times[warmup:] or self.times
        peak = self.torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else float("nan")
        return statistics.median(timed), peak


def run_separation(name, path, precision, args, device, rank=0, distributed=False):
    """One separation row (a dict)."""
    import speechbrain as sb
    import torch

    from nass.brains.separation import SeparationBrain

    overrides = {"data_folder": args.workdir, "output_folder": os.path.join(args.workdir, name), "speed_perturb": None}
    if args.tiny:
        overrides.update(TINY_SEP, **(TINY_NCE if "nass" in name else {}))
    meter = Meter(device)
    hp = load_yaml(path, overrides)
    run_opts = {"device": device, "precision": precision, "noprogressbar": True}
    if distributed:
        run_opts["distributed_backend"] = "nccl" if device.startswith("cuda") else "gloo"
    brain = SeparationBrain(modules=hp["modules"], opt_class=hp["optimizer"], hparams=hp, run_opts=run_opts,
                            checkpointer=None)
    brain.on_fit_start()  # DDP wrapping under torchrun, optimiser
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.nonfinite_count = 0
    batch = separation_batch(hp["batch_size"], hp["training_signal_len"], hp["num_spks"], seed=rank)
    losses = []
    for step in range(args.steps):
        brain.step = step + 1
        losses.append(float(meter.step(lambda: brain.fit_batch(batch))))
    seconds, peak = meter.result(args.warmup)
    params = sum(p.numel() for p in brain.separator().parameters())
    row = dict(config=name, precision=precision, shape=f"{hp['batch_size']} x {hp['training_signal_len'] / 8000:g} s",
               params=params, seconds=seconds, peak=peak, losses=losses,
               finite=all(map(math.isfinite, losses)) and brain.nonfinite_count == 0)
    if distributed:
        flat = torch.cat([p.detach().float().reshape(-1) for p in brain.modules.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(gathered, flat)
        row["in_sync"] = all(torch.equal(gathered[0], g) for g in gathered)
    del brain, hp
    return row


def run_correction(mode, precision, args, device):
    """One GeCo / Fast-GeCo row (a dict)."""
    import torch

    from nass.correction import save_corrector

    suffix = "-tiny" if args.tiny else ""
    folder = os.path.join(COR_HP, "demo") if args.tiny else COR_HP
    common = {"data_folder": args.workdir, "separator_folder": args.workdir}
    small = TINY_COR if args.tiny else {}
    meter = Meter(device)
    hp = load_yaml(os.path.join(folder, f"geco{suffix}.yaml"),
                   {**common, "output_folder": os.path.join(args.workdir, "geco"), **small})
    model = hp["corrector"]
    if mode == "fast-geco":  # the recipe's path: a GeCo folder reloaded by fast-geco.yaml
        geco_folder = os.path.join(args.workdir, "geco-corrector")
        save_corrector(model, geco_folder)
        hp = load_yaml(os.path.join(folder, f"fast-geco{suffix}.yaml"),
                       {**common, "geco_folder": geco_folder, "output_folder": os.path.join(args.workdir, "fast-geco"),
                        **small})
        model = hp["corrector"]
    model = model.to(device).train()
    opt = hp["optimizer"](model.parameters())
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device_type, enabled=precision == "fp16" and device_type == "cuda")
    batch, crop = hp["batch_size"], hp["crop_samples"]
    sources, noise = synthetic_sources(batch, crop, 2, seed=0)
    target = sources[..., 0].to(device)
    mixture = (sources.sum(-1) + noise).to(device)
    estimate = (target + 0.3 * sources[..., 1].to(device) + noise.to(device))
    _, _, spec, _ = model.waves_to_specs(estimate, mixture, target)
    gen = torch.Generator(device=device).manual_seed(0)
    t = torch.rand(batch, device=device, generator=gen) * (model.sde.T - model.sde.t_eps) + model.sde.t_eps
    z = torch.randn(spec.shape, dtype=spec.dtype, device=device, generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if mode == "geco":
                loss = model.dsm_loss_wave(estimate, mixture, target, t=t, z=z)
            else:
                loss = model.fast_geco_loss(estimate, mixture, target,
                                            generator=torch.Generator(device=device).manual_seed(1))
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["max_grad_norm"])
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())

    losses = [meter.step(step) for _ in range(args.steps)]
    seconds, peak = meter.result(args.warmup)
    row = dict(config=mode, precision=precision, shape=f"{batch} x {crop / 8000:g} s",
               params=sum(p.numel() for p in model.parameters()), seconds=seconds, peak=peak, losses=losses,
               finite=all(map(math.isfinite, losses)))
    del model, opt
    return row


def row_ok(row):
    return "error" not in row and row["finite"] and falling(row["losses"]) and row.get("in_sync", True)


def markdown(rows, title):
    lines = [f"### {title}", "",
             "| config | precision | batch x crop | params (M) | s / step | peak memory (GiB) | first loss | last loss "
             "| finite | falling |" + (" in sync |" if any("in_sync" in r for r in rows) else ""),
             "|---|---|---|---:|---:|---:|---:|---:|---|---|" + ("---|" if any("in_sync" in r for r in rows) else "")]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['precision']} | | | | | | | error: {r['error']} | |")
            continue
        sync = f" {'yes' if r['in_sync'] else 'NO'} |" if "in_sync" in r else ""
        lines.append(
            f"| {r['config']} | {r['precision']} | {r['shape']} | {r['params'] / 1e6:.2f} | {r['seconds']:.3f} "
            f"| {'n/a' if math.isnan(r['peak']) else format(r['peak'], '.2f')} | {r['losses'][0]:.3f} | {r['losses'][-1]:.3f} | {'yes' if r['finite'] else 'NO'} "
            f"| {'yes' if falling(r['losses']) else 'NO'} |{sync}")
    return "\n".join(lines)


def guarded(fn, config, precision, *a, **k):
    try:
        return fn(*a, **k)
    except Exception as exc:  # one failing configuration must not hide the others
        first = (str(exc).strip().splitlines() or [""])[0][:160].replace("|", "/")
        return {"config": config, "precision": precision, "error": f"{type(exc).__name__}: {first}"}


def environment(device):
    import speechbrain
    import torch

    if device.startswith("cuda"):
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        gpu = f"{torch.cuda.device_count()} x {', '.join(names)}, CUDA {torch.version.cuda}"
    else:
        gpu = f"CPU ({os.cpu_count()} cores), no GPU"
    return (f"{gpu}; torch {torch.__version__}, speechbrain {speechbrain.__version__}; "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny: a smoke test)")
    p.add_argument("--steps", type=int, default=20, help="training steps per row (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing (default 3)")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--only", nargs="+", default=None, metavar="CONFIG",
                   help="rows to run, e.g. sepformer-nass dprnn geco fast-geco (default: all)")
    p.add_argument("--tiny", action="store_true", help="demo-size YAMLs, tiny crops (code-path check, not a measurement)")
    p.add_argument("--ddp_precision", default="bf16", choices=PRECISIONS, help="precision of the DDP rows")
    p.add_argument("--no_ddp", action="store_true", help="skip the DDP rows even with several GPUs")
    p.add_argument("--out", default=None, help="also write the Markdown table to this file")
    p.add_argument("--ddp_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 2 or not 0 <= args.warmup < args.steps:
        p.error("need --steps >= 2 and 0 <= --warmup < --steps")
    return args


def ddp_worker(args):
    """Under torchrun: the separation rows on every rank; rank 0 prints their Markdown table."""
    import speechbrain as sb
    import torch

    local_rank, rank = int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"])
    device = f"cuda:{local_rank}" if args.device == "cuda" else "cpu"
    sb.utils.distributed.ddp_init_group({"distributed_backend": "nccl" if args.device == "cuda" else "gloo"})
    rows = []
    for name, path in separation_configs(args.tiny).items():
        if args.only is None or name in args.only:
            rows.append(guarded(run_separation, name, args.ddp_precision, name, path, args.ddp_precision, args,
                                device, rank=rank, distributed=True))
    if rank == 0:
        world = torch.distributed.get_world_size()
        print(markdown(rows, f"DDP, {world} processes (per-GPU batch as the recipe)"))
    return 0 if all(map(row_ok, rows)) else 1


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False): nothing was measured. "
              "Run it on a CUDA machine; `--device cpu --tiny --steps 2` only checks the code path.", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="nass-gpu-check-") as workdir:
        args.workdir = args.workdir or workdir
        if args.ddp_worker:
            return ddp_worker(args)
        device = "cuda:0" if args.device == "cuda" else args.device
        started = time.time()
        rows = []
        for name, path in separation_configs(args.tiny).items():
            if args.only is None or name in args.only:
                for precision in args.precisions:
                    rows.append(guarded(run_separation, name, precision, name, path, precision, args, device))
                    print(f"[{time.time() - started:6.0f} s] {name} {precision} done", file=sys.stderr, flush=True)
        for mode in CORRECTIONS:
            if args.only is None or mode in args.only:
                for precision in args.precisions:
                    rows.append(guarded(run_correction, mode, precision, mode, precision, args, device))
                    print(f"[{time.time() - started:6.0f} s] {mode} {precision} done", file=sys.stderr, flush=True)
        sections = [f"## bench/gpu_check.py: {args.steps} steps per row{' (--tiny: code path only)' if args.tiny else ''}",
                    "", environment(args.device), "", markdown(rows, "One device")]
        ok = all(map(row_ok, rows))
        if args.device == "cuda" and torch.cuda.device_count() > 1 and not args.no_ddp:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={torch.cuda.device_count()}", os.path.abspath(__file__), "--ddp_worker",
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--ddp_precision", args.ddp_precision]
            cmd += (["--only", *args.only] if args.only else []) + (["--tiny"] if args.tiny else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            table = "\n".join(line for line in proc.stdout.splitlines() if line.startswith(("|", "###")))
            sections += ["", table or f"### DDP\n\nfailed (exit {proc.returncode}): {proc.stderr[-500:]}"]
            ok = ok and proc.returncode == 0
        sections += ["", f"Total {time.time() - started:.0f} s; {'all rows finite and falling' if ok else 'SOME ROWS FAILED'}."]
        text = "\n".join(sections)
        print(text)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

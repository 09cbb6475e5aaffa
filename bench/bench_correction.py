"""Speed of GeCo (predictor-corrector, N = 30) and Fast-GeCo (one step) correction.

Prints parameter counts and wall time per second of 8 kHz audio (real-time factor,
lower is faster) for the tiny test network and the reference-size network (NCSN++-sized
diffusers U-Net: 128 channels, 7 levels). Untrained weights: speed only, no quality.

The cost of GeCo is linear in the number of score evaluations (NFE = N * (1 + corrector
steps) = 60), so on a slow CPU the reference-size GeCo time is extrapolated from
``--ref-geco-steps`` steps (default 2, i.e. 4 NFE) unless ``--full`` is given; the
output says which.

Usage::

    .venv/bin/python bench/bench_correction.py [--seconds 1.0] [--threads 2] [--full]
                                               [--device cpu|cuda]
"""

import argparse
import time

import torch

from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(name, net, seconds, geco_steps, device, full_steps=30):
    model = GeCoModel(BBEDSDE(), net, SpecTransform()).to(device).eval()
    n = int(seconds * 8000)
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(1, n, generator=gen).to(device)
    m = torch.randn(1, n, generator=gen).to(device)
    # warm-up (allocator, kernels)
    model.correct(y, m, mode="fast-geco")
    fast = min(timed(lambda: model.correct(y, m, mode="fast-geco"), device) for _ in range(2))
    geco = timed(lambda: model.correct(y, m, mode="geco", num_steps=geco_steps), device)
    extrapolated = geco_steps != full_steps
    geco_full = geco * full_steps / geco_steps
    frames = SpecTransform().num_frames(n)
    print(
        f"{name:9s} params {net.num_parameters() / 1e6:8.3f} M | {seconds:.2f} s audio "
        f"({frames} frames, padded to {model.pad_frames(torch.zeros(1, 1, frames)).shape[-1]}) | "
        f"Fast-GeCo {fast / seconds:9.3f} s/s | GeCo N={full_steps} {geco_full / seconds:9.3f} s/s"
        f"{' (extrapolated from N=%d)' % geco_steps if extrapolated else ''} | "
        f"speed-up {geco_full / fast:6.1f}x"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="clip length (s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--ref-geco-steps", type=int, default=2,
                        help="GeCo steps actually run for the reference size (CPU)")
    parser.add_argument("--full", action="store_true", help="run all 30 GeCo steps everywhere")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    bench("tiny", ScoreModel.tiny(), args.seconds, 30, device)
    steps = 30 if (args.full or device.type == "cuda") else args.ref_geco_steps
    bench("reference", ScoreModel(), args.seconds, steps, device)


if __name__ == "__main__":
    main()

"""Console commands ``nass-separate``, ``nass-evaluate`` and ``nass-export`` (declared in ``setup.py``).

Without the console scripts installed: ``python -m nass.cli separate|evaluate|export ARGS``.

Bad input (missing or unreadable audio, a model folder without checkpoint, a broken
manifest) ends with exit code 2 and a one-line message on stderr, without a traceback
and without leaving partial outputs behind.

``--model`` and ``--corrector`` folders hold HyperPyYAML, which executes Python: only
use folders you trust.
"""

import argparse
import logging
import os
import sys

from nass.correction.modes import DEFAULT_MODE, MODES  # the mode names only (no torch)

#: Exit code for bad input (the same as argparse's usage errors).
EXIT_BAD_INPUT = 2


def _fail(prog, exc):
    message = " ".join(str(exc).split())  # one line
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def load_corrector(folder, device="cpu"):
    """Load a GeCo / Fast-GeCo corrector folder through ``nass.correction.load_corrector``.

    ``folder`` is a corrector folder or a GeCo / Fast-GeCo training output folder
    (whose ``corrector/`` is then loaded).

    Raises
    ------
    ValueError
        When this installation has no corrector loader.
    """
    try:
        from nass.correction import load_corrector as _load
    except ImportError as exc:
        raise ValueError(
            f"{folder}: cannot load a corrector: nass.correction.load_corrector is not available "
            "in this installation. Run without --corrector or update nass."
        ) from exc
    nested = os.path.join(folder, "corrector")  # a GeCo / Fast-GeCo training output folder
    if not os.path.isfile(os.path.join(folder, "corrector.json")) and os.path.isfile(os.path.join(nested, "corrector.json")):
        folder = nested
    return _load(folder, device=device)


def check_device(device):
    """Refuse an unusable ``--device`` with a one-line ``ValueError`` instead of a traceback."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"--device {device!r} is not a device name (use cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s); pick another index")
    return device


def expand_inputs(inputs):
    """``nass-separate`` inputs: files as given, a folder as its audio files, a glob as its matches.

    Parameters
    ----------
    inputs : list of str
        Audio files, folders (their ``.wav`` / ``.flac`` files, not recursive, by name:
        :func:`nass.dataio.manifest.list_audio_files`) and glob patterns (``*``, ``?``,
        ``[...]``; matches sorted), in any mix.

    Returns
    -------
    list of str
        The audio files, in input order, each once.

    Raises
    ------
    ValueError
        A folder without audio files or a pattern that matches nothing (named).

    Example
    -------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for n in ("b.wav", "a.wav", "notes.txt"):
    ...     _ = open(os.path.join(d, n), "w").write("")
    >>> [os.path.basename(p) for p in expand_inputs([d])]
    ['a.wav', 'b.wav']
    >>> [os.path.basename(p) for p in expand_inputs([os.path.join(d, "b*")])]
    ['b.wav']
    """
    import glob

    from nass.dataio.manifest import AUDIO_EXTENSIONS, list_audio_files

    out = []
    for item in inputs:
        if os.path.isdir(item):
            found = list(list_audio_files(item).values())
            if not found:
                raise ValueError(f"{item}: folder without audio files ({', '.join(AUDIO_EXTENSIONS)}).")
        elif not os.path.exists(item) and glob.has_magic(item):
            found = sorted(p for p in glob.glob(item) if os.path.isfile(p))
            if not found:
                raise ValueError(f"{item}: no file matches this pattern.")
        else:
            found = [item]
        out += [p for p in found if p not in out]
    return out


def _output_dirs(inputs, out):
    """One output folder per input: ``out`` itself for one input, else ``out/<stem>``."""
    if len(inputs) == 1:
        return [out]
    from nass.dataio.paths import safe_name

    dirs, used = [], set()
    for path in inputs:
        name = safe_name(os.path.splitext(os.path.basename(os.path.normpath(path)))[0])
        candidate, k = name, 2
        while candidate in used:
            candidate, k = f"{name}_{k}", k + 1
        used.add(candidate)
        dirs.append(os.path.join(out, candidate))
    return dirs


def separate_main(argv=None):
    """``nass-separate mix.wav [more.wav ...] --model DIR --out DIR [options]``.

    Writes ``s1.wav``, ``s2.wav`` [, ``s3.wav``] [, ``noise.wav``] at each input's rate,
    into ``--out`` for one input and into ``--out/<input name>/`` for several. Every
    output is staged and appears only when all inputs are separated; an existing output
    is refused unless ``--overwrite``; a failure removes only what this run created.

    Returns
    -------
    int
        0 on success, 2 on bad input (message on stderr; nothing written, nothing lost).
    """
    parser = argparse.ArgumentParser(
        prog="nass-separate", description="Separate the speakers (and the noise) of audio files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+",
                        help="audio files, folders of audio files or glob patterns (any rate; stereo is mixed down)")
    parser.add_argument("--model", required=True, help="training output folder or exported model folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--chunk_seconds", type=float, default=8.0, help="chunk length for long files (s; 0 = one pass)")
    parser.add_argument("--overlap_seconds", type=float, default=1.0, help="overlap between chunks (s)")
    parser.add_argument("--corrector", default=None, help="GeCo / Fast-GeCo corrector folder or its training output folder (optional)")
    parser.add_argument("--correction", choices=MODES, default=DEFAULT_MODE, help="correction mode")
    parser.add_argument("--steps", type=int, default=30, help="reverse steps for --correction geco")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs of an earlier run in --out (default: refuse them)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from nass.dataio.audio import AudioError, OutputStage, audio_info
    from nass.inference import Separator, output_names, separate_to_folder

    prog = parser.prog
    try:
        args.inputs = expand_inputs(args.inputs)
    except ValueError as exc:
        return _fail(prog, exc)
    out_dirs = _output_dirs(args.inputs, args.out)
    stage = OutputStage(overwrite=args.overwrite)
    try:
        check_device(args.device)
        check_seconds("--chunk_seconds", args.chunk_seconds)
        check_seconds("--overlap_seconds", args.overlap_seconds)
        for path in args.inputs:  # cheap checks before loading the model
            if os.path.isdir(path):
                raise AudioError(f"{path}: is a folder, not an audio file. Pass the audio files themselves.")
            audio_info(path)
        corrector = load_corrector(args.corrector, device=args.device) if args.corrector else None
        separator = Separator.from_hparams(
            args.model,
            device=args.device,
            chunk_seconds=args.chunk_seconds,
            overlap_seconds=args.overlap_seconds,
            corrector=corrector,
            correction_mode=args.correction,
            correction_steps=args.steps,
        )
        for out_dir in out_dirs:  # refuse earlier outputs before separating anything
            for name in output_names(separator):
                stage.claim(os.path.join(out_dir, name))
        for path, out_dir in zip(args.inputs, out_dirs):
            separate_to_folder(separator, path, out_dir, stage=stage)
        stage.commit()  # every input separated: only now do the outputs appear (or replace earlier ones)
        for path, out_dir in zip(args.inputs, out_dirs):
            print(f"{path} -> {out_dir}")
    except (ValueError, OSError) as exc:
        stage.abort()
        return _fail(prog, exc)
    except BaseException:
        stage.abort()
        raise
    return 0


def check_seconds(option, value):
    """Refuse a NaN, infinite or negative duration option with a one-line ``ValueError``.

    Example
    -------
    >>> check_seconds("--chunk_seconds", float("inf"))
    Traceback (most recent call last):
    ...
    ValueError: --chunk_seconds inf: must be a finite number of seconds >= 0 (0 = no chunking)
    """
    import math

    if value is not None and not (math.isfinite(value) and value >= 0):
        hint = "0 = no chunking" if option == "--chunk_seconds" else "e.g. 1.0"
        raise ValueError(f"{option} {value}: must be a finite number of seconds >= 0 ({hint})")
    return value


def evaluate_main(argv=None):
    """``nass-evaluate --model DIR --manifest test.csv --out DIR [options]``.

    Writes ``<out>/test_metrics.csv`` and ``<out>/examples/``; prints the means. With
    ``--corrector DIR`` (a GeCo / Fast-GeCo folder) the same estimates are scored again
    after correction: ``<out>/test_metrics_<mode>.csv`` and ``<out>/examples_<mode>/``
    for each ``--correction`` mode (every utterance, every speaker).

    Returns
    -------
    int
        0 on success, 2 on bad input.
    """
    parser = argparse.ArgumentParser(
        prog="nass-evaluate", description="Score a trained separator on a prepared split (manifest CSV).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="training output folder or exported model folder")
    parser.add_argument("--manifest", required=True, help="manifest CSV of the split (e.g. test.csv)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--num_workers", type=int, default=2, help="processes computing the metrics (0 = none)")
    parser.add_argument("--save_examples", type=int, default=5, help="utterances saved as WAV")
    parser.add_argument("--pesq_estoi", action="store_true", help="also compute PESQ-NB and ESTOI")
    parser.add_argument("--sdr_backend", choices=("mir_eval", "fast_bss_eval"), default="mir_eval",
                        help="SDR implementation: mir_eval (the papers') or fast_bss_eval (same values, faster)")
    parser.add_argument(
        "--chunk_seconds", type=float, default=0.0,
        help="separate in chunks of this length (s); 0 = whole utterances, as in the papers",
    )
    parser.add_argument("--corrector", default=None,
                        help="GeCo / Fast-GeCo corrector folder: also score the corrected estimates")
    parser.add_argument("--correction", choices=MODES, action="append", default=None,
                        help=f"correction mode (repeat for several; none given: {DEFAULT_MODE})")
    parser.add_argument("--steps", type=int, default=30, help="reverse steps for --correction geco")
    parser.add_argument("--max_utterances", type=int, default=None, help="score only the first N utterances")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the correction samplers")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier evaluation in --out (default: refuse them)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from nass.evaluation import evaluate_manifest, evaluate_with_correction
    from nass.inference import Separator, load_separator

    prog = parser.prog
    try:
        check_device(args.device)
        if not os.path.isfile(args.manifest):
            raise ValueError(
                f"{args.manifest}: manifest not found. Make it with nass-prepare (e.g. nass-prepare custom "
                "mycorpus/Libri2Mix manifests/ --splits test) or fix the path."
            )
        check_seconds("--chunk_seconds", args.chunk_seconds)
        if args.max_utterances is not None and args.max_utterances < 1:
            raise ValueError(f"--max_utterances {args.max_utterances}: must be a positive number (omit it for all)")
        if args.correction and not args.corrector:
            raise ValueError("--correction needs --corrector <folder> (a GeCo / Fast-GeCo corrector)")
        corrector = load_corrector(args.corrector, device=args.device) if args.corrector else None
        model, hparams = load_separator(args.model, device=args.device)
        num_spks = int(hparams.get("num_spks", getattr(model, "num_spks", 2)))
        if corrector is not None:
            evaluate_with_correction(
                model, int(hparams["sample_rate"]), num_spks, args.manifest, args.out, corrector=corrector,
                correction_mode=args.correction or [DEFAULT_MODE], correction_steps=args.steps,
                device=args.device, chunk_seconds=args.chunk_seconds, num_workers=args.num_workers,
                save_examples=args.save_examples, pesq_estoi=args.pesq_estoi,
                max_utterances=args.max_utterances, seed=args.seed, sdr_backend=args.sdr_backend,
                overwrite=args.overwrite,
            )
            return 0
        separator = Separator(model, hparams["sample_rate"], chunk_seconds=args.chunk_seconds, device=args.device)
        evaluate_manifest(
            separator.separate_batch,
            args.manifest,
            args.out,
            num_spks=num_spks,
            sample_rate=int(hparams["sample_rate"]),
            num_workers=args.num_workers,
            save_examples=args.save_examples,
            pesq_estoi=args.pesq_estoi,
            max_utterances=args.max_utterances,
            sdr_backend=args.sdr_backend,
            overwrite=args.overwrite,
        )
    except (ValueError, OSError) as exc:
        return _fail(prog, exc)
    return 0


def export_main(argv=None):
    """``nass-export RUN_DIR OUT_DIR [--onnx] [--torch_export] [--length_seconds S] [--dynamic_length] [--overwrite]``.

    ``RUN_DIR`` is a training output folder (its best checkpoint is used, checked against
    its ``CKPT.yaml``) or a model folder; ``OUT_DIR`` receives ``hyperparams.yaml`` (model
    objects only), ``separator.ckpt`` and ``model_card.json`` (:mod:`nass.export`),
    atomically. ``RUN_DIR`` is only read. ``--onnx`` / ``--torch_export`` add
    ``separator.onnx`` / ``separator.pt2`` (:mod:`nass.graph_export`), each run on a random
    mixture and compared with the PyTorch output before anything is written.

    Returns
    -------
    int
        0 on success, 2 on bad input or a model that cannot be exported as asked (one line
        on stderr saying why and what works; nothing written).
    """
    parser = argparse.ArgumentParser(
        prog="nass-export", description="Export a trained separator as a portable, read-only model folder "
        "(optionally with an ONNX model and a torch.export program).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_dir", help="training output folder (or a model folder)")
    parser.add_argument("out_dir", help="model folder to write")
    parser.add_argument("--onnx", action="store_true",
                        help="also write separator.onnx (needs pip install 'nass[export]')")
    parser.add_argument("--torch_export", action="store_true", help="also write separator.pt2 (torch.export program)")
    parser.add_argument("--length_seconds", type=float, default=4.0,
                        help="input length of the exported programs (s); callers pad or cut to it")
    parser.add_argument("--dynamic_length", action="store_true",
                        help="export a dynamic time axis instead of a fixed length (refused where it does not work)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="largest absolute difference to the PyTorch output (default 1e-3)")
    parser.add_argument("--onnx_exporter", choices=("dynamo", "torchscript"), default="dynamo",
                        help="torch.onnx exporter (torchscript: the older tracer, much faster for DPRNN)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from nass.export import export_model

    formats = [f for f, on in (("onnx", args.onnx), ("torch_export", args.torch_export)) if on]
    try:
        if args.dynamic_length and not formats:
            raise ValueError("--dynamic_length needs --onnx or --torch_export")
        export_model(args.run_dir, args.out_dir, overwrite=args.overwrite, formats=formats,
                     length_seconds=args.length_seconds, dynamic_length=args.dynamic_length,
                     tolerance=args.tolerance, onnx_exporter=args.onnx_exporter)
    except (ValueError, OSError) as exc:
        return _fail(parser.prog, exc)
    print(f"{args.run_dir} -> {args.out_dir}")
    if formats:
        import json

        with open(os.path.join(args.out_dir, "model_card.json"), encoding="utf-8") as f:
            exports = json.load(f).get("exports", {})
        for fmt, info in exports.items():
            shape = info["inputs"][0]["shape"]
            print(f"  {info['file']}: input {info['inputs'][0]['name']} {shape} at {info['sample_rate']} Hz, "
                  f"{'fixed' if info['fixed_length'] else 'dynamic'} length, max abs diff to PyTorch "
                  f"{info['max_abs_diff']:.2g}")
    return 0


def main(argv=None):
    """``python -m nass.cli separate|evaluate|export ARGS`` (the console scripts without installing)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {"separate": separate_main, "evaluate": evaluate_main, "export": export_main}
    if not argv or argv[0] not in commands:
        print(f"usage: python -m nass.cli {{{','.join(commands)}}} ARGS", file=sys.stderr)
        return EXIT_BAD_INPUT
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())

"""Console commands ``nass-separate`` and ``nass-evaluate`` (declared in ``setup.py``).

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
    from nass.evaluation import safe_name

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
    into ``--out`` for one input and into ``--out/<input name>/`` for several.

    Returns
    -------
    int
        0 on success, 2 on bad input (message on stderr; nothing written).
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
    parser.add_argument("--correction", choices=("fast-geco", "geco"), default="fast-geco", help="correction mode")
    parser.add_argument("--steps", type=int, default=30, help="reverse steps for --correction geco")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from nass.dataio.audio import AudioError, audio_info
    from nass.inference import Separator, separate_to_folder

    prog = parser.prog
    try:
        args.inputs = expand_inputs(args.inputs)
    except ValueError as exc:
        return _fail(prog, exc)
    out_dirs = _output_dirs(args.inputs, args.out)
    created = []  # folders this run created, removed again on failure
    written = []
    try:
        check_device(args.device)
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
        for path, out_dir in zip(args.inputs, out_dirs):
            for d in (args.out, out_dir):
                if not os.path.isdir(d):
                    os.makedirs(d)
                    created.append(d)
            written += separate_to_folder(separator, path, out_dir)
            print(f"{path} -> {out_dir}")
    except (ValueError, OSError) as exc:
        _cleanup(written, created)
        return _fail(prog, exc)
    except BaseException:
        _cleanup(written, created)
        raise
    return 0


def _cleanup(written, created):
    for p in written:
        try:
            os.remove(p)
        except OSError:
            pass
    for d in reversed(created):
        try:
            os.rmdir(d)  # only if empty: never remove what the user put there
        except OSError:
            pass


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
    parser.add_argument("--correction", choices=("fast-geco", "geco"), action="append", default=None,
                        help="correction mode (repeat for both; none given: fast-geco)")
    parser.add_argument("--steps", type=int, default=30, help="reverse steps for --correction geco")
    parser.add_argument("--max_utterances", type=int, default=None, help="score only the first N utterances")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the correction samplers")
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
        if args.correction and not args.corrector:
            raise ValueError("--correction needs --corrector <folder> (a GeCo / Fast-GeCo corrector)")
        corrector = load_corrector(args.corrector, device=args.device) if args.corrector else None
        model, hparams = load_separator(args.model, device=args.device)
        num_spks = int(hparams.get("num_spks", getattr(model, "num_spks", 2)))
        if corrector is not None:
            evaluate_with_correction(
                model, int(hparams["sample_rate"]), num_spks, args.manifest, args.out, corrector=corrector,
                correction_mode=args.correction or ["fast-geco"], correction_steps=args.steps,
                device=args.device, chunk_seconds=args.chunk_seconds, num_workers=args.num_workers,
                save_examples=args.save_examples, pesq_estoi=args.pesq_estoi,
                max_utterances=args.max_utterances, seed=args.seed, sdr_backend=args.sdr_backend,
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
        )
    except (ValueError, OSError) as exc:
        return _fail(prog, exc)
    return 0

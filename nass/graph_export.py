"""Export a trained separator as an ONNX model or a ``torch.export`` program, checked against PyTorch.

``nass-export RUN_DIR OUT_DIR --onnx [--torch_export] [--length_seconds 4] [--dynamic_length]``
writes the portable model folder of :mod:`nass.export` with, next to ``separator.ckpt``,

* ``separator.onnx`` (``--onnx``): input ``mix`` ``[batch, time]`` float32 at the card's
  ``sample_rate``; outputs ``est_sources`` ``[batch, time, num_spks]`` and, for a model with
  a noise output, ``est_noise`` ``[batch, time]``. Runs in ONNX Runtime
  (``pip install 'nass[export]'``).
* ``separator.pt2`` (``--torch_export``): the same graph as a ``torch.export`` program
  (``torch.export.load(path).module()(mix)`` returns the same tuple).

The batch axis is dynamic. The time axis is **fixed** at ``--length_seconds`` unless
``--dynamic_length`` is given: then the export is tried with a symbolic time axis and
kept only when the program also matches PyTorch at other lengths, including one that is
not a multiple of the encoder stride. Where only multiples of the stride match (the
``torchscript`` ONNX exporter), the card says so (``length_multiple_of``). Where the
dynamic export fails (measured with torch 2.14: ``torch.export`` of DPRNN, whose chunking
arithmetic the symbolic shapes cannot solve), the command stops with the reason and the
ways that work: a fixed length, with the input padded or cut to it by the caller, or ONNX.

Every exported file is read back from its bytes and run on a random mixture; the
largest absolute difference to the PyTorch output must stay under ``--tolerance``
(else :class:`ExportError`, nothing written). The card's ``exports`` entry records the
file, input and output names and shapes, the sample rate, whether the length is fixed,
the lengths checked and the differences measured. The whole folder is written to a
staging folder and renamed into place (:func:`nass.export.write_artifact_folder`).

Example
-------
>>> # nass-export results/convtasnet/1234 models/convtasnet --onnx --length_seconds 4
>>> # import onnxruntime; s = onnxruntime.InferenceSession("models/convtasnet/separator.onnx")
>>> # est_sources, est_noise = s.run(None, {"mix": mix_float32_of_shape_1_by_32000})
"""

import contextlib
import io
import logging
import os
import tempfile
import warnings

import torch

logger = logging.getLogger(__name__)

#: File names in the model folder.
ONNX_FILE = "separator.onnx"
TORCH_EXPORT_FILE = "separator.pt2"
#: Export formats: card key -> file name.
FORMATS = {"onnx": ONNX_FILE, "torch_export": TORCH_EXPORT_FILE}
INPUT_NAME = "mix"
#: Default largest absolute difference between the exported program and PyTorch.
TOLERANCE = 1e-3
#: ONNX exporters of ``torch.onnx.export``: ``dynamo`` (torch.export based, the default of
#: recent PyTorch) and ``torchscript`` (the older tracer; much faster to export RNNs).
ONNX_EXPORTERS = ("dynamo", "torchscript")


class ExportError(ValueError):
    """A separator that cannot be exported as asked; the message says why and what works instead."""


def encoder_stride(model):
    """Hop of the separator's encoder in samples: the ``hop_length`` of an STFT front end
    (:class:`nass.separation.STFTMaskingSeparator`), else the stride of its first ``Conv1d``;
    1 without either.

    Example
    -------
    >>> import torch
    >>> m = torch.nn.Module(); m.encoder = torch.nn.Conv1d(1, 4, 16, stride=8)
    >>> encoder_stride(m)
    8
    """
    if isinstance(getattr(model, "hop_length", None), int):
        return model.hop_length
    encoder = getattr(model, "encoder", model)
    for module in encoder.modules():
        if isinstance(module, torch.nn.Conv1d):
            return int(module.stride[0])
    return 1


class WaveformSeparator(torch.nn.Module):
    """Tensor-in, tensors-out view of a :class:`nass.separation.MaskingSeparator` for export.

    Parameters
    ----------
    model : torch.nn.Module
        Returns an object with ``est_sources`` ``[batch, time, num_spks]`` and
        ``est_noise`` ``[batch, time]`` or None.

    Example
    -------
    >>> import torch
    >>> from nass.separation import SeparationOutput
    >>> class Halves(torch.nn.Module):
    ...     def forward(self, mix):
    ...         est = torch.stack([mix / 2, mix / 2], -1)
    ...         return SeparationOutput(est, None, mix, None, est)
    >>> [o.shape for o in WaveformSeparator(Halves())(torch.randn(2, 1000))]
    [torch.Size([2, 1000, 2])]
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.stride = encoder_stride(model)
        self.noise_output = getattr(model, "noise_target", "none") == "extra_output"

    def output_names(self):
        """``["est_sources"]`` (+ ``"est_noise"`` for a model with a noise output)."""
        return ["est_sources"] + (["est_noise"] if self.noise_output else [])

    def forward(self, mix):
        """``mix`` ``[batch, time]`` -> ``(est_sources [batch, time, S],)`` (+ ``est_noise [batch, time]``)."""
        out = self.model(mix)
        return (out.est_sources,) + ((out.est_noise,) if self.noise_output else ())


def _quiet():
    """Silence the exporters' progress prints and their 'torchvision is not installed' warnings."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript"):
        log = logging.getLogger(name)
        level = log.level
        log.setLevel(logging.ERROR)
        stack.callback(log.setLevel, level)
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _check_inputs(length, dynamic, stride, seed=0):
    """Random mixtures ``[batch, time]`` the program is checked on (the export length first)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(1, length), (2, length)]
    if dynamic:
        whole = length - length % stride  # whole encoder frames
        shapes += [(1, whole + 2 * stride), (2, max(whole // 2 - whole // 2 % stride, 4 * stride))]
        if stride > 1:
            shapes.append((1, whole + stride + 1))  # not a multiple of the stride
    return [0.1 * torch.randn(*s, generator=gen) for s in shapes]


def _max_diff(got, want):
    if len(got) != len(want):
        raise ExportError(f"the exported program returned {len(got)} outputs instead of {len(want)}")
    diff = 0.0
    for g, w in zip(got, want):
        g = torch.as_tensor(g)
        if tuple(g.shape) != tuple(w.shape):
            raise ExportError(f"output shape {tuple(g.shape)} instead of {tuple(w.shape)}")
        diff = max(diff, float((g.float() - w).abs().max()))
    return diff


def _run_onnx(data):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    return lambda mix: session.run(None, {INPUT_NAME: mix.numpy()})


def _run_torch_export(data):
    program = torch.export.load(io.BytesIO(data)).module()

    def run(mix):
        with torch.no_grad():
            return program(mix)

    return run


def _export_onnx(wrapper, example, dynamic, exporter, path):
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        if exporter == "dynamo":
            import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs onnx, onnxruntime and onnxscript ({exc}). Install them with "
            "pip install 'nass[export]' (exact versions: requirements.txt)."
        ) from exc
    names = wrapper.output_names()
    axes = {0: "batch", 1: "time"} if dynamic else {0: "batch"}
    with _quiet():
        if exporter == "dynamo":
            torch.onnx.export(wrapper, (example,), path, input_names=[INPUT_NAME], output_names=names, dynamo=True,
                              dynamic_shapes=(axes,), external_data=False, verbose=False)
        else:
            torch.onnx.export(wrapper, (example,), path, input_names=[INPUT_NAME], output_names=names, dynamo=False,
                              dynamic_axes={n: axes for n in [INPUT_NAME] + names}, opset_version=17)


def _export_torch(wrapper, example, dynamic, path):
    auto = torch.export.Dim.AUTO
    shapes = ({0: auto, 1: auto},) if dynamic else ({0: auto},)
    with _quiet():
        program = torch.export.export(wrapper, (example,), dynamic_shapes=shapes)
        torch.export.save(program, path)


def export_program(model, sample_rate, fmt, length, dynamic=False, tolerance=TOLERANCE, onnx_exporter="dynamo"):
    """Export ``model`` in one format and check the exported bytes against PyTorch.

    Parameters
    ----------
    model : torch.nn.Module
        A separator (:class:`nass.separation.MaskingSeparator`), in ``eval()`` mode on the CPU.
    sample_rate : int
        Its rate (Hz), for the card.
    fmt : {"onnx", "torch_export"}
        ONNX (run by ONNX Runtime) or a ``torch.export`` program (``.pt2``).
    length : int
        Samples of the example input: the fixed length, or the first length checked.
    dynamic : bool
        Also a symbolic time axis, kept only when other lengths match too.
    tolerance : float
        Largest absolute difference to the PyTorch output allowed.
    onnx_exporter : {"dynamo", "torchscript"}
        The ``torch.onnx.export`` exporter (ONNX only).

    Returns
    -------
    data : bytes
        The exported file.
    info : dict
        The card entry: ``file``, ``format``, ``inputs`` / ``outputs`` (name, shape with
        ``"batch"`` / ``"time"`` for dynamic axes, dtype), ``sample_rate``,
        ``fixed_length``, ``length_samples`` (fixed) or ``min_length_samples`` and
        ``length_multiple_of`` (dynamic), ``checked`` (shape and max abs diff of each check),
        ``max_abs_diff``, ``tolerance``, ``torch_version`` (and ``onnx_exporter``, ``opset``).

    Raises
    ------
    ExportError
        The exporter failed, or the program differs from PyTorch by more than
        ``tolerance`` (both name the reason and what to try instead), or ONNX packages are missing.

    Example
    -------
    >>> import torch
    >>> from nass.separation import SeparationOutput
    >>> class Halves(torch.nn.Module):
    ...     def forward(self, mix):
    ...         est = torch.stack([mix / 2, mix / 2], -1)
    ...         return SeparationOutput(est, None, mix, None, est)
    >>> data, info = export_program(Halves(), 8000, "torch_export", 800)
    >>> info["inputs"], info["outputs"], info["fixed_length"], info["max_abs_diff"] <= 1e-6
    ([{'name': 'mix', 'shape': ['batch', 800], 'dtype': 'float32'}], [{'name': 'est_sources', 'shape': ['batch', 800, 2], 'dtype': 'float32'}], True, True)
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if onnx_exporter not in ONNX_EXPORTERS:
        raise ExportError(f"unknown ONNX exporter {onnx_exporter!r}; use one of {', '.join(ONNX_EXPORTERS)}")
    wrapper = WaveformSeparator(model).eval()
    stride = wrapper.stride
    length = int(length)
    if length < 4 * stride:
        raise ExportError(f"length {length} samples is too short; give at least {4 * stride} (--length_seconds)")
    inputs = _check_inputs(length, dynamic, stride)
    with torch.no_grad():
        wants = [wrapper(x) for x in inputs]
    num_spks = int(wants[0][0].shape[-1])
    what = "ONNX" if fmt == "onnx" else "torch.export"
    fixed_hint = ("export at a fixed length instead (omit --dynamic_length, choose --length_seconds) and pad or "
                  "cut each input to that length" if dynamic else
                  "use the PyTorch model (nass-separate / nass.inference.Separator)")
    if dynamic:
        fixed_hint += (". The example length shapes what the exporter assumes: a longer --length_seconds "
                       "(e.g. the default 4 s) may succeed")
    if dynamic and fmt == "torch_export":
        fixed_hint += "; or try --onnx --dynamic_length (ONNX exports a dynamic length of more models)"
    with tempfile.TemporaryDirectory(prefix="nass-export-") as tmp:
        path = os.path.join(tmp, FORMATS[fmt])
        try:
            if fmt == "onnx":
                _export_onnx(wrapper, inputs[1], dynamic, onnx_exporter, path)
            else:
                _export_torch(wrapper, inputs[1], dynamic, path)
        except ExportError:
            raise
        except Exception as exc:
            length_kind = "a dynamic" if dynamic else "a fixed"
            raise ExportError(
                f"{what} export of {type(model).__name__} at {length_kind} length failed ({_first_line(exc)}); "
                f"{fixed_hint}."
            ) from exc
        with open(path, "rb") as f:
            data = f.read()
    run = _run_onnx(data) if fmt == "onnx" else _run_torch_export(data)
    checked, bad = [], []
    for x, want in zip(inputs, wants):
        try:
            diff = _max_diff(run(x), want)
        except Exception as exc:  # ONNX Runtime / the program refusing a shape
            diff, note = None, _first_line(exc)
        else:
            note = None
        checked.append({"shape": list(x.shape), "max_abs_diff": diff})
        if diff is None or diff > tolerance:
            bad.append((tuple(x.shape), diff, note))
    multiple_of = 1
    if bad and dynamic:
        odd = [b for b in bad if b[0][1] % stride]
        if len(odd) == len(bad):  # only lengths that are not whole encoder frames fail
            multiple_of = stride
            checked = [c for c in checked if c["shape"][1] % stride == 0]
            bad = []
    if bad:
        shape, diff, note = bad[0]
        got = note if note else f"max abs diff {diff:.3g} > tolerance {tolerance:g}"
        raise ExportError(
            f"{what} program of {type(model).__name__} does not match PyTorch on input {list(shape)} ({got}); "
            f"{fixed_hint}."
        )
    time_axis = "time" if dynamic else length
    info = {
        "file": FORMATS[fmt],
        "format": fmt,
        "inputs": [{"name": INPUT_NAME, "shape": ["batch", time_axis], "dtype": "float32"}],
        "outputs": [{"name": "est_sources", "shape": ["batch", time_axis, num_spks], "dtype": "float32"}]
        + ([{"name": "est_noise", "shape": ["batch", time_axis], "dtype": "float32"}] if wrapper.noise_output else []),
        "sample_rate": int(sample_rate),
        "fixed_length": not dynamic,
    }
    if dynamic:
        info["min_length_samples"] = min(c["shape"][1] for c in checked)
        info["length_multiple_of"] = multiple_of
    else:
        info["length_samples"] = length
    info.update(
        checked=checked,
        max_abs_diff=max(c["max_abs_diff"] for c in checked),
        tolerance=tolerance,
        torch_version=torch.__version__,
    )
    if fmt == "onnx":
        import onnx

        info["onnx_exporter"] = onnx_exporter
        info["opset"] = max((o.version for o in onnx.load_from_string(data).opset_import if o.domain in ("", "ai.onnx")),
                            default=None)
    return data, info

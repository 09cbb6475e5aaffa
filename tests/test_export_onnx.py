"""Issue 20, export: ``nass-export --onnx / --torch_export`` of a model folder, checked against PyTorch.

The model is the untrained Custom tiny Conv-TasNet with noise output (exports in seconds);
the folder is written the way training writes ``<output_folder>/model``.
"""

import json
import os

import numpy as np
import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from nass import export, graph_export
from nass.cli import export_main
from nass.inference import Separator, load_separator
from nass.separation import SeparationOutput

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "recipes", "Custom", "separation", "hparams", "tiny")
SR = 8000


def model_folder(folder, recipe_yaml="convtasnet-tiny-noise.yaml", seed=0):
    """A model folder (hyperparams.yaml, separator.ckpt, model_card.json) of an untrained tiny model."""
    os.makedirs(folder, exist_ok=True)
    run_yaml = os.path.join(folder, "run.yaml")
    with open(os.path.join(TINY, recipe_yaml), encoding="utf-8") as f:
        text = f.read().replace("!PLACEHOLDER", "/nonexistent/corpus")
    with open(run_yaml, "w", encoding="utf-8") as f:
        f.write(text)
    yaml_text = export.model_yaml(run_yaml)
    torch.manual_seed(seed)
    model = load_hyperpyyaml(yaml_text)["separator"]
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    out = os.path.join(folder, "model")
    card = {"format": export.FORMAT, "sample_rate": SR, "num_spks": 2, "noise_target": "extra_output",
            "noise_output": True, "training": {}, "test_metrics": None}
    return export.write_model_folder(out, yaml_text, buf.getvalue(), card)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return model_folder(str(tmp_path_factory.mktemp("tiny")))


def _reference(model_dir, mix):
    model, _ = load_separator(model_dir)
    with torch.no_grad():
        out = model(mix)
    return out.est_sources.numpy(), out.est_noise.numpy()


def test_onnx_and_torch_export_at_a_fixed_length_match_pytorch(tiny_model, tmp_path, capsys):
    import onnxruntime

    out = str(tmp_path / "exported")
    assert export_main([tiny_model, out, "--onnx", "--torch_export", "--length_seconds", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "separator.onnx: input mix ['batch', 4000] at 8000 Hz, fixed length" in printed
    assert sorted(os.listdir(out)) == ["hyperparams.yaml", "model_card.json", "separator.ckpt", "separator.onnx",
                                       "separator.pt2"]
    card = json.load(open(os.path.join(out, "model_card.json")))
    onnx_info = card["exports"]["onnx"]
    assert onnx_info["inputs"] == [{"name": "mix", "shape": ["batch", 4000], "dtype": "float32"}]
    assert [o["name"] for o in onnx_info["outputs"]] == ["est_sources", "est_noise"]
    assert onnx_info["outputs"][0]["shape"] == ["batch", 4000, 2]
    assert onnx_info["fixed_length"] is True and onnx_info["length_samples"] == 4000
    assert onnx_info["sample_rate"] == SR and onnx_info["max_abs_diff"] <= onnx_info["tolerance"]
    assert [c["shape"] for c in onnx_info["checked"]] == [[1, 4000], [2, 4000]]
    assert card["exports"]["torch_export"]["file"] == "separator.pt2"
    for name in ("separator.onnx", "separator.pt2"):  # listed with their SHA-256 like the weights
        data = open(os.path.join(out, name), "rb").read()
        assert card["files"][name] == {"bytes": len(data), "sha256": export.sha256_bytes(data)}
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no staging folder left

    # the files themselves, run here independently of the export's own check
    mix = (0.1 * torch.randn(3, 4000, generator=torch.Generator().manual_seed(7))).float()
    want_s, want_n = _reference(out, mix)
    session = onnxruntime.InferenceSession(os.path.join(out, "separator.onnx"), providers=["CPUExecutionProvider"])
    got_s, got_n = session.run(["est_sources", "est_noise"], {"mix": mix.numpy()})
    assert got_s.shape == (3, 4000, 2) and np.abs(got_s - want_s).max() < 1e-3 and np.abs(got_n - want_n).max() < 1e-3
    program = torch.export.load(os.path.join(out, "separator.pt2")).module()
    got_s, got_n = program(mix)
    assert np.abs(got_s.detach().numpy() - want_s).max() < 1e-3
    with pytest.raises(Exception):  # fixed length: another length is refused
        session.run(None, {"mix": np.zeros((1, 4001), np.float32)})
    # and the folder is still a model folder (its SHA-256 checks pass)
    sep = Separator.from_hparams(out)
    assert sep.card["exports"]["onnx"]["file"] == "separator.onnx"


def test_dynamic_length_onnx_runs_any_length(tiny_model, tmp_path):
    import onnxruntime

    out = str(tmp_path / "dyn")
    assert export_main([tiny_model, out, "--onnx", "--dynamic_length", "--length_seconds", "0.5"]) == 0
    info = json.load(open(os.path.join(out, "model_card.json")))["exports"]["onnx"]
    assert info["fixed_length"] is False and info["inputs"][0]["shape"] == ["batch", "time"]
    assert info["length_multiple_of"] == 1  # a length that is not whole encoder frames matched too
    assert any(c["shape"][1] % 8 for c in info["checked"])
    session = onnxruntime.InferenceSession(os.path.join(out, "separator.onnx"), providers=["CPUExecutionProvider"])
    for length in (2400, 5003):  # lengths the export did not check
        mix = 0.1 * torch.randn(2, length, generator=torch.Generator().manual_seed(length))
        want_s, want_n = _reference(out, mix)
        got_s, got_n = session.run(None, {"mix": mix.numpy()})
        assert got_s.shape == (2, length, 2) and np.abs(got_s - want_s).max() < 1e-3


class _DataDependent(torch.nn.Module):
    """A separator whose forward branches on the data, which torch.export cannot trace."""

    num_spks, noise_target = 2, "none"

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Conv1d(1, 4, 16, stride=8)

    def forward(self, mix):
        est = torch.stack([mix, -mix], -1) if mix.sum() > 0 else torch.stack([-mix, mix], -1)
        return SeparationOutput(est, None, mix, None, est)


def test_a_model_that_cannot_be_exported_fails_with_the_reason_and_what_works():
    with pytest.raises(graph_export.ExportError) as err:
        graph_export.export_program(_DataDependent(), SR, "torch_export", 800, dynamic=True)
    message = str(err.value)
    assert "torch.export export of _DataDependent at a dynamic length failed" in message
    assert "fixed length instead" in message and "pad or cut" in message


def test_a_program_that_differs_from_pytorch_is_refused_and_nothing_is_written(tiny_model, tmp_path, monkeypatch,
                                                                               capsys):
    real = graph_export._run_torch_export

    def off_by_a_bit(data):
        run = real(data)
        return lambda mix: tuple(o + 0.01 for o in run(mix))

    monkeypatch.setattr(graph_export, "_run_torch_export", off_by_a_bit)
    out = tmp_path / "refused"
    assert export_main([tiny_model, str(out), "--torch_export", "--length_seconds", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "does not match PyTorch on input [1, 4000] (max abs diff 0.01 > tolerance 0.001)" in err
    assert not out.exists() and not os.listdir(tmp_path)


def test_missing_onnx_packages_name_the_extra(tiny_model, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    assert export_main([tiny_model, str(tmp_path / "x"), "--onnx"]) == 2
    assert "pip install 'nass[export]'" in capsys.readouterr().err


def test_bad_options_are_refused_before_any_work(tiny_model, tmp_path, capsys):
    assert export_main([tiny_model, str(tmp_path / "a"), "--dynamic_length"]) == 2
    assert "--dynamic_length needs --onnx or --torch_export" in capsys.readouterr().err
    assert export_main([tiny_model, str(tmp_path / "b"), "--onnx", "--length_seconds", "0"]) == 2
    assert "--length_seconds 0.0: must be a positive number" in capsys.readouterr().err
    existing = tmp_path / "c"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    assert export_main([tiny_model, str(existing), "--onnx"]) == 2
    assert "already exists. Pass --overwrite" in capsys.readouterr().err
    assert os.listdir(existing) == ["keep.txt"]


def test_a_dynamic_axis_for_whole_encoder_frames_only_is_recorded(tiny_model):
    """The torchscript ONNX exporter bakes the frame arithmetic in: lengths that are not a multiple
    of the encoder stride come out wrong, so the card says which lengths the file takes."""
    import onnxruntime

    model, hparams = load_separator(tiny_model)
    data, info = graph_export.export_program(model, SR, "onnx", 4000, dynamic=True, onnx_exporter="torchscript")
    assert info["fixed_length"] is False and info["length_multiple_of"] == 8 == graph_export.encoder_stride(model)
    assert all(c["shape"][1] % 8 == 0 for c in info["checked"]) and info["onnx_exporter"] == "torchscript"
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    mix = 0.1 * torch.randn(1, 4800, generator=torch.Generator().manual_seed(3))
    want_s, _ = _reference(tiny_model, mix)
    assert np.abs(session.run(None, {"mix": mix.numpy()})[0] - want_s).max() < 1e-3


def test_export_from_a_training_folder(tmp_path):
    """RUN_DIR may be a training output folder (its best checkpoint), as for a plain nass-export."""
    from test_inference import write_model_folder as training_folder

    run = str(tmp_path / "run")
    best = training_folder(run, noise=False, scores=(1.0, 3.0))
    out = str(tmp_path / "exported")
    assert export_main([run, out, "--torch_export", "--length_seconds", "0.5"]) == 0
    card = json.load(open(os.path.join(out, "model_card.json")))
    assert card["training"]["checkpoint"] == "CKPT+2024-01-02+00-00-00+00"  # the best one
    info = card["exports"]["torch_export"]
    assert [o["name"] for o in info["outputs"]] == ["est_sources"] and info["outputs"][0]["shape"] == ["batch", 4000, 2]
    program = torch.export.load(os.path.join(out, "separator.pt2")).module()
    model, _ = load_separator(out)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best.items())
    mix = 0.1 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (program(mix)[0] - model(mix).est_sources).abs().max() < 1e-3

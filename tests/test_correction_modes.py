"""The corrector contract and the one registry of correction modes (nass.correction.modes)."""

import ast
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from nass.correction import BBEDSDE, GeCoModel, ScoreModel, SpecTransform
from nass.correction.model import OBJECTIVES
from nass.correction.modes import (
    CORRECTION_MODES,
    DEFAULT_MODE,
    MODES,
    CorrectionMode,
    Corrector,
    UnknownCorrectionMode,
    get_mode,
)
from nass.inference import Separator

#: String constants equal to a mode name that may stay outside the registry, with the reason.
ALLOWED_LITERALS = {
    ("nass/correction/modes.py", "geco"): "the registry itself",
    ("nass/correction/modes.py", "fast-geco"): "the registry itself",
    ("nass/correction/model.py", "fast-geco"): "the name of a training objective of GeCoModel.forward (OBJECTIVES)",
    ("nass/reproduce.py", "geco"): "the key of the paper in PAPERS and its rows, not a mode",
    ("tools/make_recipe_hparams.py", "geco"): "recipe file and block names (geco.yaml, methods/geco.yaml) "
    "and the GeCo paper's training split; its rows are checked against the registry",
    ("tools/make_recipe_hparams.py", "fast-geco"): "recipe file and block names, one row per mode",
}


def _mode_literals(folders):
    """``[(file, line, value)]`` of string constants equal to a mode name (docstrings left out)."""
    found = []
    for folder in folders:
        for dirpath, _, files in os.walk(os.path.join(REPO, folder)):
            for f in sorted(files):
                if not f.endswith(".py"):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, REPO)
                with open(path, encoding="utf-8") as fh:
                    tree = ast.parse(fh.read(), filename=path)
                docstrings = {
                    id(node.body[0].value) for node in ast.walk(tree)
                    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                    and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
                }
                for node in ast.walk(tree):
                    if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODES
                            and id(node) not in docstrings and (rel, node.value) not in ALLOWED_LITERALS):
                        found.append((rel, node.lineno, node.value))
    return found


def test_no_mode_name_is_compared_outside_the_registry():
    found = _mode_literals(["nass", "tools", "recipes"])
    assert not found, f"look the mode up with nass.correction.modes.get_mode instead of a literal: {found}"


def test_the_literal_check_can_fail(tmp_path, monkeypatch):
    (tmp_path / "nass").mkdir()
    (tmp_path / "nass" / "x.py").write_text('"""geco in a docstring is fine."""\nif mode == "geco":\n    pass\n')
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    assert _mode_literals(["nass"]) == [(os.path.join("nass", "x.py"), 2, "geco")]


def test_every_mode_is_described_once_and_consistently():
    assert MODES == tuple(CORRECTION_MODES) == ("fast-geco", "geco")
    assert DEFAULT_MODE in CORRECTION_MODES and not get_mode(DEFAULT_MODE).takes_num_steps
    for name, mode in CORRECTION_MODES.items():
        assert isinstance(mode, CorrectionMode) and mode.name == name
        assert mode.objective in OBJECTIVES, f"{name}: GeCoModel.forward does not know objective {mode.objective!r}"
        assert callable(mode.sampler) and mode.source
    assert get_mode("geco").objective == "dsm" and get_mode("geco").takes_num_steps
    assert get_mode("fast-geco").loss_is_corrected_si_snr and not get_mode("geco").loss_is_corrected_si_snr
    assert get_mode(get_mode("geco")) is get_mode("geco")


def test_an_unknown_mode_fails_listing_the_known_ones():
    for bad in ("fast", "GeCo", None, 3):
        with pytest.raises(UnknownCorrectionMode, match="known modes: fast-geco, geco") as err:
            get_mode(bad, "correction_mode")
        assert isinstance(err.value, ValueError) and str(err.value).startswith("correction_mode: unknown mode")


def _model():
    torch.manual_seed(0)
    return GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform()).eval()


def test_gecomodel_is_a_corrector_and_refuses_unknown_modes():
    model = _model()
    assert isinstance(model, Corrector)
    y, m = torch.randn(1, 1000), torch.randn(1, 1000)
    with pytest.raises(UnknownCorrectionMode, match="GeCoModel.correct: unknown mode 'sgmse'"):
        model.correct(y, m, mode="sgmse")
    with pytest.raises(UnknownCorrectionMode, match="fast-geco, geco"):
        Separator(torch.nn.Identity(), 8000, corrector=model, correction_mode="fast")
    Separator(torch.nn.Identity(), 8000, correction_mode="unused without a corrector")


def test_a_new_mode_is_one_registry_entry(monkeypatch):
    """A mode added to the registry is sampled by GeCoModel.correct, with no other edit."""
    calls = []

    def keep(model, y, m, num_steps, snr, corrector_steps, generator):
        calls.append(num_steps)
        return y  # the estimate's spectrogram, unchanged

    monkeypatch.setitem(CORRECTION_MODES, "keep", CorrectionMode(
        name="keep", title="Keep", objective="dsm", takes_num_steps=True, loss_is_corrected_si_snr=False,
        sampler=keep, source="a test"))
    model = _model()
    y, m = torch.randn(2, 1500), torch.randn(2, 1500)
    out = model.correct(y, m, mode="keep", num_steps=7)
    assert calls == [7]
    # the estimate comes back (normalisation, STFT and their inverses; round-off only)
    assert torch.allclose(out, y, atol=1e-4)
    assert get_mode("keep").label(7) == "after keep correction (N=7)"


def test_the_modes_sample_as_before():
    """Each registry sampler is the sampler the mode had: Fast-GeCo one step from reverse_start, GeCo PC."""
    from nass.correction.samplers import fast_geco_sample, pc_sample

    model = _model()
    y, m = torch.randn(1, 1200), torch.randn(1, 1200)
    Y, M, _, norm = model.waves_to_specs(y, m)
    for mode, expected in (
        ("fast-geco", lambda g: fast_geco_sample(model.sde, model.score_model, Y, M, t_start=model.reverse_start,
                                                 num_steps=model.fast_steps, generator=g)),
        ("geco", lambda g: pc_sample(model.sde, model.score_model, Y, M, num_steps=3, generator=g)[0]),
    ):
        with torch.no_grad():
            want = model.spec_to_wave(expected(torch.Generator().manual_seed(1)), 1200) * norm
            got = model.correct(y, m, mode=mode, num_steps=3, generator=torch.Generator().manual_seed(1))
        assert torch.equal(got, want), mode


def test_the_command_line_lists_the_registry_without_loading_torch():
    code = ("import sys, nass.cli; assert 'torch' not in sys.modules, 'torch imported'; "
            "from nass.correction.modes import MODES; print(','.join(MODES))")
    env = {**os.environ, "PYTHONPATH": REPO}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ",".join(MODES)
    from nass.cli import evaluate_main

    with pytest.raises(SystemExit) as err:
        evaluate_main(["--model", "m", "--manifest", "x.csv", "--out", "o", "--correction", "fast"])
    assert err.value.code == 2

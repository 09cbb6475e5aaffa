"""Inference: model folders, file separation, chunking, errors (nass.inference)."""

import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from nass.dataio.audio import AudioError, write_audio
from nass.inference import ModelLoadError, Separator, load_separator, separate_to_folder
from nass.losses.si_snr import si_snr
from nass.separation import SeparationOutput

SR = 8000

TINY_YAML = """\
sample_rate: 8000
num_spks: 2
noise_target: {noise_target}
N: 16
encoder: !new:speechbrain.lobes.models.dual_path.Encoder
    kernel_size: 16
    out_channels: !ref <N>
intra: !new:speechbrain.lobes.models.dual_path.SBRNNBlock
    input_size: !ref <N>
    hidden_channels: 8
    num_layers: 1
    bidirectional: True
inter: !new:speechbrain.lobes.models.dual_path.SBRNNBlock
    input_size: !ref <N>
    hidden_channels: 8
    num_layers: 1
    bidirectional: True
masknet: !new:speechbrain.lobes.models.dual_path.Dual_Path_Model
    in_channels: !ref <N>
    out_channels: !ref <N>
    intra_model: !ref <intra>
    inter_model: !ref <inter>
    num_layers: 1
    K: 20
    num_spks: {num_masks}
decoder: !new:speechbrain.lobes.models.dual_path.Decoder
    in_channels: !ref <N>
    out_channels: 1
    kernel_size: 16
    stride: 8
    bias: False
separator: !new:nass.separation.MaskingSeparator
    encoder: !ref <encoder>
    masknet: !ref <masknet>
    decoder: !ref <decoder>
    num_spks: !ref <num_spks>
    noise_target: !ref <noise_target>
"""


def write_model_folder(folder, noise=False, scores=(2.0, 5.0, None)):
    """A training-output folder: hyperparams.yaml + save/CKPT+<k>/ with different weights.

    Returns the state dict of the checkpoint that should be chosen (best si-snr).
    """
    from hyperpyyaml import load_hyperpyyaml

    os.makedirs(folder, exist_ok=True)
    text = TINY_YAML.format(noise_target="extra_output" if noise else "none", num_masks=3 if noise else 2)
    with open(os.path.join(folder, "hyperparams.yaml"), "w") as f:
        f.write(text)
    best, best_score = None, -math.inf
    for k, score in enumerate(scores):
        torch.manual_seed(k)
        state = load_hyperpyyaml(text)["separator"].state_dict()
        d = os.path.join(folder, "save", f"CKPT+2024-01-0{k + 1}+00-00-00+00")
        os.makedirs(d)
        torch.save(state, os.path.join(d, "separator.ckpt"))
        meta = f"end-of-epoch: true\nunixtime: {1700000000 + k}\n"
        if score is not None:
            meta += f"si-snr: {score}\n"
        with open(os.path.join(d, "CHECKPOINT.yaml"), "w") as f:
            f.write(meta)
        if score is not None and score > best_score:
            best, best_score = state, score
    return best


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("model"))
    best = write_model_folder(folder, noise=True)
    return folder, best


# ------------------------------------------------------------------ loading
def test_load_separator_picks_best_checkpoint(model_folder):
    folder, best = model_folder
    model, hparams = load_separator(folder)
    assert hparams["sample_rate"] == 8000 and hparams["num_spks"] == 2
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best[name]), name
    assert not model.training
    out = model(torch.randn(1, 800))
    assert out.est_sources.shape == (1, 800, 2) and out.est_noise.shape == (1, 800)


def test_load_separator_most_recent_without_scores(tmp_path):
    write_model_folder(str(tmp_path), scores=(None, None))
    newest = torch.load(str(tmp_path / "save" / "CKPT+2024-01-02+00-00-00+00" / "separator.ckpt"), weights_only=True)
    model, _ = load_separator(str(tmp_path))
    assert all(torch.equal(v, newest[k]) for k, v in model.state_dict().items())


def test_exported_folder_and_errors(tmp_path, model_folder):
    folder, best = model_folder
    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / "hyperparams.yaml").write_text(open(os.path.join(folder, "hyperparams.yaml")).read())
    with pytest.raises(ModelLoadError, match="(?i)train first or point --model at the training output folder"):
        load_separator(str(exported))
    torch.save(best, str(exported / "separator.ckpt"))
    model, _ = load_separator(str(exported))
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())

    with pytest.raises(ModelLoadError, match="model folder not found"):
        load_separator(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no hyperparams.yaml"):
        load_separator(str(tmp_path / "empty"))
    # a checkpoint of another architecture
    torch.save({"weight": torch.zeros(1)}, str(exported / "separator.ckpt"))
    with pytest.raises(ModelLoadError, match="does not match"):
        load_separator(str(exported))


class _Evil:
    """Unpickling this would create a file (the stand-in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_checkpoint_is_refused_unexecuted(tmp_path, model_folder):
    folder, _ = model_folder
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "hyperparams.yaml").write_text(open(os.path.join(folder, "hyperparams.yaml")).read())
    marker = tmp_path / "pwned.txt"
    torch.save({"weight": _Evil(str(marker))}, str(bad / "separator.ckpt"))
    with pytest.raises(ModelLoadError, match="refused to load.*not executed"):
        load_separator(str(bad))
    assert not marker.exists()


# ------------------------------------------------------------------ separation
class BandSplit(torch.nn.Module):
    """Deterministic, local stand-in separator: [high band, low band] of the mix (1 kHz
    split, 101-tap FIR). With ``swap_every_call`` the output order flips on every call,
    like a real separator whose order is arbitrary per pass."""

    def __init__(self, swap_every_call=False, noise=False):
        super().__init__()
        from scipy.signal import firwin

        self.register_buffer("h", torch.tensor(firwin(101, 1000, fs=SR), dtype=torch.float32).view(1, 1, -1))
        self.swap_every_call = swap_every_call
        self.noise = noise
        self.calls = 0

    def forward(self, mix):
        low = torch.nn.functional.conv1d(mix.unsqueeze(1), self.h, padding=50)[:, 0]
        est = torch.stack([mix - low, low], -1)
        if self.swap_every_call and self.calls % 2:
            est = est.flip(-1)
        self.calls += 1
        noise = 0.01 * mix if self.noise else None
        return SeparationOutput(est, noise, mix, None, est)


def _tones(n, rate):
    t = np.arange(n) / rate
    low = 0.4 * np.sin(2 * np.pi * 300 * t) * (1 + 0.3 * np.sin(2 * np.pi * 1.3 * t))
    high = 0.3 * np.sin(2 * np.pi * 2500 * t + 0.5) * (1 + 0.3 * np.cos(2 * np.pi * 0.7 * t))
    return np.stack([high, low], 1).astype("float32")  # model order: high first


def _db(est, ref):
    return float(si_snr(torch.as_tensor(est).float(), torch.as_tensor(ref).float()))


def test_file_round_trip_with_resampling_16k(tmp_path):
    src = _tones(16000, 16000)  # 1 s at 16 kHz, model at 8 kHz
    path = str(tmp_path / "mix16k.wav")
    write_audio(path, src.sum(1), 16000, subtype="FLOAT")
    sep = Separator(BandSplit(), sample_rate=SR, chunk_seconds=None)
    est, noise = sep.separate_file(path)
    assert est.shape == (16000, 2) and noise is None
    inner = slice(400, -400)  # resampling / FIR edge effects
    for j in range(2):
        assert _db(est[inner, j], src[inner, j]) > 25


def test_chunked_equals_one_shot_and_order_is_kept(tmp_path):
    mix = torch.from_numpy(_tones(int(2.3 * SR), SR).sum(1)).unsqueeze(0)
    one_shot, _ = Separator(BandSplit(), SR, chunk_seconds=None).separate_batch(mix)
    swapping = BandSplit(swap_every_call=True)
    chunked, _ = Separator(swapping, SR, chunk_seconds=0.5, overlap_seconds=0.125).separate_batch(mix)
    assert swapping.calls >= 5  # several chunks really ran, with flipped orders
    assert chunked.shape == one_shot.shape
    err = (chunked - one_shot).abs().max() / one_shot.abs().max()
    assert err < 2e-2, float(err)
    for j in range(2):
        assert _db(chunked[0, :, j], one_shot[0, :, j]) > 35


def test_stereo_and_any_rate_and_tiny_inputs(tmp_path, model_folder):
    folder, _ = model_folder
    sep = Separator.from_hparams(folder, chunk_seconds=1.0, overlap_seconds=0.25)
    stereo = str(tmp_path / "stereo.wav")
    sf.write(stereo, np.random.default_rng(0).uniform(-0.3, 0.3, (2205, 2)).astype("float32"), 22050)
    with pytest.warns(UserWarning, match="stereo.wav: 2 channels mixed down"):
        est, noise = sep.separate_file(stereo)
    assert est.shape == (2205, 2) and noise.shape == (2205,)
    assert torch.isfinite(est).all()
    for n in (800, 5):  # 0.1 s, and shorter than one encoder frame (16 samples)
        est, noise = sep.separate_batch(torch.randn(2, n) * 0.1)
        assert est.shape == (2, n, 2) and noise.shape == (2, n)


def test_bad_inputs_raise_clear_errors(tmp_path, model_folder):
    sep = Separator(BandSplit(), SR)
    empty = str(tmp_path / "empty.wav")
    sf.write(empty, np.zeros(0, dtype="float32"), SR)
    nan = str(tmp_path / "nan.wav")
    sf.write(nan, np.array([0.1, np.nan, 0.2] * 100, dtype="float32"), SR, subtype="FLOAT")
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    cases = [
        (empty, "no samples"),
        (nan, "NaN"),
        (str(tmp_path), "is a folder"),
        (str(tmp_path / "missing.wav"), "not found"),
        (str(text), "cannot be read as audio"),
    ]
    for path, message in cases:
        with pytest.raises(AudioError, match=message) as info:
            sep.separate_file(path)
        assert path in str(info.value)
    with pytest.raises(ValueError, match="overlap_seconds"):
        Separator(BandSplit(), SR, chunk_seconds=1.0, overlap_seconds=1.0)


class _HalfCorrector:
    def __init__(self):
        self.calls = []

    def correct(self, y_wave, m_wave, mode, num_steps):
        assert y_wave.shape == m_wave.shape and y_wave.dim() == 2
        self.calls.append((mode, num_steps))
        return 0.5 * y_wave


def test_corrector_applied_to_every_speaker_and_folder_output(tmp_path):
    corrector = _HalfCorrector()
    sep = Separator(BandSplit(noise=True), SR, corrector=corrector, correction_mode="geco", correction_steps=7)
    src = _tones(4000, 16000)
    path = str(tmp_path / "in.wav")
    write_audio(path, src.sum(1), 16000)
    written = separate_to_folder(sep, path, str(tmp_path / "out"))
    assert [os.path.basename(p) for p in written] == ["s1.wav", "s2.wav", "noise.wav"]
    assert corrector.calls == [("geco", 7), ("geco", 7)]
    info = sf.info(written[0])
    assert info.samplerate == 16000 and info.frames == 4000
    plain, _ = Separator(BandSplit(), SR).separate_file(path)
    s1, _ = sf.read(written[0], dtype="float32")
    assert np.allclose(s1, 0.5 * plain[:, 0].numpy(), atol=2e-4)
    assert sorted(os.listdir(tmp_path / "out")) == ["noise.wav", "s1.wav", "s2.wav"]  # no temporaries

"""The separator forward, PIT, the SeparationBrain training step, recipes and resume."""

import glob
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.batch import PaddedBatch

from conftest import REPO, dominant_hz, synthetic_voice
from nass.brains.separation import SeparationBrain
from nass.losses.pit import apply_perm, pit_si_snr
from nass.separation import MaskingSeparator, STFTMaskingSeparator, fit_length, make_item

DEMO = os.path.join(REPO, "recipes", "LibriMix", "separation", "hparams", "demo")


def load_demo(name, tmp_path, **overrides):
    overrides = {"output_folder": str(tmp_path / "out"), **overrides}
    with open(os.path.join(DEMO, name + ".yaml"), encoding="utf-8") as f:
        return load_hyperpyyaml(f, overrides)


def make_batch(num_utts=2, seconds=0.5, seed=0, num_spks=2, noise_level=0.05):
    rng = np.random.default_rng(seed)
    n = int(seconds * 8000)
    f0s = [(100, 140), (220, 300), (400, 480)]
    items = []
    for u in range(num_utts):
        srcs = [torch.from_numpy(0.3 * synthetic_voice(rng, n, 8000, rng.uniform(*f0s[s]))) for s in range(num_spks)]
        noise = torch.from_numpy((noise_level * rng.standard_normal(n)).astype("float32"))
        clean = torch.stack(srcs).sum(0)
        items.append(make_item(f"u{u}", clean + noise, srcs, noise, clean))
    return PaddedBatch(items)


def make_brain(hp, precision="fp32", start=True):
    brain = SeparationBrain(
        modules=hp["modules"],
        opt_class=hp["optimizer"],
        hparams=hp,
        run_opts={"device": "cpu", "precision": precision, "noprogressbar": True},
        checkpointer=None,
    )
    if start:
        brain.on_fit_start()  # checks the method options, creates the optimiser
    return brain


# ----------------------------------------------------------------------------- PIT
def test_pit_loss_invariant_to_estimate_permutation():
    torch.manual_seed(0)
    refs = torch.randn(3, 800, 3)
    est = refs + 0.5 * torch.randn_like(refs)
    base, _ = pit_si_snr(est, refs)
    for p in itertools.permutations(range(3)):
        loss, perm = pit_si_snr(est[..., list(p)], refs)
        assert torch.allclose(loss, base, atol=1e-5)
        # the returned permutation undoes the shuffle for every utterance
        assert torch.allclose(apply_perm(est[..., list(p)], perm), est)


def test_pit_chooses_permutation_per_utterance():
    torch.manual_seed(1)
    refs = torch.randn(2, 1600, 2)
    est = refs.clone()
    est[1] = refs[1][:, [1, 0]]  # only the second utterance is swapped
    loss, perm = pit_si_snr(est, refs)
    assert perm.tolist() == [[0, 1], [1, 0]]
    # the first utterance's permutation applied to the batch (the NASS reference's perms[0]) is wrong
    wrong = apply_perm(est, perm[:1].expand(2, 2))
    assert not torch.allclose(wrong[1], refs[1])
    assert torch.allclose(apply_perm(est, perm), refs)
    assert (loss < -60).all()


def test_pit_shape_errors():
    with pytest.raises(ValueError, match=r"\[batch, time, num_spks\]"):
        pit_si_snr(torch.zeros(2, 100, 2), torch.zeros(2, 100, 3))


# ----------------------------------------------------------------------------- forward
def test_noise_output_slot_is_last_mask(tmp_path):
    hp = load_demo("sepformer-tiny-noise", tmp_path)
    sep = hp["separator"]
    mix = torch.randn(2, 1234)
    out = sep(mix)
    assert out.est_sources.shape == (2, 1234, 2) and out.est_noise.shape == (2, 1234)
    assert out.masked_reps.shape[0] == 3
    decoded = fit_length(sep.decoder(out.masked_reps[2]), 1234)
    assert torch.allclose(decoded, out.est_noise, atol=1e-5)
    base = load_demo("sepformer-tiny", tmp_path)["separator"](mix)
    assert base.est_noise is None and base.masked_reps.shape[0] == 2


def test_mask_count_mismatch_is_reported(tmp_path):
    hp = load_demo("sepformer-tiny", tmp_path)  # mask network built for 2 outputs
    enc, masknet, dec = hp["model"]["encoder"], hp["model"]["masknet"], hp["model"]["decoder"]
    with pytest.raises(ValueError, match="gives 2 masks .* needs 3"):  # at construction (YAML load)
        MaskingSeparator(enc, masknet, dec, num_spks=2, noise_target="extra_output")

    class Opaque(torch.nn.Module):  # a mask network that declares nothing: checked at the first forward
        def __init__(self):
            super().__init__()
            self.inner = masknet

        def forward(self, x):
            return self.inner(x)

    sep = MaskingSeparator(enc, Opaque(), dec, num_spks=2, noise_target="extra_output")
    with pytest.raises(ValueError, match="gives 2 masks .* needs 3"):
        sep(torch.randn(1, 800))
    with pytest.raises(ValueError, match="one-output"):
        MaskingSeparator(enc, masknet, dec, num_spks=2, enhancer=masknet)
    with pytest.raises(ValueError, match="noise_target"):
        MaskingSeparator(None, None, None, num_spks=2, noise_target="both")


# ----------------------------------------------------------------------------- overfit
@pytest.mark.parametrize("model", ["sepformer", "dprnn", "convtasnet"])
def test_tiny_model_overfits(model, tmp_path):
    """Training loss falls and SI-SNRi on the training mixtures exceeds 10 dB."""
    torch.manual_seed(0)
    hp = load_demo(f"{model}-tiny-noise", tmp_path, lr=0.003, speed_perturb=None)
    brain = make_brain(hp)
    batch = make_batch(num_utts=2, seconds=0.25)
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    losses = [float(brain.fit_batch(batch)) for _ in range(100)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 10
    brain.modules.eval()
    with torch.no_grad():
        out = brain.modules.separator(batch.mix_sig.data)
    refs = torch.stack([batch.s1_sig.data, batch.s2_sig.data], -1)
    loss, _ = pit_si_snr(out.est_sources, refs)
    mix_loss, _ = pit_si_snr(torch.stack([batch.mix_sig.data] * 2, -1), refs)
    si_snr_i = float((mix_loss - loss).mean())
    assert si_snr_i > 10, f"{model}: SI-SNRi {si_snr_i:.1f} dB after 100 steps"


# ----------------------------------------------------------------------------- methods in the Brain
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_nass_unified_gm_step_runs_and_updates_everything(tmp_path, precision):
    torch.manual_seed(0)
    hp = load_demo("sepformer-tiny-nass-unified-gm", tmp_path, speed_perturb=None)
    brain = make_brain(hp, precision=precision)
    before = {k: v.detach().clone() for k, v in brain.modules.named_parameters()}
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    loss = brain.fit_batch(make_batch())
    assert torch.isfinite(loss)
    changed = {k for k, v in brain.modules.named_parameters() if not torch.equal(before[k], v)}
    for part in ("separator.encoder", "separator.enhancer", "separator.masknet", "separator.decoder", "patch_sampler"):
        assert any(k.startswith(part) for k in changed), f"{part} was not updated"
    stats = brain._stage_stats(loss)
    assert 0.0 <= stats["gm_conflict_fraction"] <= 1.0
    assert stats["nce_loss"] > 0 and "se_loss" in stats


def test_patch_nce_requires_noise_output(tmp_path):
    hp = load_demo("sepformer-tiny-nass", tmp_path, noise_target="none", num_masks=2)
    with pytest.raises(ValueError, match=r"loss_terms\[1\] \(noise_si_snr\).*noise_target: extra_output"):
        make_brain(hp, start=False)


def test_nonfinite_batch_is_skipped_then_stops(tmp_path, caplog):
    hp = load_demo("convtasnet-tiny", tmp_path, nonfinite_patience=1, speed_perturb=None)
    brain = make_brain(hp)
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.nonfinite_count = 0
    batch = make_batch()
    batch.mix_sig.data[0, 10] = float("nan")
    before = [p.detach().clone() for p in brain.modules.parameters()]
    brain.fit_batch(batch)
    assert brain.nonfinite_count == 1
    assert all(torch.equal(a, b) for a, b in zip(before, brain.modules.parameters()))
    assert "u0" in caplog.text
    with pytest.raises(ValueError, match="non-finite"):
        brain.fit_batch(batch)


@pytest.mark.parametrize("speed", [80, 120])
def test_speed_perturb_speeds_make_pseudo_speakers_on_the_fly(speed, tmp_path):
    # --speed_perturb_speeds reaches SpeechBrain's SpeedPerturb; in training every source
    # is resampled (length x 100/speed, pitch x speed/100) and the mixture is re-made from
    # the perturbed parts; validation input is left alone.
    hp = load_demo("sepformer-tiny", tmp_path, speed_perturb_speeds=[speed])
    assert list(hp["speed_perturb"].speeds) == [speed]
    brain = make_brain(hp)
    n, t = 8000, np.arange(8000) / 8000
    srcs = [torch.from_numpy((0.3 * np.sin(2 * np.pi * f * t)).astype("float32")) for f in (200.0, 330.0)]
    noise = torch.zeros(2 * n)  # the noise is not perturbed (references): long enough for both speeds
    srcs = [torch.nn.functional.pad(x, (0, n)) for x in srcs]
    batch = PaddedBatch([make_item("u0", srcs[0] + srcs[1] + noise, srcs, noise, srcs[0] + srcs[1])])
    _, refs = brain.compute_forward(batch, sb.Stage.TRAIN)
    length = refs.sources.shape[1]
    assert abs(length - 2 * n * 100 / speed) <= 2 or length == 2 * n
    assert refs.noise.shape[1] == length
    for k, f in enumerate((200.0, 330.0)):
        assert dominant_hz(refs.sources[0, :, k].numpy(), 8000) == pytest.approx(f * speed / 100, abs=3)
    assert torch.allclose(refs.mix, refs.sources.sum(-1) + refs.noise)
    _, refs = brain.compute_forward(batch, sb.Stage.VALID)
    assert refs.sources.shape[1] == 2 * n


@pytest.mark.parametrize("perturb_noise", [False, True])
def test_noise_is_speed_perturbed_only_when_asked(perturb_noise, tmp_path):
    # references (NASS, GM, SpeechBrain LibriMix): sources perturbed, noise added as it is;
    # speed_perturb_noise: True is our option
    hp = load_demo("sepformer-tiny", tmp_path, speed_perturb_speeds=[80], speed_perturb_noise=perturb_noise)
    brain = make_brain(hp)
    n, t = 8000, np.arange(16000) / 8000
    tone = lambda f: torch.from_numpy((0.3 * np.sin(2 * np.pi * f * t)).astype("float32"))  # noqa: E731
    srcs, noise = [tone(200.0), tone(330.0)], tone(1000.0)
    batch = PaddedBatch([make_item("u0", srcs[0] + srcs[1] + noise, srcs, noise, srcs[0] + srcs[1])])
    _, refs = brain.compute_forward(batch, sb.Stage.TRAIN)
    expected = 800.0 if perturb_noise else 1000.0
    assert dominant_hz(refs.noise[0].numpy(), 8000) == pytest.approx(expected, abs=5)
    assert torch.allclose(refs.mix, refs.sources.sum(-1) + refs.noise)


def test_random_shelf_eq_colours_each_row_keeps_its_rms_and_rejects_bad_settings():
    from nass.dataio.augment import RandomShelfEQ

    torch.manual_seed(0)
    x = torch.randn(64, 8000)
    y = RandomShelfEQ(8000, max_gain_db=10)(x)
    assert torch.allclose(y.pow(2).mean(-1), x.pow(2).mean(-1), rtol=1e-3)
    # the low band's share of the energy moves row by row, in both directions
    def low(w):  # share of each row's energy in the bins below 300 Hz (1 s at 8 kHz: 1 Hz bins)
        power = torch.fft.rfft(w).abs().pow(2)
        return power[:, 1:300].sum(-1) / power.sum(-1)

    ratio = low(y) / low(x)
    assert ratio.max() > 2.0 and ratio.min() < 0.5
    assert torch.equal(RandomShelfEQ(8000, max_gain_db=0)(x), x)
    for kwargs in (dict(max_gain_db=-1), dict(bass_freq=3000), dict(treble_freq=5000)):
        with pytest.raises(ValueError, match="RandomShelfEQ"):
            RandomShelfEQ(8000, **kwargs)
    with pytest.raises(ValueError, match=r"\[batch, time\]"):
        RandomShelfEQ(8000)(torch.randn(2, 2, 100))


def test_source_augment_changes_each_speaker_and_remixes_with_the_same_noise(tmp_path):
    from nass.dataio.augment import RandomShelfEQ

    hp = load_demo("sepformer-tiny", tmp_path, speed_perturb=None)
    assert hp["source_augment"] is None
    hp["source_augment"] = RandomShelfEQ(8000, max_gain_db=12)
    brain = make_brain(hp)
    batch = make_batch(num_utts=2, seconds=1.0)
    _, refs = brain.compute_forward(batch, sb.Stage.TRAIN)
    assert torch.allclose(refs.mix, refs.sources.sum(-1) + refs.noise, atol=1e-6)
    _, valid = brain.compute_forward(batch, sb.Stage.VALID)
    assert torch.allclose(refs.noise, valid.noise)
    assert not torch.allclose(refs.sources, valid.sources, atol=1e-3)
    assert torch.allclose(refs.sources.pow(2).mean(1), valid.sources.pow(2).mean(1), rtol=1e-3)


# ----------------------------------------------------------------------------- recipes / YAML
def all_yaml():
    return sorted(glob.glob(os.path.join(REPO, "recipes", "*", "separation", "hparams", "**", "*.yaml"), recursive=True))


def test_generated_yaml_files_are_current():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "make_recipe_hparams.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", all_yaml(), ids=lambda p: os.path.relpath(p, os.path.join(REPO, "recipes")))
def test_every_yaml_instantiates(path, tmp_path):
    # init_from: the fine-tuning YAMLs require it (!PLACEHOLDER), every other YAML has it null
    with open(path, encoding="utf-8") as f:
        hp = load_hyperpyyaml(f, {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "o"), "init_from": None})
    sep = hp["separator"]
    assert isinstance(sep, (MaskingSeparator, STFTMaskingSeparator))
    assert sep.num_masks == hp["num_spks"] + (hp["noise_target"] == "extra_output")
    if "-tiny" in path:  # run the tiny ones forward too
        out = sep(torch.randn(1, 2000))
        assert out.est_sources.shape == (1, 2000, hp["num_spks"])


def test_unknown_override_fails(tmp_path, tiny_librimix):
    cmd = [
        sys.executable,
        os.path.join(REPO, "recipes", "LibriMix", "separation", "train.py"),
        os.path.join(DEMO, "convtasnet-tiny.yaml"),
        f"--data_folder={tiny_librimix}",
        f"--output_folder={tmp_path / 'o'}",
        "--lerning_rate=0.1",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path))
    assert result.returncode != 0
    assert "lerning_rate" in result.stderr


# ----------------------------------------------------------------------------- resume
def run_recipe(args, cwd):
    cmd = [sys.executable, os.path.join(REPO, "recipes", "LibriMix", "separation", "train.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)


def test_resume_continues_at_next_epoch_with_optimizer_state(tmp_path, tiny_librimix):
    out = tmp_path / "run"
    common = [
        os.path.join(DEMO, "sepformer-tiny-nass.yaml"),
        f"--data_folder={tiny_librimix}",
        f"--output_folder={out}",
        "--training_signal_len=2000",
        "--batch_size=2",
        "--eval_num_workers=0",
        "--n_audio_to_save=1",
        "--noprogressbar",
    ]
    first = run_recipe(common + ["--N_epochs=1"], str(tmp_path))
    assert first.returncode == 0, first.stderr[-3000:]

    def latest_optimizer_state():
        ckpts = sorted(glob.glob(str(out / "save" / "CKPT+*")), key=os.path.getmtime)
        return torch.load(os.path.join(ckpts[-1], "optimizer.ckpt"), weights_only=True)

    steps_after_1 = latest_optimizer_state()["state"][0]["step"].item()
    second = run_recipe(common + ["--N_epochs=2"], str(tmp_path))
    assert second.returncode == 0, second.stderr[-3000:]
    log = (out / "train_log.txt").read_text()
    assert log.count("epoch: 1,") == 1 and log.count("epoch: 2,") == 1
    # the optimiser continued from its saved state: twice the steps of one epoch
    assert latest_optimizer_state()["state"][0]["step"].item() == 2 * steps_after_1
    assert (out / "test" / "test_metrics.csv").exists()
    # the PatchNCE projection head is checkpointed with the separator ...
    ckpts = glob.glob(str(out / "save" / "CKPT+*"))
    assert all(os.path.exists(os.path.join(c, "patch_sampler.ckpt")) for c in ckpts)
    # ... but a NASS-trained model separates with the plain Separator
    from nass.inference import Separator

    sep = Separator.from_hparams(str(out))
    est, noise = sep.separate_batch(torch.randn(1, 4000))
    assert est.shape == (1, 4000, 2) and noise.shape == (1, 4000)


def test_gradient_modulation_statistics_are_logged_per_step(tmp_path):
    hp = load_demo("sepformer-tiny-unified-gm", tmp_path, speed_perturb=None)
    os.makedirs(hp["output_folder"], exist_ok=True)
    brain = make_brain(hp)
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    for step in range(1, 3):
        brain.step = step
        brain.fit_batch(make_batch(seed=step))
    rows = open(os.path.join(hp["output_folder"], "gm_stats.csv")).read().splitlines()
    assert rows[0].startswith("epoch_step,num_shared,num_conflicted,conflict_fraction")
    assert len(rows) == 3
    num_shared, num_conflicted, fraction = rows[1].split(",")[1:4]
    assert int(num_shared) > 0 and 0 <= int(num_conflicted) <= int(num_shared)
    assert abs(float(fraction) - int(num_conflicted) / int(num_shared)) < 1e-3


def test_missing_clean_mixture_is_the_sum_of_sources(tiny_librimix):
    from nass.dataio.pipeline import make_dataset

    base = os.path.join(tiny_librimix, "wav8k", "min", "train")
    row = {
        "ID": "train_000",
        "duration": 0.5,
        "mix_wav": os.path.join(base, "mix_both", "train_000.wav"),
        "s1_wav": os.path.join(base, "s1", "train_000.wav"),
        "s2_wav": os.path.join(base, "s2", "train_000.wav"),
        "noise_wav": os.path.join(base, "noise", "train_000.wav"),
        "mix_clean_wav": "",
    }
    item = make_dataset([row], 2, 8000)[0]
    assert torch.allclose(item["mix_clean_sig"], item["s1_sig"] + item["s2_sig"])
    assert not torch.allclose(item["mix_clean_sig"], item["mix_sig"])


def test_a_key_the_brain_reads_must_be_in_the_yaml(tmp_path):
    """No soft defaults: a key missing from the YAML fails naming it, never silently defaults."""
    hp = load_demo("convtasnet-tiny", tmp_path, speed_perturb=None, B=8, H=16, X=2)
    del hp["threshold_byloss"]
    brain = make_brain(hp)
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    with pytest.raises((KeyError, AttributeError), match="threshold_byloss"):
        brain.fit_batch(make_batch())
    hp = load_demo("convtasnet-tiny", tmp_path, B=8, H=16, X=2)
    del hp["log_interval_steps"]
    brain = make_brain(hp)
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    with pytest.raises(KeyError, match="'log_interval_steps' key"):
        brain.fit_batch(make_batch())
    from nass.runner import build_datasets

    with pytest.raises(KeyError, match="'valid_max_utterances' key"):
        no_splits = dict(train_split=None, valid_split=None, test_split=None)
        build_datasets({**{k: v for k, v in hp.items() if k != "valid_max_utterances"}, **no_splits}, {})


def test_freeze_encoder_and_evaluation_use_the_separator_contract():
    """freeze_encoder reads encoder_parameters() (and refuses a separator without any);
    the runner reaches the model through SeparationBrain.separator(), unwrapped from DDP."""
    import types

    from speechbrain.lobes.models.conv_tasnet import MaskNet
    from speechbrain.lobes.models.dual_path import Decoder, Encoder

    from nass.runner import freeze_encoder
    from nass.separation import SeparationModel

    sep = MaskingSeparator(Encoder(16, 32), MaskNet(32, 16, 32, 3, 2, 1, C=2), Decoder(32, 1, 16, 8), 2)
    assert isinstance(sep, SeparationModel)
    assert [id(p) for p in sep.encoder_parameters()] == [id(p) for p in sep.encoder.parameters()]

    class Mapping(torch.nn.Module):  # a separator with no encoder
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 4)

        def encoder_parameters(self):
            return []

    with pytest.raises(ValueError, match="no encoder parameters.*freeze_encoder: False"):
        freeze_encoder(Mapping())
    assert freeze_encoder(sep) == 1 and not sep.encoder.conv1d.weight.requires_grad
    assert all(p.requires_grad for p in sep.masknet.parameters())

    wrapped = types.SimpleNamespace(modules=types.SimpleNamespace(separator=types.SimpleNamespace(module=sep)))
    plain = types.SimpleNamespace(modules=types.SimpleNamespace(separator=sep))
    assert SeparationBrain.separator(wrapped) is sep and SeparationBrain.separator(plain) is sep

"""Issue 'every method trains as its paper says': the LR schedule is applied, each loss term is
logged with its reference value, the paper YAMLs carry the papers' values, the unified SE+SS
options behave as documented."""

import json
import math
import os

import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.nnet.schedulers import NoamScheduler, ReduceLROnPlateau

from nass.brains.separation import SeparationBrain, scheduler_kind

from test_separation import REPO as ROOT, load_demo, make_batch, make_brain

TINY = dict(N_encoder_out=16, num_blocks=1, d_ffn=32, K=20, nce_proj_dim=16, num_patches=16)


def _epochs(brain, valid_losses):
    """Drive the stage hooks as Brain.fit does, with given validation losses."""
    for epoch, loss in enumerate(valid_losses, start=1):
        brain.on_stage_start(sb.Stage.TRAIN, epoch)
        brain.on_stage_end(sb.Stage.TRAIN, 1.0, epoch)
        brain.on_stage_start(sb.Stage.VALID, epoch)
        brain.on_stage_end(sb.Stage.VALID, loss, epoch)


def test_plateau_halves_the_rate_the_optimizer_uses_and_the_log_says_so(tmp_path):
    hp = load_demo("sepformer-tiny", tmp_path, lr=0.001)
    hp["lr_scheduler"] = ReduceLROnPlateau(factor=0.5, patience=1, dont_halve_until_epoch=1)
    brain = make_brain(hp)
    # epoch 1 sets the anchor; 2 and 3 are worse (patience 1): halved after epoch 3
    _epochs(brain, [1.0, 2.0, 3.0, 0.5, 0.6])
    assert brain.optimizer.param_groups[0]["lr"] == pytest.approx(0.0005)
    rows = [json.loads(line) for line in open(os.path.join(hp["output_folder"], "train_log.jsonl"))]
    assert [r["lr"] for r in rows] == pytest.approx([0.001, 0.001, 0.001, 0.0005, 0.0005])
    assert rows[2]["next_lr"] == pytest.approx(0.0005)
    text = open(hp["train_log"]).read().splitlines()
    assert "lr: 5.00e-04" in text[3] and "lr: 1.00e-03" in text[2]


def test_plateau_state_survives_in_the_optimizer_checkpoint(tmp_path, tiny_librimix):
    """A real fit: the halved rate is what the saved optimizer state holds."""
    from speechbrain.dataio.batch import PaddedBatch

    from nass.dataio.manifest import read_manifest
    from nass.dataio.pipeline import make_dataset
    from nass.dataio.prepare import prepare_dataset

    hp = load_demo("convtasnet-tiny", tmp_path, data_folder=tiny_librimix, N_epochs=3, B=8, H=16, X=2)
    hp["lr_scheduler"] = ReduceLROnPlateau(factor=0.5, patience=0, dont_halve_until_epoch=0)
    manifests = prepare_dataset("librimix", tiny_librimix, hp["save_folder"], 2, 8000, splits=["train", "dev"])
    train = make_dataset(read_manifest(manifests["train"], 2), 2, 8000, segment_samples=2000)
    valid = make_dataset(read_manifest(manifests["dev"], 2), 2, 8000)
    brain = SeparationBrain(
        modules=hp["modules"], opt_class=hp["optimizer"], hparams=hp,
        run_opts={"device": "cpu", "noprogressbar": True}, checkpointer=hp["checkpointer"],
    )
    # a validation loss that always gets worse: halved after every epoch
    brain.compute_objectives = _worsening(brain.compute_objectives)
    brain.fit(hp["epoch_counter"], train, valid, train_loader_kwargs={"batch_size": 2, "collate_fn": PaddedBatch},
              valid_loader_kwargs={"batch_size": 1})
    rows = [json.loads(line) for line in open(os.path.join(hp["output_folder"], "train_log.jsonl"))]
    # epoch 1 sets the anchor, epochs 2 and 3 are worse (patience 0): halved after each
    assert [r["lr"] for r in rows] == pytest.approx([0.001, 0.001, 0.0005])
    assert [r["next_lr"] for r in rows] == pytest.approx([0.001, 0.0005, 0.00025])
    assert brain.optimizer.param_groups[0]["lr"] == pytest.approx(0.00025)
    (ckpt,) = [d for d in os.listdir(hp["save_folder"]) if d.startswith("CKPT")]
    with open(os.path.join(hp["save_folder"], ckpt, "CKPT.yaml")) as f:
        epoch = int([line for line in f if line.startswith("epoch")][0].split(":")[1])
    state = torch.load(os.path.join(hp["save_folder"], ckpt, "optimizer.ckpt"), weights_only=True)
    assert state["param_groups"][0]["lr"] == pytest.approx(rows[epoch - 1]["next_lr"])


def _worsening(fn):
    calls = {"valid": 0}

    def wrapped(predictions, batch, stage):
        loss = fn(predictions, batch, stage)
        if stage == sb.Stage.VALID:
            calls["valid"] += 1
            return loss.detach() * 0 + calls["valid"]
        return loss

    return wrapped


def test_step_scheduler_is_called_after_every_optimizer_step(tmp_path):
    hp = load_demo("sepformer-tiny", tmp_path, **{k: v for k, v in TINY.items() if k in ("N_encoder_out", "num_blocks", "d_ffn", "K")})
    hp["lr_scheduler"] = NoamScheduler(lr_initial=0.01, n_warmup_steps=10)
    brain = make_brain(hp)
    rates = []
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    for _ in range(3):
        brain.fit_batch(make_batch())
        rates.append(brain.optimizer.param_groups[0]["lr"])
    assert rates[0] < rates[1] < rates[2] < 0.01  # warm-up applied to the optimizer


def test_unsupported_scheduler_fails_at_fit_start(tmp_path):
    assert scheduler_kind(None) is None
    hp = load_demo("sepformer-tiny", tmp_path)
    hp["lr_scheduler"] = object()
    with pytest.raises(ValueError, match="not a supported scheduler"):
        make_brain(hp)


def test_every_term_is_logged_with_its_reference_value(tmp_path):
    hp = load_demo("sepformer-tiny-nass-unified-gm", tmp_path, **TINY, enhancer_num_blocks=1, log_interval_steps=1)
    brain = make_brain(hp)
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.step = 1  # SpeechBrain's loop counts the batch before fit_batch
    batch_loss = float(brain.fit_batch(make_batch(seconds=0.5)))
    brain.on_stage_end(sb.Stage.TRAIN, 1.0, 1)
    st = brain.train_stats
    # a random network's NCE term sits near its chance level ln K
    assert st["nce_chance"] == pytest.approx(math.log(16))
    assert abs(st["nce"] - st["nce_chance"]) < 0.5 * st["nce_chance"]
    assert st["nce_loss"] == pytest.approx(hp["lambda_nce"] * st["nce"], rel=1e-4)
    for key in ("si-snr_input", "noise_si-snr_input", "se_identity", "gm_conflict_fraction"):
        assert math.isfinite(st[key]), key
    # the input scores are those of the mixture itself (noise level 0.05: speakers about 0 dB)
    assert -6 < st["si-snr_input"] < 3 and st["noise_si-snr_input"] < -10
    brain.on_stage_start(sb.Stage.VALID, 1)
    brain.evaluate_batch(make_batch(seconds=0.5), sb.Stage.VALID)
    brain.on_stage_end(sb.Stage.VALID, 1.0, 1)
    step_row, row = [json.loads(line) for line in open(os.path.join(hp["output_folder"], "train_log.jsonl"))]
    # every log_interval_steps optimiser steps: the running statistics of the epoch so far
    assert step_row["optimizer_step"] == 1 and step_row["train_running"]["nce_chance"] == pytest.approx(math.log(16))
    assert step_row["train_running"]["loss"] == pytest.approx(batch_loss)  # the running total, not NaN/null
    assert row["train"]["nce_chance"] == pytest.approx(math.log(16)) and "lr" in row and "si-snr_input" in row["valid"]


def test_validation_loss_is_the_separation_loss_without_se_or_nce(tmp_path):
    hp = load_demo("sepformer-tiny-nass-unified-gm", tmp_path, **TINY, enhancer_num_blocks=1)
    brain = make_brain(hp)
    batch = make_batch()
    brain.on_stage_start(sb.Stage.VALID, 1)
    with torch.no_grad():
        pred = brain.compute_forward(batch, sb.Stage.VALID)
        loss = brain.compute_objectives(pred, batch, sb.Stage.VALID)
        terms = brain.compute_losses(pred, sb.Stage.VALID)
    values = terms["values"]
    expected = (values["speaker_pit"] + hp["noise_loss_weight"] * values["noise_si_snr"]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["se"] is not None and "enhancement" in values and "patch_nce" not in values


def test_threshold_sees_speakers_plus_weighted_noise(tmp_path):
    """As the NASS reference, the threshold is applied to the per-utterance separation loss."""
    hp = load_demo("sepformer-tiny-noise", tmp_path, threshold=0.0)
    brain = make_brain(hp)
    with torch.no_grad():
        pred = brain.compute_forward(make_batch(num_utts=3), sb.Stage.VALID)
        terms = brain.compute_losses(pred, sb.Stage.TRAIN)
    sep = terms["values"]["speaker_pit"] + hp["noise_loss_weight"] * terms["values"]["noise_si_snr"]
    kept = sep[~(sep <= 0.0)]
    expected = (kept if len(kept) else sep).mean()
    assert terms["ss"].item() == pytest.approx(expected.item(), rel=1e-5)


# ----------------------------------------------------------------------------- paper values
PAPER = os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams")


def _load(path, tmp_path):
    with open(path, encoding="utf-8") as f:
        return load_hyperpyyaml(f, {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "o")})


@pytest.mark.parametrize("mix, spks", [("libri2mix", 2), ("libri3mix", 3)])
def test_paper_yamls_carry_the_papers_values(mix, spks, tmp_path):
    nass = _load(os.path.join(PAPER, mix, "sepformer-nass.yaml"), tmp_path)
    assert nass["noise_loss_weight"] == pytest.approx(1 / spks)
    assert nass["lambda_nce"] == pytest.approx(2 * (spks + 1) / spks)
    assert nass["lr_scheduler"].dont_halve_until_epoch == 50
    assert nass["N_epochs"] == 200 and nass["train_split"] == "train-100"
    assert nass["speed_perturb_noise"] is False and nass["patch_sampler"].patch_layout == "frame"
    gm = _load(os.path.join(PAPER, mix, "sepformer-unified-gm.yaml"), tmp_path)
    assert gm["N_epochs"] == 120 and gm["se_loss_weight"] == 0.1 and gm["se_loss_type"] == "mse"
    assert gm["lr_scheduler"].dont_halve_until_epoch == 5 and gm["train_split"] == "train-360"


def test_reference_patch_layout_is_selectable(tmp_path):
    hp = load_demo("sepformer-tiny-nass", tmp_path, patch_layout="cell")
    assert hp["patch_sampler"].patch_layout == "cell"


# ----------------------------------------------------------------------------- unified SE+SS
def _se_gradient_cosine_with_encoder(se_loss_type, tmp_path):
    hp = load_demo("sepformer-tiny-unified", tmp_path, se_loss_type=se_loss_type, **{k: TINY[k] for k in ("N_encoder_out", "num_blocks", "d_ffn", "K")}, enhancer_num_blocks=1)
    brain = make_brain(hp)
    torch.manual_seed(0)
    pred = brain.compute_forward(make_batch(), sb.Stage.VALID)
    se = brain.compute_losses(pred, sb.Stage.TRAIN)["values"]["enhancement"]
    w = brain._separator().encoder.conv1d.weight
    (g,) = torch.autograd.grad(se, [w])
    return float(torch.nn.functional.cosine_similarity(g.flatten(), w.detach().flatten(), dim=0))


def test_scale_invariant_se_loss_does_not_pull_on_the_encoder_scale(tmp_path):
    paper = _se_gradient_cosine_with_encoder("mse", tmp_path / "a")
    invariant = _se_gradient_cosine_with_encoder("neg_snr", tmp_path / "b")
    assert paper > 0.2  # part of the paper's g_SE only shrinks the encoder
    assert abs(invariant) < 1e-3


def test_unknown_se_loss_type_is_refused_at_load_time(tmp_path):
    with pytest.raises(ValueError, match="se_loss_type"):
        load_demo("sepformer-tiny-unified", tmp_path, se_loss_type="l1")


@pytest.mark.parametrize("noise_input", ["enhanced", "mixture"])
def test_noise_branch_reads_the_chosen_representation(noise_input, tmp_path):
    hp = load_demo("sepformer-tiny-nass-unified-gm", tmp_path, noise_input=noise_input, **TINY, enhancer_num_blocks=1)
    sep = hp["separator"]
    sep.eval()
    mix = make_batch().mix_sig.data
    with torch.no_grad():
        out = sep(mix)
        masks = sep.masknet(out.enhanced_w)
    base = out.mix_w if noise_input == "mixture" else out.enhanced_w
    assert torch.allclose(out.masked_reps[-1], base * masks[-1], atol=1e-6)
    assert torch.allclose(out.masked_reps[0], out.enhanced_w * masks[0], atol=1e-6)
    with pytest.raises(ValueError, match="noise_input"):
        type(sep)(sep.encoder, sep.masknet, sep.decoder, 2, "extra_output", sep.enhancer, noise_input="x")


# ----------------------------------------------------------------------------- precision: auto, step budget
def test_auto_precision_follows_the_cpu_flags(monkeypatch):
    import nass.hparams as training

    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    assert training.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    assert training.resolve_precision("auto", "cpu") == "fp32"
    assert training.resolve_precision("fp16", "cpu") == "fp16"  # explicit values are kept
    with pytest.raises(ValueError, match="auto"):
        training.resolve_precision("fp64", "cpu")


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_precision_auto_is_accepted_on_the_command_line_and_in_the_yaml(has_bf16, expected, tmp_path, monkeypatch):
    import nass.hparams
    import nass.runner as training

    monkeypatch.setattr(nass.hparams, "cpu_has_bf16", lambda: has_bf16)
    yaml_file = os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams", "demo", "dprnn-tiny-noise.yaml")
    base = [yaml_file, f"--output_folder={tmp_path / 'o'}", "--data_folder=/nonexistent"]
    _, run_opts, _, _ = training.load_hparams(base + ["--precision=auto"])  # SpeechBrain's parser refuses 'auto'
    assert run_opts.precision == expected
    _, _, _, hparams = training.load_hparams(base)  # the demo YAML says precision: auto
    assert hparams["precision"] == expected


def test_command_line_step_limit_reaches_the_yaml_schedule(tmp_path):
    from nass.runner import load_hparams

    yaml_file = os.path.join(ROOT, "recipes", "LibriMix", "separation", "hparams", "demo", "dprnn-tiny-noise.yaml")
    _, run_opts, _, hparams = load_hparams(
        [yaml_file, f"--output_folder={tmp_path / 'o'}", "--optimizer_step_limit=37", "--lr=0.002"]
    )
    assert run_opts.optimizer_step_limit == 37
    assert hparams["optimizer_step_limit"] == 37 and hparams["lr"] == 0.002
    sched = hparams["lr_scheduler"]
    assert sched.num_training_steps == 37  # the linear decay ends with the budget
    assert sched.calculate_lr(37) == 0.0 and max(sched.calculate_lr(s) for s in range(38)) == pytest.approx(0.002)

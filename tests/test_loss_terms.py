"""Loss terms as objects (nass.losses.terms): same numbers as the pure loss functions, a new
term added from a test with no Brain edit, and configurations that cannot work refused at load."""

import json
import os

import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from conftest import REPO
from nass.losses.patch_nce import nass_contrastive_loss
from nass.losses.pit import apply_perm, pit_si_snr
from nass.losses.si_snr import si_snr
from nass.losses.terms import LossTerm, check_hparams
from test_separation import make_batch, make_brain

DEMO = os.path.join(REPO, "recipes", "LibriMix", "separation", "hparams", "demo")
SMALL = dict(N_encoder_out=16, num_blocks=1, d_ffn=32, K=50, num_patches=16, enhancer_num_blocks=1)


def demo_text(name):
    with open(os.path.join(DEMO, name + ".yaml"), encoding="utf-8") as f:
        return f.read()


def load_text(text, tmp_path, **overrides):
    return load_hyperpyyaml(text, {"output_folder": str(tmp_path / "out"), **overrides})


def reference_losses(hp, out, refs, train):
    """The training objective computed directly from the pure functions of nass/losses, as the
    Brain computed it before the loss terms existed (speakers + weighted noise per utterance,
    threshold, + lambda_nce * PatchNCE, + se_loss_weight * SE)."""
    spk, perm = pit_si_snr(out.est_sources, refs.sources)
    sep = spk + hp["noise_loss_weight"] * -si_snr(out.est_noise, refs.noise)
    kept = sep[~(sep <= hp["threshold"])] if train else sep
    ss = (kept if len(kept) else sep).mean()
    enc = hp["separator"].encoder
    query = apply_perm(out.masked_reps[:2].permute(1, 2, 3, 0), perm).permute(0, 3, 1, 2)
    with torch.no_grad():
        positive = torch.stack([enc(refs.sources[..., j]) for j in range(2)], dim=1)
    frames = out.masked_reps.shape[-1]
    valid = (refs.lengths * frames).floor().long().clamp(1, frames)
    nce = nass_contrastive_loss(query, positive, out.masked_reps[2], hp["patch_sampler"], hp["patch_nce"],
                                lambda_nce=hp["lambda_nce"], num_valid_frames=valid)
    se = ((out.enhanced_w - enc(refs.mix_clean)) ** 2).sum() / out.enhanced_w.shape[0]
    return ss + nce, hp["se_loss_weight"] * se, sep.mean()


def test_term_list_gives_the_numbers_of_the_pure_loss_functions(tmp_path):
    torch.manual_seed(0)
    hp = load_text(demo_text("sepformer-tiny-nass-unified-gm"), tmp_path, speed_perturb=None, threshold=-5.0, **SMALL)
    assert [t.name for t in hp["loss_terms"]] == ["speaker_pit", "noise_si_snr", "patch_nce", "enhancement"]
    brain = make_brain(hp)
    brain.modules.eval()  # no dropout: one forward feeds both paths
    pred = brain.compute_forward(make_batch(num_utts=3), sb.Stage.TRAIN)
    torch.manual_seed(1)  # the same PatchNCE patch positions for both
    got = brain.compute_losses(pred, sb.Stage.TRAIN)
    torch.manual_seed(1)
    ss, se, separation = reference_losses(hp, *pred, train=True)
    assert got["ss"].item() == pytest.approx(ss.item(), rel=1e-6)
    assert got["se"].item() == pytest.approx(se.item(), rel=1e-6)
    assert got["separation"].item() == pytest.approx(separation.item(), rel=1e-6)
    # and the gradients of the objective agree
    params = [p for p in brain.modules.parameters() if p.requires_grad]
    g_new = torch.autograd.grad(got["ss"] + got["se"], params, allow_unused=True, retain_graph=True)
    g_ref = torch.autograd.grad(ss + se, params, allow_unused=True)
    for a, b in zip(g_new, g_ref):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # validation: no PatchNCE, the loss is the separation loss alone
    with torch.no_grad():
        valid = brain.compute_losses(pred, sb.Stage.VALID)
    assert "patch_nce" not in valid["values"] and valid["separation"].item() == pytest.approx(separation.item(), rel=1e-6)


class EnergyTerm(LossTerm):
    """A new loss term defined in a test: the mean energy of the speaker estimates."""

    name = "energy"
    needs = ("output.est_sources",)

    def __call__(self, output, batch, shared):
        loss = output.est_sources.pow(2).mean()
        return loss, {"energy_stat": float(loss.detach())}


def test_a_new_term_is_a_class_and_a_yaml_entry(tmp_path):
    text = demo_text("convtasnet-tiny-noise").replace(
        "loss_terms:\n", "loss_terms:\n    - !new:test_loss_terms.EnergyTerm\n        weight: 0.25\n"
    )
    torch.manual_seed(0)
    hp = load_text(text, tmp_path, speed_perturb=None, threshold_byloss=False, log_interval_steps=1, B=8, H=16, X=2)
    assert isinstance(hp["loss_terms"][0], EnergyTerm)
    brain = make_brain(hp)
    batch = make_batch()
    with torch.no_grad():
        pred = brain.compute_forward(batch, sb.Stage.VALID)
        losses = brain.compute_losses(pred, sb.Stage.TRAIN)
    energy = pred[0].est_sources.pow(2).mean()
    assert losses["values"]["energy"].item() == pytest.approx(energy.item(), rel=1e-6)
    assert losses["ss"].item() == pytest.approx((losses["separation"] + 0.25 * energy).item(), rel=1e-5)
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.fit_batch(batch)
    brain.on_stage_end(sb.Stage.TRAIN, 1.0, 1)
    assert brain.train_stats["energy_stat"] > 0
    (row,) = [json.loads(line) for line in open(os.path.join(hp["output_folder"], "train_log.jsonl"))]
    assert row["train_running"]["energy_stat"] == pytest.approx(brain.train_stats["energy_stat"])


def _with_terms(name, terms_block):
    text = demo_text(name)
    start = text.index("loss_terms:\n")
    end = text.index("\n\n", start)
    return text[:start] + "loss_terms:\n" + terms_block + text[end:]


def test_noise_term_without_noise_output_fails_naming_the_keys(tmp_path):
    hp = load_text(demo_text("convtasnet-tiny-noise"), tmp_path, noise_target="none", num_masks=2)
    with pytest.raises(ValueError, match=r"loss_terms\[1\] \(noise_si_snr\) needs output.est_noise.*noise_target: extra_output"):
        check_hparams(hp)


def test_noise_term_with_clean_input_is_refused_and_the_noisy_yaml_passes(tmp_path):
    check_hparams(load_text(demo_text("dprnn-tiny-noise"), tmp_path))  # mixture: noisy
    check_hparams(load_text(demo_text("dprnn-tiny"), tmp_path, mixture="clean"))  # no noise term
    hp = load_text(demo_text("dprnn-tiny-noise"), tmp_path, mixture="clean")
    with pytest.raises(ValueError, match=r"loss_terms\[1\] \(noise_si_snr\) estimates the noise, but mixture: clean.*noise_target: none"):
        check_hparams(hp)


def test_patch_nce_without_sampler_fails_at_yaml_load(tmp_path):
    block = ("    - !new:nass.losses.terms.SpeakerPIT\n    - !new:nass.losses.terms.PatchNCE\n"
             "        sampler: null\n        criterion: !ref <patch_nce>\n")
    with pytest.raises(ValueError, match="PatchNCE needs sampler"):
        load_text(_with_terms("sepformer-tiny-nass", block), tmp_path)


def test_patch_sampler_must_be_trained_and_the_permutation_come_first(tmp_path):
    text = demo_text("sepformer-tiny-nass").replace("    patch_sampler: !ref <patch_sampler>   # trained", "    # trained")
    with pytest.raises(ValueError, match=r"\(patch_nce\): its PatchSampler is not in modules"):
        check_hparams(load_text(text, tmp_path))
    block = ("    - !new:nass.losses.terms.PatchNCE\n        sampler: !ref <patch_sampler>\n"
             "        criterion: !ref <patch_nce>\n    - !new:nass.losses.terms.SpeakerPIT\n")
    with pytest.raises(ValueError, match=r"loss_terms\[0\] \(patch_nce\) needs shared.perm.*speaker_pit"):
        check_hparams(load_text(_with_terms("sepformer-tiny-nass", block), tmp_path))


def test_backward_rule_is_checked(tmp_path):
    with pytest.raises(ValueError, match="backward: gradient_modulation needs an enhancer"):
        check_hparams(load_text(demo_text("sepformer-tiny-noise"), tmp_path, backward="gradient_modulation"))
    hp = load_text(demo_text("sepformer-tiny-unified"), tmp_path)
    with pytest.raises(ValueError, match="now backward: gradient_modulation"):
        check_hparams({**hp, "backward": "projection"})
    del hp["backward"]
    with pytest.raises(ValueError, match="no backward key"):
        check_hparams(hp)
    hp = load_text(_with_terms("sepformer-tiny-unified-gm", "    - !new:nass.losses.terms.SpeakerPIT\n"), tmp_path)
    with pytest.raises(ValueError, match="needs an se term"):
        make_brain(hp, start=False)


def test_the_runner_refuses_a_configuration_before_touching_the_data(tmp_path):
    from nass.runner import run_separation

    argv = [os.path.join(DEMO, "dprnn-tiny-nass.yaml"), f"--output_folder={tmp_path / 'o'}",
            "--data_folder=/nonexistent", "--noise_target=none", "--num_masks=2"]
    with pytest.raises(SystemExit, match=r"dprnn-tiny-nass.yaml: loss_terms\[1\] \(noise_si_snr\) needs output.est_noise"):
        run_separation(argv)
    # before the experiment folder and the manifests (the checkpointer made the empty folder at YAML load)
    assert not list((tmp_path / "o").rglob("*.yaml")) and not list((tmp_path / "o").rglob("*.csv"))

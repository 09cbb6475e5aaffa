"""STFTMaskingSeparator: reconstruction, mask-count check, autocast, gradients."""

import pytest
import torch

from nass.separation import STFTMaskingSeparator, SeparationModel


class ConstantMasks(torch.nn.Module):
    """Mask network stand-in: every mask equals ``value`` (keeps a parameter for gradients)."""

    def __init__(self, num_masks, value):
        super().__init__()
        self.num_masks = num_masks
        self.value = torch.nn.Parameter(torch.tensor(float(value)))

    def forward(self, x):
        return self.value * torch.ones((self.num_masks,) + tuple(x.shape))


def test_unit_masks_give_back_the_mixture():
    torch.manual_seed(0)
    mix = torch.randn(2, 4001)
    model = STFTMaskingSeparator(ConstantMasks(3, 1.0), num_spks=2, noise_target="extra_output")
    out = model(mix)
    assert isinstance(model, SeparationModel)
    assert out.est_sources.shape == (2, 4001, 2) and out.est_noise.shape == (2, 4001)
    assert torch.allclose(out.est_sources[..., 0], mix, atol=1e-4)
    assert torch.allclose(out.est_noise, mix, atol=1e-4)


def test_mask_value_is_applied_in_the_compressed_domain():
    mix = torch.randn(1, 2000)
    out = STFTMaskingSeparator(ConstantMasks(2, 0.5), num_spks=2, power=0.5)(mix)
    # mask 0.5 on |X|^0.5 is a gain of 0.5 ** 2 on the spectrum
    assert torch.allclose(out.est_sources[..., 1], 0.25 * mix, atol=1e-4)
    assert torch.allclose(out.masked_reps[0], 0.5 * out.mix_w)
    assert torch.allclose(out.encode(mix), out.mix_w)


def test_wrong_mask_count_and_power_are_refused():
    from speechbrain.lobes.models.dual_path import Dual_Path_Model, SBRNNBlock

    block = SBRNNBlock(input_size=8, hidden_channels=4, num_layers=1, bidirectional=True)
    masknet = Dual_Path_Model(129, 8, block, block, num_layers=1, K=10, num_spks=2)
    with pytest.raises(ValueError, match="needs 3"):
        STFTMaskingSeparator(masknet, num_spks=2, noise_target="extra_output")
    with pytest.raises(ValueError, match="power"):
        STFTMaskingSeparator(masknet, num_spks=2, power=2.0)
    with pytest.raises(ValueError, match="shape"):
        STFTMaskingSeparator(masknet, num_spks=2)(torch.randn(2, 1, 100))


def test_bf16_autocast_keeps_the_stft_in_float32_and_gradients_flow():
    model = STFTMaskingSeparator(ConstantMasks(2, 0.8), num_spks=2)
    mix = torch.randn(2, 3000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(mix)
    assert out.est_sources.dtype == torch.float32 and torch.isfinite(out.est_sources).all()
    out.est_sources.pow(2).mean().backward()
    assert model.masknet.value.grad is not None and model.masknet.value.grad.abs() > 0
    assert model.encoder_parameters() == []


def test_enhancer_mask_multiplies_the_separation_masks():
    mix = torch.randn(2, 3000)
    enhancer = ConstantMasks(1, 0.5)
    model = STFTMaskingSeparator(ConstantMasks(3, 1.0), num_spks=2, noise_target="extra_output", enhancer=enhancer)
    out = model(mix)
    assert model.has_enhancer and model.enhancement_shared_parameters() == [enhancer.value]
    assert torch.allclose(out.enhanced_w, 0.5 * out.mix_w)
    # enhancer 0.5 and unit separation masks on |X|^0.5: a spectrum gain of 0.25 on every output
    assert torch.allclose(out.est_sources[..., 0], 0.25 * mix, atol=1e-4)
    assert torch.allclose(out.est_noise, 0.25 * mix, atol=1e-4)
    # noise_input="mixture": the noise mask skips the enhancer
    model.noise_input = "mixture"
    out = model(mix)
    assert torch.allclose(out.est_noise, mix, atol=1e-4)
    assert torch.allclose(out.est_sources[..., 1], 0.25 * mix, atol=1e-4)
    assert torch.allclose(out.masked_reps[2], out.mix_w)


def test_without_enhancer_gradient_modulation_is_refused():
    model = STFTMaskingSeparator(ConstantMasks(2, 1.0), num_spks=2)
    assert not model.has_enhancer and model(torch.randn(1, 1000)).enhanced_w is None
    with pytest.raises(ValueError, match="no enhancer"):
        model.enhancement_shared_parameters()
    with pytest.raises(ValueError, match="noise_input"):
        STFTMaskingSeparator(ConstantMasks(2, 1.0), num_spks=2, noise_input="clean")


class RandomMasks(torch.nn.Module):
    """Mask network stand-in: fixed random non-negative masks, some bins 0 for every output."""

    def __init__(self, num_masks):
        super().__init__()
        self.num_masks = num_masks
        self.scale = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        gen = torch.Generator().manual_seed(0)
        masks = torch.randn((self.num_masks,) + tuple(x.shape), generator=gen).clamp_min(0)
        masks[:, :, :5] = 0  # the lowest bins: no output claims them
        return self.scale * masks


def test_shared_out_masks_add_up_to_the_mixture():
    torch.manual_seed(0)
    mix = torch.randn(2, 4001)
    model = STFTMaskingSeparator(RandomMasks(3), num_spks=2, noise_target="extra_output",
                                 mask_normalization="sum")
    out = model(mix)
    # speakers + noise = mixture, also where every mask is 0 (split evenly)
    assert torch.allclose(out.est_sources.sum(-1) + out.est_noise, mix, atol=1e-4)
    masks = out.masked_reps / out.mix_w.unsqueeze(0)
    assert torch.allclose(masks.pow(2).sum(0), torch.ones_like(out.mix_w), atol=1e-4)
    assert torch.allclose(masks[:, :, :5], torch.full_like(masks[:, :, :5], 3 ** -0.5), atol=1e-4)
    # a common scale of the masks changes (up to the 1e-6 floor) nothing once they are shared out
    model.masknet.scale.data.fill_(7.0)
    scaled = model(mix).est_noise
    assert (scaled - out.est_noise).pow(2).sum() < 1e-4 * out.est_noise.pow(2).sum()
    # without normalisation the same masks do not add up
    raw = STFTMaskingSeparator(RandomMasks(3), num_spks=2, noise_target="extra_output")(mix)
    assert not torch.allclose(raw.est_sources.sum(-1) + raw.est_noise, mix, atol=1e-2)


def test_shared_out_masks_train_under_autocast_and_bad_values_are_refused():
    from speechbrain.lobes.models.dual_path import Dual_Path_Model, SBRNNBlock

    block = SBRNNBlock(input_size=8, hidden_channels=4, num_layers=1, bidirectional=True)
    masknet = Dual_Path_Model(129, 8, block, block, num_layers=1, K=10, num_spks=3)
    model = STFTMaskingSeparator(masknet, num_spks=2, noise_target="extra_output", mask_normalization="sum")
    mix = torch.randn(2, 3000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(mix)
    (out.est_sources.pow(2).mean() + out.est_noise.pow(2).mean()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="mask_normalization"):
        STFTMaskingSeparator(masknet, num_spks=2, noise_target="extra_output", mask_normalization="softmax")


class RecordInput(torch.nn.Module):
    """Mask network stand-in that keeps its input and returns unit masks."""

    def __init__(self, num_masks):
        super().__init__()
        self.num_masks = num_masks
        self.seen = None

    def forward(self, x):
        self.seen = x
        return torch.ones((self.num_masks,) + tuple(x.shape))


def test_frequency_normalised_input_is_standardised_and_masks_still_act_on_the_mixture():
    torch.manual_seed(0)
    mix = torch.randn(2, 4000) * torch.tensor([[1.0], [30.0]])
    masknet = RecordInput(3)
    model = STFTMaskingSeparator(masknet, num_spks=2, noise_target="extra_output", input_normalization="frequency")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(mix)
    seen = masknet.seen
    assert seen.dtype == torch.float32 and seen.shape == out.mix_w.shape
    assert torch.allclose(seen.mean(-1), torch.zeros(2, 129), atol=1e-4)
    assert torch.allclose(seen.std(-1, unbiased=False), torch.ones(2, 129), atol=1e-3)
    # a 30-fold louder mixture gives (almost) the same input: the level is normalised away
    model(mix[:1] * 30.0)
    assert torch.allclose(masknet.seen[0], seen[0], atol=1e-3)
    # the masks act on the mixture's magnitude, not on the normalised input
    assert torch.allclose(out.est_sources[..., 0], mix, atol=1e-3 * 30)
    plain = RecordInput(3)
    STFTMaskingSeparator(plain, num_spks=2, noise_target="extra_output")(mix)
    assert torch.allclose(plain.seen, out.mix_w)
    with pytest.raises(ValueError, match="input_normalization"):
        STFTMaskingSeparator(plain, num_spks=2, input_normalization="global")

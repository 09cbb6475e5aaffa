"""Tests of nass.correction (GeCo / Fast-GeCo): SDEs, transform, score model, samplers,
EMA, training losses and correction.

Small on purpose (2 shared CPU cores): the learning tests use a micro U-Net on a
64-bin STFT (n_fft 126) of 1000 samples and run single-threaded (much faster than two
threads fighting other processes).
"""

import io
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from nass.correction import (
    BBEDSDE,
    load_corrector,
    save_corrector,
    OUVESDE,
    SDE_REGISTRY,
    ExponentialMovingAverage,
    GeCoModel,
    ScoreModel,
    SpecTransform,
    fast_geco_sample,
    get_sde,
    pc_sample,
)
from nass.losses.si_snr import si_snr


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def nmse_db(est, ref):
    return (10 * torch.log10(((est - ref).abs() ** 2).sum() / (ref.abs() ** 2).sum())).item()


def harmonic(batch, n, seed, sr=8000):
    """Voiced-speech-like test signals: 5 harmonics of a random f0, amplitude-modulated."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / sr
    rows = []
    for _ in range(batch):
        f0 = 100 + 100 * torch.rand(1, generator=g)
        s = sum(torch.sin(2 * math.pi * k * f0 * t + 6 * torch.rand(1, generator=g)) / k
                for k in range(1, 6))
        env = 0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t + 6 * torch.rand(1, generator=g))
        rows.append(s * env)
    return torch.stack(rows)


def micro_model(seed=0):
    torch.manual_seed(seed)
    net = ScoreModel(base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                     attn_resolutions=(), num_freqs=64, norm_num_groups=4)
    return GeCoModel(BBEDSDE(), net, SpecTransform(n_fft=126, hop_length=32))


def oracle_score(sde, x0):
    """Exact score (project convention, -(x - mean) / std^2) when the data is the point x0."""
    def score(x, t, y, m):
        mean, std = sde.marginal_prob(x0, t, y)
        return -(x - mean) / std[:, None, None] ** 2
    return score


# --------------------------------------------------------------------------- SDEs
def _ode_variance(sde, times):
    def rhs(t, v):
        dummy = torch.zeros(1, dtype=torch.cdouble)
        g = sde.sde(dummy, torch.tensor([t], dtype=torch.double), dummy)[1].item()
        decay = 2 / (1 - t) if isinstance(sde, BBEDSDE) else 2 * sde.gamma
        return [-decay * v[0] + g**2]
    sol = solve_ivp(rhs, (0.0, times[-1]), [0.0], t_eval=times, rtol=1e-10, atol=1e-13)
    return sol.y[0]


@pytest.mark.parametrize("sde", [BBEDSDE(), OUVESDE()], ids=["bbed", "ouve"])
def test_marginal_std_matches_variance_ode(sde):
    times = np.linspace(sde.t_eps, sde.T, 12)
    ode = _ode_variance(sde, times)
    x0 = torch.zeros(len(times), 1, dtype=torch.cdouble)
    _, std = sde.marginal_prob(x0, torch.tensor(times), x0)
    np.testing.assert_allclose(std.numpy() ** 2, ode, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("sde", [BBEDSDE(), OUVESDE()], ids=["bbed", "ouve"])
def test_marginal_mean_matches_drift_ode(sde):
    x0 = torch.tensor([[0.3 - 0.2j]], dtype=torch.cdouble)
    y = torch.tensor([[-0.5 + 0.7j]], dtype=torch.cdouble)

    def rhs(t, v):
        x = torch.tensor([[complex(v[0], v[1])]], dtype=torch.cdouble)
        d = sde.sde(x, torch.tensor([t], dtype=torch.double), y)[0][0, 0].item()
        return [d.real, d.imag]
    times = np.linspace(0.05, sde.T, 7)
    sol = solve_ivp(rhs, (0.0, sde.T), [0.3, -0.2], t_eval=times, rtol=1e-10, atol=1e-12)
    mean, _ = sde.marginal_prob(x0.expand(7, 1), torch.tensor(times), y.expand(7, 1))
    np.testing.assert_allclose(mean[:, 0].real.numpy(), sol.y[0], atol=1e-6)
    np.testing.assert_allclose(mean[:, 0].imag.numpy(), sol.y[1], atol=1e-6)
    if isinstance(sde, BBEDSDE):  # closed form (1 - t) x0 + t y
        ref = (1 - torch.tensor(times))[:, None] * x0 + torch.tensor(times)[:, None] * y
        torch.testing.assert_close(mean, ref)


@pytest.mark.parametrize("sde", [BBEDSDE(), OUVESDE()], ids=["bbed", "ouve"])
def test_euler_maruyama_paths_match_marginal(sde):
    """Simulating the forward SDE with complex noise reproduces marginal_prob (noise convention)."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((1, 20000), 0.4 + 0.1j, dtype=torch.cdouble)
    y = torch.full_like(x0, -0.3 + 0.2j)
    x, t_end, steps = x0.clone(), 0.6, 600
    dt = t_end / steps
    for i in range(steps):
        t = torch.tensor([i * dt], dtype=torch.double)
        f, g = sde.sde(x, t, y)
        x = x + f * dt + g * math.sqrt(dt) * torch.randn(x.shape, dtype=x.dtype, generator=gen)
    mean, std = sde.marginal_prob(x0, t_end, y)
    assert abs((x.mean() - mean.mean()).item()) < 0.02
    emp_std = ((x - x.mean()).abs() ** 2).mean().sqrt().item()
    assert emp_std == pytest.approx(std.item(), rel=0.03)


@pytest.mark.parametrize("sde", [BBEDSDE(), OUVESDE()], ids=["bbed", "ouve"])
def test_prior_sampling_shape_and_statistics(sde):
    y = (torch.randn(4, 64, 128, dtype=torch.cfloat) * 0.5).requires_grad_(False)
    xt = sde.prior_sampling(y.shape, y, generator=torch.Generator().manual_seed(0))
    assert xt.shape == y.shape and xt.dtype == y.dtype
    d = xt - y
    std_T = math.sqrt(sde.variance(torch.tensor(sde.T)).item())
    assert abs(d.mean().item()) < 0.01
    assert (d.abs() ** 2).mean().sqrt().item() == pytest.approx(std_T, rel=0.02)
    assert d.real.std().item() == pytest.approx(std_T / math.sqrt(2), rel=0.02)
    with pytest.raises(ValueError, match="shape"):
        sde.prior_sampling((4, 64, 127), y)


def test_sde_defaults_and_registry():
    b = BBEDSDE()
    assert (b.k, b.theta, b.T, b.t_eps, b.N) == (2.6, 0.52, 0.999, 0.03, 30)
    o = OUVESDE()
    assert (o.gamma, o.sigma_min, o.sigma_max, o.T, o.N) == (1.5, 0.05, 0.5, 1.0, 30)
    assert set(SDE_REGISTRY) == {"bbed", "ouve"}
    assert isinstance(get_sde("BBED", k=3.0), BBEDSDE) and get_sde("ouve").gamma == 1.5
    with pytest.raises(ValueError, match="bbed, ouve"):
        get_sde("sbve")
    with pytest.raises(TypeError):
        get_sde("bbed", kk=2.6)  # misspelt key fails loudly
    with pytest.raises(ValueError):
        BBEDSDE(T=1.0)
    with pytest.raises(ValueError):
        OUVESDE(sigma_min=0.5, sigma_max=0.05)
    x = torch.zeros(2, 3, dtype=torch.cfloat)
    with pytest.raises(ValueError, match="same shape"):
        b.marginal_prob(x, 0.5, torch.zeros(2, 4, dtype=torch.cfloat))
    with pytest.raises(ValueError, match="batch"):
        b.sde(x, torch.tensor([0.1, 0.2, 0.3]), x)


def test_reverse_sde_drift():
    sde = BBEDSDE()
    x, y = torch.randn(2, 5, dtype=torch.cfloat), torch.randn(2, 5, dtype=torch.cfloat)
    t = torch.tensor([0.3, 0.7])
    score = lambda x, t, y, m: torch.ones_like(x)  # noqa: E731
    rev, g = sde.reverse(score).sde(x, t, y, y)
    f, g0 = sde.sde(x, t, y)
    torch.testing.assert_close(rev, f - g0[:, None] ** 2)
    torch.testing.assert_close(g, g0)
    rev_pf, g_pf = sde.reverse(score, probability_flow=True).sde(x, t, y, y)
    torch.testing.assert_close(rev_pf, f - 0.5 * g0[:, None] ** 2)
    assert bool((g_pf == 0).all())


# ---------------------------------------------------------------------- transform
def test_transform_round_trip_and_formula():
    tr = SpecTransform()
    assert (tr.n_fft, tr.hop_length, tr.alpha, tr.beta, tr.num_freqs) == (510, 64, 0.5, 0.15, 256)
    wave = torch.randn(2, 16320)  # a 256-frame training crop
    spec = tr.stft(wave)
    assert spec.shape == (2, 256, 256) and spec.is_complex()
    assert (tr.istft(spec, 16320) - wave).abs().max().item() < 1e-4
    raw = torch.stft(wave, 510, 64, window=torch.hann_window(510, periodic=True),
                     center=True, return_complex=True)
    ref = 0.15 * raw.abs() ** 0.5 * torch.exp(1j * raw.angle())
    torch.testing.assert_close(spec, ref, atol=1e-5, rtol=1e-4)
    odd = torch.randn(1, 1001)
    assert (tr.istft(tr.stft(odd), 1001) - odd).abs().max().item() < 1e-4


def test_transform_bad_input_and_zero_gradient():
    tr = SpecTransform()
    with pytest.raises(ValueError, match="batch, time"):
        tr.stft(torch.randn(100))
    with pytest.raises(ValueError, match="256"):
        tr.istft(torch.zeros(1, 100, 10, dtype=torch.cfloat), 500)
    with pytest.raises(ValueError):
        SpecTransform(alpha=0)
    spec = torch.zeros(1, 256, 8, dtype=torch.cfloat, requires_grad=True)
    tr.istft(spec, 448).sum().backward()
    assert bool(torch.isfinite(spec.grad).all())


# -------------------------------------------------------------------- score model
def test_score_model_shapes_and_errors():
    torch.manual_seed(0)
    net = ScoreModel(base_channels=8, channel_mults=(1, 1, 1), num_res_blocks=1,
                     attn_resolutions=(32,), num_freqs=64, norm_num_groups=4)
    names = [type(b).__name__ for b in net.unet.down_blocks]
    assert names == ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"]  # F: 64, 32, 16
    assert net.unet.config.in_channels == 6 and net.unet.config.out_channels == 2
    x = torch.randn(2, 64, 12, dtype=torch.cfloat)
    s = net(x, torch.tensor([0.2, 0.9]), x, x)
    assert s.shape == x.shape and s.is_complex()
    # output parametrisation: -UNet(...)/t (diffusers divides by t for fourier embeddings)
    with torch.no_grad():
        inp = torch.stack((x.real, x.imag, x.real, x.imag, x.real, x.imag), 1)
        raw = net.unet(inp, torch.tensor([0.2, 0.9])).sample
    torch.testing.assert_close(s.detach(), -torch.complex(raw[:, 0], raw[:, 1]))
    with pytest.raises(ValueError, match="multiple of 4"):
        net(x[..., :10], torch.tensor([0.5, 0.5]), x[..., :10], x[..., :10])
    with pytest.raises(ValueError, match="F=64"):
        z = torch.randn(2, 32, 12, dtype=torch.cfloat)
        net(z, torch.tensor([0.5, 0.5]), z, z)
    with pytest.raises(ValueError, match="complex"):
        net(x.real, torch.tensor([0.5, 0.5]), x, x)
    with pytest.raises(ValueError, match="> 0"):
        net(x, torch.tensor([0.0, 0.5]), x, x)
    with pytest.raises(ValueError, match="divisible"):
        ScoreModel(channel_mults=(1, 1, 1, 1), num_freqs=100)


# ----------------------------------------------------------------------- samplers
@pytest.mark.parametrize("sde", [BBEDSDE(), OUVESDE()], ids=["bbed", "ouve"])
def test_pc_sampler_with_exact_score_recovers_x0(sde):
    """With the exact score of a point-mass data set, 30 PC steps turn y into x0."""
    torch.manual_seed(0)
    x0 = torch.randn(2, 32, 32, dtype=torch.cfloat) * 0.3
    y = x0 + torch.randn_like(x0) * 0.3
    gen = torch.Generator().manual_seed(1)
    out, nfe = pc_sample(sde, oracle_score(sde, x0), y, y, num_steps=30, snr=0.5,
                         corrector_steps=1, generator=gen)
    assert nfe == 60
    assert nmse_db(y, x0) > -1
    assert nmse_db(out, x0) < -30
    if isinstance(sde, BBEDSDE):  # a score off by a factor 2 fails: the test is discriminative
        double = lambda *a: 2 * oracle_score(sde, x0)(*a)  # noqa: E731
        assert nmse_db(pc_sample(sde, double, y, y, generator=gen)[0], x0) > -15


def test_pc_sampler_perfect_estimate_changes_little():
    """y = x0: the exact-score GeCo sampler returns y almost unchanged."""
    sde = BBEDSDE()
    torch.manual_seed(2)
    x0 = torch.randn(1, 32, 32, dtype=torch.cfloat) * 0.3
    out, _ = pc_sample(sde, oracle_score(sde, x0), x0, x0)
    assert nmse_db(out, x0) < -30


def test_pc_sampler_steps_times_and_shapes():
    sde = BBEDSDE()
    seen = []

    def score(x, t, y, m):
        seen.append(float(t[0]))
        return torch.zeros_like(x)
    y = torch.randn(3, 8, 16, dtype=torch.cfloat)
    out, nfe = pc_sample(sde, score, y, y, num_steps=7, corrector_steps=2)
    assert out.shape == y.shape and nfe == 7 * 3 == len(seen)
    times = sorted(set(seen), reverse=True)
    np.testing.assert_allclose(times, np.linspace(0.999, 0.03, 7), atol=1e-6)
    assert pc_sample(sde, score, y, y, num_steps=1, corrector_steps=0)[1] == 1
    with pytest.raises(ValueError):
        pc_sample(sde, score, y, y, num_steps=0)
    with pytest.raises(ValueError, match="same shape"):
        pc_sample(sde, score, y, y[..., :8])


def test_fast_geco_single_step_formula():
    """One step from s = 0.5: x_s = y + std(s) z, x0_hat = x_s - (f - g^2 s_theta) * 0.5."""
    sde = BBEDSDE()
    y = torch.randn(2, 8, 4, dtype=torch.cfloat)
    z = torch.randn_like(y)
    score = lambda x, t, y, m: 0.1 * x  # noqa: E731
    out = fast_geco_sample(sde, score, y, y, t_start=0.5, z=z)
    std = math.sqrt(sde.variance(torch.tensor(0.5)).item())
    xs = y + std * z
    g2 = 0.52 * 2.6  # theta k^(2 * 0.5)
    expected = xs - ((y - xs) / 0.5 - g2 * 0.1 * xs) * 0.5
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="t_start"):
        fast_geco_sample(sde, score, y, y, t_start=0.9999)
    with pytest.raises(ValueError, match="z must match"):
        fast_geco_sample(sde, score, y, y, z=z[..., :2])


# ---------------------------------------------------------------------------- EMA
def test_ema_update_store_restore_state_dict():
    lin = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in lin.parameters()]
    ema = ExponentialMovingAverage(lin.parameters(), decay=0.9, use_num_updates=False)
    with torch.no_grad():
        for p in lin.parameters():
            p.add_(1.0)
    ema.update(lin.parameters())
    for s, p0 in zip(ema.shadow_params, start):
        torch.testing.assert_close(s, p0 + 0.1)
    current = [p.detach().clone() for p in lin.parameters()]
    with ema.average_parameters(lin.parameters()):
        torch.testing.assert_close(lin.weight, start[0] + 0.1)
    torch.testing.assert_close(lin.weight.detach(), current[0])
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    other = ExponentialMovingAverage(torch.nn.Linear(3, 2).parameters(), decay=0.999)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.decay == 0.9 and other.num_updates == 1
    torch.testing.assert_close(other.shadow_params[0], ema.shadow_params[0])
    with pytest.raises(RuntimeError):
        ema.restore(lin.parameters())
    with pytest.raises(ValueError):
        other.load_state_dict({**ema.state_dict(), "shadow_params": [torch.zeros(1)]})
    warm = ExponentialMovingAverage(lin.parameters(), decay=0.999)
    assert warm.current_decay() == pytest.approx(2 / 11)  # torch_ema's use_num_updates


# ----------------------------------------------------------------- model / training
def test_dsm_training_reduces_loss():
    model = micro_model(seed=0)
    x = harmonic(2, 1000, seed=1)
    y = x + 0.3 * harmonic(2, 1000, seed=2)
    m = x + harmonic(2, 1000, seed=3)
    X, Y, M = [model.pad_frames(model.transform.stft(w)) for w in (x, y, m)]
    gen = torch.Generator().manual_seed(0)
    t_fix = torch.tensor([0.2, 0.7])
    z_fix = torch.randn(X.shape, dtype=X.dtype, generator=gen)
    with torch.no_grad():
        before = model.dsm_loss(X, Y, M, t=t_fix, z=z_fix).item()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(25):
        loss = model.dsm_loss(X, Y, M)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = model.dsm_loss(X, Y, M, t=t_fix, z=z_fix).item()
    assert after < 0.5 * before, (before, after)
    with pytest.raises(ValueError, match="one shape"):
        model.dsm_loss(X, Y, M[..., :4])


def _train_fast_geco(model, y, m, x, steps=40, lr=5e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.fast_geco_loss(y, m, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _si_snr_of_correction(model, y, m, ref):
    out = model.correct(y, m, mode="fast-geco", generator=torch.Generator().manual_seed(123))
    return si_snr(out, ref).mean().item()


def test_fast_geco_training_beats_the_estimate():
    """A few Fast-GeCo steps on a noisy estimate: the loss falls and the one-step output
    beats the estimate it was given."""
    model = micro_model(seed=0)
    x = harmonic(1, 1000, seed=0)
    y = x + 0.2 * torch.randn(1, 1000, generator=torch.Generator().manual_seed(9))
    m = x + harmonic(1, 1000, seed=5) + 0.3 * torch.randn(1, 1000)
    torch.manual_seed(0)
    losses = _train_fast_geco(model, y, m, x)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 10
    assert _si_snr_of_correction(model, y, m, x) > si_snr(y, x).item() + 3


def test_fast_geco_perfect_estimate_changes_little_after_training():
    """y = x0: untrained, one step from t = 0.5 ruins the estimate; after a few Fast-GeCo
    steps the output is close to the input again."""
    model = micro_model(seed=0)
    x = harmonic(1, 1000, seed=0)
    m = x + harmonic(1, 1000, seed=5) + 0.3 * torch.randn(1, 1000)
    before = _si_snr_of_correction(model, x, m, x)
    torch.manual_seed(0)
    _train_fast_geco(model, x, m, x)
    after = _si_snr_of_correction(model, x, m, x)
    assert before < 0 and after > 5, (before, after)


def test_correct_modes_scale_and_errors():
    model = micro_model(seed=0)
    y = harmonic(2, 700, seed=1)
    m = y + harmonic(2, 700, seed=2)
    for mode, steps in (("fast-geco", None), ("geco", 3)):
        out = model.correct(y, m, mode=mode, num_steps=steps,
                            generator=torch.Generator().manual_seed(0))
        assert out.shape == y.shape and bool(torch.isfinite(out).all())
        # peak normalisation is undone: scaling the inputs scales the output
        out3 = model.correct(3 * y, 3 * m, mode=mode, num_steps=steps,
                             generator=torch.Generator().manual_seed(0))
        assert ((out3 - 3 * out).norm() / (3 * out).norm()).item() < 1e-3
    # Fast-GeCo ignores num_steps (callers pass one value for both modes)
    a = model.correct(y, m, "fast-geco", 30, generator=torch.Generator().manual_seed(0))
    b = model.correct(y, m, "fast-geco", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    silent = model.correct(torch.zeros(1, 700), m[:1])
    assert bool(torch.isfinite(silent).all())
    with pytest.raises(ValueError, match="fast-geco, geco"):
        model.correct(y, m, mode="sgmse")
    with pytest.raises(ValueError, match="batch, time"):
        model.correct(y[0], m[0])
    with pytest.raises(ValueError, match="one shape"):
        model.correct(y, m[:, :600])
    bad = y.clone()
    bad[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.fast_geco_loss(bad, m, y)
    with pytest.raises(ValueError):
        GeCoModel(BBEDSDE(), model.score_model, model.transform, reverse_start=1.5)


def test_save_load_corrector_round_trip(tmp_path):
    model = micro_model(seed=0)
    ema = ExponentialMovingAverage(model.score_model.parameters(), decay=0.5, use_num_updates=False)
    with torch.no_grad():
        for p in model.score_model.parameters():
            p.add_(0.01)
    ema.update(model.score_model.parameters())
    save_corrector(model, str(tmp_path / "corr"), ema=ema)
    loaded = load_corrector(str(tmp_path / "corr"))
    assert loaded.transform.n_fft == 126 and loaded.frame_multiple == 2
    assert loaded.sde.config() == model.sde.config()
    torch.testing.assert_close(next(loaded.score_model.parameters()), ema.shadow_params[0])
    y = harmonic(1, 500, seed=1)
    with ema.average_parameters(model.score_model.parameters()):
        ref = model.correct(y, y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.correct(y, y, generator=torch.Generator().manual_seed(0)), ref)
    with pytest.raises(ValueError, match="corrector.json"):
        load_corrector(str(tmp_path / "missing"))


# ----------------------------------------------------------------- issue 16 item 5
def _identity_sampler(sde, score_fn, y, m, **kwargs):
    """A perfect "no change" corrector: the one-step output is the estimate itself."""
    return y


@pytest.mark.parametrize("length", [8000, 1000, 16321])
def test_correct_keeps_the_last_samples(monkeypatch, length):
    """Padding must not attenuate the tail: with an output spectrogram equal to the input,
    correct() returns the input at every sample (the old frame padding: -3.2 dB at the
    last sample of an 8000-sample signal, -1.2 dB 50 samples before)."""
    import nass.correction.model as model_mod

    monkeypatch.setattr(model_mod, "fast_geco_sample", _identity_sampler)
    model = GeCoModel(BBEDSDE(), ScoreModel.tiny(), SpecTransform())
    y = torch.randn(2, length, generator=torch.Generator().manual_seed(0))
    out = model.correct(y, 2 * y, mode="fast-geco")
    assert out.shape == y.shape
    err = (out - y).abs().max().item()
    assert err < 1e-4 * y.abs().max().item(), err
    assert model.waves_to_specs(y, y)[0].shape[-1] % model.frame_multiple == 0


def test_correct_does_not_depend_on_the_mixture_level():
    """The mixture is normalised by its own peak (as the reference's peak-1 files): a
    quiet separator or a loud mixture gives the network the same input."""
    model = micro_model(seed=0)
    y = 0.01 * harmonic(2, 700, seed=1)  # a quiet separator
    m = harmonic(2, 700, seed=2) + 100 * y
    outs = [model.correct(y, g * m, generator=torch.Generator().manual_seed(0)) for g in (1.0, 10.0)]
    torch.testing.assert_close(outs[0], outs[1])
    Y, M, X, norm = model.waves_to_specs(y, 10 * m, y)
    torch.testing.assert_close(norm, y.abs().amax(-1, keepdim=True))
    recovered = model.spec_to_wave(M, 700)
    torch.testing.assert_close(recovered.abs().amax(-1), torch.ones(2), atol=1e-4, rtol=0)


def test_forward_is_the_training_loss():
    """GeCoModel.forward computes the losses (what a DDP wrapper must see)."""
    model = micro_model(seed=0)
    x = harmonic(2, 1000, seed=1)
    y, m = x + 0.1 * harmonic(2, 1000, seed=2), x + harmonic(2, 1000, seed=3)
    for objective, method in (("dsm", model.dsm_loss_wave), ("fast-geco", model.fast_geco_loss)):
        torch.manual_seed(0)
        a = model(y, m, x, objective=objective)
        torch.manual_seed(0)
        torch.testing.assert_close(a, method(y, m, x))
    with pytest.raises(ValueError, match="objective"):
        model(y, m, x, objective="sgmse")


def test_score_model_under_bf16_autocast_returns_a_complex_score():
    net = ScoreModel.tiny()
    x = torch.randn(1, 256, 16, dtype=torch.cfloat)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, torch.tensor([0.5]), x, x)
    assert out.dtype == torch.cfloat and bool(torch.isfinite(torch.view_as_real(out)).all())

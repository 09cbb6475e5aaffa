"""Gradient modulation (Hu et al. 2023): projection, applied gradients, AMP paths."""

import pytest
import torch

from nass.losses.gradient_modulation import (
    modulated_backward,
    project_conflicting,
    shared_parameters,
)


def test_projection_removes_conflict_on_hand_made_vectors():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        g_ss = torch.randn(3, 5, generator=g)
        g_se = torch.randn(3, 5, generator=g)
        out, conflicted = project_conflicting(g_se, g_ss)
        dot = float((g_se * g_ss).sum())
        assert conflicted == (dot < 0)
        assert float((out * g_ss).sum()) >= -1e-5
        if conflicted:  # lands exactly on the normal plane
            assert float((out * g_ss).sum()) == pytest.approx(0.0, abs=1e-5)
            expected = g_se - dot / float((g_ss * g_ss).sum()) * g_ss
            assert torch.allclose(out, expected, atol=1e-6)


def test_aligned_or_zero_gradients_pass_unchanged():
    g_ss = torch.tensor([1.0, 2.0, 0.0])
    g_se = torch.tensor([0.5, -0.1, 3.0])  # dot = 0.3 > 0
    out, conflicted = project_conflicting(g_se, g_ss)
    assert not conflicted and torch.equal(out, g_se)
    out, conflicted = project_conflicting(g_se, torch.zeros(3))
    assert not conflicted and torch.equal(out, g_se)
    with pytest.raises(ValueError, match=r"\(3,\) and \(2,\)"):
        project_conflicting(g_se, torch.zeros(2))


def test_shared_parameters_unique_and_trainable():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    b.bias.requires_grad_(False)
    params = shared_parameters(a, b, a)
    assert len(params) == 3 and params[0] is a.weight


class Tiny(torch.nn.Module):
    """encoder -> enhancer -> separator; SE loss on the enhancer output."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = torch.nn.Linear(6, 8)
        self.enhancer = torch.nn.Linear(8, 8)
        self.separator = torch.nn.Linear(8, 4)

    def losses(self, x, clean, target):
        h = self.encoder(x)
        e = self.enhancer(h)
        loss_se = (e - self.encoder(clean)).pow(2).sum(-1).mean()
        loss_ss = (self.separator(e) - target).pow(2).mean()
        return loss_ss, loss_se

    def forward(self, x, clean, target):
        return self.losses(x, clean, target)

    def shared(self):
        return shared_parameters(self.encoder, self.enhancer)


def _data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g), torch.randn(5, 4, generator=g)


def _reference_grads(model, data, weight_se):
    """Two separate backward passes with cloned gradients, projected by hand."""
    model.zero_grad(set_to_none=True)
    loss_ss, loss_se = model.losses(*data)
    (weight_se * loss_se).backward(retain_graph=True)
    g_se = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    loss_ss.backward()
    g_ss = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    out, conflicts = {}, 0
    for name, ss in g_ss.items():
        if name.startswith("separator"):
            assert name not in g_se  # the SE loss does not reach the separator
            out[name] = ss
            continue
        se = g_se[name].flatten()
        dot = torch.dot(se, ss.flatten())
        if dot < 0:
            conflicts += 1
            se = se - dot / ss.flatten().pow(2).sum() * ss.flatten()
        out[name] = ss + se.view_as(ss)
    return out, g_ss, conflicts


def test_applied_grad_matches_hand_computed_reference():
    conflicts_seen = 0
    for seed in range(6):
        model, data = Tiny(seed), _data(seed + 10)
        expected, g_ss, conflicts = _reference_grads(model, data, weight_se=0.5)
        conflicts_seen += conflicts
        loss_ss, loss_se = model.losses(*data)
        stats = modulated_backward(loss_ss, loss_se, model.shared(), weight_se=0.5)
        assert stats["num_shared"] == 4 and stats["num_conflicted"] == conflicts
        assert stats["conflict_fraction"] == conflicts / 4
        assert -1.0 <= stats["mean_cosine"] <= 1.0
        for name, p in model.named_parameters():
            assert torch.allclose(p.grad, expected[name], atol=1e-6), name
            if name.startswith("separator"):
                assert torch.equal(p.grad, g_ss[name])  # exactly g_SS
    assert conflicts_seen > 0  # the seeds exercise the projection branch


def test_se_loss_changes_shared_parameters_after_a_step():
    data = _data()
    stepped = {}
    for mode in ("ss_only", "gm"):
        model = Tiny(0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss_ss, loss_se = model.losses(*data)
        if mode == "gm":
            modulated_backward(loss_ss, loss_se, model.shared(), weight_se=0.1)
        else:
            loss_ss.backward()
        opt.step()
        stepped[mode] = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the aliasing bug (g_SE == g_SS) would make GM a rescaled SS step, not this:
    for name in ("encoder.weight", "enhancer.weight"):
        assert not torch.allclose(stepped["gm"][name], stepped["ss_only"][name])
    assert torch.equal(stepped["gm"]["separator.weight"], stepped["ss_only"]["separator.weight"])


def test_accumulated_grads_are_kept():
    model, data = Tiny(3), _data(4)
    expected, _, _ = _reference_grads(model, data, weight_se=0.1)
    prior = {n: torch.full_like(p, 0.25) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = prior[n].clone()
    modulated_backward(*model.losses(*data), model.shared(), weight_se=0.1)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, prior[n] + expected[n], atol=1e-6), n


def test_grad_scale_path_matches_fp32():
    model, data = Tiny(2), _data(5)
    loss_ss, loss_se = model.losses(*data)
    modulated_backward(loss_ss, loss_se, model.shared(), weight_se=0.1)
    fp32 = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    scale = 65536.0
    loss_ss, loss_se = model.losses(*data)
    stats = modulated_backward(
        loss_ss * scale, loss_se * scale, model.shared(), weight_se=0.1, grad_scale=scale
    )
    assert stats["num_shared"] == 4
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad / scale, fp32[n], rtol=1e-5, atol=1e-7), n


def test_works_with_torch_grad_scaler():
    model, data = Tiny(2), _data(5)
    loss_ss, loss_se = model.losses(*data)
    modulated_backward(loss_ss, loss_se, model.shared(), weight_se=0.1)
    fp32 = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loss_ss, loss_se = model.losses(*data)
    modulated_backward(
        scaler.scale(loss_ss), scaler.scale(loss_se), model.shared(),
        weight_se=0.1, grad_scale=scaler.get_scale(),
    )
    scaler.unscale_(opt)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, fp32[n], rtol=1e-5, atol=1e-7), n


def test_non_finite_scaled_gradients_stay_non_finite():
    model, data = Tiny(0), _data()
    loss_ss, loss_se = model.losses(*data)
    modulated_backward(loss_ss * float("inf"), loss_se, model.shared(), grad_scale=1.0)
    assert not torch.isfinite(model.encoder.weight.grad).all()  # the scaler would skip


def test_runs_under_bf16_autocast_on_cpu():
    model, data = Tiny(1), _data(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_ss, loss_se = model.losses(*data)
    stats = modulated_backward(loss_ss, loss_se, model.shared())
    assert stats["num_shared"] == 4
    for p in model.parameters():
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()


def test_rejects_bad_arguments():
    model, data = Tiny(0), _data()
    loss_ss, loss_se = model.losses(*data)
    with pytest.raises(ValueError, match="loss_ss must be a scalar"):
        modulated_backward(loss_ss.expand(3), loss_se, model.shared())
    with pytest.raises(ValueError, match="loss_se must be a scalar"):
        modulated_backward(loss_ss, loss_se.detach(), model.shared())
    with pytest.raises(ValueError, match="empty"):
        modulated_backward(loss_ss, loss_se, [])
    with pytest.raises(ValueError, match="grad_scale"):
        modulated_backward(loss_ss, loss_se, model.shared(), grad_scale=0.0)



def _ddp_worker(rank, world, init_file, out_file):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        model = Tiny(0)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        loss_ss, loss_se = ddp(*_data(20 + rank))  # different data on each rank
        modulated_backward(loss_ss, loss_se, model.shared(), weight_se=0.5)
        if rank == 0:
            torch.save({n: p.grad for n, p in model.named_parameters()}, out_file)
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_projects_the_all_reduced_gradients(tmp_path):
    """Two gloo ranks: the result is GM applied to the rank-averaged g_SS and g_SE."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    out_file = tmp_path / "grads.pt"
    # fork: the children reuse the imported torch (spawn re-imports it: ~20 s here)
    torch.multiprocessing.start_processes(
        _ddp_worker,
        args=(2, str(tmp_path / "init"), str(out_file)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    got = torch.load(out_file, weights_only=True)
    model = Tiny(0)
    g_ss, g_se = {}, {}
    for rank in range(2):  # per-rank gradients, averaged by hand
        model.zero_grad(set_to_none=True)
        loss_ss, loss_se = model.losses(*_data(20 + rank))
        (0.5 * loss_se).backward(retain_graph=True)
        for n, p in model.named_parameters():
            if p.grad is not None:
                g_se[n] = g_se.get(n, 0) + p.grad.clone() / 2
        model.zero_grad(set_to_none=True)
        loss_ss.backward()
        for n, p in model.named_parameters():
            g_ss[n] = g_ss.get(n, 0) + p.grad.clone() / 2
    for n in g_ss:
        expected = g_ss[n]
        if n in g_se:
            expected = expected + project_conflicting(g_se[n], g_ss[n])[0]
        assert torch.allclose(got[n], expected, atol=1e-6), n

"""PatchNCE (NASS): criterion values, gradients, per-utterance sampling, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from nass.losses.patch_nce import PatchNCELoss, PatchSampler, nass_contrastive_loss, nce_chance_level
from nass.losses.pit import apply_perm


def _orthonormal(n, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    return q[:, :n].T.contiguous()  # n orthonormal rows


def test_loss_near_zero_when_query_is_positive_and_negatives_orthogonal():
    k, dim = 8, 32
    basis = _orthonormal(2 * k, dim)
    q = basis[:k].unsqueeze(0)  # [1, K, D]
    neg = basis[k:].unsqueeze(0)  # orthogonal to every query
    loss = PatchNCELoss()(q, q.clone(), neg)
    # log(1 + M exp(-1/tau)) with M = K - 1
    expected = math.log1p((k - 1) * math.exp(-1 / 0.07))
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(expected, abs=2e-6)  # float32 ulp at 1/tau
    assert loss.item() < 1e-5


@pytest.mark.parametrize("exclude, num_neg", [(True, 7), (False, 8)])
def test_loss_is_log_m_plus_one_when_query_unrelated(exclude, num_neg):
    k, dim = 8, 32
    basis = _orthonormal(k + 2, dim)
    q = basis[:1].expand(k, dim).unsqueeze(0)  # all queries the same direction
    pos = basis[1:2].expand(k, dim).unsqueeze(0)  # orthogonal to q
    neg = basis[2:].unsqueeze(0)  # orthogonal to q
    loss = PatchNCELoss(exclude_same_position=exclude)(q, pos, neg)
    assert loss.item() == pytest.approx(math.log(num_neg + 1), rel=1e-5)


def test_same_position_negative_is_excluded():
    # the only negative aligned with the query sits at the query's own position
    k, dim = 4, 16
    basis = _orthonormal(2 * k, dim)
    q = basis[:k].unsqueeze(0)
    neg = q.clone()
    pos = basis[k:].unsqueeze(0)  # orthogonal: logit 0
    excl = PatchNCELoss(exclude_same_position=True)(q, pos, neg)
    incl = PatchNCELoss(exclude_same_position=False)(q, pos, neg)
    assert excl.item() == pytest.approx(math.log(k), rel=1e-5)  # 1 + (K-1) zeros
    assert incl.item() > 10  # the co-located negative dominates (1/tau = 14.3)


def test_criterion_rejects_mismatched_shapes():
    crit = PatchNCELoss()
    a = torch.randn(2, 8, 16)
    with pytest.raises(ValueError, match=r"\(2, 8, 16\), \(2, 7, 16\)"):
        crit(a, torch.randn(2, 7, 16), a)
    with pytest.raises(ValueError, match="batch, K, D"):
        crit(a[0], a[0], a[0])
    with pytest.raises(ValueError, match="temperature"):
        PatchNCELoss(temperature=0)


def test_detach_keys_stops_gradients_to_positive_and_negatives():
    q = F.normalize(torch.randn(2, 6, 8), dim=-1).requires_grad_()
    p = F.normalize(torch.randn(2, 6, 8), dim=-1).requires_grad_()
    n = F.normalize(torch.randn(2, 6, 8), dim=-1).requires_grad_()
    PatchNCELoss(detach_keys=True)(q, p, n).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert p.grad is None and n.grad is None
    q.grad = None
    PatchNCELoss(detach_keys=False)(q, p, n).sum().backward()
    assert p.grad.abs().sum() > 0 and n.grad.abs().sum() > 0


@pytest.mark.parametrize("layout", ["cell", "frame"])
def test_sampler_shapes_norms_and_ids(layout):
    torch.manual_seed(0)
    sampler = PatchSampler(in_channels=8, proj_dim=16, num_patches=12, patch_layout=layout)
    feats = torch.randn(3, 8, 30)
    proj, ids = sampler(feats)
    assert proj.shape == (3, 12, 16) and ids.shape == (3, 12)
    assert torch.allclose(proj.norm(dim=-1), torch.ones(3, 12), atol=1e-5)
    positions = sampler.num_positions(8, 30)
    assert positions == (4 * 26 if layout == "cell" else 30)
    for row in ids:  # distinct positions, in range, drawn per utterance
        assert len(set(row.tolist())) == 12 and row.max() < positions
    assert not torch.equal(ids[0], ids[1])
    # same ids -> same projection; a list shares the ids
    again, _ = sampler(feats, patch_ids=ids)
    assert torch.allclose(again, proj)
    both, ids2 = sampler([feats, feats * 2], patch_ids=ids)
    assert ids2 is ids and torch.allclose(both[0], proj)
    # fewer positions than num_patches: all of them
    small = PatchSampler(in_channels=8, num_patches=500, patch_layout=layout)
    assert small(torch.randn(1, 8, 30))[1].shape == (1, positions)


def test_sampler_rejects_bad_inputs():
    sampler = PatchSampler(in_channels=8, proj_dim=16, num_patches=4)
    with pytest.raises(ValueError, match="in_channels=8"):
        sampler(torch.randn(2, 7, 30))
    with pytest.raises(ValueError, match="one shape"):
        sampler([torch.randn(2, 8, 30), torch.randn(2, 8, 31)])
    with pytest.raises(ValueError, match="patch_ids"):
        sampler(torch.randn(2, 8, 30), patch_ids=torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        sampler(torch.randn(2, 8, 30), patch_ids=torch.full((2, 4), 10_000))
    with pytest.raises(ValueError, match="no patch position"):
        PatchSampler(in_channels=8, num_patches=4, patch_layout="cell")(torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="no patch position"):
        sampler(torch.randn(2, 8, 0))
    with pytest.raises(ValueError, match="patch_layout"):
        PatchSampler(in_channels=8, patch_layout="grid")


def _inputs(batch=2, spks=2, n=8, frames=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, spks, n, frames, generator=g),
        torch.randn(batch, spks, n, frames, generator=g),
        torch.randn(batch, n, frames, generator=g),
    )


@pytest.mark.parametrize("layout", ["cell", "frame"])
def test_batch_equals_utterances_one_at_a_time(layout):
    torch.manual_seed(0)
    sampler = PatchSampler(in_channels=8, proj_dim=16, num_patches=10, patch_layout=layout)
    crit = PatchNCELoss()
    q, p, n = _inputs()
    ids = sampler.sample_ids(2, 8, 40)
    batched = nass_contrastive_loss(q, p, n, sampler, crit, patch_ids=ids)
    singles = [
        nass_contrastive_loss(
            q[b : b + 1], p[b : b + 1], n[b : b + 1], sampler, crit, patch_ids=ids[b : b + 1]
        )
        for b in range(2)
    ]
    assert batched.item() == pytest.approx(sum(s.item() for s in singles) / 2, rel=1e-5)
    # negatives stay within the utterance: changing utterance 1's noise leaves
    # utterance 0's loss unchanged
    n2 = n.clone()
    n2[1] = torch.randn(8, 40)
    per0 = nass_contrastive_loss(q[:1], p[:1], n2[:1], sampler, crit, patch_ids=ids[:1])
    assert per0.item() == pytest.approx(singles[0].item(), rel=1e-6)


def test_contrastive_loss_formula_lambda_over_num_spks():
    torch.manual_seed(0)
    sampler = PatchSampler(in_channels=8, proj_dim=16, num_patches=10)
    crit = PatchNCELoss()
    q, p, n = _inputs(spks=3)
    ids = sampler.sample_ids(2, 8, 40)
    got = nass_contrastive_loss(q, p, n, sampler, crit, lambda_nce=2.0, patch_ids=ids)
    pn, _ = sampler(n, patch_ids=ids)
    manual = 0.0
    for j in range(3):
        pq, _ = sampler(q[:, j], patch_ids=ids)
        pp, _ = sampler(p[:, j], patch_ids=ids)
        manual += crit(pq, pp, pn).mean()
    assert got.item() == pytest.approx((2.0 / 3) * manual.item(), rel=1e-5)


def test_gradients_reach_mask_network_and_projection():
    torch.manual_seed(0)
    batch, spks, n_filt, frames = 2, 2, 8, 40
    mix_w = torch.relu(torch.randn(batch, n_filt, frames))
    masknet = torch.nn.Conv1d(n_filt, n_filt * (spks + 1), 1)  # stand-in mask network
    sampler = PatchSampler(in_channels=n_filt, proj_dim=16, num_patches=10)
    masks = torch.sigmoid(masknet(mix_w)).view(batch, spks + 1, n_filt, frames)
    sep_h = mix_w.unsqueeze(1) * masks  # [B, S+1, N, L]
    perm = torch.tensor([[1, 0], [0, 1]])
    est = sep_h[:, :spks].permute(0, 2, 3, 1)  # [B, N, L, S]
    query = apply_perm(est, perm).permute(0, 3, 1, 2)
    assert torch.equal(query[0, 0], sep_h[0, 1]) and torch.equal(query[1, 0], sep_h[1, 0])
    targets = torch.relu(torch.randn(batch, spks, n_filt, frames))
    loss = nass_contrastive_loss(query, targets, sep_h[:, spks], sampler, PatchNCELoss())
    assert torch.isfinite(loss) and loss.dim() == 0
    loss.backward()
    assert masknet.weight.grad is not None and masknet.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in sampler.mlp.parameters())


def test_contrastive_loss_rejects_mismatched_shapes():
    sampler = PatchSampler(in_channels=8, proj_dim=16, num_patches=4)
    q, p, n = _inputs()
    with pytest.raises(ValueError, match=r"\(2, 2, 8, 40\), \(2, 2, 8, 39\)"):
        nass_contrastive_loss(q, p[..., :39], n, sampler, PatchNCELoss())
    with pytest.raises(ValueError, match="noise_rep"):
        nass_contrastive_loss(q, p, n[:1], sampler, PatchNCELoss())
    with pytest.raises(ValueError, match="num_spks"):
        nass_contrastive_loss(q[:, 0], p[:, 0], n, sampler, PatchNCELoss())


def test_runs_under_bf16_autocast():
    sampler = PatchSampler(in_channels=8, proj_dim=16, num_patches=6, patch_layout="frame")
    q, p, n = _inputs()
    q.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nass_contrastive_loss(q, p, n, sampler, PatchNCELoss())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert q.grad is not None


def test_cell_windows_equal_full_map_convolution():
    """Convolving only the gathered windows gives exactly the whole-map values."""
    torch.manual_seed(3)
    sampler = PatchSampler(in_channels=12, num_patches=40, patch_layout="cell")
    maps = torch.randn(3, 12, 57, requires_grad=True)
    ids = sampler.sample_ids(3, 12, 57)
    fast = sampler._cells(maps, ids)
    full = sampler._cells_full(maps, ids)
    assert fast.shape == (3, 40, 1)
    assert torch.allclose(fast, full, atol=1e-6)
    g_fast = torch.autograd.grad(fast.sum(), maps)[0]
    g_full = torch.autograd.grad(full.sum(), maps)[0]
    assert torch.allclose(g_fast, g_full, atol=1e-6)


def _near_identity(batch=2, spks=2, n=16, frames=120, seed=0):
    """Queries almost equal to their positives (positive = query + 0.1 noise), as in the issue."""
    g = torch.Generator().manual_seed(seed)
    q = torch.relu(torch.randn(batch, spks, n, frames, generator=g))
    p = q + 0.1 * torch.randn(q.shape, generator=g)
    noise = torch.relu(torch.randn(batch, n, frames, generator=g))
    return q.requires_grad_(), p, noise


def test_default_layout_separates_positives_from_negatives_cell_does_not():
    """The reference 'cell' patch (one scalar -> Linear(1, D)) sits at chance even when each
    query nearly equals its positive; the default layout does not (issue: 11.08 vs 3.71)."""
    torch.manual_seed(0)
    k = 64
    chance = 2.0 * nce_chance_level(k)  # lambda_nce = 2, two speakers
    results = {}
    for layout in ("cell", None):
        kwargs = {} if layout is None else {"patch_layout": layout}
        sampler = PatchSampler(in_channels=16, proj_dim=64, num_patches=k, **kwargs)
        q, p, n = _near_identity()
        loss = nass_contrastive_loss(q, p, n, sampler, PatchNCELoss())
        loss.backward()
        results[layout] = (loss.item(), q.grad.abs().mean().item())
    assert PatchSampler(16).patch_layout == "frame"
    cell_loss, cell_grad = results["cell"]
    frame_loss, frame_grad = results[None]
    assert cell_loss > 0.9 * chance
    assert frame_loss < 0.6 * chance
    assert frame_grad > 2 * cell_grad


@pytest.mark.parametrize("layout, tracks", [("frame", True), ("cell", False)])
def test_loss_tracks_how_close_the_estimate_is_to_the_clean_speech(layout, tracks):
    """As an estimate moves from unrelated to the reference towards it, the default layout's
    loss falls from about chance to well below it; the reference 'cell' layout stays flat."""
    torch.manual_seed(1)
    k = 64
    chance = nce_chance_level(k)
    sampler = PatchSampler(in_channels=16, proj_dim=64, num_patches=k, patch_layout=layout)
    g = torch.Generator().manual_seed(2)
    p = torch.relu(torch.randn(2, 2, 16, 120, generator=g))
    n = torch.relu(torch.randn(2, 16, 120, generator=g))
    start = torch.relu(torch.randn(2, 2, 16, 120, generator=g))
    ids = sampler.sample_ids(2, 16, 120)
    curve = []
    for a in (0.0, 0.5, 0.8, 0.95):
        q = (1 - a) * start + a * p
        _, stats = nass_contrastive_loss(q, p, n, sampler, PatchNCELoss(), patch_ids=ids, return_stats=True)
        curve.append(stats["nce"])
    assert stats["nce_chance"] == pytest.approx(chance) and stats["num_patches"] == k
    if tracks:
        assert curve[-1] < 0.5 * chance
        assert curve == sorted(curve, reverse=True)
    else:
        assert min(curve) > 0.9 * chance


def test_padded_frames_are_never_sampled():
    sampler = PatchSampler(in_channels=4, num_patches=8)
    valid = torch.tensor([60, 14, 30])
    for _ in range(20):
        ids = sampler.sample_ids(3, 4, 60, num_valid_frames=valid)
        assert ids.shape == (3, 8)
        assert bool((ids < valid.unsqueeze(1)).all())  # only frames of the signal
        assert all(len(set(row.tolist())) == 8 for row in ids)
    cell = PatchSampler(in_channels=6, num_patches=20, patch_layout="cell")
    ids = cell.sample_ids(2, 6, 40, num_valid_frames=torch.tensor([40, 12]))
    assert bool((ids[1] % 36 < 8).all())
    # fewer real positions than K: K shrinks to the shortest utterance's count
    assert sampler.sample_ids(2, 4, 60, num_valid_frames=torch.tensor([60, 5])).shape == (2, 5)


def test_zero_padding_does_not_change_the_loss_of_the_real_part():
    """Positions are drawn in the real frames, so padding a map adds no signal-free patches."""
    torch.manual_seed(0)
    sampler = PatchSampler(in_channels=8, proj_dim=16, num_patches=10)
    q, p, n = _inputs(batch=1, frames=40)
    pad = lambda x: torch.nn.functional.pad(x, (0, 30))  # noqa: E731
    torch.manual_seed(5)
    real = nass_contrastive_loss(q, p, n, sampler, PatchNCELoss())
    torch.manual_seed(5)
    padded = nass_contrastive_loss(pad(q), pad(p), pad(n), sampler, PatchNCELoss(), num_valid_frames=torch.tensor([40]))
    assert torch.isfinite(padded)
    ids = sampler.sample_ids(1, 8, 70, num_valid_frames=torch.tensor([40]))
    assert int(ids.max()) < 40
    assert abs(padded.item() - real.item()) < 0.5 * real.item()


def test_chance_level():
    assert nce_chance_level(256) == pytest.approx(math.log(256))
    assert nce_chance_level(256, exclude_same_position=False) == pytest.approx(math.log(257))

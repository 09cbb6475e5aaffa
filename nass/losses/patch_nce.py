"""Patch-wise contrastive loss (PatchNCE) of NASS.

Zhang et al., "Noise-Aware Speech Separation with Contrastive Learning", ICASSP 2024,
arXiv 2305.10761. The loss itself follows CUT (Park et al., "Contrastive Learning for
Unpaired Image-to-Image Translation", ECCV 2020, Eq. 2-3):

    l(q, p, n) = -log( exp(q.p / tau) / (exp(q.p / tau) + sum_m exp(q.n_m / tau)) )

with three streams of encoder-domain representations ``[batch, N, L]`` (``N`` encoder
filters, ``L`` frames) sampled at the *same* ``K`` random positions:

* query    ``q``: the predicted speaker's masked representation at the decoder input,
  ``mix_w * mask_a``;
* positive ``p``: ``Encoder(s_a)``, the encoder output of the reference speaker matched
  to ``a`` by PIT;
* negatives ``n``: the predicted noise's masked representation ``mix_w * mask_noise``
  at the other ``K - 1`` positions.

Total NASS objective (paper Sec. 2.3; reference ``recipes/LibriMix/separation/train.py``)::

    loss = SI-SNR_PIT + (lambda_NCE / num_spks) * sum_a mean_patches l(q_a, p_a, n),  lambda_NCE = 2

Facts taken from the reference code ``TzuchengChang/NASS`` (read, not copied):

* ``speechbrain/nnet/patchnce.py``: positives and negatives are ``.detach()``-ed; logits
  ``[q.p, q.n_1 .. q.n_K] / nce_T`` with the same-position negative filled with ``-10``
  (before dividing by ``nce_T = 0.07``, i.e. ``exp(-142.9)``: excluded in practice);
  cross-entropy with target 0; ``nce_includes_all_negatives_from_minibatch: False`` so
  negatives come from the same utterance.
* ``speechbrain/lobes/models/networks.py`` ``PatchSampleF`` (``use_mlp: True``,
  ``nc: 256``): two ``Conv2d(1, 1, 3)`` with a ReLU between them treat the ``[N, L]`` map
  as a one-channel image; a patch is one cell of the convolved map (a scalar with a 5x5
  receptive field), projected by ``Linear(1, 256) -> ReLU -> Linear(256, 256)`` and
  L2-normalised (``x / (||x|| + 1e-7)``); ``num_patches: 256``. The same positions are
  used for all streams *and all utterances of the batch*.
* ``train.py``: the query streams are reordered with ``perms[0]`` (the first utterance's
  permutation) for the whole batch -- a defect; here callers reorder each utterance with
  its own permutation (:func:`nass.losses.pit.apply_perm`) before calling
  :func:`nass_contrastive_loss`.

Choices made here (see the docstrings): positions are drawn independently per utterance
(CUT notes the shared-position shortcut as a "potential issue") and only among the frames
of the real signal (zero-padded frames give identical, signal-free query, positive and
negative patches); the same-position negative is removed exactly (``-inf``) instead of
``-10`` (identical up to ``1e-62``).

Patch layout (``patch_layout``, a YAML key of every NASS recipe). The paper (Sec. 2.2,
Fig. 2) samples query, positive and ``M`` negatives from ``h_ŝa``, ``h_sa``, ``h_n̂`` and
compares them by cosine similarity. The reference ``PatchSampleF`` (``"cell"`` here) makes
a patch one *scalar* of the ``[N, L]`` map projected ``Linear(1, D) -> ReLU -> Linear(D, D)``
and L2-normalised: the direction of the result depends only on the sign of that scalar, so
all patches of one sign map to nearly the same unit vector and the loss cannot tell a
query's positive from its negatives. Measured (``tests/test_patch_nce.py``): with queries
almost equal to their positives (positive = query + 0.1 noise) ``"cell"`` gives 11.08 =
``2 ln 256`` (chance) with ``|dL/dq| = 5.6e-4``; on the demo corpus 15 epochs stay at chance.
The default is therefore ``"frame"`` (CUT's design, Park et al. 2020: a patch is one
frame's ``N``-dimensional feature vector after two ``Conv1d`` over time), whose loss falls
well below chance as the separator trains; ``patch_layout: cell`` remains for exact
reproduction of the reference.
"""

import math

import torch
from torch import nn

PATCH_LAYOUTS = ("cell", "frame")


class PatchSampler(nn.Module):
    """Sample ``K`` patch positions per utterance and project them (shared head).

    The parameters are an ordinary :class:`torch.nn.Module`: put the sampler in the
    Brain's ``modules`` so it is optimised and checkpointed. It is not needed at
    inference.

    Parameters
    ----------
    in_channels : int
        ``N``, the number of encoder filters (channels of the ``[batch, N, L]`` maps).
    proj_dim : int
        Output dimension ``D`` of the projection (reference ``nc: 256``); also the MLP's
        hidden width, as in the reference.
    num_patches : int
        ``K``, positions drawn per utterance (reference 256). If a map has fewer
        positions, all of them are used.
    patch_layout : str
        ``"frame"`` (default) or ``"cell"`` (reference ``PatchSampleF``, for exact
        reproduction; its loss stays at chance, see the module docstring).
        ``"cell"``: the map is a one-channel image, two
        ``Conv2d(1, 1, kernel_size)`` with a ReLU between, a patch is one cell (a scalar)
        projected ``Linear(1, D) -> ReLU -> Linear(D, D)``; positions range over
        ``(N - 2(k-1)) * (L - 2(k-1))`` cells.
        ``"frame"`` (CUT-style, Park et al. 2020): a patch is one frame's ``N``-vector
        of the map divided by the map's RMS, projected ``Linear(N, D) -> ReLU -> Linear(D,
        D)``; positions range over all ``L`` frames. The RMS division matters: encoder
        features are small (about 1e-2), so without it the head's biases dominate and every
        patch projects to the same direction (measured cosine 0.998 between all patches,
        loss at chance).
    kernel_size : int
        ``"cell"`` only: kernel of the two (unpadded) convolutions (reference 3).
    eps : float
        Added to the L2 norm before dividing (reference 1e-7).

    Raises
    ------
    ValueError
        On an unknown ``patch_layout`` or non-positive sizes.

    Example
    -------
    >>> import torch
    >>> sampler = PatchSampler(in_channels=16, proj_dim=32, num_patches=8)
    >>> feats = torch.randn(2, 16, 50)
    >>> proj, ids = sampler(feats)
    >>> proj.shape, ids.shape
    (torch.Size([2, 8, 32]), torch.Size([2, 8]))
    >>> round(float(proj.detach().norm(dim=-1).mean()), 4)
    1.0
    >>> [p.shape for p in sampler([feats, feats], patch_ids=ids)[0]]
    [torch.Size([2, 8, 32]), torch.Size([2, 8, 32])]
    """

    def __init__(
        self,
        in_channels,
        proj_dim=256,
        num_patches=256,
        patch_layout="frame",
        kernel_size=3,
        eps=1e-7,
    ):
        super().__init__()
        if patch_layout not in PATCH_LAYOUTS:
            raise ValueError(
                f"PatchSampler: patch_layout must be one of {PATCH_LAYOUTS}, "
                f"got {patch_layout!r}"
            )
        for name, value in (
            ("in_channels", in_channels),
            ("proj_dim", proj_dim),
            ("num_patches", num_patches),
            ("kernel_size", kernel_size),
        ):
            if int(value) < 1:
                raise ValueError(f"PatchSampler: {name} must be >= 1, got {value}")
        self.in_channels = int(in_channels)
        self.proj_dim = int(proj_dim)
        self.num_patches = int(num_patches)
        self.patch_layout = patch_layout
        self.kernel_size = int(kernel_size)
        self.eps = eps
        if patch_layout == "cell":
            self.conv = nn.Sequential(
                nn.Conv2d(1, 1, self.kernel_size),
                nn.ReLU(),
                nn.Conv2d(1, 1, self.kernel_size),
            )
            feat_dim = 1
        else:
            self.conv = None
            feat_dim = self.in_channels
        self.mlp = nn.Sequential(
            nn.Linear(feat_dim, self.proj_dim),
            nn.ReLU(),
            nn.Linear(self.proj_dim, self.proj_dim),
        )

    def num_positions(self, num_channels, num_frames):
        """Number of patch positions of a ``[*, num_channels, num_frames]`` map.

        Parameters
        ----------
        num_channels, num_frames : int
            ``N`` and ``L``.

        Returns
        -------
        int
            Cells left after the two convolutions (``"cell"``) or frames (``"frame"``).

        Example
        -------
        >>> PatchSampler(16, num_patches=4, patch_layout="cell").num_positions(16, 50)
        552
        >>> PatchSampler(16, num_patches=4).num_positions(16, 50)
        50
        """
        if self.patch_layout == "frame":
            return max(num_frames, 0)
        shrink = self._shrink()
        return max(num_channels - shrink, 0) * max(num_frames - shrink, 0)

    def _shrink(self):
        """Frames (and channels) lost to the unpadded convolutions of the cell layout."""
        return 2 * (self.kernel_size - 1) if self.patch_layout == "cell" else 0

    def sample_ids(
        self, batch_size, num_channels, num_frames, device=None, generator=None, num_valid_frames=None
    ):
        """Draw ``K`` distinct positions independently for each utterance.

        Parameters
        ----------
        batch_size, num_channels, num_frames : int
            ``B``, ``N``, ``L`` of the maps to sample.
        device : torch.device or None
            Where the ids are created.
        generator : torch.Generator or None
            For reproducible draws (must live on ``device``).
        num_valid_frames : torch.Tensor or None
            ``[batch]`` frames of each map that hold signal (the rest is zero padding of a
            shorter utterance); positions whose receptive field reaches into the padding
            are drawn only when an utterance has fewer than ``K`` others. None: all frames.

        Returns
        -------
        torch.Tensor
            ``[batch, K]`` long, ``K = min(num_patches, positions of the shortest map)``.

        Example
        -------
        >>> s = PatchSampler(16, num_patches=4)
        >>> s.sample_ids(3, 16, 50).shape
        torch.Size([3, 4])
        >>> ids = s.sample_ids(2, 16, 50, num_valid_frames=torch.tensor([50, 10]))
        >>> bool(ids[1].max() < 10)
        True
        """
        positions = self.num_positions(num_channels, num_frames)
        if positions < 1:
            raise ValueError(
                f"PatchSampler: a map of {num_channels} channels x {num_frames} frames has "
                f"no patch position ({self.patch_layout!r} layout, kernel_size "
                f"{self.kernel_size}); use longer inputs or a smaller kernel_size"
            )
        scores = torch.rand(batch_size, positions, device=device, generator=generator)
        k = min(self.num_patches, positions)
        if num_valid_frames is not None:
            shrink = self._shrink()
            valid = (num_valid_frames.to(device=scores.device, dtype=torch.long) - shrink).clamp(min=0)
            width = num_frames - shrink  # frame columns of the convolved map
            column = torch.arange(positions, device=scores.device) % width
            real = column.unsqueeze(0) < valid.unsqueeze(1)  # [B, positions]
            scores = torch.where(real, scores, scores - 2.0)  # padded positions rank last
            k = min(k, max(int(real.sum(dim=1).min()), 1))
        return scores.topk(k, dim=1).indices

    def forward(self, features, patch_ids=None, generator=None):
        """Project the patches of one map, or of several maps at the same positions.

        Parameters
        ----------
        features : torch.Tensor or list of torch.Tensor
            ``[batch, N, L]`` encoder-domain maps; a list/tuple of such maps of one shape
            is sampled at the same positions (one set per utterance).
        patch_ids : torch.Tensor or None
            ``[batch, K]`` long flat positions (as returned); drawn if None.
        generator : torch.Generator or None
            Used only when the ids are drawn.

        Returns
        -------
        projected : torch.Tensor or list of torch.Tensor
            ``[batch, K, proj_dim]`` L2-normalised along the last axis (a list when a
            list was given).
        patch_ids : torch.Tensor
            ``[batch, K]`` long.

        Raises
        ------
        ValueError
            If a map is not ``[batch, in_channels, L]``, the maps of a list differ in
            shape, or ``patch_ids`` is not ``[batch, K]`` within range.
        """
        is_list = isinstance(features, (list, tuple))
        maps = list(features) if is_list else [features]
        if not maps:
            raise ValueError("PatchSampler: got an empty list of feature maps")
        first = maps[0]
        for m in maps:
            if m.dim() != 3 or m.shape[1] != self.in_channels or m.shape != first.shape:
                raise ValueError(
                    "PatchSampler: expected feature maps [batch, in_channels="
                    f"{self.in_channels}, frames] of one shape, got "
                    f"{[tuple(x.shape) for x in maps]}"
                )
        batch, channels, frames = first.shape
        positions = self.num_positions(channels, frames)
        if patch_ids is None:
            patch_ids = self.sample_ids(
                batch, channels, frames, device=first.device, generator=generator
            )
        else:
            if (
                patch_ids.dim() != 2
                or patch_ids.shape[0] != batch
                or patch_ids.dtype not in (torch.int64, torch.int32)
            ):
                raise ValueError(
                    f"PatchSampler: patch_ids must be an integer tensor [batch={batch}, K], "
                    f"got {tuple(patch_ids.shape)} {patch_ids.dtype}"
                )
            if patch_ids.numel() and (
                int(patch_ids.min()) < 0 or int(patch_ids.max()) >= positions
            ):
                raise ValueError(
                    f"PatchSampler: patch_ids out of range [0, {positions}) for maps "
                    f"{tuple(first.shape)}; were they drawn for another input shape?"
                )
            patch_ids = patch_ids.to(device=first.device, dtype=torch.long)
        stacked = torch.cat(maps, dim=0) if len(maps) > 1 else first
        ids = patch_ids.repeat(len(maps), 1)  # [R*B, K], map-major like the cat
        projected = self._project(stacked, ids).split(batch, dim=0)
        if is_list:
            return list(projected), patch_ids
        return projected[0], patch_ids

    def _project(self, maps, ids):
        """``maps`` ``[B, N, L]``, ``ids`` ``[B, K]`` -> ``[B, K, D]`` unit vectors."""
        if self.patch_layout == "cell":
            patches = self._cells(maps, ids)  # [B, K, 1]
        else:
            # each map divided by its RMS: the head then sees features of order one, not
            # ~1e-2 values that its biases would swamp (all patches -> one direction)
            rms = maps.detach().pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
            grid = (maps / (rms + self.eps)).transpose(1, 2)  # [B, L, N]
            index = ids.unsqueeze(-1).expand(-1, -1, grid.shape[-1])
            patches = grid.gather(1, index)  # [B, K, N]
        out = self.mlp(patches)
        return out / (out.norm(dim=-1, keepdim=True) + self.eps)


    def _cells(self, maps, ids):
        """The two-convolution cell values at ``ids`` only: ``[B, N, L]``, ``[B, K]`` -> ``[B, K, 1]``.

        A cell of the convolved map depends only on the ``R x R`` input window below it
        (``R = 2 * kernel_size - 1``), so the windows at the sampled positions are
        gathered and convolved alone: the same values as convolving the whole map
        (:meth:`_cells_full`, kept for the tests) at a ``K / positions`` fraction of
        the cost.
        """
        batch, channels, frames = maps.shape
        reach = 2 * (self.kernel_size - 1)
        width = frames - reach  # columns of the convolved map
        rows, cols = ids // width, ids % width  # top-left corner of each window
        offsets = torch.arange(reach + 1, device=maps.device)
        window = (offsets.view(-1, 1) * frames + offsets.view(1, -1)).flatten()  # [R*R]
        index = (rows * frames + cols).unsqueeze(-1) + window  # [B, K, R*R]
        k = ids.shape[1]
        windows = maps.flatten(1).gather(1, index.flatten(1))  # [B, K*R*R]
        windows = windows.view(batch * k, 1, reach + 1, reach + 1)
        return self.conv(windows).view(batch, k, 1)

    def _cells_full(self, maps, ids):
        """Reference implementation of :meth:`_cells`: convolve the whole map, then gather."""
        grid = self.conv(maps.unsqueeze(1)).flatten(1)  # [B, H*W]
        return grid.gather(1, ids).unsqueeze(-1)


class PatchNCELoss(nn.Module):
    """InfoNCE over patches: each query against its positive and the noise patches.

    For utterance ``b`` and patch ``k`` the logits are
    ``[q_k . p_k, q_k . n_1, ..., q_k . n_K] / temperature`` with target index 0; the
    negatives are the noise patches *of the same utterance* (never of other utterances).
    Computed in float32 whatever the input dtype, with autocast disabled inside (under
    ``torch.autocast`` the dot products would otherwise run in fp16 / bf16).

    Parameters
    ----------
    temperature : float
        ``tau`` (reference ``nce_T: 0.07``).
    detach_keys : bool
        Stop gradients through positives and negatives (default True, as the reference
        and CUT do). The loss then only moves the query -- the separator's speaker
        representation, the intent of the paper (pull the predicted speech towards the
        clean speech, away from the predicted noise) -- and cannot be lowered by moving
        the targets' encoding or the noise estimate instead. False lets gradients reach
        the encoder through ``Encoder(s_a)`` and the noise mask; an experiment option.
    exclude_same_position : bool
        Drop the negative at the query's own position (``M = K - 1`` negatives). The
        reference fills it with ``-10`` before ``/ tau``, a CUT habit (there, the
        diagonal *is* the positive); here it is removed exactly. False keeps all ``K``
        noise patches, including the co-located one (``M = K``).

    Example
    -------
    >>> import torch
    >>> crit = PatchNCELoss()
    >>> q = torch.nn.functional.normalize(torch.randn(2, 8, 16), dim=-1)
    >>> crit(q, q, torch.zeros(2, 8, 16)).shape
    torch.Size([2])
    """

    def __init__(self, temperature=0.07, detach_keys=True, exclude_same_position=True):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"PatchNCELoss: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.detach_keys = bool(detach_keys)
        self.exclude_same_position = bool(exclude_same_position)

    def forward(self, query, positive, negatives):
        """Per-utterance loss (mean over patches).

        Parameters
        ----------
        query : torch.Tensor
            ``[batch, K, D]`` (normally L2-normalised).
        positive : torch.Tensor
            ``[batch, K, D]``, ``positive[b, k]`` pairs with ``query[b, k]``.
        negatives : torch.Tensor
            ``[batch, K, D]``, the noise patches of the same utterances and positions.

        Returns
        -------
        torch.Tensor
            ``[batch]`` float32: mean over the ``K`` patches of the cross-entropy.
            Between about 0 (query = positive, negatives orthogonal) and
            ``log(M + 1)`` when the query is unrelated to every key.

        Raises
        ------
        ValueError
            If the three tensors are not of one 3-D shape.
        """
        if query.dim() != 3 or query.shape != positive.shape or query.shape != negatives.shape:
            raise ValueError(
                "PatchNCELoss: query, positive and negatives must all be [batch, K, D], got "
                f"{tuple(query.shape)}, {tuple(positive.shape)}, {tuple(negatives.shape)}"
            )
        if self.detach_keys:
            positive = positive.detach()
            negatives = negatives.detach()
        q, p, n = query.float(), positive.float(), negatives.float()
        # autocast would run the bmm in fp16 / bf16 even on fp32 inputs: with unit vectors
        # divided by tau = 0.07 the logits reach +-14.3, where bf16 keeps 2-3 digits
        with torch.autocast(device_type=q.device.type, enabled=False):
            l_pos = (q * p).sum(dim=-1, keepdim=True)  # [B, K, 1]
            l_neg = torch.bmm(q, n.transpose(1, 2))  # [B, K, K]
            if self.exclude_same_position:
                eye = torch.eye(l_neg.shape[1], dtype=torch.bool, device=l_neg.device)
                l_neg = l_neg.masked_fill(eye, -math.inf)
            logits = torch.cat([l_pos, l_neg], dim=-1) / self.temperature  # [B, K, 1+K]
            loss = torch.logsumexp(logits, dim=-1) - logits[..., 0]
            return loss.mean(dim=-1)


def nce_chance_level(num_patches, exclude_same_position=True):
    """InfoNCE value of a query unrelated to every key: ``ln(M + 1)`` nats.

    Parameters
    ----------
    num_patches : int
        ``K`` sampled positions; ``M = K - 1`` negatives with ``exclude_same_position``,
        else ``M = K``.
    exclude_same_position : bool
        As :class:`PatchNCELoss`.

    Returns
    -------
    float
        The chance level of one :class:`PatchNCELoss` term (``ln 256 = 5.545`` for the
        reference's 256 patches); the weighted NASS term's chance level is ``lambda_nce``
        times it.

    Example
    -------
    >>> round(nce_chance_level(256), 3)
    5.545
    """
    negatives = num_patches - 1 if exclude_same_position else num_patches
    return math.log(negatives + 1)


def nass_contrastive_loss(
    query_reps,
    positive_reps,
    noise_rep,
    sampler,
    criterion,
    lambda_nce=2.0,
    patch_ids=None,
    num_valid_frames=None,
    return_stats=False,
):
    """NASS contrastive term: ``(lambda_nce / num_spks) * sum_a mean_{b,k} l(q_a, p_a, n)``.

    One set of ``K`` positions is drawn per utterance and shared by the query, positive
    and noise streams (and by all speakers of that utterance). Add the result to the
    mean PIT SI-SNR loss.

    Parameters
    ----------
    query_reps : torch.Tensor
        ``[batch, num_spks, N, L]``: the predicted speakers' masked representations
        (``mix_w * mask``, decoder input) **already reordered per utterance by the PIT
        permutation**, so that ``query_reps[b, j]`` is the estimate matched to reference
        ``j``. With SpeechBrain's ``sep_h`` ``[num_spks(+1), B, N, L]`` and ``perm`` from
        :func:`nass.losses.pit.pit_si_snr`::

            est = sep_h[:num_spks].permute(1, 2, 3, 0)            # [B, N, L, S]
            query_reps = apply_perm(est, perm).permute(0, 3, 1, 2)  # [B, S, N, L]

    positive_reps : torch.Tensor
        ``[batch, num_spks, N, L]``: ``Encoder(targets[..., j])`` in reference order.
    noise_rep : torch.Tensor
        ``[batch, N, L]``: the predicted noise's masked representation (the extra slot).
    sampler : PatchSampler
        Shared projection head (or a ``DistributedDataParallel`` wrapping one).
    criterion : PatchNCELoss
        Per-utterance InfoNCE.
    lambda_nce : float
        Weight (paper and reference: 2).
    patch_ids : torch.Tensor or None
        ``[batch, K]`` positions to use (drawn when None; tests pass them).
    num_valid_frames : torch.Tensor or None
        ``[batch]`` frames of real signal per utterance (see
        :meth:`PatchSampler.sample_ids`); used when the positions are drawn.
    return_stats : bool
        Also return ``{"nce": unweighted mean InfoNCE (nats), "nce_chance": its chance
        level, "num_patches": K}`` for logging.

    Returns
    -------
    torch.Tensor or (torch.Tensor, dict)
        Scalar (float32), and the statistics with ``return_stats``.

    Raises
    ------
    ValueError
        If the shapes do not match ``[B, S, N, L]``, ``[B, S, N, L]``, ``[B, N, L]``.

    Example
    -------
    >>> import torch
    >>> sampler = PatchSampler(in_channels=8, proj_dim=16, num_patches=10)
    >>> q = torch.randn(2, 2, 8, 40, requires_grad=True)
    >>> loss = nass_contrastive_loss(q, torch.randn(2, 2, 8, 40), torch.randn(2, 8, 40),
    ...                              sampler, PatchNCELoss())
    >>> loss.shape
    torch.Size([])
    >>> loss.backward(); q.grad.shape
    torch.Size([2, 2, 8, 40])
    """
    if (
        query_reps.dim() != 4
        or positive_reps.shape != query_reps.shape
        or noise_rep.dim() != 3
        or noise_rep.shape != (query_reps.shape[0], *query_reps.shape[2:])
    ):
        raise ValueError(
            "nass_contrastive_loss: expected query_reps and positive_reps [batch, num_spks, "
            "N, L] and noise_rep [batch, N, L], got "
            f"{tuple(query_reps.shape)}, {tuple(positive_reps.shape)}, "
            f"{tuple(noise_rep.shape)}"
        )
    batch, num_spks, channels, frames = query_reps.shape
    if patch_ids is None:
        # under torchrun the sampler is wrapped in DistributedDataParallel: its methods are
        # on `.module`, while its forward goes through the wrapper (gradient all-reduce)
        base = getattr(sampler, "module", sampler)
        patch_ids = base.sample_ids(
            batch, channels, frames, device=query_reps.device, num_valid_frames=num_valid_frames
        )
    maps = [query_reps[:, j] for j in range(num_spks)]
    maps += [positive_reps[:, j] for j in range(num_spks)]
    maps.append(noise_rep)
    projected, _ = sampler(maps, patch_ids=patch_ids)
    noise = projected[-1]
    total = 0.0
    for j in range(num_spks):
        total = total + criterion(projected[j], projected[num_spks + j], noise).mean()
    loss = total * (lambda_nce / num_spks)
    if not return_stats:
        return loss
    k = int(patch_ids.shape[1])
    stats = {
        "nce": float(total.detach()) / num_spks,
        "nce_chance": nce_chance_level(k, getattr(criterion, "exclude_same_position", True)),
        "num_patches": k,
    }
    return loss, stats

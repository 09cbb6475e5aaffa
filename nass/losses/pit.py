"""Permutation-invariant training (PIT) over the speakers, chosen per utterance.

Yu et al., "Permutation invariant training of deep models for speaker-independent
multi-talker speech separation", ICASSP 2017. Only the speaker slots are permuted;
a noise estimate (NASS, Zhang et al. 2024) is a fixed extra slot scored separately
(see :func:`nass.losses.si_snr.neg_si_snr`), never part of the permutation.

Unlike the NASS reference code (``TzuchengChang/NASS``, ``recipes/LibriMix/separation/train.py``),
which reorders later loss terms with the first utterance's permutation (``perms[0]``)
for the whole batch, the permutation here is chosen and returned for each utterance.
"""

import itertools

import torch

from nass.losses.si_snr import si_snr


def pairwise_si_snr(est_sources, targets):
    """SI-SNR (dB) of every estimate against every reference.

    Parameters
    ----------
    est_sources : torch.Tensor
        ``[batch, time, num_spks]``.
    targets : torch.Tensor
        ``[batch, time, num_spks]``.

    Returns
    -------
    torch.Tensor
        ``[batch, num_spks (estimate), num_spks (reference)]``.

    Example
    -------
    >>> import torch
    >>> s = torch.randn(1, 800, 2)
    >>> m = pairwise_si_snr(s, s)
    >>> bool(m[0, 0, 0] > m[0, 0, 1])
    True
    """
    _check(est_sources, targets)
    est = est_sources.transpose(1, 2).unsqueeze(2)  # [B, S_est, 1, T]
    ref = targets.transpose(1, 2).unsqueeze(1)  # [B, 1, S_ref, T]
    est, ref = torch.broadcast_tensors(est, ref)
    return si_snr(est, ref)


def pit_si_snr(est_sources, targets):
    """Negative SI-SNR loss with the best speaker permutation of each utterance.

    Parameters
    ----------
    est_sources : torch.Tensor
        Estimated speakers ``[batch, time, num_spks]`` (no noise slot).
    targets : torch.Tensor
        Reference speakers ``[batch, time, num_spks]``.

    Returns
    -------
    loss : torch.Tensor
        ``[batch]``: negative SI-SNR (dB) averaged over speakers, best permutation.
    perm : torch.Tensor
        ``[batch, num_spks]`` long: ``perm[b, j]`` is the index of the estimate matched
        to reference ``j`` in utterance ``b``; ``est_sources[b, :, perm[b]]`` is aligned
        with ``targets[b]`` (see :func:`apply_perm`).

    Raises
    ------
    ValueError
        If the shapes differ or are not 3-D.

    Example
    -------
    >>> import torch
    >>> s = torch.randn(2, 1600, 2)
    >>> est = torch.stack([s[0, :, [1, 0]], s[1]])   # utterance 0 swapped
    >>> loss, perm = pit_si_snr(est, s)
    >>> perm.tolist()
    [[1, 0], [0, 1]]
    >>> bool((loss < -60).all())
    True
    """
    num_spks = est_sources.shape[-1]
    matrix = pairwise_si_snr(est_sources, targets)  # [B, S_est, S_ref]
    perms = torch.tensor(
        list(itertools.permutations(range(num_spks))), device=matrix.device
    )  # [P, S]: perms[p, j] = estimate index for reference j
    ref_idx = torch.arange(num_spks, device=matrix.device)
    # scores[b, p] = mean_j matrix[b, perms[p, j], j]
    scores = matrix[:, perms, ref_idx].mean(dim=-1)  # [B, P]
    best = scores.argmax(dim=-1)
    loss = -scores.gather(1, best.unsqueeze(1)).squeeze(1)
    return loss, perms[best]


def apply_perm(est_sources, perm):
    """Reorder the speaker axis of each utterance by its own permutation.

    Parameters
    ----------
    est_sources : torch.Tensor
        ``[batch, ..., num_spks]`` (speakers on the last axis).
    perm : torch.Tensor
        ``[batch, num_spks]`` long, as returned by :func:`pit_si_snr`.

    Returns
    -------
    torch.Tensor
        Same shape; ``out[b, ..., j] = est_sources[b, ..., perm[b, j]]``.

    Example
    -------
    >>> import torch
    >>> x = torch.arange(4.).view(2, 1, 2)
    >>> apply_perm(x, torch.tensor([[1, 0], [0, 1]])).tolist()
    [[[1.0, 0.0]], [[2.0, 3.0]]]
    """
    index = perm.view(perm.shape[0], *([1] * (est_sources.dim() - 2)), perm.shape[1])
    index = index.expand(*est_sources.shape[:-1], perm.shape[1])
    return est_sources.gather(-1, index)


def _check(est_sources, targets):
    if est_sources.dim() != 3 or est_sources.shape != targets.shape:
        raise ValueError(
            "expected est_sources and targets of the same shape [batch, time, num_spks], "
            f"got {tuple(est_sources.shape)} and {tuple(targets.shape)}"
        )

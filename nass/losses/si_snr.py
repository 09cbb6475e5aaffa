"""Scale-invariant signal-to-noise ratio (SI-SNR), the project's only implementation.

Every loss and metric in ``nass`` that needs SI-SNR calls :func:`si_snr`.

Definition (Le Roux et al., "SDR - half-baked or well done?", ICASSP 2019, Eq. 2-4)::

    s_target = <s_hat, s> s / ||s||^2          (after removing the means)
    e_noise  = s_hat - s_target
    SI-SNR   = 10 log10(||s_target||^2 / ||e_noise||^2)

An epsilon is added to every denominator and inside the logarithm, so an all-zero
reference or estimate yields a finite (very negative or zero-ish) value instead of NaN.
"""

import torch

EPS = 1e-8


def si_snr(est, ref, eps=EPS):
    """SI-SNR in dB between estimated and reference signals along the last axis.

    Parameters
    ----------
    est : torch.Tensor
        Estimated signals, shape ``[..., time]``.
    ref : torch.Tensor
        Reference signals, same shape as ``est``.
    eps : float
        Added to every denominator and inside the logarithm (default 1e-8). With an
        all-zero reference the result is finite (about ``10 log10(eps / (||est||^2 + eps))``),
        never NaN.

    Returns
    -------
    torch.Tensor
        SI-SNR in dB, shape ``[...]`` (the leading dimensions of the input).

    Raises
    ------
    ValueError
        If the shapes differ.

    Example
    -------
    >>> import torch
    >>> ref = torch.randn(2, 8000)
    >>> si_snr(ref, ref).shape
    torch.Size([2])
    >>> bool((si_snr(ref, ref) > 60).all())
    True
    >>> bool(torch.isfinite(si_snr(torch.randn(8000), torch.zeros(8000))))
    True
    """
    if est.shape != ref.shape:
        raise ValueError(
            f"si_snr: est and ref must have the same shape, got {tuple(est.shape)} "
            f"and {tuple(ref.shape)}"
        )
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    dot = (est * ref).sum(dim=-1, keepdim=True)
    ref_energy = (ref**2).sum(dim=-1, keepdim=True) + eps
    s_target = dot / ref_energy * ref
    e_noise = est - s_target
    ratio = ((s_target**2).sum(dim=-1) + eps) / ((e_noise**2).sum(dim=-1) + eps)
    return 10 * torch.log10(ratio)


def neg_si_snr(est, ref, eps=EPS):
    """Negative SI-SNR (dB), the usual separation training loss.

    Parameters
    ----------
    est, ref : torch.Tensor
        Shape ``[..., time]``.
    eps : float
        See :func:`si_snr`.

    Returns
    -------
    torch.Tensor
        ``-si_snr(est, ref)``, shape ``[...]``.

    Example
    -------
    >>> import torch
    >>> x = torch.randn(3, 400)
    >>> bool((neg_si_snr(x, x) < -60).all())
    True
    """
    return -si_snr(est, ref, eps=eps)

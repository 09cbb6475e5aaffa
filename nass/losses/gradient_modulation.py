"""Gradient modulation (GM) for a unified enhancement + separation network.

Hu et al., "Unifying Speech Enhancement and Separation with Gradient Modulation for
End-to-End Noise-Robust Speech Separation", ICASSP 2023, arXiv 2302.11131, Sec. 2.3.
For every parameter tensor of the *shared* part (encoder + enhancement network), with
``g_SE`` the gradient of ``weight_se * loss_se`` and ``g_SS`` the gradient of
``loss_ss``::

    if g_SE . g_SS < 0:   g_SE <- g_SE - (g_SE . g_SS / ||g_SS||^2) g_SS
    applied gradient = g_SS + g_SE

so the enhancement gradient never opposes the separation gradient (the same projection
as PCGrad, Yu et al., NeurIPS 2020, applied one way). Parameters outside the shared part
(separator, decoder) get ``g_SS`` only; in the reference the SE loss
``MSE_sum(enh_mix_w, Encoder(clean_mix))`` does not reach them.

Facts from the reference ``YUCHEN005/Unified-Enhance-Separation``,
``recipes/LibriMix/separation/train_unified_gm.py`` (read, not copied): projection per
parameter tensor of ``Encoder`` and ``EnhanceNet``, on flattened tensors, test
``dot < 0``, no epsilon; ``weight_se: 0.1`` (``hparams/sepformer-libri2mix-unified-gm.yaml``);
clipping (``clip_grad_norm: 5``) after the modulation. Its defects, avoided here: it
stores ``params.grad.data`` and then calls ``optimizer.zero_grad()``, which under its
pinned torch 1.8 zeroes that same tensor in place (``set_to_none=False``), so the stored
"SE gradient" is lost (zeroed) and then aliases ``.grad`` while the SS backward
accumulates into it: after it, ``g_SE == g_SS``, the dot product is positive (never a
conflict), and the applied ``g_SS + g_SE`` is ``2 g_SS`` -- g_SE is dropped and g_SS
doubled, so the published GM runs may have had no SE supervision at all. Here ``g_SE``
comes from :func:`torch.autograd.grad`, a separate tensor. Its AMP branch drops
``weight_se``; here it is always applied.
"""

import torch

DEFAULT_EPS = 1e-12


def shared_parameters(*modules):
    """Unique parameters requiring grad of the given modules, in order.

    Parameters
    ----------
    *modules : torch.nn.Module
        E.g. the encoder and the enhancement network (a DDP-wrapped module works too).

    Returns
    -------
    list of torch.nn.Parameter
        Each parameter once (shared/tied weights de-duplicated).

    Example
    -------
    >>> import torch
    >>> enc = torch.nn.Linear(4, 4)
    >>> len(shared_parameters(enc, enc, torch.nn.Linear(4, 2)))
    4
    """
    seen = set()
    params = []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def _project(g_se, g_ss, eps):
    """Tensor-only projection (no host sync). Returns (g_se_mod, dot, cosine) in fp32."""
    a = g_se.float()
    b = g_ss.float()
    dot = (a * b).sum()
    norm_b = (b * b).sum()
    coef = torch.clamp(dot, max=0.0) / (norm_b + eps)
    cosine = dot / (a.norm() * norm_b.sqrt() + eps)
    return a - coef * b, dot, cosine


def project_conflicting(g_se, g_ss, eps=DEFAULT_EPS):
    """Project ``g_se`` on the normal plane of ``g_ss`` when they conflict.

    Parameters
    ----------
    g_se : torch.Tensor
        SE gradient of one parameter tensor (any shape).
    g_ss : torch.Tensor
        SS gradient, same shape.
    eps : float
        Added to ``||g_ss||^2`` (a zero ``g_ss`` has ``dot = 0``: no projection).

    Returns
    -------
    g_se_modulated : torch.Tensor
        ``g_se - min(g_se.g_ss, 0) / ||g_ss||^2 * g_ss`` in ``g_se``'s dtype (computed in
        float32); afterwards ``g_se_modulated . g_ss >= 0`` (up to rounding).
    conflicted : bool
        Whether ``g_se . g_ss < 0`` (this reads the value back: a host sync).

    Raises
    ------
    ValueError
        If the shapes differ.

    Example
    -------
    >>> import torch
    >>> g, c = project_conflicting(torch.tensor([-1.0, 1.0]), torch.tensor([1.0, 0.0]))
    >>> g.tolist(), c
    ([0.0, 1.0], True)
    >>> project_conflicting(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]))[1]
    False
    """
    if g_se.shape != g_ss.shape:
        raise ValueError(
            f"project_conflicting: g_se and g_ss must have the same shape, got "
            f"{tuple(g_se.shape)} and {tuple(g_ss.shape)}"
        )
    modulated, dot, _ = _project(g_se, g_ss, eps)
    return modulated.to(g_se.dtype), bool(dot < 0)


def modulated_backward(
    loss_ss,
    loss_se,
    shared_params,
    weight_se=0.1,
    grad_scale=None,
    process_group=None,
    eps=DEFAULT_EPS,
):
    """Backward pass of the unified SE+SS loss with gradient modulation.

    Replaces ``(loss_ss + weight_se * loss_se).backward()``. Steps:

    1. ``g_SE = autograd.grad(weight_se * loss_se, shared_params, retain_graph=True,
       allow_unused=True)`` -- fresh tensors (no aliasing); an unused parameter has
       ``g_SE = 0``.
    2. Under :mod:`torch.distributed` (initialised, world size > 1) the ``g_SE`` are
       averaged with one explicit ``all_reduce`` (``autograd.grad`` bypasses DDP's
       reducer).
    3. ``loss_ss.backward()`` -- under DDP this all-reduces ``.grad`` as usual, so the
       projection below uses the *all-reduced* ``g_SS`` and ``g_SE``: every rank applies
       the same modulated gradient.
    4. For each shared tensor: ``.grad = g_SS + project(g_SE, g_SS)``. Gradients already
       in ``.grad`` before the call (accumulation) are kept and added back: only this
       call's ``g_SS`` is projected against. Non-shared parameters keep ``g_SS`` only.

    Clip the gradients afterwards (the caller), as the reference does.

    Mixed precision (contract): with a ``torch.amp.GradScaler``, pass the *scaled*
    losses (``scaler.scale(loss_ss)``, ``scaler.scale(loss_se)``) and
    ``grad_scale=scaler.get_scale()``. Both gradients are divided by ``grad_scale`` in
    float32 before the dot products -- the projection is scale-equivariant, but
    ``dot`` and ``||g_SS||^2`` of scaled gradients grow with ``grad_scale^2`` (2^32 for
    the default 65536) and can overflow float32 -- and the result is written back
    multiplied by ``grad_scale``, so ``scaler.unscale_`` / ``scaler.step`` (and their
    inf/NaN check: a non-finite gradient stays non-finite) work unchanged. With bf16
    autocast (no scaler) leave ``grad_scale=None``.

    Parameters
    ----------
    loss_ss : torch.Tensor
        Scalar separation loss (already reduced over the batch).
    loss_se : torch.Tensor
        Scalar enhancement loss, *unweighted*.
    shared_params : iterable of torch.nn.Parameter
        Encoder + enhancement network parameters (:func:`shared_parameters`).
    weight_se : float
        Weight of the SE loss (reference 0.1).
    grad_scale : float or torch.Tensor or None
        The GradScaler scale the two losses were multiplied by (see above).
    process_group : torch.distributed.ProcessGroup or None
        Group for the ``g_SE`` all-reduce (default: the world).
    eps : float
        Added to ``||g_SS||^2`` and to the cosine's denominator.

    Returns
    -------
    dict
        ``num_shared`` (int), ``num_conflicted`` (int), ``conflict_fraction`` (float),
        ``mean_cosine`` (float, mean over shared tensors of cos(g_SE, g_SS) before
        projection).

    Raises
    ------
    ValueError
        If a loss is not a scalar requiring grad, ``shared_params`` is empty, or
        ``grad_scale`` is not positive.

    Notes
    -----
    Under DDP with gradient accumulation (``no_sync`` on the first micro-batches) the
    ``.grad`` kept from earlier micro-batches is local while the final one is averaged;
    use ``grad_accumulation_factor: 1`` with GM under DDP.

    Example
    -------
    >>> import torch
    >>> enc, sep = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)
    >>> x = torch.randn(4, 3)
    >>> h = enc(x)
    >>> stats = modulated_backward(sep(h).pow(2).mean(), (h - x).pow(2).mean(),
    ...                            shared_parameters(enc))
    >>> stats["num_shared"], sep.weight.grad.shape
    (2, torch.Size([2, 3]))
    """
    for name, loss in (("loss_ss", loss_ss), ("loss_se", loss_se)):
        if not torch.is_tensor(loss) or loss.dim() != 0 or not loss.requires_grad:
            shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
            raise ValueError(
                f"modulated_backward: {name} must be a scalar tensor that requires grad "
                f"(reduce it over the batch first), got {shape}"
            )
    params = list(dict.fromkeys(shared_params))  # de-duplicate, keep order
    if not params:
        raise ValueError("modulated_backward: shared_params is empty")
    if grad_scale is not None:
        grad_scale = torch.as_tensor(grad_scale, dtype=torch.float32)
        if not bool(grad_scale > 0):
            raise ValueError(f"modulated_backward: grad_scale must be > 0, got {grad_scale}")
    # 1. SE gradients: real tensors, not views of .grad
    g_se = torch.autograd.grad(
        weight_se * loss_se, params, retain_graph=True, allow_unused=True
    )
    g_se = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_se)]
    # 2. average them across ranks (DDP's reducer only sees .backward())
    if _distributed(process_group):
        _all_reduce_mean(g_se, process_group)
    # 3. SS gradients through .backward() (DDP all-reduces them)
    previous = [None if p.grad is None else p.grad.clone() for p in params]
    loss_ss.backward()
    # 4. modulation per shared tensor
    dots, cosines = [], []
    for p, se, prev in zip(params, g_se, previous):
        total = p.grad
        if total is None:
            ss = torch.zeros_like(p)
        else:
            ss = total if prev is None else total - prev
        if grad_scale is not None:
            scale = grad_scale.to(ss.device)
            se_mod, dot, cos = _project(se.float() / scale, ss.float() / scale, eps)
            se_mod = se_mod * scale
        else:
            se_mod, dot, cos = _project(se, ss, eps)
        new_grad = ss.float() + se_mod
        if prev is not None:
            new_grad = new_grad + prev.float()
        if total is not None and total.dtype == new_grad.dtype:
            total.copy_(new_grad)  # in place: keeps DDP's gradient_as_bucket_view views
        else:
            p.grad = new_grad.to(p.dtype)
        dots.append(dot)
        cosines.append(cos)
    conflicted = int((torch.stack(dots) < 0).sum())
    return {
        "num_shared": len(params),
        "num_conflicted": conflicted,
        "conflict_fraction": conflicted / len(params),
        "mean_cosine": float(torch.stack(cosines).mean()),
    }


def _distributed(process_group):
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    return torch.distributed.get_world_size(process_group) > 1


def _all_reduce_mean(tensors, process_group):
    """Average a list of tensors over the group in place, with one collective."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    torch.distributed.all_reduce(flat, group=process_group)
    flat /= torch.distributed.get_world_size(process_group)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n

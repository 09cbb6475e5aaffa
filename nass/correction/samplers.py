r"""Reverse-process samplers of GeCo (predictor-corrector) and Fast-GeCo (one step).

Every function takes a forward :class:`~nass.correction.sdes.SDE` and a score function
``score_fn(x, t, y, m) -> score`` (e.g. a :class:`~nass.correction.score_model.ScoreModel`),
works on complex spectrograms ``[batch, F, frames]`` and draws complex noise ``z``
(``E|z|^2 = 1``, see :mod:`.sdes`).

Reverse-diffusion predictor (Song et al. ICLR 2021, Eq. 46; ``sp-uhh/sgmse``,
``sgmse/sampling/predictors.py``, ``ReverseDiffusionPredictor``), from ``t`` to
``t - dt``::

    x_mean = x - [f(x, t, y) - g(t)^2 s(x, t, y, m)] dt
    x      = x_mean + g(t) sqrt(dt) z

Annealed Langevin dynamics corrector (Song & Ermon 2019; ``sgmse/sampling/correctors.py``,
``AnnealedLangevinDynamics``; GeCo ``geco/sampling/correctors.py``), ``n`` steps at
fixed ``t`` with ``std = std(t)`` of the marginal and signal-to-noise ratio ``r``::

    eps    = 2 (r std)^2
    x_mean = x + eps s(x, t, y, m)
    x      = x_mean + sqrt(2 eps) z

PC sampler (GeCo: ``N = 30``, ``r = 0.5``, one corrector step; ``geco/util/inference.py``
settings, ``geco/sampling/__init__.py``): ``x_T = y + std(T) z``; times
``t_i = linspace(T, t_eps, N)``; at each ``t_i`` one corrector then one predictor step
with ``dt = t_i - t_{i+1}`` (the last step uses ``dt = t_eps``, ending at ``t = 0``);
the result is the last predictor's noise-free ``x_mean``. Function evaluations:
``N (corrector_steps + 1)``.

Fast-GeCo (Wang et al., Interspeech 2024, arXiv 2406.07461, Sec. 2.3;
``WangHelin1997/Fast-GeCo``, ``fastgeco/model.py``, ``training_step`` with
``N_min = N_max = 1``, ``t_rsp = 0.5``): ``x_s = y + std(s) z`` with ``s = 0.5`` (the
marginal std at ``s``, mean taken as ``y`` since ``x0`` is unknown), then
Euler-Maruyama steps from ``s`` down to 0; with one step ``dt = s`` and the output is
the step's mean::

    x0_hat = x_s - [f(x_s, s, y) - g(s)^2 s_theta(x_s, s, y, m)] s

(the same update as the predictor, without the noise). Fine-tuning with an SI-SNR loss
on ``x0_hat`` (:meth:`~nass.correction.model.GeCoModel.fast_geco_loss`) makes this one
step a good estimate.
"""

import torch

from nass.correction.sdes import SDE, randn_like


def _check(y, m):
    if not torch.is_tensor(y) or not y.is_complex():
        raise ValueError(f"samplers: y must be a complex tensor, got {getattr(y, 'dtype', type(y))}")
    if m.shape != y.shape:
        raise ValueError(
            f"samplers: y and m must have the same shape, got {tuple(y.shape)} and "
            f"{tuple(m.shape)}"
        )


def reverse_diffusion_predictor(sde, score_fn, x, t, y, m, stepsize, generator=None):
    """One reverse-diffusion predictor step from ``t`` to ``t - stepsize``.

    Parameters
    ----------
    sde : SDE
        Forward process.
    score_fn : callable
        ``score_fn(x, t, y, m)``.
    x, y, m : torch.Tensor
        Complex ``[batch, ...]``.
    t : torch.Tensor
        ``[batch]`` current time.
    stepsize : float or torch.Tensor
        ``dt > 0``.
    generator : torch.Generator, optional

    Returns
    -------
    tuple of torch.Tensor
        ``(x, x_mean)``: the new sample and its noise-free mean.

    Example
    -------
    >>> import torch
    >>> from nass.correction.sdes import BBEDSDE
    >>> x = torch.zeros(1, 3, dtype=torch.cfloat); y = torch.ones(1, 3, dtype=torch.cfloat)
    >>> zero = lambda x, t, y, m: torch.zeros_like(x)
    >>> _, mean = reverse_diffusion_predictor(BBEDSDE(), zero, x, torch.tensor([0.5]), y, y, 0.1)
    >>> [round(v, 4) for v in mean.real[0].tolist()]  # x - (y - x) / (1 - t) * dt
    [-0.2, -0.2, -0.2]
    """
    f, G = sde.reverse(score_fn).discretize(x, t, y, m, stepsize)
    x_mean = x - f
    return x_mean + SDE._bcast(G, x) * randn_like(x, generator), x_mean


def ald_corrector(sde, score_fn, x, t, y, m, snr=0.5, n_steps=1, generator=None):
    """Annealed Langevin dynamics corrector at time ``t`` (see the module docstring).

    Parameters
    ----------
    sde, score_fn, x, t, y, m, generator
        As :func:`reverse_diffusion_predictor`.
    snr : float
        Target signal-to-noise ratio ``r`` (GeCo: 0.5).
    n_steps : int
        Langevin steps (GeCo: 1); 0 returns ``(x, x)``.

    Returns
    -------
    tuple of torch.Tensor
        ``(x, x_mean)``.

    Example
    -------
    >>> import torch
    >>> from nass.correction.sdes import BBEDSDE
    >>> x = torch.zeros(2, 3, dtype=torch.cfloat)
    >>> one = lambda x, t, y, m: torch.ones_like(x)
    >>> x_new, x_mean = ald_corrector(BBEDSDE(), one, x, torch.tensor([0.5, 0.5]), x, x)
    >>> x_new.shape, bool((x_mean.real > 0).all())
    (torch.Size([2, 3]), True)
    """
    x_mean = x
    if n_steps <= 0:
        return x, x_mean
    std = sde.marginal_prob(x, t, y)[1]
    eps = SDE._bcast(2 * (snr * std) ** 2, x)
    for _ in range(int(n_steps)):
        x_mean = x + eps * score_fn(x, t, y, m)
        x = x_mean + torch.sqrt(2 * eps) * randn_like(x, generator)
    return x, x_mean


@torch.no_grad()
def pc_sample(sde, score_fn, y, m, num_steps=None, snr=0.5, corrector_steps=1, denoise=True,
              generator=None):
    """GeCo predictor-corrector sampling from the prior ``y + std(T) z`` to ``t = 0``.

    Parameters
    ----------
    sde : SDE
        Forward process (``T``, ``t_eps``).
    score_fn : callable
        ``score_fn(x, t, y, m)``.
    y, m : torch.Tensor
        Complex ``[batch, F, frames]``: separator estimate and mixture.
    num_steps : int, optional
        ``N`` (default ``sde.N``, 30 for GeCo).
    snr : float
        Corrector SNR (default 0.5).
    corrector_steps : int
        Langevin steps per time (default 1; 0 disables the corrector).
    denoise : bool
        Return the last noise-free mean (default True, as the reference).
    generator : torch.Generator, optional

    Returns
    -------
    tuple
        ``(x0_hat, nfe)``: complex tensor shaped like ``y`` and the number of score
        evaluations ``N (corrector_steps + 1)``.

    Raises
    ------
    ValueError
        On ``num_steps < 1``, negative ``corrector_steps`` or mismatched shapes.

    Example
    -------
    >>> import torch
    >>> from nass.correction.sdes import BBEDSDE
    >>> y = torch.randn(1, 4, 8, dtype=torch.cfloat)
    >>> x, nfe = pc_sample(BBEDSDE(), lambda x, t, y, m: torch.zeros_like(x), y, y, num_steps=5)
    >>> x.shape, nfe
    (torch.Size([1, 4, 8]), 10)
    """
    _check(y, m)
    num_steps = sde.N if num_steps is None else int(num_steps)
    if num_steps < 1:
        raise ValueError(f"pc_sample: num_steps must be >= 1, got {num_steps}")
    if corrector_steps < 0:
        raise ValueError(f"pc_sample: corrector_steps must be >= 0, got {corrector_steps}")
    real = y.real.dtype
    times = torch.linspace(sde.T, sde.t_eps, num_steps, device=y.device, dtype=real)
    x = sde.prior_sampling(y.shape, y, generator=generator)
    x_mean = x
    for i in range(num_steps):
        t = times[i].expand(y.shape[0])
        dt = times[i] - times[i + 1] if i < num_steps - 1 else times[-1]
        x, _ = ald_corrector(sde, score_fn, x, t, y, m, snr=snr, n_steps=corrector_steps,
                             generator=generator)
        x, x_mean = reverse_diffusion_predictor(sde, score_fn, x, t, y, m, dt, generator=generator)
    return (x_mean if denoise else x), num_steps * (corrector_steps + 1)


def fast_geco_sample(sde, score_fn, y, m, t_start=0.5, num_steps=1, z=None, generator=None):
    """Fast-GeCo: Euler-Maruyama from ``y + std(t_start) z`` to ``t = 0`` (one step by default).

    Differentiable (no ``no_grad``): :meth:`GeCoModel.fast_geco_loss` back-propagates
    through it.

    Parameters
    ----------
    sde : SDE
        Forward process.
    score_fn : callable
        ``score_fn(x, t, y, m)``.
    y, m : torch.Tensor
        Complex ``[batch, F, frames]``.
    t_start : float
        Reverse starting time ``s`` (default 0.5, the reference's ``t_rsp_min =
        t_rsp_max = 0.5``), in ``[t_eps, T]``.
    num_steps : int
        Steps; times ``linspace(t_start, t_eps, num_steps)``, last step to ``t = 0``
        (reference ``evaluate_model2``). Intermediate steps add noise; the last
        returns the mean.
    z : torch.Tensor, optional
        The starting noise (complex, shaped like ``y``); drawn if omitted.
    generator : torch.Generator, optional

    Returns
    -------
    torch.Tensor
        ``x0_hat``, complex, shaped like ``y``.

    Raises
    ------
    ValueError
        On ``num_steps < 1``, ``t_start`` outside ``[t_eps, T]`` or bad shapes.

    Example
    -------
    >>> import torch
    >>> from nass.correction.sdes import BBEDSDE
    >>> y = torch.randn(2, 4, 8, dtype=torch.cfloat)
    >>> fast_geco_sample(BBEDSDE(), lambda x, t, y, m: torch.zeros_like(x), y, y).shape
    torch.Size([2, 4, 8])
    """
    _check(y, m)
    if int(num_steps) < 1:
        raise ValueError(f"fast_geco_sample: num_steps must be >= 1, got {num_steps}")
    if not sde.t_eps <= t_start <= sde.T:
        raise ValueError(
            f"fast_geco_sample: t_start must be in [t_eps, T] = [{sde.t_eps}, {sde.T}], "
            f"got {t_start}"
        )
    if z is None:
        z = randn_like(y, generator)
    elif z.shape != y.shape or z.dtype != y.dtype:
        raise ValueError(
            f"fast_geco_sample: z must match y ({tuple(y.shape)}, {y.dtype}), got "
            f"{tuple(z.shape)}, {z.dtype}"
        )
    real = y.real.dtype
    times = torch.linspace(t_start, sde.t_eps, int(num_steps), device=y.device, dtype=real)
    std = sde.marginal_prob(y, times[0], y)[1]
    x = y + SDE._bcast(std, y) * z
    rsde = sde.reverse(score_fn)
    for i in range(int(num_steps)):
        t = times[i].expand(y.shape[0])
        dt = times[i] - times[i + 1] if i < num_steps - 1 else times[-1]
        f, G = rsde.discretize(x, t, y, m, dt)
        x_mean = x - f
        if i == num_steps - 1:
            return x_mean
        x = x_mean + SDE._bcast(G, x) * randn_like(x, generator)
    return x_mean  # pragma: no cover

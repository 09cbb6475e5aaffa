r"""Forward SDEs of the diffusion corrector (BBED, OUVE), a reverse-SDE helper, a registry.

All processes act on complex spectrograms ``x`` (any shape ``[batch, ...]``) and are
conditioned on the separator's estimate ``y`` (same shape). Time ``t`` is a tensor
``[batch]`` (a Python float or a 0-d tensor is broadcast to the batch).

Noise convention (as SGMSE and GeCo): ``z = torch.randn`` of a *complex* dtype, i.e.
real and imaginary parts are ``N(0, 1/2)`` and ``E|z|^2 = 1``. ``std`` below is the
standard deviation of the complex marginal (``x_t = mean + std * z``). The score
network is trained towards ``-z / std`` (see :mod:`nass.correction.model`), which is
half the real-valued score of each component; the reverse drift ``f - g^2 s`` and the
complex noise ``g sqrt(dt) z`` (per-component variance ``g^2 dt / 2``) use the same
factor, so the reverse process is exact under this convention.

Sources: Song et al., "Score-based generative modeling through SDEs", ICLR 2021 (reverse
SDE, Eq. 6); Richter et al., "Speech enhancement and dereverberation with diffusion-based
generative models", IEEE/ACM TASLP 2023 (OUVE, Eq. 8-12; ``sp-uhh/sgmse``,
``sgmse/sdes.py``); Lay et al., "Reducing the prior mismatch of stochastic differential
equations for diffusion-based speech enhancement", Interspeech 2023 (BBED);
Wang et al., Interspeech 2024, arXiv 2406.07461 (GeCo uses BBED with ``k = 2.6,
theta = 0.52, T = 0.999, t_eps = 0.03, N = 30``; ``WangHelin1997/Fast-GeCo``,
``geco/sdes.py``, ``geco/model.py``).
"""

import abc
import math

import numpy as np
import scipy.special
import torch


class SDE(abc.ABC):
    """Abstract forward SDE ``dx = f(x, t, y) dt + g(t) dw`` conditioned on ``y``.

    Subclasses define :meth:`sde`, :meth:`marginal_prob` and set ``T`` (last time of
    the reverse process), ``t_eps`` (first time) and ``N`` (default number of reverse
    steps).

    Parameters
    ----------
    T : float
        End time used for the prior and the reverse process.
    t_eps : float
        Smallest time (training draws ``t ~ U[t_eps, T]``; sampling stops there).
    N : int
        Default number of reverse steps.

    Raises
    ------
    ValueError
        Unless ``0 < t_eps < T`` and ``N >= 1``.
    """

    def __init__(self, T, t_eps, N):
        if not 0 < t_eps < T:
            raise ValueError(f"{type(self).__name__}: need 0 < t_eps < T, got t_eps={t_eps}, T={T}")
        if int(N) < 1:
            raise ValueError(f"{type(self).__name__}: N must be >= 1, got {N}")
        self.T = float(T)
        self.t_eps = float(t_eps)
        self.N = int(N)

    # helpers ---------------------------------------------------------------------
    @staticmethod
    def _time(t, x):
        """``t`` as a real tensor ``[batch]`` on ``x``'s device."""
        real = x.real.dtype if x.is_complex() else x.dtype
        t = torch.as_tensor(t, device=x.device, dtype=real)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.dim() != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(
                f"SDE: t must be a scalar or have shape [batch] = [{x.shape[0]}], got "
                f"{tuple(t.shape)}"
            )
        return t

    @staticmethod
    def _bcast(v, x):
        """``[batch]`` -> ``[batch, 1, ...]`` to broadcast against ``x``."""
        return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))

    @staticmethod
    def _check_pair(x, y, who):
        if x.shape != y.shape:
            raise ValueError(
                f"{who}: x and y must have the same shape, got {tuple(x.shape)} and "
                f"{tuple(y.shape)}"
            )

    # interface -------------------------------------------------------------------
    @abc.abstractmethod
    def sde(self, x, t, y):
        """Drift ``f(x, t, y)`` (shape of ``x``) and diffusion ``g(t)`` (``[batch]``)."""

    @abc.abstractmethod
    def marginal_prob(self, x0, t, y):
        """Mean (shape of ``x0``) and std (``[batch]``) of ``p_t(x | x0, y)``."""

    def prior_sampling(self, shape, y, generator=None):
        """Sample ``x_T = mean_T + std(T) z`` with the mean taken as ``y``.

        ``y`` is the prior mean used in practice: BBED's true mean at ``T = 0.999``
        is ``0.001 x0 + 0.999 y`` and OUVE's is ``y + e^{-gamma} (x0 - y)``; the
        remaining mismatch is what the reverse process corrects (Lay et al. 2023).

        Parameters
        ----------
        shape : tuple
            Must equal ``y.shape`` (the reference warns and ignores it; here it is
            checked).
        y : torch.Tensor
            Conditioning estimate ``[batch, ...]`` (complex).
        generator : torch.Generator, optional
            For reproducible noise.

        Returns
        -------
        torch.Tensor
            ``x_T``, same shape and dtype as ``y``.

        Raises
        ------
        ValueError
            If ``shape != y.shape``.
        """
        if tuple(shape) != tuple(y.shape):
            raise ValueError(
                f"{type(self).__name__}.prior_sampling: shape {tuple(shape)} differs from "
                f"y.shape {tuple(y.shape)}"
            )
        std = self.marginal_prob(y, self.T, y)[1]
        z = randn_like(y, generator=generator)
        return y + self._bcast(std, y) * z

    def reverse(self, score_fn, probability_flow=False):
        """The reverse-time SDE (or probability-flow ODE) driven by ``score_fn``.

        ``dx = [f(x, t, y) - g(t)^2 s(x, t, y, m)] dt + g(t) dw_bar`` (Song et al. 2021,
        Eq. 6; ``1/2 g^2 s`` and no noise for the probability-flow ODE, Eq. 13).

        Parameters
        ----------
        score_fn : callable
            ``score_fn(x, t, y, m) -> score`` (shape of ``x``).
        probability_flow : bool
            Build the probability-flow ODE instead.

        Returns
        -------
        ReverseSDE
        """
        return ReverseSDE(self, score_fn, probability_flow=probability_flow)

    def copy(self, N=None):
        """A copy of this SDE with another default number of steps ``N``."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        if N is not None:
            if int(N) < 1:
                raise ValueError(f"{type(self).__name__}.copy: N must be >= 1, got {N}")
            new.N = int(N)
        return new


class ReverseSDE:
    """Reverse-time process of a forward :class:`SDE` (see :meth:`SDE.reverse`).

    Parameters
    ----------
    sde : SDE
        The forward process.
    score_fn : callable
        ``score_fn(x, t, y, m) -> score``.
    probability_flow : bool
        Probability-flow ODE (drift ``f - g^2 s / 2``, no noise) instead of the SDE.

    Example
    -------
    >>> import torch
    >>> sde = BBEDSDE()
    >>> x = torch.zeros(1, 2, dtype=torch.cfloat)
    >>> rev = sde.reverse(lambda x, t, y, m: torch.zeros_like(x))
    >>> f, G = rev.discretize(x, torch.tensor([0.5]), x + 1, x, 0.25)
    >>> f.real.tolist(), round(G.item(), 4)  # (y - x) / (1 - t) * dt, sqrt(theta) k^t sqrt(dt)
    ([[0.5, 0.5]], 0.5814)
    """

    def __init__(self, sde, score_fn, probability_flow=False):
        self.forward_sde = sde
        self.score_fn = score_fn
        self.probability_flow = bool(probability_flow)

    def sde(self, x, t, y, m):
        """Reverse drift ``f - g^2 s`` (shape of ``x``) and diffusion ``g`` (``[batch]``)."""
        drift, g = self.forward_sde.sde(x, t, y)
        t = SDE._time(t, x)
        score = self.score_fn(x, t, y, m)
        factor = 0.5 if self.probability_flow else 1.0
        rev = drift - SDE._bcast(g, x) ** 2 * score * factor
        return rev, (torch.zeros_like(g) if self.probability_flow else g)

    def discretize(self, x, t, y, m, stepsize):
        """Euler-Maruyama step backwards in time by ``stepsize``.

        Returns ``(f, G)`` such that ``x_{t - dt} = x - f + G z``:
        ``f = [f(x, t, y) - g^2 s] dt``, ``G = g sqrt(dt)`` (``[batch]``).
        """
        rev, g = self.sde(x, t, y, m)
        dt = torch.as_tensor(stepsize, device=x.device, dtype=g.dtype)
        return rev * dt, g * torch.sqrt(dt)


def randn_like(x, generator=None):
    """Standard normal noise shaped like ``x``; complex ``x`` gets ``E|z|^2 = 1``.

    Parameters
    ----------
    x : torch.Tensor
        Template (shape, dtype, device).
    generator : torch.Generator, optional

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> import torch
    >>> z = randn_like(torch.zeros(100000, dtype=torch.cfloat))
    >>> round((z.abs() ** 2).mean().item(), 1)
    1.0
    """
    return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)


class BBEDSDE(SDE):
    r"""Brownian bridge with exponential diffusion (BBED, Lay et al. 2023).

    Forward process (``T_c = 1``)::

        dx = (y - x) / (1 - t) dt + sqrt(theta) k^t dw,     0 <= t <= T < 1

    Marginal ``p_t(x | x0, y) = N(mean, std^2)``::

        mean(t) = (1 - t) x0 + t y

    The variance solves ``dVar/dt = -2 Var / (1 - t) + theta k^{2t}``, ``Var(0) = 0``.
    With the integrating factor ``(1 - t)^{-2}``,
    ``Var(t) = theta (1 - t)^2 \int_0^t k^{2s} / (1 - s)^2 ds``; substituting
    ``u = 1 - s``, ``a = 2 ln k`` and ``\int e^{-au} u^{-2} du = -e^{-au}/u - a Ei(-au)``::

        Var(t) = theta (1 - t) [ k^{2t} - (1 - t)
                                 + 2 k^2 ln(k) (1 - t) (Ei(2 (t - 1) ln k) - Ei(-2 ln k)) ]

    (``Ei`` the exponential integral; ``Var(1) = 0``: the bridge is pinned at ``y``).
    This is the expression of the reference ``WangHelin1997/Fast-GeCo``,
    ``geco/sdes.py`` (``BBED._std``), derived here independently and tested against a
    numerical integration of the ODE.

    Parameters
    ----------
    k : float
        Base of the exponential diffusion (default 2.6).
    theta : float
        Diffusion scale (default 0.52).
    T : float
        Last time, < 1 (default 0.999).
    t_eps : float
        First time (default 0.03).
    N : int
        Default reverse steps (default 30).

    Raises
    ------
    ValueError
        On ``k <= 1``, ``theta <= 0`` or ``T >= 1``.

    Example
    -------
    >>> import torch
    >>> sde = BBEDSDE()
    >>> x0, y = torch.zeros(2, 3, 4, dtype=torch.cfloat), torch.ones(2, 3, 4, dtype=torch.cfloat)
    >>> mean, std = sde.marginal_prob(x0, torch.tensor([0.5, 0.999]), y)
    >>> mean[:, 0, 0].real.tolist(), [round(s, 3) for s in std.tolist()]
    ([0.5, 0.9990000128746033], [0.492, 0.059])
    """

    def __init__(self, k=2.6, theta=0.52, T=0.999, t_eps=0.03, N=30):
        super().__init__(T=T, t_eps=t_eps, N=N)
        if k <= 1:
            raise ValueError(f"BBEDSDE: k must be > 1, got {k}")
        if theta <= 0:
            raise ValueError(f"BBEDSDE: theta must be > 0, got {theta}")
        if T >= 1:
            raise ValueError(f"BBEDSDE: T must be < 1 (the drift is singular at 1), got {T}")
        self.k = float(k)
        self.theta = float(theta)
        self.logk = math.log(self.k)

    def config(self):
        """Constructor arguments (for :func:`get_sde` and saved correctors)."""
        return dict(name="bbed", k=self.k, theta=self.theta, T=self.T, t_eps=self.t_eps, N=self.N)

    def sde(self, x, t, y):
        self._check_pair(x, y, "BBEDSDE.sde")
        t = self._time(t, x)
        drift = (y - x) / self._bcast(1 - t, x)
        diffusion = math.sqrt(self.theta) * torch.pow(torch.as_tensor(self.k, dtype=t.dtype, device=t.device), t)
        return drift, diffusion

    def variance(self, t):
        """Closed-form marginal variance ``Var(t)`` (see the class docstring), ``[batch]``."""
        t = torch.as_tensor(t)
        tn = t.detach().cpu().double().numpy()
        one = 1.0 - tn
        k, lk = self.k, self.logk
        with np.errstate(divide="ignore", invalid="ignore"):
            ei = scipy.special.expi(2.0 * (tn - 1.0) * lk) - scipy.special.expi(-2.0 * lk)
            bracket = k ** (2 * tn) - one + 2 * k**2 * lk * one * ei
            var = self.theta * one * bracket
        var = np.where(one <= 0, 0.0, np.maximum(var, 0.0))
        dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
        return torch.as_tensor(var, dtype=dtype, device=t.device)

    def marginal_prob(self, x0, t, y):
        self._check_pair(x0, y, "BBEDSDE.marginal_prob")
        t = self._time(t, x0)
        tb = self._bcast(t, x0)
        mean = (1 - tb) * x0 + tb * y
        return mean, torch.sqrt(self.variance(t))


class OUVESDE(SDE):
    r"""Ornstein-Uhlenbeck SDE with variance-exploding diffusion (SGMSE+, Richter et al. 2023).

    Forward process (``rho = sigma_max / sigma_min``)::

        dx = gamma (y - x) dt + sigma_min rho^t sqrt(2 ln rho) dw

    Marginal ``p_t(x | x0, y) = N(mean, std^2)``::

        mean(t) = y + (x0 - y) e^{-gamma t}
        Var(t)  = sigma_min^2 (rho^{2t} - e^{-2 gamma t}) ln(rho) / (gamma + ln rho)

    (solution of ``dVar/dt = -2 gamma Var + g(t)^2``, ``Var(0) = 0``; Richter et al.
    2023, Eq. 11-12; ``sp-uhh/sgmse``, ``sgmse/sdes.py``, ``OUVESDE``).

    Parameters
    ----------
    gamma : float
        Stiffness (default 1.5).
    sigma_min, sigma_max : float
        Diffusion range (defaults 0.05, 0.5).
    T : float
        Last time (default 1).
    t_eps : float
        First time (default 0.03).
    N : int
        Default reverse steps (default 30).

    Raises
    ------
    ValueError
        Unless ``0 < sigma_min < sigma_max`` and ``gamma > 0``.

    Example
    -------
    >>> import torch
    >>> sde = OUVESDE()
    >>> x0, y = torch.zeros(1, 2, dtype=torch.cfloat), torch.ones(1, 2, dtype=torch.cfloat)
    >>> mean, std = sde.marginal_prob(x0, 1.0, y)
    >>> round(mean[0, 0].real.item(), 4), round(std.item(), 4)
    (0.7769, 0.389)
    """

    def __init__(self, gamma=1.5, sigma_min=0.05, sigma_max=0.5, T=1.0, t_eps=0.03, N=30):
        super().__init__(T=T, t_eps=t_eps, N=N)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"OUVESDE: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
            )
        if gamma <= 0:
            raise ValueError(f"OUVESDE: gamma must be > 0, got {gamma}")
        self.gamma = float(gamma)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.logsig = math.log(self.sigma_max / self.sigma_min)

    def config(self):
        """Constructor arguments (for :func:`get_sde` and saved correctors)."""
        return dict(name="ouve", gamma=self.gamma, sigma_min=self.sigma_min,
                    sigma_max=self.sigma_max, T=self.T, t_eps=self.t_eps, N=self.N)

    def sde(self, x, t, y):
        self._check_pair(x, y, "OUVESDE.sde")
        t = self._time(t, x)
        drift = self.gamma * (y - x)
        rho = self.sigma_max / self.sigma_min
        diffusion = self.sigma_min * torch.pow(
            torch.as_tensor(rho, dtype=t.dtype, device=t.device), t
        ) * math.sqrt(2 * self.logsig)
        return drift, diffusion

    def variance(self, t):
        """Closed-form marginal variance ``Var(t)``, ``[batch]``."""
        t = torch.as_tensor(t)
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        return (
            self.sigma_min**2
            * (torch.exp(2 * t * self.logsig) - torch.exp(-2 * self.gamma * t))
            * self.logsig
            / (self.gamma + self.logsig)
        )

    def marginal_prob(self, x0, t, y):
        self._check_pair(x0, y, "OUVESDE.marginal_prob")
        t = self._time(t, x0)
        decay = self._bcast(torch.exp(-self.gamma * t), x0)
        mean = y + (x0 - y) * decay
        return mean, torch.sqrt(self.variance(t))


SDE_REGISTRY = {"bbed": BBEDSDE, "ouve": OUVESDE}


def get_sde(name, **kwargs):
    """Build a registered SDE by name.

    Parameters
    ----------
    name : str
        A key of :data:`SDE_REGISTRY` (``"bbed"`` or ``"ouve"``), case-insensitive.
    **kwargs
        Forwarded to the class constructor (whose explicit signature rejects a
        misspelt key with a ``TypeError``).

    Returns
    -------
    SDE

    Raises
    ------
    ValueError
        On an unknown name; the message lists the valid names.

    Example
    -------
    >>> get_sde("bbed", N=10).N
    10
    >>> get_sde("vesde")
    Traceback (most recent call last):
    ...
    ValueError: get_sde: unknown SDE 'vesde'; valid names: bbed, ouve
    """
    key = str(name).lower()
    if key not in SDE_REGISTRY:
        raise ValueError(
            f"get_sde: unknown SDE {name!r}; valid names: {', '.join(sorted(SDE_REGISTRY))}"
        )
    return SDE_REGISTRY[key](**kwargs)

"""Exponential moving average (EMA) of model parameters, as GeCo trains its score model.

The reference (``WangHelin1997/Fast-GeCo``, ``geco/model.py``) keeps an EMA with decay
0.999 (``torch_ema.ExponentialMovingAverage``, updated after every optimiser step,
swapped in for evaluation with ``store`` / ``copy_to`` / ``restore`` and saved in the
checkpoint). This class offers the same interface; the averaging itself is PyTorch's
``torch.optim.swa_utils.get_ema_multi_avg_fn`` (a ``foreach`` lerp). Like
``torch_ema`` with its default ``use_num_updates=True``, the effective decay after
``n`` updates is ``min(decay, (1 + n) / (10 + n))`` so that early averages are not
dominated by the random initialisation.

(``diffusers.training_utils.EMAModel`` has the same interface but its import takes
about twice as long as the rest of this package, so it is not used.)
"""

import contextlib

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn


class ExponentialMovingAverage:
    """EMA of a list of parameters: ``shadow <- d * shadow + (1 - d) * param``.

    Parameters
    ----------
    parameters : iterable of torch.nn.Parameter
        The parameters to track (e.g. ``model.parameters()``); their order defines
        the order expected by every method.
    decay : float
        Decay ``d`` in [0, 1] (default 0.999, the reference value).
    use_num_updates : bool
        Use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (default True, as
        ``torch_ema``).

    Raises
    ------
    ValueError
        If ``decay`` is outside [0, 1].

    Example
    -------
    >>> import torch
    >>> lin = torch.nn.Linear(2, 1)
    >>> ema = ExponentialMovingAverage(lin.parameters(), decay=0.5, use_num_updates=False)
    >>> with torch.no_grad():
    ...     _ = lin.weight.add_(1.0)
    >>> ema.update(lin.parameters())
    >>> ema.store(lin.parameters()); ema.copy_to(lin.parameters())
    >>> ema.restore(lin.parameters())
    >>> ema.num_updates
    1
    """

    def __init__(self, parameters, decay=0.999, use_num_updates=True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ExponentialMovingAverage: decay must be in [0, 1], got {decay}")
        parameters = list(parameters)
        self.decay = float(decay)
        self.use_num_updates = bool(use_num_updates)
        self.num_updates = 0
        self.shadow_params = [p.detach().clone() for p in parameters]
        self.collected_params = None

    def _check(self, parameters):
        parameters = list(parameters)
        if len(parameters) != len(self.shadow_params):
            raise ValueError(
                f"ExponentialMovingAverage: got {len(parameters)} parameters, tracking "
                f"{len(self.shadow_params)}; pass the same model's parameters"
            )
        return parameters

    def current_decay(self):
        """Decay used by the next :meth:`update`."""
        if not self.use_num_updates:
            return self.decay
        n = self.num_updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, parameters):
        """Average ``parameters`` into the shadow copy (call after each optimiser step)."""
        parameters = self._check(parameters)
        decay = self.current_decay()
        self.num_updates += 1
        grads = [(s, p) for s, p in zip(self.shadow_params, parameters) if p.requires_grad]
        frozen = [(s, p) for s, p in zip(self.shadow_params, parameters) if not p.requires_grad]
        for s, p in frozen:
            s.copy_(p)
        floats = [(s, p) for s, p in grads if s.is_floating_point() or s.is_complex()]
        if floats:
            get_ema_multi_avg_fn(decay)(
                [s for s, _ in floats], [p.detach().to(s.device) for s, p in floats], None
            )

    @torch.no_grad()
    def copy_to(self, parameters):
        """Write the averaged values into ``parameters``."""
        for s, p in zip(self.shadow_params, self._check(parameters)):
            p.data.copy_(s.to(p.device))

    @torch.no_grad()
    def store(self, parameters):
        """Save ``parameters`` so that :meth:`restore` can bring them back."""
        self.collected_params = [p.detach().clone() for p in self._check(parameters)]

    @torch.no_grad()
    def restore(self, parameters):
        """Bring back the values saved by :meth:`store`.

        Raises
        ------
        RuntimeError
            If nothing was stored.
        """
        if self.collected_params is None:
            raise RuntimeError("ExponentialMovingAverage.restore: call store() first")
        for c, p in zip(self.collected_params, self._check(parameters)):
            p.data.copy_(c)
        self.collected_params = None

    @contextlib.contextmanager
    def average_parameters(self, parameters):
        """Context in which ``parameters`` hold the averages (store/copy_to/restore)."""
        parameters = list(parameters)
        self.store(parameters)
        self.copy_to(parameters)
        try:
            yield
        finally:
            self.restore(parameters)

    def to(self, device=None, dtype=None):
        """Move the shadow parameters (floating ones get ``dtype``)."""
        self.shadow_params = [
            s.to(device=device, dtype=dtype) if (dtype is not None and s.is_floating_point())
            else s.to(device=device)
            for s in self.shadow_params
        ]
        return self

    def state_dict(self):
        """Plain dict (tensors, numbers) loadable with ``torch.load(weights_only=True)``."""
        return {
            "decay": self.decay,
            "use_num_updates": self.use_num_updates,
            "num_updates": self.num_updates,
            "shadow_params": [s.clone() for s in self.shadow_params],
        }

    def load_state_dict(self, state_dict):
        """Restore from :meth:`state_dict`.

        Raises
        ------
        ValueError
            If the number or shapes of the saved parameters differ.
        """
        shadow = list(state_dict["shadow_params"])
        if len(shadow) != len(self.shadow_params) or any(
            a.shape != b.shape for a, b in zip(shadow, self.shadow_params)
        ):
            raise ValueError(
                "ExponentialMovingAverage.load_state_dict: saved parameters do not match "
                "the model (different architecture or configuration?)"
            )
        self.decay = float(state_dict["decay"])
        self.use_num_updates = bool(state_dict["use_num_updates"])
        self.num_updates = int(state_dict["num_updates"])
        self.shadow_params = [
            s.to(device=o.device, dtype=o.dtype) for s, o in zip(shadow, self.shadow_params)
        ]

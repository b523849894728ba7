"""ASGD: averaged stochastic gradient descent (Polyak-Ruppert averaging, after step ``t0``).

Example:
    >>> w = ddp.nn.Parameter(ddp.tensor([1.0]))
    >>> opt = ddp.optim.ASGD([w], lr=0.1, lambd=0.0)
    >>> (w * w).sum().backward(); opt.step()
    >>> round(w.item(), 6), opt.state[w]["ax"]       # 1 - 0.1 * 2; the average is the iterate
    (0.8, tensor([0.8000]))
"""
from __future__ import annotations

from .. import backend
from ..tensor import Tensor
from .optimizer import (Optimizer, _scalar_dtype, advance_step, check_hyperparameters,
                        grad_for_update, step_counter, zeros_state)

__all__ = ["ASGD", "asgd_update"]


def asgd_update(param, grad, ax, eta, mu, step, *, lr, lambd, alpha, t0, weight_decay, maximize,
                scratch=None):
    """One ASGD step on arrays, in place (PyTorch's single-tensor formulas and order)::

        g = ±grad + weight_decay * param
        param *= 1 - lambd * eta;  param -= eta * g
        ax += mu * (param - ax)     (ax = param while mu == 1)
        eta = lr / (1 + lambd * lr * step) ** alpha;  mu = 1 / max(1, step - t0)

    ``eta`` and ``mu`` are 0-d arrays (the step size and averaging weight, kept in the ``step``
    counter's dtype as PyTorch keeps them), updated in place. ``step`` is the step number after
    incrementing; ``scratch`` two arrays shaped like ``param``.

    Example:
        >>> p, ax = np.ones(1, np.float32), np.zeros(1, np.float32)
        >>> eta, mu = np.array(0.1, np.float32), np.array(1.0, np.float32)
        >>> asgd_update(p, np.ones(1, np.float32), ax, eta, mu, 1, lr=0.1, lambd=0.0, alpha=0.75,
        ...             t0=1e6, weight_decay=0, maximize=False); p, ax
        (array([0.9], dtype=float32), array([0.9], dtype=float32))
    """
    xp = backend.get_array_module(param)
    t1, t2 = scratch if scratch is not None else (xp.empty_like(param), xp.empty_like(param))
    g = grad_for_update(param, grad, weight_decay, maximize, t1)
    eta_value = float(eta)
    param *= 1 - lambd * eta_value
    param -= xp.multiply(g, eta_value, out=t2)
    mu_value = float(mu)
    if mu_value != 1:
        diff = xp.subtract(param, ax, out=t2)
        diff *= mu_value
        ax += diff
    else:
        ax[...] = param
    # PyTorch makes the new values tensors of the default dtype before copying them in
    scalar = _scalar_dtype()
    eta[...] = scalar(lr / ((1 + lambd * lr * step) ** alpha))
    mu[...] = scalar(1 / max(1, step - t0))


def _device_scalar(p, value):
    """A 0-d tensor of the ``step`` counters' dtype on ``p``'s device."""
    return Tensor._make(backend.get_array_module(p._data).full_like(
        p._data, value, dtype=_scalar_dtype(), shape=()))


class ASGD(Optimizer):
    """Averaged SGD (Polyak & Juditsky), as ``torch.optim.ASGD``. The parameters follow SGD with
    a decaying step size; ``state[p]["ax"]`` holds their running average.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-2).
        lambd: decay term (default 1e-4).
        alpha: power of the step-size decay (default 0.75).
        t0: the step at which averaging starts (default 1e6).
        weight_decay: L2 penalty added to the gradient (default 0).
        maximize: maximize the objective instead of minimizing it.
        foreach, capturable: accepted for compatibility; there is one implementation.
        differentiable: must be False.

    State per parameter: ``step``, ``eta`` and ``mu`` (0-d float tensors) and ``ax``.

    Example:
        >>> opt = ddp.optim.ASGD(ddp.nn.Linear(3, 1).parameters(), lr=0.01, t0=100)
    """

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0,
                 foreach=None, maximize=False, differentiable=False, capturable=False):
        check_hyperparameters(lr, weight_decay=weight_decay, differentiable=differentiable)
        defaults = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                        foreach=foreach, maximize=maximize, differentiable=differentiable,
                        capturable=capturable)
        super().__init__(params, defaults)

    def _options(self, group):
        return dict(lr=float(group["lr"]), lambd=float(group["lambd"]),
                    alpha=float(group["alpha"]), t0=float(group["t0"]),
                    weight_decay=float(group["weight_decay"]), maximize=bool(group["maximize"]))

    def _update(self, p, options):
        state = self.state[p]
        if not state:
            # ``eta`` and ``mu`` live on the parameter's device, as PyTorch keeps them
            state["step"] = step_counter()
            state["eta"] = _device_scalar(p, options["lr"])
            state["mu"] = _device_scalar(p, 1.0)
            state["ax"] = zeros_state(p)
        step = advance_step(state["step"])
        asgd_update(p._data, p.grad._data, state["ax"]._data, state["eta"]._data,
                    state["mu"]._data, step, scratch=self._scratch(p, 2), **options)

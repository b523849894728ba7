"""Adamax: Adam with the infinity norm in place of the second moment.

Example:
    >>> w = ddp.nn.Parameter(ddp.tensor([1.0]))
    >>> opt = ddp.optim.Adamax([w], lr=0.1)
    >>> (w * w).sum().backward(); opt.step()
    >>> round(w.item(), 6)                     # the first step moves by lr (times sign of grad)
    0.9
"""
from __future__ import annotations

from .. import backend
from .optimizer import (Optimizer, advance_step, check_hyperparameters, grad_for_update, lerp_,
                        step_counter, zeros_state)

__all__ = ["Adamax", "adamax_update"]


def adamax_update(param, grad, exp_avg, exp_inf, step, *, lr, beta1, beta2, eps, weight_decay,
                  maximize, scratch=None):
    """One Adamax step on arrays, in place (PyTorch's single-tensor formulas and order)::

        g = ±grad + weight_decay * param
        exp_avg.lerp_(g, 1 - beta1)
        exp_inf = max(beta2 * exp_inf, |g| + eps)
        param += -(lr / (1 - beta1**step)) * exp_avg / exp_inf

    ``step`` is the step number after incrementing; ``scratch`` two arrays shaped like ``param``.

    Example:
        >>> p, z = np.ones(1, np.float32), np.zeros(1, np.float32)
        >>> adamax_update(p, np.full(1, 2, np.float32), z, z.copy(), 1, lr=0.1, beta1=0.9,
        ...               beta2=0.999, eps=1e-8, weight_decay=0, maximize=False); p.round(6)
        array([0.9], dtype=float32)
    """
    xp = backend.get_array_module(param)
    t1, t2 = scratch if scratch is not None else (xp.empty_like(param), xp.empty_like(param))
    g = grad_for_update(param, grad, weight_decay, maximize, t1)
    lerp_(exp_avg, g, 1 - beta1, t2)
    exp_inf *= beta2
    norm = xp.abs(g, out=t2)
    norm += eps
    xp.maximum(exp_inf, norm, out=exp_inf)
    clr = lr / (1 - beta1 ** step)
    update = xp.multiply(exp_avg, -clr, out=t1)
    update /= exp_inf
    param += update


class Adamax(Optimizer):
    """Adamax (Kingma & Ba), as ``torch.optim.Adamax``.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 2e-3).
        betas: decay rates of the first moment and of the infinity norm (default (0.9, 0.999)).
        eps: added to the norm for numerical stability (default 1e-8).
        weight_decay: L2 penalty added to the gradient (default 0).
        maximize: maximize the objective instead of minimizing it.
        foreach, capturable: accepted for compatibility; there is one implementation.
        differentiable: must be False.

    State per parameter: ``step`` (0-d float tensor on the CPU), ``exp_avg``, ``exp_inf``.

    Example:
        >>> opt = ddp.optim.Adamax(ddp.nn.Linear(3, 1).parameters(), lr=2e-3)
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False):
        check_hyperparameters(lr, eps=eps, betas=betas, weight_decay=weight_decay,
                              differentiable=differentiable)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults)

    def _options(self, group):
        beta1, beta2 = group["betas"]
        return dict(lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                    eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                    maximize=bool(group["maximize"]))

    def _update(self, p, options):
        state = self.state[p]
        if not state:
            state["step"] = step_counter()
            state["exp_avg"] = zeros_state(p)
            state["exp_inf"] = zeros_state(p)
        step = advance_step(state["step"])
        adamax_update(p._data, p.grad._data, state["exp_avg"]._data, state["exp_inf"]._data,
                      step, scratch=self._scratch(p, 2), **options)

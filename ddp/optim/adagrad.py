"""Adagrad: per-coordinate learning rates from the sum of squared gradients.

Example:
    >>> w = ddp.nn.Parameter(ddp.tensor([1.0]))
    >>> opt = ddp.optim.Adagrad([w], lr=0.1)
    >>> (w * w).sum().backward(); opt.step()
    >>> round(w.item(), 4)                    # 1 - 0.1 * 2 / sqrt(4)
    0.9
"""
from __future__ import annotations

from .. import backend
from .optimizer import (Optimizer, advance_step, check_hyperparameters, grad_for_update,
                        step_counter, zeros_state)

__all__ = ["Adagrad", "adagrad_update"]


def adagrad_update(param, grad, state_sum, step, *, lr, lr_decay, weight_decay, eps, maximize,
                   scratch=None):
    """One Adagrad step on arrays, in place (PyTorch's single-tensor formulas and order)::

        g = ±grad + weight_decay * param
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum += g * g
        param += -clr * g / (sqrt(state_sum) + eps)

    ``step`` is the step number after incrementing. ``scratch`` is two arrays shaped like
    ``param``.

    Example:
        >>> p, s = np.ones(1, np.float32), np.zeros(1, np.float32)
        >>> adagrad_update(p, np.full(1, 2, np.float32), s, 1, lr=0.1, lr_decay=0,
        ...                weight_decay=0, eps=0, maximize=False); p
        array([0.9], dtype=float32)
    """
    xp = backend.get_array_module(param)
    t1, t2 = scratch if scratch is not None else (xp.empty_like(param), xp.empty_like(param))
    g = grad_for_update(param, grad, weight_decay, maximize, t1)
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum += xp.multiply(g, g, out=t2)
    std = xp.sqrt(state_sum, out=t2)
    std += eps
    update = xp.multiply(g, -clr, out=t1)
    update /= std
    param += update


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.), as ``torch.optim.Adagrad``.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-2).
        lr_decay: learning rate decay per step (default 0).
        weight_decay: L2 penalty added to the gradient (default 0).
        initial_accumulator_value: starting value of the squared-gradient sums (default 0).
        eps: added to the denominator for numerical stability (default 1e-10).
        maximize: maximize the objective instead of minimizing it.
        foreach, fused: accepted for compatibility.
        differentiable: must be False.

    State per parameter: ``step`` and ``sum``, created at construction for every parameter
    (as PyTorch does), so ``state_dict()`` holds them before the first step.

    Example:
        >>> model = ddp.nn.Linear(3, 1)
        >>> opt = ddp.optim.Adagrad(model.parameters(), lr=0.1, initial_accumulator_value=0.1)
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, foreach=None, *, maximize=False, differentiable=False, fused=None):
        check_hyperparameters(lr, lr_decay=lr_decay, weight_decay=weight_decay,
                              initial_accumulator_value=initial_accumulator_value, eps=eps,
                              differentiable=differentiable)
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p)

    def _init_state(self, p):
        # PyTorch fills the sums from the optimizer-wide default, not from the group's option.
        state = self.state[p]
        state["step"] = step_counter()
        state["sum"] = zeros_state(p, self.defaults["initial_accumulator_value"])
        return state

    def _options(self, group):
        return dict(lr=float(group["lr"]), lr_decay=float(group["lr_decay"]),
                    weight_decay=float(group["weight_decay"]), eps=float(group["eps"]),
                    maximize=bool(group["maximize"]))

    def _update(self, p, options):
        state = self.state[p] or self._init_state(p)
        step = advance_step(state["step"])
        adagrad_update(p._data, p.grad._data, state["sum"]._data, step,
                       scratch=self._scratch(p, 2), **options)

"""Adadelta: step sizes from running averages of squared gradients and squared updates.

Example:
    >>> w = ddp.nn.Parameter(ddp.tensor([1.0]))
    >>> opt = ddp.optim.Adadelta([w])
    >>> (w * w).sum().backward(); opt.step()
    >>> w.item() < 1.0
    True
"""
from __future__ import annotations

from .. import backend
from .optimizer import (Optimizer, advance_step, check_hyperparameters, grad_for_update,
                        step_counter, zeros_state)

__all__ = ["Adadelta", "adadelta_update"]


def adadelta_update(param, grad, square_avg, acc_delta, *, lr, rho, eps, weight_decay, maximize,
                    scratch=None):
    """One Adadelta step on arrays, in place (PyTorch's single-tensor formulas and order)::

        g = ±grad + weight_decay * param
        square_avg = rho * square_avg + (1 - rho) * g * g
        delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
        acc_delta = rho * acc_delta + (1 - rho) * delta * delta
        param -= lr * delta

    ``scratch`` is three arrays shaped like ``param``.

    Example:
        >>> p, z = np.ones(1, np.float32), np.zeros(1, np.float32)
        >>> adadelta_update(p, np.ones(1, np.float32), z, z.copy(), lr=1.0, rho=0.0, eps=1.0,
        ...                 weight_decay=0, maximize=False); p       # delta = 1/sqrt(2)
        array([0.29289323], dtype=float32)
    """
    xp = backend.get_array_module(param)
    t1, t2, t3 = scratch if scratch is not None else tuple(xp.empty_like(param) for _ in range(3))
    g = grad_for_update(param, grad, weight_decay, maximize, t1)

    square_avg *= rho
    xp.multiply(g, 1 - rho, out=t2)
    t2 *= g
    square_avg += t2
    std = xp.add(square_avg, eps, out=t2)
    xp.sqrt(std, out=std)
    delta = xp.add(acc_delta, eps, out=t3)
    xp.sqrt(delta, out=delta)
    delta /= std
    delta *= g
    acc_delta *= rho
    xp.multiply(delta, 1 - rho, out=t2)
    t2 *= delta
    acc_delta += t2
    param -= xp.multiply(delta, lr, out=t2)


class Adadelta(Optimizer):
    """Adadelta (Zeiler), as ``torch.optim.Adadelta``.

    Args:
        params: parameters or parameter groups to optimize.
        lr: coefficient scaling the update (default 1.0).
        rho: decay rate of the running averages (default 0.9).
        eps: added inside the square roots for numerical stability (default 1e-6).
        weight_decay: L2 penalty added to the gradient (default 0).
        maximize: maximize the objective instead of minimizing it.
        foreach, capturable: accepted for compatibility.
        differentiable: must be False.

    State per parameter: ``step``, ``square_avg`` and ``acc_delta``.

    Example:
        >>> model = ddp.nn.Linear(3, 1)
        >>> opt = ddp.optim.Adadelta(model.parameters(), rho=0.95)
    """

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        check_hyperparameters(lr, rho=rho, eps=eps, weight_decay=weight_decay,
                              differentiable=differentiable)
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        capturable=capturable, foreach=foreach, differentiable=differentiable)
        super().__init__(params, defaults)

    def _options(self, group):
        return dict(lr=float(group["lr"]), rho=float(group["rho"]), eps=float(group["eps"]),
                    weight_decay=float(group["weight_decay"]), maximize=bool(group["maximize"]))

    def _update(self, p, options):
        state = self.state[p]
        if not state:
            state["step"] = step_counter()
            state["square_avg"] = zeros_state(p)
            state["acc_delta"] = zeros_state(p)
        advance_step(state["step"])
        adadelta_update(p._data, p.grad._data, state["square_avg"]._data,
                        state["acc_delta"]._data, scratch=self._scratch(p, 3), **options)

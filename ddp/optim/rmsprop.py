"""RMSprop, optionally centered and with momentum.

Example:
    >>> w = ddp.nn.Parameter(ddp.tensor([1.0]))
    >>> opt = ddp.optim.RMSprop([w], lr=0.01)
    >>> (w * w).sum().backward(); opt.step()
    >>> round(w.item(), 4)                    # 1 - 0.01 * 2 / sqrt(0.01 * 4)
    0.9
"""
from __future__ import annotations

from .. import backend
from .optimizer import (Optimizer, advance_step, check_hyperparameters, grad_for_update, lerp_,
                        step_counter, zeros_state)

__all__ = ["RMSprop", "rmsprop_update"]


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, *, lr, alpha, eps,
                   weight_decay, momentum, centered, maximize, scratch=None):
    """One RMSprop step on arrays, in place (PyTorch's single-tensor formulas and order)::

        g = ±grad + weight_decay * param
        square_avg = alpha * square_avg + (1 - alpha) * g * g
        grad_avg.lerp_(g, 1 - alpha)                                       (centered)
        avg = sqrt(square_avg - grad_avg**2 if centered else square_avg) + eps
        buf = momentum * buf + g / avg;  param -= lr * buf                 (momentum > 0)
        param += -lr * g / avg                                             (otherwise)

    ``grad_avg`` is ``None`` unless ``centered``, ``momentum_buffer`` ``None`` unless
    ``momentum > 0``. ``scratch`` is two arrays shaped like ``param``.

    Example:
        >>> p, z = np.ones(1, np.float32), np.zeros(1, np.float32)
        >>> rmsprop_update(p, np.full(1, 2, np.float32), z, None, None, lr=0.01, alpha=0.99,
        ...                eps=0, weight_decay=0, momentum=0, centered=False, maximize=False); p
        array([0.9], dtype=float32)
    """
    xp = backend.get_array_module(param)
    t1, t2 = scratch if scratch is not None else (xp.empty_like(param), xp.empty_like(param))
    g = grad_for_update(param, grad, weight_decay, maximize, t1)

    square_avg *= alpha
    xp.multiply(g, 1 - alpha, out=t2)
    t2 *= g
    square_avg += t2
    if centered:
        lerp_(grad_avg, g, 1 - alpha, t2)
        avg = xp.multiply(grad_avg, grad_avg, out=t2)
        xp.subtract(square_avg, avg, out=avg)
        xp.sqrt(avg, out=avg)
    else:
        avg = xp.sqrt(square_avg, out=t2)
    avg += eps

    if momentum > 0:
        momentum_buffer *= momentum
        momentum_buffer += xp.divide(g, avg, out=avg)
        param -= xp.multiply(momentum_buffer, lr, out=t2)
    else:
        update = xp.multiply(g, -lr, out=t1)
        update /= avg
        param += update


class RMSprop(Optimizer):
    """RMSprop (Hinton), as ``torch.optim.RMSprop``.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-2).
        alpha: smoothing constant of the squared-gradient average (default 0.99).
        eps: added to the denominator for numerical stability (default 1e-8).
        weight_decay: L2 penalty added to the gradient (default 0).
        momentum: momentum factor (default 0).
        centered: normalize by an estimate of the gradient's variance.
        maximize: maximize the objective instead of minimizing it.
        foreach, capturable: accepted for compatibility.
        differentiable: must be False.

    State per parameter: ``step``, ``square_avg``, ``momentum_buffer`` (momentum > 0) and
    ``grad_avg`` (centered).

    Example:
        >>> model = ddp.nn.Linear(3, 1)
        >>> opt = ddp.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.9, centered=True)
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        check_hyperparameters(lr, eps=eps, momentum=momentum, weight_decay=weight_decay,
                              alpha=alpha, differentiable=differentiable)
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        super().__init__(params, defaults)

    def _options(self, group):
        return dict(lr=float(group["lr"]), alpha=float(group["alpha"]), eps=float(group["eps"]),
                    weight_decay=float(group["weight_decay"]), momentum=float(group["momentum"]),
                    centered=bool(group["centered"]), maximize=bool(group["maximize"]))

    def _update(self, p, options):
        state = self.state[p]
        if not state:
            state["step"] = step_counter()
            state["square_avg"] = zeros_state(p)
            if options["momentum"] > 0:
                state["momentum_buffer"] = zeros_state(p)
            if options["centered"]:
                state["grad_avg"] = zeros_state(p)
        advance_step(state["step"])
        grad_avg = state["grad_avg"]._data if options["centered"] else None
        buf = state["momentum_buffer"]._data if options["momentum"] > 0 else None
        rmsprop_update(p._data, p.grad._data, state["square_avg"]._data, grad_avg, buf,
                       scratch=self._scratch(p, 2), **options)

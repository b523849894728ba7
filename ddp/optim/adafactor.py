"""Adafactor: Adam-like steps with the second moment of a matrix kept as a row and a column
factor (memory O(m + n) for an m x n parameter), relative step sizes and update clipping.

Example:
    >>> w = ddp.nn.Parameter(ddp.ones(2, 3))
    >>> opt = ddp.optim.Adafactor([w], lr=0.01)
    >>> (w * w).sum().backward(); opt.step()
    >>> sorted(opt.state[w]), tuple(opt.state[w]["row_var"].shape)
    (['col_var', 'row_var', 'step'], (2, 1))
"""
from __future__ import annotations


import numpy as np

from .. import backend
from ..tensor import Tensor
from .optimizer import Optimizer, advance_step, lerp_, step_counter, zeros_state

__all__ = ["Adafactor", "adafactor_update"]


def _norm(a):
    xp = backend.get_array_module(a)
    return float(xp.sqrt(xp.sum(a * a)))


def adafactor_update(param, grad, row_var, col_var, variance, step, *, lr, beta2_decay, eps1,
                     eps2, d, weight_decay, maximize):
    """One Adafactor step on arrays, in place (PyTorch's single-tensor formulas and order)::

        beta = step ** beta2_decay;  rho = min(lr, 1 / sqrt(step))
        alpha = max(eps2, rms(param)) * rho;  param *= 1 - lr * weight_decay
        matrix: row_var.lerp_(mean(g², -1), beta); col_var.lerp_(mean(g², -2), beta)
                v = row_var @ col_var / max(mean(row_var, -2), eps1)
        vector: variance.lerp_(g², beta); v = variance
        u = g / sqrt(max(v, eps1²));  param -= alpha / max(1, rms(u) / d) * u

    ``row_var``/``col_var`` are ``None`` for a vector parameter, ``variance`` for a matrix;
    ``eps1`` ``None`` means the dtype's machine epsilon. ``step`` is the step number after
    incrementing.

    Example:
        >>> p, v = np.ones(2, np.float32), np.zeros(2, np.float32)
        >>> adafactor_update(p, np.ones(2, np.float32), None, None, v, 1, lr=0.1,
        ...                  beta2_decay=-0.8, eps1=None, eps2=1e-3, d=1.0, weight_decay=0.0,
        ...                  maximize=False); p.round(6)          # rms(p) * lr = 0.1
        array([0.9, 0.9], dtype=float32)
    """
    xp = backend.get_array_module(param)
    g = -grad if maximize else grad
    if eps1 is None:
        eps1 = float(np.finfo(param.dtype).eps)
    one_minus_beta2_t = step ** beta2_decay
    rho_t = min(lr, 1 / (step ** 0.5))
    alpha = max(eps2, _norm(param) / (param.size ** 0.5)) * rho_t
    if weight_decay != 0:
        param *= 1 - lr * weight_decay
    if g.ndim > 1:
        # the means of g² along rows and columns, as PyTorch forms them: squared norms / n
        row_mean = xp.sqrt(xp.sum(g * g, axis=-1, keepdims=True))
        row_mean *= row_mean
        row_mean /= g.shape[-1]
        lerp_(row_var, row_mean, one_minus_beta2_t, xp.empty_like(row_var))
        col_mean = xp.sqrt(xp.sum(g * g, axis=-2, keepdims=True))
        col_mean *= col_mean
        col_mean /= g.shape[-2]
        lerp_(col_var, col_mean, one_minus_beta2_t, xp.empty_like(col_var))
        var_estimate = xp.matmul(row_var, col_var)
        var_estimate /= xp.maximum(row_var.mean(axis=-2, keepdims=True), eps1)
    else:
        lerp_(variance, g * g, one_minus_beta2_t, xp.empty_like(variance))
        var_estimate = variance.copy()
    update = xp.maximum(var_estimate, eps1 * eps1, out=var_estimate)
    xp.sqrt(update, out=update)
    xp.reciprocal(update, out=update)   # rsqrt
    update *= g
    denom = max(1.0, _norm(update) / ((update.size ** 0.5) * d))
    update *= -alpha / denom
    param += update


class Adafactor(Optimizer):
    """Adafactor (Shazeer & Stern), as ``torch.optim.Adafactor``.

    Args:
        params: parameters or parameter groups to optimize.
        lr: the largest relative step (default 1e-2).
        beta2_decay: the second moment's decay exponent: weight ``step ** beta2_decay``
            (default -0.8).
        eps: ``(eps1, eps2)``: the floor of the variance estimate (``None``: the dtype's
            epsilon) and of a parameter's RMS in the step size (default ``(None, 1e-3)``).
        d: the update clipping threshold (default 1.0).
        weight_decay: decoupled weight decay (default 0).
        maximize: maximize the objective instead of minimizing it.
        foreach: accepted for compatibility; there is one implementation.

    State per parameter: ``step``, and ``row_var`` and ``col_var`` (a matrix or higher: factored
    over the last two dimensions) or ``variance`` (a vector).

    Example:
        >>> opt = ddp.optim.Adafactor(ddp.nn.Linear(3, 2).parameters(), weight_decay=0.01)
    """

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                 weight_decay=0.0, *, foreach=None, maximize=False):
        # Adafactor's own messages (PyTorch words them unlike the other optimizers')
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        for ok, message in [(0.0 <= lr, f"Learning rate should be >= 0 but is: {lr}"),
                            (0.0 >= beta2_decay, f"beta2_decay should be <= 0 but is: "
                                                 f"{beta2_decay}"),
                            (eps[0] is None or 0.0 <= eps[0],
                             f"epsilon1 should be >= 0 but is: {eps[0]}"),
                            (0.0 <= eps[1], f"epsilon2 should be >= 0 but is: {eps[1]}"),
                            (1.0 <= d, f"Clipping threshold d should be >= 1 but is: {d}"),
                            (0.0 <= weight_decay,
                             f"weight_decay should be >= 0 but is: {weight_decay}")]:
            if not ok:
                raise ValueError(message)
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay,
                        foreach=foreach, maximize=maximize)
        super().__init__(params, defaults)

    def _options(self, group):
        eps1, eps2 = group["eps"]
        return dict(lr=float(group["lr"]), beta2_decay=float(group["beta2_decay"]),
                    eps1=None if eps1 is None else float(eps1), eps2=float(eps2),
                    d=float(group["d"]), weight_decay=float(group["weight_decay"]),
                    maximize=bool(group["maximize"]))

    def _update(self, p, options):
        state = self.state[p]
        grad = p.grad._data
        if not state:
            state["step"] = step_counter()
            if grad.ndim > 1:
                xp = backend.get_array_module(grad)
                state["row_var"] = Tensor._make(xp.zeros(grad.shape[:-1] + (1,), grad.dtype))
                state["col_var"] = Tensor._make(
                    xp.zeros(grad.shape[:-2] + (1,) + grad.shape[-1:], grad.dtype))
            else:
                state["variance"] = zeros_state(p)
        step = advance_step(state["step"])
        row, col, var = (state[k]._data if k in state else None
                         for k in ("row_var", "col_var", "variance"))
        adafactor_update(p._data, grad, row, col, var, step, **options)

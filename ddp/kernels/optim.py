"""Optimizer updates as one pass over a parameter: NumPy's SGD with momentum makes four (the
buffer scaled, the gradient added, the step scaled, the step subtracted: ten array reads and
writes of the parameter's size, against five here). Strict arithmetic (``jit(strict=True)``):
each operation rounded as NumPy's in-place passes round it, so the trajectories stay PyTorch's
to the bit.
"""
from __future__ import annotations

from . import jit


@jit(strict=True)
def _sgd(p, grad, buf, lr, momentum, damp, weight_decay, maximize, nesterov, dampened):
    for i in range(p.size):
        g = grad[i]
        if weight_decay != 0:   # (grad_for_update's order: weight_decay * p, then +- grad)
            t = p[i] * weight_decay
            g = t - g if maximize else t + g
        elif maximize:
            g = -g
        if momentum != 0:
            b = buf[i] * momentum
            b = b + g * damp if dampened else b + g
            buf[i] = b
            g = g + b * momentum if nesterov else b
        p[i] = p[i] - g * lr


def sgd_(param, grad, buf, lr, momentum, dampening, nesterov, weight_decay, maximize):
    """SGD's step in place on the contiguous arrays ``param``, ``grad`` and the momentum
    buffer ``buf`` (None without momentum): ddp.optim.sgd_update's formulas, one pass."""
    t = param.dtype.type
    flat = param.reshape(-1)
    _sgd(flat, grad.reshape(-1), flat if buf is None else buf.reshape(-1), t(lr), t(momentum),
         t(1 - dampening), t(weight_decay), maximize, nesterov, dampening != 0)

"""Optimizer updates as one pass over a parameter (SGD; Adam and AdamW): NumPy's SGD with
momentum makes four (the buffer scaled, the gradient added, the step scaled, the step
subtracted: ten array reads and writes of the parameter's size, against five here), Adam's
eleven. Strict arithmetic (``jit(strict=True)``):
each operation rounded as NumPy's in-place passes round it, so the trajectories stay PyTorch's
to the bit.
"""
from __future__ import annotations

import numpy as np

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


@jit(strict=True)
def _adam(p, grad, m, v, vmax, decay, weight_decay, maximize, w1, w1_less_1, small_w1, beta2,
          w2, amsgrad, bias2_sqrt, eps, neg_step):
    for i in range(p.size):
        if decay != 1:   # AdamW's decoupled weight decay
            p[i] = p[i] * decay
        g = grad[i]
        if weight_decay != 0:
            t = p[i] * weight_decay
            g = t - g if maximize else t + g
        elif maximize:
            g = -g
        t = g - m[i]   # exp_avg.lerp_(g, 1 - beta1), optimizer.lerp_'s two formulas
        m[i] = m[i] + t * w1 if small_w1 else g + t * w1_less_1
        s = v[i] * beta2 + (g * w2) * g
        v[i] = s
        if amsgrad:
            old = vmax[i]
            if s > old or s != s:   # (np.maximum: a NaN wins)
                vmax[i] = s
            s = vmax[i]
        p[i] = p[i] + (m[i] * neg_step) / (np.sqrt(s) / bias2_sqrt + eps)


def adam_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
          weight_decay, amsgrad, maximize, decoupled_weight_decay):
    """Adam's (AdamW's) step in place on contiguous arrays: ddp.optim.adam_update's formulas and
    roundings, one pass."""
    t = param.dtype.type
    decay = t(1 - lr * weight_decay) if weight_decay != 0 and decoupled_weight_decay else t(1)
    coupled = 0 if decoupled_weight_decay else weight_decay
    flat = param.reshape(-1)
    _adam(flat, grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
          flat if max_exp_avg_sq is None else max_exp_avg_sq.reshape(-1), decay, t(coupled),
          maximize, t(1 - beta1), t(1 - beta1) - t(1), abs(1 - beta1) < 0.5, t(beta2),
          t(1 - beta2), amsgrad, t((1 - beta2 ** step) ** 0.5), t(eps),
          t(-(lr / (1 - beta1 ** step))))

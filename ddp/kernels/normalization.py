"""Layer, group and batch norm, forward and backward, one row (a sample's features, a sample's
group of channels, a channel over the batch) at a time: its statistics, output and gradients
are taken while the row is in cache, in two passes where NumPy makes ten (see
ddp.nn.functional._normalization).

Shapes: layer norm's ``x`` is (rows, k) with a weight and bias of k; group norm's is (N, G, M,
S) — N samples, G groups of M channels, S positions — with a weight and bias of G M; batch
norm's (N, C, S), with statistics per channel. The weight and bias are arrays (ones and zeros
where the op has none). Sums run in the array's dtype, in
vector lanes, as PyTorch's CPU kernels do.
"""
from __future__ import annotations

import numpy as np

from . import jit

# Rows whose statistics (or gradient sums) are taken before their outputs are written: the
# writing loop then compiles to vector code (in one loop per row it does not: layer norm's
# forward at (128, 1024) float32 62 -> 39 us, its backward 69 -> 54 us), and 8 rows of the
# input are still in cache for it.
_BLOCK = 8


@jit
def _layer_norm_forward(x, w, b, eps, y, mean, var, invstd):
    n, k = x.shape
    zero = np.zeros(1, x.dtype)[0]   # (the sums in x's dtype)
    for first in range(0, n, _BLOCK):
        rows = range(first, min(first + _BLOCK, n))
        for i in rows:
            s = zero
            for j in range(k):
                s += x[i, j]
            m = s / k
            v = zero
            for j in range(k):
                t = x[i, j] - m
                v += t * t
            v /= k
            mean[i] = m
            var[i] = v
            invstd[i] = 1 / np.sqrt(v + eps)
        for i in rows:
            m = mean[i]
            r = invstd[i]
            for j in range(k):
                y[i, j] = (x[i, j] - m) * (r * w[j]) + b[j]


def layer_norm_forward(x, weight, bias, eps):
    """Layer norm of the rows of ``x`` (rows, k): ``(y, mean, var, invstd)``, the statistics
    per row (the variance biased). ``weight``/``bias``: arrays of k, or None."""
    return _forward(_layer_norm_forward, x.shape[1], x.shape[:1], x, weight, bias, eps)


@jit
def _layer_norm_backward(x, g, w, mean, invstd, gx, gw, gb, need_x, need_w, need_b):
    n, k = x.shape
    zero = np.zeros(1, x.dtype)[0]
    if need_w:
        gw[:] = 0
    if need_b:
        gb[:] = 0
    sums = np.empty((2, n), x.dtype)   # per row: mean(g w), mean(g w x_hat)
    for first in range(0, n, _BLOCK):
        rows = range(first, min(first + _BLOCK, n))
        for i in rows:
            m = mean[i]
            r = invstd[i]
            a = zero
            c = zero
            for j in range(k):
                xh = (x[i, j] - m) * r
                t = g[i, j]
                if need_w:
                    gw[j] += t * xh
                if need_b:
                    gb[j] += t
                t *= w[j]
                a += t
                c += t * xh
            sums[0, i] = a / k
            sums[1, i] = c / k
        if need_x:
            for i in rows:
                m = mean[i]
                r = invstd[i]
                a = sums[0, i]
                c = sums[1, i]
                for j in range(k):
                    gx[i, j] = r * (g[i, j] * w[j] - a - (x[i, j] - m) * r * c)


def layer_norm_backward(x, g, weight, mean, invstd, needs, gw=None, gb=None,
                        w_scale=1.0, b_scale=1.0):
    """The gradients ``(gx, gw, gb)`` of :func:`layer_norm_forward` for the upstream ``g``;
    ``needs``: which of the three to compute (None for the others). ``gw``/``gb``: arrays to
    write the weight's and bias's gradients into, times ``w_scale``/``b_scale`` (DDP's
    buckets), or None for new ones."""
    return _backward(_layer_norm_backward, x.shape[1], x, g, weight, mean, invstd, needs, gw,
                     gb, w_scale, b_scale)


@jit
def _group_norm_forward(x, w, b, eps, y, mean, var, invstd):
    n, groups, m, s = x.shape
    zero = np.zeros(1, x.dtype)[0]   # (the sums in x's dtype)
    count = m * s
    for i in range(n):
        for gi in range(groups):
            acc = zero
            for c in range(m):
                for j in range(s):
                    acc += x[i, gi, c, j]
            mu = acc / count
            v = zero
            for c in range(m):
                for j in range(s):
                    t = x[i, gi, c, j] - mu
                    v += t * t
            v /= count
            r = 1 / np.sqrt(v + eps)
            mean[i, gi] = mu
            var[i, gi] = v
            invstd[i, gi] = r
            for c in range(m):
                f = r * w[gi * m + c]
                shift = b[gi * m + c] - mu * f
                for j in range(s):
                    y[i, gi, c, j] = x[i, gi, c, j] * f + shift


def group_norm_forward(x, weight, bias, eps):
    """Group norm of ``x`` (N, G, M, S): ``(y, mean, var, invstd)``, the statistics (N, G).
    ``weight``/``bias``: arrays of G M, or None."""
    return _forward(_group_norm_forward, x.shape[1] * x.shape[2], x.shape[:2], x, weight,
                    bias, eps)


@jit
def _group_norm_backward(x, g, w, mean, invstd, gx, gw, gb, need_x, need_w, need_b):
    n, groups, m, s = x.shape
    zero = np.zeros(1, x.dtype)[0]   # (the sums in x's dtype)
    count = m * s
    if need_w:
        gw[:] = 0
    if need_b:
        gb[:] = 0
    for i in range(n):
        for gi in range(groups):
            mu = mean[i, gi]
            r = invstd[i, gi]
            a = zero
            cc = zero
            for c in range(m):
                sg = zero
                sp = zero
                for j in range(s):
                    t = g[i, gi, c, j]
                    sg += t
                    sp += t * (x[i, gi, c, j] - mu)
                ch = gi * m + c
                if need_w:
                    gw[ch] += sp * r
                if need_b:
                    gb[ch] += sg
                a += sg * w[ch]
                cc += sp * w[ch]
            if need_x:
                a *= r / count
                cc *= r * r * r / count
                for c in range(m):
                    f = r * w[gi * m + c]
                    for j in range(s):
                        gx[i, gi, c, j] = g[i, gi, c, j] * f - (x[i, gi, c, j] - mu) * cc - a


def group_norm_backward(x, g, weight, mean, invstd, needs, gw=None, gb=None,
                        w_scale=1.0, b_scale=1.0):
    """The gradients ``(gx, gw, gb)`` of :func:`group_norm_forward`, as
    :func:`layer_norm_backward`'s."""
    return _backward(_group_norm_backward, x.shape[1] * x.shape[2], x, g, weight, mean, invstd,
                     needs, gw, gb, w_scale, b_scale)


@jit
def _batch_norm_forward(x, w, b, eps, y, mean, var, invstd):
    n, channels, s = x.shape
    count = n * s
    zero = np.zeros(1, x.dtype)[0]   # (the sums in x's dtype)
    for c in range(channels):
        acc = zero
        for i in range(n):
            for j in range(s):
                acc += x[i, c, j]
        mu = acc / count
        v = zero
        for i in range(n):
            for j in range(s):
                t = x[i, c, j] - mu
                v += t * t
        v /= count
        mean[c] = mu
        var[c] = v
        invstd[c] = 1 / np.sqrt(v + eps)
    for c in range(channels):
        f = invstd[c] * w[c]
        shift = b[c] - mean[c] * f
        for i in range(n):
            for j in range(s):
                y[i, c, j] = x[i, c, j] * f + shift


def batch_norm_forward(x, weight, bias, eps):
    """Batch norm of ``x`` (N, C, S) with the batch's statistics per channel: ``(y, mean, var,
    invstd)``, each of C (the variance biased). ``weight``/``bias``: arrays of C, or None."""
    return _forward(_batch_norm_forward, x.shape[1], x.shape[1:2], x, weight, bias, eps)


@jit
def _batch_norm_backward(x, g, w, mean, invstd, gx, gw, gb, need_x, need_w, need_b):
    n, channels, s = x.shape
    count = n * s
    zero = np.zeros(1, x.dtype)[0]
    sums = np.empty((2, channels), x.dtype)   # per channel: sum(g), sum(g (x - mean))
    for c in range(channels):
        mu = mean[c]
        sg = zero
        sp = zero
        for i in range(n):
            for j in range(s):
                t = g[i, c, j]
                sg += t
                sp += t * (x[i, c, j] - mu)
        sums[0, c] = sg
        sums[1, c] = sp
        if need_w:
            gw[c] = sp * invstd[c]
        if need_b:
            gb[c] = sg
    if need_x:
        for c in range(channels):
            mu = mean[c]
            r = invstd[c]
            f = r * w[c]
            a = f * sums[0, c] / count
            cc = f * r * r * sums[1, c] / count
            for i in range(n):
                for j in range(s):
                    gx[i, c, j] = g[i, c, j] * f - (x[i, c, j] - mu) * cc - a


def batch_norm_backward(x, g, weight, mean, invstd, needs, gw=None, gb=None,
                        w_scale=1.0, b_scale=1.0):
    """The gradients ``(gx, gw, gb)`` of :func:`batch_norm_forward`, as
    :func:`layer_norm_backward`'s."""
    return _backward(_batch_norm_backward, x.shape[1], x, g, weight, mean, invstd, needs, gw,
                     gb, w_scale, b_scale)


def _forward(kernel, features, stats_shape, x, weight, bias, eps):
    """Run a forward ``kernel`` on ``x`` with ``features`` weights and biases (ones and zeros
    for None): the output and the statistics (mean, variance, 1/std) of ``stats_shape``."""
    y = np.empty_like(x)
    mean, var, invstd = np.empty((3,) + tuple(stats_shape), x.dtype)
    kernel(x, _ones(weight, features, x.dtype), _zeros(bias, features, x.dtype),
           x.dtype.type(eps), y, mean, var, invstd)
    return y, mean, var, invstd


def _backward(kernel, features, x, g, weight, mean, invstd, needs, gw, gb, w_scale, b_scale):
    """Run a backward ``kernel``: the gradients asked for in ``needs`` (None for the others),
    the weight's and bias's into ``gw``/``gb`` where given."""
    need_x, need_w, need_b = needs
    empty = _EMPTY[x.dtype]   # (for those not needed: one type per dtype, one compilation)
    gx = np.empty_like(x) if need_x else empty.reshape((0,) * x.ndim)
    if need_w and gw is None:
        gw = np.empty(features, x.dtype)
    if need_b and gb is None:
        gb = np.empty(features, x.dtype)
    kernel(x, g, _ones(weight, features, x.dtype), mean, invstd, gx,
           gw if need_w else empty, gb if need_b else empty, need_x, need_w, need_b)
    if need_w and w_scale != 1:
        gw *= w_scale
    if need_b and b_scale != 1:
        gb *= b_scale
    return (gx if need_x else None), (gw if need_w else None), (gb if need_b else None)


_EMPTY = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}


def _ones(a, k, dtype):
    return np.ones(k, dtype) if a is None else a.reshape(k)


def _zeros(a, k, dtype):
    return np.zeros(k, dtype) if a is None else a.reshape(k)

"""Softmax, log-softmax and cross entropy along the rows of a (rows, k) array: the passes NumPy
runs slowly as broadcasting operations against a column of per-row values (``x - max``, ``e /
total``, ``g - sum(g y)``: each row one inner-loop call, 54 µs for ``x - max`` at (128, 1000)
float32 against ~10 µs here, and 4x worse with rows of 128). The exponential stays NumPy's:
its SIMD ``exp`` is 8x faster than the scalar one a Numba loop calls (56 against 473 µs at
(128, 1000)). A NaN in a row makes its sum, and so the row's result, NaN, as in NumPy.
"""
from __future__ import annotations

import numpy as np

from . import jit

_BLOCK = 8   # rows whose sums are taken before they are written (see normalization._BLOCK)


@jit
def _subtract_rows(x, m, out):
    n, k = x.shape
    for i in range(n):
        mi = m[i]
        for j in range(k):
            out[i, j] = x[i, j] - mi


@jit
def _row_sums(a, out):
    n, k = a.shape
    zero = np.zeros(1, a.dtype)[0]
    for i in range(n):
        s = zero
        for j in range(k):
            s += a[i, j]
        out[i] = s


@jit
def _normalize_rows(e, inv):
    n, k = e.shape
    zero = np.zeros(1, e.dtype)[0]
    for first in range(0, n, _BLOCK):
        rows = range(first, min(first + _BLOCK, n))
        for i in rows:
            s = zero
            for j in range(k):
                s += e[i, j]
            inv[i] = 1 / s
        for i in rows:
            r = inv[i]
            for j in range(k):
                e[i, j] *= r


@jit
def _softmax_backward(y, g, out, sums):
    n, k = y.shape
    zero = np.zeros(1, y.dtype)[0]
    for first in range(0, n, _BLOCK):
        rows = range(first, min(first + _BLOCK, n))
        for i in rows:
            s = zero
            for j in range(k):
                s += g[i, j] * y[i, j]
            sums[i] = s
        for i in rows:
            s = sums[i]
            for j in range(k):
                out[i, j] = y[i, j] * (g[i, j] - s)


@jit
def _log_softmax_backward(e, g, sums):
    n, k = e.shape
    zero = np.zeros(1, e.dtype)[0]
    for first in range(0, n, _BLOCK):
        rows = range(first, min(first + _BLOCK, n))
        for i in rows:
            s = zero
            for j in range(k):
                s += g[i, j]
            sums[i] = s
        for i in rows:
            s = sums[i]
            for j in range(k):
                e[i, j] = g[i, j] - e[i, j] * s


@jit(nan_free=True)
def _row_max(x, out):
    n, k = x.shape
    lanes = np.empty(16, x.dtype)   # 16 running maxima: vector lanes (one is a serial chain)
    whole = k - k % 16
    for i in range(n):
        for t in range(16):
            lanes[t] = x[i, 0]
        for j0 in range(0, whole, 16):
            for t in range(16):
                v = x[i, j0 + t]
                lanes[t] = v if v > lanes[t] else lanes[t]
        m = lanes[0]
        for t in range(1, 16):
            m = lanes[t] if lanes[t] > m else m
        for j in range(whole, k):
            m = x[i, j] if x[i, j] > m else m
        out[i] = m


def row_max(x):
    """The maxima of the rows of ``x`` (rows, k), (rows,); where a row holds a NaN its value is
    unspecified (a softmax's row sum is NaN then anyway). NumPy's reduction for long rows (at
    (128, 1000) 20 against 37 µs), the kernel for short ones (each NumPy row is a call: at
    (16384, 128) 2.0 against 0.69 ms)."""
    if x.shape[1] >= 256:
        return x.max(axis=1)
    out = np.empty(x.shape[0], x.dtype)
    _row_max(x, out)
    return out


def shifted_exp(x):
    """For ``x`` (rows, k): ``(e, shift, total)`` with ``shift`` the row maxima (rows, 1),
    ``e = exp(x - shift)`` (a new array) and ``total`` its row sums (rows, 1)."""
    shift = row_max(x).reshape(-1, 1)
    e = np.empty_like(x)
    _subtract_rows(x, shift.reshape(-1), e)
    np.exp(e, out=e)
    total = np.empty((x.shape[0], 1), x.dtype)
    _row_sums(e, total.reshape(-1))
    return e, shift, total


def softmax(x):
    """The softmax of each row of ``x`` (rows, k), a new array."""
    e = np.empty_like(x)
    _subtract_rows(x, row_max(x), e)
    np.exp(e, out=e)
    _normalize_rows(e, np.empty(x.shape[0], x.dtype))
    return e


def log_softmax(x):
    """The log-softmax of each row of ``x`` (rows, k), a new array."""
    out = np.empty_like(x)
    _subtract_rows(x, row_max(x), out)
    total = np.empty(x.shape[0], x.dtype)
    _row_sums(np.exp(out), total)
    _subtract_rows(out, np.log(total), out)
    return out


def softmax_backward(y, g, out=None):
    """The gradient through ``y = softmax(x)`` (rows, k) for the upstream ``g``:
    ``y (g - sum(g y))`` per row; into ``out`` where given (``g`` itself may be it)."""
    out = np.empty_like(y) if out is None else out
    _softmax_backward(y, g, out, np.empty(y.shape[0], y.dtype))
    return out


@jit
def _softmax_rows_(s, safe, sums):
    n, k = s.shape
    zero = np.zeros(1, s.dtype)[0]
    one = zero + 1
    for first in range(0, n, _BLOCK):
        rows = range(first, min(first + _BLOCK, n))
        for i in rows:
            t = zero
            for j in range(k):
                t += s[i, j]
            sums[i] = one if safe and t == 0 else 1 / t   # (a fully masked row: zeros)
        for i in rows:
            r = sums[i]
            for j in range(k):
                s[i, j] *= r


def softmax_rows_(s, safe):
    """The softmax of each row of ``s`` (rows, k) in place; ``safe``: a row whose every score
    is -inf gets zero weights (PyTorch's scaled_dot_product_attention), not NaN."""
    m = row_max(s)
    if safe:
        m[m == -np.inf] = 0
    _subtract_rows(s, m, s)
    np.exp(s, out=s)
    _softmax_rows_(s, safe, np.empty(s.shape[0], s.dtype))
    return s


def log_softmax_backward(out, g):
    """The gradient through ``out = log_softmax(x)`` (rows, k): ``g - exp(out) sum(g)`` per
    row."""
    gx = np.exp(out)
    _log_softmax_backward(gx, g, np.empty(out.shape[0], out.dtype))
    return gx


@jit
def _cross_entropy_grad(e, scale, y, picked, out):
    n, k = e.shape
    for i in range(n):
        s = scale[i]
        for j in range(k):
            out[i, j] = e[i, j] * s
        out[i, y[i]] -= picked[i]


def cross_entropy_grad(e, scale, y, picked):
    """``e * scale`` per row (``e`` (N, C), ``scale`` of N), less ``picked[i]`` at each row's
    class ``y[i]``: cross entropy's gradient from the unnormalised softmax."""
    out = np.empty_like(e)
    _cross_entropy_grad(e, scale.astype(e.dtype, copy=False), y,
                        picked.astype(e.dtype, copy=False), out)
    return out

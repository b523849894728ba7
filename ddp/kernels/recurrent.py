"""The elementwise work of one LSTM or GRU time step, forward and backward, in one call where
NumPy makes a dozen, each ~1-5 us of overhead at these sizes (see ddp.nn.functional._rnn,
which keeps the matrix products in BLAS, and the ``tanh`` too: Numba compiles ``np.tanh`` in
a loop to libm's scalar one, 16 us per 1000 float32 against NumPy's 0.4 us).

Shapes: a step's gates ``a`` are (N, 4, H) for LSTM (i, f, g, o) and (N, 3, H) for GRU (r, z,
n) — the op's (N, 4H) array seen so — the other arrays (N, H), all C-contiguous and of one
dtype. The sigmoid gates arrive as ``tanh(x / 2)`` (the op halves their weights, so that
NumPy takes one ``tanh`` over all the gates) and are finished here as ``sigmoid(x) = tanh(x /
2) / 2 + 1/2``.

Each row is taken gate by gate, one loop per array written, a gate's index a constant: LLVM
vectorises a loop only if it can tell its stores from its loads, which it cannot for one array
written (or written and read) at two offsets a runtime stride apart, nor for more than a few
arrays (it checks each pair for overlap, up to a limit). The LSTM step's backward at (32, 256)
float32: 58 us in NumPy, 21 us as one loop per row (scalar), 15 us in loops over per-row
views, 10 us so.
"""
from __future__ import annotations

import numpy as np

from . import jit


def _gates(a, count):
    """The (N, count H) ``a`` seen as (N, count, H)."""
    return a.reshape(a.shape[0], count, -1)


_CONSTANTS = {}


def _constants(a):
    """1 and 1/2 in ``a``'s dtype (a Python number in a loop would widen float32 work to
    float64)."""
    k = _CONSTANTS.get(a.dtype)
    if k is None:
        k = _CONSTANTS[a.dtype] = np.array([1.0, 0.5], a.dtype)
    return k


@jit
def _lstm_cell(a, c, k, c_new):
    half = k[1]
    n_rows, _, hidden = a.shape
    rows = a.reshape(n_rows, 4 * hidden)
    for n in range(n_rows):
        for j in range(hidden):
            a[n, 3, j] = a[n, 3, j] * half + half
        for j in range(2 * hidden):   # i, f
            rows[n, j] = rows[n, j] * half + half
        for j in range(hidden):
            c_new[n, j] = a[n, 1, j] * c[n, j] + a[n, 0, j] * a[n, 2, j]


def lstm_cell(a, c, c_new):
    """An LSTM step's gates ``a`` (N, 4H), their ``tanh`` taken, finished (the sigmoid ones,
    in place), and its new cell ``f c + i g`` from the previous one ``c`` written into
    ``c_new``."""
    _lstm_cell(_gates(a, 4), c, _constants(a), c_new)


@jit
def _lstm_cell_backward(a, c, tanh_c, g_out, dh, dc, k, d):
    one = k[0]
    n_rows, _, hidden = a.shape
    for n in range(n_rows):
        for j in range(hidden):
            dh[n, j] += g_out[n, j]
        for j in range(hidden):
            t = tanh_c[n, j]
            dc[n, j] += dh[n, j] * a[n, 3, j] * (one - t * t)
        for j in range(hidden):
            o = a[n, 3, j]
            d[n, 3, j] = dh[n, j] * tanh_c[n, j] * o * (one - o)
        for j in range(hidden):
            i = a[n, 0, j]
            d[n, 0, j] = dc[n, j] * a[n, 2, j] * i * (one - i)
        for j in range(hidden):
            f = a[n, 1, j]
            d[n, 1, j] = dc[n, j] * c[n, j] * f * (one - f)
        for j in range(hidden):
            g = a[n, 2, j]
            d[n, 2, j] = dc[n, j] * a[n, 0, j] * (one - g * g)
        for j in range(hidden):
            dc[n, j] *= a[n, 1, j]


def lstm_cell_backward(a, c, tanh_c, g_out, dh, dc, d):
    """Backward through one LSTM step: ``a`` its activated gates (N, 4H), ``c`` the previous
    cell, ``tanh_c`` the tanh of the new one; ``dh`` the gradient carried to its output from
    the step after, to which ``g_out``, the one from outside, is added (in place), ``dc`` the
    one carried to its cell. Writes the gradient of the gates' pre-activations into ``d`` (N,
    4H) and the previous cell's into ``dc``; the previous output's is ``d @ W_hh``."""
    _lstm_cell_backward(_gates(a, 4), c, tanh_c, g_out, dh, dc, _constants(a), _gates(d, 4))


@jit
def _gru_gates(a, gi, gh, b_hn, k, hn, pre):
    half = k[1]
    n_rows, _, hidden = a.shape
    rows = a.reshape(n_rows, 3 * hidden)
    for n in range(n_rows):
        for j in range(2 * hidden):   # r, z
            rows[n, j] = rows[n, j] * half + half
        for j in range(hidden):
            hn[n, j] = gh[n, 2, j] + b_hn[j]
        for j in range(hidden):
            pre[n, j] = gi[n, 2, j] + a[n, 0, j] * hn[n, j]


def gru_gates(a, gi, gh, b_hn, hn, pre):
    """A GRU step's gates ``a`` (N, 3H), the r and z parts holding their ``tanh`` taken,
    finished for those (in place); ``W_hn h + b_hn`` (``gh``'s n part plus ``b_hn``, H or
    None) written into ``hn``, and n's pre-activation, ``gi``'s n part + r hn, into ``pre``
    (N, H), for its ``tanh``."""
    if b_hn is None:
        b_hn = np.zeros(hn.shape[1], hn.dtype)
    _gru_gates(_gates(a, 3), _gates(gi, 3), _gates(gh, 3), b_hn, _constants(a), hn, pre)


@jit
def _gru_output(a, h, h_new):
    n_rows, _, hidden = a.shape
    for n in range(n_rows):
        for j in range(hidden):
            v = a[n, 2, j]
            h_new[n, j] = v + a[n, 1, j] * (h[n, j] - v)


def gru_output(a, h, h_new):
    """A GRU step's output ``n + z (h - n)`` from its activated gates ``a`` (N, 3H) and the
    previous output ``h``, written into ``h_new``."""
    _gru_output(_gates(a, 3), h, h_new)


@jit
def _gru_cell_backward(a, h, hn, g_out, dh, dh_w, k, d, e):
    one = k[0]
    n_rows, _, hidden = a.shape
    for n in range(n_rows):
        for j in range(hidden):
            dh[n, j] += dh_w[n, j] + g_out[n, j]
        for j in range(hidden):
            z, v = a[n, 1, j], a[n, 2, j]
            d[n, 2, j] = dh[n, j] * (one - z) * (one - v * v)
        for j in range(hidden):
            z, v = a[n, 1, j], a[n, 2, j]
            d[n, 1, j] = dh[n, j] * (h[n, j] - v) * z * (one - z)
        for j in range(hidden):   # (n's gradient again: d's n part read would not vectorise)
            r, z, v = a[n, 0, j], a[n, 1, j], a[n, 2, j]
            d[n, 0, j] = dh[n, j] * (one - z) * (one - v * v) * hn[n, j] * r * (one - r)
        for j in range(hidden):
            e[n, 0, j] = d[n, 0, j]
        for j in range(hidden):
            e[n, 1, j] = d[n, 1, j]
        for j in range(hidden):
            e[n, 2, j] = d[n, 2, j] * a[n, 0, j]
        for j in range(hidden):
            dh[n, j] *= a[n, 1, j]


def gru_cell_backward(a, h, hn, g_out, dh, dh_w, d, e):
    """Backward through one GRU step: ``a`` its activated gates (N, 3H), ``h`` the previous
    output, ``hn`` its ``W_hn h + b_hn``; the gradient carried to its output is ``dh + dh_w``
    (the step after's ``z`` part and ``W_hh`` part), ``g_out`` the one from outside. Writes the
    gradient of the gates' pre-activations into ``d`` (N, 3H), that of the hidden gates (n's
    scaled by r) into ``e``, and the previous output's ``z`` part into ``dh`` (in place); its
    ``W_hh`` part is ``e @ W_hh``."""
    _gru_cell_backward(_gates(a, 3), h, hn, g_out, dh, dh_w, _constants(a), _gates(d, 3),
                       _gates(e, 3))

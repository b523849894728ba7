"""ReLU forward and backward as one pass each over flat arrays (see ddp.ops.elementwise.Relu):
NumPy's forward fills zeros, then takes the maximum (two passes), and its backward makes a
boolean array, then multiplies (two passes and a mixed-type loop)."""
from __future__ import annotations

import numpy as np

from . import jit


@jit
def _relu_forward(a, out):
    for i in range(a.size):
        v = a[i]
        out[i] = 0 if v <= 0 else v   # (NaN stays NaN, as NumPy's maximum)


@jit
def _relu_forward_zeroed(a, out, zeroed):
    for i in range(a.size):
        v = a[i]
        low = v <= 0
        out[i] = 0 if low else v
        zeroed[i] = low


def relu_forward(a, for_backward=False):
    """``max(a, 0)``, NaN propagating. ``for_backward``: ``(max(a, 0), zeroed)``, ``zeroed``
    (bool, a's shape) True where the output is at most 0 — all that backward needs, in a
    quarter of a float32 output's bytes."""
    out = np.empty_like(a)
    if not for_backward:
        _relu_forward(a.reshape(-1), out.reshape(-1))
        return out
    zeroed = np.empty(a.shape, np.bool_)
    _relu_forward_zeroed(a.reshape(-1), out.reshape(-1), zeroed.reshape(-1))
    return out, zeroed


@jit
def _relu_backward(g, zeroed, gx):
    for i in range(g.size):
        gx[i] = 0 if zeroed[i] else g[i]


def relu_backward(g, zeroed):
    """ReLU's gradient: 0 where ``zeroed`` (the output is at most 0), else ``g`` — PyTorch's
    threshold_backward: a NaN output passes ``g``, and an infinite or NaN ``g`` where the
    output is at most 0 gives 0 (NumPy's ``g * (y > 0)``: the other way round for both)."""
    gx = np.empty_like(g)
    _relu_backward(g.reshape(-1), zeroed.reshape(-1), gx.reshape(-1))
    return gx

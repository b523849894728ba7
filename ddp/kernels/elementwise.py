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


def relu_forward(a):
    """``max(a, 0)``, NaN propagating."""
    out = np.empty_like(a)
    _relu_forward(a.reshape(-1), out.reshape(-1))
    return out


@jit
def _relu_backward(g, y, gx):
    for i in range(g.size):
        gx[i] = 0 if y[i] <= 0 else g[i]


def relu_backward(g, y):
    """ReLU's gradient: 0 where the output ``y`` is at most 0, else ``g`` — PyTorch's
    threshold_backward: a NaN output passes ``g``, and an infinite or NaN ``g`` where ``y <= 0``
    gives 0 (NumPy's ``g * (y > 0)``: the other way round for both)."""
    gx = np.empty_like(g)
    _relu_backward(g.reshape(-1), y.reshape(-1), gx.reshape(-1))
    return gx

"""What the normalisation op keeps for backward: the input and the weight (and the per-group
statistics), never a normalised copy of the input as well."""
from __future__ import annotations

import numpy as np
import pytest

import ddp
import ddp.nn.functional as F


@pytest.mark.parametrize("norm", ["layer", "batch", "group"])
def test_keeps_the_input_not_x_hat(norm):
    x = ddp.randn(8, 6, 5, requires_grad=True)
    w = ddp.randn(5 if norm == "layer" else 6, requires_grad=True)
    if norm == "layer":
        y = F.layer_norm(x, (5,), w)
    elif norm == "batch":
        y = F.batch_norm(x, None, None, w, training=True)
    else:
        y = F.group_norm(x, 3, w)
    node = y.grad_fn
    big = [a for a in list(node.saved) + list(node.__dict__.values()) + list(node.params)
           if isinstance(a, np.ndarray) and a.size >= x.numel()]
    assert len(big) == 1 and big[0] is x._data
    y.pow(2).sum().backward()   # and backward recomputes what it needs
    assert x.grad.shape == x.shape and w.grad.shape == w.shape

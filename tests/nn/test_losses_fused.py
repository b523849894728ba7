"""The class-index losses as one node (``ClassCrossEntropy``: cross_entropy and nll_loss with class
indices): first and second derivatives against finite differences in float64 for every
option, and what the node keeps for backward (no dense N x C target)."""
from __future__ import annotations

import numpy as np
import pytest

import ddp
import ddp.nn.functional as F
from ddp.autograd import gradcheck, gradgradcheck

RNG = np.random.default_rng(0)

OPTIONS = [
    {},
    {"weight": [0.5, 2.0, 1.0, 0.25]},
    {"ignore_index": 2},
    {"label_smoothing": 0.2},
    {"label_smoothing": 0.1, "weight": [1.0, 0.5, 3.0, 2.0], "ignore_index": 0},
]


def _case(shape, opts):
    x = ddp.tensor(RNG.standard_normal(shape), requires_grad=True)
    c = shape[0] if len(shape) == 1 else shape[1]
    tshape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    y = ddp.tensor(RNG.integers(0, c, tshape))
    kwargs = dict(opts)
    if "weight" in kwargs:
        kwargs["weight"] = ddp.tensor(kwargs["weight"], dtype=ddp.float64)
    return x, y, kwargs


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("shape", [(5, 4), (4,), (3, 4, 2)])
def test_cross_entropy_gradients(shape, opts, reduction):
    x, y, kwargs = _case(shape, opts)
    if len(shape) == 1 and "ignore_index" in opts and int(y) == opts["ignore_index"]:
        y = ddp.tensor((opts["ignore_index"] + 1) % shape[0])  # a lone ignored target: nan
    ce = lambda a: F.cross_entropy(a, y, reduction=reduction, **kwargs)  # noqa: E731
    assert ce(x).grad_fn.name() == "ClassCrossEntropyBackward0"
    assert gradcheck(ce, (x,))
    assert gradgradcheck(ce, (x,))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", [o for o in OPTIONS if "label_smoothing" not in o])
def test_nll_loss_gradients(opts, reduction):
    x, y, kwargs = _case((5, 4), opts)
    nll = lambda a: F.nll_loss(a.log_softmax(1), y, reduction=reduction, **kwargs)  # noqa: E731
    assert gradcheck(nll, (x,))
    assert gradgradcheck(nll, (x,))


def _kept(node):
    """Elements of every array the node holds for backward."""
    items = list(node.saved) + list(node.__dict__.values())
    return sum(int(a.size) for a in items if isinstance(a, np.ndarray))


def test_keeps_log_probabilities_and_indices_only():
    n, c = 64, 100
    x = ddp.randn(n, c, requires_grad=True)
    y = ddp.tensor(RNG.integers(0, c, n))
    loss = F.cross_entropy(x, y, weight=ddp.rand(c), label_smoothing=0.1)
    # exp(x - max) (n x c) plus per-sample indices, mask, weights and row totals, the class
    # weights
    assert _kept(loss.grad_fn) <= n * c + 4 * n + c + 1
    loss = F.nll_loss(x, y)
    assert _kept(loss.grad_fn) <= 3 * n + 1   # nothing n x c

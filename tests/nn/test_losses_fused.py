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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTIONS)
def test_the_kernels_give_the_numpy_paths_loss_and_gradient(monkeypatch, opts, reduction,
                                                            dtype):
    """(N, C) logits take ddp.kernels' row passes (x - max, the row sums, the gradient with
    the picked classes in one pass); the NumPy path the GPU runs gives the same loss and
    gradient, a NaN logit included (its row's loss and gradient NaN, the others' not)."""
    from ddp import kernels
    rng = np.random.default_rng(3)
    data = (rng.standard_normal((6, 4)) * 4).astype(dtype)
    data[4, 1] = np.nan
    y = ddp.tensor(rng.integers(0, 4, 6))
    g = rng.standard_normal(6 if reduction == "none" else ()).astype(dtype)

    def run():
        x = ddp.tensor(data, requires_grad=True)
        kwargs = dict(opts)
        if "weight" in kwargs:
            kwargs["weight"] = ddp.tensor(kwargs["weight"], dtype=ddp.from_numpy(data).dtype)
        loss = F.cross_entropy(x, y, reduction=reduction, **kwargs)
        loss.backward(ddp.tensor(g))
        return loss.detach().numpy(), x.grad.numpy()
    from ddp.kernels import softmax
    calls = []
    original = softmax.cross_entropy_grad
    monkeypatch.setattr(softmax, "cross_entropy_grad", lambda *a: calls.append(a) or original(*a))
    got = run()
    assert len(calls) == 1
    monkeypatch.setattr(kernels, "_enabled", False)
    with np.errstate(invalid="ignore"):   # (the NumPy path's NaN - NaN)
        want = run()
    assert len(calls) == 1
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, **tol)
    if reduction == "none":
        assert np.isnan(got[0][4]) and not np.isnan(np.delete(got[0], 4)).any()
    assert np.isnan(got[1][4]).all() and np.isfinite(np.delete(got[1], 4, axis=0)).all()

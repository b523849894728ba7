"""Softmax and log-softmax along the last axis take ddp.kernels' row passes on the CPU; the
NumPy path (the GPU's, and any other axis) must give the same values and gradients. Their
gradients against finite differences are in test_ops_grad.py (float64: the kernels' path)."""
import numpy as np
import pytest

import ddp
import ddp.nn.functional as F
from ddp import kernels


def _run(fn, data, g, dim):
    x = ddp.tensor(data, requires_grad=True)
    y = fn(x, dim=dim)
    y.backward(ddp.tensor(g).transpose(0, -1).contiguous().transpose(0, -1))  # non-contiguous
    return y.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax], ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 300), (6, 1), (2, 40)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_kernels_give_the_numpy_paths_values_and_gradients(monkeypatch, fn, shape, dtype):
    """Short rows (the kernel's row maxima) and long ones (NumPy's), a -inf score, a row of
    them (NaN, as in NumPy), a NaN (its row NaN, the others not)."""
    rng = np.random.default_rng(0)
    data = (rng.standard_normal(shape) * 5).astype(dtype)
    rows = data.reshape(-1, shape[-1])
    rows[0, 0] = -np.inf
    if len(rows) > 3:
        rows[2] = -np.inf
        rows[3, -1] = np.nan
    g = rng.standard_normal(shape).astype(dtype)
    spy = []
    from ddp.kernels import softmax
    monkeypatch.setattr(softmax, "_subtract_rows", lambda *a, f=softmax._subtract_rows:
                        spy.append(1) or f(*a))
    with np.errstate(invalid="ignore"):   # (-inf - -inf: the NumPy path warns)
        got = _run(fn, data, g, -1)
        assert spy, "the kernels did not run"
        monkeypatch.setattr(kernels, "_enabled", False)
        want = _run(fn, data, g, -1)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, **tol)
    if len(rows) > 3:
        assert np.isnan(got[0].reshape(rows.shape)[3]).all()
        assert np.isfinite(got[1].reshape(rows.shape)[1]).all()


def test_other_axes_keep_the_numpy_path(monkeypatch):
    spy = []
    from ddp.kernels import softmax
    monkeypatch.setattr(softmax, "softmax", lambda *a: spy.append(a))
    y = F.softmax(ddp.randn(3, 4, 5), dim=1)
    assert not spy and np.allclose(y.sum(1).numpy(), 1, rtol=1e-6)


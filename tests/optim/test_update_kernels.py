"""SGD's and Adam's updates on the CPU are ddp.kernels.optim's one pass; they must give the
NumPy path's parameters and state to the bit (the trajectories PyTorch's tests pin)."""
import numpy as np
import pytest

from ddp import kernels
from ddp.optim.adam import adam_update
from ddp.optim.sgd import sgd_update

OPTIONS = [dict(momentum=0.9, dampening=0, nesterov=False, weight_decay=0, maximize=False),
           dict(momentum=0.9, dampening=0.1, nesterov=False, weight_decay=1e-4, maximize=True),
           dict(momentum=0.8, dampening=0, nesterov=True, weight_decay=1e-2, maximize=False),
           dict(momentum=0, dampening=0, nesterov=False, weight_decay=1e-2, maximize=False),
           dict(momentum=0, dampening=0, nesterov=False, weight_decay=0, maximize=True)]


def _steps(dtype, opts, steps=3):
    rng = np.random.default_rng(1)
    params = [(rng.standard_normal(s).astype(dtype), rng.standard_normal(s).astype(dtype))
              for s in ((7, 5), (5,), (3, 4, 2))]
    bufs = [None] * len(params)
    for _ in range(steps):
        for i, (p, g) in enumerate(params):
            bufs[i] = sgd_update(p, g, bufs[i], lr=0.05, **opts)
    return [p for p, _ in params] + [b for b in bufs if b is not None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", OPTIONS)
def test_the_kernel_gives_the_numpy_paths_bits(monkeypatch, dtype, opts):
    from ddp.kernels import optim
    calls = []
    real = optim._sgd
    monkeypatch.setattr(optim, "_sgd", lambda *a: calls.append(1) or real(*a))
    got = _steps(dtype, opts)
    assert calls   # (the first step with momentum makes the buffer on the NumPy path)
    monkeypatch.setattr(kernels, "_enabled", False)
    want = _steps(dtype, opts)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and np.array_equal(a, b)


ADAM = [dict(weight_decay=0, amsgrad=False, maximize=False, decoupled_weight_decay=False),
        dict(weight_decay=1e-2, amsgrad=True, maximize=False, decoupled_weight_decay=False),
        dict(weight_decay=1e-2, amsgrad=False, maximize=True, decoupled_weight_decay=True),
        dict(weight_decay=0, amsgrad=True, maximize=True, decoupled_weight_decay=True)]


def _adam_steps(dtype, opts, beta1, steps=4):
    rng = np.random.default_rng(2)
    params = [tuple(rng.standard_normal(s).astype(dtype) for _ in range(2))
              for s in ((6, 4), (4,), (2, 3, 5))]
    state = [(np.zeros_like(p), np.zeros_like(p), np.zeros_like(p) if opts["amsgrad"] else None)
             for p, _ in params]
    for step in range(1, steps + 1):
        for (p, g), (m, v, vmax) in zip(params, state):
            adam_update(p, g, m, v, vmax, step, lr=0.01, beta1=beta1, beta2=0.99, eps=1e-8,
                        **opts)
    return [p for p, _ in params] + [a for st in state for a in st if a is not None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta1", [0.9, 0.3])   # (lerp's two formulas: weight 0.1 and 0.7)
@pytest.mark.parametrize("opts", ADAM)
def test_the_adam_kernel_gives_the_numpy_paths_bits(monkeypatch, dtype, beta1, opts):
    from ddp.kernels import optim
    calls = []
    real = optim._adam
    monkeypatch.setattr(optim, "_adam", lambda *a: calls.append(1) or real(*a))
    got = _adam_steps(dtype, opts, beta1)
    assert calls
    monkeypatch.setattr(kernels, "_enabled", False)
    want = _adam_steps(dtype, opts, beta1)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and np.array_equal(a, b)

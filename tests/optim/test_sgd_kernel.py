"""SGD's update on the CPU is ddp.kernels.optim's one pass; it must give the NumPy path's
parameters and momentum buffers to the bit (the trajectories PyTorch's tests pin)."""
import numpy as np
import pytest

from ddp import kernels
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

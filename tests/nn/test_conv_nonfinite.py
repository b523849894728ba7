"""Convolutions of inputs that hold infinities give PyTorch's infinities, not NaN: the fast
forms (Winograd's transforms, the correlations of zero-padded patches, the sub-pixel phases'
zero taps) add inf and -inf or multiply inf by a padding zero where PyTorch's sums never do.
ddp takes the patches' exact sums for such inputs (forward) and recomputes a weight gradient
that is not finite by direct sums (backward), on the host (a GPU is not asked: a wait). Checked against PyTorch's recorded answers
(float32 on the CPU, which sums over the taps inside the image only), with ddp's CPU kernels
and on the NumPy path the GPU runs: the same values, and infinities and NaN in the same places.
"""
import numpy as np
import pytest

import ddp
from ddp import kernels

CASES = [  # (module, in, out, kwargs): the fast form each one takes for a finite input
    ("Conv2d", 16, 32, dict(kernel_size=3, padding=1)),             # Winograd F(2x2, 3x3)
    ("Conv2d", 16, 8, dict(kernel_size=5, padding=2)),              # g's padded patches (gw)
    ("Conv2d", 8, 8, dict(kernel_size=3, padding=1, groups=2)),     # groups: the NumPy path
    ("Conv2d", 16, 8, dict(kernel_size=3, stride=2, padding=1)),    # strided patches
    ("ConvTranspose2d", 8, 16, dict(kernel_size=3, stride=1, padding=1)),   # flipped kernel
    ("ConvTranspose2d", 8, 16, dict(kernel_size=3, stride=2, padding=1)),   # zero taps
    ("ConvTranspose2d", 32, 16, dict(kernel_size=4, stride=2, padding=1)),  # phases (gw)
]


def _inputs(c_in):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, c_in, 10, 10)).astype(np.float32)
    x[0, 0, 4, 5] = np.inf            # inside the image
    x[1, c_in - 1, 0, 0] = -np.inf    # at a corner, next to the padding
    g = rng.standard_normal((2, 64, 20, 20)).astype(np.float32)   # cut to the output's shape
    return x, g


def _run(lib, name, c_in, c_out, kw, state=None):
    """(output, input's, weight's and bias's gradients) for the upstream gradient of
    :func:`_inputs`; ``state``: the weights (else drawn by the seeded library)."""
    x, g = _inputs(c_in)
    module = getattr(lib.nn, name)(c_in, c_out, **kw)
    if state is not None:
        module.load_state_dict({k: lib.tensor(v) for k, v in state.items()})
    xt = lib.tensor(x, requires_grad=True)
    y = module(xt)
    n, c, h, w = y.shape
    y.backward(lib.tensor(np.ascontiguousarray(g[:n, :c, :h, :w])))
    return {"y": y.detach().numpy(), "gx": xt.grad.numpy(),
            "gw": module.weight.grad.numpy(), "gb": module.bias.grad.numpy(),
            "state": {k: v.detach().numpy() for k, v in module.state_dict().items()}}


def _same_values(got, want, what):
    """Equal where finite; infinities of the same sign and NaN in the same places."""
    for kind, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        np.testing.assert_array_equal(test(got), test(want), err_msg=f"{what}: {kind}")
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-4, atol=2e-4, err_msg=what)


@pytest.mark.parametrize("name, c_in, c_out, kw", CASES, ids=lambda v: repr(v))
def test_infinite_inputs_give_torchs_infinities(oracle, monkeypatch, name, c_in, c_out, kw):
    ref = oracle(lambda torch: _run(torch, name, c_in, c_out, kw))
    assert np.isinf(ref["y"]).any() and np.isinf(ref["gw"]).any()   # the case tests something
    assert np.isfinite(ref["gw"]).any()
    for path in ("kernels", "numpy"):
        if path == "numpy":
            monkeypatch.setattr(kernels, "_enabled", False)
        with np.errstate(invalid="ignore", over="ignore"):
            got = _run(ddp, name, c_in, c_out, kw, state=ref["state"])
        for key in ("y", "gx", "gw", "gb"):
            _same_values(got[key], ref[key], f"{name}{kw} {path}: {key}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, "bfloat16"])
def test_finite_on_host_sees_inf_and_nan(dtype):
    a = np.full(1000, 300.0, ddp.backend.to_numpy_dtype(getattr(ddp, dtype))
                if isinstance(dtype, str) else dtype)   # (float16: 300 squared overflows)
    assert ddp.backend.finite_on_host(a)
    for bad in (np.inf, -np.inf, np.nan):
        b = a.copy()
        b[517] = bad
        assert not ddp.backend.finite_on_host(b.reshape(10, 100))

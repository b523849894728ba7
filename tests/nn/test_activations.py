"""Activations: ``ddp.nn.functional`` activations and their modules.

Each is checked three ways: against a NumPy formula, by gradcheck (and gradgradcheck for the
fused primitives) in float64, and, when PyTorch is installed, against ``torch`` for values and
gradients. Also: stability at +-1e4, erf's accuracy, in-place variants, module reprs, errors.
"""
import math
import warnings

import numpy as np
import pytest

import ddp
import ddp.nn as nn
import ddp.nn.functional as F
from ddp.autograd import gradcheck, gradgradcheck
from ddp.nn.functional._activations import erf

RNG = np.random.default_rng(0)


def arr(t):
    return t.detach().numpy()


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_softplus(x, beta=1.0, threshold=20.0):
    return np.where(beta * x > threshold, x, np.log1p(np.exp(beta * x)) / beta)


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_glu(x, axis):
    a, b = np.split(x, 2, axis=axis)
    return a * np_sigmoid(b)


NP_ERF = np.vectorize(math.erf)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

# name, kwargs, NumPy formula
CASES = [
    ("relu", {}, lambda x: np.maximum(x, 0)),
    ("relu6", {}, lambda x: np.clip(x, 0, 6)),
    ("leaky_relu", {}, lambda x: np.where(x > 0, x, 0.01 * x)),
    ("leaky_relu", {"negative_slope": 0.3}, lambda x: np.where(x > 0, x, 0.3 * x)),
    ("elu", {}, lambda x: np.where(x > 0, x, np.expm1(x))),
    ("elu", {"alpha": 0.5}, lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    ("selu", {}, lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x))),
    ("celu", {"alpha": 2.0}, lambda x: np.maximum(x, 0) + np.minimum(0, 2 * np.expm1(x / 2))),
    ("gelu", {}, lambda x: 0.5 * x * (1 + NP_ERF(x / math.sqrt(2)))),
    ("gelu", {"approximate": "tanh"},
     lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    ("silu", {}, lambda x: x * np_sigmoid(x)),
    ("mish", {}, lambda x: x * np.tanh(np.log1p(np.exp(x)))),
    ("sigmoid", {}, np_sigmoid),
    ("tanh", {}, np.tanh),
    ("softplus", {}, np_softplus),
    ("softplus", {"beta": 2.0, "threshold": 1.0}, lambda x: np_softplus(x, 2.0, 1.0)),
    ("softsign", {}, lambda x: x / (1 + np.abs(x))),
    ("logsigmoid", {}, lambda x: np.log(np_sigmoid(x))),
    ("hardtanh", {}, lambda x: np.clip(x, -1, 1)),
    ("hardtanh", {"min_val": -0.5, "max_val": 2.0}, lambda x: np.clip(x, -0.5, 2.0)),
    ("hardswish", {}, lambda x: x * np.clip(x + 3, 0, 6) / 6),
    ("hardsigmoid", {}, lambda x: np.clip(x + 3, 0, 6) / 6),
    ("threshold", {"threshold": 0.2, "value": -3.0}, lambda x: np.where(x > 0.2, x, -3.0)),
    ("softshrink", {}, lambda x: np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0))),
    ("softshrink", {"lambd": 2.0}, lambda x: np.sign(x) * np.maximum(np.abs(x) - 2, 0)),
    ("hardshrink", {"lambd": 1.5}, lambda x: np.where(np.abs(x) > 1.5, x, 0)),
    ("tanhshrink", {}, lambda x: x - np.tanh(x)),
    ("glu", {}, lambda x: np_glu(x, -1)),
    ("glu", {"dim": 0}, lambda x: np_glu(x, 0)),
    ("softmax", {"dim": 1}, lambda x: np_softmax(x, 1)),
    ("softmax", {"dim": 0}, lambda x: np_softmax(x, 0)),
    ("softmin", {"dim": -1}, lambda x: np_softmax(-x, -1)),
    ("log_softmax", {"dim": 1}, lambda x: np.log(np_softmax(x, 1))),
    ("log_softmax", {"dim": 0}, lambda x: np.log(np_softmax(x, 0))),
]
IDS = [f"{n}-{kw}" for n, kw, _ in CASES]
# these are one fused primitive each: their backward formulas must be differentiable too
FUSED = {"leaky_relu", "elu", "selu", "celu", "gelu", "softplus", "logsigmoid", "hardtanh",
         "hardswish", "softmax", "softmin", "log_softmax", "mish"}


def sample(shape=(2, 4), scale=3.0, rng=RNG):
    """Values away from the kinks (0, +-1, +-3, 6, the thresholds) so finite differences hold."""
    x = rng.uniform(-scale, scale, shape)
    return np.where(np.abs(x - np.round(x)) < 0.05, x + 0.1, x)


@pytest.mark.parametrize("name,kwargs,ref", CASES, ids=IDS)
def test_forward_matches_numpy_formula(name, kwargs, ref):
    x = np.linspace(-7, 7, 24).reshape(4, 6)
    out = getattr(F, name)(ddp.tensor(x), **kwargs)
    assert out.dtype == ddp.float64
    np.testing.assert_allclose(arr(out), ref(x), rtol=1e-12, atol=1e-14)
    out32 = getattr(F, name)(ddp.tensor(x, dtype=ddp.float32), **kwargs)
    assert out32.dtype == ddp.float32
    np.testing.assert_allclose(arr(out32), ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,kwargs,ref", CASES, ids=IDS)
def test_gradcheck(name, kwargs, ref):
    x = ddp.tensor(sample(), requires_grad=True)
    fn = getattr(F, name)
    assert gradcheck(lambda t: fn(t, **kwargs), (x,))
    if name in FUSED:
        assert gradgradcheck(lambda t: fn(t, **kwargs), (x,))


@pytest.mark.parametrize("name,kwargs,ref", CASES, ids=IDS)
def test_matches_torch(oracle, name, kwargs, ref):
    rng = np.random.default_rng(0)
    x = sample((4, 4), scale=8.0, rng=rng)
    x[0, :] = [0.0, -3.0, 3.0, 1.0]  # the kinks: PyTorch's subgradient choices

    def run(lib):
        t = lib.tensor(x, requires_grad=True)
        out = getattr(lib.nn.functional, name)(t, **kwargs)
        out.backward(lib.tensor(np.random.default_rng(1).standard_normal(tuple(out.shape))))
        return {"out": out.detach().numpy(), "grad": t.grad.numpy()}
    ours, want = run(ddp), oracle(run)
    np.testing.assert_allclose(ours["out"], want["out"], rtol=1e-12, atol=1e-14)
    # torch's hardsigmoid scales its gradient by a float32 1/6: 1e-8 relative
    np.testing.assert_allclose(ours["grad"], want["grad"], rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("name,kwargs", [("relu", {}), ("leaky_relu", {}), ("elu", {}),
                                         ("selu", {}), ("celu", {}), ("gelu", {}),
                                         ("gelu", {"approximate": "tanh"}), ("silu", {}),
                                         ("mish", {}), ("sigmoid", {}), ("tanh", {}),
                                         ("softplus", {}), ("softsign", {}), ("logsigmoid", {}),
                                         ("hardswish", {}), ("softmax", {"dim": 0}),
                                         ("log_softmax", {"dim": 0}), ("softmin", {"dim": 0})])
@pytest.mark.parametrize("dtype", [ddp.float32, ddp.float64])
def test_stable_at_large_inputs(name, kwargs, dtype):
    x = ddp.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=dtype, requires_grad=True)
    out = getattr(F, name)(x, **kwargs)
    out.backward(ddp.ones_like(out))
    assert bool(out.isfinite().all()), arr(out)
    assert bool(x.grad.isfinite().all()), arr(x.grad)


def test_large_input_values():
    big = ddp.tensor([1e4, -1e4], dtype=ddp.float64)
    np.testing.assert_allclose(arr(F.softmax(big, dim=0)), [1.0, 0.0])
    np.testing.assert_allclose(arr(F.log_softmax(big, dim=0)), [0.0, -2e4])
    np.testing.assert_allclose(arr(F.softplus(big)), [1e4, 0.0])
    np.testing.assert_allclose(arr(F.logsigmoid(big)), [0.0, -1e4])
    np.testing.assert_allclose(arr(F.gelu(big)), [1e4, 0.0])
    np.testing.assert_allclose(arr(F.elu(big)), [1e4, -1.0])
    np.testing.assert_allclose(arr(F.mish(big)), [1e4, 0.0], atol=1e-300)


def test_softmax_rows_sum_to_one_and_dtype_argument():
    x = ddp.tensor(RNG.standard_normal((3, 5)), dtype=ddp.float32)
    out = F.softmax(x, dim=1, dtype=ddp.float64)
    assert out.dtype == ddp.float64
    np.testing.assert_allclose(arr(out.sum(1)), np.ones(3), rtol=1e-12)
    assert F.log_softmax(x, -1, dtype=ddp.float64).dtype == ddp.float64


def test_softmax_implicit_dim_warns_and_follows_pytorch():
    x = ddp.tensor(RNG.standard_normal((2, 3, 4)))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        out = F.softmax(x)
    np.testing.assert_allclose(arr(out), np_softmax(arr(x), 0))  # 3-D: dim 0, as PyTorch
    with pytest.warns(UserWarning):
        out = F.log_softmax(ddp.tensor(RNG.standard_normal((2, 3))))
    np.testing.assert_allclose(arr(out.exp().sum(1)), [1.0, 1.0])


def test_softmax_of_scalar_and_on_large_row():
    assert float(F.softmax(ddp.tensor(3.0), dim=0)) == 1.0
    x = ddp.tensor(RNG.standard_normal((4, 1000)) * 100)
    np.testing.assert_allclose(arr(F.log_softmax(x, 1).exp().sum(1)), np.ones(4), rtol=1e-12)


# --------------------------------------------------------------------------- erf

def test_erf_accuracy_float64():
    x = np.linspace(-6, 6, 120001)
    err = np.abs(arr(erf(ddp.tensor(x))) - NP_ERF(x))
    assert err.max() < 1e-14
    tiny = np.array([1e-300, 1e-20, 1e-8, -1e-8])
    np.testing.assert_allclose(arr(erf(ddp.tensor(tiny))), NP_ERF(tiny), rtol=1e-15)


def test_erf_special_values_and_float32():
    out = arr(erf(ddp.tensor([0.0, np.inf, -np.inf, 30.0, np.nan])))
    assert out[0] == 0 and out[1] == 1 and out[2] == -1 and out[3] == 1 and np.isnan(out[4])
    x = np.linspace(-5, 5, 1001).astype(np.float32)
    out32 = erf(ddp.tensor(x))
    assert out32.dtype == ddp.float32
    np.testing.assert_allclose(arr(out32), NP_ERF(x.astype(np.float64)), atol=3e-7)


def test_erf_gradients():
    x = ddp.tensor(RNG.uniform(-2, 2, 5), requires_grad=True)
    assert gradcheck(erf, (x,))
    assert gradgradcheck(erf, (x,))


# --------------------------------------------------------------------------- ReLU's kernels

def _relu_and_gradient(x, upstream):
    t = ddp.tensor(x, requires_grad=True)
    y = F.relu(t)
    if upstream == "sum":      # one value broadcast: the NumPy path's backward
        y.sum().backward()
    else:
        y.backward(ddp.tensor(np.random.default_rng(1).standard_normal(x.shape).astype(x.dtype)))
    return arr(y), arr(t.grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5, 6)])
@pytest.mark.parametrize("upstream", ["array", "sum"])
def test_relu_kernels_give_the_numpy_paths_values_and_gradients(monkeypatch, dtype, shape,
                                                                upstream):
    """ddp.kernels.elementwise's ReLU (a contiguous float input, and its backward where the
    upstream gradient is one too) against the NumPy path: zeros, infinities, a NaN input."""
    from ddp import kernels
    from ddp.kernels import elementwise
    x = np.random.default_rng(0).integers(-2, 3, shape).astype(dtype)
    x.reshape(-1)[:3] = [np.inf, -np.inf, np.nan]
    calls = []
    for name in ("relu_forward", "relu_backward"):
        monkeypatch.setattr(elementwise, name, lambda *a, f=getattr(elementwise, name), n=name,
                            **k: calls.append(n) or f(*a, **k))
    got = _relu_and_gradient(x, upstream)
    assert calls == ["relu_forward"] + (["relu_backward"] if upstream == "array" else [])
    monkeypatch.setattr(kernels, "_enabled", False)
    want = _relu_and_gradient(x, upstream)
    assert len(calls) == 1 + (upstream == "array")
    np.testing.assert_array_equal(got[0].reshape(-1)[:3], [np.inf, 0, np.nan])
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        # (at the NaN input the gradients part: the kernel passes it on, as PyTorch)
        keep = np.arange(a.size) != 2
        np.testing.assert_array_equal(a.reshape(-1)[keep], b.reshape(-1)[keep])


@pytest.mark.parametrize("path", ["kernels", "numpy"])
def test_relu_keeps_one_byte_an_element_for_backward(monkeypatch, path):
    """Between forward and backward ReLU holds where its output is at most 0 (a bool an
    element), not its float32 output: a quarter of the bytes, on both paths."""
    import tracemalloc
    from ddp import kernels
    if path == "numpy":
        monkeypatch.setattr(kernels, "_enabled", False)
    x = ddp.tensor(RNG.standard_normal((256, 1024)).astype(np.float32), requires_grad=True)
    F.relu(x).sum().backward()   # (a kernel's first call loads it)
    x.grad = None
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        loss = F.relu(x).sum()    # (the output itself is dropped once summed)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert x.numel() <= held < 1.1 * x.numel()
    loss.backward()
    np.testing.assert_array_equal(arr(x.grad), (arr(x) > 0).astype(np.float32))


@pytest.mark.parametrize("path", ["kernels", "numpy"])
def test_relu_backward_as_pytorch_at_nan_and_infinity(monkeypatch, path):
    """PyTorch 2.13: relu of [nan, -1, 2, 0] is [nan, 0, 2, 0]; from the upstream gradient
    [1, inf, 3, 4] its gradient is [1, 0, 3, 0] (threshold_backward: 0 where the output is at
    most 0, else the upstream gradient) — on the kernels' path and on the NumPy path (the
    GPU's)."""
    if path == "numpy":
        from ddp import kernels
        monkeypatch.setattr(kernels, "_enabled", False)
    for dtype in (np.float32, np.float64):
        x = ddp.tensor(np.array([np.nan, -1, 2, 0], dtype), requires_grad=True)
        y = F.relu(x)
        y.backward(ddp.tensor(np.array([1, np.inf, 3, 4], dtype)))
        np.testing.assert_array_equal(arr(y), [np.nan, 0, 2, 0])
        np.testing.assert_array_equal(arr(x.grad), [1, 0, 3, 0])


# --------------------------------------------------------------------------- in-place

@pytest.mark.parametrize("name,kwargs", [("relu", {}), ("relu6", {}), ("leaky_relu", {}),
                                         ("elu", {}), ("selu", {}), ("celu", {}), ("silu", {}),
                                         ("mish", {}), ("hardtanh", {}), ("hardswish", {}),
                                         ("hardsigmoid", {}),
                                         ("threshold", {"threshold": 0.0, "value": 1.0})])
def test_inplace_writes_into_input(name, kwargs):
    x = np.linspace(-4, 4, 8)
    expected = arr(getattr(F, name)(ddp.tensor(x), **kwargs))
    t = ddp.tensor(x)
    out = getattr(F, name)(t, inplace=True, **kwargs)
    assert out is t
    np.testing.assert_allclose(arr(t), expected)


def test_inplace_inside_graph_keeps_gradients():
    x = ddp.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    y = x * 2
    F.relu(y, inplace=True)
    F.leaky_relu_(y, 0.1)
    y.sum().backward()
    np.testing.assert_allclose(arr(x.grad), [0.0, 2.0, 2.0])


def test_inplace_on_leaf_requiring_grad_raises():
    x = ddp.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        F.relu(x, inplace=True)


# --------------------------------------------------------------------------- modules

@pytest.mark.parametrize("module,text", [
    (nn.ReLU(), "ReLU()"), (nn.ReLU(True), "ReLU(inplace=True)"),
    (nn.LeakyReLU(), "LeakyReLU(negative_slope=0.01)"),
    (nn.LeakyReLU(0.2, True), "LeakyReLU(negative_slope=0.2, inplace=True)"),
    (nn.ELU(), "ELU(alpha=1.0)"), (nn.CELU(2.0), "CELU(alpha=2.0)"), (nn.SELU(), "SELU()"),
    (nn.GELU(), "GELU(approximate='none')"), (nn.GELU("tanh"), "GELU(approximate='tanh')"),
    (nn.Softplus(), "Softplus(beta=1.0, threshold=20.0)"),
    (nn.Hardtanh(), "Hardtanh(min_val=-1.0, max_val=1.0)"), (nn.PReLU(), "PReLU(num_parameters=1)"),
    (nn.Softmax(dim=1), "Softmax(dim=1)"), (nn.LogSoftmax(dim=-1), "LogSoftmax(dim=-1)"),
    (nn.Softmin(), "Softmin(dim=None)"),
    (nn.Threshold(0.1, 2.0), "Threshold(threshold=0.1, value=2.0)"),
    (nn.GLU(), "GLU(dim=-1)"), (nn.SiLU(), "SiLU()"), (nn.Mish(), "Mish()"), (nn.Tanh(), "Tanh()"),
    (nn.Sigmoid(), "Sigmoid()"), (nn.Hardswish(), "Hardswish()"), (nn.Softsign(), "Softsign()"),
    (nn.Hardsigmoid(), "Hardsigmoid()"), (nn.LogSigmoid(), "LogSigmoid()"), (nn.ReLU6(), "ReLU6()"),
    (nn.Softshrink(), "Softshrink(0.5)"), (nn.Hardshrink(2.0), "Hardshrink(2.0)"),
    (nn.Tanhshrink(), "Tanhshrink()"), (nn.Softmax2d(), "Softmax2d()")])
def test_module_repr_as_pytorch(module, text):
    assert repr(module) == text


@pytest.mark.parametrize("module,name,kwargs", [
    (nn.ReLU(), "relu", {}), (nn.LeakyReLU(0.2), "leaky_relu", {"negative_slope": 0.2}),
    (nn.ELU(0.5), "elu", {"alpha": 0.5}), (nn.GELU("tanh"), "gelu", {"approximate": "tanh"}),
    (nn.Softplus(2.0, 5.0), "softplus", {"beta": 2.0, "threshold": 5.0}),
    (nn.Hardtanh(-2.0, 2.0), "hardtanh", {"min_val": -2.0, "max_val": 2.0}),
    (nn.Softmax(dim=0), "softmax", {"dim": 0}), (nn.LogSoftmax(1), "log_softmax", {"dim": 1}),
    (nn.Sigmoid(), "sigmoid", {}), (nn.Tanh(), "tanh", {}), (nn.SiLU(), "silu", {})])
def test_module_calls_functional(module, name, kwargs):
    x = ddp.tensor(sample((3, 4)))
    np.testing.assert_allclose(arr(module(x)), arr(getattr(F, name)(x, **kwargs)))


def test_softmax2d_normalises_channels():
    x = ddp.tensor(RNG.standard_normal((2, 3, 4, 5)))
    np.testing.assert_allclose(arr(nn.Softmax2d()(x)), np_softmax(arr(x), 1))
    np.testing.assert_allclose(arr(nn.Softmax2d()(x[0])), np_softmax(arr(x[0]), 0))
    with pytest.raises(ValueError, match="3D or 4D"):
        nn.Softmax2d()(ddp.ones(2, 3))


def test_inplace_function_variants():
    for fn, kwargs, ref in [(F.relu_, {}, "relu"), (F.elu_, {"alpha": 0.5}, "elu"),
                            (F.selu_, {}, "selu"), (F.celu_, {"alpha": 2.0}, "celu"),
                            (F.leaky_relu_, {"negative_slope": 0.2}, "leaky_relu"),
                            (F.hardtanh_, {"min_val": -0.5, "max_val": 0.5}, "hardtanh"),
                            (F.threshold_, {"threshold": 0.1, "value": 9.0}, "threshold")]:
        x = ddp.tensor(np.linspace(-2, 2, 6))
        expected = arr(getattr(F, ref)(x, **kwargs))
        assert fn(x, **kwargs) is x
        np.testing.assert_allclose(arr(x), expected)


def test_module_inplace():
    x = ddp.tensor([-1.0, 1.0])
    assert nn.ReLU(inplace=True)(x) is x and arr(x).tolist() == [0.0, 1.0]


def test_prelu_parameter_and_gradients():
    m = nn.PReLU(num_parameters=3, init=0.1).double()
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    np.testing.assert_allclose(arr(m.weight), [0.1] * 3)
    x = RNG.standard_normal((2, 3, 4))
    out = m(ddp.tensor(x))
    np.testing.assert_allclose(arr(out), np.where(x > 0, x, 0.1 * x))
    xt = ddp.tensor(x, requires_grad=True)
    w = ddp.tensor([0.2, 0.3, 0.4], dtype=ddp.float64, requires_grad=True)
    assert gradcheck(F.prelu, (xt, w))
    with pytest.raises(RuntimeError, match="Mismatch of parameter numbers"):
        F.prelu(ddp.randn(2, 4), ddp.ones(3))


def test_prelu_matches_torch(oracle):
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    w = np.array([0.2, -0.3, 0.4])

    def grads(lib):
        t, tw = lib.tensor(x, requires_grad=True), lib.tensor(w, requires_grad=True)
        lib.nn.functional.prelu(t, tw).pow(2).sum().backward()
        return t.grad.numpy(), tw.grad.numpy()
    (gx, gw), (tx, tw) = grads(ddp), oracle(grads)
    np.testing.assert_allclose(gx, tx, rtol=1e-12)
    np.testing.assert_allclose(gw, tw, rtol=1e-12)


def test_prelu_state_dict_loads_into_torch(oracle):
    m = nn.PReLU(4, init=0.7)
    ours = {k: arr(v) for k, v in m.state_dict().items()}

    def reference(torch):
        tm = torch.nn.PReLU(4)
        layout = [(k, tuple(v.shape), str(v.dtype)[6:]) for k, v in tm.state_dict().items()]
        tm.load_state_dict({k: torch.tensor(v) for k, v in ours.items()})
        return {"layout": layout, "weight": tm.weight.detach().numpy()}
    want = oracle(reference)
    # our keys, shapes and dtypes are torch's own PReLU(4)'s, and torch reads our values
    assert [(k, v.shape, v.dtype.name) for k, v in ours.items()] == \
        [(k, tuple(int(n) for n in shape), dtype) for k, shape, dtype in want["layout"]]
    np.testing.assert_allclose(want["weight"], np.full(4, 0.7, dtype=np.float32))


# --------------------------------------------------------------------------- errors

def test_bad_arguments_raise():
    with pytest.raises(RuntimeError, match="approximate"):
        F.gelu(ddp.ones(2), approximate="fast")
    with pytest.raises(RuntimeError, match="Halving dimension must be even"):
        F.glu(ddp.ones(2, 3))
    with pytest.raises(ValueError, match="min_val"):
        F.hardtanh(ddp.ones(2), 1.0, -1.0)
    with pytest.raises(IndexError):
        F.softmax(ddp.ones(2, 3), dim=2)


def test_no_warnings_on_normal_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.softmax(ddp.ones(2, 3), dim=1)
        nn.Softmax(dim=1)(ddp.ones(2, 3))


@pytest.mark.gpu
def test_gpu_matches_cpu():
    x = np.linspace(-5, 5, 40).reshape(4, 10)
    for name, kwargs, _ in CASES:
        cpu = ddp.tensor(x, requires_grad=True)
        gpu = ddp.tensor(x, device="cuda", requires_grad=True)
        out_c, out_g = getattr(F, name)(cpu, **kwargs), getattr(F, name)(gpu, **kwargs)
        assert out_g.device.type == "cuda"
        out_c.sum().backward()
        out_g.sum().backward()
        np.testing.assert_allclose(out_g.detach().cpu().numpy(), arr(out_c), rtol=1e-12,
                                   atol=1e-14, err_msg=name)
        np.testing.assert_allclose(gpu.grad.cpu().numpy(), arr(cpu.grad), rtol=1e-12,
                                   atol=1e-14, err_msg=name)

"""Autocast: per-op output dtypes (against torch.autocast('cpu') where torch imports, and hard
expectations), float32 master weights and gradients, accuracy, nesting, enabled=False, the
decorator form, thread-locality, the weight-cast cache, and the CUDA op table (run on CPU
arrays by routing them to the CUDA policy)."""
import threading

import numpy as np
import pytest

import ddp
import ddp.nn.functional as F
from ddp.amp import autocast_mode
from ddp.ops import autocast as autocast_hook


def _inputs(M, low=None):
    """The same random inputs as tensors of framework ``M`` (ddp or torch); floating ones in
    ``low`` (a dtype name) when given, else float32."""
    rng = np.random.default_rng(0)
    f = {
        "x": rng.standard_normal((4, 8)), "w": rng.standard_normal((6, 8)),
        "b": rng.standard_normal(6), "pos": rng.random((4, 8)) + 0.1, "p01": rng.random((4, 8)),
        "img": rng.standard_normal((2, 3, 8, 8)), "k": rng.standard_normal((4, 3, 3, 3)),
        "kt": rng.standard_normal((3, 4, 3, 3)), "seq": rng.standard_normal((2, 3, 9)),
        "k1": rng.standard_normal((4, 3, 3)), "a3": rng.standard_normal((2, 4, 8)),
        "b3": rng.standard_normal((2, 8, 5)), "g3": rng.standard_normal(3) + 1,
        "x32": rng.standard_normal((4, 8)),
    }
    out = {}
    for name, arr in f.items():
        t = M.tensor(arr.astype(np.float32))
        if low is not None and name not in ("g3", "x32"):  # params / a float32 partner stay fp32
            t = t.to(getattr(M, low))
        out[name] = t
    out["t"] = M.tensor(np.array([0, 5, 2, 1]), dtype=M.long)
    return out


def _ops(M):
    Fm = M.nn.functional
    return {
        "matmul": lambda v: M.matmul(v["x"], v["w"].t()),
        "__matmul__": lambda v: v["x"] @ v["w"].t(),
        "mm": lambda v: M.mm(v["x"], v["w"].t()),
        "bmm": lambda v: M.bmm(v["a3"], v["b3"]),
        "linear": lambda v: Fm.linear(v["x"], v["w"], v["b"]),
        "conv1d": lambda v: Fm.conv1d(v["seq"], v["k1"], padding=1),
        "conv2d": lambda v: Fm.conv2d(v["img"], v["k"], padding=1),
        "conv_transpose2d": lambda v: Fm.conv_transpose2d(v["img"], v["kt"], stride=2),
        "prelu": lambda v: Fm.prelu(v["x"], M.tensor([0.25])),
        "softmax": lambda v: Fm.softmax(v["x"], 1),
        "Tensor.softmax": lambda v: v["x"].softmax(1),
        "log_softmax": lambda v: Fm.log_softmax(v["x"], 1),
        "softmin": lambda v: Fm.softmin(v["x"], 1),
        "exp": lambda v: v["x"].exp(),
        "log": lambda v: v["pos"].log(),
        "log2": lambda v: v["pos"].log2(),
        "pow": lambda v: v["x"] ** 2,
        "rpow": lambda v: 2 ** v["x"],
        "rtruediv": lambda v: 1 / v["pos"],
        "sqrt": lambda v: v["pos"].sqrt(),
        "rsqrt": lambda v: v["pos"].rsqrt(),
        "reciprocal": lambda v: v["pos"].reciprocal(),
        "expm1": lambda v: v["x"].expm1(),
        "log1p": lambda v: v["pos"].log1p(),
        "tanh": lambda v: v["x"].tanh(),
        "sigmoid": lambda v: v["x"].sigmoid(),
        "relu": lambda v: Fm.relu(v["x"]),
        "softplus": lambda v: Fm.softplus(v["x"]),
        "sum": lambda v: v["x"].sum(),
        "mean": lambda v: v["x"].mean(),
        "prod": lambda v: v["x"].prod(),
        "cumsum": lambda v: v["x"].cumsum(0),
        "norm": lambda v: v["x"].norm(),
        "logsumexp": lambda v: v["x"].logsumexp(1),
        "layer_norm": lambda v: Fm.layer_norm(v["x"], (8,)),
        "layer_norm_affine": lambda v: Fm.layer_norm(v["x"], (8,), M.ones(8), M.zeros(8)),
        "group_norm": lambda v: Fm.group_norm(v["img"], 3, v["g3"], M.zeros(3)),
        "batch_norm": lambda v: Fm.batch_norm(v["img"], M.zeros(3), M.ones(3), v["g3"],
                                              M.zeros(3), training=True),
        "cross_entropy": lambda v: Fm.cross_entropy(v["x"][:, :6], v["t"]),
        "nll_loss": lambda v: Fm.nll_loss(v["x"][:, :6], v["t"]),
        "mse_loss": lambda v: Fm.mse_loss(v["x"], v["pos"]),
        "l1_loss": lambda v: Fm.l1_loss(v["x"], v["pos"]),
        "smooth_l1_loss": lambda v: Fm.smooth_l1_loss(v["x"], v["pos"]),
        "huber_loss": lambda v: Fm.huber_loss(v["x"], v["pos"]),
        "bce_with_logits": lambda v: Fm.binary_cross_entropy_with_logits(v["x"], v["p01"]),
        "bce": lambda v: Fm.binary_cross_entropy(v["p01"], v["p01"]),
        "kl_div": lambda v: Fm.kl_div(v["x"], v["pos"], reduction="batchmean"),
        "pad_reflect": lambda v: Fm.pad(v["img"], (1, 1, 1, 1), mode="reflect"),
        "pad_constant": lambda v: Fm.pad(v["img"], (1, 1, 1, 1)),
        "max_pool2d": lambda v: Fm.max_pool2d(v["img"], 2),
        "avg_pool2d": lambda v: Fm.avg_pool2d(v["img"], 2),
        "adaptive_avg_pool2d": lambda v: Fm.adaptive_avg_pool2d(v["img"], 1),
        "interpolate": lambda v: Fm.interpolate(v["img"], scale_factor=2),
        "add_mixed": lambda v: v["x"] + v["x32"],
        "cat_mixed": lambda v: M.cat([v["x"], v["x32"]]),
        "stack_mixed": lambda v: M.stack([v["x"], v["x32"]]),
        "embedding": lambda v: Fm.embedding(v["t"], v["w"]),
    }


def _dtypes(M, low, autocast_dtype):
    """{op: output dtype name} under M.autocast('cpu', autocast_dtype)."""
    v = _inputs(M, low)
    out = {}
    with M.autocast("cpu", dtype=getattr(M, autocast_dtype)):
        for name, fn in _ops(M).items():
            out[name] = str(fn(v).dtype).split(".")[-1]
    return out


# ------------------------------------------------------------------------- against PyTorch

@pytest.mark.parametrize("autocast_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("inputs", [None, "low"])
def test_output_dtypes_match_torch_cpu_autocast(oracle, autocast_dtype, inputs):
    """Every op returns the dtype torch.autocast('cpu') gives, for float32 inputs (which ops
    run in low precision) and for low-precision inputs (which are widened to float32)."""
    low = None if inputs is None else autocast_dtype
    ours = _dtypes(ddp, low, autocast_dtype)
    theirs = oracle(lambda torch: _dtypes(torch, low, autocast_dtype))
    if low is not None:
        # torch.cat/stack raise for bfloat16 + float32 under float16 autocast ("Unexpected
        # floating ScalarType in at::autocast::prioritize"); ddp promotes to float32
        if autocast_dtype == "float16":
            theirs["cat_mixed"] = theirs["stack_mixed"] = "float32"
    assert ours == theirs


# ------------------------------------------------------------------------- hard expectations

LOWER_OPS = ["matmul", "__matmul__", "mm", "bmm", "linear", "conv1d", "conv2d",
             "conv_transpose2d", "prelu"]
FP32_OPS = ["cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
            "bce_with_logits", "bce", "kl_div", "prod", "pad_reflect", "add_mixed", "cat_mixed",
            "stack_mixed"]
KEEP_OPS = ["softmax", "Tensor.softmax", "log_softmax", "softmin", "layer_norm",
            "layer_norm_affine", "group_norm", "batch_norm", "exp", "log", "pow", "sum", "mean",
            "cumsum", "norm", "tanh", "relu", "max_pool2d", "pad_constant", "interpolate"]


@pytest.mark.parametrize("autocast_dtype", ["bfloat16", "float16"])
def test_cpu_policy_hard_expectations(autocast_dtype):
    from_fp32 = _dtypes(ddp, None, autocast_dtype)
    from_low = _dtypes(ddp, autocast_dtype, autocast_dtype)
    for op in LOWER_OPS:
        assert from_fp32[op] == autocast_dtype, op
        assert from_low[op] == autocast_dtype, op
    for op in FP32_OPS:
        assert from_fp32[op] == "float32", op
        assert from_low[op] == "float32", op
    for op in KEEP_OPS:  # not listed on the CPU: the input's dtype
        assert from_fp32[op] == "float32", op
        assert from_low[op] == autocast_dtype, op


def test_policy_table_documents_both_devices():
    cpu, cuda = ddp.amp.POLICIES["cpu"], ddp.amp.POLICIES["cuda"]
    for op in ("matmul", "linear", "conv1d", "conv2d", "conv_transpose2d", "prelu"):
        assert cpu[op] == cuda[op] == "lower_precision_fp"
    assert cpu["softmax"] == "keep" and cuda["softmax"] == "fp32"
    assert cpu["layer_norm"] == "keep" and cuda["layer_norm"] == "fp32"
    assert "exp" not in cpu and cuda["exp"] == "fp32"
    assert cpu["binary_cross_entropy"] == "fp32" and cuda["binary_cross_entropy"] == "banned"


def test_float64_and_integer_inputs_are_not_autocast():
    x = ddp.randn(3, 3, dtype=ddp.float64)
    with ddp.autocast("cpu"):
        assert (x @ x).dtype == ddp.float64
        assert F.cross_entropy(x, ddp.tensor([0, 1, 2])).dtype == ddp.float64
        assert (ddp.arange(4).reshape(2, 2) @ ddp.arange(4).reshape(2, 2)).dtype == ddp.int64


def test_explicit_dtype_argument_is_respected():
    x = ddp.randn(2, 5).bfloat16()
    with ddp.autocast("cpu"):
        assert F.softmax(x, 1, dtype=ddp.float64).dtype == ddp.float64
        assert x.sum(dtype=ddp.float64).dtype == ddp.float64


# ------------------------------------------------------------------------- master weights

def test_parameters_stay_float32_and_grads_arrive_float32():
    ddp.manual_seed(0)
    model = ddp.nn.Sequential(ddp.nn.Conv2d(3, 4, 3, padding=1, bias=False), ddp.nn.BatchNorm2d(4),
                              ddp.nn.ReLU(), ddp.nn.Flatten(), ddp.nn.Linear(4 * 6 * 6, 5),
                              ddp.nn.LayerNorm(5))
    x, y = ddp.randn(2, 3, 6, 6), ddp.tensor([1, 3])
    with ddp.autocast("cpu", dtype=ddp.bfloat16):
        out = model(x)
        loss = F.cross_entropy(out, y)
    assert out.dtype == ddp.bfloat16 and loss.dtype == ddp.float32
    loss.backward()
    for name, p in model.named_parameters():
        assert p.dtype == ddp.float32, name
        assert p.grad is not None and p.grad.dtype == ddp.float32, name
    # the gradients are those of the float32 model up to bfloat16 rounding
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for n, p in model.named_parameters():
        ref = p.grad.numpy()
        assert np.linalg.norm(grads[n] - ref) <= 5e-2 * np.linalg.norm(ref) + 1e-6, n


def test_rnn_matmuls_run_in_low_precision():
    ddp.manual_seed(0)
    for cls in (ddp.nn.LSTM, ddp.nn.GRU, ddp.nn.RNN):
        rnn = cls(8, 16)
        x = ddp.randn(5, 3, 8)
        ref, _ = rnn(x)
        with ddp.autocast("cpu", dtype=ddp.bfloat16):
            out, _ = rnn(x)
        err = float((out.float() - ref).abs().max())
        assert 0 < err < 3e-2, (cls.__name__, err)   # rounded, but close
        out.float().sum().backward()
        assert all(p.grad.dtype == ddp.float32 for p in rnn.parameters())


# ------------------------------------------------------------------------- accuracy

def test_lower_precision_matmul_numerics():
    """The product of the rounded inputs, accumulated in float32 and rounded once (what a
    bfloat16 GEMM with float32 accumulation gives): relative error below 1e-2 (bfloat16, 8 bits
    of mantissa) and 2e-3 (float16) against float32 for 64x64 matrices."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((64, 64), np.float32), rng.standard_normal((64, 64), np.float32)
    ref = a @ b
    for dt, tol in ((ddp.bfloat16, 1e-2), (ddp.float16, 2e-3)):
        with ddp.autocast("cpu", dtype=dt):
            out = ddp.tensor(a) @ ddp.tensor(b)
        assert out.dtype == dt
        got = out.float().numpy()
        exact = (a.astype(dt.np).astype(np.float32) @ b.astype(dt.np).astype(np.float32))
        np.testing.assert_array_equal(got, exact.astype(dt.np).astype(np.float32))
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < tol


def test_bfloat16_linear_close_to_torch(oracle):
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(s, np.float32) for s in ((32, 64), (48, 64), (48,)))
    with ddp.autocast("cpu"):
        ours = F.linear(ddp.tensor(x), ddp.tensor(w), ddp.tensor(b)).float().numpy()

    def reference(torch):
        with torch.autocast("cpu"):
            return torch.nn.functional.linear(torch.tensor(x), torch.tensor(w),
                                              torch.tensor(b)).float().numpy()
    theirs = oracle(reference)
    # both round the same float32-accumulated sums to bfloat16: at most one bf16 ulp apart
    np.testing.assert_allclose(ours, theirs, rtol=2 ** -7, atol=1e-2)


def test_training_under_autocast_reduces_the_loss():
    ddp.manual_seed(0)
    model = ddp.nn.Sequential(ddp.nn.Linear(10, 32), ddp.nn.ReLU(), ddp.nn.Linear(32, 3))
    opt = ddp.optim.Adam(model.parameters(), lr=1e-2)
    x = ddp.randn(64, 10)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    losses = []
    for _ in range(60):
        opt.zero_grad()
        with ddp.autocast("cpu"):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------------- the regions

def test_no_effect_outside_the_region():
    lin = ddp.nn.Linear(4, 4)
    x = ddp.randn(2, 4)
    assert not ddp.is_autocast_enabled("cpu")
    with ddp.autocast("cpu"):
        assert ddp.is_autocast_enabled("cpu") and not ddp.is_autocast_enabled("cuda")
        assert lin(x).dtype == ddp.bfloat16
    assert not ddp.is_autocast_enabled("cpu") and not autocast_mode.state.on
    assert lin(x).dtype == ddp.float32
    assert autocast_mode.state.cache == {}


def test_nesting_enabled_false_and_dtype_change():
    a = ddp.randn(3, 3)
    with ddp.autocast("cpu", dtype=ddp.bfloat16):
        assert (a @ a).dtype == ddp.bfloat16
        with ddp.autocast("cpu", enabled=False):
            assert not ddp.is_autocast_enabled("cpu")
            assert (a @ a).dtype == ddp.float32
            with ddp.autocast("cpu", dtype=ddp.float16):
                assert ddp.get_autocast_dtype("cpu") == ddp.float16
                assert (a @ a).dtype == ddp.float16
            assert (a @ a).dtype == ddp.float32
        assert ddp.get_autocast_dtype("cpu") == ddp.bfloat16
        assert (a @ a).dtype == ddp.bfloat16
    assert (a @ a).dtype == ddp.float32


def test_state_restored_after_an_exception():
    with pytest.raises(ValueError):
        with ddp.autocast("cpu", dtype=ddp.float16):
            raise ValueError
    assert not ddp.is_autocast_enabled("cpu")
    assert ddp.get_autocast_dtype("cpu") == ddp.bfloat16
    assert autocast_mode.state.nesting == 0


def test_decorator_form_and_recursion():
    ac = ddp.autocast("cpu")

    @ac
    def f(x, depth):
        y = x @ x
        return f(x, depth - 1) if depth else y

    x = ddp.randn(2, 2)
    assert f(x, 3).dtype == ddp.bfloat16
    assert not ddp.is_autocast_enabled("cpu")  # the same instance entered 4 times, all undone
    assert (x @ x).dtype == ddp.float32

    class Net(ddp.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = ddp.nn.Linear(3, 3)

        @ddp.autocast("cpu", dtype=ddp.float16)
        def forward(self, x):
            return self.fc(x)

    assert Net()(ddp.randn(1, 3)).dtype == ddp.float16
    with pytest.raises(TypeError):
        ddp.autocast("cpu")(3)


def test_state_is_per_thread():
    seen = {}

    def worker():
        seen["enabled"] = ddp.is_autocast_enabled("cpu")
        seen["dtype"] = (ddp.randn(2, 2) @ ddp.randn(2, 2)).dtype

    with ddp.autocast("cpu"):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert seen == {"enabled": False, "dtype": ddp.float32}


def test_functional_state_api():
    ddp.set_autocast_enabled("cpu", True)
    try:
        assert ddp.is_autocast_enabled("cpu") and ddp.is_autocast_cpu_enabled()
        assert (ddp.ones(2, 2) @ ddp.ones(2, 2)).dtype == ddp.bfloat16
    finally:
        ddp.set_autocast_enabled("cpu", False)
    assert (ddp.ones(2, 2) @ ddp.ones(2, 2)).dtype == ddp.float32
    assert ddp.get_autocast_gpu_dtype() == ddp.float16
    assert ddp.amp.is_autocast_available("cpu") and not ddp.amp.is_autocast_available("xla")


def test_argument_errors_and_disabling():
    with pytest.raises(ValueError):
        ddp.autocast(ddp.device("cpu"))
    with pytest.raises(RuntimeError, match="unsupported autocast device_type"):
        ddp.autocast("tpu")
    with pytest.warns(UserWarning, match="not supported"):
        ac = ddp.autocast("cpu", dtype=ddp.float64)
    with ac:
        assert not ddp.is_autocast_enabled("cpu")


@pytest.mark.skipif(ddp.cuda.is_available(), reason="checks the no-GPU fallback")
def test_cuda_autocast_without_a_gpu_warns_and_disables():
    with pytest.warns(UserWarning, match="CUDA is not available"):
        ac = ddp.autocast("cuda")
    with ac:
        assert not ddp.is_autocast_enabled("cuda")
    with pytest.warns(UserWarning):
        legacy = ddp.cuda.amp.autocast()
    assert legacy.device == "cuda" and legacy.fast_dtype == ddp.float16


def test_legacy_cuda_amp_names():
    from ddp.cuda.amp import GradScaler, autocast  # ddp.cuda is a module; this still imports
    assert autocast is ddp.cuda.amp.autocast and GradScaler is ddp.cuda.amp.GradScaler
    assert issubclass(autocast, ddp.amp.autocast) and issubclass(GradScaler, ddp.amp.GradScaler)
    assert ddp.autocast is ddp.amp.autocast


def test_weight_cast_cache():
    """A parameter is cast once per region (while its version is unchanged); the cache is
    dropped when the outermost region exits."""
    lin = ddp.nn.Linear(4, 4)
    x = ddp.randn(2, 4)

    def casts():
        return {id(e[0]): e[2] for e in autocast_mode.state.cache.values()}

    with ddp.autocast("cpu"):
        lin(x)
        first = casts()
        assert set(first) == {id(lin.weight), id(lin.bias)}
        lin(x)
        assert all(casts()[k] is first[k] for k in first)
        with ddp.no_grad():
            lin.weight.add_(1.0)  # a new version of the weight: cast again
        y = lin(x)
        assert casts()[id(lin.weight)] is not first[id(lin.weight)]
        assert casts()[id(lin.bias)] is first[id(lin.bias)]
    assert autocast_mode.state.cache == {}
    y.float().sum().backward()  # cached casts stay on the graph: gradients reach the leaves
    assert lin.weight.grad is not None and lin.bias.grad is not None
    with ddp.autocast("cpu", cache_enabled=False):
        lin(x)
        assert autocast_mode.state.cache == {}


def test_autocast_inputs_reports_the_casts():
    a, b = ddp.ones(2, 2), ddp.ones(2, 2).double()
    assert ddp.amp.autocast_inputs("matmul", a, b) == (a, b)  # autocast off
    with ddp.autocast("cpu"):
        ca, cb = ddp.amp.autocast_inputs("matmul", a, b)
        assert ca.dtype == ddp.bfloat16 and cb is b
        (c,) = ddp.amp.autocast_inputs("mse_loss", a.bfloat16())
        assert c.dtype == ddp.float32
        assert ddp.amp.autocast_inputs("relu", a) == (a,)


def test_custom_fwd_and_bwd():
    seen = {}

    class Mul(ddp.autograd.Function):
        @staticmethod
        @ddp.amp.custom_fwd(device_type="cpu", cast_inputs=ddp.float32)
        def forward(ctx, x, w):
            seen["fwd"] = (x.dtype, ddp.is_autocast_enabled("cpu"))
            ctx.save_for_backward(x, w)
            return x @ w

        @staticmethod
        @ddp.amp.custom_bwd(device_type="cpu")
        def backward(ctx, g):
            seen["bwd"] = ddp.is_autocast_enabled("cpu")
            x, w = ctx.saved_tensors
            return g @ w.t(), x.t() @ g

    x = ddp.randn(2, 3).bfloat16()
    w = ddp.randn(3, 2, requires_grad=True)
    with ddp.autocast("cpu"):
        y = Mul.apply(x, w)
    assert seen["fwd"] == (ddp.float32, False) and y.dtype == ddp.float32
    y.sum().backward()
    assert seen["bwd"] is False and w.grad.dtype == ddp.float32


# ------------------------------------------------------------------------- the CUDA table

@pytest.fixture
def cuda_policy(monkeypatch):
    """CPU arrays follow the CUDA op table (float16, computed natively), as on a GPU."""
    monkeypatch.setattr(autocast_hook, "_on_cuda", lambda array: True)
    ddp.set_autocast_enabled("cuda", True)
    yield
    ddp.set_autocast_enabled("cuda", False)


def test_cuda_policy_table(cuda_policy):
    v = _inputs(ddp, "float16")
    v32 = _inputs(ddp)
    ops = _ops(ddp)
    expect = {op: "float16" for op in LOWER_OPS}
    expect.update(dict.fromkeys(
        ["softmax", "Tensor.softmax", "log_softmax", "softmin", "exp", "log", "log2", "pow", "rpow",
         "rtruediv", "rsqrt", "reciprocal", "expm1", "log1p", "softplus", "sum", "prod", "cumsum",
         "norm", "logsumexp", "layer_norm", "layer_norm_affine", "group_norm", "cross_entropy",
         "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "bce_with_logits",
         "kl_div", "interpolate", "add_mixed", "cat_mixed", "stack_mixed"], "float32"))
    expect.update(dict.fromkeys(["batch_norm", "mean", "tanh", "sigmoid", "relu", "sqrt",
                                 "max_pool2d", "pad_reflect"], "float16"))
    for op, dt in expect.items():
        assert str(ops[op](v).dtype) == "ddp." + dt, op
    for op in LOWER_OPS:  # float32 inputs go down to float16 too
        assert ops[op](v32).dtype == ddp.float16, op
    a = ddp.randn(3, dtype=ddp.float16)
    assert a.dot(ddp.randn(3)).dtype == ddp.float32  # promote
    assert a.dot(a).dtype == ddp.float16
    with pytest.raises(RuntimeError, match="unsafe to autocast"):
        F.binary_cross_entropy(v["p01"], v["p01"])
    with ddp.autocast("cpu"):  # the CPU region does not touch "CUDA" tensors
        assert (v32["x"] @ v32["w"].t()).dtype == ddp.float16


def test_cuda_policy_gradients_are_float32(cuda_policy):
    lin = ddp.nn.Linear(8, 4)
    out = lin(ddp.randn(3, 8))
    assert out.dtype == ddp.float16
    F.cross_entropy(out, ddp.tensor([0, 1, 2])).backward()
    assert lin.weight.grad.dtype == ddp.float32 and lin.bias.grad.dtype == ddp.float32

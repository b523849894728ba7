"""BatchNorm, LayerNorm, GroupNorm: outputs against NumPy formulas, gradients against finite
differences (float64 gradcheck), running statistics over several steps (momentum and the
cumulative average), train/eval behaviour, state dicts, errors, and PyTorch parity.
"""
import numpy as np
import pytest

import ddp
import ddp.nn as nn
import ddp.nn.functional as F
from ddp.autograd import gradcheck


def arr(t):
    return np.asarray(t.detach().cpu().numpy())


def rand(*shape, seed=0, requires_grad=True, scale=1.0, shift=0.0):
    data = np.random.default_rng(seed).standard_normal(shape) * scale + shift
    return ddp.tensor(data, requires_grad=requires_grad)


def np_norm(x, axes, eps=1e-5):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


# ============================================================== batch norm

@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 3, 4, 2)])
def test_batch_norm_training_output_and_running_stats(shape):
    x = rand(*shape, scale=2.0, shift=1.0)
    w, b = rand(3, seed=1), rand(3, seed=2)
    rm, rv = ddp.zeros(3, dtype=ddp.float64), ddp.ones(3, dtype=ddp.float64)
    y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.2)
    xn = arr(x)
    axes = (0,) + tuple(range(2, xn.ndim))
    bshape = (1, 3) + (1,) * (xn.ndim - 2)
    ref = np_norm(xn, axes) * arr(w).reshape(bshape) + arr(b).reshape(bshape)
    np.testing.assert_allclose(arr(y), ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(arr(rm), 0.2 * xn.mean(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(arr(rv), 0.8 + 0.2 * xn.var(axis=axes, ddof=1), rtol=1e-12)


def test_batch_norm_eval_uses_running_stats():
    x = rand(4, 3, 2)
    rm, rv = ddp.tensor([0.5, -1.0, 2.0]), ddp.tensor([4.0, 0.25, 1.0])
    w, b = rand(3, seed=1), rand(3, seed=2)
    y = F.batch_norm(x, rm.double(), rv.double(), w, b, training=False, eps=1e-3)
    ref = (arr(x) - arr(rm)[:, None]) / np.sqrt(arr(rv)[:, None] + 1e-3) * arr(w)[:, None] \
        + arr(b)[:, None]
    np.testing.assert_allclose(arr(y), ref, rtol=1e-6)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_gradcheck(training, affine):
    x = rand(4, 3, 2, 2, scale=1.5, shift=0.5)
    w, b = (rand(3, seed=1), rand(3, seed=2)) if affine else (None, None)
    rm, rv = rand(3, seed=3, requires_grad=False), rand(3, seed=4, requires_grad=False).abs()

    def fn(*t):
        return F.batch_norm(t[0], rm.clone(), rv.clone(), *t[1:], training=training)
    assert gradcheck(fn, (x, w, b) if affine else (x,))


def test_batchnorm_module_train_then_eval_three_steps():
    m = nn.BatchNorm1d(3, momentum=0.3).double()
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(3):
        x = rand(5, 3, seed=step, scale=step + 1.0, shift=step)
        y = m(x)
        xn = arr(x)
        rm = 0.7 * rm + 0.3 * xn.mean(0)
        rv = 0.7 * rv + 0.3 * xn.var(0, ddof=1)
        np.testing.assert_allclose(arr(y), np_norm(xn, (0,)), atol=1e-10)
    np.testing.assert_allclose(arr(m.running_mean), rm, rtol=1e-12)
    np.testing.assert_allclose(arr(m.running_var), rv, rtol=1e-12)
    assert int(m.num_batches_tracked) == 3 and m.num_batches_tracked.dtype == ddp.int64
    m.eval()
    x = rand(2, 3, seed=9)
    np.testing.assert_allclose(arr(m(x)), (arr(x) - rm) / np.sqrt(rv + 1e-5), atol=1e-10)
    assert int(m.num_batches_tracked) == 3  # eval steps are not counted


def test_batchnorm_momentum_none_is_cumulative_average():
    m = nn.BatchNorm2d(2, momentum=None).double()
    xs = [rand(3, 2, 2, 2, seed=s, shift=s) for s in range(3)]
    for x in xs:
        m(x)
    means = [arr(x).mean(axis=(0, 2, 3)) for x in xs]
    varis = [arr(x).var(axis=(0, 2, 3), ddof=1) for x in xs]
    # factor 1/k at step k: the plain average of the batch statistics (and of the initial 1s
    # weighted by zero from step one on)
    np.testing.assert_allclose(arr(m.running_mean), np.mean(means, axis=0), rtol=1e-12)
    np.testing.assert_allclose(arr(m.running_var), np.mean(varis, axis=0), rtol=1e-12)


def test_batchnorm_without_running_stats_always_uses_batch():
    m = nn.BatchNorm1d(3, track_running_stats=False, affine=False).double()
    assert m.running_mean is None and m.num_batches_tracked is None
    assert list(m.state_dict()) == [] and list(m.parameters()) == []
    x = rand(4, 3)
    m.eval()
    np.testing.assert_allclose(arr(m(x)), np_norm(arr(x), (0,)), atol=1e-10)


def test_batchnorm_gradients_flow_to_parameters():
    m = nn.BatchNorm2d(3).double()
    x = rand(2, 3, 4, 4)
    (m(x) * rand(2, 3, 4, 4, seed=7, requires_grad=False)).sum().backward()
    assert m.weight.grad.shape == (3,) and m.bias.grad.shape == (3,) and x.grad is not None


def test_batchnorm_output_may_be_modified_in_place():
    m = nn.BatchNorm2d(3)
    x = ddp.randn(2, 3, 4, 4, requires_grad=True)
    m(x).relu_().sum().backward()
    assert x.grad is not None
    m2 = nn.BatchNorm2d(3, affine=False)
    m2(x).relu_().sum().backward()


def test_batchnorm_state_dict_and_reset():
    m = nn.BatchNorm2d(4)
    assert list(m.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                    "num_batches_tracked"]
    m(ddp.randn(2, 4, 3, 3))
    sd = dict(m.state_dict())  # a plain dict: no version metadata, as an old checkpoint
    del sd["num_batches_tracked"]  # version 1 checkpoints have none
    m2 = nn.BatchNorm2d(4)
    m2.load_state_dict(sd)
    np.testing.assert_array_equal(arr(m2.running_mean), arr(m.running_mean))
    m.reset_running_stats()
    assert float(m.running_mean.abs().sum()) == 0 and int(m.num_batches_tracked) == 0
    assert float(m.running_var.sum()) == 4


def test_batchnorm_errors():
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected 2-D or 3-D input.*\(2, 3, 4, 5\)"):
        nn.BatchNorm1d(3)(ddp.ones(2, 3, 4, 5))
    with pytest.raises(RuntimeError, match=r"BatchNorm1d: expected input with 4 features.*"
                                           r"\(2, 3\)"):
        nn.BatchNorm1d(4)(ddp.ones(2, 3))
    with pytest.raises(ValueError, match="BatchNorm2d: expected 4-D"):
        nn.BatchNorm2d(3)(ddp.ones(2, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(ddp.ones(1, 3))
    nn.BatchNorm1d(3).eval()(ddp.ones(1, 3))  # fine in eval


def test_batchnorm_repr():
    # PyTorch >= 2.10's format, with bias=
    assert repr(nn.BatchNorm2d(8)) == ("BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, "
                                       "bias=True, track_running_stats=True)")
    assert repr(nn.BatchNorm1d(3, eps=1e-3, momentum=None, affine=False)) == \
        ("BatchNorm1d(3, eps=0.001, momentum=None, affine=False, bias=False, "
         "track_running_stats=True)")
    m = nn.BatchNorm1d(3, bias=False)
    assert m.bias is None and [n for n, _ in m.named_parameters()] == ["weight"]


def test_batch_norm_float32_and_float16():
    x = ddp.randn(8, 3, 4) * 3 + 2
    y = nn.BatchNorm1d(3)(x)
    assert y.dtype == ddp.float32
    np.testing.assert_allclose(arr(y), np_norm(arr(x).astype(np.float64), (0, 2)), atol=1e-4)
    y16 = F.batch_norm(x.half(), None, None, training=True)
    assert y16.dtype == ddp.float16
    np.testing.assert_allclose(arr(y16).astype(np.float64), arr(y), atol=1e-2)


# ============================================================== layer norm

@pytest.mark.parametrize("normalized", [(5,), (3, 5)])
def test_layer_norm_matches_numpy(normalized):
    x = rand(2, 3, 5, scale=3.0, shift=1.0)
    w, b = rand(*normalized, seed=1), rand(*normalized, seed=2)
    y = F.layer_norm(x, normalized, w, b, eps=1e-6)
    axes = tuple(range(3 - len(normalized), 3))
    ref = np_norm(arr(x), axes, 1e-6) * arr(w) + arr(b)
    np.testing.assert_allclose(arr(y), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("normalized,affine", [((4,), "both"), ((2, 4), "both"),
                                               ((4,), "weight"), ((4,), "none")])
def test_layer_norm_gradcheck(normalized, affine):
    x = rand(3, 2, 4)
    w = rand(*normalized, seed=1) if affine != "none" else None
    b = rand(*normalized, seed=2) if affine == "both" else None
    inputs = tuple(t for t in (x, w, b) if t is not None)

    def fn(*t):
        it = iter(t[1:])
        return F.layer_norm(t[0], normalized, next(it) if w is not None else None,
                            next(it) if b is not None else None)
    assert gradcheck(fn, inputs)


@pytest.mark.parametrize("weight", ["random", "a zero", "a tiny channel"])
@pytest.mark.parametrize("norm", ["group", "batch"])
def test_channel_norms_input_gradient_with_and_without_dividing_by_the_weight(monkeypatch, norm,
                                                                            weight):
    """The channel norms' backward takes the input's gradient into x - mean dividing by
    invstd * w where no weight channel is 0 or far below the others (_divides), else by the
    array of a g; both are gradchecked, and the two give the same gradients."""
    from ddp.nn.functional import _normalization as N
    data = np.random.default_rng(1).standard_normal(6) + 2.0
    if weight == "a zero":
        data[2] = 0.0
    elif weight == "a tiny channel":
        data[4] = 1e-6
    w = ddp.tensor(data, requires_grad=True)
    x, b = rand(3, 6, 2, 2, scale=2.0, shift=1.0), rand(6, seed=2)

    def fn(*t):
        return F.group_norm(t[0], 3, *t[1:]) if norm == "group" else \
            F.batch_norm(t[0], None, None, *t[1:], training=True)
    assert N._divides(np, data) == (weight == "random")
    assert gradcheck(fn, (x, w, b))
    g = ddp.tensor(np.random.default_rng(3).standard_normal((3, 6, 2, 2)))
    got = []
    for divides in (N._divides, lambda xp, w: False):
        monkeypatch.setattr(N, "_divides", divides)
        for t in (x, w, b):
            t.grad = None
        fn(x, w, b).backward(g)
        got.append([arr(t.grad) for t in (x, w, b)])
    for a, c in zip(*got):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("affine", ["both", "weight", "none"])
@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_layer_norm_constant_upstream_gradient(affine, loss):
    """y.sum() and y.mean() send one value broadcast over the output (all strides 0), which
    the layer norm backward takes without its array; the gradients are those of the same
    upstream gradient given as a contiguous array (the gradchecked path)."""
    _constant_against_array_upstream(lambda x, w, b: F.layer_norm(x, (6,), w, b), (4, 3, 6),
                                     6, affine, loss, 1e-12)


def _constant_against_array_upstream(norm, shape, c, affine, loss, tol):
    """The gradients of ``norm(x, w, b)`` (``w``/``b`` of ``c`` elements, or None) under
    ``y.sum()``/``y.mean()`` — one value broadcast — against the same upstream gradient given
    as a contiguous array."""
    w = rand(c, seed=1) if affine != "none" else None
    b = rand(c, seed=2) if affine == "both" else None

    def grads(upstream):
        x = rand(*shape, scale=3.0, shift=5.0)
        y = norm(x, w, b)
        if upstream == "array":
            y.backward(ddp.full(y.shape, 1.0 if loss == "sum" else 1.0 / y.numel(),
                                dtype=y.dtype))
        else:
            (y.sum() if loss == "sum" else y.mean()).backward()
        out = [arr(t.grad) for t in (x, w, b) if t is not None]
        for t in (w, b):
            if t is not None:
                t.grad = None
        return out

    for got, want in zip(grads("broadcast"), grads("array")):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("norm,shape,groups", [
    ("group", (3, 6, 4, 5), 3), ("group", (3, 6, 4, 5), 1), ("group", (3, 6, 4, 5), 6),
    ("group", (2, 6), 2), ("batch", (3, 6, 4, 5), 0), ("batch", (5, 6), 0)])
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_channel_norms_constant_upstream_gradient(norm, shape, groups, affine, loss):
    """Group and batch norm (training) take y.sum()'s and y.mean()'s one value broadcast over
    the output without its array; the gradients are those of the same upstream gradient given
    as a contiguous array (the gradchecked path)."""
    _constant_against_array_upstream(
        (lambda x, w, b: F.group_norm(x, groups, w, b)) if norm == "group" else
        (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True)),
        shape, shape[1], affine, loss, 1e-10)


def test_layernorm_module():
    m = nn.LayerNorm(4)
    assert repr(m) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)"
    assert m.weight.shape == (4,) and float(m.weight.sum()) == 4 and float(m.bias.abs().sum()) == 0
    m2 = nn.LayerNorm([2, 3], elementwise_affine=False)
    assert m2.weight is None and m2.bias is None and list(m2.parameters()) == []
    assert repr(m2) == "LayerNorm((2, 3), eps=1e-05, elementwise_affine=False, bias=False)"
    m3 = nn.LayerNorm(3, bias=False)
    assert m3.bias is None and [n for n, _ in m3.named_parameters()] == ["weight"]
    x = rand(2, 2, 3)
    np.testing.assert_allclose(arr(m2(x)), np_norm(arr(x), (1, 2)), atol=1e-6)
    with pytest.raises(RuntimeError, match=r"LayerNorm: expected input with shape \(\*, 4\).*"
                                           r"\(2, 3\)"):
        m(ddp.ones(2, 3))


# ============================================================== group norm

def test_group_norm_matches_numpy():
    x = rand(2, 6, 3, 2, scale=2.0, shift=-1.0)
    w, b = rand(6, seed=1), rand(6, seed=2)
    y = F.group_norm(x, 3, w, b)
    xg = arr(x).reshape(2, 3, -1)
    ref = np_norm(xg, (2,)).reshape(2, 6, 3, 2) * arr(w)[:, None, None] + arr(b)[:, None, None]
    np.testing.assert_allclose(arr(y), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("groups,affine", [(2, True), (1, True), (4, False)])
def test_group_norm_gradcheck(groups, affine):
    x = rand(2, 4, 3)
    inputs = (x, rand(4, seed=1), rand(4, seed=2)) if affine else (x,)
    assert gradcheck(lambda *t: F.group_norm(t[0], groups, *t[1:]), inputs)


def test_groupnorm_module_and_errors():
    m = nn.GroupNorm(2, 4)
    assert repr(m) == "GroupNorm(2, 4, eps=1e-05, affine=True, bias=True)"
    assert nn.GroupNorm(2, 4, bias=False).bias is None
    assert m(ddp.randn(3, 4, 5)).shape == (3, 4, 5)
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 4)
    with pytest.raises(RuntimeError, match=r"GroupNorm: expected input with 4 channels.*"
                                           r"\(3, 6, 5\)"):
        m(ddp.randn(3, 6, 5))


# ============================================================== PyTorch parity

def _state_of(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _load_state(ours, state):
    ours.load_state_dict({k: ddp.tensor(v) for k, v in state.items()})


@pytest.mark.parametrize("cls,shape,kw", [
    ("BatchNorm1d", (6, 3), dict()),
    ("BatchNorm1d", (4, 3, 5), dict(momentum=None)),
    ("BatchNorm2d", (4, 3, 5, 5), dict(momentum=0.3, eps=1e-3)),
    ("BatchNorm2d", (4, 3, 2, 2), dict(affine=False)),
    ("BatchNorm2d", (4, 3, 2, 2), dict(track_running_stats=False)),
    ("BatchNorm1d", (5, 3), dict(bias=False)),
])
def test_batchnorm_torch_parity_train_then_eval(oracle, cls, shape, kw):
    steps = make_steps(shape, 4)

    def reference(torch):
        theirs = torch_module(torch, cls, kw)
        return {"repr": repr(theirs), "state": _state_of(theirs),
                "steps": torch_steps(torch, theirs, steps)}
    want = oracle(reference)
    ours = getattr(nn, cls)(3, **kw)
    assert repr(ours) == want["repr"]
    _load_state(ours, want["state"])
    check_steps(ours, steps, want["steps"])


def make_steps(shape, count):
    """``count`` (input, upstream gradient) pairs of ``shape``, the inputs' scale and shift
    growing (the running statistics move); the last runs in eval mode."""
    rng = np.random.default_rng(0)
    steps = []
    for step in range(count):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(np.float32)
        steps.append((x, rng.standard_normal(shape).astype(np.float32)))
    return steps


def torch_module(torch, cls, kw):
    """PyTorch's ``cls(3, **kw)`` with its parameters drawn in [0.5, 1.5)."""
    theirs = getattr(torch.nn, cls)(3, **kw)
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(0.5, 1.5)
    return theirs


def torch_steps(torch, theirs, steps):
    """PyTorch's answers for the module ``theirs`` over ``steps`` ((input, upstream gradient)
    pairs; the last in eval mode): output, input and parameter gradients, buffers after."""
    out = []
    for step, (x, g) in enumerate(steps):
        if step == len(steps) - 1:
            theirs.eval()
        b = torch.tensor(x, requires_grad=True)
        yt = theirs(b)
        yt.backward(torch.tensor(g))
        out.append({"y": yt.detach().numpy(), "gx": b.grad.numpy(),
                    "grads": [q.grad.numpy().copy() for q in theirs.parameters()],
                    "buffers": [(n, buf.numpy().copy()) for n, buf in theirs.named_buffers()]})
    return out


def check_steps(ours, steps, want):
    """Run ``ours`` over ``steps`` as :func:`torch_steps` ran PyTorch's, against its answers."""
    for step, ((x, g), ref) in enumerate(zip(steps, want)):
        if step == len(steps) - 1:
            ours.eval()
        a = ddp.tensor(x, requires_grad=True)
        y = ours(a)
        assert y.shape == a.shape
        np.testing.assert_allclose(arr(y), ref["y"], rtol=1e-4, atol=1e-4)
        y.backward(ddp.tensor(g))
        np.testing.assert_allclose(arr(a.grad), ref["gx"], rtol=1e-4, atol=1e-4)
        params = list(ours.parameters())
        assert len(params) == len(ref["grads"])
        for p, q in zip(params, ref["grads"]):
            np.testing.assert_allclose(arr(p.grad), q, rtol=1e-4, atol=1e-4)
        assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref["buffers"]]
        for name, buf in ref["buffers"]:
            np.testing.assert_allclose(arr(getattr(ours, name)), buf, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls,args,shape", [
    ("LayerNorm", ((5,),), (2, 3, 5)),
    ("LayerNorm", ((3, 5),), (2, 3, 5)),
    ("GroupNorm", (3, 6), (2, 6, 4, 3)),
    ("GroupNorm", (1, 6), (2, 6, 5)),
    ("LayerNorm", ((5,), 1e-5, True, False), (4, 5)),
])
def test_layer_and_group_norm_torch_parity(oracle, cls, args, shape):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)

    def reference(torch):
        theirs = getattr(torch.nn, cls)(*args)
        with torch.no_grad():
            for p in theirs.parameters():
                p.uniform_(-1.5, 1.5)
        state = _state_of(theirs)
        b = torch.tensor(x, requires_grad=True)
        yt = theirs(b)
        yt.backward(torch.tensor(g))
        return {"repr": repr(theirs), "state": state, "y": yt.detach().numpy(),
                "gx": b.grad.numpy(), "grads": [q.grad.numpy() for q in theirs.parameters()]}
    want = oracle(reference)
    ours = getattr(nn, cls)(*args)
    assert repr(ours) == want["repr"]
    _load_state(ours, want["state"])
    a = ddp.tensor(x, requires_grad=True)
    y = ours(a)
    np.testing.assert_allclose(arr(y), want["y"], rtol=1e-4, atol=1e-5)
    y.backward(ddp.tensor(g))
    np.testing.assert_allclose(arr(a.grad), want["gx"], rtol=1e-4, atol=1e-4)
    params = list(ours.parameters())
    assert len(params) == len(want["grads"])
    for p, q in zip(params, want["grads"]):
        np.testing.assert_allclose(arr(p.grad), q, rtol=1e-4, atol=1e-4)


# ============================================================== higher-order gradients

@pytest.mark.parametrize("which", ["batch_train", "batch_eval", "layer", "group"])
def test_norm_double_backward_gradgradcheck(which):
    from ddp.autograd import gradgradcheck
    x, w, b = rand(4, 3, 2), rand(3, seed=1), rand(3, seed=2)
    rm, rv = rand(3, seed=3, requires_grad=False), rand(3, seed=4, requires_grad=False).abs()
    fns = {
        "batch_train": lambda *t: F.batch_norm(t[0], None, None, t[1], t[2], training=True),
        "batch_eval": lambda *t: F.batch_norm(t[0], rm, rv, t[1], t[2], training=False),
        "layer": lambda *t: F.layer_norm(t[0].transpose(1, 2), (3,), t[1], t[2]),
        "group": lambda *t: F.group_norm(t[0].reshape(2, 6, 2), 3, t[1].repeat(2), t[2].repeat(2)),
    }
    assert gradgradcheck(fns[which], (x, w, b))


def test_layer_norm_gradient_penalty_torch_parity(oracle):
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)

    def penalty_grads(lib, m):
        t = lib.tensor(x, requires_grad=True)
        grad, = lib.autograd.grad((m(t).tanh() * lib.arange(5.0)).sum(), t, create_graph=True)
        (grad ** 2).sum().backward()
        return [m.weight.grad.detach().numpy(), t.grad.detach().numpy()]

    def reference(torch):
        theirs = torch.nn.LayerNorm(5)
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.uniform_(-0.5, 0.5)
        return {"state": _state_of(theirs), "grads": penalty_grads(torch, theirs)}
    want = oracle(reference)
    ours = nn.LayerNorm(5)
    _load_state(ours, want["state"])
    for a, b in zip(penalty_grads(ddp, ours), want["grads"]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


# ============================================================== NumPy ufunc buffers of one row

@pytest.mark.parametrize("norm,shape,runs", [
    ("batch", (2, 3, 24, 24), {576}),          # the channels' H W rows
    ("batch_eval", (2, 3, 24, 24), {576}),     # the generic backward
    ("group", (2, 4, 16, 32), {1024, 512}),    # statistics per group (1024); then H W 512
    ("group", (2, 8, 8, 8), {512}),            # H W 64 too short: the group's run (8 x 64)
    ("layer", (4, 1000), {1000}),              # not a multiple of 16 (NumPy's buffers are)
])
@pytest.mark.parametrize("upstream", ["array", "sum"])   # sum(): a stride-0 gradient
def test_row_buffers_give_the_unbuffered_results(monkeypatch, numpy_path, norm, shape, runs,
                                                 upstream):
    """The broadcasting passes of the NumPy path run with NumPy buffers of one row
    (backend.row_buffer) where a row is long enough; the values and gradients are those of the
    default buffers."""
    from ddp import backend
    c = shape[1] if norm != "layer" else shape[-1]
    rng = np.random.default_rng(0)
    data = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w, b = (rng.standard_normal(c).astype(np.float32) for _ in range(2))
    rm, rv = np.full(c, 0.5, np.float32), np.full(c, 2.0, np.float32)

    def run():
        x, wt, bt = (ddp.tensor(a, requires_grad=True) for a in (data, w, b))
        if norm == "layer":
            y = F.layer_norm(x, (c,), wt, bt)
        elif norm == "group":
            y = F.group_norm(x, shape[1] // 2 if shape[2] == 16 else 1, wt, bt)
        else:
            y = F.batch_norm(x, ddp.tensor(rm), ddp.tensor(rv), wt, bt,
                             training=norm == "batch")
        if upstream == "sum":
            y.sum().backward()
        else:
            y.backward(ddp.tensor(g))
        return [arr(t) for t in (y, x.grad, wt.grad, bt.grad)]

    real = backend.row_buffer
    seen = []
    default = np.getbufsize()

    def spy(xp, k):
        token = real(xp, k)
        if token is not None:
            seen.append((k, np.getbufsize()))
        return token
    monkeypatch.setattr(backend, "row_buffer", spy)
    buffered = run()
    assert {k for k, _ in seen} == runs
    assert all(size == k - k % 16 for k, size in seen)
    assert np.getbufsize() == default   # restored
    monkeypatch.setattr(backend, "row_buffer", lambda xp, k: None)
    for got, want in zip(buffered, run()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [0, 3])   # batch norm, group norm
def test_channels_backward_in_place_only_on_its_own_copy(groups):
    """A non-contiguous incoming gradient (sum()'s broadcast, or here a broadcast row) is copied
    and the input's gradient written into the copy; a contiguous one is left as it was; both
    give the same gradients."""
    from ddp.nn.functional._normalization import _channels_backward
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 5, 3))
    w = rng.standard_normal(6)
    stats = (4, 3, 1) if groups else (1, 6, 1)   # group norm's: per sample and group
    mean, invstd = rng.standard_normal(stats), rng.uniform(0.5, 2.0, stats)
    meta = ((x.shape,), (w.shape,), (w.shape,))
    g = np.broadcast_to(np.arange(3.0), x.shape)
    dense = g.copy()
    got = _channels_backward(np, (True, True, True), x, g, w, mean, invstd, meta, groups)
    want = _channels_backward(np, (True, True, True), x, dense, w, mean, invstd, meta, groups)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(dense, g)   # not written into


@pytest.mark.parametrize("make, shape", [
    (lambda: ddp.nn.GroupNorm(2, 4), (0, 4, 3, 3)),
    (lambda: ddp.nn.GroupNorm(2, 4), (0, 4)),
    (lambda: ddp.nn.LayerNorm(8), (0, 8)),
    (lambda: ddp.nn.BatchNorm2d(4).eval(), (0, 4, 3, 3)),
], ids=["group_norm_2d", "group_norm_1d", "layer_norm", "batch_norm_eval"])
def test_an_empty_batch_normalises_to_an_empty_batch(make, shape):
    # PyTorch's result: an empty output and input gradient, zero parameter gradients (a rank
    # with an empty shard runs the same layers; reshapes with -1 cannot size an empty array)
    m = make()
    x = ddp.zeros(*shape, requires_grad=True)
    y = m(x)
    (y * 2).sum().backward()
    assert tuple(y.shape) == shape and tuple(x.grad.shape) == shape
    for p in (m.weight, m.bias):
        assert tuple(p.grad.shape) == tuple(p.shape)
        np.testing.assert_array_equal(p.grad.numpy(), np.zeros(p.shape, np.float32))


def _normalized(norm, data, affine, needs, upstream):
    """``norm`` of ``data`` (layer: over the last dimension; group: 2 groups; instance; batch
    with batch statistics), its
    gradients for the given upstream kind, and whether the fused kernel ran."""
    c = data.shape[-1] if norm == "layer" else data.shape[1]
    rng = np.random.default_rng(1)
    w, b = (rng.standard_normal(c).astype(data.dtype) for _ in range(2))
    x = ddp.tensor(data, requires_grad=needs[0])
    wt = ddp.tensor(w, requires_grad=needs[1]) if "w" in affine else None
    bt = ddp.tensor(b, requires_grad=needs[2]) if "b" in affine else None
    if norm == "layer":
        y = F.layer_norm(x, (c,), wt, bt)
    elif norm == "group":
        y = F.group_norm(x, 2, wt, bt)
    elif norm == "batch":
        y = F.batch_norm(x, None, None, wt, bt, training=True)
    else:
        y = F.instance_norm(x, weight=wt, bias=bt)
    fused = y.grad_fn.fused
    if upstream == "sum":        # one value broadcast: a stride-0 gradient
        y.sum().backward()
    elif upstream == "transposed":
        g = rng.standard_normal(y.shape[::-1]).astype(data.dtype)
        y.backward(ddp.tensor(g).permute(*range(y.ndim - 1, -1, -1)))
    else:
        y.backward(ddp.tensor(rng.standard_normal(y.shape).astype(data.dtype)))
    grads = [None if t is None or not t.requires_grad else arr(t.grad) for t in (x, wt, bt)]
    return [arr(y)] + grads, fused


@pytest.mark.parametrize("norm,shape", [("layer", (5, 7)), ("layer", (3, 2, 40)),
                                        ("group", (3, 4, 5, 6)), ("group", (2, 6, 9)),
                                        ("instance", (2, 3, 4, 5)), ("batch", (4, 3, 5, 2)),
                                        ("batch", (6, 4))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine,needs,upstream", [
    ("wb", (True, True, True), "array"), ("wb", (False, True, True), "array"),
    ("wb", (True, False, False), "sum"), ("w", (True, True, False), "transposed"),
    ("b", (True, False, True), "array"), ("", (True, False, False), "array")])
def test_the_kernels_give_the_numpy_paths_values_and_gradients(monkeypatch, norm, shape, dtype,
                                                              affine, needs, upstream):
    """ddp.kernels' fused layer/group/batch norm (the CPU's path for a contiguous float input,
    batch norm's in training) against the NumPy path the GPU runs: every combination of affine parameters and gradients asked
    for, a broadcast and a transposed upstream gradient; a NaN and an infinity stay in their
    own row (group) as in NumPy."""
    from ddp import kernels
    rng = np.random.default_rng(0)
    data = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    data.reshape(shape[0], -1)[0, 1] = np.nan
    if shape[0] > 2:
        data.reshape(shape[0], -1)[2, 0] = np.inf
    got, fused = _normalized(norm, data, affine, needs, upstream)
    assert fused == kernels.enabled() and kernels.enabled()
    monkeypatch.setattr(kernels, "_enabled", False)
    with np.errstate(all="ignore"):   # (the NumPy path's inf - inf warns)
        want, fused = _normalized(norm, data, affine, needs, upstream)
    assert not fused
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_the_kernels_are_left_to_the_numpy_path_where_they_do_not_fit(norm):
    """A weight of another dtype and float16 take the NumPy path, and so does layer norm's
    non-contiguous input (group norm's is a contiguous copy seen as its groups)."""
    x = ddp.randn(4, 6, 8, requires_grad=True)
    cases = [(x, ddp.ones(8 if norm == "layer" else 6, dtype=ddp.float64)), (x.half(), None)]
    if norm == "layer":
        cases.append((x.transpose(0, 2).contiguous().transpose(0, 2), None))
    for inp, w in cases:
        y = F.layer_norm(inp, (8,), w) if norm == "layer" else F.group_norm(inp, 2, w)
        assert not y.grad_fn.fused

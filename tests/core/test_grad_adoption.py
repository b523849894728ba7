"""``.grad`` adopts a gradient array without a copy exactly when nothing else can hold it.

An op that declares ``fresh_grads`` promises that its backward returns newly made arrays, a
distinct one per input; the engine then hands such an array to a leaf's ``.grad`` as it is. Sums
the engine makes itself are adopted too, and later contributions are added into them in place.
Everywhere else (an incoming gradient passed through, the caller's gradient, a hook or
``autograd.grad`` that has seen the array) ``.grad`` gets a copy.
"""
import numpy as np
import pytest

import ddp
import ddp.nn.functional as F
from ddp.autograd import graph
from ddp.nn.functional import _conv, _embedding, _linear, _normalization, _rnn
from ddp.ops import elementwise, shape


def _rand(*s):
    return np.random.default_rng(sum(s)).standard_normal(s)


# every op that declares fresh_grads, with inputs that exercise its backward
FRESH_CASES = {
    elementwise.Mul: lambda: ((_rand(3, 4), _rand(3, 4)), {}),
    shape.Matmul: lambda: ((_rand(2, 3, 4), _rand(4, 5)), {}),
    _linear.LinearOp: lambda: ((_rand(6, 4), _rand(3, 4), _rand(3)), {}),
    _conv.Convolution: lambda: ((_rand(2, 3, 6, 6), _rand(4, 3, 3, 3), _rand(4)),
                                dict(geom=((1, 1), ((1, 1), (1, 1)), (1, 1), 1), out=(6, 6))),
    _conv.ConvolutionTranspose: lambda: ((_rand(2, 4, 6, 6), _rand(4, 3, 3, 3), _rand(3)),
                                         dict(geom=((1, 1), ((1, 1), (1, 1)), (1, 1), 1),
                                              out=(6, 6))),
    _conv.ConvolutionWeight: lambda: ((_rand(2, 4, 6, 6), _rand(2, 3, 6, 6)),
                                      dict(geom=((1, 1), ((1, 1), (1, 1)), (1, 1), 1),
                                           kernel=(3, 3))),
    _embedding.Embedding: lambda: ((_rand(7, 3),), dict(indices=np.array([[1, 2, 1], [6, 0, 2]]),
                                                         padding_idx=0, scale_grad_by_freq=True)),
}


def _all_ops(cls=graph.Op):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_ops(sub)


def test_every_fresh_op_is_checked():
    declared = {op for op in _all_ops() if op.__dict__.get("fresh_grads")}
    assert declared == set(FRESH_CASES), "ops declaring fresh_grads need a case in FRESH_CASES"


@pytest.mark.parametrize("op", list(FRESH_CASES), ids=lambda op: op.__name__)
def test_fresh_ops_return_new_distinct_arrays(op):
    arrays, kwargs = FRESH_CASES[op]()
    inputs = [ddp.tensor(a, requires_grad=True) for a in arrays]
    out = op.apply(*inputs, **kwargs)
    node = out.grad_fn
    g = np.random.default_rng(0).standard_normal(out.shape)
    node.xp = np
    grads = [r for r in node.op.backward(node, g) if r is not None]
    assert grads
    held = [g, *arrays, *(s for s in node.saved if isinstance(s, np.ndarray))]
    for i, r in enumerate(grads):
        for other in held + grads[:i]:
            assert not np.shares_memory(r, other), f"{op.__name__} returned an array it shares"


def _spy_backward(monkeypatch, op):
    """Record the arrays ``op``'s backward returns."""
    returned = []
    original = op.backward

    def spy(ctx, *grads):
        out = original(ctx, *grads)
        returned.extend(r for r in (out if isinstance(out, tuple) else (out,)) if r is not None)
        return out
    monkeypatch.setattr(op, "backward", staticmethod(spy))
    return returned


def test_grad_adopts_a_fresh_gradient(monkeypatch):
    returned = _spy_backward(monkeypatch, _linear.LinearOp)
    lin = ddp.nn.Linear(4, 3)
    lin(ddp.randn(5, 4)).sum().backward()
    assert any(lin.weight.grad._data is r for r in returned)
    assert any(lin.bias.grad._data is r for r in returned)


def test_sums_are_adopted_and_added_into():
    w = ddp.randn(3, 3, requires_grad=True)
    x = ddp.randn(2, 3)
    ((x @ w).sum() + (x @ w).pow(2).sum() + (x @ w).exp().sum()).backward()
    expected = sum(x._data.T @ g for g in (
        np.ones((2, 3)), 2 * (x._data @ w._data), np.exp(x._data @ w._data)))
    np.testing.assert_allclose(w.grad._data, expected, rtol=1e-5)


def test_a_gradient_reaching_two_leaves_is_copied():
    a, b = ddp.ones(3, requires_grad=True), ddp.ones(3, requires_grad=True)
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad._data, b.grad._data)
    a.grad += 1
    assert b.grad.tolist() == [1.0, 1.0, 1.0]


def test_the_callers_gradient_is_copied():
    x = ddp.ones(3, requires_grad=True)
    g = ddp.tensor([1.0, 2.0, 3.0])
    x.backward(g)
    y = x * 2
    y.backward(g)
    assert not np.shares_memory(x.grad._data, g._data)
    assert g.tolist() == [1.0, 2.0, 3.0]


def test_a_gradient_a_hook_has_seen_is_copied():
    w = ddp.randn(3, 2, requires_grad=True)
    seen = []
    w.register_hook(lambda g: seen.append(g))
    (ddp.randn(4, 3) @ w).sum().backward()
    kept = seen[0].clone()
    (ddp.randn(4, 3) @ w).sum().backward()  # accumulates into w.grad in place
    np.testing.assert_array_equal(seen[0]._data, kept._data)


def test_a_gradient_autograd_grad_returned_is_copied():
    w = ddp.randn(3, 2, requires_grad=True)
    x = ddp.randn(4, 3)
    (g,) = ddp.autograd.grad((x @ w).sum(), w, retain_graph=True)
    kept = g.clone()
    (x @ w).sum().backward()
    w.grad += 1
    np.testing.assert_array_equal(g._data, kept._data)


def test_a_custom_function_returning_its_saved_tensor_is_copied():
    class PassSaved(ddp.autograd.Function):
        @staticmethod
        def forward(ctx, x, k):
            ctx.save_for_backward(k)
            return x * 1

        @staticmethod
        def backward(ctx, g):
            (k,) = ctx.saved_tensors
            return k, None

    k = ddp.ones(3)
    x = ddp.zeros(3, requires_grad=True)
    PassSaved.apply(x, k).sum().backward()
    x.grad += 5
    assert k.tolist() == [1.0, 1.0, 1.0]


def test_conv_weight_gradient_is_right_after_adoption():
    conv = ddp.nn.Conv2d(2, 3, 3, padding=1)
    x = ddp.randn(2, 2, 5, 5)
    for _ in range(2):  # the second backward adds into the adopted array
        F.relu(conv(x)).sum().backward()
    ref = conv.weight.grad.clone()
    conv.zero_grad()
    F.relu(conv(x)).sum().backward()
    np.testing.assert_allclose(ref._data, 2 * conv.weight.grad._data, rtol=1e-5)


# ---------------------------------------------------------------- gradient sinks
# A leaf may offer a sink (DDP's reducer offers each parameter's bucket view): an array that is
# to receive ``scale`` times its gradient. Ops with ``writes_grad_sinks`` write there, and
# ``.grad`` adopts that very array; the engine offers it only where the gradient becomes
# ``.grad`` unchanged.

# every op that declares writes_grad_sinks: (input shape, weight shape) cases; the second has
# more rows than the weight has elements (the scale then goes on the product, in place)
SINK_CASES = {_linear.LinearOp: [((5, 4), (3, 4)), ((2, 30, 4), (3, 4))],
              # embedding: (weight shape, index shape, padding_idx); the second looks up more
              # elements than the weight has (the scale then goes on the weight's gradient)
              _embedding.Embedding: [((50, 4), (3, 5), None), ((6, 3), (4, 9), 2)],
              # convolution: (input shape, weight shape, stride, padding, input needs grad)
              # — both gradients from one pass, the weight's alone, a strided one, groups
              _conv.Convolution: [((2, 3, 7, 7), (4, 3, 3, 3), 1, 1, True),
                                  ((2, 3, 7, 7), (4, 3, 3, 3), 1, 1, False),
                                  ((2, 3, 8, 8), (4, 3, 3, 3), 2, 0, True),
                                  ((2, 4, 6, 6), (6, 2, 3, 3), 1, 1, True)],
              # layer norm: (input shape, normalized_shape, input needs grad)
              _normalization.NativeLayerNorm: [((4, 6), (6,), True), ((2, 3, 4, 5), (4, 5), False)],
              # group norm: (input shape, groups, input needs grad); instance norm's is one per
              # channel
              _normalization.NativeGroupNorm: [((3, 4, 5), 2, True), ((2, 6, 3, 3), 6, False)],
              # transposed convolution: the same and groups; the weight is (C_in, C_out/groups,
              # ..) — both gradients, the weights' alone, a strided one, groups
              _conv.ConvolutionTranspose: [((2, 4, 5, 5), (4, 3, 3, 3), 1, 1, True, 1),
                                           ((2, 4, 5, 5), (4, 3, 3, 3), 1, 1, False, 1),
                                           ((2, 4, 4, 4), (4, 2, 4, 4), 2, 1, True, 1),
                                           ((2, 4, 5, 5), (4, 3, 3, 3), 1, 1, True, 2)],
              # recurrence, 4 hidden units: (mode, input size, sequence length, batch,
              # reverse); the scale goes on the smallest of the weights' products' right
              # operands (the short ones), their left operands (the wide input of the RNN's
              # 4 gates) or the products, in place (the long ones: more rows than the weights
              # have)
              _rnn.Recurrence: [("LSTM", 3, 3, 2, False), ("LSTM", 3, 30, 4, True),
                                ("GRU", 3, 3, 2, True), ("GRU", 3, 30, 4, False),
                                ("RNN_TANH", 9, 1, 2, False), ("RNN_RELU", 3, 30, 4, True)],
              # batch norm with batch statistics: (input shape, None, input needs grad)
              _normalization.NativeBatchNorm: [((4, 3, 5), None, True), ((5, 2), None, False)]}


def test_every_sink_writing_op_is_checked():
    declared = {op for op in _all_ops() if op.__dict__.get("writes_grad_sinks")}
    assert declared == set(SINK_CASES), "ops declaring writes_grad_sinks need a SINK_CASES entry"


def _offer(leaf, scale, calls=None):
    """Give ``leaf`` a zero-filled sink; returns the sink's array."""
    out = np.zeros(leaf.shape, leaf._data.dtype)

    def provider():
        if calls is not None:
            calls.append(leaf)
        return out, scale
    leaf._grad_sink = provider
    return out


def _linear_leaves(x_shape, w_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = ddp.tensor(rng.standard_normal(x_shape), requires_grad=True)
    w = ddp.tensor(rng.standard_normal(w_shape), requires_grad=True)
    b = ddp.tensor(rng.standard_normal(w_shape[0]), requires_grad=True)
    return x, w, b


def _loss(y):
    return (y * y).sum()   # a gradient that differs per element


@pytest.mark.parametrize("x_shape,w_shape", SINK_CASES[_linear.LinearOp])
def test_linear_writes_the_scaled_gradient_into_the_sinks(x_shape, w_shape):
    x, w, b = _linear_leaves(x_shape, w_shape)
    _loss(F.linear(x, w, b)).backward()
    want = [t.grad.numpy().copy() for t in (x, w, b)]
    x, w, b = _linear_leaves(x_shape, w_shape)
    sinks = [_offer(w, 0.25), _offer(b, 0.25)]
    _loss(F.linear(x, w, b)).backward()
    for leaf, sink, ref in zip((w, b), sinks, want[1:]):
        assert leaf.grad._data is sink
        np.testing.assert_allclose(sink, 0.25 * ref, rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), want[0], rtol=1e-12)   # no sink: as before
    w.grad = b.grad = None
    _loss(F.linear(x, w, b)).backward()   # again, into the same sinks
    np.testing.assert_allclose(w.grad._data, 0.25 * want[1], rtol=1e-12)
    assert w.grad._data is sinks[0]


@pytest.mark.parametrize("w_shape,i_shape,padding_idx", SINK_CASES[_embedding.Embedding])
def test_embedding_scatters_the_scaled_gradient_into_its_sink(w_shape, i_shape, padding_idx):
    rng = np.random.default_rng(3)
    idx = ddp.tensor(rng.integers(0, w_shape[0], i_shape))
    upstream = rng.standard_normal(i_shape + w_shape[1:])

    def run(offer):
        w = ddp.tensor(rng.standard_normal(w_shape), requires_grad=True)
        sink = _offer(w, 0.5) if offer else None
        if sink is not None:
            sink[...] = 7.0   # what the bucket held before: overwritten, not added to
        F.embedding(idx, w, padding_idx=padding_idx).backward(ddp.tensor(upstream))
        return w, sink
    want = run(False)[0].grad.numpy()
    w, sink = run(True)
    assert w.grad._data is sink
    np.testing.assert_allclose(sink, 0.5 * want, rtol=1e-12, atol=1e-15)


def _check_convolution_sinks(conv, shapes, x_grad, **kwargs):
    """``conv(x, w, b, **kwargs)`` (arrays of ``shapes``) with sinks offered for the weight and
    the bias, holding 7.0 before (overwritten, not added to), against none."""
    rng = np.random.default_rng(4)
    xv, wv, bv = (rng.standard_normal(s) for s in shapes)

    def run(offer):
        x = ddp.tensor(xv, requires_grad=x_grad)
        w = ddp.tensor(wv, requires_grad=True)
        b = ddp.tensor(bv, requires_grad=True)
        sinks = [_offer(w, 0.5), _offer(b, 0.5)] if offer else []
        for sink in sinks:
            sink[...] = 7.0
        _loss(conv(x, w, b, **kwargs)).backward()
        return (w, b), sinks, x.grad
    (w0, b0), _, gx0 = run(False)
    (w, b), sinks, gx = run(True)
    for leaf, sink, want in zip((w, b), sinks, (w0, b0)):
        assert leaf.grad._data is sink
        np.testing.assert_allclose(sink, 0.5 * want.grad.numpy(), rtol=1e-12, atol=1e-12)
    if x_grad:
        np.testing.assert_allclose(gx.numpy(), gx0.numpy(), rtol=1e-12)


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,x_grad", SINK_CASES[_conv.Convolution])
def test_convolution_writes_the_scaled_weight_gradient_into_its_sink(x_shape, w_shape, stride,
                                                                      padding, x_grad):
    _check_convolution_sinks(F.conv2d, (x_shape, w_shape, w_shape[:1]), x_grad, stride=stride,
                             padding=padding, groups=x_shape[1] // w_shape[1])


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,x_grad,groups",
                         SINK_CASES[_conv.ConvolutionTranspose])
def test_transposed_convolution_writes_the_scaled_gradients_into_the_sinks(
        x_shape, w_shape, stride, padding, x_grad, groups):
    _check_convolution_sinks(F.conv_transpose2d, (x_shape, w_shape, (w_shape[1] * groups,)),
                             x_grad, stride=stride, padding=padding, groups=groups)


def _recurrence_leaves(mode, size, length, batch, seed=6):
    """Input, initial states and weights ``(w_ih, w_hh, b_ih, b_hh)`` of a ``size`` -> 4
    layer."""
    rng = np.random.default_rng(seed)
    gates = 4 * {"LSTM": 4, "GRU": 3}.get(mode, 1)
    x = ddp.tensor(rng.standard_normal((length, batch, size)), requires_grad=True)
    states = [ddp.tensor(rng.standard_normal((batch, 4))) for _ in range(2 if mode == "LSTM"
                                                                          else 1)]
    weights = [ddp.tensor(rng.standard_normal(s) * 0.5, requires_grad=True)
               for s in ((gates, size), (gates, 4), (gates,), (gates,))]
    return x, states, weights


def _recurrence_grads(mode, size, length, batch, reverse, offered=(), scale=0.5):
    """The gradients of x and the weights, those in ``offered`` (indices into the weights)
    written into sinks that held 7.0 before; returns ``(x.grad, weights, sinks)``."""
    x, states, weights = _recurrence_leaves(mode, size, length, batch)
    sinks = {}
    for k in offered:
        sinks[k] = _offer(weights[k], scale)
        sinks[k][...] = 7.0   # what the bucket held before: overwritten, not added to
    out = _rnn.rnn_layer(mode, x, states, weights, reverse)
    assert out[0].grad_fn.op is _rnn.Recurrence
    _loss(out[0]).backward()
    return x.grad.numpy(), weights, sinks


@pytest.mark.parametrize("case", SINK_CASES[_rnn.Recurrence])
def test_recurrence_writes_the_scaled_gradients_into_the_sinks(case):
    gx0, want, _ = _recurrence_grads(*case)
    gx, weights, sinks = _recurrence_grads(*case, offered=range(4))
    for k, w in enumerate(weights):
        assert w.grad._data is sinks[k]
        np.testing.assert_allclose(sinks[k], 0.5 * want[k].grad.numpy(), rtol=1e-12,
                                   atol=1e-14)
    np.testing.assert_allclose(gx, gx0, rtol=1e-12)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("offered", [(1, 3), (0, 2)])
def test_recurrence_with_some_sinks_offered_scales_only_those(mode, offered):
    # the two biases of an LSTM have one gradient, summed once: each gets an array of its own,
    # the one in a sink scaled and the other not
    _, want, _ = _recurrence_grads(mode, 3, 4, 3, False)
    _, weights, sinks = _recurrence_grads(mode, 3, 4, 3, False, offered=offered, scale=0.25)
    for k, w in enumerate(weights):
        if k in offered:
            assert w.grad._data is sinks[k]
        np.testing.assert_allclose(w.grad.numpy(), (0.25 if k in offered else 1) *
                                   want[k].grad.numpy(), rtol=1e-12, atol=1e-14)
    assert not np.shares_memory(weights[2].grad._data, weights[3].grad._data)


def _norm_sink_case(op, case, offer, numpy_path=False):
    x_shape, arg, x_grad = case
    rng = np.random.default_rng(5)
    affine = x_shape[-len(arg):] if op is _normalization.NativeLayerNorm else (x_shape[1],)
    norm = {_normalization.NativeLayerNorm: lambda x, w, b: F.layer_norm(x, arg, w, b),
            _normalization.NativeGroupNorm: lambda x, w, b: F.group_norm(x, arg, w, b),
            _normalization.NativeBatchNorm: lambda x, w, b: F.batch_norm(x, None, None, w, b,
                                                                         training=True)}[op]
    x = ddp.tensor(rng.standard_normal(x_shape), requires_grad=x_grad)
    w, b = (ddp.tensor(rng.standard_normal(affine), requires_grad=True) for _ in range(2))
    sinks = [_offer(w, 0.5), _offer(b, 0.5)] if offer else None
    for sink in sinks or ():
        sink[...] = 7.0   # what the bucket held before: overwritten, not added to
    _loss(norm(x, w, b)).backward()
    return (w, b), sinks, x.grad


NORMS = (_normalization.NativeLayerNorm, _normalization.NativeGroupNorm,
         _normalization.NativeBatchNorm)


@pytest.mark.parametrize("op,case", [(op, case) for op in NORMS for case in SINK_CASES[op]],
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_the_norms_write_the_scaled_gradients_into_their_sinks(op, case):
    """Through ddp.kernels' fused backward; on the NumPy path (the GPU's) the sinks are left
    alone and the gradients are those of no sink."""
    (w0, b0), _, gx0 = _norm_sink_case(op, case, False)
    (w, b), sinks, gx = _norm_sink_case(op, case, True)
    for leaf, sink, want in zip((w, b), sinks, (w0, b0)):
        assert leaf.grad._data is sink
        np.testing.assert_allclose(sink, 0.5 * want.grad.numpy(), rtol=1e-12, atol=1e-12)
    if gx0 is not None:
        np.testing.assert_allclose(gx.numpy(), gx0.numpy(), rtol=1e-12)


@pytest.mark.parametrize("op", NORMS, ids=lambda v: v.__name__)
def test_the_norms_leave_the_sinks_on_the_numpy_path(numpy_path, op):
    case = SINK_CASES[op][0]
    (w0, b0), _, _ = _norm_sink_case(op, case, False)
    (w, b), sinks, _ = _norm_sink_case(op, case, True)
    for leaf, sink, want in zip((w, b), sinks, (w0, b0)):
        assert leaf.grad._data is not sink and np.all(sink == 7.0)
        np.testing.assert_allclose(leaf.grad.numpy(), want.grad.numpy(), rtol=1e-12)


def test_no_sink_where_the_gradient_does_not_become_grad_unchanged():
    rng = np.random.default_rng(1)
    xv = rng.standard_normal((4, 3))

    def fresh():
        return ddp.tensor(rng.standard_normal((3, 3)), requires_grad=True)

    def check(w, run, scale_free_want):
        calls = []
        sink = _offer(w, 0.5, calls)
        run(w)
        assert not calls, "the sink was asked for"
        assert not np.any(sink)
        np.testing.assert_allclose(w.grad.numpy(), scale_free_want(w), rtol=1e-12)

    x = ddp.tensor(xv)
    plain = lambda w: F.linear(x, w).sum()   # noqa: E731
    ones_grad = lambda w: np.ones((4, 3)).T @ xv  # noqa: E731

    # used twice: two contributions (deps 2)
    check(fresh(), lambda w: (F.linear(x, w).sum() + F.linear(x, w).sum()).backward(),
          lambda w: 2 * ones_grad(w))
    # a .grad already there: accumulated into it
    w = fresh()
    w.grad = ddp.ones(3, 3, dtype=ddp.float64)
    check(w, lambda w: plain(w).backward(), lambda w: 1 + ones_grad(w))
    # a tensor hook sees (and may replace) the gradient
    w = fresh()
    w.register_hook(lambda g: None)
    check(w, lambda w: plain(w).backward(), ones_grad)
    # create_graph: .grad is a recorded tensor
    check(fresh(), lambda w: plain(w).backward(create_graph=True), ones_grad)
    # autograd.grad hands the gradient back (and fills no .grad)
    w = fresh()
    calls = []
    _offer(w, 0.5, calls)
    (g,) = ddp.autograd.grad(plain(w), w)
    assert not calls and w.grad is None
    np.testing.assert_allclose(g.numpy(), ones_grad(w), rtol=1e-12)


def test_a_sink_of_another_dtype_is_not_used():
    x, w, b = _linear_leaves((5, 4), (3, 4))
    sink = np.zeros(w.shape, np.float32)   # w is float64
    w._grad_sink = lambda: (sink, 1.0)
    _loss(F.linear(x, w, b)).backward()
    assert w.grad._data is not sink and not np.any(sink)

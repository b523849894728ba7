"""The whole-sequence recurrence op (``ddp.nn.functional._rnn.Recurrence``): its hand-written
backward through time against finite differences (float64), and its outputs and gradients
against the same recurrence composed of tensor ops, for every mode, both directions, with and
without biases and initial states that need gradients."""
from __future__ import annotations

import numpy as np
import pytest

import ddp
from ddp.autograd import gradcheck, gradgradcheck
from ddp.nn.functional._rnn import composed_layer, rnn_layer

MODES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def make(mode, L=4, N=2, I=3, H=2, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    G = MODES[mode] * H

    def t(*shape, scale=1.0):
        return ddp.tensor(rng.standard_normal(shape) * scale, dtype=ddp.float64,
                          requires_grad=True)
    x, h0, c0 = t(L, N, I), t(N, H, scale=0.5), t(N, H, scale=0.5)
    weights = (t(G, I, scale=0.6), t(G, H, scale=0.6)) + \
        ((t(G, scale=0.3), t(G, scale=0.3)) if bias else (None, None))
    states = (h0, c0) if mode == "LSTM" else (h0,)
    return x, states, weights


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", list(MODES))
def test_gradcheck(mode, bias, reverse):
    x, states, weights = make(mode, bias=bias)
    ins = (x,) + states + tuple(w for w in weights if w is not None)

    def run(*args):
        xx, rest = args[0], list(args[1:])
        st = tuple(rest[:len(states)])
        ws = rest[len(states):]
        full = tuple(ws) if bias else tuple(ws) + (None, None)
        return rnn_layer(mode, xx, st, full, reverse)
    assert run(*ins)[0].grad_fn.name() == "RecurrenceBackward0"
    assert gradcheck(run, ins)


@pytest.mark.parametrize("mode", list(MODES))
def test_double_backward(mode):
    x, states, weights = make(mode, L=3, H=2)
    ins = (x,) + states + weights

    def run(xx, *rest):
        st = tuple(rest[:len(states)])
        out = rnn_layer(mode, xx, st, tuple(rest[len(states):]))
        return out[0].pow(2).sum() + out[1].sum()
    assert gradgradcheck(run, ins)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode", list(MODES))
def test_matches_composed_ops(mode, reverse):
    """Outputs, and gradients of a loss on all outputs, equal the composed recurrence's."""
    x, states, weights = make(mode, L=6, N=3, I=4, H=5, seed=1)
    ins = (x,) + states + weights
    fused = rnn_layer(mode, x, states, weights, reverse)
    plain = composed_layer(mode, x, states, weights, reverse)
    assert fused[0].grad_fn.name() == "RecurrenceBackward0"
    rng = np.random.default_rng(2)
    gouts = [ddp.tensor(rng.standard_normal(tuple(o.shape))) for o in fused]
    for a, b in zip(fused, plain):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-14)
    g_fused = ddp.autograd.grad(fused, ins, gouts)
    g_plain = ddp.autograd.grad(plain, ins, gouts)
    for a, b in zip(g_fused, g_plain):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-11, atol=1e-13)


def test_unused_outputs_and_inputs_without_grad():
    """Only ``h_n`` used (the others get zero gradients); an input that needs no gradient
    gets none, in float32."""
    x, states, weights = make("LSTM")
    x = x.detach().float()
    states = tuple(s.detach().float() for s in states)
    weights = tuple(w.detach().float().requires_grad_() for w in weights)
    out, h_n, c_n = rnn_layer("LSTM", x, states, weights)
    h_n.sum().backward()
    assert x.grad is None and all(w.grad is not None for w in weights)
    assert weights[0].grad.dtype == ddp.float32


def test_falls_back_to_composed_ops():
    """Projections (proj_size) and autocast run the composed recurrence."""
    m = ddp.nn.LSTM(3, 4, proj_size=2)
    assert m(ddp.randn(5, 2, 3))[0].grad_fn.name() != "RecurrenceBackward0"
    m = ddp.nn.GRU(3, 4)
    with ddp.autocast("cpu", dtype=ddp.bfloat16):
        out = m(ddp.randn(5, 2, 3))[0]
    assert out.grad_fn.name() != "RecurrenceBackward0"


def test_grad_runs_only_the_nodes_before_its_inputs():
    """autograd.grad stops at its inputs: the graph beyond them is neither run nor freed (the
    op's double backward rebuilds its graph on its inputs and takes autograd.grad of it)."""
    a = ddp.tensor([1.0, 2.0], requires_grad=True)
    calls = []
    a.register_hook(lambda g: calls.append("a"))
    b = a * 3
    b.register_hook(lambda g: calls.append("b"))
    c = b.exp()
    (gb,) = ddp.autograd.grad(c.sum(), b)
    np.testing.assert_allclose(gb.numpy(), np.exp([3.0, 6.0]))
    assert calls == ["b"]            # a lies beyond the input b: its hook does not run
    (b * 2).sum().backward()         # the node before b was neither run nor freed by grad
    np.testing.assert_allclose(a.grad.numpy(), [6.0, 6.0])
    assert calls == ["b", "b", "a"]


@pytest.mark.gpu
@pytest.mark.parametrize("mode", list(MODES))
def test_gpu_matches_cpu(mode):
    x, states, weights = make(mode, L=5, N=3, I=4, H=3)
    ins = (x,) + states + weights
    out_c = rnn_layer(mode, x, states, weights, True)
    g_c = ddp.autograd.grad(out_c[0].sum() + out_c[1].sum(), ins)
    dev = [t.detach().cuda().requires_grad_() for t in ins]
    out_g = rnn_layer(mode, dev[0], tuple(dev[1:1 + len(states)]), tuple(dev[1 + len(states):]),
                      True)
    assert out_g[0].grad_fn.name() == "RecurrenceBackward0"
    g_g = ddp.autograd.grad(out_g[0].sum() + out_g[1].sum(), dev)
    for a, b in zip(out_c + g_c, out_g + g_g):
        np.testing.assert_allclose(b.detach().cpu().numpy(), a.detach().numpy(), rtol=1e-10,
                                   atol=1e-13)


def _layer_run(mode, dtype, layers, bidirectional, batch_first, initial, bias, upstream):
    """An ``nn.LSTM``/``nn.GRU`` (weights from a seed) run forward and backward: its outputs
    and the gradients of its input, initial states and parameters, as arrays."""
    rng = np.random.default_rng(0)
    ddp.manual_seed(0)
    cls = ddp.nn.LSTM if mode == "LSTM" else ddp.nn.GRU
    layer = cls(3, 5, num_layers=layers, bias=bias, batch_first=batch_first,
                bidirectional=bidirectional, dtype=dtype)
    shape = (2, 6, 3) if batch_first else (6, 2, 3)
    x = ddp.tensor(rng.standard_normal(shape) * 2, dtype=dtype, requires_grad=True)
    states = ()
    if initial:
        count = layers * (2 if bidirectional else 1)
        states = tuple(ddp.tensor(rng.standard_normal((count, 2, 5)), dtype=dtype,
                                  requires_grad=True) for _ in range(2 if mode == "LSTM" else 1))
    out, last = layer(x, (states if mode == "LSTM" else states[0]) if initial else None)
    last = last if mode == "LSTM" else (last,)
    results = [out] + list(last)
    if upstream == "sum":        # one value broadcast: a stride-0 gradient
        sum(r.sum() for r in results).backward()
    else:
        ddp.autograd.backward(results, [ddp.tensor(rng.standard_normal(tuple(r.shape)),
                                                   dtype=dtype) for r in results])
    leaves = [x] + list(states) + list(layer.parameters())
    return [r.detach().numpy() for r in results] + [leaf.grad.numpy() for leaf in leaves]


@pytest.mark.parametrize("upstream", ["random", "sum"])
@pytest.mark.parametrize("layers, bidirectional, batch_first, initial, bias",
                         [(1, False, False, False, True), (2, True, False, True, True),
                          (1, True, True, True, False), (2, False, True, False, True)])
@pytest.mark.parametrize("dtype", [ddp.float32, ddp.float64])
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_the_kernels_give_the_numpy_paths_values_and_gradients(
        monkeypatch, mode, dtype, layers, bidirectional, batch_first, initial, bias, upstream):
    """ddp.kernels.recurrent's steps (the CPU's path for LSTM and GRU in float32/float64)
    against the NumPy path the GPU runs: multi-layer, bidirectional, batch-first, with and
    without initial states and biases, a random and a broadcast upstream gradient."""
    from ddp import kernels
    from ddp.kernels import recurrent
    calls = []
    for name in ("lstm_cell", "lstm_cell_backward", "gru_gates", "gru_output",
                 "gru_cell_backward"):
        kernel = getattr(recurrent, name)
        monkeypatch.setattr(recurrent, name,
                            lambda *a, _k=kernel, _n=name: (calls.append(_n), _k(*a))[1])
    case = (mode, dtype, layers, bidirectional, batch_first, initial, bias, upstream)
    got = _layer_run(*case)
    steps = 6 * layers * (2 if bidirectional else 1)
    ran = ["lstm_cell", "lstm_cell_backward"] if mode == "LSTM" else \
        ["gru_gates", "gru_output", "gru_cell_backward"]
    assert kernels.enabled() and sorted(set(calls)) == sorted(ran)
    assert all(calls.count(name) == steps for name in ran)
    monkeypatch.setattr(kernels, "_enabled", False)
    calls.clear()
    want = _layer_run(*case)
    assert not calls
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == ddp.float32 else dict(rtol=1e-12, atol=1e-13)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, **tol)

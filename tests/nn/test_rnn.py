"""Recurrent layers: RNN, LSTM, GRU and their cells.

Outputs are checked against a NumPy re-implementation of the recurrences for every option
combination, gradients by gradcheck in float64, and, when PyTorch is installed, outputs and the
gradients of inputs, initial states and weights against ``torch.nn`` after loading torch's
state_dict into ours (and ours into torch's).
"""
import math
import sys
import warnings

import numpy as np
import pytest

import ddp
import ddp.nn as nn
from ddp.autograd import gradcheck, gradgradcheck

RNG = np.random.default_rng(2)
I, H, L, N = 3, 4, 3, 2  # input size, hidden size, sequence length, batch


def arr(t):
    return t.detach().numpy()


# --------------------------------------------------------------------------- NumPy reference

def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_step(mode, x, state, w_ih, w_hh, b_ih, b_hh, w_hr=None):
    """One step of PyTorch's documented recurrences (biases may be zeros)."""
    if mode == "LSTM":
        h, c = state
        i, f, g, o = np.split(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        return (h if w_hr is None else h @ w_hr.T), c
    if mode == "GRU":
        r_i, z_i, n_i = np.split(x @ w_ih.T + b_ih, 3, axis=-1)
        r_h, z_h, n_h = np.split(state @ w_hh.T + b_hh, 3, axis=-1)
        r, z = sigmoid(r_i + r_h), sigmoid(z_i + z_h)
        n = np.tanh(n_i + r * n_h)
        return (1 - z) * n + z * state
    pre = x @ w_ih.T + b_ih + state @ w_hh.T + b_hh
    return np.tanh(pre) if mode == "RNN_TANH" else np.maximum(pre, 0)


def np_rnn(module, x, h0, c0=None):
    """(output, h_n, c_n) of ``module`` on time-major ``x`` (L, N, I), from its state_dict."""
    p = {k: arr(v) for k, v in module.state_dict().items()}
    dirs = 2 if module.bidirectional else 1
    lstm = module.mode == "LSTM"
    layer_in, h_n, c_n = x, [], []
    for layer in range(module.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = p["weight_ih" + sfx], p["weight_hh" + sfx]
            zeros = np.zeros(w_ih.shape[0])
            args = (w_ih, w_hh, p.get("bias_ih" + sfx, zeros), p.get("bias_hh" + sfx, zeros))
            if lstm:
                args += (p.get("weight_hr" + sfx),)
            k = layer * dirs + d
            state = (h0[k], c0[k]) if lstm else h0[k]
            ys = [None] * len(layer_in)
            for t in (reversed(range(len(layer_in))) if d else range(len(layer_in))):
                state = np_step(module.mode, layer_in[t], state, *args)
                ys[t] = state[0] if lstm else state
            outs.append(np.stack(ys))
            h_n.append(state[0] if lstm else state)
            c_n.append(state[1] if lstm else None)
        layer_in = np.concatenate(outs, axis=-1)
    return layer_in, np.stack(h_n), (np.stack(c_n) if lstm else None)


def make(cls, **kwargs):
    kwargs.setdefault("dtype", ddp.float64)
    ddp.manual_seed(0)
    return getattr(nn, cls)(I, H, **kwargs)


MODES = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("GRU", {})]
MODE_IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


# --------------------------------------------------------------------------- shapes + values

@pytest.mark.parametrize("cls,extra", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("batched", [True, False])
def test_shapes_and_values_match_numpy(cls, extra, num_layers, bidirectional, batch_first,
                                       with_state, batched):
    m = make(cls, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
             **extra)
    lstm = cls == "LSTM"
    dirs = 2 if bidirectional else 1
    x = RNG.standard_normal((L, N, I))
    h0 = RNG.standard_normal((num_layers * dirs, N, H))
    c0 = RNG.standard_normal((num_layers * dirs, N, H))
    xin = x if not batch_first else x.transpose(1, 0, 2)
    if not batched:  # one sequence: (L, I) and states (layers, H); batch_first does not apply
        x, h0, c0, xin = x[:, :1], h0[:, :1], c0[:, :1], x[:, 0]
    state = None
    if with_state:
        hs = h0 if batched else h0[:, 0]
        cs = c0 if batched else c0[:, 0]
        state = (ddp.tensor(hs), ddp.tensor(cs)) if lstm else ddp.tensor(hs)
    out, hidden = m(ddp.tensor(xin), state)
    if not with_state:
        h0, c0 = np.zeros_like(h0), np.zeros_like(c0)
    ref_out, ref_h, ref_c = np_rnn(m, x, h0, c0)
    h_n, c_n = hidden if lstm else (hidden, None)
    if batched:
        assert tuple(out.shape) == ((N, L, dirs * H) if batch_first else (L, N, dirs * H))
        assert tuple(h_n.shape) == (num_layers * dirs, N, H)
        if batch_first:
            ref_out = ref_out.transpose(1, 0, 2)
    else:
        assert tuple(out.shape) == (L, dirs * H) and tuple(h_n.shape) == (num_layers * dirs, H)
        ref_out, ref_h, ref_c = ref_out[:, 0], ref_h[:, 0], (ref_c[:, 0] if lstm else None)
    np.testing.assert_allclose(arr(out), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(arr(h_n), ref_h, rtol=1e-10, atol=1e-12)
    if lstm:
        assert tuple(c_n.shape) == tuple(h_n.shape)
        np.testing.assert_allclose(arr(c_n), ref_c, rtol=1e-10, atol=1e-12)
    assert out.dtype == ddp.float64


def test_lstm_proj_size_matches_numpy():
    m = make("LSTM", proj_size=2, num_layers=2, bidirectional=True)
    assert tuple(m.weight_hh_l1.shape) == (4 * H, 2) and tuple(m.weight_ih_l1.shape) == (4 * H, 4)
    assert tuple(m.weight_hr_l0_reverse.shape) == (2, H)
    x = RNG.standard_normal((L, N, I))
    out, (h_n, c_n) = m(ddp.tensor(x))
    ref_out, ref_h, ref_c = np_rnn(m, x, np.zeros((4, N, 2)), np.zeros((4, N, H)))
    assert tuple(out.shape) == (L, N, 4) and tuple(h_n.shape) == (4, N, 2)
    assert tuple(c_n.shape) == (4, N, H)
    np.testing.assert_allclose(arr(out), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(arr(c_n), ref_c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_no_bias(cls):
    m = make(cls, bias=False, num_layers=2)
    assert all("bias" not in n for n, _ in m.named_parameters())
    x = RNG.standard_normal((L, N, I))
    out, _ = m(ddp.tensor(x))
    ref = np_rnn(m, x, np.zeros((2, N, H)), np.zeros((2, N, H)))[0]
    np.testing.assert_allclose(arr(out), ref, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- parameters

def test_parameter_names_shapes_and_init():
    m = nn.LSTM(I, H, num_layers=2, bidirectional=True)
    names = [n for n, _ in m.named_parameters()]
    expected = [f"{w}_l{k}{s}" for k in range(2) for s in ("", "_reverse")
                for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert names == expected == list(m.state_dict())
    assert tuple(m.weight_ih_l0.shape) == (4 * H, I)
    assert tuple(m.weight_ih_l1.shape) == (4 * H, 2 * H)
    assert tuple(m.weight_hh_l1_reverse.shape) == (4 * H, H)
    assert tuple(nn.GRU(I, H).weight_ih_l0.shape) == (3 * H, I)
    assert tuple(nn.RNN(I, H).bias_hh_l0.shape) == (H,)
    bound = 1 / math.sqrt(H)
    for p in m.parameters():
        assert p.requires_grad and float(p.abs().max()) <= bound
    assert float(m.weight_ih_l0.abs().max()) > bound / 2  # actually spread over the range
    assert len(m.all_weights) == 4 and len(m.all_weights[0]) == 4
    m.flatten_parameters()


def test_cell_parameters():
    cell = nn.GRUCell(I, H, bias=False)
    assert [n for n, _ in cell.named_parameters()] == ["weight_ih", "weight_hh"]
    assert cell.bias_ih is None
    cell = nn.LSTMCell(I, H)
    assert [n for n, _ in cell.named_parameters()] == ["weight_ih", "weight_hh", "bias_ih",
                                                       "bias_hh"]
    assert tuple(cell.weight_hh.shape) == (4 * H, H)


@pytest.mark.parametrize("module,text", [
    (nn.RNN(3, 4), "RNN(3, 4)"),
    (nn.LSTM(3, 4, 2, batch_first=True, dropout=0.5, bidirectional=True),
     "LSTM(3, 4, num_layers=2, batch_first=True, dropout=0.5, bidirectional=True)"),
    (nn.GRU(3, 4, bias=False), "GRU(3, 4, bias=False)"),
    (nn.LSTM(3, 4, proj_size=2), "LSTM(3, 4, proj_size=2)"),
    (nn.RNNCell(3, 4, nonlinearity="relu"), "RNNCell(3, 4, nonlinearity=relu)"),
    (nn.GRUCell(3, 4, bias=False), "GRUCell(3, 4, bias=False)"),
    (nn.LSTMCell(3, 4), "LSTMCell(3, 4)")])
def test_repr(module, text):
    assert repr(module) == text


# --------------------------------------------------------------------------- cells

@pytest.mark.parametrize("cls,mode", [("RNNCell", "RNN_TANH"), ("LSTMCell", "LSTM"),
                                      ("GRUCell", "GRU")])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_cells_match_numpy(cls, mode, batched, with_state):
    cell = make(cls)
    x = RNG.standard_normal((N, I) if batched else (I,))
    h, c = (RNG.standard_normal((N, H) if batched else (H,)) for _ in range(2))
    if not with_state:
        h, c = np.zeros_like(h), np.zeros_like(c)
    hx = ((ddp.tensor(h), ddp.tensor(c)) if mode == "LSTM" else ddp.tensor(h)) if with_state \
        else None
    out = cell(ddp.tensor(x), hx)
    p = [arr(cell.weight_ih), arr(cell.weight_hh), arr(cell.bias_ih), arr(cell.bias_hh)]
    ref = np_step(mode, x, (h, c) if mode == "LSTM" else h, *p)
    if mode == "LSTM":
        np.testing.assert_allclose(arr(out[0]), ref[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(arr(out[1]), ref[1], rtol=1e-10, atol=1e-12)
    else:
        assert tuple(out.shape) == x.shape[:-1] + (H,)
        np.testing.assert_allclose(arr(out), ref, rtol=1e-10, atol=1e-12)


def test_relu_cell():
    cell = make("RNNCell", nonlinearity="relu")
    x = RNG.standard_normal((N, I))
    p = [arr(cell.weight_ih), arr(cell.weight_hh), arr(cell.bias_ih), arr(cell.bias_hh)]
    np.testing.assert_allclose(arr(cell(ddp.tensor(x))), np_step("RNN_RELU", x, np.zeros((N, H)),
                                                                 *p), rtol=1e-12)


# --------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_gradcheck_inputs_states_and_weights(cls):
    m = nn.__dict__[cls](2, 2, bidirectional=True, dtype=ddp.float64)
    x = ddp.tensor(RNG.standard_normal((3, 1, 2)), requires_grad=True)
    h0 = ddp.tensor(RNG.standard_normal((2, 1, 2)), requires_grad=True)
    c0 = ddp.tensor(RNG.standard_normal((2, 1, 2)), requires_grad=True)
    lstm = cls == "LSTM"

    def run(a, h, c, *weights):  # the weights are used through the module
        out, hidden = m(a, (h, c) if lstm else h)
        return (out, hidden[0], hidden[1]) if lstm else (out, hidden)
    assert gradcheck(run, (x, h0, c0) + tuple(m.parameters()))
    assert gradgradcheck(lambda a: m(a)[0].sum() if cls != "RNN" else m(a)[0].pow(2).sum(), (x,))


@pytest.mark.parametrize("cls", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cell_gradcheck(cls):
    cell = nn.__dict__[cls](2, 3, dtype=ddp.float64)
    x = ddp.tensor(RNG.standard_normal((2, 2)), requires_grad=True)
    h = ddp.tensor(RNG.standard_normal((2, 3)), requires_grad=True)
    c = ddp.tensor(RNG.standard_normal((2, 3)), requires_grad=True)

    def run(a, hh, cc, *weights):
        return cell(a, (hh, cc) if cls == "LSTMCell" else hh)
    assert gradcheck(run, (x, h, c) + tuple(cell.parameters()))


def test_long_sequence_backward():
    """1000 steps through nn.LSTM, and a graph deeper than Python's recursion limit (an
    LSTMCell stepped in a loop: several nodes per step, one chain) backpropagate: the engine is
    iterative, not recursive."""
    m = nn.LSTM(2, 3)
    x = ddp.randn(1000, 1, 2, requires_grad=True)
    out, (h_n, _) = m(x)
    (out.sum() + h_n.sum()).backward()
    assert bool(x.grad.isfinite().all()) and float(x.grad[0].abs().sum()) > 0
    assert bool(m.weight_hh_l0.grad.isfinite().all())
    cell, steps = nn.LSTMCell(2, 3), sys.getrecursionlimit() + 100
    x = ddp.randn(steps, 1, 2, requires_grad=True)
    h = c = ddp.zeros(1, 3)
    for t in range(steps):
        h, c = cell(x[t], (h, c))
    h.sum().backward()
    assert bool(x.grad.isfinite().all()) and float(x.grad[-1].abs().sum()) > 0


# --------------------------------------------------------------------------- dropout

def test_dropout_between_layers_only_in_training():
    m = make("GRU", num_layers=2, dropout=0.5)
    x = ddp.tensor(RNG.standard_normal((L, N, I)))
    ref = np_rnn(m, arr(x), np.zeros((2, N, H)))[0]
    m.eval()
    np.testing.assert_allclose(arr(m(x)[0]), ref, rtol=1e-10)
    m.train()
    a, b = arr(m(x)[0]), arr(m(x)[0])
    assert not np.allclose(a, ref) and not np.allclose(a, b)
    # dropout applies to the inputs of layers after the first, never to the last output:
    # with p=1 layer 1 sees zeros, so every sequence of the batch gives the same output
    out = arr(make("GRU", num_layers=2, dropout=1.0)(x)[0])
    assert np.allclose(out[:, 0], out[:, 1]) and not np.allclose(out, 0)


def test_dropout_argument_checks():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        nn.LSTM(I, H, dropout=0.2)
    with pytest.raises(ValueError, match="dropout should be a number in range"):
        nn.GRU(I, H, num_layers=2, dropout=1.5)


# --------------------------------------------------------------------------- errors

def test_errors_name_the_problem():
    m = nn.LSTM(I, H, num_layers=2)
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size. "
                                           "Expected 3, got 5"):
        m(ddp.randn(L, N, 5))
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(2, 2, 4\), got \[1, 2, 4\]"):
        m(ddp.randn(L, N, I), (ddp.zeros(1, N, H), ddp.zeros(2, N, H)))
    with pytest.raises(ValueError, match="Expected input to be 2D.*4D"):
        m(ddp.randn(1, L, N, I))
    with pytest.raises(RuntimeError, match="hx should also be 2-D"):
        m(ddp.randn(L, I), (ddp.zeros(2, 1, H), ddp.zeros(2, 1, H)))
    with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
        m(ddp.randn(L, N, I), ddp.zeros(2, N, H))
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        nn.RNN(I, H, nonlinearity="gelu")
    with pytest.raises(TypeError, match="LSTMCell: hx must be a tuple"):
        nn.LSTMCell(I, H)(ddp.randn(N, I), ddp.zeros(N, H))
    with pytest.raises(RuntimeError, match="inconsistent input_size"):
        nn.GRUCell(I, H)(ddp.randn(N, I + 1))
    with pytest.raises(ValueError, match="proj_size"):
        nn.LSTM(I, H, proj_size=H)


def test_float32_default_and_double():
    m = nn.GRU(I, H)
    assert m.weight_ih_l0.dtype == ddp.float32
    out, h = m(ddp.randn(L, N, I))
    assert out.dtype == ddp.float32 and h.dtype == ddp.float32
    m.double()
    assert m(ddp.randn(L, N, I, dtype=ddp.float64))[0].dtype == ddp.float64


# --------------------------------------------------------------------------- torch parity

def _state_of(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _load_state(ours, state):
    ours.load_state_dict({k: ddp.tensor(v) for k, v in state.items()})


TORCH_CONFIGS = [
    ("RNN", dict(num_layers=2, bidirectional=True)),
    ("RNN", dict(nonlinearity="relu", batch_first=True)),
    ("LSTM", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("LSTM", dict(proj_size=2, num_layers=2)),
    ("LSTM", dict(bias=False)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("GRU", dict(batch_first=True, bias=False)),
]


@pytest.mark.filterwarnings("ignore:LSTM with projections")
@pytest.mark.parametrize("cls,kwargs", TORCH_CONFIGS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batched", [True, False])
def test_matches_torch_after_loading_its_state_dict(oracle, cls, kwargs, dtype, batched):
    rng = np.random.default_rng(2)  # inputs of this case alone (the oracle records them)
    lstm = cls == "LSTM"
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    h_size = kwargs.get("proj_size") or H
    x = rng.standard_normal((N, L, I) if kwargs.get("batch_first") else (L, N, I))
    h0, c0 = rng.standard_normal((layers, N, h_size)), rng.standard_normal((layers, N, H))
    if not batched:
        x, h0, c0 = x[0] if kwargs.get("batch_first") else x[:, 0], h0[:, 0], c0[:, 0]
    values = [v.astype(dtype) for v in (x, h0, c0)]
    n_out = 3 if lstm else 2
    # upstream gradients for every output, drawn before either side runs
    out_shape = ((N, L) if kwargs.get("batch_first") else (L, N)) if batched else (L,)
    out_shape = out_shape + ((2 if kwargs.get("bidirectional") else 1) * h_size,)
    grads = [rng.standard_normal(s).astype(dtype) for s in
             [out_shape] + [v.shape for v in values[1:n_out]]]

    def reference(torch):
        theirs = getattr(torch.nn, cls)(I, H, **kwargs).to(getattr(torch, dtype))
        tx, th, tc = (torch.tensor(v, requires_grad=True) for v in values)
        ref, ref_hidden = theirs(tx, (th, tc) if lstm else th)
        ref_hidden = ref_hidden if lstm else (ref_hidden,)
        outs = (ref,) + tuple(ref_hidden)
        sum(((o * torch.tensor(g)).sum() for o, g in zip(outs, grads))).backward()
        return {"state": _state_of(theirs), "outs": [o.detach().numpy() for o in outs],
                "input_grads": [t.grad.numpy() for t in (tx, th, tc)[:n_out]],
                "param_grads": {n: p.grad.numpy() for n, p in theirs.named_parameters()}}
    want = oracle(reference)
    ours = getattr(nn, cls)(I, H, **kwargs).to(getattr(ddp, dtype))
    _load_state(ours, want["state"])
    ox, oh, oc = (ddp.tensor(v, requires_grad=True) for v in values)
    out, hidden = ours(ox, (oh, oc) if lstm else oh)
    hidden = hidden if lstm else (hidden,)
    outs = (out,) + tuple(hidden)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    assert len(outs) == len(want["outs"])
    for a, b in zip(outs, want["outs"]):
        np.testing.assert_allclose(arr(a), b, **tol)
    # backward from every output with random weights
    sum(((o * ddp.tensor(g)).sum() for o, g in zip(outs, grads))).backward()
    for a, b in zip((ox, oh, oc)[:n_out], want["input_grads"]):
        np.testing.assert_allclose(arr(a.grad), b, **tol)
    ours_params = dict(ours.named_parameters())
    assert sorted(ours_params) == sorted(want["param_grads"])
    for n, g in want["param_grads"].items():
        np.testing.assert_allclose(arr(ours_params[n].grad), g, err_msg=n, **tol)


@pytest.mark.parametrize("cls", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_match_torch(oracle, cls):
    x = np.random.default_rng(2).standard_normal((N, I))

    def combine(out):
        return out[0] * out[1] if cls == "LSTMCell" else out

    def reference(torch):
        theirs = getattr(torch.nn, cls)(I, H).double()
        tx = torch.tensor(x, requires_grad=True)
        ref = combine(theirs(tx))
        ref.sum().backward()
        return {"state": _state_of(theirs), "y": ref.detach().numpy(), "gx": tx.grad.numpy(),
                "g_hh": theirs.weight_hh.grad.numpy()}
    want = oracle(reference)
    ours = getattr(nn, cls)(I, H, dtype=ddp.float64)
    _load_state(ours, want["state"])
    ox = ddp.tensor(x, requires_grad=True)
    out = combine(ours(ox))
    np.testing.assert_allclose(arr(out), want["y"], rtol=1e-10, atol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(arr(ox.grad), want["gx"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(arr(ours.weight_hh.grad), want["g_hh"], rtol=1e-10, atol=1e-12)


def test_state_dict_loads_into_torch(oracle):
    ddp.manual_seed(0)  # our initial weights are the oracle's input
    ours = nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=ddp.float64)
    state = {k: arr(v) for k, v in ours.state_dict().items()}
    x = np.random.default_rng(2).standard_normal((L, N, I))

    def reference(torch):
        theirs = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True).double()
        theirs.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
        return theirs(torch.tensor(x))[0].detach().numpy()
    np.testing.assert_allclose(arr(ours(ddp.tensor(x))[0]), oracle(reference), rtol=1e-10)


def test_long_sequence_matches_torch(oracle):
    x = np.random.default_rng(2).standard_normal((300, 1, 2))

    def reference(torch):
        theirs = torch.nn.GRU(2, 3).double()
        tx = torch.tensor(x, requires_grad=True)
        theirs(tx)[0].sum().backward()
        return {"state": _state_of(theirs), "gx": tx.grad.numpy()}
    want = oracle(reference)
    ours = nn.GRU(2, 3, dtype=ddp.float64)
    _load_state(ours, want["state"])
    ox = ddp.tensor(x, requires_grad=True)
    ours(ox)[0].sum().backward()
    np.testing.assert_allclose(arr(ox.grad), want["gx"], rtol=1e-9, atol=1e-12)


def test_no_warnings_on_normal_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.LSTM(I, H, num_layers=2, dropout=0.1)(ddp.randn(L, N, I))


@pytest.mark.gpu
@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_gpu_matches_cpu(cls):
    m = make(cls, num_layers=2, bidirectional=True)
    x = RNG.standard_normal((L, N, I))
    cpu_x = ddp.tensor(x, requires_grad=True)
    out_c = m(cpu_x)[0]
    out_c.sum().backward()
    grads_c = [arr(p.grad) for p in m.parameters()]
    m.zero_grad()
    m.cuda()
    gpu_x = ddp.tensor(x, device="cuda", requires_grad=True)
    out_g = m(gpu_x)[0]
    out_g.sum().backward()
    np.testing.assert_allclose(out_g.detach().cpu().numpy(), arr(out_c), rtol=1e-10)
    np.testing.assert_allclose(gpu_x.grad.cpu().numpy(), arr(cpu_x.grad), rtol=1e-10, atol=1e-13)
    for p, g in zip(m.parameters(), grads_c):
        np.testing.assert_allclose(p.grad.cpu().numpy(), g, rtol=1e-10, atol=1e-13)

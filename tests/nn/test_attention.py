"""Attention: ``F.scaled_dot_product_attention``, ``F.multi_head_attention_forward`` and
``nn.MultiheadAttention``.

PyTorch 2.13's answers are recorded (the ``oracle`` fixture, tests/oracle.py): for every option
combination the same inputs and (through state_dict) the same weights go into both, and outputs,
attention weights and the gradients of inputs, masks and parameters must agree to float32
rounding; state_dict keys and reprs must be identical. Gradients of the fused op are also checked
against finite differences in float64 (first and second order), masks and dropout included.
Dropout is checked by what does not depend on the random stream (eval, p=0, the kept weights'
scale).
"""
import itertools
import math
import warnings

import numpy as np
import pytest

import ddp
import ddp.nn as nn
import ddp.nn.functional as F
from ddp.autograd import gradcheck, gradgradcheck
from ddp.nn.functional._attention import ScaledDotProductAttention

RTOL, ATOL = 1e-5, 2e-6  # float32 rounding of products over a few dozen terms


def arr(t):
    return None if t is None else t.detach().numpy()


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def loss_weights(shape):
    """A fixed, non-uniform cotangent: the loss is sum(output * weights)."""
    return (np.cos(np.arange(int(np.prod(shape)))).reshape(shape) + 1.5).astype(np.float32)


def close(ours, ref, what, rtol=RTOL, atol=ATOL):
    if ref is None:
        assert ours is None, f"{what}: expected None"
        return
    assert ours is not None, f"{what}: missing"
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol, err_msg=what)


def leaves(lib, arrays):
    """Tensors of ``lib`` from NumPy arrays: float ones require grad, bool ones (masks) don't."""
    return {k: lib.tensor(v, requires_grad=v.dtype.kind == "f") for k, v in arrays.items()}


def backward_of(lib, outputs):
    total = None
    for o in outputs:
        if o is not None:
            term = (o * lib.tensor(loss_weights(tuple(o.shape)))).sum()
            total = term if total is None else total + term
    total.backward()


def grads(tensors):
    return {k: (None if t.grad is None else t.grad.numpy()) for k, t in tensors.items()
            if t.requires_grad}


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


# --------------------------------------------------------------------------- module harness

def run_module(lib, make, inputs, call, state=None):
    """Build ``make(lib)`` (loading ``state`` when given), run ``call(module, tensors)`` and
    backward; the answer as arrays."""
    module = make(lib)
    if state is not None:
        module.load_state_dict({k: lib.tensor(v) for k, v in state.items()})
    tensors = leaves(lib, inputs)
    outs = as_tuple(call(module, tensors))
    backward_of(lib, outs)
    return {"state": {k: v.detach().numpy() for k, v in module.state_dict().items()},
            "keys": "\n".join(module.state_dict().keys()),
            "repr": repr(module),
            "out": [None if o is None else o.detach().numpy() for o in outs],
            "grad_in": grads(tensors),
            "grad_param": {k: (None if p.grad is None else p.grad.numpy())
                           for k, p in module.named_parameters()}}


def check_module(oracle, make, inputs, call, key=None, rtol=RTOL, atol=ATOL):
    """The module made by ``make`` (the same code builds torch's and ours) agrees with PyTorch's
    recorded answer: keys, repr, outputs, input and parameter gradients."""
    ref = oracle(lambda torch: run_module(torch, make, inputs, call), key=key)
    ours = run_module(ddp, make, inputs, call, state=ref["state"])
    assert ours["keys"] == ref["keys"]
    assert ours["repr"] == ref["repr"]
    assert len(ours["out"]) == len(ref["out"])
    for i, (a, b) in enumerate(zip(ours["out"], ref["out"])):
        close(a, b, f"output {i}", rtol, atol)
    assert sorted(ours["grad_in"]) == sorted(ref["grad_in"])
    for k in ref["grad_in"]:
        close(ours["grad_in"][k], ref["grad_in"][k], f"gradient of input {k}", rtol, atol)
    assert sorted(ours["grad_param"]) == sorted(ref["grad_param"])
    for k in ref["grad_param"]:
        close(ours["grad_param"][k], ref["grad_param"][k], f"gradient of {k}", rtol, atol)
    return ref, ours


# --------------------------------------------------------------------------- SDPA vs PyTorch

def sdpa_answer(lib, inputs, kwargs):
    t = leaves(lib, inputs)
    mask = t.get("mask")
    out = lib.nn.functional.scaled_dot_product_attention(t["q"], t["k"], t["v"], attn_mask=mask,
                                                         **kwargs)
    backward_of(lib, [out])
    return {"out": out.detach().numpy(), "grad": grads(t)}


def sdpa_case(rng, q_shape, k_shape, v_shape, mask=None):
    inputs = {"q": rand(rng, *q_shape), "k": rand(rng, *k_shape), "v": rand(rng, *v_shape)}
    if mask is not None:
        inputs["mask"] = mask
    return inputs


def _bool_mask(rng, shape, always_one=True):
    m = rng.random(shape) < 0.6
    if always_one:
        m[..., 0] = True  # every query sees a key
    return m


SDPA_CASES = {
    "plain": lambda r: (sdpa_case(r, (2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 6)), {}),
    "scale": lambda r: (sdpa_case(r, (2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 6)), {"scale": 0.3}),
    "causal_square": lambda r: (sdpa_case(r, (2, 2, 5, 4), (2, 2, 5, 4), (2, 2, 5, 4)),
                                {"is_causal": True}),
    "causal_wide": lambda r: (sdpa_case(r, (2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4)),
                              {"is_causal": True}),
    "causal_tall": lambda r: (sdpa_case(r, (2, 2, 5, 4), (2, 2, 3, 4), (2, 2, 3, 4)),
                              {"is_causal": True}),
    "bool_mask_2d": lambda r: (sdpa_case(r, (2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 8),
                                         _bool_mask(r, (4, 5))), {}),
    "bool_mask_4d": lambda r: (sdpa_case(r, (2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 8),
                                         _bool_mask(r, (2, 3, 4, 5))), {}),
    "bool_mask_broadcast": lambda r: (sdpa_case(r, (2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 8),
                                                _bool_mask(r, (2, 1, 1, 5))), {}),
    "bool_mask_dead_rows": lambda r: (sdpa_case(r, (2, 1, 4, 8), (2, 1, 5, 8), (2, 1, 5, 8),
                                                np.array([[False] * 5, [True] * 5,
                                                          [False, True, False, True, False],
                                                          [False] * 5])), {}),
    "float_mask": lambda r: (sdpa_case(r, (2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 8),
                                       rand(r, 3, 4, 5)), {}),
    "float_mask_broadcast": lambda r: (sdpa_case(r, (2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 8),
                                                 rand(r, 2, 1, 1, 5)), {}),
    "unbatched_2d": lambda r: (sdpa_case(r, (4, 8), (5, 8), (5, 6)), {}),
    "three_dims": lambda r: (sdpa_case(r, (3, 4, 8), (3, 5, 8), (3, 5, 6),
                                       _bool_mask(r, (3, 4, 5))), {}),
    "five_dims": lambda r: (sdpa_case(r, (2, 2, 2, 3, 4), (2, 2, 2, 5, 4), (2, 2, 2, 5, 4)), {}),
    "batch_broadcast": lambda r: (sdpa_case(r, (2, 3, 4, 8), (1, 3, 5, 8), (1, 3, 5, 8)), {}),
    "head_broadcast": lambda r: (sdpa_case(r, (2, 3, 4, 8), (2, 1, 5, 8), (2, 1, 5, 8)), {}),
    "gqa": lambda r: (sdpa_case(r, (2, 4, 3, 8), (2, 2, 5, 8), (2, 2, 5, 8)),
                      {"enable_gqa": True}),
    "gqa_causal": lambda r: (sdpa_case(r, (2, 6, 5, 4), (2, 3, 5, 4), (2, 3, 5, 4)),
                             {"enable_gqa": True, "is_causal": True}),
}


@pytest.mark.parametrize("case", sorted(SDPA_CASES))
def test_sdpa_matches_torch(oracle, case):
    inputs, kwargs = SDPA_CASES[case](np.random.default_rng(sorted(SDPA_CASES).index(case)))
    ref = oracle(lambda torch: sdpa_answer(torch, inputs, kwargs))
    ours = sdpa_answer(ddp, inputs, kwargs)
    close(ours["out"], ref["out"], "output")
    assert sorted(ours["grad"]) == sorted(ref["grad"])
    for k in ref["grad"]:
        close(ours["grad"][k], ref["grad"][k], f"gradient of {k}")


def test_sdpa_dead_rows_are_zero_not_nan():
    rng = np.random.default_rng(0)
    q, k, v = (ddp.tensor(rand(rng, 1, 2, 3, 4), requires_grad=True) for _ in range(3))
    mask = ddp.tensor(np.array([[True, True, False], [False, False, False], [True, False, True]]))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert np.all(arr(out)[:, :, 1] == 0)
    out.sum().backward()
    assert np.all(arr(q.grad)[:, :, 1] == 0) and np.isfinite(arr(k.grad)).all()


def test_sdpa_keeps_dtype_and_float32_mask_with_float64_query():
    rng = np.random.default_rng(1)
    q = ddp.tensor(rng.standard_normal((2, 3, 4)))
    out = F.scaled_dot_product_attention(q, q, q, attn_mask=ddp.zeros(3, 3))
    assert out.dtype == ddp.float64
    ref = F.scaled_dot_product_attention(q, q, q)
    np.testing.assert_allclose(arr(out), arr(ref), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sdpa_half_precision_computes_in_float32(dtype):
    rng = np.random.default_rng(2)
    x32 = ddp.tensor(rand(rng, 2, 3, 5, 4))
    dt = getattr(ddp, dtype)
    x = x32.to(dt).requires_grad_()
    out = F.scaled_dot_product_attention(x, x, x, is_causal=True)
    assert out.dtype == dt
    ref = F.scaled_dot_product_attention(*(x.detach().float(),) * 3, is_causal=True)
    np.testing.assert_allclose(arr(out.float()), arr(ref), rtol=1e-2, atol=1e-2)
    out.float().sum().backward()
    assert x.grad.dtype == dt


# --------------------------------------------------------------------------- gradients (f64)

def f64(rng, *shape):
    return ddp.tensor(rng.standard_normal(shape), dtype=ddp.float64, requires_grad=True)


GRAD_CASES = {
    "plain": dict(),
    "scale": dict(scale=0.7),
    "causal": dict(is_causal=True),
    "bool_mask": dict(mask=np.array([[True, False, True, True], [True, True, False, False],
                                     [False, True, True, True]])),
    "dead_row": dict(mask=np.array([[True, False, True, True], [False] * 4,
                                    [False, True, True, True]])),
    "float_mask": dict(float_mask=True),
}


@pytest.mark.parametrize("case", sorted(GRAD_CASES))
def test_sdpa_gradcheck(case):
    spec = dict(GRAD_CASES[case])
    rng = np.random.default_rng(3)
    q, k, v = f64(rng, 2, 3, 4), f64(rng, 2, 4, 4), f64(rng, 2, 4, 3)
    inputs = [q, k, v]
    kwargs = {k_: spec[k_] for k_ in ("scale", "is_causal") if k_ in spec}
    if "mask" in spec:
        kwargs["attn_mask"] = ddp.tensor(spec["mask"])
    if spec.get("float_mask"):
        inputs.append(f64(rng, 3, 4))

    def fn(*xs):
        extra = {"attn_mask": xs[3]} if len(xs) > 3 else {}
        return F.scaled_dot_product_attention(xs[0], xs[1], xs[2], **kwargs, **extra)

    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


@pytest.mark.parametrize("safe", [True, False])
def test_fused_op_gradcheck_with_dropout_mask_and_weights_output(safe):
    rng = np.random.default_rng(4)
    q, k, v = f64(rng, 2, 3, 4), f64(rng, 2, 5, 4), f64(rng, 2, 5, 2)
    bias = f64(rng, 3, 5)
    keep = (rng.random((2, 3, 5)) > 0.3) / 0.7  # a fixed dropout mask: 0 or 1/(1-p)

    def fn(q, k, v, bias):
        return ScaledDotProductAttention.apply(q, k, v, bias, scale=0.5, causal=True, keep=keep,
                                               safe=safe, weights=True)

    assert gradcheck(fn, (q, k, v, bias))
    assert gradgradcheck(fn, (q, k, v, bias))


def test_fused_op_only_weights_used():
    rng = np.random.default_rng(5)
    q, k, v = f64(rng, 3, 4), f64(rng, 5, 4), f64(rng, 5, 2)

    def fn(q, k, v):
        return ScaledDotProductAttention.apply(q, k, v, None, scale=1.0, weights=True)[1]

    assert gradcheck(fn, (q, k, v))


# --------------------------------------------------------------------------- dropout

def test_sdpa_dropout_zero_is_exact_and_one_gives_zeros():
    rng = np.random.default_rng(6)
    q = ddp.tensor(rand(rng, 2, 3, 4, 8))
    np.testing.assert_array_equal(arr(F.scaled_dot_product_attention(q, q, q, dropout_p=0.0)),
                                  arr(F.scaled_dot_product_attention(q, q, q)))
    assert not arr(F.scaled_dot_product_attention(q, q, q, dropout_p=1.0)).any()


def test_sdpa_dropout_drops_weights_and_scales_the_rest():
    rng = np.random.default_rng(7)
    q, k = ddp.tensor(rand(rng, 1, 1, 64, 8)), ddp.tensor(rand(rng, 1, 1, 64, 8))
    v = ddp.eye(64).reshape(1, 1, 64, 64)  # the output is the (dropped-out) weights themselves
    plain = arr(F.scaled_dot_product_attention(q, k, v))
    ddp.manual_seed(0)
    dropped = arr(F.scaled_dot_product_attention(q, k, v, dropout_p=0.25))
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], plain[kept] / 0.75, rtol=1e-5)
    assert 0.65 < kept.mean() < 0.85  # about 1 - p of 4096 weights kept
    ddp.manual_seed(0)  # the mask comes from ddp's generator: seeded, it repeats
    np.testing.assert_array_equal(arr(F.scaled_dot_product_attention(q, k, v, dropout_p=0.25)),
                                  dropped)


def test_mha_dropout_only_in_training():
    ddp.manual_seed(0)
    m = nn.MultiheadAttention(8, 2, dropout=0.5)
    x = ddp.tensor(rand(np.random.default_rng(8), 6, 2, 8))
    m.eval()
    out_eval, w_eval = m(x, x, x)
    again, _ = m(x, x, x)
    np.testing.assert_array_equal(arr(out_eval), arr(again))
    m.train()
    _, w_train = m(x, x, x, average_attn_weights=False)
    m.eval()
    _, w_all = m(x, x, x, average_attn_weights=False)
    kept = arr(w_train) != 0
    assert 0.2 < kept.mean() < 0.8
    np.testing.assert_allclose(arr(w_train)[kept], arr(w_all)[kept] * 2, rtol=1e-5)


# --------------------------------------------------------------------------- MultiheadAttention

E, HEADS, L, S, N = 8, 2, 4, 5, 3


def mha_inputs(seed, batch_first, kdim=None, vdim=None, batched=True):
    rng = np.random.default_rng(seed)
    kd, vd = kdim or E, vdim or E

    def seq(length, feat):
        if not batched:
            return rand(rng, length, feat)
        return rand(rng, N, length, feat) if batch_first else rand(rng, length, N, feat)

    return {"q": seq(L, E), "k": seq(S, kd), "v": seq(S, vd)}, rng


MHA_GRID = list(itertools.product([False, True], [True, False], [True, False], [True, False],
                                  [False, True], [False, True], [None, (6, 3)]))


def _grid_id(p):
    bf, nw, avg, bias, kv, zero, dims = p
    return (f"bf{int(bf)}-w{int(nw)}-avg{int(avg)}-bias{int(bias)}-kv{int(kv)}-zero{int(zero)}-"
            + ("kvdim" if dims else "same"))


@pytest.mark.parametrize("params", MHA_GRID, ids=[_grid_id(p) for p in MHA_GRID])
def test_mha_options_match_torch(oracle, params):
    bf, need_weights, average, bias, add_bias_kv, add_zero_attn, dims = params
    kdim, vdim = dims or (None, None)
    inputs, rng = mha_inputs(MHA_GRID.index(params), bf, kdim, vdim)
    inputs["kpm"] = rng.random((N, S)) < 0.3
    inputs["kpm"][:, 0] = False
    inputs["am"] = rand(rng, L, S)

    def make(lib):
        return lib.nn.MultiheadAttention(E, HEADS, bias=bias, add_bias_kv=add_bias_kv,
                                         add_zero_attn=add_zero_attn, kdim=kdim, vdim=vdim,
                                         batch_first=bf)

    def call(m, t):
        return m(t["q"], t["k"], t["v"], key_padding_mask=t["kpm"], attn_mask=t["am"],
                 need_weights=need_weights, average_attn_weights=average)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bool padding mask and float attn_mask: deprecated
        check_module(oracle, make, inputs, call)


MASK_CASES = {
    "none": lambda r: {},
    "kpm_bool": lambda r: {"kpm": np.array([[False, True, False, False, True],
                                            [False] * 5, [False, False, True, True, True]])},
    "kpm_float": lambda r: {"kpm": rand(r, N, S)},
    "attn_bool_2d": lambda r: {"am": np.triu(np.ones((L, S), bool), 2)},
    "attn_float_3d": lambda r: {"am": rand(r, N * HEADS, L, S)},
    "attn_bool_3d_and_kpm_bool": lambda r: {"am": r.random((N * HEADS, L, S)) < 0.2,
                                            "kpm": np.array([[False, True, False, False, True],
                                                             [False] * 5, [False] * 4 + [True]])},
    "float_both": lambda r: {"am": rand(r, L, S), "kpm": rand(r, N, S)},
}


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_mha_masks_match_torch(oracle, case, batch_first, need_weights):
    inputs, rng = mha_inputs(7, batch_first)
    inputs.update(MASK_CASES[case](rng))

    def call(m, t):
        return m(t["q"], t["k"], t["v"], key_padding_mask=t.get("kpm"), attn_mask=t.get("am"),
                 need_weights=need_weights)

    check_module(oracle, lambda lib: lib.nn.MultiheadAttention(E, HEADS, batch_first=batch_first),
                 inputs, call)


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("kind", ["self", "enc_dec", "separate"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_mha_input_sharing_matches_torch(oracle, kind, batch_first, need_weights):
    """Self-attention (query is key is value) and encoder-decoder attention (key is value) take
    PyTorch's packed projection shortcuts; the gradients add up over the shared input."""
    inputs, _ = mha_inputs(11, batch_first)

    def call(m, t):
        q, k, v = t["q"], t["k"], t["v"]
        if kind == "self":
            return m(q, q, q, need_weights=need_weights)
        if kind == "enc_dec":
            return m(q, k, k, need_weights=need_weights)
        return m(q, k, v, need_weights=need_weights)

    check_module(oracle, lambda lib: lib.nn.MultiheadAttention(E, HEADS, batch_first=batch_first),
                 inputs, call)


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_mha_is_causal_matches_torch(oracle, batch_first, need_weights):
    inputs, _ = mha_inputs(12, batch_first)
    del inputs["k"], inputs["v"]
    inputs["am"] = np.triu(np.full((L, L), -np.inf, np.float32), 1)

    def call(m, t):
        return m(t["q"], t["q"], t["q"], attn_mask=t["am"], is_causal=True,
                 need_weights=need_weights)

    check_module(oracle, lambda lib: lib.nn.MultiheadAttention(E, HEADS, batch_first=batch_first),
                 inputs, call)


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("dims", [None, (6, 3)])
@pytest.mark.parametrize("masks", [False, True])
def test_mha_unbatched_matches_torch(oracle, dims, masks, need_weights):
    kdim, vdim = dims or (None, None)
    inputs, rng = mha_inputs(13, False, kdim, vdim, batched=False)
    if masks:
        inputs["kpm"] = np.array([False, True, False, False, True])
        inputs["am"] = rng.random((HEADS, L, S)) < 0.3

    def call(m, t):
        return m(t["q"], t["k"], t["v"], key_padding_mask=t.get("kpm"), attn_mask=t.get("am"),
                 need_weights=need_weights)

    check_module(oracle, lambda lib: lib.nn.MultiheadAttention(E, HEADS, kdim=kdim, vdim=vdim,
                                                               batch_first=True),
                 inputs, call)


def test_mha_fully_padded_query_nan_with_weights_zero_without(oracle):
    inputs, _ = mha_inputs(14, False)
    kpm = np.array([[True] * S, [False] * S, [False] * S])

    def answer(lib):
        lib.manual_seed(0)
        m = lib.nn.MultiheadAttention(E, HEADS)
        with lib.no_grad():
            m.out_proj.bias.fill_(0.5)
        q, k, v = (lib.tensor(inputs[n]) for n in "qkv")
        mask = lib.tensor(kpm)
        a, w = m(q, k, v, key_padding_mask=mask)
        b, _ = m(q, k, v, key_padding_mask=mask, need_weights=False)
        return {"state": {n: p.detach().numpy() for n, p in m.state_dict().items()},
                "a": a.detach().numpy(), "w": w.detach().numpy(), "b": b.detach().numpy()}

    ref = oracle(answer)
    m = nn.MultiheadAttention(E, HEADS)
    m.load_state_dict({k: ddp.tensor(v) for k, v in ref["state"].items()})
    q, k, v = (ddp.tensor(inputs[n]) for n in "qkv")
    a, w = m(q, k, v, key_padding_mask=ddp.tensor(kpm))
    b, _ = m(q, k, v, key_padding_mask=ddp.tensor(kpm), need_weights=False)
    assert np.isnan(arr(a)[:, 0]).all() and np.isnan(ref["a"][:, 0]).all()
    np.testing.assert_allclose(arr(a)[:, 1:], ref["a"][:, 1:], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(arr(w), ref["w"], rtol=RTOL, atol=ATOL)  # NaN where torch's is
    np.testing.assert_allclose(arr(b), ref["b"], rtol=RTOL, atol=ATOL)  # bias where all masked


def test_mha_state_dict_keys_and_repr(oracle):
    configs = {"packed": {}, "no_bias": {"bias": False}, "kv": {"add_bias_kv": True},
               "kdim": {"kdim": 3, "vdim": 5}, "batch_first": {"batch_first": True}}

    def answer(torch):
        out = {}
        for name, kw in configs.items():
            m = torch.nn.MultiheadAttention(E, HEADS, **kw)
            out[name] = {"keys": list(m.state_dict()), "repr": repr(m),
                         "shapes": [list(v.shape) for v in m.state_dict().values()],
                         "params": [n for n, _ in m.named_parameters()]}
        return out

    ref = oracle(answer)
    for name, kw in configs.items():
        m = nn.MultiheadAttention(E, HEADS, **kw)
        assert list(m.state_dict()) == list(ref[name]["keys"]), name
        assert repr(m) == ref[name]["repr"], name
        assert [list(v.shape) for v in m.state_dict().values()] == \
            [list(s) for s in ref[name]["shapes"]], name
        assert [n for n, _ in m.named_parameters()] == list(ref[name]["params"]), name


def test_mha_initialisation():
    ddp.manual_seed(0)
    m = nn.MultiheadAttention(64, 4, add_bias_kv=True)
    bound = math.sqrt(6 / (64 + 3 * 64))  # xavier_uniform_ of the (3E, E) packed weight
    w = arr(m.in_proj_weight)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert not arr(m.in_proj_bias).any() and not arr(m.out_proj.bias).any()
    assert arr(m.bias_k).std() > 0
    sep = nn.MultiheadAttention(64, 4, kdim=16, vdim=16)
    assert np.abs(arr(sep.k_proj_weight)).max() <= math.sqrt(6 / (64 + 16))


def test_mha_double_precision_and_gradcheck():
    ddp.manual_seed(0)
    m = nn.MultiheadAttention(4, 2, dtype=ddp.float64, add_bias_kv=True, add_zero_attn=True)
    rng = np.random.default_rng(15)
    q = ddp.tensor(rng.standard_normal((3, 2, 4)), requires_grad=True)
    kpm = ddp.tensor(np.array([[False, False, True], [False, True, False]]))
    assert gradcheck(lambda x: m(x, x, x, key_padding_mask=kpm)[0], (q,))
    assert gradcheck(lambda x: m(x, x, x, key_padding_mask=kpm, need_weights=False)[0], (q,))


# --------------------------------------------------------------------------- functional form

def mhaf_answer(lib, inputs, kwargs):
    t = leaves(lib, inputs)
    F_ = lib.nn.functional
    out, w = F_.multi_head_attention_forward(
        t["q"], t["k"], t["v"], E, HEADS, t["w_in"], t["b_in"], t.get("bias_k"), t.get("bias_v"),
        kwargs.get("add_zero_attn", False), 0.0, t["w_out"], t["b_out"],
        key_padding_mask=t.get("kpm"), attn_mask=t.get("am"),
        need_weights=kwargs.get("need_weights", True), static_k=t.get("static_k"),
        static_v=t.get("static_v"), average_attn_weights=kwargs.get("average", True))
    backward_of(lib, [out, w])
    return {"out": out.detach().numpy(), "w": arr(w), "grad": grads(t)}


MHAF_CASES = {
    "plain": ({}, {}),
    "static_kv": ({"static_k": (N * HEADS, 6, E // HEADS), "static_v": (N * HEADS, 6, E // HEADS)},
                  {}),
    "static_kv_zero_attn": ({"static_k": (N * HEADS, 6, E // HEADS),
                             "static_v": (N * HEADS, 6, E // HEADS)}, {"add_zero_attn": True}),
    "bias_kv_masks": ({"bias_k": (1, 1, E), "bias_v": (1, 1, E)}, {"masks": True}),
    "per_head_weights": ({}, {"average": False}),
    "no_weights": ({}, {"need_weights": False, "masks": True}),
}


@pytest.mark.parametrize("case", sorted(MHAF_CASES))
def test_multi_head_attention_forward_matches_torch(oracle, case):
    extra, kwargs = MHAF_CASES[case]
    inputs, rng = mha_inputs(16 + sorted(MHAF_CASES).index(case), False)
    inputs.update({"w_in": rand(rng, 3 * E, E) / 3, "b_in": rand(rng, 3 * E),
                   "w_out": rand(rng, E, E) / 3, "b_out": rand(rng, E)})
    inputs.update({k: rand(rng, *shape) for k, shape in extra.items()})
    if kwargs.get("masks"):
        inputs["kpm"] = rng.random((N, S)) < 0.3
        inputs["am"] = rng.random((L, S)) < 0.3
        inputs["kpm"][:, 0] = inputs["am"][:, 0] = False
    ref = oracle(lambda torch: mhaf_answer(torch, inputs, kwargs))
    ours = mhaf_answer(ddp, inputs, kwargs)
    close(ours["out"], ref["out"], "output")
    close(ours["w"], ref["w"], "weights")
    assert sorted(ours["grad"]) == sorted(ref["grad"])
    for k in ref["grad"]:
        close(ours["grad"][k], ref["grad"][k], f"gradient of {k}")


# --------------------------------------------------------------------------- bad input

def test_mha_constructor_errors():
    with pytest.raises(AssertionError, match="embed_dim must be divisible by num_heads"):
        nn.MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="embed_dim=0 and num_heads=3"):
        nn.MultiheadAttention(0, 3)


@pytest.mark.parametrize("what,kwargs,exc,message", [
    ("attn_mask 2-D shape", {"attn_mask": np.zeros((3, 4), np.float32)}, RuntimeError,
     r"The shape of the 2D attn_mask is .*\[3, 4\].*, but should be \(3, 3\)"),
    ("attn_mask 3-D shape", {"attn_mask": np.zeros((3, 3, 3), np.float32)}, RuntimeError,
     r"The shape of the 3D attn_mask is .*\[3, 3, 3\].*, but should be \(4, 3, 3\)"),
    ("attn_mask 4-D", {"attn_mask": np.zeros((1, 4, 3, 3), np.float32)}, AssertionError,
     r"expected `attn_mask` to be `None`, 2-D or 3-D but found 4-D"),
    ("key_padding_mask length", {"key_padding_mask": np.zeros((2, 4), bool)}, AssertionError,
     r"Expected key_padded_mask.shape\[1\] to be 3, but got 4"),
    ("key_padding_mask batch", {"key_padding_mask": np.zeros((3, 3), bool)}, AssertionError,
     r"Expected key_padded_mask.shape\[0\] to be 2, but got 3"),
    ("key_padding_mask 1-D", {"key_padding_mask": np.zeros(2, bool)}, AssertionError,
     r"expected `key_padding_mask` to be `None` or 2-D but found 1-D"),
    ("key_padding_mask int", {"key_padding_mask": np.zeros((2, 3), np.int64)}, AssertionError,
     r"only bool and floating types of key_padding_mask are supported"),
    ("attn_mask int", {"attn_mask": np.zeros((3, 3), np.int64)}, AssertionError,
     r"only bool and floating types of attn_mask are supported"),
    ("attn_mask float64", {"attn_mask": np.zeros((3, 3), np.float64)}, RuntimeError,
     r"attn_mask of dtype float64 does not match the query's dtype float32"),
    ("is_causal without mask", {"is_causal": True}, RuntimeError,
     r"Need attn_mask if specifying the is_causal hint"),
])
def test_mha_bad_masks(what, kwargs, exc, message):
    m = nn.MultiheadAttention(8, 2)
    x = ddp.randn(3, 2, 8)
    kwargs = {k: ddp.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc, match=message):
            m(x, x, x, **kwargs)


def test_mha_bad_inputs():
    m = nn.MultiheadAttention(8, 2)
    x = ddp.randn(3, 2, 8)
    with pytest.raises(AssertionError, match="was expecting embedding dimension of 8, but got 4"):
        m(x[..., :4], x[..., :4], x[..., :4])
    with pytest.raises(AssertionError, match="key shape .* does not match value shape"):
        m(x, x[:2], x)
    with pytest.raises(AssertionError, match="expected `key` and `value` to be 3-D but found "
                                             "3-D and 2-D"):
        m(x, x, x[0])
    with pytest.raises(AssertionError, match="query should be unbatched 2D or batched 3D"):
        m(x[None], x[None], x[None])
    with pytest.raises(AssertionError, match=r"Expected `attn_mask` shape to be \(2, 3, 3\)"):
        m(x[:, 0], x[:, 0], x[:, 0], attn_mask=ddp.zeros(3, 3, 3))
    with pytest.raises(RuntimeError, match="linear: expected input, weight and bias of one dtype"):
        m(x.double(), x.double(), x.double())
    with pytest.raises(AssertionError, match="embed_dim 8 not divisible by num_heads 3"):
        F.multi_head_attention_forward(x, x, x, 8, 3, m.in_proj_weight, m.in_proj_bias, None,
                                       None, False, 0.0, m.out_proj.weight, m.out_proj.bias)


def test_mha_mismatched_mask_types_warn_as_torch():
    m = nn.MultiheadAttention(8, 2)
    x = ddp.randn(3, 2, 8)
    with pytest.warns(UserWarning, match="Support for mismatched key_padding_mask and attn_mask "
                                         "is deprecated"):
        m(x, x, x, key_padding_mask=ddp.zeros(2, 3, dtype=ddp.bool), attn_mask=ddp.zeros(3, 3))


@pytest.mark.parametrize("args,kwargs,message", [
    (((2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 6)), {"attn_mask": np.ones((4, 5), bool),
                                                  "is_causal": True},
     "Explicit attn_mask should not be set when is_causal=True"),
    (((2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 6)), {"attn_mask": np.ones((4, 6), bool)},
     r"attn_mask of shape \(4, 6\) cannot be broadcast to the attention weights' shape "
     r"\(2, 3, 4, 5\)"),
    (((2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 6)), {"attn_mask": np.ones((4, 5), np.int64)},
     "Expected attn_mask dtype to be bool or float or to match query dtype, but got "
     "attn_mask.dtype: int64"),
    (((2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 6)), {"attn_mask": np.ones((4, 5), np.float16)},
     "Expected attn_mask dtype to be bool or float or to match query dtype"),
    (((2, 3, 4, 8), (2, 3, 5, 7), (2, 3, 5, 6)), {},
     r"query's last dimension \(8\) must equal key's \(7\)"),
    (((2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 4, 6)), {},
     "key and value must have the same sequence length"),
    (((8,), (8,), (8,)), {}, "Expected query, key, and value to all be at least 2 dimensional"),
    (((2, 3, 4, 8), (3, 3, 5, 8), (3, 3, 5, 8)), {}, "cannot be broadcast together"),
    (((2, 3, 4, 8), (2, 2, 5, 8), (2, 2, 5, 8)), {"enable_gqa": True},
     "Number of heads in key and value must divide the number of heads in query"),
    (((2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 8)), {"dropout_p": 1.5},
     "dropout probability has to be between 0 and 1, but got 1.5"),
])
def test_sdpa_bad_input(args, kwargs, message):
    q, k, v = (ddp.zeros(*s) for s in args)
    kwargs = {k_: ddp.tensor(v_) if isinstance(v_, np.ndarray) else v_
              for k_, v_ in kwargs.items()}
    with pytest.raises(RuntimeError, match=message):
        F.scaled_dot_product_attention(q, k, v, **kwargs)


def test_sdpa_bad_dtypes():
    q = ddp.zeros(2, 3, 4)
    with pytest.raises(RuntimeError, match="Expected query, key, and value to have the same "
                                           "dtype, but got query.dtype: float32 key.dtype: "
                                           "float64"):
        F.scaled_dot_product_attention(q, q.double(), q)
    with pytest.raises(RuntimeError, match="expected floating point query, key and value, got "
                                           "int64"):
        F.scaled_dot_product_attention(*(ddp.zeros(2, 3, 4, dtype=ddp.int64),) * 3)
    with pytest.raises(TypeError, match="positional arguments"):
        F.scaled_dot_product_attention(q, q, q, None, 0.0, False, 0.5)  # scale is keyword-only


# --------------------------------------------------------------------------- signatures

def signature_of(fn):
    """[name, default, kind] per parameter, defaults as text (functions by name)."""
    import inspect
    out = []
    for name, p in inspect.signature(fn).parameters.items():
        d = p.default
        text = "<required>" if d is inspect.Parameter.empty else \
            (d.__name__ if callable(d) else repr(d))
        out.append([name, text, p.kind.name])
    return out


def test_signatures_match_torch(oracle):
    def answer(torch):
        doc = torch.nn.functional.scaled_dot_product_attention.__doc__
        head = " ".join(doc.split("->")[0].split())  # "scaled_dot_product_attention(query, ...)"
        return {"mha_init": signature_of(torch.nn.MultiheadAttention.__init__),
                "mha_forward": signature_of(torch.nn.MultiheadAttention.forward),
                "mhaf": signature_of(torch.nn.functional.multi_head_attention_forward),
                "sdpa": head}

    ref = oracle(answer)
    assert signature_of(nn.MultiheadAttention.__init__) == [list(p) for p in ref["mha_init"]]
    assert signature_of(nn.MultiheadAttention.forward) == [list(p) for p in ref["mha_forward"]]
    assert signature_of(F.multi_head_attention_forward) == [list(p) for p in ref["mhaf"]]
    ours = signature_of(F.scaled_dot_product_attention)
    text = ", ".join(n if d == "<required>" else f"{n}={d}" for n, d, _ in ours)
    assert ref["sdpa"].replace("( ", "(") == f"scaled_dot_product_attention({text})"
    assert [k for n, _, k in ours if n in ("scale", "enable_gqa")] == ["KEYWORD_ONLY"] * 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("safe,causal,dropout", [(True, False, False), (True, True, True),
                                                 (False, True, False), (True, False, True)])
def test_the_fused_op_gives_the_numpy_paths_values_with_the_kernels(monkeypatch, dtype, safe,
                                                                     causal, dropout):
    """The fused op's softmax and its backward take ddp.kernels' row passes on the CPU; the
    NumPy path (the GPU's) gives the same output, weights and gradients — a fully masked row
    included (zeros when ``safe``, NaN when not)."""
    from ddp import kernels
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((2, 3, 4, 8), (2, 3, 6, 8),
                                                               (2, 3, 6, 5)))
    bias = np.where(rng.random((4, 6)) < 0.2, -np.inf, 0).astype(dtype)
    bias[1] = -np.inf   # a query that sees no key
    keep = ((rng.random((2, 3, 4, 6)) > 0.3) / 0.7).astype(dtype) if dropout else None
    g_out, g_w = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 6))

    def run():
        ts = [ddp.tensor(a, requires_grad=True) for a in (q, k, v)]
        out, w = ScaledDotProductAttention.apply(*ts, ddp.tensor(bias), scale=0.3,
                                                 causal=causal, keep=keep, safe=safe,
                                                 weights=True)
        (out * ddp.tensor(g_out.astype(dtype))).sum().backward(retain_graph=True)
        (w.nan_to_num() * ddp.tensor(g_w.astype(dtype))).sum().backward()
        return [out.detach().numpy(), w.detach().numpy()] + [t.grad.numpy() for t in ts]
    from ddp.kernels import softmax
    spy = []
    for name in ("softmax_rows_", "softmax_backward"):
        monkeypatch.setattr(softmax, name, lambda *a, f=getattr(softmax, name), **kw:
                            spy.append(f.__name__) or f(*a, **kw))
    with np.errstate(invalid="ignore"):
        got = run()
        assert set(spy) == {"softmax_rows_", "softmax_backward"}
        monkeypatch.setattr(kernels, "_enabled", False)
        want = run()
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, **tol)
    assert np.isnan(got[1][:, :, 1]).all() != safe

"""Gradients of every differentiable op of the core, against central finite differences.

One table, one line per case: ``C(name, fn, *input_shapes, dom=...)``. Each case runs
``ddp.autograd.gradcheck`` (first derivatives) and ``gradgradcheck`` (second derivatives through
``create_graph``) on float64 inputs. Inputs come from a seeded RNG and are *distinct* and away
from the kinks of the op (0 for abs/relu/sign, ties for max/maximum, integers for floor, ...),
so finite differences are meaningful; the kinks, ties and zeros have their own tests below.

Input domains (``dom``):
    "any"   distinct values in (-2, 2), away from 0 and from the clamp bounds used in the table
            (``KINKS``), with no ties between values or between absolute values
    "pos"   distinct values in (0.5, 2)
    "frac"  k + u with k an integer in [-3, 3) and u in (0.1, 0.4): away from integers and halves

PyTorch, when installed, is an extra oracle (``test_gradients_match_torch``); nothing else needs it.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

import ddp
import ddp.nn.functional as F
from ddp.nn.functional import _activations, _rnn
from ddp.autograd import gradcheck, gradgradcheck

F64 = ddp.float64


# --------------------------------------------------------------------------- inputs

KINKS = (0.0, -0.55, 0.65, 0.35, -1.05, 0.95)  # where the table's ops bend (0, clamp bounds)


def make_inputs(name, shapes, dom="any"):
    """float64 leaf tensors of ``shapes``, all values from one pool (distinct across inputs)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    sizes = [math.prod(s) for s in shapes]
    n = sum(sizes)
    if dom == "any":
        # slots on a grid over (-2, 2), shifted by gap/3 so that no |x| ties with |-x|, minus the
        # slots near a kink; n of them, jittered by 0.1 gap: no ties, nothing near a kink
        m = 2 * n + 2 * len(KINKS)
        gap = 4.0 / m
        slots = -2 + gap * (np.arange(m) + 1 / 3)
        slots = slots[np.min(np.abs(slots[:, None] - np.array(KINKS)), axis=1) > 0.4 * gap]
        vals = rng.choice(slots, n, replace=False) + rng.uniform(-0.1, 0.1, n) * gap
    elif dom == "pos":
        gap = 1.5 / n
        vals = rng.permutation(0.5 + gap * (np.arange(n) + 0.5 + rng.uniform(-0.3, 0.3, n)))
    elif dom == "frac":
        vals = rng.integers(-3, 3, n) + rng.uniform(0.1, 0.4, n)
    else:
        raise ValueError(dom)
    out, start = [], 0
    for s, k in zip(shapes, sizes):
        out.append(ddp.tensor(vals[start:start + k].reshape(s), dtype=F64, requires_grad=True))
        start += k
    return out


def test_inputs_are_away_from_kinks_and_ties():
    for shapes in [[(4, 5)], [(3, 4), (3, 4)], [(2, 3, 4)], [(2, 1, 3, 4), (5, 4, 2)]]:
        vals = np.concatenate([t.detach().numpy().ravel() for t in make_inputs("k", shapes)])
        assert np.min(np.abs(vals[:, None] - np.array(KINKS))) > 0.005
        assert np.diff(np.sort(vals)).min() > 0.01
        assert np.diff(np.sort(np.abs(vals))).min() > 0.002
    f = make_inputs("f", [(50,)], "frac")[0].detach().numpy()
    assert (np.abs(f - np.round(f)) > 0.09).all() and (np.abs(f - np.floor(f) - 0.5) > 0.09).all()


# --------------------------------------------------------------------------- the table

def C(name, fn, *shapes, dom="any", gg=True):
    """One case: gradcheck ``fn`` at inputs of ``shapes``; ``gg``: also gradgradcheck."""
    return pytest.param(name, fn, shapes, dom, gg, id=name)


_MASK = np.random.default_rng(0).random((3, 4)) > 0.5
_MASK[0, 0], _MASK[0, 1] = True, False  # both values present
_IDX2 = np.array([[0, 2, 2, 1], [1, 1, 0, 2], [2, 0, 1, 1]])  # (3, 4) indices into size 3

CASES = [
    # ---- binary arithmetic: same shape, broadcasting both ways, numbers, reflected forms
    C("add", lambda a, b: a + b, (3, 4), (3, 4)),
    C("add_bcast_row", lambda a, b: a + b, (3, 4), (4,)),
    C("add_bcast_left", lambda a, b: a + b, (4,), (3, 4)),
    C("add_bcast_both", lambda a, b: a + b, (3, 1), (1, 4)),
    C("add_0dim", lambda a, b: a + b, (), (2, 3)),
    C("add_scalar", lambda a: a + 2.5, (3, 4)),
    C("radd_scalar", lambda a: 2.5 + a, (3, 4)),
    C("add_alpha", lambda a, b: a.add(b, alpha=-2), (3, 4), (4,)),
    C("ddp.add", lambda a, b: ddp.add(a, b), (2, 3), (3,)),
    C("sub", lambda a, b: a - b, (3, 4), (3, 4)),
    C("sub_bcast", lambda a, b: a - b, (2, 1, 4), (3, 1)),
    C("sub_scalar", lambda a: a - 1.5, (4,)),
    C("rsub_scalar", lambda a: 1.5 - a, (4,)),
    C("ddp.sub", lambda a, b: ddp.sub(a, b), (3,), (2, 3)),
    C("mul", lambda a, b: a * b, (3, 4), (3, 4)),
    C("mul_bcast", lambda a, b: a * b, (3, 1), (4,)),
    C("mul_bcast_left", lambda a, b: a * b, (4,), (2, 3, 4)),
    C("mul_scalar", lambda a: a * -3.0, (2, 3)),
    C("rmul_scalar", lambda a: 3 * a, (2, 3)),
    C("mul_self", lambda a: a * a, (3, 4)),
    C("ddp.mul", lambda a, b: ddp.mul(a, b), (2, 3), (2, 1)),
    C("div", lambda a, b: a / b, (3, 4), (3, 4)),
    C("div_bcast", lambda a, b: a / b, (3, 4), (3, 1)),
    C("div_bcast_left", lambda a, b: a / b, (4,), (2, 4)),
    C("div_scalar", lambda a: a / 4.0, (3,)),
    C("rdiv_scalar", lambda a: 2.0 / a, (3, 4)),
    C("ddp.div", lambda a, b: ddp.div(a, b), (2, 3), (3,)),
    C("floordiv_scalar", lambda a: a // 0.5, (3, 4), dom="frac"),
    C("floordiv", lambda a, b: a // b, (3, 4), (4,), dom="pos"),
    C("rfloordiv", lambda a: 7.0 // (a.abs() + 3.0), (3, 4), dom="frac"),
    C("mod_scalar", lambda a: a % 0.5, (3, 4), dom="frac"),
    C("mod_neg_scalar", lambda a: a % -1.0, (3, 4), dom="frac"),
    C("mod", lambda a, b: a % b, (3, 4), (4,), dom="pos"),
    C("mod_neg_divisor", lambda a, b: a % -b, (3, 4), (3, 1), dom="pos"),
    C("rmod", lambda a: 10.0 % (a.abs() + 3.0), (3, 4), dom="frac"),
    C("ddp.remainder", lambda a: ddp.remainder(a, 0.5), (2, 3), dom="frac"),
    C("pow_2", lambda a: a ** 2, (3, 4)),
    C("pow_3", lambda a: a ** 3, (3, 4)),
    C("pow_int_neg", lambda a: a ** -2, (3, 4)),
    C("pow_half", lambda a: a ** 0.5, (3, 4), dom="pos"),
    C("pow_frac_neg", lambda a: a ** -1.5, (3, 4), dom="pos"),
    C("pow_0", lambda a: a ** 0, (3, 4)),
    C("rpow", lambda a: 2.0 ** a, (3, 4)),
    C("pow_tensor", lambda a, b: a ** b, (3, 4), (3, 4), dom="pos"),
    C("pow_tensor_bcast", lambda a, b: a ** b, (3, 4), (4,), dom="pos"),
    C("pow_tensor_bcast_left", lambda a, b: a ** b, (4,), (3, 4), dom="pos"),
    C("ddp.pow", lambda a, b: ddp.pow(a, b), (2, 3), (3,), dom="pos"),
    C("neg", lambda a: -a, (3, 4)),
    C("ddp.neg", lambda a: ddp.neg(a), (3, 4)),
    C("maximum", lambda a, b: ddp.maximum(a, b), (3, 4), (3, 4)),
    C("maximum_bcast", lambda a, b: a.maximum(b), (3, 4), (4,)),
    C("minimum", lambda a, b: ddp.minimum(a, b), (3, 4), (3, 4)),
    C("minimum_bcast", lambda a, b: a.minimum(b), (3, 1), (4,)),
    C("max_other", lambda a, b: a.max(b), (3, 4), (3, 4)),
    C("where", lambda a, b: ddp.where(ddp.tensor(_MASK), a, b), (3, 4), (3, 4)),
    C("where_bcast", lambda a, b: ddp.where(ddp.tensor(_MASK), a, b), (4,), (3, 1)),
    C("where_scalar", lambda a: ddp.where(ddp.tensor(_MASK), a, 0.0), (3, 4)),
    C("where_method", lambda a, b: a.where(ddp.tensor(_MASK), b), (3, 4), (3, 4)),
    # ---- unary math
    C("exp", lambda a: a.exp(), (3, 4)),
    C("ddp.exp", lambda a: ddp.exp(a), (2, 3)),
    C("log", lambda a: a.log(), (3, 4), dom="pos"),
    C("ddp.log", lambda a: ddp.log(a), (2, 3), dom="pos"),
    C("log2", lambda a: a.log2(), (4,), dom="pos"),
    C("log10", lambda a: a.log10(), (4,), dom="pos"),
    C("log1p", lambda a: a.log1p(), (3, 4), dom="pos"),
    C("log1p_neg", lambda a: (a * 0.4).log1p(), (3, 4)),
    C("expm1", lambda a: a.expm1(), (3, 4)),
    C("sqrt", lambda a: a.sqrt(), (3, 4), dom="pos"),
    C("ddp.sqrt", lambda a: ddp.sqrt(a), (2, 3), dom="pos"),
    C("rsqrt", lambda a: a.rsqrt(), (3, 4), dom="pos"),
    C("reciprocal", lambda a: a.reciprocal(), (3, 4)),
    C("square", lambda a: a.square(), (3, 4)),
    C("abs", lambda a: a.abs(), (3, 4)),
    C("abs_op", lambda a: abs(a), (3, 4)),
    C("ddp.abs", lambda a: ddp.abs(a), (2, 3)),
    C("sin", lambda a: a.sin(), (3, 4)),
    C("cos", lambda a: a.cos(), (3, 4)),
    C("tan", lambda a: a.tan(), (3, 4)),
    C("tanh", lambda a: a.tanh(), (3, 4)),
    C("ddp.tanh", lambda a: ddp.tanh(a), (2, 3)),
    C("sigmoid", lambda a: a.sigmoid(), (3, 4)),
    C("sigmoid_wide", lambda a: (a * 10).sigmoid(), (3, 4)),
    C("ddp.sigmoid", lambda a: ddp.sigmoid(a), (2, 3)),
    C("relu", lambda a: a.relu(), (3, 4)),
    C("ddp.relu", lambda a: ddp.relu(a), (2, 3)),
    C("clamp", lambda a: a.clamp(-0.55, 0.65), (4, 5)),
    C("clamp_min", lambda a: a.clamp(min=-0.55), (4, 5)),
    C("clamp_max", lambda a: a.clamp(max=0.65), (4, 5)),
    C("clamp_min_method", lambda a: a.clamp_min(0.35), (4, 5)),
    C("clamp_max_method", lambda a: a.clamp_max(0.35), (4, 5)),
    C("clip", lambda a: a.clip(-1.05, 0.95), (4, 5)),
    C("ddp.clamp", lambda a: ddp.clamp(a, -0.55, 0.65), (4, 5)),
    C("clamp_tensor", lambda a, lo, hi: a.clamp(lo, hi), (3, 4), (3, 4), (3, 4)),
    C("clamp_tensor_bcast", lambda a, lo, hi: a.clamp(lo - 1, hi + 1), (3, 4), (4,), (3, 1)),
    C("clamp_tensor_min", lambda a, lo: a.clamp(min=lo), (3, 4), (4,)),
    C("clamp_tensor_max", lambda a, hi: a.clamp(max=hi), (3, 4), (3, 1)),
    C("sign", lambda a: a.sign(), (3, 4)),
    C("floor", lambda a: a.floor(), (3, 4), dom="frac"),
    C("ceil", lambda a: a.ceil(), (3, 4), dom="frac"),
    C("round", lambda a: a.round(), (3, 4), dom="frac"),
    C("round_decimals", lambda a: a.round(decimals=1), (3, 4), dom="frac"),
    C("trunc", lambda a: a.trunc(), (3, 4), dom="frac"),
    C("frac", lambda a: a.frac(), (3, 4), dom="frac"),
    C("ddp.floor", lambda a: ddp.floor(a), (2, 3), dom="frac"),
    C("lerp", lambda a, b: a.lerp(b, 0.3), (3, 4), (4,)),
    C("addcmul", lambda a, b, c: a.addcmul(b, c, value=0.5), (3, 4), (4,), (3, 1)),
    C("addcdiv", lambda a, b, c: a.addcdiv(b, c, value=0.5), (3, 4), (4,), (3, 1)),
    C("fmod", lambda a: a.fmod(0.7), (3, 4), dom="frac"),
    # ---- reductions
    C("sum", lambda a: a.sum(), (3, 4)),
    C("sum_0dim", lambda a: a.sum(), ()),
    C("sum_all_keepdim", lambda a: a.sum(None, keepdim=True), (2, 3)),  # g (1, 1) broadcast back
    C("sum_dim0", lambda a: a.sum(0), (3, 4)),
    C("sum_dim_neg", lambda a: a.sum(-1), (2, 3, 4)),
    C("sum_dim_tuple", lambda a: a.sum((0, 2)), (2, 3, 4)),
    C("sum_dim_tuple_neg", lambda a: a.sum((-1, -3)), (2, 3, 4)),
    C("sum_keepdim", lambda a: a.sum(1, keepdim=True), (2, 3, 4)),
    C("sum_tuple_keepdim", lambda a: a.sum((0, -1), keepdim=True), (2, 3, 4)),
    C("sum_axis_alias", lambda a: a.sum(axis=1, keepdims=True), (3, 4)),
    C("ddp.sum", lambda a: ddp.sum(a, 1), (3, 4)),
    C("mean", lambda a: a.mean(), (3, 4)),
    C("mean_dim", lambda a: a.mean(1), (3, 4)),
    C("mean_dim_neg_keepdim", lambda a: a.mean(-2, keepdim=True), (2, 3, 4)),
    C("mean_dim_tuple", lambda a: a.mean((0, 2)), (2, 3, 4)),
    C("ddp.mean", lambda a: ddp.mean(a, (0, 1)), (2, 3, 4)),
    C("var", lambda a: a.var(), (3, 4)),
    C("var_dim", lambda a: a.var(1), (3, 4)),
    C("var_dim_neg_keepdim", lambda a: a.var(-1, keepdim=True), (2, 3, 4)),
    C("var_dim_tuple", lambda a: a.var((0, 2)), (2, 3, 4)),
    C("var_unbiased_false", lambda a: a.var(0, unbiased=False), (3, 4)),
    C("var_correction_0", lambda a: a.var(1, correction=0), (3, 4)),
    C("var_correction_2", lambda a: a.var(correction=2), (3, 4)),
    C("std", lambda a: a.std(), (3, 4)),
    C("std_dim", lambda a: a.std(0), (3, 4)),
    C("std_dim_neg_keepdim", lambda a: a.std(-1, keepdim=True), (2, 3, 4)),
    C("std_unbiased_false", lambda a: a.std(1, unbiased=False), (3, 4)),
    C("std_correction_0", lambda a: a.std(correction=0), (3, 4)),
    C("ddp.std", lambda a: ddp.std(a, 1), (3, 4)),
    C("max_all", lambda a: a.max(), (3, 4)),
    C("min_all", lambda a: a.min(), (3, 4)),
    C("max_dim", lambda a: a.max(1).values, (3, 4)),
    C("max_dim_neg_keepdim", lambda a: a.max(-1, keepdim=True)[0], (2, 3, 4)),
    C("min_dim", lambda a: a.min(0).values, (3, 4)),
    C("min_dim_keepdim", lambda a: a.min(1, keepdim=True).values, (2, 3, 4)),
    C("ddp.max", lambda a: ddp.max(a), (3, 4)),
    C("ddp.max_dim", lambda a: ddp.max(a, 1)[0], (3, 4)),
    C("ddp.min_dim", lambda a: ddp.min(a, -1).values, (3, 4)),
    C("amax", lambda a: a.amax(), (3, 4)),
    C("amax_dim", lambda a: a.amax(1), (3, 4)),
    C("amax_dim_tuple_keepdim", lambda a: a.amax((0, -1), keepdim=True), (2, 3, 4)),
    C("amin", lambda a: a.amin(), (3, 4)),
    C("amin_dim_neg", lambda a: a.amin(-2), (2, 3, 4)),
    C("ddp.amax", lambda a: ddp.amax(a, 0), (3, 4)),
    C("prod", lambda a: a.prod(), (3, 4), gg=False),
    C("prod_dim", lambda a: a.prod(1), (3, 4), gg=False),
    C("prod_dim_neg_keepdim", lambda a: a.prod(-1, keepdim=True), (2, 3, 4), gg=False),
    C("prod_dim0", lambda a: a.prod(0), (2, 3, 4), gg=False),
    C("prod_keepdim_all", lambda a: a.prod(keepdim=True), (2, 3), gg=False),
    C("ddp.prod", lambda a: ddp.prod(a, 1), (3, 4), gg=False),
    C("norm", lambda a: a.norm(), (3, 4)),
    C("norm_fro", lambda a: a.norm("fro"), (3, 4)),
    C("norm_dim", lambda a: a.norm(dim=1), (3, 4)),
    C("norm_dim_neg_keepdim", lambda a: a.norm(2, dim=-1, keepdim=True), (2, 3, 4)),
    C("norm_dim_tuple", lambda a: a.norm(dim=(0, 2)), (2, 3, 4)),
    C("norm_p1", lambda a: a.norm(1), (3, 4)),
    C("norm_p1_dim", lambda a: a.norm(1, dim=0), (3, 4)),
    C("norm_inf", lambda a: a.norm(float("inf")), (3, 4)),
    C("norm_inf_dim", lambda a: a.norm(float("inf"), dim=1), (3, 4)),
    C("norm_neg_inf_dim", lambda a: a.norm(float("-inf"), dim=1), (3, 4)),
    C("norm_p3", lambda a: a.norm(3), (3, 4)),
    C("norm_p3_dim_keepdim", lambda a: a.norm(3, dim=-1, keepdim=True), (3, 4)),
    C("norm_p1_5", lambda a: a.norm(1.5, dim=0), (3, 4)),
    C("ddp.norm", lambda a: ddp.norm(a, dim=1), (3, 4)),
    C("logsumexp", lambda a: a.logsumexp(1), (3, 4)),
    C("logsumexp_neg_keepdim", lambda a: a.logsumexp(-1, keepdim=True), (2, 3, 4)),
    C("logsumexp_tuple", lambda a: a.logsumexp((0, 2)), (2, 3, 4)),
    C("logsumexp_0", lambda a: (a * 5).logsumexp(0), (3, 4)),
    C("ddp.logsumexp", lambda a: ddp.logsumexp(a, 0), (3, 4)),
    C("softmax", lambda a: a.softmax(-1), (3, 4)),
    C("softmax_0", lambda a: a.softmax(0), (2, 3, 4)),
    C("ddp.softmax", lambda a: ddp.softmax(a, 1), (3, 4)),
    C("log_softmax", lambda a: a.log_softmax(-1), (3, 4)),
    C("log_softmax_1", lambda a: a.log_softmax(1), (2, 3, 4)),
    C("ddp.log_softmax", lambda a: ddp.log_softmax(a, 0), (3, 4)),
    C("cumsum", lambda a: a.cumsum(0), (3, 4)),
    C("cumsum_neg", lambda a: a.cumsum(-1), (2, 3, 4)),
    C("ddp.cumsum", lambda a: ddp.cumsum(a, 1), (3, 4)),
    # ---- shapes and views
    C("reshape", lambda a: a.reshape(4, 3), (3, 4)),
    C("reshape_tuple_neg1", lambda a: a.reshape((2, -1)), (3, 4)),
    C("reshape_0dim", lambda a: a.reshape(1, 1), ()),
    C("ddp.reshape", lambda a: ddp.reshape(a, (6, 2)), (3, 4)),
    C("view", lambda a: a.view(2, 6), (3, 4)),
    C("view_as", lambda a, b: a.view_as(b), (3, 4), (12,)),
    C("flatten", lambda a: a.flatten(), (2, 3, 4)),
    C("flatten_1", lambda a: a.flatten(1), (2, 3, 4)),
    C("flatten_0_1", lambda a: a.flatten(0, -2), (2, 3, 4)),
    C("ddp.flatten", lambda a: ddp.flatten(a, 1), (2, 3, 2)),
    C("unflatten", lambda a: a.unflatten(1, (2, 2)), (3, 4)),
    C("unflatten_neg", lambda a: a.unflatten(-1, (2, -1)), (3, 4)),
    C("squeeze", lambda a: a.squeeze(), (3, 1, 4, 1)),
    C("squeeze_dim", lambda a: a.squeeze(1), (3, 1, 4)),
    C("squeeze_dim_neg", lambda a: a.squeeze(-1), (3, 4, 1)),
    C("squeeze_noop", lambda a: a.squeeze(0), (3, 4)),
    C("unsqueeze", lambda a: a.unsqueeze(0), (3, 4)),
    C("unsqueeze_neg", lambda a: a.unsqueeze(-1), (3, 4)),
    C("unsqueeze_mid", lambda a: a.unsqueeze(1), (3, 4)),
    C("transpose", lambda a: a.transpose(0, 1), (3, 4)),
    C("transpose_neg", lambda a: a.transpose(-1, 0), (2, 3, 4)),
    C("ddp.transpose", lambda a: ddp.transpose(a, 1, 2), (2, 3, 4)),
    C("permute", lambda a: a.permute(2, 0, 1), (2, 3, 4)),
    C("permute_tuple_neg", lambda a: a.permute((-1, 1, 0)), (2, 3, 4)),
    C("ddp.permute", lambda a: ddp.permute(a, (1, 0)), (3, 4)),
    C("t", lambda a: a.t(), (3, 4)),
    C("t_1d", lambda a: a.t(), (4,)),
    C("T", lambda a: a.T, (2, 3, 4)),
    C("mT", lambda a: a.mT, (2, 3, 4)),
    C("expand", lambda a: a.expand(3, 4), (1, 4)),
    C("expand_new_dims", lambda a: a.expand(2, 3, 4), (3, 1)),
    C("expand_neg1", lambda a: a.expand(2, -1, 4), (3, 1)),
    C("expand_as", lambda a, b: a.expand_as(b), (4,), (3, 4)),
    C("repeat", lambda a: a.repeat(2, 3), (2, 3)),
    C("repeat_new_dims", lambda a: a.repeat(2, 1, 2), (2, 3)),
    C("contiguous", lambda a: a.t().contiguous(), (3, 4)),
    C("flip", lambda a: a.flip(0), (3, 4)),
    C("flip_dims", lambda a: a.flip(0, -1), (2, 3, 4)),
    C("ddp.flip", lambda a: ddp.flip(a, (1,)), (3, 4)),
    C("roll", lambda a: a.roll(1, 0), (3, 4)),
    C("roll_neg", lambda a: a.roll(-2, -1), (3, 4)),
    C("roll_multi", lambda a: a.roll((1, -1), (0, 1)), (3, 4)),
    C("roll_flat", lambda a: a.roll(5), (3, 4)),
    C("ddp.roll", lambda a: ddp.roll(a, 2, 1), (3, 4)),
    C("diagonal", lambda a: a.diagonal(), (3, 4)),
    C("diagonal_offset_dims", lambda a: a.diagonal(-1, 2, 0), (3, 2, 4)),
    C("diag_embed", lambda a: a.diag_embed(1, 0, 2), (2, 3)),
    C("diag_vec", lambda a: a.diag(-1), (3,)),
    C("diag_mat", lambda a: ddp.diag(a, 1), (3, 4)),
    C("triu", lambda a: a.triu(1), (2, 3, 4)),
    C("tril", lambda a: ddp.tril(a, -1), (4, 3)),
    C("trace", lambda a: a.trace(), (3, 4)),
    C("outer", lambda a, b: ddp.outer(a, b), (3,), (2,)),
    C("kthvalue", lambda a: a.kthvalue(2, 1).values, (3, 4)),
    C("nan_to_num", lambda a: ddp.nan_to_num(a * 2), (3, 4)),
    C("tensor_split", lambda a: a.tensor_split(3, 1)[0] * a.tensor_split([1], 1)[1][:, :1],
      (2, 4)),
    C("meshgrid_xy", lambda a, b: ddp.meshgrid(a, b, indexing="xy")[0] *
      ddp.meshgrid(a, b, indexing="xy")[1], (3,), (2,)),
    C("cdist", lambda a, b: ddp.cdist(a, b), (3, 2), (4, 2)),
    C("cdist_p1", lambda a, b: ddp.cdist(a, b, p=1.5), (3, 2), (2, 2)),
    C("einsum_matmul", lambda a, b: ddp.einsum("ij,jk->ik", a, b), (2, 3), (3, 4)),
    C("einsum_attention", lambda q, k: ddp.einsum("bhqd,bhkd->bhqk", q, k), (1, 2, 3, 2),
      (1, 2, 4, 2)),
    C("einsum_ellipsis_implicit", lambda a, b: ddp.einsum("...ij,jk", a, b), (2, 2, 3), (3, 2)),
    C("einsum_sum_inside", lambda a, b: ddp.einsum("ij,k->j", a, b), (2, 3), (4,)),
    C("einsum_three", lambda a, b, c: ddp.einsum("i,ij,j->", a, b, c), (2,), (2, 3), (3,)),
    C("cat", lambda a, b: ddp.cat([a, b]), (2, 3), (3, 3)),
    C("cat_dim1", lambda a, b, c: ddp.cat([a, b, c], dim=1), (2, 3), (2, 1), (2, 2)),
    C("cat_dim_neg", lambda a, b: ddp.cat((a, b), -1), (2, 3, 2), (2, 3, 1)),
    C("cat_same_twice", lambda a: ddp.cat([a, a * 2]), (2, 3)),
    C("concat", lambda a, b: ddp.concat([a, b], 0), (1, 3), (2, 3)),
    C("stack", lambda a, b: ddp.stack([a, b]), (2, 3), (2, 3)),
    C("stack_dim_neg", lambda a, b, c: ddp.stack([a, b, c], -1), (2, 3), (2, 3), (2, 3)),
    C("stack_dim1", lambda a, b: ddp.stack((a, b), dim=1), (2, 3), (2, 3)),
    C("split", lambda a: a.split(2), (5, 3)),
    C("split_sizes_dim", lambda a: a.split([1, 3], dim=1), (2, 4)),
    C("ddp.split", lambda a: ddp.split(a, 2, -1), (2, 5)),
    C("chunk", lambda a: a.chunk(3, 1), (2, 5)),
    C("unbind", lambda a: a.unbind(), (3, 4)),
    C("unbind_neg", lambda a: a.unbind(-1), (3, 2)),
    C("narrow", lambda a: a.narrow(1, 1, 2), (3, 4)),
    C("narrow_neg", lambda a: a.narrow(-2, 0, 2), (3, 4)),
    # ---- indexing
    C("getitem_int", lambda a: a[1], (3, 4)),
    C("getitem_neg_int", lambda a: a[-1, -2], (3, 4)),
    C("getitem_slice", lambda a: a[1:3, ::2], (3, 4)),
    C("getitem_neg_step", lambda a: a[::-1, 3:0:-2], (3, 4)),
    C("getitem_none", lambda a: a[None, :, None, 1], (3, 4)),
    C("getitem_ellipsis", lambda a: a[..., 1:], (2, 3, 4)),
    C("getitem_ellipsis_int", lambda a: a[0, ..., -1], (2, 3, 4)),
    C("getitem_list_repeat", lambda a: a[[0, 2, 0, 0]], (3, 4)),
    C("getitem_tensor_repeat", lambda a: a[ddp.tensor([1, 1, -1])], (3, 4)),
    C("getitem_2d_repeat", lambda a: a[ddp.tensor([[0, 2], [2, 2]]), 1:], (3, 4)),
    C("getitem_pair_repeat", lambda a: a[[0, 1, 0, 0], [2, 3, 2, 2]], (3, 4)),
    C("getitem_slice_then_array", lambda a: a[:, [3, 0, 3]], (3, 4)),
    C("getitem_array_neg_step", lambda a: a[[2, 0, 2], ::-1], (3, 4)),
    C("getitem_0dim_tensor", lambda a: a[ddp.tensor(1)], (3, 4)),
    C("getitem_mask_and_slice", lambda a: a[ddp.tensor([True, False, True]), 1:3], (3, 4)),
    C("getitem_int_and_array", lambda a: a[1, ..., [0, 0]], (2, 3, 4)),
    C("getitem_bool_mask", lambda a: a[ddp.tensor(_MASK)], (3, 4)),
    C("getitem_bool_rows", lambda a: a[ddp.tensor([True, False, True])], (3, 4)),
    C("getitem_mask_gt", lambda a: a[a.detach() > 0], (3, 4)),
    C("setitem_mask", lambda a, v: _setitem(a, ddp.tensor(_MASK), v), (3, 4), ()),
    C("setitem_mask_values", lambda a, v: _setitem(a, ddp.tensor(_MASK), v), (3, 4),
      (int(_MASK.sum()),)),
    C("setitem_slice_bcast", lambda a, v: _setitem(a, (slice(0, 2), slice(1, 3)), v), (3, 4), (2,)),
    C("setitem_int", lambda a, v: _setitem(a, 1, v), (3, 4), (4,)),
    C("setitem_index_array", lambda a, v: _setitem(a, ddp.tensor([2, 0]), v), (3, 4), (2, 1)),
    C("masked_fill", lambda a: a.masked_fill(ddp.tensor(_MASK), 0.5), (3, 4)),
    C("masked_fill_bcast", lambda a: a.masked_fill(ddp.tensor([True, False, False, True]), -1.0),
      (3, 4)),
    C("masked_fill_tensor_value", lambda a, v: a.masked_fill(ddp.tensor(_MASK), v), (3, 4), ()),
    C("ddp.masked_fill", lambda a: ddp.masked_fill(a, ddp.tensor(_MASK), 0.0), (3, 4)),
    C("gather", lambda a: a.gather(0, ddp.tensor(_IDX2)), (3, 4)),
    C("gather_dim1", lambda a: a.gather(1, ddp.tensor([[0, 0], [3, 1], [2, 2]])), (3, 4)),
    C("gather_neg", lambda a: a.gather(-1, ddp.tensor([[[1], [0], [1]]])), (2, 3, 2)),
    C("ddp.gather", lambda a: ddp.gather(a, 1, ddp.tensor([[1, 1, 0]] * 3)), (3, 4)),
    C("scatter", lambda a, s: a.scatter(1, ddp.tensor([[0, 2], [3, 1], [1, 0]]), s),
      (3, 4), (3, 2)),
    C("scatter_big_src", lambda a, s: a.scatter(0, ddp.tensor([[2, 0, 1, 0]]), s), (3, 4), (2, 5)),
    C("scatter_value", lambda a: a.scatter(1, ddp.tensor([[0], [3], [2]]), value=0.5), (3, 4)),
    C("scatter_add", lambda a, s: a.scatter_add(0, ddp.tensor(_IDX2), s), (3, 4), (3, 4)),
    C("scatter_add_neg", lambda a, s: a.scatter_add(-1, ddp.tensor([[1, 1], [0, 1]]), s),
      (2, 3), (2, 2)),
    C("ddp.scatter_add", lambda a, s: ddp.scatter_add(a, 1, ddp.tensor([[0, 0, 0]]), s),
      (2, 3), (1, 3)),
    C("index_select", lambda a: a.index_select(0, ddp.tensor([2, 0, 2])), (3, 4)),
    C("index_select_neg", lambda a: a.index_select(-1, ddp.tensor([1, 1])), (2, 3, 4)),
    C("ddp.index_select", lambda a: ddp.index_select(a, 1, ddp.tensor([3, 0])), (3, 4)),
    C("index_add", lambda a, s: a.index_add(0, ddp.tensor([2, 0, 2]), s), (3, 4), (3, 4)),
    C("index_add_alpha_dim1", lambda a, s: a.index_add(1, ddp.tensor([1, 1]), s, alpha=-2),
      (3, 4), (3, 2)),
    # ---- matrix products: every shape case of matmul
    C("matmul_1d_1d", lambda a, b: a @ b, (4,), (4,)),
    C("matmul_1d_2d", lambda a, b: a @ b, (3,), (3, 4)),
    C("matmul_2d_1d", lambda a, b: a @ b, (3, 4), (4,)),
    C("matmul_2d_2d", lambda a, b: a @ b, (2, 3), (3, 4)),
    C("matmul_1d_3d", lambda a, b: a @ b, (3,), (2, 3, 2)),
    C("matmul_3d_1d", lambda a, b: a @ b, (2, 3, 4), (4,)),
    C("matmul_3d_2d", lambda a, b: a @ b, (2, 3, 4), (4, 2)),
    C("matmul_2d_3d", lambda a, b: a @ b, (3, 4), (2, 4, 2)),
    C("matmul_batched", lambda a, b: a @ b, (2, 2, 3), (2, 3, 2)),
    C("matmul_bcast_batch", lambda a, b: a @ b, (2, 1, 3, 4), (5, 4, 2)),
    C("matmul_same", lambda a: a @ a, (3, 3)),
    C("ddp.matmul", lambda a, b: ddp.matmul(a, b), (2, 3), (3,)),
    C("matmul_method", lambda a, b: a.matmul(b), (3,), (3, 2)),
    C("mm", lambda a, b: ddp.mm(a, b), (2, 3), (3, 4)),
    C("mm_method", lambda a, b: a.mm(b), (3, 2), (2, 2)),
    C("bmm", lambda a, b: ddp.bmm(a, b), (2, 2, 3), (2, 3, 4)),
    C("bmm_method", lambda a, b: a.bmm(b), (3, 1, 2), (3, 2, 2)),
    C("dot", lambda a, b: ddp.dot(a, b), (5,), (5,)),
    C("dot_method", lambda a, b: a.dot(b), (4,), (4,)),
    # ---- sum_to_size, casts, clone
    C("sum_to_size", lambda a: a.sum_to_size(1, 4), (3, 4)),
    C("sum_to_size_lead", lambda a: a.sum_to_size(3, 1), (2, 3, 4)),
    C("sum_to_size_tuple", lambda a: a.sum_to_size((4,)), (2, 3, 4)),
    C("to_float64", lambda a: a.to(ddp.float64) * 2, (3, 4)),
    C("double", lambda a: a.double().sin(), (3, 4)),
    C("to_float32_and_back", lambda a: a.to(ddp.float32).to(ddp.float64), (3,), gg=False),
    C("clone", lambda a: a.clone(), (3, 4)),
    C("ddp.clone", lambda a: ddp.clone(a) * a, (3, 4)),
]

# ---- the functional ops (ddp.nn.functional): with the rows above, every Op of the package is
# in this table (test_every_op_is_in_the_table); tests/nn checks their options in depth
_TARGET = np.array([2, 0, 3])             # classes of 3 samples of 4
_BITS = np.random.default_rng(1).random((3, 4)).round()  # binary targets
CASES += [
    C("F.elu", lambda a: F.elu(a), (3, 4)),
    C("F.leaky_relu", lambda a: F.leaky_relu(a, 0.2), (3, 4)),
    C("F.hardtanh", lambda a: F.hardtanh(a, -0.55, 0.65), (3, 4)),  # bounds among the kinks
    C("F.hardswish", lambda a: F.hardswish(a * 2), (3, 4)),
    C("F.softplus", lambda a: F.softplus(a, beta=2.0), (3, 4)),
    C("F.gelu", lambda a: F.gelu(a), (3, 4)),
    C("erf", lambda a: _activations.erf(a), (3, 4)),  # (not public: gelu's)
    C("F.linear", lambda a, w, b: F.linear(a, w, b), (2, 3), (4, 3), (4,)),
    C("F.conv2d", lambda a, w: F.conv2d(a, w, padding=1), (1, 2, 4, 4), (3, 2, 3, 3)),
    C("F.conv_transpose2d", lambda a, w: F.conv_transpose2d(a, w, stride=2),
      (1, 2, 3, 3), (2, 3, 2, 2)),
    C("F.embedding", lambda w: F.embedding(ddp.tensor([[0, 2], [3, 2]]), w), (4, 3)),
    C("F.unfold", lambda a: F.unfold(a, 2), (1, 2, 3, 3)),
    C("F.fold", lambda a: F.fold(a, (3, 3), 2), (1, 8, 4)),
    C("F.pad_constant", lambda a: F.pad(a, (1, 2), value=0.5), (2, 3)),
    C("F.pad_reflect", lambda a: F.pad(a, (2, 1), mode="reflect"), (1, 2, 4), gg=False),
    C("F.max_pool2d", lambda a: F.max_pool2d(a, 2), (1, 2, 4, 4)),
    # (a non-contiguous input: the NumPy path, not ddp.kernels')
    C("F.max_pool2d_strided", lambda a: F.max_pool2d(a.transpose(2, 3), 3, 1, 1), (1, 2, 4, 4)),
    C("F.avg_pool2d", lambda a: F.avg_pool2d(a, 2, padding=1), (1, 2, 3, 3)),
    C("F.cross_entropy", lambda a: F.cross_entropy(a, ddp.tensor(_TARGET)), (3, 4)),
    C("F.cross_entropy_probs", lambda a: F.cross_entropy(a, ddp.tensor(_BITS / 2 + 0.125)),
      (3, 4)),  # probability targets: their own op
    C("F.binary_cross_entropy", lambda a: F.binary_cross_entropy(a.sigmoid(),
                                                                 ddp.tensor(_BITS)), (3, 4)),
    C("F.batch_norm", lambda a, w, b: F.batch_norm(a, None, None, w, b, training=True),
      (4, 3), (3,), (3,)),
    C("F.layer_norm", lambda a, w, b: F.layer_norm(a, (4,), w, b), (3, 4), (4,), (4,)),
    C("F.group_norm", lambda a: F.group_norm(a, 2), (2, 4, 3)),
    C("F.instance_norm", lambda a, w, b: F.instance_norm(a, None, None, w, b), (2, 3, 4),
      (3,), (3,)),
    C("F.scaled_dot_product_attention",
      lambda q, k, v: F.scaled_dot_product_attention(q, k, v), (2, 3, 4), (2, 5, 4), (2, 5, 4)),
    C("lstm_layer", lambda x, h, c, wi, wh, bi, bh: _rnn.rnn_layer("LSTM", x, (h, c),
                                                                   (wi, wh, bi, bh))[0],
      (3, 2, 2), (2, 3), (2, 3), (12, 2), (12, 3), (12,), (12,)),
    # a sparse COO constant times a dense input (once differentiable: SciPy's product)
    C("sparse_mm", lambda d: ddp.sparse_coo_tensor([[0, 1, 2, 2], [1, 0, 0, 2]],
                                                   [1.5, -2.0, 0.5, 3.0], (3, 3)) @ d,
      (3, 2), gg=False),
]


def _setitem(a, index, v):
    y = a * 1
    y[index] = v
    return y


def _tol(name):
    # a float32 round trip keeps ~7 digits: a wider step and tolerance (and no gradgradcheck)
    return dict(eps=1e-3, atol=1e-3, rtol=1e-3) if "float32" in name else {}


@pytest.mark.parametrize("name,fn,shapes,dom,gg", CASES)
def test_gradcheck(name, fn, shapes, dom, gg):
    inputs = make_inputs(name, shapes, dom)
    assert gradcheck(fn, inputs, **_tol(name))


@pytest.mark.parametrize("name,fn,shapes,dom,gg", [c for c in CASES if c.values[4]])
def test_gradgradcheck(name, fn, shapes, dom, gg):
    inputs = make_inputs(name, shapes, dom)
    assert gradgradcheck(fn, inputs)


def test_table_names_are_unique():
    names = [c.values[0] for c in CASES]
    assert len(names) == len(set(names))


# Ops this single-process CPU table cannot reach, and where their gradients are checked instead
NOT_IN_TABLE = {
    "ddp.autograd.function._CallUserBackward": "a user's Function (tests/core/test_autograd.py)",
    "ddp.nn.functional._normalization._Normalize": "the base of the three norm ops, never applied",
    "ddp.nn.sync_batchnorm.SyncBatchNormOp": "needs several ranks "
                                             "(tests/distributed/test_sync_batchnorm.py)",
    "ddp.ops.shape.ToDevice": "a copy between devices (tests/gpu)",
    "ddp.ops.sparse.SparseMM": "a sparse operand: gradchecked and gradgradchecked in "
                               "tests/core/test_sparse.py (the simulated CUDA device of this "
                               "table has no cupyx.scipy.sparse)",
}


def _every_op():
    """Every Op subclass of the package (all its modules imported)."""
    import importlib
    import inspect
    import pathlib
    root = pathlib.Path(ddp.__file__).parent
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] != "__main__":
            importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    def in_package(op):
        # a docstring example's Op (doctest runs it in the module's namespace, so its
        # __module__ is the package's) has its code in "<doctest ...>", not in a file here
        methods = [getattr(v, "__func__", v) for v in vars(op).values()]   # static, class
        files = {f.__code__.co_filename for f in methods if inspect.isfunction(f)}
        return op.__module__.startswith("ddp.") and all(f.startswith(str(root)) for f in files)
    from ddp.autograd import graph
    return {op for op in subclasses(graph.Op) if in_package(op)}


def _ops_recorded(tensors):
    """The Op classes of every node in the graphs behind ``tensors``."""
    ops, seen = set(), set()
    stack = [t.grad_fn for t in tensors if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if getattr(node, "op", None) is not None:
            ops.add(node.op)
        stack += [e[0] for e in getattr(node, "next_edges", ()) if e is not None and e[1] != -1]
    return ops


def test_every_op_is_in_the_table():
    """Each row's graph, and for gradgradcheck rows its gradient's and second gradient's graphs
    (where the backward ops of backward ops live), together record every Op of the package."""
    covered = set()
    for case in CASES:
        name, fn, shapes, dom, gg = case.values
        inputs = make_inputs(name, shapes, dom)
        out = fn(*inputs)
        outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o.requires_grad]
        covered |= _ops_recorded(outs)
        for _ in range(2 if gg else 0):  # first and second derivatives, as recorded ops
            # (upstream gradients that require grad, as gradgradcheck's: a linear op's backward
            # is then recorded too)
            upstream = [ddp.ones_like(o).requires_grad_() for o in outs]
            inputs = list(inputs) + upstream
            grads = ddp.autograd.grad(outs, inputs, upstream, create_graph=True,
                                      allow_unused=True)
            outs = [g for g in grads if g is not None and g.requires_grad]
            if not outs:
                break
            covered |= _ops_recorded(outs)
    ops = {f"{op.__module__}.{op.__qualname__}": op for op in _every_op()}
    missing = sorted(set(ops) - set(NOT_IN_TABLE) - {k for k, op in ops.items() if op in covered})
    assert not missing, f"ops without a row in CASES: {missing}"
    assert set(NOT_IN_TABLE) <= set(ops), "NOT_IN_TABLE names an op that no longer exists"


# --------------------------------------------------------------------------- helpers

def leaf(values, dtype=F64):
    return ddp.tensor(np.asarray(values, dtype=np.float64), dtype=dtype, requires_grad=True)


def grad_of(fn, *inputs, gout=None):
    out = fn(*inputs)
    gs = ddp.autograd.grad(out, inputs, gout, allow_unused=True)
    return [None if g is None else g.detach().numpy() for g in gs]


# --------------------------------------------------------------------------- once differentiable

@pytest.mark.parametrize("fn", [lambda a: a.prod(), lambda a: a.prod(1), lambda a: ddp.prod(a, 0)])
def test_prod_is_once_differentiable(fn):
    x = leaf([[1.0, 2.0, 3.0], [4.0, 0.5, -1.0]])
    (g,) = ddp.autograd.grad(fn(x).sum(), x)  # first order: fine
    assert g.shape == x.shape
    with pytest.raises(RuntimeError, match=r"ProdBackward0.*double backward"):
        ddp.autograd.grad(fn(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        gradgradcheck(fn, (x,))


# --------------------------------------------------------------------------- zero gradients

@pytest.mark.parametrize("fn", [
    lambda a: a.sign(), lambda a: a.floor(), lambda a: a.ceil(), lambda a: a.round(),
    lambda a: a.trunc(), lambda a: a // 2.0, lambda a: a // a.detach().abs(),
    lambda a: ddp.sign(a), lambda a: ddp.round(a, decimals=1)],
    ids=["sign", "floor", "ceil", "round", "trunc", "floordiv", "floordiv_tensor", "ddp.sign",
         "round_decimals"])
def test_piecewise_constant_ops_have_zero_gradient(fn):
    x = leaf([[-1.5, -0.5, 0.0, 0.5], [1.0, 2.5, -3.0, 0.3]])  # includes the jump points
    out = fn(x)
    assert out.requires_grad
    (g,) = ddp.autograd.grad(out.sum(), x)
    assert g.dtype == ddp.float64 and g.shape == x.shape
    np.testing.assert_array_equal(g.numpy(), np.zeros((2, 4)))


def test_floordiv_gradient_to_divisor_is_zero():
    # PyTorch raises "derivative for aten::floor_divide is not implemented"; ddp gives the
    # almost-everywhere derivative, zero, so that // in a differentiable expression works
    a, b = leaf([3.5, -2.0]), leaf([2.0, 0.75])
    ga, gb = grad_of(lambda a, b: (a // b).sum(), a, b)
    np.testing.assert_array_equal(ga, 0)
    np.testing.assert_array_equal(gb, 0)


# --------------------------------------------------------------------------- ties and kinks

def test_maximum_minimum_ties_split_half():
    a, b = leaf([1.0, 2.0, 3.0]), leaf([1.0, 5.0, 3.0])
    ga, gb = grad_of(lambda a, b: ddp.maximum(a, b).sum(), a, b)
    np.testing.assert_array_equal(ga, [0.5, 0.0, 0.5])
    np.testing.assert_array_equal(gb, [0.5, 1.0, 0.5])
    ga, gb = grad_of(lambda a, b: ddp.minimum(a, b).sum(), a, b)
    np.testing.assert_array_equal(ga, [0.5, 1.0, 0.5])
    np.testing.assert_array_equal(gb, [0.5, 0.0, 0.5])
    # broadcast tie: a scalar tensor tied with two elements collects both halves
    s, v = leaf(2.0), leaf([2.0, 1.0, 2.0])
    gs, gv = grad_of(lambda s, v: s.maximum(v).sum(), s, v)
    np.testing.assert_array_equal(gs, 0.5 + 1.0 + 0.5)
    np.testing.assert_array_equal(gv, [0.5, 0.0, 0.5])


@pytest.mark.parametrize("fn,expected", [
    (lambda a: a.max(), [[0, 1 / 3, 0], [1 / 3, 0, 1 / 3]]),
    (lambda a: a.amax(), [[0, 1 / 3, 0], [1 / 3, 0, 1 / 3]]),
    (lambda a: a.min(), [[0.5, 0, 0], [0, 0.5, 0]]),
    (lambda a: a.amin(), [[0.5, 0, 0], [0, 0.5, 0]]),
    (lambda a: a.amax(1).sum(), [[0, 1, 0], [0.5, 0, 0.5]]),
    (lambda a: (-a).amin(1).sum(), [[0, -1, 0], [-0.5, 0, -0.5]]),
    (lambda a: a.amax((0, 1), keepdim=True).sum(), [[0, 1 / 3, 0], [1 / 3, 0, 1 / 3]]),
    (lambda a: a.norm(float("inf")), [[0, 1 / 3, 0], [1 / 3, 0, 1 / 3]]),
], ids=["max", "amax", "min", "amin", "amax_dim", "amin_dim", "amax_tuple", "norm_inf"])
def test_full_reductions_share_ties_evenly(oracle, fn, expected):
    x = leaf([[-1.0, 3.0, 2.0], [3.0, -1.0, 3.0]])
    (g,) = grad_of(fn, x)
    np.testing.assert_allclose(g, expected, rtol=0, atol=1e-15)

    def reference(torch):
        tx = torch.tensor(x.detach().numpy(), requires_grad=True)
        fn(tx).backward()
        return tx.grad.numpy()
    np.testing.assert_allclose(g, oracle(reference), atol=1e-15)


@pytest.mark.parametrize("smallest", [False, True])
@pytest.mark.parametrize("dim,keepdim", [(0, False), (1, True), (-1, False)])
def test_max_min_with_dim_gradient_goes_to_the_returned_index(oracle, smallest, dim, keepdim):
    x = leaf([[2.0, 7.0, 7.0, 1.0], [5.0, 5.0, 0.0, 0.0], [2.0, 7.0, 3.0, 3.0]])
    values, indices = (x.min if smallest else x.max)(dim, keepdim)
    (g,) = ddp.autograd.grad(values.sum(), x)
    idx = indices.numpy() if keepdim else np.expand_dims(indices.numpy(), dim)
    expected = np.zeros((3, 4))
    np.put_along_axis(expected, idx, 1.0, axis=dim)
    np.testing.assert_array_equal(g.numpy(), expected)
    assert expected.sum() == values.numel()

    def reference(torch):
        tx = torch.tensor(x.detach().numpy(), requires_grad=True)
        tv, ti = (tx.min if smallest else tx.max)(dim, keepdim)
        tv.sum().backward()
        return {"indices": ti.numpy(), "grad": tx.grad.numpy()}
    want = oracle(reference)
    np.testing.assert_array_equal(indices.numpy(), want["indices"])
    np.testing.assert_array_equal(g.numpy(), want["grad"])


def test_clamp_gradient_passes_at_the_bounds():
    x = leaf([-2.0, -1.0, 0.0, 1.0, 2.0])
    (g,) = grad_of(lambda x: x.clamp(-1.0, 1.0).sum(), x)
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 0])  # PyTorch: min <= x <= max passes
    (g,) = grad_of(lambda x: x.clamp(min=0.0).sum(), x)
    np.testing.assert_array_equal(g, [0, 0, 1, 1, 1])
    (g,) = grad_of(lambda x: x.clamp(max=0.0).sum(), x)
    np.testing.assert_array_equal(g, [1, 1, 1, 0, 0])


def test_clamp_tensor_bounds_gradient_to_bounds():
    x, lo, hi = leaf([-2.0, 0.0, 2.0]), leaf([-1.0, -1.0, -1.0]), leaf([1.0, 1.0, 1.0])
    gx, glo, ghi = grad_of(lambda x, lo, hi: x.clamp(lo, hi).sum(), x, lo, hi)
    np.testing.assert_array_equal(gx, [0, 1, 0])
    np.testing.assert_array_equal(glo, [1, 0, 0])
    np.testing.assert_array_equal(ghi, [0, 0, 1])
    # at a tie with a tensor bound the whole gradient goes to the input (PyTorch's clamp)
    x = leaf([-1.0, 0.0, 1.0])
    gx, glo, ghi = grad_of(lambda x, lo, hi: x.clamp(lo, hi).sum(), x, lo, hi)
    np.testing.assert_array_equal(gx, [1, 1, 1])
    np.testing.assert_array_equal(glo, [0, 0, 0])
    np.testing.assert_array_equal(ghi, [0, 0, 0])
    gx, g0 = grad_of(lambda x, m: x.clamp(min=m).sum(), x, leaf(0.0))
    np.testing.assert_array_equal(gx, [0, 1, 1])
    assert g0 == 1.0


def test_pow_gradients_at_zero_base():
    x = leaf([0.0, 0.0, 2.0])
    np.testing.assert_array_equal(grad_of(lambda x: (x ** 2).sum(), x)[0], [0, 0, 4])
    np.testing.assert_array_equal(grad_of(lambda x: (x ** 0).sum(), x)[0], [0, 0, 0])
    b = leaf([0.0, 1.5, 2.0])
    gx, gb = grad_of(lambda x, b: (x ** b).sum(), x, b)
    np.testing.assert_array_equal(gx, [0, 0, 4])  # 0 ** 0: d/dx defined as 0
    np.testing.assert_allclose(gb, [0, 0, 4 * np.log(2)])  # 0 ** b, b >= 0: d/db is 0
    np.testing.assert_allclose(grad_of(lambda b: (0.0 ** b).sum(), b)[0], [0, 0, 0])


def test_abs_relu_sign_at_zero():
    x = leaf([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(grad_of(lambda x: x.abs().sum(), x)[0], [-1, 0, 1])
    np.testing.assert_array_equal(grad_of(lambda x: x.relu().sum(), x)[0], [0, 0, 1])


@pytest.mark.parametrize("n", [7, 5000])  # below and above Relu's zeros-array path (3,072)
def test_relu_values_and_gradient_either_path(n):
    a = np.linspace(-2.0, 2.0, n).astype(np.float32)
    a[:3] = [np.nan, 0.0, -0.0]
    x = leaf(a, dtype=ddp.float32)
    y = x.relu()
    assert y.dtype == ddp.float32
    want = np.where(a > 0, a, 0).astype(np.float32)
    want[0] = np.nan
    np.testing.assert_array_equal(y.detach().numpy(), want)
    (g,) = grad_of(lambda x: x.relu().sum(), x)   # PyTorch's: 1 at the NaN (not at most 0)
    np.testing.assert_array_equal(g, (~(a <= 0)).astype(np.float32))
    np.testing.assert_array_equal(ddp.tensor(np.arange(-3, n - 3)).relu().numpy(),
                                  np.maximum(np.arange(-3, n - 3), 0))


# --------------------------------------------------------------------------- norm at zero

@pytest.mark.parametrize("p", [2, "fro", 1, float("inf"), 3, 1.5])
def test_norm_at_zero_vector_has_zero_gradient(oracle, p):
    x = leaf(np.zeros((2, 3)))
    (g,) = grad_of(lambda x: x.norm(p), x)
    assert not np.isnan(g).any(), g
    np.testing.assert_array_equal(g, 0)
    # a zero row next to a nonzero one: the nonzero row keeps its gradient
    y = leaf([[0.0, 0.0, 0.0], [3.0, -4.0, 0.0]])
    (g,) = grad_of(lambda y: y.norm(p, dim=1).sum(), y)
    assert not np.isnan(g).any(), g
    np.testing.assert_array_equal(g[0], 0)

    def reference(torch):
        ty = torch.tensor(y.detach().numpy(), requires_grad=True)
        ty.norm(p, dim=1).sum().backward()
        return ty.grad.numpy()
    np.testing.assert_allclose(g, oracle(reference), atol=1e-12)


@pytest.mark.parametrize("p", [2, 1, 3])
def test_norm_at_zero_vector_under_create_graph(p):
    x = leaf(np.zeros(3))
    (g,) = ddp.autograd.grad(x.norm(p), x, create_graph=True)
    assert g.requires_grad
    np.testing.assert_array_equal(g.detach().numpy(), 0)
    ddp.autograd.grad(g.sum(), x)  # runs (PyTorch gives NaN for p=2 here: no value asserted)


# --------------------------------------------------------------------------- prod with zeros

@pytest.mark.parametrize("values", [
    [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
    [[1.0, 0.0, 3.0], [4.0, 5.0, 6.0]],
    [[0.0, 0.0, 3.0], [4.0, 0.0, 6.0]],
    [[0.0, 0.0, 0.0], [-2.0, 0.5, 0.0]],
], ids=["no_zero", "one_zero", "two_zeros", "all_zero_row"])
@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_prod_gradient_with_zeros(oracle, values, dim):
    v = np.asarray(values)
    x = leaf(v)
    out = x.prod() if dim is None else x.prod(dim)
    (g,) = ddp.autograd.grad(out.sum(), x)
    expected = np.zeros_like(v)  # d prod / d x_i = product of the others along dim
    if dim is None:
        for i in np.ndindex(v.shape):
            expected[i] = np.prod(np.delete(v.ravel(), np.ravel_multi_index(i, v.shape)))
    else:
        d = dim % 2
        for i in np.ndindex(v.shape):
            line = v[:, i[1]] if d == 0 else v[i[0], :]
            expected[i] = np.prod(np.delete(line, i[d]))
    np.testing.assert_array_equal(g.numpy(), expected)
    assert np.isfinite(g.numpy()).all()

    def reference(torch):
        tx = torch.tensor(v, requires_grad=True)
        (tx.prod() if dim is None else tx.prod(dim)).sum().backward()
        return tx.grad.numpy()
    np.testing.assert_array_equal(g.numpy(), oracle(reference))


def test_prod_with_zero_gradcheck():
    x = leaf([[1.5, 0.0, -2.0], [0.0, 0.0, 0.7]])
    assert gradcheck(lambda x: x.prod(1), (x,))
    assert gradcheck(lambda x: x.prod(0), (x,))


# --------------------------------------------------------------------------- stability

def test_sigmoid_no_overflow_at_large_inputs():
    x = leaf([-1e4, -50.0, 0.0, 50.0, 1e4])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = x.sigmoid()
        (g,) = ddp.autograd.grad(y.sum(), x)
    np.testing.assert_allclose(y.detach().numpy(), [0.0, 1 / (1 + np.exp(50)), 0.5,
                                                    1 / (1 + np.exp(-50)), 1.0], rtol=1e-12)
    assert np.isfinite(g.numpy()).all()
    np.testing.assert_allclose(g.numpy()[[0, 2, 4]], [0.0, 0.25, 0.0])
    x32 = ddp.tensor([-1e4, 1e4], dtype=ddp.float32)
    assert x32.sigmoid().dtype == ddp.float32
    assert x32.sigmoid().tolist() == [0.0, 1.0]


def test_logsumexp_softmax_stable_at_large_inputs():
    x = leaf([[1e4, 1e4, 0.0], [-1e4, -1e4, -1e4]])
    out = x.logsumexp(1)
    np.testing.assert_allclose(out.detach().numpy(), [1e4 + np.log(2), -1e4 + np.log(3)],
                               rtol=1e-14)
    (g,) = ddp.autograd.grad(out.sum(), x)
    np.testing.assert_allclose(g.numpy(), [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-15)
    np.testing.assert_allclose(x.softmax(1).detach().numpy(), g.numpy(), atol=1e-15)
    ls = x.log_softmax(1).detach().numpy()
    assert np.isfinite(ls[:, :2]).all() and ls[0, 2] == -1e4 - np.log(2)
    assert gradcheck(lambda x: x.logsumexp(1), (leaf([[1e4, 1e4 + 0.3, 1e4 - 0.5]]),))
    # -inf entries (masked logits) stay finite elsewhere; all -inf gives -inf, not NaN
    y = ddp.tensor([[0.0, -np.inf], [-np.inf, -np.inf]], dtype=F64)
    np.testing.assert_array_equal(y.logsumexp(1).numpy(), [0.0, -np.inf])


# --------------------------------------------------------------------------- indexing specifics

def test_repeated_indices_accumulate():
    x = leaf(np.arange(12.0).reshape(3, 4))
    (g,) = grad_of(lambda x: x[[0, 2, 0, 0]].sum(), x)
    np.testing.assert_array_equal(g[:, 0], [3, 0, 1])
    (g,) = grad_of(lambda x: x[[0, 0, 1], [1, 1, 3]].sum(), x)
    assert g[0, 1] == 2 and g[1, 3] == 1 and g.sum() == 3
    (g,) = grad_of(lambda x: x.index_select(1, ddp.tensor([3, 3, 3, 0])).sum(), x)
    np.testing.assert_array_equal(g[0], [1, 0, 0, 3])
    (g,) = grad_of(lambda x: x.gather(0, ddp.tensor([[2, 2, 2, 2], [2, 0, 2, 2]])).sum(), x)
    np.testing.assert_array_equal(g, [[0, 1, 0, 0], [0, 0, 0, 0], [2, 1, 2, 2]])
    s = leaf(np.ones((2, 4)))
    gx, gs = grad_of(lambda x, s: (x.index_add(0, ddp.tensor([1, 1]), s) * x).sum(), x, s)
    np.testing.assert_array_equal(gs, np.stack([x.detach().numpy()[1]] * 2))
    gx, gs = grad_of(lambda x, s: (x.scatter_add(1, ddp.tensor([[0, 0, 0, 0], [3, 3, 1, 1]]), s)
                                   * 2).sum(), x, s)
    np.testing.assert_array_equal(gs, 2 * np.ones((2, 4)))
    np.testing.assert_array_equal(gx, 2 * np.ones((3, 4)))


def test_setitem_on_non_leaf_gradients_to_both():
    x = leaf(np.arange(1.0, 7.0).reshape(2, 3))
    v = leaf(10.0)
    mask = ddp.tensor([[True, False, True], [False, False, True]])
    y = x * 1
    y[mask] = v
    assert y.grad_fn is not None
    np.testing.assert_array_equal(y.detach().numpy(), [[10, 2, 10], [4, 5, 10]])
    (y * ddp.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=F64)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 2, 0], [4, 5, 0]])
    assert v.grad.item() == 1 + 3 + 6
    # a tensor of values, one per masked element
    x.grad = None
    w = leaf([7.0, 8.0, 9.0])
    y = x * 2
    y[mask] = w
    y.backward(ddp.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=F64))
    np.testing.assert_array_equal(w.grad.numpy(), [1, 3, 6])
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 4, 0], [8, 10, 0]])


def test_setitem_on_leaf_requiring_grad_raises():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="leaf Variable"):
        x[0] = 5.0


def test_getitem_gradient_shapes_for_every_index_kind():
    x = leaf(np.arange(24.0).reshape(2, 3, 4))
    for idx in [0, -1, slice(None, None, -1), (Ellipsis, 0), (None, 1), (0, [1, 1]),
                ([0, 1], slice(None), [3, 0]), ddp.tensor([1, 0]), x.detach() > 10]:
        (g,) = grad_of(lambda x: x[idx].sum(), x)
        assert g.shape == (2, 3, 4)
        expected = np.zeros((2, 3, 4))
        np.add.at(expected, idx.numpy() if isinstance(idx, ddp.Tensor) else idx, 1.0)
        np.testing.assert_array_equal(g, expected)


# --------------------------------------------------------------------------- casts and clone

def test_cast_gradient_has_the_input_dtype():
    x = ddp.tensor([1.0, 2.0, 3.0], dtype=ddp.float32, requires_grad=True)
    y = x.to(ddp.float64)
    assert y.dtype == ddp.float64 and y.requires_grad
    (y * y).sum().backward()
    assert x.grad.dtype == ddp.float32
    np.testing.assert_array_equal(x.grad.numpy(), [2, 4, 6])
    z = leaf([1.0, 2.0])
    for cast in [lambda t: t.float(), lambda t: t.to(ddp.float32), lambda t: t.half(),
                 lambda t: t.type(ddp.float32)]:
        z.grad = None
        w = cast(z)
        assert w.dtype != ddp.float64
        (w * 3).sum().backward()
        assert z.grad.dtype == ddp.float64
        np.testing.assert_array_equal(z.grad.numpy(), [3, 3])


def test_cast_to_int_is_not_differentiable():
    x = leaf([1.5, 2.5])
    i = x.long()
    assert i.dtype == ddp.int64 and not i.requires_grad


def test_clone_and_contiguous():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    c = x.clone()
    assert c.grad_fn is not None and c.requires_grad
    c.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((2, 2)))
    assert x.contiguous() is x  # already contiguous: no copy, PyTorch returns self


def test_matmul_broadcast_batch_gradient_values():
    rng = np.random.default_rng(3)
    a_np, b_np = rng.standard_normal((2, 1, 3, 4)), rng.standard_normal((5, 4, 2))
    a, b = leaf(a_np), leaf(b_np)
    out = a @ b
    assert out.shape == (2, 5, 3, 2)
    ga, gb = grad_of(lambda a, b: (a @ b).sum(), a, b)
    ones = np.ones((2, 5, 3, 2))
    np.testing.assert_allclose(ga, (ones @ np.swapaxes(b_np, -1, -2)).sum(1, keepdims=True))
    np.testing.assert_allclose(gb, (np.swapaxes(a_np, -1, -2) @ ones).sum(0))


# --------------------------------------------------------------------------- torch oracle

ORACLE = [  # (name, fn(module, *inputs) that runs on ddp and torch alike, shapes, dom)
    ("div_bcast", lambda m, a, b: a / b, [(3, 4), (4,)], "pos"),
    ("pow_tensor", lambda m, a, b: a ** b, [(3, 4), (3, 1)], "pos"),
    ("rpow", lambda m, a: 2.0 ** a, [(3, 4)], "any"),
    ("mod", lambda m, a: a % 0.7, [(3, 4)], "frac"),
    ("mod_tensor", lambda m, a, b: a % b, [(3, 4), (4,)], "pos"),
    ("maximum_bcast", lambda m, a, b: m.maximum(a, b), [(3, 4), (4,)], "any"),
    ("where", lambda m, a, b: m.where(a > 0, a, b), [(3, 4), (4,)], "any"),
    ("sigmoid", lambda m, a: (a * 3).sigmoid(), [(3, 4)], "any"),
    ("var", lambda m, a: a.var(1), [(3, 4)], "any"),
    ("std_correction", lambda m, a: a.std(0, correction=0), [(3, 4)], "any"),
    ("norm_p3", lambda m, a: a.norm(3, dim=1), [(3, 4)], "any"),
    ("norm_inf", lambda m, a: a.norm(float("inf"), dim=0), [(3, 4)], "any"),
    ("logsumexp", lambda m, a: a.logsumexp(-1), [(2, 3, 4)], "any"),
    ("log_softmax", lambda m, a: a.log_softmax(0), [(3, 4)], "any"),
    ("softmax", lambda m, a: a.softmax(-1), [(3, 4)], "any"),
    ("cumsum", lambda m, a: a.cumsum(1), [(3, 4)], "any"),
    ("max_dim", lambda m, a: a.max(1, keepdim=True).values, [(3, 4)], "any"),
    ("amax_tuple", lambda m, a: a.amax((0, 2)), [(2, 3, 4)], "any"),
    ("prod_dim", lambda m, a: a.prod(-1), [(3, 4)], "any"),
    ("matmul_bcast", lambda m, a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)], "any"),
    ("matmul_1d_3d", lambda m, a, b: a @ b, [(3,), (2, 3, 2)], "any"),
    ("clamp_tensor", lambda m, a, lo: a.clamp(min=lo), [(3, 4), (4,)], "any"),
    ("roll", lambda m, a: a.roll((1, -1), (0, 1)), [(3, 4)], "any"),
    ("kthvalue", lambda m, a: m.kthvalue(a, 3, 0, True).values, [(4, 3)], "any"),
    ("cdist", lambda m, a, b: m.cdist(a, b), [(2, 3, 2), (2, 4, 2)], "any"),
    ("meshgrid", lambda m, a, b: m.meshgrid(a, b, indexing="ij")[1]
     * m.meshgrid(a, b, indexing="ij")[0], [(3,), (2,)], "any"),
    ("einsum_batch", lambda m, a, b: m.einsum("bij,bjk->bik", a, b), [(2, 2, 3), (2, 3, 2)],
     "any"),
    ("einsum_ellipsis", lambda m, a, b: m.einsum("...ij,...j", a, b), [(2, 3, 4), (4,)], "any"),
    ("diagonal", lambda m, a: a.diagonal(-1, 2, 0), [(3, 2, 4)], "any"),
    ("diag_embed", lambda m, a: m.diag_embed(a, 1, 0, 2), [(2, 3)], "any"),
    ("diag", lambda m, a: m.diag(a, -1), [(3,)], "any"),
    ("triu_tril", lambda m, a: a.triu(1) + m.tril(a, -2), [(2, 3, 4)], "any"),
    ("repeat", lambda m, a: a.repeat(2, 1, 3), [(2, 3)], "any"),
    ("getitem_mixed", lambda m, a: a[[1, 1, 0], 1:], [(3, 4)], "any"),
    ("gather_small_index", lambda m, a: a.gather(1, m.tensor([[0, 3], [2, 2]])), [(3, 4)], "any"),
    # (torch's scatter backward needs src shaped like index)
    ("scatter", lambda m, a, s: a.scatter(1, m.tensor([[0, 2], [3, 1], [1, 0]]), s),
     [(3, 4), (3, 2)], "any"),
    ("scatter_add", lambda m, a, s: a.scatter_add(0, m.tensor([[2, 2, 0]]), s),
     [(3, 4), (1, 3)], "any"),
    ("index_add", lambda m, a, s: a.index_add(0, m.tensor([2, 0, 2]), s, alpha=3),
     [(3, 4), (3, 4)], "any"),
]


@pytest.mark.parametrize("name,fn,shapes,dom", ORACLE, ids=[o[0] for o in ORACLE])
def test_gradients_match_torch(oracle, name, fn, shapes, dom):
    inputs = make_inputs(name, shapes, dom)
    out = fn(ddp, *inputs)
    gout = np.random.default_rng(1).standard_normal(tuple(out.shape))
    grads = ddp.autograd.grad(out, inputs, ddp.tensor(gout, dtype=F64))

    def reference(torch):
        t_inputs = [torch.tensor(x.detach().numpy(), requires_grad=True) for x in inputs]
        t_out = fn(torch, *t_inputs)
        t_grads = torch.autograd.grad(t_out, t_inputs, torch.tensor(gout))
        return {"out": t_out.detach().numpy(), "grads": [tg.numpy() for tg in t_grads]}
    want = oracle(reference)
    np.testing.assert_allclose(out.detach().numpy(), want["out"], rtol=1e-12, atol=1e-12)
    assert len(grads) == len(want["grads"])
    for g, tg in zip(grads, want["grads"]):
        np.testing.assert_allclose(g.numpy(), tg, rtol=1e-10, atol=1e-12)


# The same table on CuPy when a GPU is present (skipped cleanly otherwise): every tensor the
# cases make lands on the GPU through the default device.
@pytest.fixture
def on_cuda():
    ddp.set_default_device("cuda")
    yield
    ddp.set_default_device("cpu")


# rows that do not run on the (simulated) GPU yet: sparse_coo_tensor there raises "row, column,
# and data arrays must be 1-D" (cupyx.scipy.sparse), a gap of the sparse tensors' GPU path
CPU_ONLY = {"sparse_mm"}


@pytest.mark.gpu
@pytest.mark.parametrize("name,fn,shapes,dom,gg", [c for c in CASES
                                                   if c.values[0] not in CPU_ONLY])
def test_gradcheck_cuda(name, fn, shapes, dom, gg, on_cuda):
    inputs = make_inputs(name, shapes, dom)
    assert all(t.device.type == "cuda" for t in inputs)
    assert gradcheck(fn, inputs, **_tol(name))


@pytest.mark.gpu
@pytest.mark.parametrize("name,fn,shapes,dom,gg", [c for c in CASES if c.values[4]])
def test_gradgradcheck_cuda(name, fn, shapes, dom, gg, on_cuda):
    assert gradgradcheck(fn, make_inputs(name, shapes, dom))

"""Forward values of the core ops against NumPy formulas; dtype promotion; bad-input errors.

The table has one line per case: ``F(name, fn, ref, *shapes, dom=...)`` — ``fn`` runs on ddp
float64 tensors, ``ref`` on the same values as NumPy arrays; results (one tensor or a tuple) must
agree in shape, dtype and value. PyTorch, when installed, is an extra oracle for dtype rules.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

import ddp

F64 = ddp.float64


def make_arrays(name, shapes, dom="any"):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    out = []
    for s in shapes:
        if dom == "any":
            a = rng.uniform(-2, 2, s)
        elif dom == "pos":
            a = rng.uniform(0.5, 2, s)
        elif dom == "frac":  # halves included, to pin round-half-to-even
            a = rng.integers(-6, 6, s) / 2 + rng.choice([0.0, 0.25], s)
        else:
            raise ValueError(dom)
        out.append(np.asarray(a, dtype=np.float64))
    return out


def F(name, fn, ref, *shapes, dom="any"):
    return pytest.param(name, fn, ref, shapes, dom, id=name)


def _np_setitem(a, index, v):
    a = a.copy()
    a[index] = v
    return a


def _np_scatter(a, axis, index, src):
    out = a.copy()
    np.put_along_axis(out, index, src[tuple(slice(0, s) for s in index.shape)], axis=axis)
    return out


def _np_scatter_add(a, axis, index, src):
    out = a.copy()
    grids = list(np.ogrid[tuple(slice(0, s) for s in index.shape)])
    grids[axis] = index
    np.add.at(out, tuple(grids), src[tuple(slice(0, s) for s in index.shape)])
    return out


def _np_gather(a, axis, index):
    grids = list(np.ogrid[tuple(slice(0, s) for s in index.shape)])
    grids[axis] = index
    return a[tuple(grids)]


def _np_index_add(a, axis, index, src):
    out = a.copy()
    np.add.at(out, (slice(None),) * axis + (index,), src)
    return out


def _np_lse(a, axis, keepdims=False):
    m = a.max(axis=axis, keepdims=True)
    out = np.log(np.exp(a - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _np_softmax(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_norm(a, p, axis=None, keepdims=False):
    if p == np.inf:
        return np.abs(a).max(axis=axis, keepdims=keepdims)
    if p == -np.inf:
        return np.abs(a).min(axis=axis, keepdims=keepdims)
    return (np.abs(a) ** p).sum(axis=axis, keepdims=keepdims) ** (1 / p)


def _np_sigmoid(a):
    return 1 / (1 + np.exp(-a))


_MASK = np.random.default_rng(0).random((3, 4)) > 0.5
_IDX = np.array([[0, 2, 2, 1], [1, 1, 0, 2], [2, 0, 1, 1]])
T = ddp.tensor

CASES = [
    # ---- binary arithmetic
    F("add", lambda a, b: a + b, lambda a, b: a + b, (3, 4), (3, 4)),
    F("add_bcast", lambda a, b: a + b, lambda a, b: a + b, (3, 1), (4,)),
    F("add_bcast_left", lambda a, b: a + b, lambda a, b: a + b, (4,), (2, 3, 4)),
    F("add_scalar", lambda a: a + 2.5, lambda a: a + 2.5, (3, 4)),
    F("radd_int", lambda a: 2 + a, lambda a: 2 + a, (3, 4)),
    F("add_alpha", lambda a, b: a.add(b, alpha=3), lambda a, b: a + 3 * b, (3, 4), (4,)),
    F("ddp.add_number_first", lambda a: ddp.add(2.5, a), lambda a: 2.5 + a, (3,)),
    F("sub", lambda a, b: a - b, lambda a, b: a - b, (3, 4), (3, 1)),
    F("rsub", lambda a: 1.5 - a, lambda a: 1.5 - a, (3, 4)),
    F("sub_alpha", lambda a, b: ddp.sub(a, b, alpha=2), lambda a, b: a - 2 * b, (3, 4), (3, 4)),
    F("ddp.sub_number_first", lambda a: ddp.sub(1.0, a), lambda a: 1.0 - a, (3,)),
    F("mul", lambda a, b: a * b, lambda a, b: a * b, (2, 3, 4), (3, 1)),
    F("rmul", lambda a: 3.0 * a, lambda a: 3.0 * a, (3, 4)),
    F("ddp.mul", lambda a, b: ddp.mul(a, b), lambda a, b: a * b, (3, 4), (4,)),
    F("div", lambda a, b: a / b, lambda a, b: a / b, (3, 4), (4,), dom="pos"),
    F("rdiv", lambda a: 2.0 / a, lambda a: 2.0 / a, (3, 4), dom="pos"),
    F("ddp.div_number_first", lambda a: ddp.div(2.0, a), lambda a: 2.0 / a, (3,), dom="pos"),
    F("div_floor", lambda a: a.div(0.7, rounding_mode="floor"), lambda a: np.floor(a / 0.7),
      (3, 4)),
    F("div_trunc", lambda a: a.div(0.7, rounding_mode="trunc"), lambda a: np.trunc(a / 0.7),
      (3, 4)),
    F("floordiv", lambda a, b: a // b, lambda a, b: np.floor_divide(a, b), (3, 4), (4,)),
    F("floordiv_scalar", lambda a: a // 0.5, lambda a: np.floor(a / 0.5), (3, 4)),
    F("rfloordiv", lambda a: 3.0 // a, lambda a: np.floor_divide(3.0, a), (3, 4)),
    F("mod", lambda a, b: a % b, lambda a, b: np.remainder(a, b), (3, 4), (4,)),
    F("mod_neg", lambda a: a % -0.7, lambda a: np.remainder(a, -0.7), (3, 4)),
    F("rmod", lambda a: 5.0 % a, lambda a: np.remainder(5.0, a), (3, 4)),
    F("ddp.remainder", lambda a: ddp.remainder(a, 0.7), lambda a: np.remainder(a, 0.7), (3, 4)),
    F("fmod", lambda a: a.fmod(0.7), lambda a: np.fmod(a, 0.7), (3, 4)),
    F("pow_scalar", lambda a: a ** 3, lambda a: a ** 3, (3, 4)),
    F("pow_frac", lambda a: a ** 1.5, lambda a: a ** 1.5, (3, 4), dom="pos"),
    F("pow_tensor", lambda a, b: a ** b, lambda a, b: a ** b, (3, 4), (4,), dom="pos"),
    F("rpow", lambda a: 2.0 ** a, lambda a: 2.0 ** a, (3, 4)),
    F("ddp.pow_number_first", lambda a: ddp.pow(2.0, a), lambda a: 2.0 ** a, (3, 4)),
    F("neg", lambda a: -a, lambda a: -a, (3, 4)),
    F("maximum", lambda a, b: ddp.maximum(a, b), np.maximum, (3, 4), (4,)),
    F("minimum", lambda a, b: a.minimum(b), np.minimum, (3, 1), (4,)),
    F("max_other", lambda a, b: ddp.max(a, b), np.maximum, (3, 4), (3, 4)),
    F("where", lambda a, b: ddp.where(T(_MASK), a, b), lambda a, b: np.where(_MASK, a, b),
      (3, 4), (4,)),
    F("where_scalar", lambda a: ddp.where(T(_MASK), 0.5, a), lambda a: np.where(_MASK, 0.5, a),
      (3, 4)),
    F("lerp", lambda a, b: a.lerp(b, 0.25), lambda a, b: a + 0.25 * (b - a), (3, 4), (4,)),
    F("addcmul", lambda a, b, c: a.addcmul(b, c, value=2), lambda a, b, c: a + 2 * b * c,
      (3, 4), (4,), (3, 1)),
    F("addcdiv", lambda a, b, c: a.addcdiv(b, c, value=2), lambda a, b, c: a + 2 * b / c,
      (3, 4), (4,), (3, 1), dom="pos"),
    # ---- unary math
    F("exp", lambda a: a.exp(), np.exp, (3, 4)),
    F("log", lambda a: a.log(), np.log, (3, 4), dom="pos"),
    F("log2", lambda a: a.log2(), np.log2, (3, 4), dom="pos"),
    F("log10", lambda a: a.log10(), np.log10, (3, 4), dom="pos"),
    F("log1p", lambda a: a.log1p(), np.log1p, (3, 4), dom="pos"),
    F("expm1", lambda a: a.expm1(), np.expm1, (3, 4)),
    F("sqrt", lambda a: a.sqrt(), np.sqrt, (3, 4), dom="pos"),
    F("rsqrt", lambda a: a.rsqrt(), lambda a: 1 / np.sqrt(a), (3, 4), dom="pos"),
    F("reciprocal", lambda a: a.reciprocal(), lambda a: 1 / a, (3, 4)),
    F("square", lambda a: a.square(), np.square, (3, 4)),
    F("abs", lambda a: a.abs(), np.abs, (3, 4)),
    F("sin", lambda a: a.sin(), np.sin, (3, 4)),
    F("cos", lambda a: a.cos(), np.cos, (3, 4)),
    F("tan", lambda a: a.tan(), np.tan, (3, 4)),
    F("tanh", lambda a: a.tanh(), np.tanh, (3, 4)),
    F("sigmoid", lambda a: (a * 20).sigmoid(), lambda a: _np_sigmoid(a * 20), (3, 4)),
    F("relu", lambda a: a.relu(), lambda a: np.maximum(a, 0), (3, 4)),
    F("clamp", lambda a: a.clamp(-0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5), (3, 4)),
    F("clamp_min", lambda a: a.clamp(min=0.2), lambda a: np.maximum(a, 0.2), (3, 4)),
    F("clamp_max", lambda a: a.clamp(max=0.2), lambda a: np.minimum(a, 0.2), (3, 4)),
    F("clamp_min_gt_max", lambda a: a.clamp(1.0, -1.0), lambda a: np.full_like(a, -1.0), (3, 4)),
    F("clamp_tensor", lambda a, lo, hi: a.clamp(lo, hi), lambda a, lo, hi: np.minimum(
        np.maximum(a, lo), hi), (3, 4), (4,), (3, 1)),
    F("sign", lambda a: a.sign(), np.sign, (3, 4), dom="frac"),
    F("floor", lambda a: a.floor(), np.floor, (3, 4), dom="frac"),
    F("ceil", lambda a: a.ceil(), np.ceil, (3, 4), dom="frac"),
    F("round_half_even", lambda a: a.round(), np.round, (3, 4), dom="frac"),
    F("round_decimals", lambda a: (a * 0.1).round(decimals=2), lambda a: np.round(a * 0.1, 2),
      (3, 4), dom="frac"),
    F("trunc", lambda a: a.trunc(), np.trunc, (3, 4), dom="frac"),
    F("frac", lambda a: a.frac(), lambda a: a - np.trunc(a), (3, 4), dom="frac"),
    # ---- reductions
    F("sum", lambda a: a.sum(), np.sum, (3, 4)),
    F("sum_dim_neg", lambda a: a.sum(-1), lambda a: a.sum(-1), (2, 3, 4)),
    F("sum_tuple_keepdim", lambda a: a.sum((0, 2), keepdim=True),
      lambda a: a.sum((0, 2), keepdims=True), (2, 3, 4)),
    F("mean", lambda a: a.mean(), np.mean, (3, 4)),
    F("mean_dim_keepdim", lambda a: a.mean(1, keepdim=True), lambda a: a.mean(1, keepdims=True),
      (2, 3, 4)),
    F("mean_tuple_neg", lambda a: a.mean((-1, 0)), lambda a: a.mean((0, 2)), (2, 3, 4)),
    F("var", lambda a: a.var(), lambda a: a.var(ddof=1), (3, 4)),
    F("var_dim", lambda a: a.var(1), lambda a: a.var(1, ddof=1), (3, 4)),
    F("var_biased_keepdim", lambda a: a.var(-1, unbiased=False, keepdim=True),
      lambda a: a.var(-1, keepdims=True), (2, 3, 4)),
    F("var_correction", lambda a: a.var((0, 1), correction=2), lambda a: a.var((0, 1), ddof=2),
      (2, 3, 4)),
    F("std", lambda a: a.std(), lambda a: a.std(ddof=1), (3, 4)),
    F("std_dim", lambda a: a.std(0), lambda a: a.std(0, ddof=1), (3, 4)),
    F("std_correction_0", lambda a: a.std(1, correction=0), lambda a: a.std(1), (3, 4)),
    F("max_all", lambda a: a.max(), np.max, (3, 4)),
    F("min_all", lambda a: a.min(), np.min, (3, 4)),
    F("max_dim", lambda a: tuple(a.max(1)), lambda a: (a.max(1), a.argmax(1)), (3, 4)),
    F("max_dim_keepdim", lambda a: tuple(a.max(-1, keepdim=True)),
      lambda a: (a.max(-1, keepdims=True), a.argmax(-1)[..., None]), (2, 3, 4)),
    F("min_dim", lambda a: tuple(ddp.min(a, 0)), lambda a: (a.min(0), a.argmin(0)), (3, 4)),
    F("amax", lambda a: a.amax(), np.max, (3, 4)),
    F("amax_tuple", lambda a: a.amax((0, -1)), lambda a: a.max((0, 2)), (2, 3, 4)),
    F("amin_keepdim", lambda a: a.amin(1, keepdim=True), lambda a: a.min(1, keepdims=True),
      (2, 3, 4)),
    F("argmax", lambda a: a.argmax(), np.argmax, (3, 4)),
    F("argmax_dim", lambda a: a.argmax(1), lambda a: a.argmax(1), (3, 4)),
    F("argmax_keepdim", lambda a: a.argmax(-1, keepdim=True), lambda a: a.argmax(-1)[..., None],
      (2, 3, 4)),
    F("argmin", lambda a: ddp.argmin(a), np.argmin, (3, 4)),
    F("argmin_dim", lambda a: a.argmin(0), lambda a: a.argmin(0), (3, 4)),
    F("all", lambda a: (a > -1.5).all(), lambda a: np.all(a > -1.5), (3, 4)),
    F("all_dim", lambda a: (a > -1).all(1), lambda a: np.all(a > -1, 1), (3, 4)),
    F("any", lambda a: (a > 1.5).any(), lambda a: np.any(a > 1.5), (3, 4)),
    F("any_dim_keepdim", lambda a: (a > 1).any(0, keepdim=True),
      lambda a: np.any(a > 1, 0, keepdims=True), (3, 4)),
    F("prod", lambda a: a.prod(), np.prod, (3, 4)),
    F("prod_dim", lambda a: a.prod(1), lambda a: a.prod(1), (3, 4)),
    F("prod_keepdim", lambda a: a.prod(-1, keepdim=True), lambda a: a.prod(-1, keepdims=True),
      (2, 3, 4)),
    F("prod_zeros", lambda a: (a * T(_MASK)).prod(0), lambda a: (a * _MASK).prod(0), (3, 4)),
    F("norm", lambda a: a.norm(), lambda a: np.sqrt((a * a).sum()), (3, 4)),
    F("norm_dim", lambda a: a.norm(dim=-1, keepdim=True),
      lambda a: np.linalg.norm(a, axis=-1, keepdims=True), (2, 3, 4)),
    F("norm_p1", lambda a: a.norm(1, dim=0), lambda a: _np_norm(a, 1, 0), (3, 4)),
    F("norm_inf", lambda a: a.norm(float("inf")), lambda a: _np_norm(a, np.inf), (3, 4)),
    F("norm_neg_inf", lambda a: a.norm(-float("inf"), 1), lambda a: _np_norm(a, -np.inf, 1),
      (3, 4)),
    F("norm_p3", lambda a: a.norm(3, dim=(0, 2)), lambda a: _np_norm(a, 3, (0, 2)), (2, 3, 4)),
    F("norm_p0", lambda a: (a * T(_MASK)).norm(0), lambda a: float(_MASK.sum()), (3, 4)),
    F("logsumexp", lambda a: a.logsumexp(1), lambda a: _np_lse(a, 1), (3, 4)),
    F("logsumexp_tuple_keepdim", lambda a: a.logsumexp((0, -1), keepdim=True),
      lambda a: _np_lse(a, (0, 2), True), (2, 3, 4)),
    F("softmax", lambda a: a.softmax(-1), lambda a: _np_softmax(a, -1), (3, 4)),
    F("softmax_0", lambda a: ddp.softmax(a, 0), lambda a: _np_softmax(a, 0), (3, 4)),
    F("log_softmax", lambda a: a.log_softmax(1), lambda a: np.log(_np_softmax(a, 1)), (2, 3, 4)),
    F("cumsum", lambda a: a.cumsum(0), lambda a: np.cumsum(a, 0), (3, 4)),
    F("cumsum_neg", lambda a: ddp.cumsum(a, -1), lambda a: np.cumsum(a, -1), (2, 3, 4)),
    # ---- shapes
    F("reshape", lambda a: a.reshape(2, -1), lambda a: a.reshape(2, -1), (3, 4)),
    F("view", lambda a: a.view((4, 3)), lambda a: a.reshape(4, 3), (3, 4)),
    F("flatten", lambda a: a.flatten(), lambda a: a.ravel(), (2, 3, 4)),
    F("flatten_range", lambda a: a.flatten(1, 2), lambda a: a.reshape(2, 12), (2, 3, 4)),
    F("flatten_0dim", lambda a: a.flatten(), lambda a: a.reshape(1), ()),
    F("unflatten", lambda a: a.unflatten(-1, (2, 2)), lambda a: a.reshape(3, 2, 2), (3, 4)),
    F("squeeze", lambda a: a.squeeze(), np.squeeze, (1, 3, 1, 4)),
    F("squeeze_dim", lambda a: a.squeeze(-2), lambda a: a[:, :, 0], (3, 4, 1, 2)),
    F("squeeze_non_one", lambda a: a.squeeze(0), lambda a: a, (3, 4)),
    F("unsqueeze", lambda a: a.unsqueeze(-1), lambda a: a[..., None], (3, 4)),
    F("transpose", lambda a: a.transpose(-1, 0), lambda a: np.swapaxes(a, -1, 0), (2, 3, 4)),
    F("permute", lambda a: a.permute(1, 2, 0), lambda a: a.transpose(1, 2, 0), (2, 3, 4)),
    F("t", lambda a: a.t(), lambda a: a.T, (3, 4)),
    F("T", lambda a: a.T, lambda a: a.T, (2, 3, 4)),
    F("expand", lambda a: a.expand(2, 3, -1), lambda a: np.broadcast_to(a, (2, 3, 4)), (3, 4)),
    F("repeat", lambda a: a.repeat(2, 1, 3), lambda a: np.tile(a, (2, 1, 3)), (3, 4)),
    F("contiguous", lambda a: a.t().contiguous(), lambda a: a.T, (3, 4)),
    F("flip", lambda a: a.flip(0, 2), lambda a: np.flip(a, (0, 2)), (2, 3, 4)),
    F("einsum_trace", lambda a: ddp.einsum("ii", a), lambda a: np.einsum("ii", a), (3, 3)),
    F("einsum_transpose", lambda a: ddp.einsum("ijk->kji", a), lambda a: a.transpose(2, 1, 0),
      (2, 3, 4)),
    F("diagonal", lambda a: a.diagonal(1, 0, 2), lambda a: np.diagonal(a, 1, 0, 2), (3, 2, 4)),
    F("diag_vec", lambda a: ddp.diag(a, 1), lambda a: np.diag(a, 1), (3,)),
    F("diag_mat", lambda a: a.diag(-1), lambda a: np.diag(a, -1), (3, 4)),
    F("triu", lambda a: a.triu(-1), lambda a: np.triu(a, -1), (2, 3, 4)),
    F("tril", lambda a: ddp.tril(a, 1), lambda a: np.tril(a, 1), (3, 4)),
    F("roll", lambda a: a.roll(1, 1), lambda a: np.roll(a, 1, 1), (3, 4)),
    F("roll_multi", lambda a: a.roll((2, -1), (0, -1)), lambda a: np.roll(a, (2, -1), (0, 1)),
      (3, 4)),
    F("roll_flat", lambda a: a.roll(-5), lambda a: np.roll(a, -5), (3, 4)),
    F("cat", lambda a, b: ddp.cat([a, b], 1), lambda a, b: np.concatenate([a, b], 1),
      (3, 2), (3, 4)),
    F("cat_neg", lambda a, b: ddp.cat([a, b], -1), lambda a, b: np.concatenate([a, b], -1),
      (2, 3, 2), (2, 3, 1)),
    F("stack", lambda a, b: ddp.stack([a, b], -1), lambda a, b: np.stack([a, b], -1),
      (3, 4), (3, 4)),
    F("split", lambda a: a.split(2), lambda a: tuple(np.split(a, [2, 4])), (5, 3)),
    F("split_sizes", lambda a: a.split([1, 3], -1), lambda a: tuple(np.split(a, [1], -1)),
      (2, 4)),
    F("chunk", lambda a: a.chunk(3, 1), lambda a: tuple(np.split(a, [2, 4], 1)), (2, 5)),
    F("unbind", lambda a: a.unbind(1), lambda a: tuple(a[:, i] for i in range(4)), (3, 4)),
    F("narrow", lambda a: a.narrow(1, 1, 2), lambda a: a[:, 1:3], (3, 4)),
    F("narrow_neg_start", lambda a: a.narrow(-1, -2, 2), lambda a: a[:, 2:], (3, 4)),
    # ---- indexing
    F("getitem_basic", lambda a: a[1, ::-2, None, ...], lambda a: a[1, ::-2, None, ...],
      (2, 3, 4)),
    F("getitem_array_repeat", lambda a: a[[2, 0, 2], 1:], lambda a: a[[2, 0, 2], 1:], (3, 4)),
    F("getitem_tensor_pair", lambda a: a[T([0, 0]), T([3, 1])], lambda a: a[[0, 0], [3, 1]],
      (3, 4)),
    F("getitem_mask", lambda a: a[T(_MASK)], lambda a: a[_MASK], (3, 4)),
    F("setitem_mask", lambda a: _setitem(a, T(_MASK), 9.0), lambda a: _np_setitem(a, _MASK, 9.0),
      (3, 4)),
    F("setitem_slice", lambda a, v: _setitem(a, (slice(None), slice(1, 3)), v),
      lambda a, v: _np_setitem(a, (slice(None), slice(1, 3)), v), (3, 4), (2,)),
    F("gather", lambda a: a.gather(0, T(_IDX)), lambda a: np.take_along_axis(a, _IDX, 0), (3, 4)),
    F("gather_small_index", lambda a: a.gather(-1, T([[1, 0], [3, 3]])),
      lambda a: _np_gather(a, 1, np.array([[1, 0], [3, 3]])), (3, 4)),
    F("scatter", lambda a, s: a.scatter(1, T([[0, 2], [3, 1], [1, 0]]), s),
      lambda a, s: _np_scatter(a, 1, np.array([[0, 2], [3, 1], [1, 0]]), s), (3, 4), (3, 3)),
    F("scatter_value", lambda a: a.scatter(0, T([[2, 0, 1, 0]]), value=7.0),
      lambda a: _np_scatter(a, 0, np.array([[2, 0, 1, 0]]), np.full((1, 4), 7.0)), (3, 4)),
    F("scatter_add", lambda a, s: a.scatter_add(0, T(_IDX), s),
      lambda a, s: _np_scatter_add(a, 0, _IDX, s), (3, 4), (3, 4)),
    F("scatter_add_small_index", lambda a, s: a.scatter_add(1, T([[3, 3]]), s),
      lambda a, s: _np_scatter_add(a, 1, np.array([[3, 3]]), s), (3, 4), (2, 2)),
    F("index_select", lambda a: a.index_select(1, T([3, 0, 3])), lambda a: a[:, [3, 0, 3]],
      (3, 4)),
    F("index_select_0dim", lambda a: a.index_select(0, T(2)), lambda a: a[[2]], (3, 4)),
    F("index_add", lambda a, s: a.index_add(0, T([2, 0, 2]), s, alpha=2),
      lambda a, s: _np_index_add(a, 0, np.array([2, 0, 2]), 2 * s), (3, 4), (3, 4)),
    F("masked_fill", lambda a: a.masked_fill(T(_MASK), -1.0), lambda a: np.where(_MASK, -1.0, a),
      (3, 4)),
    F("masked_fill_bcast", lambda a: a.masked_fill(T([True, False, False, True]), 0.0),
      lambda a: np.where([True, False, False, True], 0.0, a), (3, 4)),
    # ---- matrix products
    F("matmul_1d_1d", lambda a, b: a @ b, np.matmul, (4,), (4,)),
    F("matmul_1d_2d", lambda a, b: a @ b, np.matmul, (3,), (3, 4)),
    F("matmul_2d_1d", lambda a, b: a @ b, np.matmul, (3, 4), (4,)),
    F("matmul_2d_2d", lambda a, b: a @ b, np.matmul, (2, 3), (3, 4)),
    F("matmul_1d_3d", lambda a, b: a @ b, np.matmul, (3,), (2, 3, 4)),
    F("matmul_3d_1d", lambda a, b: ddp.matmul(a, b), np.matmul, (2, 3, 4), (4,)),
    F("matmul_bcast_batch", lambda a, b: a @ b, np.matmul, (2, 1, 3, 4), (5, 4, 2)),
    F("mm", lambda a, b: ddp.mm(a, b), np.matmul, (2, 3), (3, 4)),
    F("bmm", lambda a, b: a.bmm(b), np.matmul, (2, 2, 3), (2, 3, 4)),
    F("dot", lambda a, b: ddp.dot(a, b), np.dot, (5,), (5,)),
    # ---- misc
    F("sum_to_size", lambda a: a.sum_to_size(3, 1), lambda a: a.sum((0, 2), keepdims=True)[0],
      (2, 3, 4)),
    F("clone", lambda a: a.clone(), np.copy, (3, 4)),
    F("to_float32", lambda a: a.to(ddp.float32), lambda a: a.astype(np.float32), (3, 4)),
    F("to_int64", lambda a: (a * 3).long(), lambda a: (a * 3).astype(np.int64), (3, 4)),
]


def _setitem(a, index, v):
    y = a.clone()
    y[index] = v
    return y


def _check(got, want, name):
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), name
        for g, w in zip(got, want):
            _check(g, w, name)
        return
    assert isinstance(got, ddp.Tensor), name
    want = np.asarray(want)
    assert tuple(got.shape) == want.shape, (name, tuple(got.shape), want.shape)
    assert got.dtype.np == want.dtype, (name, got.dtype, want.dtype)
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-14,
                                   err_msg=name)
    else:
        np.testing.assert_array_equal(got.detach().numpy(), want, err_msg=name)


@pytest.mark.parametrize("name,fn,ref,shapes,dom", CASES)
def test_forward_matches_numpy(name, fn, ref, shapes, dom):
    arrays = make_arrays(name, shapes, dom)
    got = fn(*[ddp.tensor(a, dtype=F64) for a in arrays])
    _check(got, ref(*[a.copy() for a in arrays]), name)


@pytest.mark.parametrize("name,fn,ref,shapes,dom", CASES)
def test_forward_same_under_requires_grad(name, fn, ref, shapes, dom):
    """Recording the graph must not change any value."""
    arrays = make_arrays(name, shapes, dom)
    got = fn(*[ddp.tensor(a, dtype=F64, requires_grad=True) for a in arrays])
    _check(got, ref(*[a.copy() for a in arrays]), name)


def test_table_names_are_unique():
    names = [c.values[0] for c in CASES]
    assert len(names) == len(set(names))


# --------------------------------------------------------------------------- functional forms

UNARY = """exp log log1p expm1 sqrt rsqrt reciprocal square abs neg sin cos tan tanh sigmoid relu
sign floor ceil trunc round frac sum mean var std amax amin argmax argmin prod norm all any
flatten squeeze t clone cumsum""".split()


@pytest.mark.parametrize("name", UNARY)
def test_functional_form_equals_method(name):
    x = ddp.tensor(np.random.default_rng(5).uniform(0.5, 2, (3, 4)), dtype=F64)
    args = (1,) if name == "cumsum" else ()
    a = getattr(ddp, name)(x, *args)
    b = getattr(x, name)(*args)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_functional_forms_with_dim_arguments():
    x = ddp.tensor(np.arange(24.0).reshape(2, 3, 4))
    assert ddp.sum(x, dim=1, keepdim=True).shape == (2, 1, 4)
    assert ddp.mean(x, (0, 2)).tolist() == x.numpy().mean((0, 2)).tolist()
    assert ddp.transpose(x, 0, 2).shape == (4, 3, 2)
    assert ddp.permute(x, (2, 0, 1)).shape == (4, 2, 3)
    assert ddp.reshape(x, (6, 4)).shape == (6, 4)
    assert ddp.unsqueeze(x, -1).shape == (2, 3, 4, 1)
    assert [t.shape[1] for t in ddp.split(x, 2, dim=1)] == [2, 1]
    assert len(ddp.chunk(x, 2, -1)) == 2
    assert ddp.max(x, 1).indices.tolist() == [[2] * 4] * 2
    assert ddp.clamp(x, max=3.0).max().item() == 3.0
    assert ddp.logsumexp(x, 0).shape == (3, 4)


# --------------------------------------------------------------------------- integer inputs

def test_integer_and_bool_reductions():
    i = ddp.tensor([[1, 2, 3], [4, 5, 6]], dtype=ddp.int32)
    assert i.sum().dtype == ddp.int64 and i.sum().item() == 21
    assert i.sum(0).tolist() == [5, 7, 9]
    assert i.prod().item() == 720
    assert i.max().item() == 6 and i.max(1).values.tolist() == [3, 6]
    assert i.max(1).values.dtype == ddp.int32 and i.max(1).indices.dtype == ddp.int64
    assert i.cumsum(1).dtype == ddp.int64 and i.cumsum(1).tolist() == [[1, 3, 6], [4, 9, 15]]
    b = ddp.tensor([[True, False], [True, True]])
    assert b.sum().dtype == ddp.int64 and b.sum().item() == 3
    assert b.all(1).tolist() == [False, True] and b.any().item() is True
    assert ddp.tensor([0, 3]).all().item() is False
    assert i.argmax().dtype == ddp.int64 and i.argmax().item() == 5
    with pytest.raises(RuntimeError, match="mean"):
        i.mean()


def test_masked_fill_keeps_the_dtype():
    i = ddp.tensor([1, 2, 3])
    out = i.masked_fill(ddp.tensor([True, False, True]), 2.5)
    assert out.dtype == ddp.int64 and out.tolist() == [2, 2, 2]  # PyTorch casts the value
    h = ddp.ones(2, dtype=ddp.float16).masked_fill(ddp.tensor([True, False]), 0.5)
    assert h.dtype == ddp.float16 and h.tolist() == [0.5, 1.0]
    b = ddp.tensor([True, False]).masked_fill(ddp.tensor([False, True]), True)
    assert b.dtype == ddp.bool and b.tolist() == [True, True]


def test_argmax_argmin_first_of_ties():
    x = ddp.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
    assert x.argmax(1).tolist() == [1, 0] and x.argmin(1).tolist() == [0, 2]
    assert x.argmax().item() == 1
    assert x.max(1).indices.tolist() == [1, 0]


def test_math_on_integer_tensors_gives_default_float():
    i = ddp.tensor([1, 2, 4])
    v = np.array([1.0, 2.0, 4.0])
    for name, ref in [("exp", np.exp), ("log", np.log), ("sqrt", np.sqrt), ("sin", np.sin),
                      ("tanh", np.tanh), ("sigmoid", _np_sigmoid), ("reciprocal", np.reciprocal),
                      ("rsqrt", lambda v: 1 / np.sqrt(v))]:
        out = getattr(i, name)()
        assert out.dtype == ddp.float32, name
        np.testing.assert_allclose(out.numpy(), ref(v), rtol=1e-6, err_msg=name)
    assert i.abs().dtype == ddp.int64 and (-i).dtype == ddp.int64
    assert i.clamp(2, 3).tolist() == [2, 2, 3] and i.clamp(2, 3).dtype == ddp.int64
    assert i.clamp(min=1.5).dtype == ddp.float32


def test_remainder_and_floordiv_follow_python_signs():
    a = ddp.tensor([5, -5, 5, -5])
    b = ddp.tensor([3, 3, -3, -3])
    assert (a % b).tolist() == [5 % 3, -5 % 3, 5 % -3, -5 % -3]
    assert (a // b).tolist() == [5 // 3, -5 // 3, 5 // -3, -5 // -3]
    assert (a % b).dtype == ddp.int64


def test_sigmoid_and_logsumexp_extremes():
    x = ddp.tensor([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=F64)
    with np.errstate(over="raise", invalid="raise"):
        s = x.sigmoid().numpy()
    np.testing.assert_allclose(s, [0.0, np.exp(-100.0), 0.5, 1.0, 1.0], rtol=1e-12, atol=0)
    assert ddp.tensor([1e4, 1e4]).logsumexp(0).item() == pytest.approx(1e4 + math.log(2))
    assert ddp.tensor([-1e4, -1e4], dtype=F64).logsumexp(0).item() == \
        pytest.approx(-1e4 + math.log(2), rel=1e-15)
    assert np.isfinite(ddp.tensor([[1e4, 0.0]]).softmax(1).numpy()).all()
    assert np.isfinite(ddp.tensor([[1e4, 0.0]]).log_softmax(1).numpy()).all()


@pytest.mark.parametrize("shape", [(128, 1024), (129, 1001), (70001,), (3, 100, 200)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_full_sum_of_a_large_array(shape, dtype):
    """A large contiguous float array's whole sum goes through BLAS in rows (ops.reduction's
    _blas_sum, the remainder summed apart): the float64 sum within the error of a pairwise
    sum; non-contiguous arrays, NaN and inf as NumPy's sum."""
    a = (np.random.default_rng(0).standard_normal(shape) + 1).astype(dtype)
    exact = a.astype(np.float64).sum()
    scale = np.abs(a).astype(np.float64).sum()
    got = ddp.tensor(a).sum()
    assert got.dtype == ddp.tensor(a).dtype and got.shape == ()
    assert abs(float(got) - exact) <= (1e-6 if dtype == np.float32 else 1e-14) * scale
    t = ddp.tensor(a.T.copy()).t() if a.ndim == 2 else ddp.tensor(a[::-1].copy()).flip(0)
    assert abs(float(t.sum()) - exact) <= (1e-6 if dtype == np.float32 else 1e-14) * scale
    for bad, want in ((np.nan, "nan"), (np.inf, "inf")):
        b = a.copy()
        b.flat[a.size // 2] = bad
        assert str(float(ddp.tensor(b).sum())) == want


def test_setitem_forward_variants():
    x = ddp.zeros(3, 4)
    x[1] = 1.0
    x[:, -1] = ddp.tensor([5.0, 6.0, 7.0])
    x[x > 6] = -1.0
    x[[0, 0], [0, 1]] = ddp.tensor([2.0, 3.0])
    assert x.tolist() == [[2, 3, 0, 5], [1, 1, 1, 6], [0, 0, 0, -1]]


# --------------------------------------------------------------------------- dtype promotion

PROMOTION = [  # (name, fn(module) that runs on ddp and torch alike, expected dtype)
    ("int_tensor+float_scalar", lambda m: m.tensor([1, 2]) + 2.5, "float32"),
    ("float_scalar*int_tensor", lambda m: 2.5 * m.tensor([1, 2]), "float32"),
    ("int/int", lambda m: m.tensor([1, 2]) / m.tensor([2, 4]), "float32"),
    ("int/int_scalar", lambda m: m.tensor([1, 2]) / 2, "float32"),
    ("int_scalar/int", lambda m: 2 / m.tensor([1, 2]), "float32"),
    ("int//int", lambda m: m.tensor([7, 2]) // m.tensor([2, 4]), "int64"),
    ("int32+int_scalar", lambda m: m.tensor([1], dtype=m.int32) + 3, "int32"),
    ("float32+float64", lambda m: m.ones(2) + m.ones(2, dtype=m.float64), "float64"),
    ("0dim_float64+float32", lambda m: m.tensor(2.0, dtype=m.float64) + m.ones(2), "float32"),
    ("float32*0dim_float64", lambda m: m.ones(2) * m.tensor(2.0, dtype=m.float64), "float32"),
    ("0dim_float64+int", lambda m: m.tensor(2.0, dtype=m.float64) + m.tensor([1, 2]), "float64"),
    ("0dim_int64+int32", lambda m: m.tensor(2) + m.tensor([1, 2], dtype=m.int32), "int32"),
    ("bool+int_scalar", lambda m: m.tensor([True, False]) + 1, "int64"),
    ("bool+int_tensor", lambda m: m.tensor([True, False]) + m.tensor([1, 2]), "int64"),
    ("bool+int32_tensor", lambda m: m.tensor([True]) + m.tensor([1], dtype=m.int32), "int32"),
    ("bool+float_scalar", lambda m: m.tensor([True]) + 1.5, "float32"),
    ("bool*bool", lambda m: m.tensor([True]) * m.tensor([False]), "bool"),
    ("float32+float_scalar", lambda m: m.ones(2) + 1e-3, "float32"),
    ("float16+float32", lambda m: m.ones(2, dtype=m.float16) + m.ones(2), "float32"),
    ("bfloat16*float_scalar", lambda m: m.ones(2, dtype=m.bfloat16) * 2.5, "bfloat16"),
    ("float_scalar**bfloat16", lambda m: 2.0 ** m.ones(2, dtype=m.bfloat16), "bfloat16"),
    ("int32*int64", lambda m: m.tensor([1], dtype=m.int32) * m.tensor([1]), "int64"),
    ("uint8+int8", lambda m: m.tensor([1], dtype=m.uint8) + m.tensor([1], dtype=m.int8), "int16"),
    ("int_tensor**float", lambda m: m.tensor([1, 2]) ** 0.5, "float32"),
    ("float_scalar**int_tensor", lambda m: 2.0 ** m.tensor([1, 2]), "float32"),
    ("where_float64_float_scalar", lambda m: m.where(m.tensor([True, False]),
                                                      m.ones(2, dtype=m.float64), 0.5), "float64"),
    ("where_two_floats", lambda m: m.where(m.tensor([True, False]), 1.0, 0.0), "float32"),
    ("where_two_ints", lambda m: m.where(m.tensor([True, False]), 1, 0), "int64"),
    ("maximum_int_float", lambda m: m.maximum(m.tensor([1, 5]), m.tensor([2.5, 1.0])), "float32"),
    ("clamp_int_float_bound", lambda m: m.tensor([1, 5]).clamp(min=2.5), "float32"),
    ("cat_mixed", lambda m: m.cat([m.ones(2), m.ones(2, dtype=m.float64)]), "float64"),
    ("sum_int32", lambda m: m.tensor([1], dtype=m.int32).sum(), "int64"),
    ("sum_bool", lambda m: m.tensor([True]).sum(), "int64"),
    ("exp_int", lambda m: m.tensor([1]).exp(), "float32"),
    ("mean_float16", lambda m: m.ones(2, dtype=m.float16).mean(), "float16"),
]


@pytest.mark.parametrize("name,fn,expected", PROMOTION, ids=[p[0] for p in PROMOTION])
def test_dtype_promotion(oracle, name, fn, expected):
    assert fn(ddp).dtype == getattr(ddp, expected), name  # the hard expectation
    assert oracle(lambda torch: str(fn(torch).dtype)) == f"torch.{expected}", name  # is torch's


def test_promotion_keeps_python_float_precision():
    x = ddp.tensor([1.0], dtype=F64)
    assert (x + 0.1).item() == 1.0 + 0.1
    assert (0.1 * x).item() == 0.1
    assert (x / 3.0).item() == 1.0 / 3.0


# --------------------------------------------------------------------------- bad input

def test_add_shape_mismatch_names_op_and_shapes():
    with pytest.raises(RuntimeError, match=r"add.*\(3,\).*\(4,\)"):
        ddp.ones(3) + ddp.ones(4)
    with pytest.raises(RuntimeError, match=r"mul.*\(2, 3\).*\(2,\)"):
        ddp.ones(2, 3) * ddp.ones(2)
    with pytest.raises(RuntimeError, match=r"sub.*\(3,\).*\(4,\)"):
        ddp.ones(3, requires_grad=True) - ddp.ones(4)


def test_matmul_shape_mismatch_says_NxM():
    with pytest.raises(RuntimeError, match="3x4 and 5x6"):
        ddp.ones(3, 4) @ ddp.ones(5, 6)
    with pytest.raises(RuntimeError, match="3x4 and 5x6"):
        ddp.mm(ddp.ones(3, 4), ddp.ones(5, 6))
    with pytest.raises(RuntimeError, match="matmul"):
        ddp.ones(3) @ ddp.ones(4)
    with pytest.raises(RuntimeError, match=r"\(2, 3, 4\).*\(3, 4, 2\)"):
        ddp.ones(2, 3, 4) @ ddp.ones(3, 4, 2)  # batch dims 2 and 3 don't broadcast
    with pytest.raises(RuntimeError):
        ddp.ones(2, 3).bmm(ddp.ones(3, 2))
    with pytest.raises(RuntimeError, match="1D"):
        ddp.dot(ddp.ones(2, 2), ddp.ones(2))


def test_matmul_dtype_mismatch_names_both_dtypes():
    with pytest.raises(RuntimeError, match=r"float32.*float64"):
        ddp.ones(2, 3) @ ddp.ones(3, 2, dtype=F64)
    with pytest.raises(RuntimeError, match=r"float64.*float32"):
        ddp.matmul(ddp.ones(2, 3, dtype=F64), ddp.ones(3))


def test_cat_stack_mismatch_errors():
    with pytest.raises(RuntimeError, match=r"cat.*Sizes of tensors must match.*\(2, 3\).*\(2, 4\)"):
        ddp.cat([ddp.ones(2, 3), ddp.ones(2, 4)])
    with pytest.raises(RuntimeError, match="same number of dimensions"):
        ddp.cat([ddp.ones(2, 3), ddp.ones(3)])
    with pytest.raises(RuntimeError, match="zero-dimensional"):
        ddp.cat([ddp.tensor(1.0), ddp.tensor(2.0)])
    with pytest.raises(RuntimeError, match="non-empty"):
        ddp.cat([])
    with pytest.raises(RuntimeError, match=r"stack.*\[2, 3\].*\[3, 2\]"):
        ddp.stack([ddp.ones(2, 3), ddp.ones(3, 2)])
    with pytest.raises(IndexError, match="Dimension out of range"):
        ddp.cat([ddp.ones(2), ddp.ones(2)], dim=1)


def test_other_bad_inputs():
    with pytest.raises(RuntimeError, match="invalid for input of size 12"):
        ddp.ones(3, 4).reshape(5, 3)
    with pytest.raises(IndexError, match="Dimension out of range"):
        ddp.ones(3, 4).sum(2)
    with pytest.raises(RuntimeError, match="where"):
        ddp.where(ddp.tensor([True, False, True]), ddp.ones(3), ddp.ones(4))
    with pytest.raises(RuntimeError, match="expand"):
        ddp.ones(3).expand(4)
    with pytest.raises(RuntimeError, match="gather"):
        ddp.ones(3, 4).gather(0, ddp.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="int64"):
        ddp.ones(3).index_select(0, ddp.tensor([0.0]))
    with pytest.raises(RuntimeError, match="split"):
        ddp.ones(5).split([2, 2])
    with pytest.raises(RuntimeError, match="boolean"):
        ddp.ones(3).masked_fill(ddp.tensor([1, 0, 1]), 0.0)
    with pytest.raises(RuntimeError, match="At least one"):
        ddp.ones(3).clamp()
    with pytest.raises(IndexError):
        ddp.ones(3, 4)[3]


@pytest.fixture
def on_cuda():
    ddp.set_default_device("cuda")
    yield
    ddp.set_default_device("cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name,fn,ref,shapes,dom", CASES)
def test_forward_matches_numpy_cuda(name, fn, ref, shapes, dom, on_cuda):
    """The same table on CuPy (results copied back to compare with NumPy)."""
    arrays = make_arrays(name, shapes, dom)
    got = fn(*[ddp.tensor(a, dtype=F64) for a in arrays])
    outputs = got if isinstance(got, (tuple, list)) else [got]
    assert all(t.device.type == "cuda" for t in outputs), name
    on_host = type(got)(t.cpu() for t in got) if isinstance(got, (tuple, list)) else got.cpu()
    _check(on_host, ref(*[a.copy() for a in arrays]), name)

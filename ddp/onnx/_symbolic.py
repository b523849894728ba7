"""What each traced operation becomes in ONNX: one converter per primitive op (``OP_CONVERTERS``,
keyed by the ``Op`` class), per array function (``FUNCTION_CONVERTERS``: comparisons,
arg-reductions) and per module that converts as a whole (``MODULE_CONVERTERS``: the RNNs).

A converter gets the :class:`~ddp.onnx._builder.GraphBuilder` ``g`` and the event ``ev`` and
adds nodes whose last outputs are named ``ev.outputs[i].name``. Composite layers need no entry:
they reach the trace as the primitives they are made of (``softsign`` is Abs, Add and Div).
"""
from __future__ import annotations

import math

import numpy as np

from ..ao.nn.quantized import dynamic as nnqd
from ..autograd.function import _CallUserBackward
from ..nn.functional import _activations as A
from ..nn.functional import _conv as C
from ..nn.functional import _embedding as EMB
from ..nn.functional import _linear as L
from ..nn.functional import _normalization as N
from ..nn.functional import _padding as PAD
from ..nn.functional import _pooling as P
from ..nn.rnn import GRU, LSTM, RNN
from ..ops import elementwise as E
from ..ops import reduction as R
from ..ops import shape as S
from ._tracer import Value

OP_CONVERTERS: dict = {}
FUNCTION_CONVERTERS: dict = {}
MODULE_CONVERTERS: dict = {}


def converts(*ops, table=OP_CONVERTERS):
    def register(fn):
        for op in ops:
            table[op] = fn
        return fn
    return register


def _out(ev, i=0):
    return ev.outputs[i].name


def _x(g, ev, i=0):
    """Positional input ``i`` as a name, in its own dtype."""
    v = ev.inputs[i]
    return g.name(v)


# --------------------------------------------------------------------------- elementwise

_BINARY = {E.Add: "Add", E.Sub: "Sub", E.Mul: "Mul", E.Div: "Div", E.Pow: "Pow",
           E.Maximum: "Max", E.Minimum: "Min"}


@converts(*_BINARY)
def _binary(g, ev):
    dtype = ev.outputs[0].dtype
    for a, b in zip(ev.inputs, ev.twin.inputs):
        g.same_scalar(a, b)
    a, b = (g.operand(x, dtype) for x in ev.inputs)
    g.node(_BINARY[ev.target], [a, b], [_out(ev)])


@converts(E.Remainder)
def _remainder(g, ev):
    dtype = ev.outputs[0].dtype
    a, b = (g.operand(x, dtype) for x in ev.inputs)
    if dtype.kind in "iu":  # ONNX Mod with fmod=0 is Python's % for integers
        g.node("Mod", [a, b], [_out(ev)], fmod=0)
        return
    floor = g.node("Floor", [g.node("Div", [a, b])])
    g.node("Sub", [a, g.node("Mul", [floor, b])], [_out(ev)])


@converts(E.FloorDivide)
def _floor_divide(g, ev):
    dtype = ev.outputs[0].dtype
    if dtype.kind == "f":
        a, b = (g.operand(x, dtype) for x in ev.inputs)
        g.node("Floor", [g.node("Div", [a, b])], [_out(ev)])
        return
    a, b = (g.operand(x, np.float64) for x in ev.inputs)  # exact below 2**53
    g.node("Cast", [g.node("Floor", [g.node("Div", [a, b])])], [_out(ev)],
           to=g.helper.np_dtype_to_tensor_dtype(dtype))


_UNARY = {E.Neg: "Neg", E.Exp: "Exp", E.Log: "Log", E.Sqrt: "Sqrt", E.Reciprocal: "Reciprocal",
          E.Abs: "Abs", E.Sin: "Sin", E.Cos: "Cos", E.Tanh: "Tanh", E.Sigmoid: "Sigmoid",
          E.Relu: "Relu", A.Erf: "Erf", A.Hardswish: "HardSwish", E.Clone: "Identity",
          S.ToDevice: "Identity"}


@converts(*_UNARY)
def _unary(g, ev):
    g.node(_UNARY[ev.target], [_x(g, ev)], [_out(ev)])


@converts(E.Log1p)
def _log1p(g, ev):
    x = _x(g, ev)
    g.node("Log", [g.node("Add", [x, g.scalar(1, ev.outputs[0].dtype)])], [_out(ev)])


@converts(E.Expm1)
def _expm1(g, ev):
    g.node("Sub", [g.node("Exp", [_x(g, ev)]), g.scalar(1, ev.outputs[0].dtype)], [_out(ev)])


@converts(E.Rsqrt)
def _rsqrt(g, ev):
    g.node("Reciprocal", [g.node("Sqrt", [_x(g, ev)])], [_out(ev)])


@converts(E.ZeroGrad)
def _piecewise_constant(g, ev):
    fn, x, out = g.static("fn"), _x(g, ev), _out(ev)
    if fn in ("sign", "floor", "ceil"):
        g.node(fn.capitalize(), [x], [out])
    elif fn == "trunc":
        g.node("Mul", [g.node("Sign", [x]), g.node("Floor", [g.node("Abs", [x])])], [out])
    else:  # round, half to even in NumPy and ONNX alike
        decimals = g.static("decimals")
        if not decimals:
            g.node("Round", [x], [out])
            return
        k = g.scalar(10.0 ** decimals, ev.outputs[0].dtype)
        g.node("Div", [g.node("Round", [g.node("Mul", [x, k])]), k], [out])


@converts(E.Clamp)
def _clamp(g, ev):
    dtype = ev.outputs[0].dtype
    lo, hi = g.static("lo"), g.static("hi")
    inputs = [_x(g, ev), "" if lo is None else g.operand(lo, dtype),
              "" if hi is None else g.operand(hi, dtype)]
    while inputs[-1] == "":
        inputs.pop()
    g.node("Clip", inputs, [_out(ev)])


@converts(A.Hardtanh)
def _hardtanh(g, ev):
    dtype = ev.outputs[0].dtype
    g.node("Clip", [_x(g, ev), g.scalar(g.static("min_val"), dtype),
                    g.scalar(g.static("max_val"), dtype)], [_out(ev)])


@converts(A.LeakyRelu)
def _leaky_relu(g, ev):
    g.node("LeakyRelu", [_x(g, ev)], [_out(ev)], alpha=float(g.static("negative_slope")))


@converts(A.Elu)
def _elu(g, ev):
    """ELU, SELU and CELU: ``scale * (x if x > 0 else alpha * (exp(input_scale * x) - 1))``."""
    alpha, scale, input_scale = (float(g.static(k)) for k in ("alpha", "scale", "input_scale"))
    x, out = _x(g, ev), _out(ev)
    if scale == 1 and input_scale == 1:
        g.node("Elu", [x], [out], alpha=alpha)
    elif input_scale == 1:
        g.node("Selu", [x], [out], alpha=alpha, gamma=scale)
    elif scale == 1 and math.isclose(input_scale * alpha, 1.0):
        g.node("Celu", [x], [out], alpha=alpha)
    else:
        dtype = ev.outputs[0].dtype
        neg = g.node("Mul", [g.node("Sub", [g.node("Exp", [g.node("Mul", [
            x, g.scalar(input_scale, dtype)])]), g.scalar(1, dtype)]),
            g.scalar(alpha * scale, dtype)])
        pos = g.node("Mul", [x, g.scalar(scale, dtype)])
        g.node("Where", [g.node("Greater", [x, g.scalar(0, dtype)]), pos, neg], [out])


@converts(A.Gelu)
def _gelu(g, ev):
    approximate, x, out = g.static("approximate"), _x(g, ev), _out(ev)
    if g.opset >= 20:
        g.node("Gelu", [x], [out], approximate=approximate)
        return
    dtype = ev.outputs[0].dtype
    c = lambda v: g.scalar(v, dtype)  # noqa: E731
    if approximate == "tanh":
        cube = g.node("Mul", [g.node("Mul", [x, x]), x])
        inner = g.node("Mul", [c(A._TANH_BETA), g.node("Add", [x, g.node("Mul", [
            c(A._TANH_KAPPA), cube])])])
        cdf = g.node("Add", [c(1), g.node("Tanh", [inner])])
    else:
        cdf = g.node("Add", [c(1), g.node("Erf", [g.node("Mul", [x, c(A._SQRT_HALF)])])])
    g.node("Mul", [g.node("Mul", [c(0.5), x]), cdf], [out])


@converts(A.Softplus)
def _softplus(g, ev):
    beta, threshold = float(g.static("beta")), g.static("threshold")
    dtype, x = ev.outputs[0].dtype, _x(g, ev)
    z = x if beta == 1 else g.node("Mul", [x, g.scalar(beta, dtype)])
    soft = g.node("Softplus", [z])
    if beta != 1:
        soft = g.node("Div", [soft, g.scalar(beta, dtype)])
    if threshold is None:
        g.node("Identity", [soft], [_out(ev)])
        return
    g.node("Where", [g.node("Greater", [z, g.scalar(threshold, dtype)]), x, soft], [_out(ev)])


@converts(E.Where)
def _where(g, ev):
    dtype = ev.outputs[0].dtype
    cond = ev.kwargs["cond"]
    c = g.operand(cond, np.bool_) if isinstance(cond, Value) else g.initializer(
        np.asarray(cond, dtype=bool), "cond")
    for a, b in zip(ev.inputs, ev.twin.inputs):
        g.same_scalar(a, b)
    a, b = (g.operand(x, dtype) for x in ev.inputs)
    g.node("Where", [c, a, b], [_out(ev)])


@converts(E.Cast)
def _cast(g, ev):
    g.node("Cast", [_x(g, ev)], [_out(ev)],
           to=g.helper.np_dtype_to_tensor_dtype(ev.outputs[0].dtype))


@converts(R.CumSum)
def _cumsum(g, ev):
    g.node("CumSum", [_x(g, ev), g.scalar(g.static("axis"), np.int64)], [_out(ev)])


# --------------------------------------------------------------------------- reductions

_REDUCE = {R.Sum: "ReduceSum", R.Mean: "ReduceMean", R.Prod: "ReduceProd", R.Norm2: "ReduceL2"}


@converts(*_REDUCE, R.AMax)
def _reduce(g, ev):
    op_type = _REDUCE.get(ev.target) or ("ReduceMin" if g.static("smallest") else "ReduceMax")
    x = _x(g, ev)
    if ev.target is R.Sum and ev.inputs[0].dtype != ev.outputs[0].dtype:
        x = g.cast(x, ev.outputs[0].dtype)  # sum(dtype=...), and integers summing as int64
    g.reduce(op_type, x, g.static("axis"), g.static("keepdims"), _out(ev))


@converts(R.MaxWithIndices)
def _max_with_indices(g, ev):
    axis, keep, smallest = g.static("axis"), g.static("keepdims"), g.static("smallest")
    x = _x(g, ev)
    g.reduce("ReduceMin" if smallest else "ReduceMax", x, [axis], keep, _out(ev, 0))
    g.node("ArgMin" if smallest else "ArgMax", [x], [_out(ev, 1)], axis=int(axis),
           keepdims=int(bool(keep)))


@converts(R.Softmax, R.LogSoftmax)
def _softmax(g, ev):
    g.node(ev.target.__name__, [_x(g, ev)], [_out(ev)], axis=int(g.static("dim")))


@converts("argmax", "argmin", table=FUNCTION_CONVERTERS)
def _arg_reduce(g, ev):
    dim, keep = g.static("dim"), g.static("keepdim")
    op_type = "ArgMax" if ev.target == "argmax" else "ArgMin"
    x, v = _x(g, ev), ev.inputs[0]
    if dim is None:
        flat = g.node(op_type, [g.node("Reshape", [x, g.ints([-1])])], axis=0, keepdims=0)
        shape = g.ints([1] * len(v.shape) if keep else [])
        g.node("Reshape", [flat, shape], [_out(ev)])
        return
    g.node(op_type, [x], [_out(ev)], axis=int(dim) % max(len(v.shape), 1),
           keepdims=int(bool(keep)))


# --------------------------------------------------------------------------- comparisons

_COMPARE = {"equal": "Equal", "greater": "Greater", "greater_equal": "GreaterOrEqual",
            "less": "Less", "less_equal": "LessOrEqual", "logical_and": "And",
            "logical_or": "Or", "logical_xor": "Xor", "not_equal": "Equal"}
_BITWISE = {"bitwise_and": ("And", "BitwiseAnd"), "bitwise_or": ("Or", "BitwiseOr"),
            "bitwise_xor": ("Xor", "BitwiseXor")}


@converts(*_COMPARE, *_BITWISE, table=FUNCTION_CONVERTERS)
def _compare(g, ev):
    ufunc = ev.target
    kinds = [np.dtype(x.dtype) for x in ev.inputs if isinstance(x, Value)]
    if ufunc.startswith("logical"):
        dtype = np.dtype(bool)
    elif ufunc in _BITWISE:
        dtype = ev.outputs[0].dtype
    else:  # compare in the common type, as NumPy does after ddp's promotion
        dtype = kinds[0] if len(kinds) == 1 else np.result_type(*kinds)
    a, b = (g.operand(x, dtype) for x in ev.inputs)
    if ufunc in _BITWISE:
        op_type = _BITWISE[ufunc][0 if dtype == np.bool_ else 1]
        g.node(op_type, [a, b], [_out(ev)])
    elif ufunc == "not_equal":
        g.node("Not", [g.node("Equal", [a, b])], [_out(ev)])
    else:
        g.node(_COMPARE[ufunc], [a, b], [_out(ev)])


@converts("invert", table=FUNCTION_CONVERTERS)
def _invert(g, ev):
    bool_input = ev.inputs[0].dtype == np.bool_
    g.node("Not" if bool_input else "BitwiseNot", [_x(g, ev)], [_out(ev)])


@converts("logical_not", table=FUNCTION_CONVERTERS)
def _logical_not(g, ev):
    g.node("Not", [g.operand(ev.inputs[0], np.bool_)], [_out(ev)])


# --------------------------------------------------------------------------- shapes

@converts(S.Reshape)
def _reshape(g, ev):
    v = ev.inputs[0]
    shape = g.shape_tensor(ev.kwargs["shape"], ev.twin.kwargs["shape"], [v], reshape_input=v)
    g.node("Reshape", [g.name(v), shape], [_out(ev)])


@converts(S.Expand)
def _expand(g, ev):
    v = ev.inputs[0]
    shape = g.shape_tensor(ev.kwargs["shape"], ev.twin.kwargs["shape"], [v])
    g.node("Expand", [g.name(v), shape], [_out(ev)])


@converts(S.Permute)
def _permute(g, ev):
    g.node("Transpose", [_x(g, ev)], [_out(ev)], perm=[int(a) for a in g.static("axes")])


@converts(S.Repeat)
def _repeat(g, ev):
    reps, x = g.static("reps"), _x(g, ev)
    extra = len(reps) - len(ev.inputs[0].shape)
    if extra:
        x = g.unsqueeze(x, list(range(extra)))
    g.node("Tile", [x, g.ints(reps)], [_out(ev)])


@converts(S.Concat)
def _concat(g, ev):
    dtype = ev.outputs[0].dtype
    g.node("Concat", [g.operand(x, dtype) for x in ev.inputs], [_out(ev)],
           axis=int(g.static("axis")))


@converts(S.Stack)
def _stack(g, ev):
    axis, dtype = int(g.static("axis")), ev.outputs[0].dtype
    parts = [g.unsqueeze(g.operand(x, dtype), [axis]) for x in ev.inputs]
    g.node("Concat", parts, [_out(ev)], axis=axis)


@converts(S.Split)
def _split(g, ev):
    sizes, axis, squeeze = g.static("sizes"), int(g.static("axis")), g.static("squeeze")
    x, outs = _x(g, ev), [o.name for o in ev.outputs]
    if len(sizes) == 1:
        g.node("Squeeze" if squeeze else "Identity",
               [x, g.ints([axis])] if squeeze else [x], outs)
        return
    pieces = outs if not squeeze else [g.fresh("piece") for _ in outs]
    g.node("Split", [x, g.ints(sizes)], pieces, axis=axis)
    if squeeze:
        for piece, out in zip(pieces, outs):
            g.node("Squeeze", [piece, g.ints([axis])], [out])


@converts(S.Getitem)
def _getitem(g, ev):
    """Basic indexing (ints, slices, None, ...) as Slice, Gather and Unsqueeze; one integer
    array index along one axis as Gather."""
    v, index = ev.inputs[0], g.static("index", "index")
    items = list(index) if isinstance(index, tuple) else [index]
    arrays = [i for i in items if isinstance(i, (Value, np.ndarray))]
    ints = [i for i in items if isinstance(i, (int, np.integer)) and not isinstance(i, bool)]
    if any(isinstance(i, Value) and i.dtype == np.bool_ for i in items) or any(
            isinstance(i, bool) for i in items):
        raise g.unsupported("boolean mask indexing has a data-dependent shape; use "
                            "masked_fill or where")
    if len(arrays) > 1 or (arrays and ints):
        raise g.unsupported("indexing with more than one integer array (or arrays mixed with "
                            "integers) is not supported; index one axis at a time")
    if Ellipsis in items:
        k = items.index(Ellipsis)
        used = sum(1 for i in items if i is not None and i is not Ellipsis)
        items[k:k + 1] = [slice(None)] * (len(v.shape) - used)
    starts, ends, axes, steps = [], [], [], []
    picks, new_axes, array_at = [], [], None
    axis = out_axis = 0
    for item in items:
        if item is None:
            new_axes.append(out_axis)
            out_axis += 1
            continue
        if isinstance(item, slice):
            if item != slice(None):
                step = 1 if item.step is None else int(item.step)
                starts.append((0 if step > 0 else -1) if item.start is None else int(item.start))
                ends.append((_INT64_MAX if step > 0 else -_INT64_MAX) if item.stop is None
                            else int(item.stop))
                axes.append(axis)
                steps.append(step)
            out_axis += 1
        elif isinstance(item, (Value, np.ndarray)):
            array_at = (axis, item)
            out_axis += len(item.shape)
        else:
            picks.append((axis, int(item)))
        axis += 1
    x = g.name(v)
    if axes:
        x = g.node("Slice", [x, g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps)])
    for a, i in reversed(picks):  # a scalar index drops its axis
        x = g.node("Gather", [x, g.scalar(i, np.int64)], axis=a)
    if array_at is not None:
        a, idx = array_at
        name = g.name(idx) if isinstance(idx, Value) else g.initializer(
            np.asarray(idx, dtype=np.int64), "index")
        x = g.node("Gather", [x, name], axis=a)
    if new_axes:
        x = g.unsqueeze(x, new_axes)
    g.node("Identity", [x], [_out(ev)])


_INT64_MAX = np.iinfo(np.int64).max


@converts(S.Gather)
def _gather(g, ev):
    index = ev.kwargs["index"]
    name = g.name(index) if isinstance(index, Value) else g.initializer(index, "index")
    g.node("GatherElements", [_x(g, ev), name], [_out(ev)], axis=int(g.static("axis")))


@converts(S.Matmul)
def _matmul(g, ev):
    dtype = ev.outputs[0].dtype
    g.node("MatMul", [g.operand(x, dtype) for x in ev.inputs], [_out(ev)])


@converts(EMB.Embedding)
def _embedding(g, ev):
    indices = ev.kwargs["indices"]
    g.node("Gather", [_x(g, ev), g.name(indices)], [_out(ev)], axis=0)


@converts(PAD.ConstantPadNd)
def _constant_pad(g, ev):
    pads, value = g.static("pads"), g.static("value")
    onnx_pads = [int(a) for a, _ in pads] + [int(b) for _, b in pads]
    g.node("Pad", [_x(g, ev), g.ints(onnx_pads), g.scalar(value, ev.outputs[0].dtype)],
           [_out(ev)], mode="constant")


@converts(PAD.IndexPad)
def _index_pad(g, ev):
    x = _x(g, ev)
    for axis, idx in g.static("indices"):
        x = g.node("Gather", [x, g.initializer(np.asarray(idx, dtype=np.int64), "pad_index")],
                   axis=int(axis))
    g.node("Identity", [x], [_out(ev)])


# --------------------------------------------------------------------------- layers

@converts(L.LinearOp)
def _linear(g, ev):
    x, w, b = ev.inputs
    names = [g.name(x), g.name(w)] + ([] if b is None else [g.name(b)])
    if len(x.shape) == 2:
        g.node("Gemm", names, [_out(ev)], transB=1)
        return
    y = g.node("MatMul", [names[0], g.node("Transpose", [names[1]], perm=[1, 0])])
    g.node("Add" if b is not None else "Identity", [y] + names[2:], [_out(ev)])


def _conv_attrs(g, w):
    stride, pads, dilation, groups = g.static("geom", "stride/padding/dilation/groups")
    return dict(kernel_shape=[int(k) for k in w.shape[2:]], strides=[int(s) for s in stride],
                pads=[int(p[0]) for p in pads] + [int(p[1]) for p in pads],
                dilations=[int(d) for d in dilation], group=int(groups))


@converts(C.Convolution)
def _conv(g, ev):
    x, w, b = ev.inputs
    names = [g.name(x), g.name(w)] + ([] if b is None else [g.name(b)])
    g.node("Conv", names, [_out(ev)], **_conv_attrs(g, w))


@converts(C.ConvolutionTranspose)
def _conv_transpose(g, ev):
    x, w, b = ev.inputs
    attrs = _conv_attrs(g, w)
    out = g.static("out", "output size")
    base = [(x.shape[2 + a] - 1) * attrs["strides"][a] - attrs["pads"][a] - attrs["pads"][a + 2]
            + attrs["dilations"][a] * (w.shape[2 + a] - 1) + 1 for a in range(2)]
    attrs["output_padding"] = [int(o - s) for o, s in zip(out, base)]
    names = [g.name(x), g.name(w)] + ([] if b is None else [g.name(b)])
    g.node("ConvTranspose", names, [_out(ev)], **attrs)


@converts(P.MaxPool2DWithIndices)
def _max_pool(g, ev):
    if g.static("return_indices"):
        raise g.unsupported("max pooling with return_indices=True (ONNX numbers the indices "
                            "differently)")
    pads = g.static("pads")
    g.node("MaxPool", [_x(g, ev)], [_out(ev)], kernel_shape=list(g.static("kernel")),
           strides=list(g.static("stride")), dilations=list(g.static("dilation")),
           pads=[int(p[0]) for p in pads] + [int(p[1]) for p in pads])


@converts(P.AvgPool2D)
def _avg_pool(g, ev):
    """AveragePool over the zero-padded input, rescaled where PyTorch's divisor differs
    (``count_include_pad=False``, ceil_mode windows, ``divisor_override``)."""
    kernel, pads, divisor = g.static("kernel"), g.static("pads"), g.static("divisor")
    dtype = ev.outputs[0].dtype
    y = g.node("AveragePool", [_x(g, ev)], kernel_shape=list(kernel),
               strides=list(g.static("stride")), count_include_pad=1,
               pads=[int(p[0]) for p in pads] + [int(p[1]) for p in pads])
    area = kernel[0] * kernel[1]
    divisor = divisor.array if isinstance(divisor, Value) else divisor
    factor = area / np.asarray(divisor, dtype=np.float64)
    if np.all(factor == 1):
        g.node("Identity", [y], [_out(ev)])
        return
    g.node("Mul", [y, g.initializer(factor.astype(dtype), "avg_pool_rescale")], [_out(ev)])


@converts(N.NativeBatchNorm, N.NativeLayerNorm, N.NativeGroupNorm)
def _normalize(g, ev):
    """Batch norm with running statistics becomes BatchNormalization, layer norm
    LayerNormalization (opset 17+); group norm (and batch statistics in general) the moments
    written out."""
    x, weight, bias = ev.inputs
    mean, invstd = ev.kwargs["mean"], ev.kwargs["invstd"]
    group_shape = ev.kwargs["group_shape"]  # holds the batch size: follows dynamic axes below
    axes, affine = g.static("axes"), g.static("affine_shape")
    batch_stats, eps = g.static("batch_stats"), float(g.static("eps"))
    dtype, out = ev.outputs[0].dtype, _out(ev)
    channels = int(np.prod(affine))
    ones = lambda: g.initializer(np.ones(channels, dtype), "ones")  # noqa: E731
    zeros = lambda: g.initializer(np.zeros(channels, dtype), "zeros")  # noqa: E731
    whole = list(group_shape) == list(x.shape)
    if not batch_stats and whole and len(affine) >= 2 and affine[1] == channels:
        # running statistics: var from invstd in float64 (relative error ~1e-7)
        m = np.asarray(mean.array, np.float64).reshape(-1)
        var = 1.0 / np.asarray(invstd.array, np.float64).reshape(-1) ** 2 - eps
        g.node("BatchNormalization", [
            g.name(x), ones() if weight is None else g.name(weight),
            zeros() if bias is None else g.name(bias),
            g.initializer(m.astype(dtype), mean.name + "_mean"),
            g.initializer(np.maximum(var, 0).astype(dtype), mean.name + "_var")],
            [out], epsilon=eps)
        return
    trailing = tuple(axes) == tuple(range(len(x.shape) - len(axes), len(x.shape)))
    if batch_stats and whole and trailing and tuple(affine) == tuple(x.shape[-len(axes):]) \
            and g.opset >= 17:
        scale = g.initializer(np.ones(affine, dtype), "ones") if weight is None else g.name(weight)
        inputs = [g.name(x), scale] + ([] if bias is None else [g.name(bias)])
        g.node("LayerNormalization", inputs, [out], axis=int(axes[0]), epsilon=eps)
        return
    xr = g.name(x)
    if not whole:
        twin_group = ev.twin.kwargs["group_shape"]
        xr = g.node("Reshape", [xr, g.shape_tensor(group_shape, twin_group, [x],
                                                   reshape_input=x)])
    if batch_stats:
        m = g.reduce("ReduceMean", xr, axes, True)
        centred = g.node("Sub", [xr, m])
        var = g.reduce("ReduceMean", g.node("Mul", [centred, centred]), axes, True)
        xhat = g.node("Div", [centred, g.node("Sqrt", [g.node("Add", [
            var, g.scalar(eps, dtype)])])])
    else:
        xhat = g.node("Mul", [g.node("Sub", [xr, g.name(mean)]), g.name(invstd)])
    if not whole:
        xhat = g.node("Reshape", [xhat, g.node("Shape", [g.name(x)])])
    y = xhat
    if weight is not None:
        y = g.node("Mul", [y, g.node("Reshape", [g.name(weight), g.ints(affine)])])
    if bias is not None:
        y = g.node("Add", [y, g.node("Reshape", [g.name(bias), g.ints(affine)])])
    g.node("Identity", [y], [out])


@converts(_CallUserBackward)
def _custom_function(g, ev):  # pragma: no cover - custom Functions do not reach apply
    raise g.unsupported("custom autograd.Function")


# --------------------------------------------------------------------------- recurrent layers

# ONNX's gate order against PyTorch's: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,n
_GATE_ORDER = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN_TANH": (0,), "RNN_RELU": (0,)}


def _gates(array, mode):
    blocks = np.split(np.asarray(array), len(_GATE_ORDER[mode]), axis=0)
    return np.concatenate([blocks[i] for i in _GATE_ORDER[mode]], axis=0)


@converts(LSTM, GRU, RNN, table=MODULE_CONVERTERS)
def _rnn(g, ev):
    """One ONNX LSTM/GRU/RNN node per layer (both directions in one), in PyTorch's layout:
    (L, N, H_in) input, or batch_first, or unbatched (L, H_in)."""
    module = ev.target
    if module.proj_size:
        raise g.unsupported("LSTM with proj_size (ONNX's LSTM has no projection)")
    args, kwargs = ev.inputs
    x = args[0] if args else kwargs["input"]
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    mode, hidden, dirs = module.mode, module.hidden_size, 2 if module.bidirectional else 1
    lstm = mode == "LSTM"
    states = None if hx is None else (tuple(hx) if lstm else (hx,))
    batched = len(x.shape) == 3
    seq = g.name(x)
    if not batched:
        seq = g.unsqueeze(seq, [1])
        states = None if states is None else tuple(g.unsqueeze(g.name(s), [1]) for s in states)
    else:
        if module.batch_first:
            seq = g.node("Transpose", [seq], perm=[1, 0, 2])
        states = None if states is None else tuple(g.name(s) for s in states)
    op_type = {"LSTM": "LSTM", "GRU": "GRU"}.get(mode, "RNN")
    attrs = dict(hidden_size=hidden, direction="bidirectional" if dirs == 2 else "forward")
    if mode == "GRU":
        attrs["linear_before_reset"] = 1  # PyTorch applies r after W_hn h + b_hn
    if mode == "RNN_RELU":
        attrs["activations"] = ["Relu"] * dirs
    finals = [[] for _ in range(2 if lstm else 1)]
    dtype = np.dtype(ev.outputs[0].dtype)
    for layer in range(module.num_layers):
        ws, rs, bs = [], [], []
        for d in range(dirs):
            w_ih, w_hh, b_ih, b_hh, _ = (None if p is None else p._data
                                         for p in module._weights(layer, d))
            ws.append(_gates(w_ih, mode))
            rs.append(_gates(w_hh, mode))
            zeros = np.zeros(w_ih.shape[0], w_ih.dtype)
            bs.append(np.concatenate([_gates(zeros if b_ih is None else b_ih, mode),
                                      _gates(zeros if b_hh is None else b_hh, mode)]))
        prefix = f"{mode.lower()}_l{layer}"
        inputs = [seq, g.initializer(np.stack(ws).astype(dtype), prefix + "_W"),
                  g.initializer(np.stack(rs).astype(dtype), prefix + "_R"),
                  g.initializer(np.stack(bs).astype(dtype), prefix + "_B"), ""]
        if states is not None:
            lo, hi = layer * dirs, (layer + 1) * dirs
            for s in states:
                inputs.append(g.node("Slice", [s, g.ints([lo]), g.ints([hi]), g.ints([0])]))
        while inputs[-1] == "":
            inputs.pop()
        outs = g.node(op_type, inputs, n_out=3 if lstm else 2, **attrs)
        y = outs[0]  # (L, dirs, N, H) -> (L, N, dirs * H)
        y = g.node("Transpose", [y], perm=[0, 2, 1, 3])
        seq = g.node("Reshape", [y, g.ints([0, 0, -1])])
        for k in range(len(finals)):
            finals[k].append(outs[1 + k])
    hiddens = [f[0] if len(f) == 1 else g.node("Concat", f, axis=0) for f in finals]
    out = seq
    if not batched:
        out = g.squeeze(out, [1])
        hiddens = [g.squeeze(h, [1]) for h in hiddens]
    elif module.batch_first:
        out = g.node("Transpose", [out], perm=[1, 0, 2])
    for value, name in zip(ev.outputs, [out] + hiddens):
        g.node("Identity", [name], [value.name])


# --------------------------------------------------------------------------- attention

def _attention(g, ev):
    """The fused ``softmax(q kᵀ · scale + bias) v`` op (F.scaled_dot_product_attention, and
    through it nn.MultiheadAttention and the Transformer layers), written out: MatMul, Mul, Add,
    the causal mask, a softmax whose fully masked rows give zeros (PyTorch's), MatMul."""
    q, k, v, bias = ev.inputs[:4]
    if ev.kwargs.get("keep") is not None:
        raise g.unsupported("attention dropout in training mode; export in eval mode")
    scale, causal, safe = float(g.static("scale")), g.static("causal"), g.static("safe")
    dtype = ev.outputs[0].dtype
    rank = len(k.shape)
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    s = g.node("MatMul", [g.name(q), g.node("Transpose", [g.name(k)], perm=perm)])
    s = g.node("Mul", [s, g.scalar(scale, dtype)])
    masked = causal or bias is not None
    if bias is not None:
        s = g.node("Add", [s, g.operand(bias, dtype)])
    if causal:
        L, S = q.shape[-2], k.shape[-2]
        g.same_scalar(L, q.twin.shape[-2])
        g.same_scalar(S, k.twin.shape[-2])
        upper = g.initializer(np.triu(np.ones((L, S), bool), 1), "causal_mask")
        s = g.node("Where", [upper, g.scalar(-np.inf, dtype), s])
    if masked and safe:  # rows masked everywhere: weights 0, not NaN
        m = g.reduce("ReduceMax", s, [-1], True)
        m = g.node("Where", [g.node("IsInf", [m], detect_positive=0), g.scalar(0, dtype), m])
        e = g.node("Exp", [g.node("Sub", [s, m])])
        d = g.reduce("ReduceSum", e, [-1], True)
        d = g.node("Where", [g.node("Equal", [d, g.scalar(0, dtype)]), g.scalar(1, dtype), d])
        p = g.node("Div", [e, d])
    else:
        p = g.node("Softmax", [s], axis=-1)
    g.node("MatMul", [p, g.name(v)], [_out(ev)])
    if len(ev.outputs) > 1:  # need_weights
        g.node("Identity", [p], [_out(ev, 1)])


# ops of layers that may not be in this build yet, by their qualified class name
NAMED_OP_CONVERTERS = {
    "ddp.nn.functional._attention.ScaledDotProductAttention": _attention,
}


def _quantized(g, ev):
    raise g.unsupported("dynamically quantized layers compute outside ddp's ops; export the "
                        "float model (onnxruntime.quantization.quantize_dynamic quantizes the "
                        "exported file)")


for _cls in (nnqd.Linear, nnqd.LSTM, nnqd.GRU):
    MODULE_CONVERTERS[_cls] = _quantized


def convert(g, ev):
    """Add the nodes of one event."""
    g.event = ev
    if ev.kind == "op":
        fn = OP_CONVERTERS.get(ev.target) or NAMED_OP_CONVERTERS.get(
            f"{ev.target.__module__}.{ev.target.__qualname__}")
    elif ev.kind == "module":
        fn = MODULE_CONVERTERS.get(type(ev.target))
    else:
        fn = FUNCTION_CONVERTERS.get(ev.target)
    if fn is None:
        raise g.unsupported(_hint(ev))
    fn(g, ev)


def _hint(ev):
    if ev.kind == "op" and ev.target.__module__.startswith("ddp.nn.functional._losses"):
        return "losses are not part of an exported inference graph; export the model alone"
    return "no ONNX conversion is registered for it"

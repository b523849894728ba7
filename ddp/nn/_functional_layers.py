"""Functional forms of the layers: linear, convolution, pooling, normalisation, dropout,
embedding, padding and resampling (``ddp.nn.functional`` re-exports them).

Convolution and pooling are fused ops built from a few large array operations: an im2col view
of the (padded) input made with ``as_strided`` — element ``[n, c, i, j, oh, ow]`` is
``x[n, c, oh*stride + i*dilation, ow*stride + j*dilation]`` —, one batched matrix product, and
for the adjoint (col2im) one strided add per kernel position, never a loop over pixels.
Normalisations are one fused op with the closed-form backward. All of them also have
higher-order gradients (``create_graph=True``): the convolution ops differentiate into one
another, pooling backward runs through :class:`Col2Im`, and the normalisations recompute their
statistics with recorded ops.

Example:
    >>> import ddp.nn.functional as F
    >>> x = ddp.randn(2, 3, 8, 8)
    >>> F.conv2d(x, ddp.randn(4, 3, 3, 3), padding=1).shape
    ddp.Size([2, 4, 8, 8])
    >>> F.max_pool2d(x, 2).shape
    ddp.Size([2, 3, 4, 4])
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend
from ..amp.autocast_mode import autocast_call as _autocast_call, state as _autocast
from ..autograd.grad_mode import no_grad
from ..autograd.graph import Op
from ..ops.shape import scatter_into_zeros
from ..tensor import Tensor

__all__ = ["linear", "conv1d", "conv2d", "conv_transpose2d", "max_pool1d", "max_pool2d",
           "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
           "batch_norm", "layer_norm", "group_norm", "dropout", "dropout1d", "dropout2d",
           "embedding", "one_hot", "pad", "normalize", "unfold", "fold", "interpolate"]


# =========================================================================== argument helpers

def _ntuple(value, n, what="kernel_size"):
    """``value`` as an ``n``-tuple of ints (an int is repeated)."""
    if isinstance(value, numbers.Integral):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{what} must be an int or a tuple of {n} ints, got {value}")
    return value


def _shape(t):
    return tuple(t.shape)


def _batched(name, input, ndim, spatial):
    """``input`` with a batch dimension (an unbatched input gets one), and whether it was added.

    ``ndim`` is the batched rank; ``spatial`` names the dimensions for the error message."""
    if input.ndim == ndim:
        return input, False
    if input.ndim == ndim - 1:
        return input.unsqueeze(0), True
    raise RuntimeError(f"{name}: expected {ndim - 1}-D (unbatched) or {ndim}-D (batched) input "
                       f"of shape (N, C, {spatial}), got input of shape {_shape(input)}")


def _same_dtype(name, *tensors):
    dts = {t.dtype for t in tensors if t is not None}
    if len(dts) > 1:
        raise RuntimeError(f"{name}: input and parameters must have the same dtype, got "
                           + ", ".join(d.name for d in sorted(dts, key=lambda d: d.name)))


# =========================================================================== window helpers
# Arrays here are (N, C, H, W); ``kernel``, ``stride``, ``dilation`` and ``out`` are pairs.

def _windows(x, kernel, stride, dilation, out):
    """The im2col view (no copy) of ``x``: shape (N, C, kh, kw, OH, OW)."""
    xp = backend.get_array_module(x)
    sn, sc, sh, sw = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, x.shape[:2] + tuple(kernel) + tuple(out),
        (sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1]))


def _window(x, i, j, stride, dilation, out):
    """The (N, C, OH, OW) view of ``x`` that kernel position (i, j) reads."""
    h0, w0 = i * dilation[0], j * dilation[1]
    return x[:, :, h0:h0 + stride[0] * (out[0] - 1) + 1:stride[0],
             w0:w0 + stride[1] * (out[1] - 1) + 1:stride[1]]


def _col2im(cols, shape, stride, dilation):
    """Adjoint of :func:`_windows`: add ``cols`` (N, C, kh, kw, OH, OW) into zeros of ``shape``
    (N, C, H, W). Trailing axes ride along: (N, C, kh, kw, OH, OW, D) into (N, C, H, W, D)."""
    xp = backend.get_array_module(cols)
    out = xp.zeros(shape, dtype=cols.dtype)
    kh, kw, oh, ow = cols.shape[2:6]
    for i in range(kh):
        for j in range(kw):
            _window(out, i, j, stride, dilation, (oh, ow))[...] += cols[:, :, i, j]
    return out


def _pad_hw(x, pads, value=0):
    """``x`` (N, C, H, W) padded by ``pads`` = ((top, bottom), (left, right)) with ``value``."""
    if not any(pads[0]) and not any(pads[1]):
        return x
    xp = backend.get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0)) + tuple(pads), constant_values=value)


def _crop_hw(x, pads):
    """Undo :func:`_pad_hw`."""
    (t, b), (l, r) = pads
    return x[:, :, t:x.shape[2] - b, l:x.shape[3] - r]


def _out_size(size, kernel, stride, dilation, pad_total):
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


# =========================================================================== linear

def linear(input, weight, bias=None):
    """``input @ weight.T + bias``; ``weight`` is (out_features, in_features).

    Example:
        >>> F.linear(ddp.ones(2, 3), ddp.ones(4, 3)).shape
        ddp.Size([2, 4])
    """
    if _autocast.on:  # autocast (ddp.amp): one thread-local flag read when off
        return _autocast_call("linear", linear, input, weight, bias)
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise RuntimeError(f"linear: expected input, weight and bias of one dtype, got input "
                           f"{input.dtype.name}, weight {weight.dtype.name}"
                           + (f", bias {bias.dtype.name}" if bias is not None else ""))
    if input.ndim == 0 or input.shape[-1] != weight.shape[-1]:
        raise RuntimeError(f"linear: input of shape {tuple(input.shape)} does not fit weight of "
                           f"shape {tuple(weight.shape)} (in_features={weight.shape[-1]})")
    return LinearOp.apply(input, weight, bias)


class LinearOp(Op):
    """``x @ w.T + b`` as one node. The weight's gradient is computed as ``g.T @ x``, directly in
    the weight's (out, in) layout: through ``matmul(x, w.t())`` it would arrive transposed and
    cost a strided copy of the whole weight every step (6 ms of a 20 ms MLP step)."""

    @staticmethod
    def forward(ctx, x, w, b=None):
        ctx.save_for_backward(x, w)
        out = x @ w.T
        if out.dtype != x.dtype:  # bfloat16 products come back as float32: round them
            out = out.astype(x.dtype)
        if b is not None:
            out += b
        return out

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        xp = ctx.xp
        need_x, need_w, need_b = ctx.needs_input_grad
        rows = g.reshape((-1, g.shape[-1]))
        gx = xp.matmul(g, w) if need_x else None
        gw = xp.matmul(xp.swapaxes(rows, 0, 1), x.reshape((-1, x.shape[-1]))) if need_w else None
        gb = rows.sum(axis=0) if need_b else None
        return gx, gw, gb


# =========================================================================== convolution

# im2col with K = C/groups*kh*kw: the patches of the padded input are an (OH*OW, K) matrix
# per sample and group. The forward is one product per sample that writes (N, O, OH, OW)
# directly; the weight gradient is ONE product ``g (O, N*OH*OW) @ patches (N*OH*OW, K)`` where
# the patches are channels last (no per-sample products to sum); the input gradient's columns
# come from matrix products too, then col2im adds them back. Copies and adds run fastest on
# long runs of contiguous values, so each step picks channels last (K ordered (kh, kw, C/G);
# runs of kw*C/G) or channels first ((C/G, kh, kw); runs of OW) by :func:`_channels_last`.
# Products get operands with a unit stride in one of their last two axes, so NumPy hands them
# to BLAS (other strides, e.g. a gradient broadcast from a sum, fall back to a slow loop).

def _channels_last(cg, kernel, stride, dilation, out):
    """Whether the longer runs of contiguous values are channels last: kw*C/G (C/G when
    dilated) against OW (1 when strided; the whole image for a 1x1 kernel at stride 1, whose
    patches are the input itself). Forward + weight gradient of a 3x3 conv at batch 128,
    16->32 on 14x14: 7.4 ms channels last vs 8.9; 1->16 on 28x28: 1.7 ms channels first vs 3.9."""
    if tuple(kernel) == (1, 1) and tuple(stride) == (1, 1):
        return False
    return cg * (kernel[1] if dilation[1] == 1 else 1) >= (out[1] if stride[1] == 1 else 1)


def _patches(x, pads, kernel, groups, stride, dilation, out):
    """The patches of ``x`` (N, C, H, W) padded by ``pads``, as an (N, G, OH*OW, K/G) view,
    and whether they are channels last (then the (G, N*OH*OW, K/G) matrix is contiguous)."""
    xp = backend.get_array_module(x)
    as_strided = xp.lib.stride_tricks.as_strided
    (s0, s1), (d0, d1) = stride, dilation
    n, c = x.shape[:2]
    cg, k, l = c // groups, c // groups * kernel[0] * kernel[1], out[0] * out[1]
    if _channels_last(cg, kernel, stride, dilation, out):
        (t, b), (lft, r) = pads
        xh = xp.zeros((n, x.shape[2] + t + b, x.shape[3] + lft + r, c), dtype=x.dtype)
        xh[:, t:t + x.shape[2], lft:lft + x.shape[3]] = x.transpose(0, 2, 3, 1)  # padded NHWC
        bn, bh, bw, bc = xh.strides
        cols = as_strided(xh, (groups, n) + tuple(out) + tuple(kernel) + (cg,),
                          (bc * cg, bn, bh * s0, bw * s1, bh * d0, bw * d1, bc))
        return cols.reshape(groups, n, l, k).transpose(1, 0, 2, 3), True
    x = _pad_hw(x, pads)
    bn, bc, bh, bw = x.strides
    cols = as_strided(x, (n, groups, cg) + tuple(kernel) + tuple(out),
                      (bn, bc * cg, bc, bh * d0, bw * d1, bh * s0, bw * s1))
    return xp.swapaxes(cols.reshape(n, groups, k, l), 2, 3), False


def _conv_matmul(x, w, geom, out):
    """Convolution of ``x`` (N, C, H, W) with ``w`` (O, C/groups, kh, kw): (N, O, OH, OW)."""
    stride, pads, dilation, groups = geom
    xp = backend.get_array_module(x, w)
    cols, last = _patches(x, pads, w.shape[2:], groups, stride, dilation, out)
    w = xp.ascontiguousarray(w.transpose(0, 2, 3, 1) if last else w)  # K ordered as cols'
    o = w.shape[0]
    # into a C-ordered (N, G, O/G, OH*OW) output: matmul would follow the patches' layout
    y = xp.empty((x.shape[0], groups, o // groups, out[0] * out[1]),
                 dtype=xp.result_type(x.dtype, w.dtype))
    xp.matmul(w.reshape(groups, o // groups, -1), xp.swapaxes(cols, 2, 3), out=y)
    return y.reshape(x.shape[0], o, out[0], out[1])


def _conv_weight_grad(g, x, w_shape, geom):
    """Gradient of :func:`_conv_matmul` in ``w`` (of shape ``w_shape``)."""
    stride, pads, dilation, groups = geom
    xp = backend.get_array_module(g, x)
    n, o, oh, ow = g.shape
    cols, last = _patches(x, pads, w_shape[2:], groups, stride, dilation, (oh, ow))
    if not last:  # per-sample products, summed (a copy into one matrix costs more)
        g = xp.ascontiguousarray(g).reshape(n, groups, o // groups, oh * ow)
        return xp.matmul(g, cols).sum(axis=0).reshape(w_shape)
    g = xp.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(groups, o // groups, -1)
    gw = xp.matmul(g, cols.transpose(1, 0, 2, 3).reshape(groups, n * oh * ow, -1))
    o, cg, kh, kw = w_shape
    return xp.ascontiguousarray(gw.reshape(o, kh, kw, cg).transpose(0, 3, 1, 2))


def _conv_matmul_adjoint(g, w, geom, size):
    """Adjoint of :func:`_conv_matmul` in ``x``: ``g`` (N, O, OH, OW) spread back into an input
    of spatial ``size`` (matrix products giving the columns, then col2im)."""
    stride, pads, dilation, groups = geom
    xp = backend.get_array_module(g, w)
    n, o, oh, ow = g.shape
    cg, kh, kw = w.shape[1:]
    hw = (size[0] + sum(pads[0]), size[1] + sum(pads[1]))
    if kh * kw > 1 and cg >= 8:
        # one product per kernel position and group, g (N*OH*OW, O/G) @ w[:, :, i, j], gives
        # each position's columns as a contiguous (N, OH, OW, C/G) block, added into an NHWC
        # buffer in rows of OW*C/G (3x3 conv 16->32 on 14x14, batch 128: 4.4 ms vs 6.2 the
        # other way). Products under 8 columns wide are slow (3->32 on 56x56: 9.8 ms vs 3.9).
        rows = xp.ascontiguousarray(g.transpose(0, 2, 3, 1)).reshape(n * oh * ow, groups, -1)
        wk = w.reshape(groups, o // groups, cg, kh, kw).transpose(3, 4, 0, 1, 2)
        cols = xp.matmul(rows.transpose(1, 0, 2), xp.ascontiguousarray(wk))
        cols = cols.reshape(kh, kw, groups, n, oh, ow, cg).transpose(2, 3, 0, 1, 4, 5, 6)
        x = _crop_hw(_col2im(cols, (groups, n) + hw + (cg,), stride, dilation), pads)
        return xp.ascontiguousarray(x.transpose(1, 0, 4, 2, 3)).reshape((n, -1) + tuple(size))
    # one product per sample and group, w.T (K/G, O/G) @ g[n] (O/G, OH*OW), col2im in NCHW
    w = xp.ascontiguousarray(w).reshape(groups, o // groups, -1)
    g = xp.ascontiguousarray(g).reshape(n, groups, o // groups, oh * ow)
    cols = xp.matmul(xp.swapaxes(w, 1, 2), g).reshape(n, groups * cg, kh, kw, oh, ow)
    x = _crop_hw(_col2im(cols, (n, groups * cg) + hw, stride, dilation), pads)
    return xp.ascontiguousarray(x)


# The convolution of x (N, C, H, W) with w (O, C/groups, kh, kw) is bilinear; its two adjoints
# are the transposed convolution (in x) and the weight gradient (in w). Each of the three ops
# below differentiates into the other two, so convolutions have gradients of every order. The
# helpers run on arrays, or record the op when given Tensors (a backward under create_graph).
# ``geom`` is (stride, ((top, bottom), (left, right)) zero padding, dilation, groups).

def _conv(x, w, geom, out):
    """Convolution of ``x`` with ``w``; ``out`` is the output's (OH, OW)."""
    if isinstance(x, Tensor) or isinstance(w, Tensor):
        return Convolution.apply(x, w, None, geom=geom, out=out)
    return _conv_matmul(x, w, geom, out)


def _conv_t(y, w, geom, out):
    """Adjoint of :func:`_conv` in ``x``: ``y`` (N, O, OH, OW) spread back into an input of
    spatial size ``out``."""
    if isinstance(y, Tensor) or isinstance(w, Tensor):
        return ConvolutionTranspose.apply(y, w, None, geom=geom, out=out)
    return _conv_matmul_adjoint(y, w, geom, out)


def _conv_w(y, x, geom, kernel):
    """Adjoint of :func:`_conv` in ``w``: the weight gradient for output gradient ``y``."""
    if isinstance(y, Tensor) or isinstance(x, Tensor):
        return ConvolutionWeight.apply(y, x, geom=geom, kernel=kernel)
    w_shape = (y.shape[1], x.shape[1] // geom[3]) + tuple(kernel)
    return _conv_weight_grad(y, x, w_shape, geom)


class Convolution(Op):
    """2-d convolution (cross-correlation) ``x ⋆ w + b``."""

    @staticmethod
    def forward(ctx, x, w, b, geom=None, out=None):
        ctx.save_for_backward(x, w)
        ctx.geom = geom
        y = _conv(x, w, geom, out)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        return (_conv_t(g, w, ctx.geom, tuple(x.shape[2:])) if need_x else None,
                _conv_w(g, x, ctx.geom, tuple(w.shape[2:])) if need_w else None,
                g.sum(axis=(0, 2, 3)) if need_b else None)


class ConvolutionTranspose(Op):
    """Transposed convolution (the adjoint of :class:`Convolution` in its input) plus ``b``;
    ``w`` is (C_in, C_out/groups, kh, kw) and ``out`` the output's spatial size."""

    @staticmethod
    def forward(ctx, y, w, b, geom=None, out=None):
        ctx.save_for_backward(y, w)
        ctx.geom = geom
        x = _conv_t(y, w, geom, out)
        if b is not None:
            x += b.reshape(1, -1, 1, 1)
        return x

    @staticmethod
    def backward(ctx, g):
        y, w = ctx.saved_tensors
        need_y, need_w, need_b = ctx.needs_input_grad
        return (_conv(g, w, ctx.geom, tuple(y.shape[2:])) if need_y else None,
                _conv_w(y, g, ctx.geom, tuple(w.shape[2:])) if need_w else None,
                g.sum(axis=(0, 2, 3)) if need_b else None)


class ConvolutionWeight(Op):
    """The weight gradient of a convolution as an op (recorded only under create_graph)."""

    @staticmethod
    def forward(ctx, y, x, geom=None, kernel=None):
        ctx.save_for_backward(y, x)
        ctx.geom = geom
        return _conv_w(y, x, geom, kernel)

    @staticmethod
    def backward(ctx, g):
        y, x = ctx.saved_tensors
        need_y, need_x = ctx.needs_input_grad
        return (_conv(x, g, ctx.geom, tuple(y.shape[2:])) if need_y else None,
                _conv_t(y, g, ctx.geom, tuple(x.shape[2:])) if need_x else None)


def _conv_padding(name, padding, kernel, dilation, stride):
    """``padding`` (int, pair, 'same' or 'valid') as ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding != "same":
            raise ValueError(f"{name}: invalid padding string {padding!r}, should be one of "
                             f"{{'valid', 'same'}}")
        if any(s != 1 for s in stride):
            raise ValueError(f"{name}: padding='same' is not supported for strided convolutions")
        # PyTorch puts the odd extra row/column of padding at the bottom/right
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in _ntuple(padding, 2, "padding"))


def _conv2d(name, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d with errors naming ``name`` (the functional or the layer)."""
    if _autocast.on:
        return _autocast_call("conv2d", _conv2d, name, input, weight, bias, stride, padding,
                              dilation, groups)
    x, unbatched = _batched(name, input, 4, "H, W")
    if weight.ndim != 4:
        raise RuntimeError(f"{name}: expected a 4-D weight (out_channels, in_channels/groups, kH, "
                           f"kW), got weight of shape {_shape(weight)}")
    stride, dilation = _ntuple(stride, 2, "stride"), _ntuple(dilation, 2, "dilation")
    kernel = tuple(weight.shape[2:])
    if x.shape[1] != weight.shape[1] * groups:
        raise RuntimeError(f"{name}: expected input with {weight.shape[1] * groups} channels, "
                           f"got input of shape {_shape(input)} (weight of shape "
                           f"{_shape(weight)}, groups={groups})")
    if weight.shape[0] % groups:
        raise RuntimeError(f"{name}: out_channels={weight.shape[0]} is not divisible by "
                           f"groups={groups}")
    _same_dtype(name, x, weight, bias)
    pads = _conv_padding(name, padding, kernel, dilation, stride)
    out = tuple(_out_size(x.shape[2 + a], kernel[a], stride[a], dilation[a], sum(pads[a]))
                for a in range(2))
    if min(out) < 1:
        raise RuntimeError(f"{name}: input of shape {_shape(input)} padded by {pads} is smaller "
                           f"than the (dilated) kernel {kernel} with dilation {dilation}")
    y = Convolution.apply(x, weight, bias, geom=(stride, pads, dilation, groups), out=out)
    return y.squeeze(0) if unbatched else y


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-d convolution of ``input`` (N, C, H, W) or (C, H, W) with ``weight``
    (out_channels, C/groups, kH, kW); ``padding`` may be an int, a pair, 'same' or 'valid'.

    Example:
        >>> F.conv2d(ddp.ones(1, 2, 5, 5), ddp.ones(3, 2, 3, 3), stride=2).shape
        ddp.Size([1, 3, 2, 2])
    """
    return _conv2d("conv2d", input, weight, bias, stride, padding, dilation, groups)


def _conv1d(name, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv1d as conv2d over a unit height."""
    if _autocast.on:
        return _autocast_call("conv1d", _conv1d, name, input, weight, bias, stride, padding,
                              dilation, groups)
    x, unbatched = _batched(name, input, 3, "L")
    if weight.ndim != 3:
        raise RuntimeError(f"{name}: expected a 3-D weight (out_channels, in_channels/groups, kL), "
                           f"got weight of shape {_shape(weight)}")
    if x.shape[1] != weight.shape[1] * groups:
        raise RuntimeError(f"{name}: expected input with {weight.shape[1] * groups} channels, "
                           f"got input of shape {_shape(input)} (weight of shape "
                           f"{_shape(weight)}, groups={groups})")
    if not isinstance(padding, str):
        padding = (0, _ntuple(padding, 1, "padding")[0])
    y = _conv2d(name, x.unsqueeze(2), weight.unsqueeze(2), bias,
                (1, _ntuple(stride, 1, "stride")[0]), padding,
                (1, _ntuple(dilation, 1, "dilation")[0]), groups).squeeze(2)
    return y.squeeze(0) if unbatched else y


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-d convolution of ``input`` (N, C, L) or (C, L) with ``weight`` (out, C/groups, kL).

    Example:
        >>> F.conv1d(ddp.ones(1, 2, 5), ddp.ones(3, 2, 3), padding="same").shape
        ddp.Size([1, 3, 5])
    """
    return _conv1d("conv1d", input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose2d(name, input, weight, bias=None, stride=1, padding=0, output_padding=0,
                      groups=1, dilation=1, output_size=None):
    if _autocast.on:
        return _autocast_call("conv_transpose2d", _conv_transpose2d, name, input, weight, bias,
                              stride, padding, output_padding, groups, dilation, output_size)
    x, unbatched = _batched(name, input, 4, "H, W")
    if weight.ndim != 4:
        raise RuntimeError(f"{name}: expected a 4-D weight (in_channels, out_channels/groups, kH, "
                           f"kW), got weight of shape {_shape(weight)}")
    if x.shape[1] != weight.shape[0]:
        raise RuntimeError(f"{name}: expected input with {weight.shape[0]} channels, got input "
                           f"of shape {_shape(input)} (weight of shape {_shape(weight)})")
    if weight.shape[0] % groups:
        raise RuntimeError(f"{name}: in_channels={weight.shape[0]} is not divisible by "
                           f"groups={groups}")
    _same_dtype(name, x, weight, bias)
    stride, dilation = _ntuple(stride, 2, "stride"), _ntuple(dilation, 2, "dilation")
    padding = _ntuple(padding, 2, "padding")
    output_padding = _ntuple(output_padding, 2, "output_padding")
    kernel = tuple(weight.shape[2:])
    base = [(x.shape[2 + a] - 1) * stride[a] - 2 * padding[a] + dilation[a] * (kernel[a] - 1) + 1
            for a in range(2)]
    if output_size is not None:  # ConvTranspose2d(..)(x, output_size=...): infer output_padding
        output_size = tuple(output_size)[-2:]
        output_padding = tuple(s - b for s, b in zip(output_size, base))
    for a in range(2):
        if not 0 <= output_padding[a] < max(stride[a], dilation[a]):
            raise ValueError(f"{name}: output padding {output_padding} must be non-negative and "
                             f"smaller than either stride {stride} or dilation {dilation}")
    out = tuple(b + op for b, op in zip(base, output_padding))
    if min(out) < 1:
        raise RuntimeError(f"{name}: input of shape {_shape(input)} gives an empty output {out}")
    geom = (stride, tuple((p, p) for p in padding), dilation, groups)
    y = ConvolutionTranspose.apply(x, weight, bias, geom=geom, out=out)
    return y.squeeze(0) if unbatched else y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 2-d convolution ("deconvolution"); ``weight`` is (C_in, out/groups, kH, kW).
    The output size is ``(H - 1)*stride - 2*padding + dilation*(kH - 1) + output_padding + 1``.

    Example:
        >>> F.conv_transpose2d(ddp.ones(1, 4, 3, 3), ddp.ones(4, 2, 4, 4), stride=2,
        ...                    padding=1).shape
        ddp.Size([1, 2, 6, 6])
    """
    return _conv_transpose2d("conv_transpose2d", input, weight, bias, stride, padding,
                             output_padding, groups, dilation)


# =========================================================================== pooling

def _default_stride(stride, kernel):
    """Pooling's stride: the kernel size when not given (None or empty)."""
    return kernel if stride is None or isinstance(stride, (tuple, list)) and not stride \
        else stride


def _pool_geometry(name, x, kernel, stride, padding, dilation, ceil_mode):
    """Output size and padding ((top, bottom), (left, right)) covering every window, with
    PyTorch's rules (a ceil_mode window must start inside the input or the left padding)."""
    kernel = _ntuple(kernel, 2)
    stride = _ntuple(_default_stride(stride, kernel), 2, "stride")
    padding, dilation = _ntuple(padding, 2, "padding"), _ntuple(dilation, 2, "dilation")
    out, pads = [], []
    for a in range(2):
        k, s, p, d, size = kernel[a], stride[a], padding[a], dilation[a], x.shape[2 + a]
        if p > (d * (k - 1) + 1) // 2:
            raise RuntimeError(f"{name}: padding should be at most half of the effective kernel "
                               f"size, got padding={padding}, kernel_size={kernel} and "
                               f"dilation={dilation}")
        span = size + 2 * p - d * (k - 1) - 1
        o = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (o - 1) * s >= size + p:
            o -= 1
        if o < 1:
            raise RuntimeError(f"{name}: input of shape {_shape(x)} is too small for "
                               f"kernel_size={kernel} with padding={padding} and "
                               f"dilation={dilation} (output size would be {o})")
        out.append(o)
        pads.append((p, max((o - 1) * s + d * (k - 1) + 1 - size - p, 0)))
    return kernel, stride, dilation, tuple(out), tuple(pads)


def _lowest(dtype):
    return -np.inf if backend.is_float_np(dtype) else np.iinfo(dtype).min


def _window_max(xpad, kernel, stride, dilation, out):
    """The maximum of each window of the padded array (one elementwise max per kernel position)."""
    xp = backend.get_array_module(xpad)
    y = _window(xpad, 0, 0, stride, dilation, out).copy()
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            if i or j:
                xp.maximum(y, _window(xpad, i, j, stride, dilation, out), out=y)
    return y


def _windows_overlap(kernel, stride, dilation):
    """Whether two windows can share an input element (else col2im may write, not add)."""
    return any(k > 1 and s < d * (k - 1) + 1 for k, s, d in zip(kernel, stride, dilation))


def _first_max_hits(xpad, y, kernel, stride, dilation, out):
    """``(i, j, hit)`` for each kernel position in order; ``hit`` is a bool (N, C, OH, OW)
    array, True where a window has its first maximum ``y`` at (i, j)."""
    xp = backend.get_array_module(xpad)
    free = xp.ones(y.shape, dtype=bool)  # windows whose first maximum is still to come
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            hit = _window(xpad, i, j, stride, dilation, out) == y
            hit &= free
            free ^= hit
            yield i, j, hit


def _spread(cols, kernel, stride, dilation, pads, out, shape):
    """Sum window-shaped ``cols`` (N, C, kh, kw, OH, OW) back into an input of ``shape``
    (col2im, padding cropped): on arrays, or as the recorded :class:`Col2Im` on Tensors (a
    backward under create_graph)."""
    if isinstance(cols, Tensor):
        n, c = shape[:2]
        return Col2Im.apply(cols.reshape(n, c * kernel[0] * kernel[1], out[0] * out[1]),
                            kernel=kernel, stride=stride, dilation=dilation, pads=pads, out=out,
                            shape=shape)
    return _fold_array(cols, kernel, stride, dilation, pads, out, shape)


class MaxPool2DWithIndices(Op):
    """Max over windows (padding never wins); the gradient goes to the first maximum of each
    window, as PyTorch's. Backward finds the maxima from the saved (padded) input and a copy of
    the output, so the output may be modified in place (``ReLU(inplace=True)`` after pooling)."""

    @staticmethod
    def forward(ctx, x, kernel=None, stride=None, dilation=None, pads=None, out=None,
                return_indices=False):
        xpad = _pad_hw(x, pads, _lowest(x.dtype))
        y = _window_max(xpad, kernel, stride, dilation, out)
        # a copy of y for backward: 0.04 ms, recomputing it 0.66 (2x2 pooling of 128x16x28x28)
        ctx.save_for_backward(xpad, y.copy() if ctx.needs_input_grad else None)
        ctx.geometry = (kernel, stride, dilation, pads, out, x.shape)
        if not return_indices:
            return y
        # flat index row * W + col (in the unpadded input) of each window's first maximum
        xp, width = backend.get_array_module(x), x.shape[3]
        rows = xp.arange(out[0]) * stride[0] - pads[0][0]
        cols = xp.arange(out[1]) * stride[1] - pads[1][0]
        offsets = (xp.arange(kernel[0])[:, None] * dilation[0] * width
                   + xp.arange(kernel[1])[None, :] * dilation[1]).reshape(-1)
        first = xp.zeros(y.shape, dtype=np.int64)  # kernel position (row-major) of the maximum
        for i, j, hit in _first_max_hits(xpad, y, kernel, stride, dilation, out):
            first[hit] = i * kernel[1] + j
        return y, (rows[:, None] * width + cols[None, :] + offsets[first]).astype(np.int64)

    @staticmethod
    def backward(ctx, g, *unused):
        # the maxima's places are constants (arrays even under create_graph)
        xpad, y = (getattr(a, "_data", a) for a in ctx.saved_tensors)
        kernel, stride, dilation, pads, out, shape = ctx.geometry
        hits = _first_max_hits(xpad, y, kernel, stride, dilation, out)
        if isinstance(g, Tensor):  # create_graph: through the recorded Col2Im
            xp, (n, c, oh, ow) = backend.get_array_module(xpad), g.shape
            hits = xp.stack([hit for _, _, hit in hits], axis=2).reshape(
                (n, c) + tuple(kernel) + (oh, ow))
            return _spread(g.reshape(n, c, 1, 1, oh, ow) * hits, kernel, stride, dilation, pads,
                           out, shape)
        # col2im fused with the hits: windows that cannot overlap are written, not added, and
        # no (N, C, kh, kw, OH, OW) array is made (2x2 pooling of 128x16x28x28: 4.1 -> 2.4 ms)
        xp = backend.get_array_module(g)
        overlap = _windows_overlap(kernel, stride, dilation)
        gx = xp.zeros(xpad.shape, dtype=g.dtype)
        for i, j, hit in hits:
            window = _window(gx, i, j, stride, dilation, out)
            if overlap:
                window += g * hit
            else:
                xp.multiply(g, hit, out=window)
        return xp.ascontiguousarray(_crop_hw(gx, pads))


class AvgPool2D(Op):
    """Mean over windows; ``divisor`` (OH, OW) holds each window's count."""

    @staticmethod
    def forward(ctx, x, kernel=None, stride=None, pads=None, out=None, divisor=None):
        xpad = _pad_hw(x, pads)
        one = (1, 1)
        y = _window(xpad, 0, 0, stride, one, out).copy()
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                if i or j:
                    y += _window(xpad, i, j, stride, one, out)
        ctx.geometry = (kernel, stride, pads, out, divisor, x.shape)
        y /= divisor
        return y

    @staticmethod
    def backward(ctx, g):
        kernel, stride, pads, out, divisor, shape = ctx.geometry
        xp = backend.get_array_module(getattr(g, "_data", g))
        # col2im written out, as for max pooling (2x2 pooling of 128x16x28x28, forward +
        # backward: 4.7 -> 2.2 ms); under create_graph through the recorded Col2Im
        if not isinstance(g, Tensor):
            g = g / divisor
            gx = xp.zeros(shape[:2] + tuple(s + sum(p) for s, p in zip(shape[2:], pads)),
                          dtype=g.dtype)
            overlap = _windows_overlap(kernel, stride, (1, 1))
            for i in range(kernel[0]):
                for j in range(kernel[1]):
                    window = _window(gx, i, j, stride, (1, 1), out)
                    if overlap:
                        window += g
                    else:
                        window[...] = g
            return xp.ascontiguousarray(_crop_hw(gx, pads))
        n, c, oh, ow = g.shape
        every = xp.ones((1, 1) + tuple(kernel) + (1, 1), dtype=g.dtype.np)
        return _spread((g / divisor).reshape(n, c, 1, 1, oh, ow) * every, kernel, stride,
                       (1, 1), pads, out, shape)


def _max_pool2d(name, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                return_indices=False):
    x, unbatched = _batched(name, input, 4, "H, W")
    kernel, stride, dilation, out, pads = _pool_geometry(name, x, kernel_size, stride, padding,
                                                          dilation, ceil_mode)
    res = MaxPool2DWithIndices.apply(x, kernel=kernel, stride=stride, dilation=dilation, pads=pads,
                            out=out, return_indices=return_indices)
    if unbatched:
        res = tuple(r.squeeze(0) for r in res) if return_indices else res.squeeze(0)
    return res


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over ``kernel_size`` windows (stride defaults to the kernel size). With
    ``return_indices`` also returns each maximum's flat index ``row * W + col`` in the input.

    Example:
        >>> F.max_pool2d(ddp.arange(16.).reshape(1, 1, 4, 4), 2)
        tensor([[[[ 5.,  7.],
                  [13., 15.]]]])
    """
    return _max_pool2d("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices)


def _pool1d(name, pool2d, input, kernel_size, stride, padding, **kwargs):
    """1-d pooling: the 2-d ``pool2d`` over a unit height (``dilation`` in kwargs, if any)."""
    x, unbatched = _batched(name, input, 3, "L")
    k = _ntuple(kernel_size, 1)[0]
    s = _ntuple(_default_stride(stride, k), 1, "stride")[0]
    if "dilation" in kwargs:
        kwargs["dilation"] = (1, _ntuple(kwargs["dilation"], 1, "dilation")[0])
    res = pool2d(name, x.unsqueeze(2), (1, k), (1, s), (0, _ntuple(padding, 1, "padding")[0]),
                 **kwargs)
    lead = (2, 0) if unbatched else (2,)
    for d in lead:
        res = tuple(r.squeeze(d) for r in res) if isinstance(res, tuple) else res.squeeze(d)
    return res


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over windows of the last dimension of (N, C, L) or (C, L).

    Example:
        >>> F.max_pool1d(ddp.tensor([[[1., 3., 2., 0.]]]), 2)
        tensor([[[3., 2.]]])
    """
    return _pool1d("max_pool1d", _max_pool2d, input, kernel_size, stride, padding,
                   dilation=dilation, ceil_mode=ceil_mode, return_indices=return_indices)


def _avg_divisor(size, kernel, stride, pad, out, count_include_pad):
    """Per-axis window counts: the window clipped to the padded input (count_include_pad) or to
    the input itself."""
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    if count_include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def _avg_pool2d(name, input, kernel_size, stride=None, padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):
    x, unbatched = _batched(name, input, 4, "H, W")
    kernel, stride, _, out, pads = _pool_geometry(name, x, kernel_size, stride, padding, 1,
                                                   ceil_mode)
    if divisor_override:
        divisor = float(divisor_override)
    else:
        dh, dw = (_avg_divisor(x.shape[2 + a], kernel[a], stride[a], pads[a][0], out[a],
                               count_include_pad) for a in range(2))
        divisor = backend.to_device(np.outer(dh, dw).astype(x._data.dtype), x.device)
    y = AvgPool2D.apply(x, kernel=kernel, stride=stride, pads=pads, out=out, divisor=divisor)
    return y.squeeze(0) if unbatched else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Mean over ``kernel_size`` windows; ``count_include_pad`` counts zero padding in the
    divisor, ``divisor_override`` replaces it.

    Example:
        >>> F.avg_pool2d(ddp.arange(16.).reshape(1, 1, 4, 4), 2)
        tensor([[[[ 2.5000,  4.5000],
                  [10.5000, 12.5000]]]])
    """
    return _avg_pool2d("avg_pool2d", input, kernel_size, stride, padding, ceil_mode,
                       count_include_pad, divisor_override)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """Mean over windows of the last dimension of (N, C, L) or (C, L).

    Example:
        >>> F.avg_pool1d(ddp.tensor([[[1., 3., 2., 0.]]]), 2)
        tensor([[[2., 1.]]])
    """
    return _pool1d("avg_pool1d", _avg_pool2d, input, kernel_size, stride, padding,
                   ceil_mode=ceil_mode, count_include_pad=count_include_pad)


def _adaptive_matrix(size, out, like):
    """(out, size) averaging matrix of adaptive pooling: row i averages the input range
    ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    m = np.zeros((out, size))
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return Tensor._make(backend.to_device(m.astype(like._data.dtype), like.device))


def _adaptive_avg(name, input, output_size, ndim):
    """Adaptive average pooling over the last ``ndim`` dimensions: a reshape-mean when the sizes
    divide, otherwise one product with an averaging matrix per dimension."""
    if input.ndim not in (ndim + 1, ndim + 2):
        raise RuntimeError(f"{name}: expected {ndim + 1}-D or {ndim + 2}-D input, got input of "
                           f"shape {_shape(input)}")
    if not input.is_floating_point():
        raise RuntimeError(f"{name}: expected a floating point input, got {input.dtype.name}")
    sizes = input.shape[-ndim:]
    outs = (output_size,) * ndim if isinstance(output_size, numbers.Integral) or \
        output_size is None else tuple(output_size)
    outs = tuple(s if o is None else int(o) for s, o in zip(sizes, outs))
    if all(s % o == 0 for s, o in zip(sizes, outs)):
        lead = tuple(input.shape[:-ndim])
        split = lead + tuple(x for o, s in zip(outs, sizes) for x in (o, s // o))
        return input.reshape(split).mean(dim=tuple(len(lead) + 2 * a + 1 for a in range(ndim)))
    y = input
    for a, (s, o) in enumerate(zip(sizes, outs)):
        m = _adaptive_matrix(s, o, input)
        y = (y.transpose(-1, -ndim + a) @ m.t()).transpose(-1, -ndim + a)
    return y


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed ``output_size`` (int, pair, None keeps that size); windows
    may overlap when the sizes do not divide.

    Example:
        >>> F.adaptive_avg_pool2d(ddp.ones(2, 3, 7, 5), (3, None)).shape
        ddp.Size([2, 3, 3, 5])
    """
    return _adaptive_avg("adaptive_avg_pool2d", input, output_size, 2)


def adaptive_avg_pool1d(input, output_size):
    """Average pooling of the last dimension to ``output_size`` windows.

    Example:
        >>> F.adaptive_avg_pool1d(ddp.tensor([[[1., 2., 3.]]]), 2)
        tensor([[[1.5000, 2.5000]]])
    """
    return _adaptive_avg("adaptive_avg_pool1d", input, output_size, 1)


# =========================================================================== normalisation

class _Normalize(Op):
    """``y = (x - mean) * invstd * weight + bias`` with the closed-form backward.

    ``x`` seen as ``group_shape`` has its statistics (``mean``, ``invstd``, broadcastable there)
    over ``axes``; ``weight``/``bias`` (or None) broadcast over ``x`` as ``affine_shape``.
    ``batch_stats`` says the statistics were computed from ``x`` (training); otherwise they are
    constants (BatchNorm in eval mode) and the input gradient is a plain scaling. Under
    create_graph the backward recomputes the normalised input from ``x`` with recorded ops, so
    the same formulas give second-order gradients.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean=None, invstd=None, group_shape=None, axes=None,
                affine_shape=None, batch_stats=True, eps=1e-5):
        xhat = ((x.reshape(group_shape) - mean) * invstd).reshape(x.shape)
        y = xhat
        if weight is not None:
            y = y * weight.reshape(affine_shape)
        if bias is not None:
            y = y + bias.reshape(affine_shape)
        if y is xhat:
            y = xhat.copy()
        ctx.save_for_backward(xhat, weight, x)
        ctx.params = (mean, invstd, group_shape, axes, affine_shape, batch_stats, eps)
        return y

    @staticmethod
    def backward(ctx, g):
        xhat, weight, x = ctx.saved_tensors
        mean, invstd, group_shape, axes, affine_shape, batch_stats, eps = ctx.params
        need_x, need_w, need_b = ctx.needs_input_grad
        if isinstance(g, Tensor):  # create_graph: xhat (and batch statistics) as ops on x
            xr = x.reshape(group_shape)
            if batch_stats:
                mean = xr.mean(axis=axes, keepdims=True)
                invstd = 1 / ctx.xp.sqrt(((xr - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
            xhat = ((xr - mean) * invstd).reshape(x.shape)
        # weight and bias broadcast as affine_shape: their gradients sum the other axes
        full = (1,) * (g.ndim - len(affine_shape)) + tuple(affine_shape)
        param_axes = tuple(i for i, s in enumerate(full) if s == 1)
        gx = gw = gb = None
        if need_x:
            gxhat = g if weight is None else g * weight.reshape(affine_shape)
            gxhat = gxhat.reshape(group_shape)
            if batch_stats:
                xh = xhat.reshape(group_shape)
                gxhat = gxhat - gxhat.mean(axis=axes, keepdims=True) \
                    - xh * (gxhat * xh).mean(axis=axes, keepdims=True)
            gx = (gxhat * invstd).reshape(x.shape)
        if need_w:
            gw = (g * xhat).sum(axis=param_axes).reshape(weight.shape)
        if need_b:
            gb = g.sum(axis=param_axes).reshape(ctx.in_meta[2][0])
        return gx, gw, gb


class NativeBatchNorm(_Normalize):
    """:class:`_Normalize` for batch_norm (its own name in ``grad_fn``)."""


class NativeLayerNorm(_Normalize):
    """:class:`_Normalize` for layer_norm."""


class NativeGroupNorm(_Normalize):
    """:class:`_Normalize` for group_norm."""


def _moments(x, axes):
    """Mean and biased variance of the array ``x`` over ``axes`` (kept as size-1 dims),
    accumulated in at least float32."""
    xf = x if x.dtype.itemsize >= 4 else x.astype(np.float32)
    mean = xf.mean(axis=axes, keepdims=True)
    var = ((xf - mean) ** 2).mean(axis=axes, keepdims=True)
    return mean, var


def _normalize(op, x, weight, bias, eps, group_shape, axes, affine_shape, stats=None):
    """Run the normalisation ``op`` with batch statistics (``stats`` None) or the given
    (mean, var); returns the output and the statistics used."""
    xd = x._data.reshape(group_shape)
    mean, var = _moments(xd, axes) if stats is None else stats
    xp = backend.get_array_module(xd)
    invstd = (1.0 / xp.sqrt(var + eps)).astype(xd.dtype)
    mean = mean.astype(xd.dtype)
    out = op.apply(x, weight, bias, mean=mean, invstd=invstd, group_shape=group_shape,
                   axes=axes, affine_shape=affine_shape, batch_stats=stats is None, eps=eps)
    return out, mean, var


def _batch_norm(name, input, running_mean, running_var, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5):
    if _autocast.on:
        return _autocast_call("batch_norm", _batch_norm, name, input, running_mean, running_var,
                              weight, bias, training, momentum, eps)
    if input.ndim < 2:
        raise ValueError(f"{name}: expected at least 2-D input (N, C, *), got input of shape "
                         f"{_shape(input)}")
    c = input.shape[1]
    for what, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and t.numel() != c:
            raise RuntimeError(f"{name}: expected input with {t.numel()} features (channels), "
                               f"got input of shape {_shape(input)} ({what} has {t.numel()})")
    axes = (0,) + tuple(range(2, input.ndim))
    affine = (1, c) + (1,) * (input.ndim - 2)
    shape = tuple(input.shape)
    if not training:
        if running_mean is None or running_var is None:
            raise RuntimeError(f"{name}: running_mean and running_var must be defined in "
                               f"evaluation mode")
        stats = (running_mean._data.reshape(affine), running_var._data.reshape(affine))
        return _normalize(NativeBatchNorm, input, weight, bias, eps, shape, axes, affine,
                          stats)[0]
    count = input.numel() // c
    if count <= 1:
        raise ValueError(f"{name}: expected more than 1 value per channel when training, got "
                         f"input of shape {_shape(input)}")
    out, mean, var = _normalize(NativeBatchNorm, input, weight, bias, eps, shape, axes, affine)
    with no_grad():
        if running_mean is not None:
            running_mean._data *= 1 - momentum
            running_mean._data += (momentum * mean.reshape(-1)).astype(running_mean._data.dtype)
            running_mean._vc[0] += 1
        if running_var is not None:  # the running variance is the unbiased one
            unbiased = var.reshape(-1) * (count / (count - 1))
            running_var._data *= 1 - momentum
            running_var._data += (momentum * unbiased).astype(running_var._data.dtype)
            running_var._vc[0] += 1
    return out


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation of ``input`` (N, C, *) per channel. In training it uses the batch's
    statistics and updates ``running_mean``/``running_var`` (unbiased) in place with
    ``momentum``; otherwise it uses the running statistics.

    Example:
        >>> x = ddp.randn(8, 3)
        >>> y = F.batch_norm(x, ddp.zeros(3), ddp.ones(3), training=True)
        >>> bool(y.mean(0).abs().max() < 1e-5)
        True
    """
    return _batch_norm("batch_norm", input, running_mean, running_var, weight, bias, training,
                       momentum, eps)


def _layer_norm(name, input, normalized_shape, weight=None, bias=None, eps=1e-5):
    if _autocast.on:
        return _autocast_call("layer_norm", _layer_norm, name, input, normalized_shape, weight,
                              bias, eps)
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) \
        else tuple(normalized_shape)
    k = len(normalized_shape)
    if tuple(input.shape[input.ndim - k:]) != normalized_shape or input.ndim < k:
        raise RuntimeError(f"{name}: expected input with shape (*, "
                           f"{', '.join(map(str, normalized_shape))}) for normalized_shape="
                           f"{normalized_shape}, got input of shape {_shape(input)}")
    axes = tuple(range(input.ndim - k, input.ndim))
    return _normalize(NativeLayerNorm, input, weight, bias, eps, tuple(input.shape), axes,
                      normalized_shape)[0]


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the last ``len(normalized_shape)`` dimensions of each sample, then scale
    by ``weight`` and shift by ``bias`` (both of ``normalized_shape``).

    Example:
        >>> F.layer_norm(ddp.tensor([[1., 2., 3.]]), (3,))
        tensor([[-1.2247,  0.0000,  1.2247]])
    """
    return _layer_norm("layer_norm", input, normalized_shape, weight, bias, eps)


def _group_norm(name, input, num_groups, weight=None, bias=None, eps=1e-5):
    if _autocast.on:
        return _autocast_call("group_norm", _group_norm, name, input, num_groups, weight, bias,
                              eps)
    if input.ndim < 2:
        raise RuntimeError(f"{name}: expected at least 2-D input (N, C, *), got input of shape "
                           f"{_shape(input)}")
    n, c = input.shape[0], input.shape[1]
    if c % num_groups:
        raise RuntimeError(f"{name}: expected the number of channels of the input to be divisible "
                           f"by num_groups={num_groups}, got input of shape {_shape(input)}")
    for what, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.numel() != c:
            raise RuntimeError(f"{name}: expected input with {t.numel()} channels (the size of "
                               f"{what}), got input of shape {_shape(input)}")
    affine = (1, c) + (1,) * (input.ndim - 2)
    return _normalize(NativeGroupNorm, input, weight, bias, eps, (n, num_groups, -1), (2,),
                      affine)[0]


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise each group of ``C // num_groups`` channels of each sample, then scale and shift
    per channel.

    Example:
        >>> F.group_norm(ddp.randn(2, 4, 3), 2).shape
        ddp.Size([2, 4, 3])
    """
    return _group_norm("group_norm", input, num_groups, weight, bias, eps)


# =========================================================================== dropout

def _dropout_mask(input, p, shape):
    """A tensor of 0 and 1/(1-p) (keep probability 1-p) of ``shape``, drawn from the default
    generator."""
    keep = backend.default_generator.numpy.random(shape, dtype=np.float32) >= p
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    mask = keep.astype(input._data.dtype) * np.asarray(scale, input._data.dtype)
    return Tensor._make(backend.to_device(mask, input.device))


def _apply_dropout(name, input, p, training, inplace, shape):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    mask = _dropout_mask(input, p, shape)
    return input.mul_(mask) if inplace else input * mask


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)`` (training
    only; in eval it returns ``input``).

    Example:
        >>> F.dropout(ddp.ones(4), 0.5, training=False)
        tensor([1., 1., 1., 1.])
    """
    return _apply_dropout("dropout", input, p, training, inplace, tuple(input.shape))


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, L) or (C, L) input with probability ``p``.

    Example:
        >>> F.dropout1d(ddp.ones(2, 3, 4), training=False).shape
        ddp.Size([2, 3, 4])
    """
    if input.ndim not in (2, 3):
        raise RuntimeError(f"dropout1d: expected 2-D (unbatched) or 3-D (batched) input, got "
                           f"input of shape {_shape(input)}")
    shape = tuple(input.shape[:-1]) + (1,)
    return _apply_dropout("dropout1d", input, p, training, inplace, shape)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels (feature maps) of (N, C, H, W) input with probability ``p``. As
    PyTorch (for now), the mask covers the first two dimensions whatever the rank, so a 3-D input
    is taken as (N, C, L).

    Example:
        >>> F.dropout2d(ddp.ones(2, 3, 4, 4), training=False).shape
        ddp.Size([2, 3, 4, 4])
    """
    if input.ndim < 2:
        raise RuntimeError(f"dropout2d: expected 4-D input (N, C, H, W), got input of shape "
                           f"{_shape(input)}")
    shape = tuple(input.shape[:2]) + (1,) * (input.ndim - 2)
    return _apply_dropout("dropout2d", input, p, training, inplace, shape)


# =========================================================================== embedding

class Embedding(Op):
    """The lookup op of :func:`embedding`: rows of ``weight`` at ``indices``; the gradient of
    row ``padding_idx`` is zero."""

    @staticmethod
    def forward(ctx, weight, indices=None, padding_idx=None, scale_grad_by_freq=False):
        ctx.indices, ctx.shape, ctx.padding_idx = indices, weight.shape, padding_idx
        ctx.scale = None
        if scale_grad_by_freq:
            xp = backend.get_array_module(indices)
            counts = xp.bincount(indices.reshape(-1), minlength=weight.shape[0])
            ctx.scale = (1.0 / xp.maximum(counts[indices], 1)).astype(weight.dtype)[..., None]
        return weight[indices]

    @staticmethod
    def backward(ctx, g):
        indices = ctx.indices
        if ctx.padding_idx is not None:
            g = g * (indices != ctx.padding_idx)[..., None]
        if ctx.scale is not None:
            g = g * ctx.scale
        return scatter_into_zeros(g, ctx.shape, (indices,))


def _embedding(name, input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
               scale_grad_by_freq=False, sparse=False):
    if sparse:
        raise NotImplementedError(f"{name}: sparse gradients are not supported")
    if input.dtype.is_floating_point or input.dtype.name == "bool":
        raise RuntimeError(f"{name}: expected integer indices (int64 or int32), got "
                           f"{input.dtype.name}")
    num = weight.shape[0]
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise ValueError(f"{name}: padding_idx={padding_idx} must be within the number of "
                             f"embeddings {num}")
        padding_idx %= num
    idx = input._data
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num):
        raise IndexError(f"{name}: index out of range: indices must be in [0, {num}), got values "
                         f"in [{int(idx.min())}, {int(idx.max())}]")
    if max_norm is not None:
        _renorm_rows(weight, idx, max_norm, norm_type)
    return Embedding.apply(weight, indices=idx, padding_idx=padding_idx,
                             scale_grad_by_freq=scale_grad_by_freq)


def _renorm_rows(weight, idx, max_norm, norm_type):
    """Rescale in place the rows of ``weight`` used by ``idx`` whose norm exceeds ``max_norm``."""
    xp = backend.get_array_module(idx)
    rows = xp.unique(idx.reshape(-1))
    w = weight._data
    norms = xp.linalg.norm(w[rows].astype(np.float64), ord=norm_type, axis=1)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
    w[rows] = (w[rows] * scale[:, None]).astype(w.dtype)
    weight._vc[0] += 1


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    """Look up rows of ``weight`` (num_embeddings, dim) at the integer ``input``; row
    ``padding_idx`` gets no gradient; with ``max_norm`` the used rows are renormalised in place.

    Example:
        >>> F.embedding(ddp.tensor([[0, 2]]), ddp.eye(3)).shape
        ddp.Size([1, 2, 3])
    """
    return _embedding("embedding", input, weight, padding_idx, max_norm, norm_type,
                      scale_grad_by_freq, sparse)


def one_hot(tensor, num_classes=-1):
    """int64 one-hot encoding with a new last dimension of ``num_classes`` (max + 1 by default).

    Example:
        >>> F.one_hot(ddp.tensor([0, 2]), 3)
        tensor([[1, 0, 0],
                [0, 0, 1]])
    """
    if tensor.dtype.is_floating_point or tensor.dtype.name == "bool":
        raise RuntimeError("one_hot is only applicable to index tensor (int64 or int32), got "
                           f"{tensor.dtype.name}")
    idx = tensor._data
    xp = backend.get_array_module(idx)
    if idx.size and int(idx.min()) < 0:
        raise RuntimeError("one_hot: class values must be non-negative")
    if num_classes == -1:
        num_classes = int(idx.max()) + 1 if idx.size else 0
    elif idx.size and int(idx.max()) >= num_classes:
        raise RuntimeError(f"one_hot: class values must be smaller than num_classes="
                           f"{num_classes}, got {int(idx.max())}")
    out = (idx[..., None] == xp.arange(num_classes)).astype(np.int64)
    return Tensor._make(out)


# =========================================================================== padding

class ConstantPadNd(Op):
    """Pad (or crop, for negative amounts) with a constant; ``pads`` is ((before, after), ...)
    per dimension."""

    @staticmethod
    def forward(ctx, x, pads=None, value=0):
        xp = backend.get_array_module(x)
        shape = tuple(s + a + b for s, (a, b) in zip(x.shape, pads))
        if min(shape, default=1) < 0:
            raise RuntimeError(f"pad: padding {pads} gives a negative output size for input of "
                               f"shape {x.shape}")
        out = xp.full(shape, value, dtype=x.dtype)
        src, dst = _pad_slices(x.shape, pads)
        out[dst] = x[src]
        ctx.in_shape, ctx.slices = x.shape, (src, dst)
        return out

    @staticmethod
    def backward(ctx, g):
        src, dst = ctx.slices
        return scatter_into_zeros(g[dst], ctx.in_shape, src)


def _pad_slices(shape, pads):
    """Slices of the input and of the output that hold the same elements."""
    src, dst = [], []
    for s, (a, b) in zip(shape, pads):
        src.append(slice(max(-a, 0), s - max(-b, 0)))
        dst.append(slice(max(a, 0), max(a, 0) + max(s - max(-a, 0) - max(-b, 0), 0)))
    return tuple(src), tuple(dst)


class IndexPad(Op):
    """Reflect / replicate / circular padding: a gather along each padded dimension."""
    once_differentiable = True

    @staticmethod
    def forward(ctx, x, indices=None):
        xp = backend.get_array_module(x)
        ctx.shapes = []
        for axis, idx in indices:
            ctx.shapes.append(x.shape)
            x = xp.take(x, backend.to_device(idx, backend.device_of(x)), axis=axis)
        ctx.indices = indices
        return x

    @staticmethod
    def backward(ctx, g):
        xp = backend.get_array_module(g)
        for (axis, idx), shape in reversed(list(zip(ctx.indices, ctx.shapes))):
            gx = xp.zeros(shape, dtype=g.dtype)
            index = (slice(None),) * axis + (backend.to_device(idx, backend.device_of(g)),)
            backend.index_add_at(gx, index, g)
            g = gx
        return g


_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(input, pad, mode="constant", value=None):
    """Pad the last ``len(pad) // 2`` dimensions: ``pad`` is (left, right) of the last one,
    then (top, bottom) of the one before, ... ``mode`` is 'constant' (any number of dimensions,
    negative amounts crop), 'reflect', 'replicate' or 'circular'.

    Example:
        >>> F.pad(ddp.tensor([[1., 2.]]), (1, 2), value=9.)
        tensor([[9., 1., 2., 9., 9.]])
        >>> F.pad(ddp.tensor([[[1., 2., 3.]]]), (2, 1), mode="reflect")
        tensor([[[3., 2., 1., 2., 3., 2.]]])
    """
    if _autocast.on and mode in ("reflect", "replicate"):  # PyTorch's reflection/replication_pad
        return _autocast_call(mode + "_pad", _pad, input, pad, mode, value)
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: padding length must be even and at most twice the number of "
                         f"dimensions, got pad={pad} for input of shape {_shape(input)}")
    k = len(pad) // 2
    pairs = [(0, 0)] * (input.ndim - k) + [(pad[2 * i], pad[2 * i + 1]) for i in range(k)][::-1]
    if mode == "constant":
        return ConstantPadNd.apply(input, pads=tuple(pairs), value=0 if value is None else value)
    if mode not in _PAD_MODES:
        raise NotImplementedError(f"pad: mode {mode!r} is not supported (constant, reflect, "
                                  f"replicate, circular)")
    if k > 3 or input.ndim < k + 1:
        raise NotImplementedError(f"pad: {mode} padding of {k} dimensions needs an input of "
                                  f"{k + 1} or {k + 2} dimensions, got shape {_shape(input)}")
    indices = []
    for axis in range(input.ndim - k, input.ndim):
        size, (a, b) = input.shape[axis], pairs[axis]
        if mode == "reflect" and (a >= size or b >= size):
            raise RuntimeError(f"pad: reflect padding {(a, b)} must be smaller than the input "
                               f"dimension {size} (input of shape {_shape(input)})")
        if mode == "circular" and (a > size or b > size):
            raise RuntimeError(f"pad: circular padding {(a, b)} must be at most the input "
                               f"dimension {size} (input of shape {_shape(input)})")
        if a or b:
            idx = np.pad(np.arange(size), (max(a, 0), max(b, 0)), mode=_PAD_MODES[mode])
            idx = idx[max(-a, 0):len(idx) - max(-b, 0)]
            indices.append((axis, idx))
    return IndexPad.apply(input, indices=tuple(indices))


_pad = pad  # pad() under a name its argument does not shadow


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """``input / max(||input||_p over dim, eps)``.

    Example:
        >>> F.normalize(ddp.tensor([[3., 4.]]))
        tensor([[0.6000, 0.8000]])
    """
    return input / input.norm(p, dim, keepdim=True).clamp_min(eps)


# =========================================================================== unfold / fold

def _unfold_array(x, kernel, stride, dilation, pads, out):
    cols = _windows(_pad_hw(x, pads), kernel, stride, dilation, out)
    return cols.reshape(x.shape[0], -1, out[0] * out[1])


def _fold_array(cols, kernel, stride, dilation, pads, out, shape):
    padded = shape[:2] + (shape[2] + sum(pads[0]), shape[3] + sum(pads[1]))
    full = cols.reshape(shape[:2] + tuple(kernel) + tuple(out))
    return backend.get_array_module(cols).ascontiguousarray(
        _crop_hw(_col2im(full, padded, stride, dilation), pads))


class Im2Col(Op):
    """im2col: (N, C, H, W) → (N, C*kh*kw, L); its adjoint is :class:`Col2Im`."""

    @staticmethod
    def forward(ctx, x, kernel=None, stride=None, dilation=None, pads=None, out=None):
        ctx.args = (kernel, stride, dilation, pads, out)
        ctx.shape = x.shape
        return _unfold_array(x, kernel, stride, dilation, pads, out)

    @staticmethod
    def backward(ctx, g):
        if isinstance(g, Tensor):  # create_graph: the adjoint as a recorded op
            kernel, stride, dilation, pads, out = ctx.args
            return Col2Im.apply(g, kernel=kernel, stride=stride, dilation=dilation, pads=pads,
                                out=out, shape=ctx.shape)
        return _fold_array(g, *ctx.args, ctx.shape)


class Col2Im(Op):
    """col2im: (N, C*kh*kw, L) summed into (N, C, H, W); its adjoint is :class:`Im2Col`."""

    @staticmethod
    def forward(ctx, cols, kernel=None, stride=None, dilation=None, pads=None, out=None,
                shape=None):
        ctx.args = (kernel, stride, dilation, pads, out)
        return _fold_array(cols, kernel, stride, dilation, pads, out, shape)

    @staticmethod
    def backward(ctx, g):
        if isinstance(g, Tensor):
            kernel, stride, dilation, pads, out = ctx.args
            return Im2Col.apply(g, kernel=kernel, stride=stride, dilation=dilation, pads=pads,
                                  out=out)
        return _unfold_array(g, *ctx.args)


def _fold_geometry(kernel_size, dilation, padding, stride, size):
    kernel, dilation = _ntuple(kernel_size, 2), _ntuple(dilation, 2, "dilation")
    padding, stride = _ntuple(padding, 2, "padding"), _ntuple(stride, 2, "stride")
    out = tuple(_out_size(size[a], kernel[a], stride[a], dilation[a], 2 * padding[a])
                for a in range(2))
    return kernel, dilation, tuple((p, p) for p in padding), stride, out


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Extract sliding blocks (im2col): (N, C, H, W) → (N, C*kh*kw, L), L = number of windows.

    Example:
        >>> F.unfold(ddp.ones(1, 2, 4, 4), 2, stride=2).shape
        ddp.Size([1, 8, 4])
    """
    x, unbatched = _batched("unfold", input, 4, "H, W")
    kernel, dilation, pads, stride, out = _fold_geometry(kernel_size, dilation, padding, stride,
                                                         x.shape[2:])
    if min(out) < 1:
        raise RuntimeError(f"unfold: input of shape {_shape(input)} is smaller than the kernel")
    y = Im2Col.apply(x, kernel=kernel, stride=stride, dilation=dilation, pads=pads, out=out)
    return y.squeeze(0) if unbatched else y


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Sum sliding blocks back into an image (col2im), the adjoint of :func:`unfold`:
    (N, C*kh*kw, L) → (N, C, *output_size).

    Example:
        >>> F.fold(ddp.ones(1, 8, 4), (4, 4), 2, stride=2).shape
        ddp.Size([1, 2, 4, 4])
    """
    x, unbatched = _batched("fold", input, 3, "L")
    size = _ntuple(output_size, 2, "output_size")
    kernel, dilation, pads, stride, out = _fold_geometry(kernel_size, dilation, padding, stride,
                                                         size)
    k = kernel[0] * kernel[1]
    if x.shape[1] % k or x.shape[2] != out[0] * out[1]:
        raise RuntimeError(f"fold: expected input of shape (N, C*{k}, {out[0] * out[1]}) for "
                           f"output_size={size} and kernel_size={kernel}, got {_shape(input)}")
    y = Col2Im.apply(x, kernel=kernel, stride=stride, dilation=dilation, pads=pads, out=out,
                     shape=(x.shape[0], x.shape[1] // k) + size)
    return y.squeeze(0) if unbatched else y


# =========================================================================== interpolate

def _source_index(out, size, scale, mode, align_corners):
    """For each output position: the source coordinate (linear modes) or index (nearest)."""
    dst = np.arange(out, dtype=np.float64)
    if mode == "nearest":
        return np.minimum(np.floor(dst * scale).astype(np.int64), size - 1)
    if mode == "nearest-exact":
        return np.minimum(np.floor((dst + 0.5) * scale).astype(np.int64), size - 1)
    if align_corners:
        return dst * ((size - 1) / (out - 1) if out > 1 else 0.0)
    return np.maximum((dst + 0.5) * scale - 0.5, 0.0)


def _linear_matrix(src, size, like):
    """(out, size) matrix of linear interpolation at source coordinates ``src``."""
    lo = np.minimum(np.floor(src).astype(np.int64), size - 1)
    hi = np.minimum(lo + 1, size - 1)
    frac = src - lo
    m = np.zeros((len(src), size))
    np.add.at(m, (np.arange(len(src)), lo), 1.0 - frac)
    np.add.at(m, (np.arange(len(src)), hi), frac)
    return Tensor._make(backend.to_device(m.astype(like._data.dtype), like.device))


_INTERP_DIMS = {"linear": 1, "bilinear": 2}


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dimensions of (N, C, *spatial): ``mode`` 'nearest', 'nearest-exact',
    'linear' (3-D input) or 'bilinear' (4-D input), to ``size`` or by ``scale_factor``.

    Example:
        >>> F.interpolate(ddp.tensor([[[1., 2.]]]), scale_factor=2)
        tensor([[[1., 1., 2., 2.]]])
    """
    if _autocast.on:
        return _autocast_call("interpolate", interpolate, input, size, scale_factor, mode,
                              align_corners, recompute_scale_factor, antialias)
    nd = input.ndim - 2
    if nd < 1:
        raise ValueError(f"interpolate: expected (N, C, *spatial) input, got shape "
                         f"{_shape(input)}")
    if mode in _INTERP_DIMS and _INTERP_DIMS[mode] != nd:
        raise NotImplementedError(f"interpolate: mode {mode!r} expects {_INTERP_DIMS[mode] + 2}-D "
                                  f"input, got input of shape {_shape(input)}")
    if mode not in ("nearest", "nearest-exact", "linear", "bilinear"):
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported")
    if antialias:
        raise NotImplementedError("interpolate: antialias is not supported")
    if align_corners is not None and mode.startswith("nearest"):
        raise ValueError("interpolate: align_corners can only be set with the linear modes")
    sizes = tuple(input.shape[2:])
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: exactly one of size and scale_factor must be given")
    if size is not None:
        outs = _ntuple(size, nd, "size")
        scales = [s / o for s, o in zip(sizes, outs)]
    else:
        factors = (float(scale_factor),) * nd if isinstance(scale_factor, numbers.Number) \
            else tuple(float(f) for f in scale_factor)
        outs = tuple(int(math.floor(s * f)) for s, f in zip(sizes, factors))
        scales = [s / o if recompute_scale_factor else 1.0 / f
                  for s, o, f in zip(sizes, outs, factors)]
    y = input
    for a in range(nd):
        axis = 2 + a
        src = _source_index(outs[a], sizes[a], scales[a], mode, bool(align_corners))
        if mode.startswith("nearest"):
            y = y[(slice(None),) * axis + (backend.to_device(src, input.device),)]
        else:
            m = _linear_matrix(src, sizes[a], input)
            y = (y.transpose(-1, axis) @ m.t()).transpose(-1, axis)
    return y

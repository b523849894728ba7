"""Argument checks and window (im2col) helpers shared by convolution, pooling and fold.
"""
from __future__ import annotations

import numbers
from ... import backend

# Arrays here are (N, C, H, W); ``kernel``, ``stride``, ``dilation`` and ``out`` are pairs.


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

"""``pad`` in PyTorch's modes: constant, reflect, replicate and circular.
"""
from __future__ import annotations

import numpy as np
from ... import backend
from ...ops.autocast import autocast_op
from ...autograd.graph import Op
from ...ops.shape import scatter_into_zeros
from ._helpers import _shape



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


def _on_device(idx, like):
    """The (host) pad index ``idx`` on ``like``'s device, copied there once per distinct index."""
    if isinstance(like, np.ndarray):
        return idx
    return backend.cached_table(("pad_index", idx.tobytes()), lambda: idx, backend.device_of(like))


class IndexPad(Op):
    """Reflect / replicate / circular padding: a gather along each padded dimension."""
    once_differentiable = True

    @staticmethod
    def forward(ctx, x, indices=None):
        xp = backend.get_array_module(x)
        ctx.shapes = []
        for axis, idx in indices:
            ctx.shapes.append(x.shape)
            x = xp.take(x, _on_device(idx, x), axis=axis)
        ctx.indices = indices
        return x

    @staticmethod
    def backward(ctx, g):
        xp = backend.get_array_module(g)
        for (axis, idx), shape in reversed(list(zip(ctx.indices, ctx.shapes))):
            gx = xp.zeros(shape, dtype=g.dtype)
            index = (slice(None),) * axis + (_on_device(idx, g),)
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
    return _PAD_BY_MODE.get(mode, _pad)(input, pad, mode, value)


def _pad(input, pad, mode, value):
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


# PyTorch's reflection_pad / replication_pad have autocast entries of their own (float32)
_PAD_BY_MODE = {"reflect": autocast_op("reflect_pad")(_pad),
                "replicate": autocast_op("replicate_pad")(_pad)}

"""Shape, indexing and matrix primitives with their gradients.

Pairs that are each other's adjoint call one another in backward, so higher-order gradients
work: ``Getitem`` and ``IndexScatter`` (scatter-add into zeros), ``Gather`` and ``GatherScatter``.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd.graph import Op


class Reshape(Op):
    @staticmethod
    def forward(ctx, a, shape=None):
        ctx.in_shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape)


class Permute(Op):
    @staticmethod
    def forward(ctx, a, axes=None):
        ctx.inverse = tuple(np.argsort(axes))
        return a.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.transpose(g, ctx.inverse)


class Expand(Op):
    @staticmethod
    def forward(ctx, a, shape=None):
        return backend.get_array_module(a).broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        return g  # the engine sums the broadcast dimensions away


class SumToSize(Op):
    """Sum broadcast dimensions away (or broadcast up) to reach ``shape``; its own adjoint."""

    @staticmethod
    def forward(ctx, a, shape=None):
        ctx.in_shape = a.shape
        return backend.sum_to_shape(a, tuple(shape))

    @staticmethod
    def backward(ctx, g):
        return g  # the engine fits it to the input shape, which is this op's adjoint


class Repeat(Op):
    """``Tensor.repeat``: tile the tensor ``reps`` times along each dimension."""

    @staticmethod
    def forward(ctx, a, reps=None):
        xp = backend.get_array_module(a)
        shape = (1,) * (len(reps) - a.ndim) + a.shape
        ctx.split_shape = tuple(x for r, s in zip(reps, shape) for x in (r, s))
        ctx.shape = shape
        ctx.in_shape = a.shape
        return xp.tile(a.reshape(shape), reps)

    @staticmethod
    def backward(ctx, g):
        g = g.reshape(ctx.split_shape).sum(axis=tuple(range(0, len(ctx.split_shape), 2)))
        return g.reshape(ctx.in_shape)


class Concat(Op):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        xp = backend.get_array_module(*arrays)
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return xp.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        out, start = [], 0
        lead = (slice(None),) * ctx.axis
        for size, need in zip(ctx.sizes, ctx.needs_input_grad):
            out.append(g[lead + (slice(start, start + size),)] if need else None)
            start += size
        return tuple(out)


class Stack(Op):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        xp = backend.get_array_module(*arrays)
        ctx.axis = axis
        return xp.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        lead = (slice(None),) * ctx.axis
        return tuple(g[lead + (i,)] if need else None for i, need in enumerate(ctx.needs_input_grad))


class Split(Op):
    """``a`` cut along ``axis`` into consecutive pieces of ``sizes`` (views), as one node; with
    ``squeeze`` every piece has size 1 and loses ``axis`` (``unbind``). Backward joins the pieces'
    gradients once: indexing each piece instead would scatter every piece's gradient into its own
    input-sized zero array, quadratic in the number of pieces (e.g. time steps)."""

    @staticmethod
    def forward(ctx, a, sizes=(), axis=0, squeeze=False):
        ctx.axis, ctx.squeeze = axis, squeeze
        lead = (slice(None),) * axis
        if squeeze:
            return tuple(a[lead + (i, Ellipsis)] for i in range(len(sizes)))
        out, start = [], 0
        for size in sizes:
            out.append(a[lead + (slice(start, start + size),)])
            start += size
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):  # missing grads arrive as zeros (the engine materializes them)
        xp = ctx.xp
        return (xp.stack if ctx.squeeze else xp.concatenate)(grads, axis=ctx.axis)


# --------------------------------------------------------------------------- indexing

def scatter_into_zeros(g, shape, index):
    """Zeros of ``shape`` with ``g`` added at ``index`` (repeats add up): Getitem's adjoint, on
    arrays or (under create_graph) Tensors."""
    return IndexScatter.run(g, shape=shape, index=index)


def _scatter_array(g, shape, index):
    xp = backend.get_array_module(g)
    out = xp.zeros(shape, dtype=g.dtype)
    if _is_basic(index):
        out[index] = g  # basic indexing never repeats a position
    else:
        backend.index_add_at(out, index, g, into_zeros=True)
    return out


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items)


class Getitem(Op):
    @staticmethod
    def forward(ctx, a, index=None):
        ctx.in_shape, ctx.index = a.shape, index
        if _is_basic(index):
            # with an Ellipsis NumPy returns a 0-d view, not a copied scalar, when every dimension
            # is indexed: basic indexing always gives a view, as in PyTorch
            items = index if isinstance(index, tuple) else (index,)
            if not any(i is Ellipsis for i in items):
                return a[items + (Ellipsis,)]
        return a[index]

    @staticmethod
    def backward(ctx, g):
        return scatter_into_zeros(g, ctx.in_shape, ctx.index)


class IndexScatter(Op):
    @staticmethod
    def forward(ctx, g, shape=None, index=None):
        ctx.index = index
        return _scatter_array(g, shape, index)

    @staticmethod
    def backward(ctx, gg):
        return gg[ctx.index]


class IndexPut(Op):
    """``a[index] = v`` out of place (the Tensor's ``__setitem__`` copies the result back)."""

    @staticmethod
    def forward(ctx, a, v, index=None, accumulate=False):
        out = a.copy()
        if accumulate:
            backend.index_add_at(out, index, v)
        else:
            out[index] = v
        ctx.index, ctx.accumulate = index, accumulate
        ctx.v_shape = getattr(v, "shape", ())
        return out

    @staticmethod
    def backward(ctx, g):
        need_a, need_v = ctx.needs_input_grad
        ga = gv = None
        if need_a:
            ga = g if ctx.accumulate else g * ctx.xp.where(_written_mask(g, ctx.index), 0.0, 1.0)
        if need_v:
            gv = g[ctx.index]
        return ga, gv


def _written_mask(g, index):
    """A bool array: True at the positions ``index`` writes to."""
    xp = backend.get_array_module(getattr(g, "_data", g))
    mask = xp.zeros(g.shape, dtype=bool)
    mask[index] = True
    return mask


class Gather(Op):
    """``torch.gather``: ``out[i][j] = a[i][index[i][j]]`` along ``axis``."""

    @staticmethod
    def forward(ctx, a, axis=0, index=None):
        ctx.in_shape, ctx.axis, ctx.index = a.shape, axis, index
        # not take_along_axis: it broadcasts a smaller index; torch's output has index's shape
        return a[_along_axis_index(index, axis)]

    @staticmethod
    def backward(ctx, g):
        return GatherScatter.run(g, shape=ctx.in_shape, axis=ctx.axis, index=ctx.index)


def _along_axis_index(index, axis):
    """Full index tuple addressing ``index`` along ``axis`` (the other axes by position)."""
    xp = backend.get_array_module(index)
    grids = list(xp.ogrid[tuple(slice(0, s) for s in index.shape)]) if index.ndim else []
    grids[axis] = index
    return tuple(grids)


def _gather_scatter_array(src, shape, axis, index):
    xp = backend.get_array_module(src)
    out = xp.zeros(shape, dtype=src.dtype)
    backend.index_add_at(out, _along_axis_index(index, axis), src)
    return out


class GatherScatter(Op):
    """Scatter-add ``src`` into zeros along ``axis`` at ``index``: Gather's adjoint."""

    @staticmethod
    def forward(ctx, src, shape=None, axis=0, index=None):
        ctx.axis, ctx.index = axis, index
        return _gather_scatter_array(src, shape, axis, index)

    @staticmethod
    def backward(ctx, g):
        return Gather.run(g, axis=ctx.axis, index=ctx.index)


class Scatter(Op):
    """``torch.scatter`` (no reduction): ``out = a`` with ``src`` written at ``index`` along axis."""

    @staticmethod
    def forward(ctx, a, src, axis=0, index=None):
        out = a.copy()
        full = _along_axis_index(index, axis)
        src_part = src[tuple(slice(0, s) for s in index.shape)] if getattr(src, "ndim", 0) else src
        out[full] = src_part
        ctx.full, ctx.axis, ctx.index = full, axis, index
        ctx.src_shape = getattr(src, "shape", ())
        return out

    @staticmethod
    def backward(ctx, g):
        need_a, need_src = ctx.needs_input_grad
        ga = gs = None
        if need_a:
            ga = g * ctx.xp.where(_written_mask(g, ctx.full), 0.0, 1.0)
        if need_src:
            part = g[ctx.full]
            # src may be larger than index: only its leading index-shaped block was used
            gs = scatter_into_zeros(part, ctx.src_shape, tuple(slice(0, s) for s in part.shape))
        return ga, gs


# --------------------------------------------------------------------------- matrix product

class Matmul(Op):
    """``a @ b`` with NumPy's rules for 1-D operands and batch broadcasting."""
    fresh_grads = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        out = a @ b
        # ml_dtypes' bfloat16 product comes back as float32 (accumulated in float32): round it
        return out if out.dtype == a.dtype else out.astype(a.dtype)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        xp = ctx.xp
        need_a, need_b = ctx.needs_input_grad
        if xp is np and not g.flags.c_contiguous:
            g = np.ascontiguousarray(g)  # a broadcast gradient (from sum) sends NumPy off BLAS
        a2 = a.reshape((1,) + a.shape) if a.ndim == 1 else a
        b2 = b.reshape(b.shape + (1,)) if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2 if b.ndim > 1 else 0)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        ga = gb = None
        if need_a:
            ga = xp.matmul(g2, xp.swapaxes(b2, -1, -2))
            if a.ndim == 1:
                ga = ga.reshape(ga.shape[:-2] + ga.shape[-1:])
        if need_b:
            gb = xp.matmul(xp.swapaxes(a2, -1, -2), g2)
            if b.ndim == 1:
                gb = gb.reshape(gb.shape[:-1])
        return ga, gb


class ToDevice(Op):
    """A copy between devices; the gradient is copied back."""

    @staticmethod
    def forward(ctx, a, device=None):
        ctx.src = backend.device_of(a)
        return backend.to_device(a, device)

    @staticmethod
    def backward(ctx, g):
        return ToDevice.run(g, device=ctx.src)

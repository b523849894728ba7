"""Reductions with their gradients: sum, mean, amax/amin, max/min with indices, prod, norm.

Composite reductions (var, std, logsumexp, general p-norms) live on the Tensor and are built
from these and the elementwise primitives, so they need no rule of their own.
"""
from __future__ import annotations

import numpy as np

from .. import backend, kernels
from ..kernels import softmax as _softmax_kernels
from ..autograd.graph import Op


def normalize_axis(dim, ndim, name="dim"):
    """``dim`` (None, int or sequence, negatives allowed) as a sorted tuple of axes, or None."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    nd = max(ndim, 1)
    out = []
    for d in dims:
        if not -nd <= d < nd:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-nd}, {nd - 1}], "
                             f"but got {d})")
        out.append(d % nd)
    return tuple(sorted(out)) if ndim else ()


def kept_shape(shape, axis):
    """``shape`` with the reduced axes kept as size 1 (what keepdims=True gives)."""
    if axis is None:
        return (1,) * len(shape)
    return tuple(1 if i in axis else s for i, s in enumerate(shape))


class Sum(Op):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False, dtype=None):
        if axis is not None:  # (a full sum's gradient needs no reshaping: nothing kept)
            ctx.kshape = kept_shape(a.shape, axis)
        elif a.size >= _BLAS_SUM_MIN and not keepdims and dtype is None and \
                type(a) is np.ndarray and a.dtype.kind == "f" and a.dtype.itemsize >= 4 and \
                a.flags.c_contiguous:
            return _blas_sum(a)
        return a.sum(axis=axis, keepdims=keepdims, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        kshape = getattr(ctx, "kshape", None)
        # the engine broadcasts it back to the input's shape
        return g if kshape is None else g.reshape(kshape)


_BLAS_SUM_MIN = 32768   # below, NumPy's own sum is as fast (16384 float32: 5.0 against 8.2 µs)
_SUM_ROW = 512
_SUM_ONES = {}   # dtype -> read-only ones of _SUM_ROW (np.ones: 2 µs a call)


def _blas_sum(a):
    """The whole sum of the contiguous float32/float64 NumPy array ``a`` as sums of rows of
    512 elements through BLAS (a matrix-vector product with ones), then NumPy's pairwise sum
    of those: at (128, 1024) float32 12.5 µs against 29.5 µs for ``a.sum()`` (a loss's
    ``sum()``; PyTorch's is 14–19). Rows of 512 keep the error that of ``a.sum()`` and
    PyTorch's: (129, 1001) float32, 30 draws, median / largest error against the float64 sum
    relative to ``sum(|a|)``: 3.8e-10 / 1.6e-9 (``a.sum()`` 2.9e-10 / 9.7e-10, PyTorch 3.4e-10
    / 1.1e-9; rows of 1024: 7.3e-10 / 1.6e-9), at mean 1: 2.3e-8 / 8.2e-8 (6.0e-8, 7.3e-8)."""
    ones = _SUM_ONES.get(a.dtype)
    if ones is None:
        ones = _SUM_ONES[a.dtype] = np.ones(_SUM_ROW, a.dtype)
        ones.flags.writeable = False
    m = a.size // _SUM_ROW
    if m * _SUM_ROW == a.size:
        return np.matmul(a.reshape(m, _SUM_ROW), ones).sum()
    flat = a.reshape(-1)
    return np.matmul(flat[:m * _SUM_ROW].reshape(m, _SUM_ROW), ones).sum() + \
        flat[m * _SUM_ROW:].sum()


class Mean(Op):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.kshape = kept_shape(a.shape, axis)
        ctx.count = a.size // max(1, _prod(ctx.kshape)) if a.size else 0
        return a.mean(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.kshape) / ctx.count


def _prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


class AMax(Op):
    """Max (or min, with ``smallest``) over axes; ties share the gradient evenly, as PyTorch."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False, smallest=False):
        if a.size == 0:
            raise RuntimeError("max(): Expected reduction dim to be specified for input.numel() == 0, "
                               "or the input to be non-empty")
        out = a.min(axis=axis, keepdims=True) if smallest else a.max(axis=axis, keepdims=True)
        mask = a == out
        ctx.share = mask / mask.sum(axis=axis, keepdims=True)
        ctx.kshape = out.shape
        return out if keepdims else out.reshape(tuple(s for i, s in enumerate(a.shape)
                                                      if axis is not None and i not in axis))

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.kshape) * ctx.share


class MaxWithIndices(Op):
    """``max(dim)``/``min(dim)``: values and indices; the gradient goes to the chosen index."""
    non_differentiable_outputs = (1,)

    @staticmethod
    def forward(ctx, a, axis=0, keepdims=False, smallest=False):
        xp = backend.get_array_module(a)
        if a.shape[axis] == 0:
            raise IndexError(f"max(): Expected reduction dim {axis} to have non-zero size.")
        idx = (a.argmin(axis=axis) if smallest else a.argmax(axis=axis))
        idx_k = xp.expand_dims(idx, axis)
        values = xp.take_along_axis(a, idx_k, axis=axis)
        shape = [1] * a.ndim
        shape[axis] = a.shape[axis]
        ctx.onehot = xp.arange(a.shape[axis]).reshape(shape) == idx_k
        ctx.kshape = idx_k.shape
        if not keepdims:
            return values.reshape(idx.shape), idx.astype(xp.int64, copy=False)
        return values, idx_k.astype(xp.int64, copy=False)

    @staticmethod
    def backward(ctx, g, g_idx):
        return g.reshape(ctx.kshape) * ctx.onehot


class Prod(Op):
    """Product over one axis (or all); exact where inputs are zero (no division)."""
    once_differentiable = True

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.save_for_backward(a)
        ctx.axis, ctx.keepdims = axis, keepdims
        return a.prod(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        xp = ctx.xp
        axis = ctx.axis
        flat = a.reshape(-1) if axis is None else a
        ax = 0 if axis is None else axis
        ones_shape = list(flat.shape)
        ones_shape[ax] = 1
        one = xp.ones(ones_shape, dtype=a.dtype)
        # product of all other elements = (exclusive cumprod from the left) * (from the right)
        left = xp.cumprod(xp.concatenate([one, flat], axis=ax), axis=ax)
        left = xp.take(left, xp.arange(flat.shape[ax]), axis=ax)
        rev = xp.flip(flat, axis=ax)
        right = xp.cumprod(xp.concatenate([one, rev], axis=ax), axis=ax)
        right = xp.flip(xp.take(right, xp.arange(flat.shape[ax]), axis=ax), axis=ax)
        others = (left * right).reshape(a.shape)
        gk = g if (axis is None or ctx.keepdims) else xp.expand_dims(g, axis)
        return gk * others


class Norm2(Op):
    """The 2-norm over axes; its gradient is 0 (not NaN) at the zero vector, as PyTorch's."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        xp = backend.get_array_module(a)
        out = xp.sqrt((a * a).sum(axis=axis, keepdims=True))
        ctx.save_for_backward(a)
        ctx.axis, ctx.kshape = axis, out.shape
        return out if keepdims else out.reshape(tuple(s for i, s in enumerate(a.shape)
                                                      if axis is not None and i not in axis))

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        xp = ctx.xp
        out = xp.sqrt((a * a).sum(axis=ctx.axis, keepdims=True))  # recomputed: differentiable
        safe = xp.where(out == 0, 1.0, out)
        return g.reshape(ctx.kshape) * xp.where(out == 0, 0.0, a / safe)


def _softmax_array(a, axis):
    e = backend.get_array_module(a).exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax_array(a, axis):
    shifted = a - a.max(axis=axis, keepdims=True)
    xp = backend.get_array_module(a)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def _rows(a, dim):
    """``a`` as (rows, k) for ddp.kernels' row passes when ``dim`` is its last axis and
    :func:`kernels.fits` takes it, else None."""
    if a.ndim and dim in (-1, a.ndim - 1) and kernels.fits(a):
        return a.reshape(-1, a.shape[-1])
    return None


def _rows_of(g, y):
    """The upstream gradient ``g`` as ``y``'s (rows, k) (contiguous, of its dtype)."""
    return np.ascontiguousarray(g, y.dtype).reshape(y.shape)


class Softmax(Op):
    """``exp(x) / sum(exp(x))`` along ``dim`` (shifted by the max: never overflows); along
    the last axis of a float32/64 NumPy array in ddp.kernels' row passes (at (128, 1000)
    forward and backward 2.75x PyTorch's time with NumPy's passes)."""

    @staticmethod
    def forward(ctx, a, dim=-1):
        rows = _rows(a, dim)
        out = _softmax_array(a, dim) if rows is None else \
            _softmax_kernels.softmax(rows).reshape(a.shape)
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved_tensors
        rows = None if ctx.create_graph else _rows(y, ctx.dim)
        if rows is not None:
            return _softmax_kernels.softmax_backward(rows, _rows_of(g, rows)).reshape(y.shape)
        return y * (g - (g * y).sum(axis=ctx.dim, keepdims=True))


class LogSoftmax(Op):
    """``x - logsumexp(x)`` along ``dim`` (shifted by the max: never overflows); along the
    last axis as :class:`Softmax`."""

    @staticmethod
    def forward(ctx, a, dim=-1):
        rows = _rows(a, dim)
        out = _log_softmax_array(a, dim) if rows is None else \
            _softmax_kernels.log_softmax(rows).reshape(a.shape)
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g):
        out, = ctx.saved_tensors
        rows = None if ctx.create_graph else _rows(out, ctx.dim)
        if rows is not None:
            return _softmax_kernels.log_softmax_backward(rows, _rows_of(g, rows)) \
                .reshape(out.shape)
        return g - ctx.xp.exp(out) * g.sum(axis=ctx.dim, keepdims=True)


class CumSum(Op):
    """A running sum along ``axis``."""

    @staticmethod
    def forward(ctx, a, axis=0):
        ctx.axis = axis
        return backend.get_array_module(a).cumsum(a, axis=axis)

    @staticmethod
    def backward(ctx, g):
        # the adjoint of a running sum is a running sum from the other end
        xp, axis = ctx.xp, ctx.axis
        return xp.flip(xp.cumsum(xp.flip(g, axis), axis=axis), axis)

"""Diagonals and triangles of matrices, with their gradients: ``diag``, ``diagonal``,
``diag_embed``, ``triu``/``tril``.

``Diagonal`` (read a diagonal out) and ``DiagEmbed`` (write a vector onto one) are each other's
adjoint, so each backward calls the other and higher-order gradients follow. A triangle's
adjoint is the same triangle of the incoming gradient.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd.graph import Op


def _diag_index(n_rows, n_cols, offset):
    """Row and column indices of diagonal ``offset`` of an ``n_rows x n_cols`` matrix."""
    start_r, start_c = (0, offset) if offset >= 0 else (-offset, 0)
    length = max(0, min(n_rows - start_r, n_cols - start_c))
    return np.arange(start_r, start_r + length), np.arange(start_c, start_c + length)


class Diagonal(Op):
    """``a.diagonal(offset, dim1, dim2)``: the diagonal moved to the last dimension (a copy)."""

    @staticmethod
    def forward(ctx, a, offset=0, dim1=0, dim2=1):
        ctx.in_shape, ctx.args = a.shape, (offset, dim1, dim2)
        return backend.get_array_module(a).diagonal(a, offset, dim1, dim2).copy()

    @staticmethod
    def backward(ctx, g):
        offset, dim1, dim2 = ctx.args
        return DiagEmbed.run(g, offset=offset, dim1=dim1, dim2=dim2,
                             n=(ctx.in_shape[dim1], ctx.in_shape[dim2]))


class DiagEmbed(Op):
    """A zero tensor with ``a``'s last dimension written along diagonal ``offset`` of the new
    dimensions ``dim1``, ``dim2`` (sized ``n``, default: the smallest square that holds it)."""

    @staticmethod
    def forward(ctx, a, offset=0, dim1=-2, dim2=-1, n=None):
        xp = backend.get_array_module(a)
        k = a.shape[-1]
        if n is None:
            n = (k + abs(offset),) * 2
        ndim = a.ndim + 1
        d1, d2 = dim1 % ndim, dim2 % ndim
        ctx.args = (offset, d1, d2)
        rows, cols = _diag_index(n[0], n[1], offset)
        batch = a.shape[:-1]
        out = xp.zeros(batch + tuple(n), dtype=a.dtype)
        out[..., rows, cols] = a[..., :len(rows)]
        # the two new dimensions sit last; move them to dim1 and dim2
        order = list(range(len(batch)))
        for d, src in sorted(((d1, len(batch)), (d2, len(batch) + 1))):
            order.insert(d, src)
        return xp.ascontiguousarray(xp.transpose(out, order))

    @staticmethod
    def backward(ctx, g):
        offset, d1, d2 = ctx.args
        return Diagonal.run(g, offset=offset, dim1=d1, dim2=d2)


class Triangle(Op):
    """``triu`` (``upper=True``) or ``tril`` of the last two dimensions, from diagonal ``k``."""

    @staticmethod
    def forward(ctx, a, k=0, upper=True):
        ctx.args = (k, upper)
        xp = backend.get_array_module(a)
        return xp.triu(a, k) if upper else xp.tril(a, k)

    @staticmethod
    def backward(ctx, g):
        k, upper = ctx.args
        return Triangle.run(g, k=k, upper=upper)

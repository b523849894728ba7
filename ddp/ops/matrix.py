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


def parse_einsum(equation, shapes):
    """``equation`` with its ellipses written out as letters: (input subscripts, output).

    Implicit output (no ``->``): the ellipsis dimensions, then the letters that appear once,
    in alphabetical order (PyTorch's and NumPy's rule).
    """
    import string
    from collections import Counter
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    ins = lhs.split(",")
    if len(ins) != len(shapes):
        raise RuntimeError(f"einsum(): {'more' if len(shapes) > len(ins) else 'fewer'} operands "
                           f"were provided than specified in the equation '{equation}' "
                           f"({len(shapes)} operands, {len(ins)} subscripts)")
    for s in ins + [out]:
        bad = [c for c in s.replace("...", "") if not c.isalpha()]
        if bad:
            raise RuntimeError(f"einsum(): invalid subscript '{bad[0]}' in the equation "
                               f"'{equation}': subscripts must be letters [a-zA-Z]")
    used = {c for c in eq if c.isalpha()}
    free = [c for c in string.ascii_uppercase + string.ascii_lowercase if c not in used]
    widths = [len(shape) - (len(s) - 3) for s, shape in zip(ins, shapes) if "..." in s]
    n_ell = max(widths, default=0)
    ell = "".join(free[:n_ell])
    full = []
    for i, (s, shape) in enumerate(zip(ins, shapes)):
        if "..." in s:
            k = len(shape) - (len(s) - 3)
            if k < 0:
                raise RuntimeError(f"einsum(): the number of subscripts in the equation "
                                   f"({len(s) - 3}) is more than the number of dimensions "
                                   f"({len(shape)}) for operand {i}")
            s = s.replace("...", ell[n_ell - k:])
        if len(s) != len(shape):
            raise RuntimeError(f"einsum(): the number of subscripts in the equation ({len(s)}) "
                               f"does not match the number of dimensions ({len(shape)}) for "
                               f"operand {i} and no ellipsis was given")
        full.append(s)
    if not arrow:
        counts = Counter(c for s in full for c in s if c not in ell)
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1))
    else:
        out = out.replace("...", ell)
        for c in out:
            if not any(c in s for s in full):
                raise RuntimeError(f"einsum(): output subscript {c} does not appear in the "
                                   f"equation for any input operand")
    sizes = {}
    for i, (s, shape) in enumerate(zip(full, shapes)):
        for c, n in zip(s, shape):
            if sizes.setdefault(c, n) != n and 1 not in (n, sizes[c]):
                raise RuntimeError(f"einsum(): operands do not broadcast with remapped shapes "
                                   f"(original->remapped): subscript {c} has size {sizes[c]} and "
                                   f"{n} (operand {i}, shapes {[list(x) for x in shapes]})")
            if sizes[c] == 1:
                sizes[c] = n
    return tuple(full), out


class Einsum(Op):
    """``einsum`` over subscripts with the ellipses written out (:func:`parse_einsum`).

    The gradient of operand ``i`` is the einsum of the incoming gradient with the other
    operands onto ``i``'s subscripts; a letter only operand ``i`` has (summed inside it) comes
    back as a size-1 dimension that the engine broadcasts. A letter repeated within one operand
    (a diagonal, ``'ii->i'``) has no gradient rule here."""
    fresh_grads = False

    @staticmethod
    def forward(ctx, *arrays, subs=None, out=None):
        ctx.save_for_backward(*arrays)
        ctx.subs, ctx.out = subs, out
        ctx.shapes = [a.shape for a in arrays]
        xp = backend.get_array_module(*arrays)
        res = xp.einsum(",".join(subs) + "->" + out, *arrays, optimize=len(arrays) > 2)
        return res if res.dtype == arrays[0].dtype else res.astype(arrays[0].dtype)

    @staticmethod
    def backward(ctx, g):
        arrays = ctx.saved_tensors
        grads = []
        for i, s in enumerate(ctx.subs):
            if not ctx.needs_input_grad[i]:
                grads.append(None)
                continue
            if len(set(s)) != len(s):
                raise NotImplementedError(f"einsum: no gradient through the repeated subscript "
                                          f"of operand {i} ('{s}'); write the diagonal with "
                                          f"ddp.diagonal first")
            others = [j for j in range(len(ctx.subs)) if j != i]
            seen = set(ctx.out).union(*(ctx.subs[j] for j in others))
            target = "".join(c for c in s if c in seen)
            gi = Einsum.run(g, *(arrays[j] for j in others),
                            subs=(ctx.out, *(ctx.subs[j] for j in others)), out=target)
            if target != s:
                gi = gi.reshape(tuple(n if c in seen else 1 for c, n in zip(s, ctx.shapes[i])))
            grads.append(gi)
        return tuple(grads)

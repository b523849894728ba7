"""Batch, layer, group and instance normalisation as one fused op with the closed-form backward
(statistics recomputed with recorded ops under ``create_graph``), and ``normalize``.
"""
from __future__ import annotations

import math
import numbers
import numpy as np
from ... import backend, kernels
from ...kernels import normalization as _kernels
from ...ops.autocast import autocast_op
from ...autograd.grad_mode import no_grad
from ...autograd.graph import Op
from ._helpers import _shape



class _Normalize(Op):
    """``y = (x - mean) * invstd * weight + bias`` with the closed-form backward.

    ``x`` seen as ``group_shape`` has its statistics (``mean``, ``invstd``, broadcastable there)
    over ``axes``; ``weight``/``bias`` (or None) broadcast over ``x`` as ``affine_shape``.
    ``batch_stats`` says the statistics were computed from ``x`` (training); otherwise they are
    constants (BatchNorm in eval mode) and the input gradient is a plain scaling. ``centered``:
    ``x - mean`` when the caller has it (a scratch array the op may overwrite). Saved: ``x``,
    the weight and the statistics — not ``x_hat``, which backward recomputes (two passes), as
    PyTorch's kernels keep the input and the statistics. Under create_graph the backward
    recomputes the normalised input from ``x`` with recorded ops, so the same formulas give
    second-order gradients.
    """

    # the fused CPU kernel of ddp.kernels.normalization: its forward, its backward and the
    # shape it sees the input as, kernel_shape(input's shape, group_shape, affine_shape); or None
    kernel = None

    @staticmethod
    def forward(ctx, x, weight, bias, mean=None, invstd=None, group_shape=None, axes=None,
                affine_shape=None, batch_stats=True, eps=1e-5, centered=None, normalized=None):
        ctx.fused = normalized is not None
        if ctx.fused:   # the kernel's output (see _normalize)
            ctx.save_for_backward(x, weight)
            ctx.params = (mean, invstd, group_shape, axes, affine_shape, batch_stats, eps)
            return normalized.reshape(x.shape)
        xp = backend.get_array_module(x)
        stats_row, affine_row = _rows(x, group_shape, invstd, affine_shape)
        token = _row_buffer(xp, None, stats_row)
        y = centered if centered is not None and centered.dtype == x.dtype else \
            x.reshape(group_shape) - mean
        if weight is not None and invstd.shape == tuple(affine_shape):
            y *= invstd * weight.reshape(affine_shape)   # batch norm: one factor, one pass
            y = y.reshape(x.shape)
        elif weight is not None and _per_group(x, group_shape, invstd, affine_shape):
            # group norm: one factor per sample and channel, one pass over H W rows
            n, c = x.shape[0], x.shape[1]
            f = xp.repeat(invstd.reshape(n, invstd.shape[1]), c // invstd.shape[1], axis=1) * weight.reshape(c)
            token = _row_buffer(xp, token, affine_row)
            y = y.reshape(n, c, math.prod(x.shape[2:]))   # (from the groups' shape)
            y *= f.reshape(n, c, 1)
            y = y.reshape(x.shape)
        else:
            y *= invstd
            y = y.reshape(x.shape)
            token = _row_buffer(xp, token, affine_row)
            if weight is not None:
                y *= weight.reshape(affine_shape)
        if bias is not None:
            token = _row_buffer(xp, token, affine_row)
            y += bias.reshape(affine_shape)
        _row_buffer(xp, token, 0)
        if y.dtype != x.dtype:   # low-precision x with float32 statistics
            y = y.astype(x.dtype)
        ctx.save_for_backward(x, weight)
        ctx.params = (mean, invstd, group_shape, axes, affine_shape, batch_stats, eps)
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        mean, invstd, group_shape, axes, affine_shape, batch_stats, eps = ctx.params
        need_x, need_w, need_b = ctx.needs_input_grad
        xp = ctx.xp
        xr = x.reshape(group_shape)
        if ctx.create_graph:  # xhat (and batch statistics) as recorded ops on x
            if batch_stats:
                mean = xr.mean(axis=axes, keepdims=True)
                invstd = 1 / xp.sqrt(((xr - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
            xh = (xr - mean) * invstd
            stats_row = affine_row = 0
        else:
            stats_row, affine_row = _rows(x, group_shape, invstd, affine_shape)
            if not g.flags.c_contiguous:   # e.g. sum()'s broadcast ones: (1, C, 1, 1) over a
                affine_row = 0             # stride-0 g is 2.5x slower with the small buffer
            token = _row_buffer(xp, None, stats_row)
            xh = xr - mean
            xh *= invstd
            _row_buffer(xp, token, 0)   # the reductions with the default buffer (faster)
            if xh.dtype != x.dtype:
                xh = xh.astype(x.dtype)
        xhat = xh.reshape(x.shape)
        # weight and bias broadcast as affine_shape: their gradients sum the other axes
        full = (1,) * (g.ndim - len(affine_shape)) + tuple(affine_shape)
        param_axes = tuple(i for i, s in enumerate(full) if s == 1)
        gx = gw = gb = None
        if need_w:
            gw = ((g * xhat).sum(axis=param_axes) if ctx.create_graph else
                  _sum_product(xp, g, xhat, param_axes)).reshape(weight.shape)
        if need_b:
            gb = (g.sum(axis=param_axes) if ctx.create_graph else
                  _sum(xp, g, param_axes)).reshape(ctx.in_meta[2][0])
        if need_x:
            token = _row_buffer(xp, None, affine_row)
            gxhat = g if weight is None else g * weight.reshape(affine_shape)
            _row_buffer(xp, token, 0)
            gxhat = gxhat.reshape(group_shape)
            if batch_stats:
                mean_g, mean_gxh = ctx.op.batch_means(ctx, gxhat, xh, axes)
            token = _row_buffer(xp, None, stats_row)
            if batch_stats:
                if ctx.create_graph:
                    gxhat = gxhat - mean_g - xh * mean_gxh
                else:   # in place on the arrays this backward made
                    if weight is None:   # gxhat is the incoming gradient: not ours to change
                        gxhat = gxhat - mean_g
                    else:
                        gxhat -= mean_g
                    xh *= mean_gxh
                    gxhat -= xh
            if ctx.create_graph or (weight is None and not batch_stats):
                gx = (gxhat * invstd).reshape(x.shape)
            else:   # gxhat is an array this backward made
                gxhat *= invstd
                gx = gxhat.reshape(x.shape)
            _row_buffer(xp, token, 0)
        return gx, gw, gb

    @staticmethod
    def fused_backward(ctx, g):
        """The gradients through the op's kernel, the weight's and bias's written into their
        gradient sinks where offered; None where the kernel's forward did not run."""
        if not ctx.fused or ctx.create_graph:
            return None
        x, weight = ctx.saved_tensors
        mean, invstd, group_shape, _, affine_shape = ctx.params[:5]
        backward, kernel_shape = ctx.op.kernel[1:]
        shape = kernel_shape(x.shape, group_shape, affine_shape)
        stats = (x.shape[0], -1) if len(shape) == 4 else (-1,)
        g = np.ascontiguousarray(g, x.dtype)   # (no copy when it is: the common case)
        w_out, w_flat, w_scale = _flat_sink(ctx, 1)
        b_out, b_flat, b_scale = _flat_sink(ctx, 2)
        gx, gw, gb = backward(x.reshape(shape), g.reshape(shape), weight, mean.reshape(stats),
                              invstd.reshape(stats), ctx.needs_input_grad, w_flat, b_flat,
                              w_scale, b_scale)
        if gx is not None:
            gx = gx.reshape(x.shape)
        if gw is not None:
            gw = gw.reshape(weight.shape) if w_out is None else w_out
        if gb is not None:
            gb = gb.reshape(ctx.in_meta[2][0]) if b_out is None else b_out
        return gx, gw, gb

    @staticmethod
    def batch_means(ctx, gxhat, xh, axes):
        """The two means over the statistics' ``axes`` that the input gradient subtracts, of
        ``gxhat`` and of ``gxhat * xh`` (SyncBatchNorm takes them over every rank's batch)."""
        if ctx.create_graph:
            return gxhat.mean(axis=axes, keepdims=True), (gxhat * xh).mean(axis=axes,
                                                                           keepdims=True)
        return _mean(ctx.xp, gxhat, axes), _mean(ctx.xp, gxhat, axes, xh)


def _flat_sink(ctx, i):
    """Input ``i``'s gradient sink (DDP's bucket: see ``Node.gradient_sink``) as ``(the array,
    a flat view of it, the scale)`` where a kernel can write it, else ``(None, None, 1.0)``."""
    sink = ctx.gradient_sink(i)
    if sink is None or not kernels.fits(sink[0]):
        return None, None, 1.0
    return sink[0], sink[0].reshape(-1), sink[1]


def _per_group(x, group_shape, invstd, affine_shape):
    """Statistics per sample and group of channels, ``invstd`` (N, G, 1) over ``x`` seen as
    (N, G, C/G H W), and a weight per channel, (1, C, 1, ...): group norm's shapes."""
    return len(group_shape) == 3 and x.ndim >= 2 and invstd.ndim == 3 and \
        tuple(group_shape[:2]) == invstd.shape[:2] == (x.shape[0], invstd.shape[1]) and \
        x.shape[1] % invstd.shape[1] == 0 and \
        tuple(affine_shape) == (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _rows(x, group_shape, invstd, affine_shape):
    """The rows (``backend.broadcast_row``) of the op's broadcasting passes over the array
    ``x``: of the statistics (``invstd`` over ``x`` seen as ``group_shape``: a group's C/G H W
    in group norm) and of the weight and bias (``affine_shape`` over ``x``: H W); 0 and 0 where
    ``x`` is not contiguous (a transposed operand can be slower with a small buffer)."""
    if not x.flags.c_contiguous:
        return 0, 0
    return (backend.broadcast_row(x.reshape(group_shape).shape, invstd.shape),
            backend.broadcast_row(x.shape, tuple(affine_shape)))


def _row_buffer(xp, token, k):
    """Undo ``token`` (of :func:`backend.row_buffer`, or None), then set NumPy's buffer of one
    row of ``k`` elements for the next passes (None where ``row_buffer`` sets nothing: rows
    shorter than 512, or 0). Each kind of pass gets its own: a buffer of a group's run makes
    a pass over shorter H W rows slower, and reductions are faster with the default buffer
    ((32, 32, 784) ``sum((0, 2))`` 181 -> 221 µs with 1024)."""
    if token is not None:
        backend.restore_fp(token)
    return backend.row_buffer(xp, k) if k else None


def _trailing(a, axes):
    """``a`` as (rows, columns) when ``axes`` are its last dimensions and BLAS can reduce it
    (float32/float64), else None."""
    if a.dtype.kind != "f" or a.dtype.itemsize < 4 or not a.flags.c_contiguous \
            or tuple(axes) != tuple(range(a.ndim - len(axes), a.ndim)):
        return None
    return a.reshape(-1, math.prod(a.shape[a.ndim - len(axes):]))


def _channel_sums(xp, a):
    """The per-channel sums of the contiguous (N, C, HW) array ``a``: a matrix-vector product
    over its (N C, HW) rows, then a sum over N (a reduction over axes (0, 2) walks the array
    strided)."""
    n, c, k = a.shape
    return xp.matmul(a.reshape(n * c, k), xp.ones(k, a.dtype)).reshape(n, c).sum(axis=0)


def _mean(xp, a, axes, b=None):
    """The mean of ``a`` (or of ``a * b``) over ``axes``, kept as size-1 dims. Over trailing
    dimensions as one matrix-vector product (or a row-wise dot): at (128, 1024) float32 that is
    7 us (15 us with ``b``) against 22 us (35 us) for ``sum(axis=-1)`` (``(a * b).sum(-1)``)."""
    rows = _trailing(a, axes)
    if rows is not None and (b is None or b.shape == a.shape and b.flags.c_contiguous):
        n = rows.shape[1]
        if b is None:
            s = xp.matmul(rows, xp.full((n,), 1.0 / n, a.dtype))
        else:
            s = xp.einsum("ij,ij->i", rows, b.reshape(rows.shape)) * (1.0 / n)
        keep = tuple(1 if i in axes else d for i, d in enumerate(a.shape))
        return s.reshape(keep)
    return (a if b is None else a * b).mean(axis=axes, keepdims=True)


def _rows3(a):
    """``a`` as (N, C, the rest): the per-channel rows (sized, not -1: an empty batch has them)."""
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def _row_dots(xp, a, b):
    """The dot products of the rows of the (rows, k) arrays ``a`` and ``b``: ``vecdot`` calls
    BLAS's dot per row, 12 µs at (128, 1024) float32 against 25 µs for ``(a * b) @ ones`` and
    33 µs for the row-wise ``einsum`` (kept where the array module has no ``vecdot``)."""
    if hasattr(xp, "vecdot"):
        return xp.vecdot(a, b)
    return xp.einsum("ij,ij->i", a, b)


def _sum_product(xp, a, b, axes):
    """``(a * b).sum(axes)`` without the product array where the summed axes lead (the weight
    gradient of layer norm: a column-wise dot) or are all but the channels' (the weight
    gradient of group norm and of batch norm's generic backward: row-wise dots over the (N C,
    H W) rows, then a sum over N — at (32, 32, 28, 28) float32 109 µs against 369)."""
    if a.dtype.kind == "f" and a.shape == b.shape and a.flags.c_contiguous and \
            b.flags.c_contiguous and a.dtype == b.dtype:
        if tuple(axes) == tuple(range(len(axes))):
            k = math.prod(a.shape[:len(axes)])
            m = math.prod(a.shape[len(axes):])
            return xp.einsum("ij,ij->j", a.reshape(k, m), b.reshape(k, m))
        if _per_channel(a, axes):
            n, c = a.shape[0], a.shape[1]
            m = math.prod(a.shape[2:])
            return _row_dots(xp, a.reshape(n * c, m), b.reshape(n * c, m)).reshape(n, c) \
                .sum(axis=0)
    return (a * b).sum(axis=axes)


def _sum(xp, a, axes):
    """``a.sum(axes)``; over all but the channels of a contiguous float32/64 ``a`` through
    :func:`_channel_sums` (the bias gradient: at (32, 32, 28, 28) 57 µs against 185)."""
    if _per_channel(a, axes) and a.flags.c_contiguous:
        return _channel_sums(xp, _rows3(a))
    return a.sum(axis=axes)


def _per_channel(a, axes):
    """``axes`` are all of ``a``'s but its channels (axis 1), and BLAS can reduce ``a``."""
    return a.ndim >= 3 and tuple(axes) == (0,) + tuple(range(2, a.ndim)) and \
        a.dtype.kind == "f" and a.dtype.itemsize >= 4


class NativeBatchNorm(_Normalize):
    """:class:`_Normalize` for batch_norm (its own name in ``grad_fn``), with a backward of its
    own for batch statistics of a contiguous float input (training mode)."""
    writes_grad_sinks = True   # (through the kernel)
    kernel = (_kernels.batch_norm_forward, _kernels.batch_norm_backward,
              lambda shape, group_shape, affine_shape: (shape[0], shape[1],
                                                        math.prod(shape[2:])))

    @staticmethod
    def backward(ctx, g):
        grads = _Normalize.fused_backward(ctx, g)
        if grads is not None:
            return grads
        x, weight = ctx.saved_tensors
        mean, invstd, _, _, _, batch_stats, _ = ctx.params
        if ctx.create_graph or not batch_stats or x.dtype.kind != "f" or \
                x.dtype.itemsize < 4 or not x.flags.c_contiguous or \
                weight is not None and weight.dtype != x.dtype or mean.dtype != x.dtype:
            return _Normalize.backward(ctx, g)
        # each broadcasting pass per channel over (N, C, H W): a buffer of one H W row
        token = backend.row_buffer(ctx.xp, math.prod(x.shape[2:]))
        try:
            return _channels_backward(ctx.xp, ctx.needs_input_grad, x, g, weight,
                                      mean.reshape(1, -1, 1), invstd.reshape(1, -1, 1),
                                      ctx.in_meta)
        finally:
            if token is not None:
                backend.restore_fp(token)


def _channels_backward(xp, needs, x, g, weight, mean, invstd, in_meta, groups=0):
    """Batch norm's gradients for ``x`` (N, C, *) with per-channel ``mean``/``invstd`` (1, C,
    1), or group norm's (``groups``) with ``mean``/``invstd`` (N, G, 1) per sample and group:
    the sums per sample and channel, of ``g`` and of ``p = g (x - mean)``, are a matrix-vector
    product and row-wise dots over the (N C, HW) rows (NumPy's reductions over axes (0, 2, 3)
    walk the array strided); the weight's and bias's gradients sum them over N; the input's
    gradient is ``A g - B (x - mean) - C``: with ``h = w g``, ``A = invstd w`` per channel (and
    sample), ``B = invstd^3 mean(h (x - mean))``, ``C = invstd mean(h)`` per statistics' group,
    the means over it (batch norm: the channel over N; group norm: the sample's channels of the
    group, where ``w`` varies). Five passes over the array and two BLAS reads instead of nine
    passes and four reductions; group norm's ``x - mean`` and its ``B`` and ``C`` passes run
    over the group's rows (N G, C/G HW), a quarter as many as the channels' at 8 groups of 32
    channels — each row of a broadcasting pass costs an inner-loop call."""
    need_x, need_w, need_b = needs
    n, c = x.shape[0], x.shape[1]
    x3 = _rows3(x)
    k = x3.shape[2]
    g3 = g.reshape(x3.shape)
    own = g3.dtype != x.dtype or not g3.flags.c_contiguous   # e.g. a transposed gradient
    if own:
        g3 = xp.ascontiguousarray(g3, x.dtype)
    rows = g3.reshape(n * c, k)
    sum_g = xp.matmul(rows, xp.ones(k, x.dtype)).reshape(n, c)
    gx = gw = gb = None
    if need_b:
        gb = sum_g.sum(axis=0).reshape(in_meta[2][0])
    if not (need_x or need_w):
        return gx, gw, gb
    d, s = _centred(xp, x, mean, invstd, groups)
    sum_p = _row_dots(xp, d.reshape(n * c, k), rows).reshape(n, c)
    if need_w:
        gw = (sum_p * s).sum(axis=0).reshape(weight.shape)
    if need_x:
        w = None if weight is None else weight.reshape(c)
        a = s if w is None else s * w
        if w is not None:
            sum_g, sum_p = sum_g * w, sum_p * w
        if groups:   # the group's sums
            m = c // groups
            per = 1.0 / (m * k)
            s = invstd.reshape(n, groups)
            sum_g, sum_p = (t.reshape(n, groups, m).sum(axis=2) for t in (sum_g, sum_p))
        else:
            per = 1.0 / (n * k)
            sum_g, sum_p = sum_g.sum(axis=0), sum_p.sum(axis=0)
        b = (s * s * s * (sum_p * per)).reshape(-1, d.shape[1], 1)
        cc = (s * (sum_g * per)).reshape(-1, d.shape[1], 1)
        a = a.reshape(-1, c, 1)
        if _divides(xp, w):   # a (g - (B/a) d - C/a), into d: no second array of the size
            if groups:
                b, cc = (xp.repeat(t, m, axis=1) for t in (b, cc))
            gx = d.reshape(x3.shape)
            gx *= b / a
            gx += cc / a
            xp.subtract(g3, gx, out=gx)
            gx *= a
        else:
            gx = xp.multiply(g3, a, out=g3 if own else None)  # (ours: in place)
            d *= b
            gxd = gx.reshape(d.shape)
            gxd -= d
            gxd -= cc
        gx = gx.reshape(in_meta[0][0])
    return gx, gw, gb


def _divides(xp, w):
    """Whether :func:`_channels_backward` may divide by ``A = invstd w`` to take the input's
    gradient into ``x - mean``: no weight (``invstd`` > 0), or one with no zero and no channel
    below 2^-10 of the largest (so that ``B/A`` and ``C/A`` stay in range) — NumPy only (the
    check reads the weight on the host). Writing into ``d`` instead of a new array: at (32,
    32, 28, 28) float32 a new array costs a pass writing 3.2 MB to memory, ~0.3 ms inside the
    step against ~0.13 ms for a pass in place."""
    if xp is not np:
        return False
    if w is None:
        return True
    m = np.abs(w)
    return bool(m.min() > 0) and bool(m.min() >= m.max() * 2.0 ** -10)


def _centred(xp, x, mean, invstd, groups):
    """``x - mean`` for :func:`_channels_backward` — over the group's rows (N, G, C/G HW) for
    group norm (``groups``), over (N, C, HW) for batch norm — and ``invstd`` per channel, (N,
    C) repeated over each group's channels or (1, C)."""
    n, c = x.shape[0], x.shape[1]
    if groups:
        m = c // groups
        return (x.reshape(n, groups, m * math.prod(x.shape[2:])) - mean,
                xp.repeat(invstd.reshape(n, groups), m, axis=1))
    return _rows3(x) - mean, invstd.reshape(1, c)


class NativeLayerNorm(_Normalize):
    """:class:`_Normalize` for layer_norm, with a backward of its own where the statistics and
    the weight are over the last dimensions of a contiguous float input (``nn.LayerNorm``)."""

    writes_grad_sinks = True   # (through the kernel)
    kernel = (_kernels.layer_norm_forward, _kernels.layer_norm_backward,
              lambda shape, group_shape, affine_shape: (-1, math.prod(affine_shape)))

    @staticmethod
    def forward(ctx, x, weight, bias, mean=None, invstd=None, group_shape=None, axes=None,
                affine_shape=None, batch_stats=True, eps=1e-5, centered=None, normalized=None):
        if normalized is not None or centered is None or centered.dtype != x.dtype or \
                not centered.flags.c_contiguous:
            ctx.rows = 0
            return _Normalize.forward(ctx, x, weight, bias, mean, invstd, group_shape, axes,
                                      affine_shape, batch_stats, eps, centered, normalized)
        ctx.fused = False
        # (rows, k) from _moments: each broadcasting operation strictly 2-D, with a buffer of
        # one row (see backend.row_buffer), in place on the centred input
        k = math.prod(affine_shape)
        y = centered.reshape(-1, k)
        token = backend.row_buffer(backend.get_array_module(y), k)
        y *= invstd.reshape(-1, 1)
        if weight is not None:
            y *= weight.reshape(k)
        if bias is not None:
            y += bias.reshape(k)
        if token is not None:
            backend.restore_fp(token)
        ctx.save_for_backward(x, weight)
        ctx.params = (mean, invstd, group_shape, axes, affine_shape, batch_stats, eps)
        # the rows' length for the backward's own formulas (x normalised and weighted over its
        # last k), where x is a contiguous float32/float64 array (the centred copy can be
        # contiguous when x is not) and the weight of its dtype; 0: the generic backward
        ctx.rows = k if x.dtype.kind == "f" and x.flags.c_contiguous and (
            weight is None or weight.dtype == x.dtype) else 0
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        grads = _Normalize.fused_backward(ctx, g)
        if grads is not None:
            return grads
        k = ctx.rows
        if not k or ctx.create_graph:
            return _Normalize.backward(ctx, g)
        x, weight = ctx.saved_tensors
        mean, invstd = ctx.params[:2]
        token = backend.row_buffer(ctx.xp, k)
        try:
            return _rows_backward(ctx.xp, ctx.needs_input_grad, x.reshape(-1, k), g, weight,
                                  mean.reshape(-1, 1), invstd.reshape(-1, 1), ctx.in_meta)
        finally:
            if token is not None:
                backend.restore_fp(token)


def _rows_backward(xp, needs, x, g, weight, mean, invstd, in_meta):
    """Layer norm's gradients for ``x`` (rows, k) normalised per row, ``mean``/``invstd``
    (rows, 1), in few passes over the arrays (NumPy makes one per operation; the reductions
    go through BLAS, which reads an array 2-3x faster than a ufunc pass):

    ``d = x - mean``, ``p = g d``; the weight's gradient is ``invstd @ p``, the bias's
    ``1 @ g``; with the row sums ``a = invstd (g @ w) / k`` and ``c = invstd^3 (p @ w) / k``,
    the input's is ``invstd g w - c d - a``, the row terms of PyTorch's CPU kernel; ``x -
    mean`` is taken first so that ``c`` and the weight's gradient do not subtract large sums
    when the mean is large against the spread. Seven passes, five of them in place (an
    operation writing into one of its operands reads and writes two arrays, not three: 15–17
    µs at (128, 1024) float32 against 21–25 µs): ``d`` is kept beside ``p`` to take ``c d`` in
    place, the input's gradient is written into ``p`` once ``p``'s sums are taken (or into
    ``g`` when this backward made ``g`` a contiguous copy), so the arrays alive are those of
    ``x - mean`` then ``p`` (as before) and no more."""
    need_x, need_w, need_b = needs
    n, k = x.shape
    g = g.reshape(x.shape)
    own = g.dtype != x.dtype or not g.flags.c_contiguous  # e.g. sum()'s broadcast ones
    if own:
        g = xp.ascontiguousarray(g, x.dtype)
    w = None if weight is None else weight.reshape(k)
    gx = gw = gb = None
    if need_b:
        gb = xp.matmul(xp.ones(n, x.dtype), g).reshape(in_meta[2][0])
    if not (need_x or need_w):
        return gx, gw, gb
    d = x - mean
    p = d * g if need_x else xp.multiply(d, g, out=d)
    if need_w:
        gw = xp.matmul(invstd.reshape(n), p).reshape(weight.shape)
    if need_x:
        sums = xp.ones(k, x.dtype) if w is None else w
        s = invstd * (1.0 / k)
        a = xp.matmul(g, sums).reshape(n, 1)
        a *= s
        c = xp.matmul(p, sums).reshape(n, 1)
        c *= s
        c *= invstd
        c *= invstd
        gx = xp.multiply(g, invstd, out=g if own else p)
        if w is not None:
            gx *= w
        d *= c
        gx -= d
        gx -= a
        gx = gx.reshape(in_meta[0][0])
    return gx, gw, gb


class NativeGroupNorm(_Normalize):
    """:class:`_Normalize` for group_norm, with batch norm's backward (``_channels_backward``)
    over its (N, C, H W) rows for a contiguous float input."""

    writes_grad_sinks = True   # (through the kernel)
    kernel = (_kernels.group_norm_forward, _kernels.group_norm_backward,
              lambda shape, group_shape, affine_shape: (
                  group_shape[0], group_shape[1], shape[1] // group_shape[1],
                  math.prod(shape[2:])))

    @staticmethod
    def backward(ctx, g):
        grads = _Normalize.fused_backward(ctx, g)
        if grads is not None:
            return grads
        x, weight = ctx.saved_tensors
        mean, invstd = ctx.params[:2]
        if ctx.create_graph or x.dtype.kind != "f" or x.dtype.itemsize < 4 or x.ndim < 2 or \
                not x.flags.c_contiguous or weight is not None and weight.dtype != x.dtype or \
                mean.dtype != x.dtype:
            return _Normalize.backward(ctx, g)
        # (a buffer of one H W row, as batch norm's: it cannot hold two of a group's rows
        # either, so the group's passes run unbuffered too)
        token = backend.row_buffer(ctx.xp, math.prod(x.shape[2:]))
        try:
            return _channels_backward(ctx.xp, ctx.needs_input_grad, x, g, weight, mean, invstd,
                                      ctx.in_meta, mean.shape[1])
        finally:
            if token is not None:
                backend.restore_fp(token)


def _moments(x, axes, centered=False):
    """Mean and biased variance of the array ``x`` over ``axes`` (kept as size-1 dims),
    accumulated in at least float32; with ``centered``, also ``x - mean`` (a new array)."""
    xp = backend.get_array_module(x)
    xf = x if x.dtype.itemsize >= 4 else x.astype(np.float32)
    rows = _trailing(xf, axes)
    if rows is None and xf.ndim >= 2 and tuple(axes) == (0,) + tuple(range(2, xf.ndim)) and \
            xf.dtype.kind == "f" and xf.flags.c_contiguous:   # batch norm's channels
        x3 = _rows3(xf)
        keep = (1, xf.shape[1]) + (1,) * (xf.ndim - 2)
        per = 1.0 / (x3.shape[0] * x3.shape[2])
        mean = (_channel_sums(xp, x3) * per).reshape(1, -1, 1)
        token = backend.row_buffer(xp, x3.shape[2])   # (see NativeBatchNorm.backward)
        d = x3 - mean
        if token is not None:
            backend.restore_fp(token)
        flat = d.reshape(-1, x3.shape[2])   # (N C, H W): the squares' sums without d * d
        var = (_row_dots(xp, flat, flat).reshape(x3.shape[:2]).sum(axis=0) * per).reshape(keep)
        mean, d = mean.reshape(keep), d.reshape(xf.shape)
    elif rows is None:
        mean = _mean(xp, xf, axes)
        d = xf - mean
        var = _mean(xp, d, axes, d)
    else:   # a matrix-vector product, then row-wise dot products (see _row_dots)
        k = rows.shape[1]
        token = backend.row_buffer(xp, k)
        keep = xf.shape[:xf.ndim - len(axes)] + (1,) * len(axes)
        mean = xp.matmul(rows, xp.full((k,), 1.0 / k, xf.dtype))
        d = rows - mean[:, None]
        var = _row_dots(xp, d, d)
        var *= 1.0 / k
        mean, var, d = mean.reshape(keep), var.reshape(keep), d.reshape(xf.shape)
        if token is not None:
            backend.restore_fp(token)
    return (mean, var, d) if centered else (mean, var)


def _normalize(op, x, weight, bias, eps, group_shape, axes, affine_shape, stats=None):
    """Run the normalisation ``op`` with batch statistics (``stats`` None) or the given
    (mean, var); returns the output and the statistics used."""
    xd = x._data.reshape(group_shape)
    w, b = (None if t is None else t._data for t in (weight, bias))
    if stats is None and op.kernel is not None and kernels.fits(xd, w, b):
        forward, _, kernel_shape = op.kernel
        y, mean, var, invstd = forward(xd.reshape(kernel_shape(x.shape, group_shape,
                                                               affine_shape)), w, b, eps)
        keep = tuple(1 if i in axes else d for i, d in enumerate(group_shape))
        mean, var, invstd = (t.reshape(keep) for t in (mean, var, invstd))
        out = op.apply(x, weight, bias, mean=mean, invstd=invstd, group_shape=group_shape,
                       axes=axes, affine_shape=affine_shape, batch_stats=True, eps=eps,
                       normalized=y)
        return out, mean, var
    mean, var, centered = _moments(xd, axes, True) if stats is None else stats + (None,)
    xp = backend.get_array_module(xd)
    invstd = (1.0 / xp.sqrt(var + eps)).astype(xd.dtype, copy=False)
    mean = mean.astype(xd.dtype, copy=False)
    out = op.apply(x, weight, bias, mean=mean, invstd=invstd, group_shape=group_shape,
                   axes=axes, affine_shape=affine_shape, batch_stats=stats is None, eps=eps,
                   centered=centered)
    return out, mean, var


@autocast_op("batch_norm")
def _batch_norm(name, input, running_mean, running_var, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5):
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
    update_running_stats(running_mean, running_var, mean, var, count, momentum)
    return out


def update_running_stats(running_mean, running_var, mean, var, count, momentum):
    """BatchNorm's running statistics (tensors, or None) move by ``momentum`` towards this
    batch's ``mean`` and unbiased variance (``var`` is the biased one of ``count`` values per
    channel), in place; BatchNorm and SyncBatchNorm (with the global batch) share it."""
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


@autocast_op("layer_norm")
def _layer_norm(name, input, normalized_shape, weight=None, bias=None, eps=1e-5):
    if type(normalized_shape) is not tuple:   # (nn.LayerNorm keeps a tuple)
        normalized_shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) \
            else tuple(normalized_shape)
    k = len(normalized_shape)
    shape = input._data.shape   # the array's: a plain tuple
    if shape[len(shape) - k:] != normalized_shape or len(shape) < k:
        raise RuntimeError(f"{name}: expected input with shape (*, "
                           f"{', '.join(map(str, normalized_shape))}) for normalized_shape="
                           f"{normalized_shape}, got input of shape {_shape(input)}")
    axes = tuple(range(len(shape) - k, len(shape)))
    return _normalize(NativeLayerNorm, input, weight, bias, eps, shape, axes,
                      normalized_shape)[0]


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the last ``len(normalized_shape)`` dimensions of each sample, then scale
    by ``weight`` and shift by ``bias`` (both of ``normalized_shape``).

    Example:
        >>> F.layer_norm(ddp.tensor([[1., 2., 3.]]), (3,))
        tensor([[-1.2247,  0.0000,  1.2247]])
    """
    return _layer_norm("layer_norm", input, normalized_shape, weight, bias, eps)


@autocast_op("group_norm")
def _group_norm(name, input, num_groups, weight=None, bias=None, eps=1e-5):
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
    per_group = c // num_groups * math.prod(input.shape[2:])   # (not -1: an empty batch)
    return _normalize(NativeGroupNorm, input, weight, bias, eps, (n, num_groups, per_group), (2,),
                      affine)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise each group of ``C // num_groups`` channels of each sample, then scale and shift
    per channel.

    Example:
        >>> F.group_norm(ddp.randn(2, 4, 3), 2).shape
        ddp.Size([2, 4, 3])
    """
    return _group_norm("group_norm", input, num_groups, weight, bias, eps)[0]


@autocast_op("instance_norm")   # (no autocast policy in PyTorch: it keeps the input's dtype)
def _instance_norm(name, input, running_mean=None, running_var=None, weight=None, bias=None,
                   use_input_stats=True, momentum=0.1, eps=1e-5):
    """PyTorch's ``at::instance_norm``: batch norm of the input seen as (1, N C, *), with the
    running statistics repeated over the batch and then averaged back over it."""
    if not use_input_stats:   # constant per-channel statistics: batch norm's eval mode
        if running_mean is None or running_var is None:
            raise RuntimeError(f"{name}: expected running_mean and running_var to be defined "
                               f"when use_input_stats is false")
        return _batch_norm(name, input, running_mean, running_var, weight, bias, False,
                           momentum, eps)
    if math.prod(input.shape[2:]) == 1:
        raise ValueError(f"{name}: expected more than 1 spatial element when training, got "
                         f"input of shape {_shape(input)}")
    c = input.shape[1]
    for what, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and t.numel() != c:
            raise RuntimeError(f"{name}: expected input with {t.numel()} channels (the size of "
                               f"{what}), got input of shape {_shape(input)}")
    # the statistics per sample and channel: group norm with one group per channel
    out, mean, var = _group_norm(name, input, c, weight, bias, eps)
    if input.shape[0]:   # the running statistics move by the batch's mean of each one
        update_running_stats(running_mean, running_var, mean.mean(axis=0), var.mean(axis=0),
                             math.prod(input.shape[2:]), momentum)
    return out


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Normalise each channel of each sample of ``input`` (N, C, *) over its spatial
    dimensions, then scale and shift per channel. With ``use_input_stats`` (the default) the
    statistics are the input's, and ``running_mean``/``running_var`` (if given) move by
    ``momentum`` towards their mean over the batch (the variance unbiased); otherwise the
    running statistics normalise.

    Example:
        >>> y = F.instance_norm(ddp.tensor([[[1., 2., 3.], [0., 0., 2.]]]))
        >>> y
        tensor([[[-1.2247,  0.0000,  1.2247],
                 [-0.7071, -0.7071,  1.4142]]])
    """
    return _instance_norm("instance_norm", input, running_mean, running_var, weight, bias,
                          use_input_stats, momentum, eps)


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """``input / max(||input||_p over dim, eps)``.

    Example:
        >>> F.normalize(ddp.tensor([[3., 4.]]))
        tensor([[0.6000, 0.8000]])
    """
    return input / input.norm(p, dim, keepdim=True).clamp_min(eps)

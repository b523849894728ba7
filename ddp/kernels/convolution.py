"""Convolution (one group) as patch matrices built by Numba loops and multiplied by BLAS, a
cache-sized block of output pixels at a time (see ddp.nn.functional._conv).

A block's patch matrix is laid out (samples, K, pixels), K ordered as the weight's (C, kh,
kw): row k of a sample is the input channel c shifted by the tap (i, j), copied from the NCHW
input with no padded copy (the padding written as zeros). Then the three products are BLAS's
fastest forms here (OpenBLAS, float32, a block of 784 pixels, K = 144, 32 channels):
``w (O, K) @ cols`` straight into the NCHW output (104 GFLOP/s; the (pixels, K) patches
transposed ran at 67), ``cols @ g.T`` for the weight's gradient (96; ``g @ cols.T`` ran at
63) and ``w.T @ g`` for the patches' gradient (116), which :func:`_patches` adds back into
the input's gradient (col2im).

At stride 1 along the width, where a patch row's output pixels map to consecutive input
pixels (an output row as wide as the input row: 'same' padding), row k of the patch matrix is
one run of the input shifted, over all image rows at once: one long loop (in vector lanes)
where a loop per image row of 28 pixels ran one vector and 12 single values (im2col of
(32, 16, 28, 28) 1.35 -> 0.51 ms); the few pixels of the run that fall in the padding are
zeroed after it (im2col) or before it (col2im, in its operand).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from . import jit, winograd

# Bytes of one block's patch matrix: whole samples of a small image, or image rows of one
# sample, so that it stays in the L2 cache between the loop that writes it and BLAS's reads
# (16->32 at (32,16,28,28): 512 KiB against 256 KiB or 1-2 MiB) — but at least _BLOCK_PIXELS
# output pixels, up to _BLOCK_MAX bytes: with many channels the products need the pixels more
# than the cache (256->256 on 14x14 at batch 8, forward + backward: 68.2 ms in 512 KiB blocks
# of 56 pixels, 48.9 in 4 MiB of 392, 59.7 before the kernels)
_BLOCK_BYTES = 1 << 19
_BLOCK_PIXELS = 784
_BLOCK_MAX = 1 << 22


@jit
def _patches(x, cols, adjoint, n0, n1, r0, r1, kh, kw, s0, s1, t, lft, d0, d1, ow):
    """The patches of samples n0..n1, output rows r0..r1, of ``x`` (N, C, H, W) padded by
    ``t`` rows on top and ``lft`` columns on the left, written into ``cols`` (n1 - n0, C kh kw,
    rows ow) — or, ``adjoint``, ``cols`` added into ``x`` (col2im), the entries that fall in
    the padding dropped (``cols``' entries there are overwritten with zeros first)."""
    c_, h, w = x.shape[1], x.shape[2], x.shape[3]
    xf = x.ravel()
    cf = cols.ravel()
    rows = r1 - r0
    kk = c_ * kh * kw
    run = s1 == 1 and ow == s0 * w   # consecutive pixels of an output row and of the next
    # per tap row i, the output rows [rlo, rhi) whose input row is in the image; per tap column
    # j, the output columns [lo, hi) (taken once: integer divisions)
    bounds = np.empty((4, max(kh, kw)), np.int64)
    for i in range(kh):
        first = r0 * s0 - t + i * d0   # input row of output row r0
        bounds[0, i] = r0 + min(rows, max(0, (-first + s0 - 1) // s0))
        bounds[1, i] = max(bounds[0, i], r0 + min(rows, (h - first + s0 - 1) // s0))
    for j in range(kw):
        off = j * d1 - lft   # input column of output column 0
        bounds[2, j] = min(ow, max(0, (-off + s1 - 1) // s1))
        bounds[3, j] = max(bounds[2, j], min(ow, (w - off + s1 - 1) // s1))
    for n in range(n0, n1):
        for c in range(c_):
            for i in range(kh):
                rlo, rhi = bounds[0, i], bounds[1, i]
                for j in range(kw):
                    off = j * d1 - lft
                    lo, hi = bounds[2, j], bounds[3, j]
                    base = ((n - n0) * kk + (c * kh + i) * kw + j) * rows * ow
                    if not adjoint:   # rows in the padding
                        for q in range(base, base + (rlo - r0) * ow):
                            cf[q] = 0
                        for q in range(base + (rhi - r0) * ow, base + rows * ow):
                            cf[q] = 0
                    if rlo == rhi or (adjoint and lo == hi):
                        continue
                    src = (n * c_ + c) * h * w + off
                    if run and hi > lo:
                        shift = src + (rlo * s0 - t + i * d0) * w - (rlo - r0) * ow - base
                        start = np.uint64(base + (rlo - r0) * ow + lo)
                        end = np.uint64(base + (rhi - 1 - r0) * ow + hi)
                        if not adjoint:
                            for q in range(start, end):
                                cf[q] = xf[np.uint64(q + shift)]
                        for q in range(lo):   # the run's pixels in the padding: 0
                            for p in range(base + (rlo - r0) * ow + q,
                                           base + (rhi - r0) * ow, ow):
                                cf[p] = 0
                        for q in range(hi, ow):
                            for p in range(base + (rlo - r0) * ow + q,
                                           base + (rhi - r0) * ow, ow):
                                cf[p] = 0
                        if adjoint:
                            for q in range(start, end):
                                xf[np.uint64(q + shift)] += cf[q]
                        continue
                    for oh in range(rlo, rhi):
                        p = base + (oh - r0) * ow
                        row = src + (oh * s0 - t + i * d0) * w
                        if adjoint:
                            for q in range(lo, hi):
                                xf[np.uint64(row + q * s1)] += cf[np.uint64(p + q)]
                            continue
                        for q in range(lo):
                            cf[p + q] = 0
                        for q in range(lo, hi):
                            cf[np.uint64(p + q)] = xf[np.uint64(row + q * s1)]
                        for q in range(hi, ow):
                            cf[p + q] = 0


def _blocks(x, k, out):
    """The blocks ``(n0, n1, r0, r1)`` — samples n0..n1, output rows r0..r1 — of about
    ``_BLOCK_BYTES`` of patches (K = ``k``; see there), and a buffer for the largest."""
    n = x.shape[0]
    oh, ow = out
    row = k * ow * x.itemsize
    budget = min(_BLOCK_MAX, max(_BLOCK_BYTES, _BLOCK_PIXELS * k * x.itemsize))
    if row * oh <= budget:   # whole samples
        per = max(1, budget // (row * oh))
        blocks = [(s, min(n, s + per), 0, oh) for s in range(0, n, per)]
        size = min(n, per) * oh
    else:                    # image rows of one sample
        per = max(1, budget // row)
        blocks = [(s, s + 1, r, min(oh, r + per)) for s in range(n) for r in range(0, oh, per)]
        size = min(oh, per)
    return blocks, np.empty(size * ow * k, x.dtype)


def _view(buf, n0, n1, r0, r1, k, ow):
    """The block's (samples, K, pixels) patch matrix at the start of ``buf``."""
    return buf[:(n1 - n0) * k * (r1 - r0) * ow].reshape(n1 - n0, k, (r1 - r0) * ow)


def _geometry(w_shape, stride, pads, dilation, out):
    (kh, kw), ((t, _), (lft, _)) = w_shape[2:], pads
    return (kh, kw, stride[0], stride[1], t, lft, dilation[0], dilation[1], out[1])


def conv2d_forward(x, w, b, stride, pads, dilation, out, rows=None):
    """The convolution (one group) of ``x`` (N, C, H, W) with ``w`` (O, C, kh, kw) plus the
    bias ``b`` (O,) or None, padded by ``pads`` ((top, bottom), (left, right)): (N, O) +
    ``out``. The bias is added to each block's output while it is in cache.

    With ``rows``, an upstream gradient of the output's shape (N, O) + ``out``, returns also
    the weight's gradient for it, (O, C, kh, kw) as a view of a (K, O) array: each block's
    patches multiplied a second time while in cache (the backward of a transposed
    convolution, whose input's gradient is this convolution of its upstream gradient).

    A 3x3 kernel at stride 1 (without ``rows``) goes to ddp.kernels.winograd (16->32 at
    (32,16,28,28): 3.16 -> 2.26 ms) — unless x holds an infinity or NaN, which the transforms
    turn into NaN where the patches' sums give an infinity (the check: 35 us there)."""
    if rows is None and winograd.applies(x.shape[1], w.shape, stride, dilation) and \
            backend.finite_on_host(x):
        return winograd.conv3x3(x, w, b, pads, out)
    n, o = x.shape[0], w.shape[0]
    k = w.size // o
    wm = w.reshape(o, k)
    geom = _geometry(w.shape, stride, pads, dilation, out)
    y = np.empty((n, o) + tuple(out), x.dtype)
    y3 = y.reshape(n, o, -1)
    blocks, buf = _blocks(x, k, out)
    ow = out[1]
    grad = None if rows is None else _WeightGrad(blocks, k, o, out, x.dtype)
    for n0, n1, r0, r1 in blocks:
        cols = _view(buf, n0, n1, r0, r1, k, ow)
        _patches(x, cols, False, n0, n1, r0, r1, *geom)
        yb = y3[n0:n1, :, r0 * ow:r1 * ow]
        np.matmul(wm, cols, out=yb)
        if b is not None:
            yb += b[:, None]
        if grad is not None:
            grad.add(cols, rows.reshape(n, o, -1)[n0:n1, :, r0 * ow:r1 * ow])
    return y if rows is None else (y, grad.result(w.shape))


class _WeightGrad:
    """The weight's gradient summed over the blocks, ``patches @ g.T`` (K, O), BLAS's fast
    form: the blocks' (samples, K, O) products summed."""

    def __init__(self, blocks, k, o, out, dtype):
        per = blocks[0][1] - blocks[0][0]
        self.gwt = np.zeros((k, o), dtype)
        self.part = np.empty((per, k, o), dtype)
        # g's rows of 4 or more small images per block copied as (samples, pixels, O) first:
        # BLAS's batch of products with g.T seen transposed runs slower there (4 x 196 pixels,
        # K = 144, 32 channels: 72 -> 63 us, copy included; 1 x 784: 75 -> 76, not copied) —
        # up to K = 256, from where it runs as fast or faster (K = 256: 104 us against 116
        # copied; 128 x 225 pixels, 64 channels: 127 against 139; K = 512: 173 against 178)
        self.g_rows = np.empty((per, out[0] * out[1], o), dtype) \
            if per >= 4 and 64 <= k < 256 else None

    def add(self, cols, gb):
        """Adds the block of patches ``cols`` (samples, K, pixels) times its rows of the
        upstream gradient ``gb`` (samples, O, pixels)."""
        m = gb.shape[0]
        gt = gb.transpose(0, 2, 1)
        if self.g_rows is not None:
            self.g_rows[:m] = gt
            gt = self.g_rows[:m]
        np.matmul(cols, gt, out=self.part[:m])
        self.gwt += self.part[0] if m == 1 else self.part[:m].sum(axis=0)

    def result(self, w_shape):
        """The sum as (O, C, kh, kw): a view of the (K, O) array."""
        return self.gwt.T.reshape(w_shape)


def conv2d_backward(g, x, w, w_shape, stride, pads, dilation, need_x, need_w):
    """The gradients ``(gx, gw)`` of :func:`conv2d_forward` in ``x`` and in the weight ``w`` of
    shape ``w_shape`` (None when ``need_x`` is false) for the upstream ``g``, each None where
    not needed; ``gw`` is a view of a (K, O) array as (O, C, kh, kw). One pass over the
    patches: each block's is multiplied by ``g`` for the weight's gradient while in cache, and
    ``w.T @ g`` is added back into ``gx``. A 3x3 kernel at stride 1 goes to
    ddp.kernels.winograd (16->32 at (32,16,28,28): 6.07 -> 4.9 ms)."""
    if winograd.applies(x.shape[1], w_shape, stride, dilation):
        return winograd.conv3x3_backward(g, x, w, pads, need_x, need_w)
    n, o = x.shape[0], w_shape[0]
    k = x.shape[1] * w_shape[2] * w_shape[3]
    out = g.shape[2:]
    ow = out[1]
    geom = _geometry(w_shape, stride, pads, dilation, out)
    g3 = g.reshape(n, o, -1)
    blocks, buf = _blocks(x, k, out)
    gx = np.zeros_like(x) if need_x else None
    gcols = np.empty_like(buf) if need_x else None
    grad = _WeightGrad(blocks, k, o, out, x.dtype) if need_w else None
    wt = w.reshape(o, k).T if need_x else None
    for n0, n1, r0, r1 in blocks:
        gb = g3[n0:n1, :, r0 * ow:r1 * ow]
        if need_w:
            cols = _view(buf, n0, n1, r0, r1, k, ow)
            _patches(x, cols, False, n0, n1, r0, r1, *geom)
            grad.add(cols, gb)
        if need_x:
            gc = _view(gcols, n0, n1, r0, r1, k, ow)
            np.matmul(wt, gb, out=gc)
            _patches(gx, gc, True, n0, n1, r0, r1, *geom)
    return gx, (grad.result(w_shape) if need_w else None)


@jit
def _phase_copy(x, out, s0, s1, t, lft):
    """``out[n, (a, b, c), q, r] = x[n, c, q*s0 + a - t, r*s1 + b - lft]``, 0 outside x."""
    n_, c_, h, w = x.shape
    q_, r_ = out.shape[2], out.shape[3]
    xf = x.ravel()
    of = out.ravel()
    for n in range(n_):
        for a in range(s0):
            for b in range(s1):
                lo = min(r_, max(0, (lft - b + s1 - 1) // s1))   # columns r inside x
                hi = max(lo, min(r_, (w + lft - b + s1 - 1) // s1))
                for c in range(c_):
                    base = ((n * s0 * s1 + a * s1 + b) * c_ + c) * q_ * r_
                    for q in range(q_):
                        p = base + q * r_
                        row = q * s0 + a - t
                        if row < 0 or row >= h:
                            for r in range(r_):
                                of[p + r] = 0
                            continue
                        src = ((n * c_ + c) * h + row) * w + b - lft
                        for r in range(lo):
                            of[p + r] = 0
                        for r in range(lo, hi):   # (unsigned: no wraparound test)
                            of[np.uint64(p + r)] = xf[np.uint64(src + r * s1)]
                        for r in range(hi, r_):
                            of[p + r] = 0


def conv2d_phases(x, w, stride, pads, out, rows=None):
    """:func:`conv2d_forward` (no bias, no dilation) at a stride (s0, s1) as the stride-1
    convolution of x's s0*s1 phases ``x[.., q*s0 + a, r*s1 + b]`` (padded x), stacked as
    channels (a, b, c), with the kernel's taps ``w[.., i*s0 + a, j*s1 + b]`` (zeros past the
    kernel): patches of whole input rows where the strided ones gather single values (the
    backward of conv_transpose2d 4x4 at stride 2, 32->16 on 14x14 at batch 16: see
    ddp.nn.functional._conv). With ``rows``: also the weight's gradient, (O, C, kh, kw)."""
    (s0, s1), ((t, _), (lft, _)) = stride, pads
    o, c, kh, kw = w.shape
    m0, m1 = -(-kh // s0), -(-kw // s1)
    ph = np.empty((x.shape[0], s0 * s1 * c, out[0] + m0 - 1, out[1] + m1 - 1), x.dtype)
    _phase_copy(x, ph, s0, s1, t, lft)
    wz = np.zeros((o, c, m0 * s0, m1 * s1), w.dtype)
    wz[:, :, :kh, :kw] = w
    # wz[o, c, i*s0 + a, j*s1 + b] as [o, (a, b, c), i, j]
    sub = np.ascontiguousarray(wz.reshape(o, c, m0, s0, m1, s1).transpose(0, 3, 5, 1, 2, 4)
                               ).reshape(o, s0 * s1 * c, m0, m1)
    res = conv2d_forward(ph, sub, None, (1, 1), ((0, 0), (0, 0)), (1, 1), out, rows)
    if rows is None:
        return res
    y, gsub = res
    gw = gsub.reshape(o, s0, s1, c, m0, m1).transpose(0, 3, 4, 1, 5, 2)
    return y, gw.reshape(o, c, m0 * s0, m1 * s1)[:, :, :kh, :kw]


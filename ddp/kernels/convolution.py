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

from . import jit

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


def conv2d_forward(x, w, b, stride, pads, dilation, out):
    """The convolution (one group) of ``x`` (N, C, H, W) with ``w`` (O, C, kh, kw) plus the
    bias ``b`` (O,) or None, padded by ``pads`` ((top, bottom), (left, right)): (N, O) +
    ``out``. The bias is added to each block's output while it is in cache."""
    n, o = x.shape[0], w.shape[0]
    k = w.size // o
    wm = w.reshape(o, k)
    geom = _geometry(w.shape, stride, pads, dilation, out)
    y = np.empty((n, o) + tuple(out), x.dtype)
    y3 = y.reshape(n, o, -1)
    blocks, buf = _blocks(x, k, out)
    ow = out[1]
    for n0, n1, r0, r1 in blocks:
        cols = _view(buf, n0, n1, r0, r1, k, ow)
        _patches(x, cols, False, n0, n1, r0, r1, *geom)
        yb = y3[n0:n1, :, r0 * ow:r1 * ow]
        np.matmul(wm, cols, out=yb)
        if b is not None:
            yb += b[:, None]
    return y


def conv2d_backward(g, x, w, w_shape, stride, pads, dilation, need_x, need_w):
    """The gradients ``(gx, gw)`` of :func:`conv2d_forward` in ``x`` and in the weight ``w`` of
    shape ``w_shape`` (None when ``need_x`` is false) for the upstream ``g``, each None where
    not needed; ``gw`` is a view of a (K, O) array as (O, C, kh, kw). One pass over the
    patches: each block's is multiplied by ``g`` for the weight's gradient while in cache, and
    ``w.T @ g`` is added back into ``gx``."""
    n, o = x.shape[0], w_shape[0]
    k = x.shape[1] * w_shape[2] * w_shape[3]
    out = g.shape[2:]
    ow = out[1]
    geom = _geometry(w_shape, stride, pads, dilation, out)
    g3 = g.reshape(n, o, -1)
    blocks, buf = _blocks(x, k, out)
    gx = np.zeros_like(x) if need_x else None
    gcols = np.empty_like(buf) if need_x else None
    gwt = np.zeros((k, o), x.dtype) if need_w else None   # (K, O): cols @ g.T, BLAS's fast form
    per = blocks[0][1] - blocks[0][0]
    part = np.empty((per, k, o), x.dtype) if need_w else None
    # g's rows of 4 or more small images per block copied as (samples, pixels, O) first: BLAS's
    # batch of products with g.T seen transposed runs slower there (4 x 196 pixels, K = 144,
    # 32 channels: 76 -> 55 us, copy included; 1 x 784: 75 -> 76, not copied)
    g_rows = np.empty((per, out[0] * ow, o), x.dtype) if need_w and per >= 4 and k >= 64 \
        else None
    wt = w.reshape(o, k).T if need_x else None
    for n0, n1, r0, r1 in blocks:
        gb = g3[n0:n1, :, r0 * ow:r1 * ow]
        if need_w:
            cols = _view(buf, n0, n1, r0, r1, k, ow)
            _patches(x, cols, False, n0, n1, r0, r1, *geom)
            gt = gb.transpose(0, 2, 1)
            if g_rows is not None:
                g_rows[:n1 - n0] = gt
                gt = g_rows[:n1 - n0]
            np.matmul(cols, gt, out=part[:n1 - n0])
            gwt += part[0] if n1 - n0 == 1 else part[:n1 - n0].sum(axis=0)
        if need_x:
            gc = _view(gcols, n0, n1, r0, r1, k, ow)
            np.matmul(wt, gb, out=gc)
            _patches(gx, gc, True, n0, n1, r0, r1, *geom)
    return gx, (gwt.T.reshape(w_shape) if need_w else None)

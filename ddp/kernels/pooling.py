"""Max pooling (2-D), forward and backward, one image plane at a time (see
ddp.nn.functional._pooling): each window's maximum and its place found while the plane is in
cache, then the gradient scattered to those places — where NumPy makes a pass over the whole
array per kernel position, and in backward compares the input with the output again.

Shapes: ``x`` is (P, H, W) — the N C planes — and the output (P, OH, OW); ``where`` (P, OH, OW)
int32 holds the flat index ``row * W + col`` of each window's maximum in its plane. PyTorch's
rules (its CPU kernel's scan): padding never wins; the first maximum of a window wins a tie; a
NaN is the maximum, and the last NaN of the window its place; a window of -inf points at its
first element inside the input; overlapping windows add their gradients.
"""
from __future__ import annotations

import functools

import numpy as np

from . import jit


@jit
def _max_pool2d_forward_2x2(x, y, where):
    # 2x2 windows that tile the plane from its corner: four reads per window, no padding, no
    # buffers ((32, 32, 28, 28) float32: 0.63 ms, the general loop below 1.28)
    planes, h, w = x.shape
    _, oh, ow = y.shape
    for p in range(planes):
        for i in range(oh):
            r = 2 * i
            for j in range(ow):
                c = 2 * j
                best = x[p, r, c]
                at = r * w + c
                v = x[p, r, c + 1]
                take = (v > best) | (v != v)
                best = v if take else best
                at = r * w + c + 1 if take else at
                v = x[p, r + 1, c]
                take = (v > best) | (v != v)
                best = v if take else best
                at = (r + 1) * w + c if take else at
                v = x[p, r + 1, c + 1]
                take = (v > best) | (v != v)
                best = v if take else best
                at = (r + 1) * w + c + 1 if take else at
                y[p, i, j] = best
                where[p, i, j] = at


@jit
def _max_pool2d_forward(x, firsts, origins, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, y, where):
    # A plane is copied into a buffer padded with -inf; the values that one kernel position
    # reads, one per window of the plane, are gathered to unit stride, then compared with the
    # maxima so far in one loop of OH OW selects that LLVM vectorises. (One window at a time is
    # a chain of dependent compares; one output row at a time leaves loops too short for the
    # vector lanes: 3x3 windows, stride 2, padding 1, (32, 32, 28, 28) float32 4.7 -> 4.6 ->
    # 2.0 ms, NumPy's maxima without their places 2.0.)
    planes, h, w = x.shape
    _, oh, ow = y.shape
    m = oh * ow
    lowest = x.dtype.type(-np.inf)
    buf = np.full((h + pt + pb, w + pl + pr), lowest, x.dtype)
    best = np.empty(m, x.dtype)
    vals = np.empty(m, x.dtype)
    pos = np.empty(m, np.int32)          # kernel position (row-major) of the maximum so far
    offsets = np.empty(kh * kw, np.int64)
    for ki in range(kh):
        for kj in range(kw):
            offsets[ki * kw + kj] = ki * dh * w + kj * dw
    for p in range(planes):
        for r in range(h):
            for c in range(w):
                buf[pt + r, pl + c] = x[p, r, c]
        for q in range(m):
            best[q] = lowest
            pos[q] = 0
        for ki in range(kh):
            for kj in range(kw):
                c0 = kj * dw
                for i in range(oh):
                    rr = i * sh + ki * dh
                    if sw == 1:     # (constant strides: vector loads, not gathers)
                        for j in range(ow):
                            vals[i * ow + j] = buf[rr, j + c0]
                    elif sw == 2:
                        for j in range(ow):
                            vals[i * ow + j] = buf[rr, 2 * j + c0]
                    else:
                        for j in range(ow):
                            vals[i * ow + j] = buf[rr, j * sw + c0]
                k = np.int32(ki * kw + kj)
                for q in range(m):
                    v = vals[q]
                    b = best[q]
                    take = (v > b) | (v != v)
                    best[q] = v if take else b
                    pos[q] = k if take else pos[q]
        for i in range(oh):
            for j in range(ow):
                v = best[i * ow + j]
                y[p, i, j] = v
                # a window of -inf kept position 0, which may be padding
                where[p, i, j] = firsts[i, j] if v == lowest else \
                    origins[i, j] + offsets[pos[i * ow + j]]


@functools.lru_cache(maxsize=256)
def _first_inside(size, kernel, stride, pad, dilation, out):
    """Per window along one axis: the coordinate of its first element inside ``[0, size)``."""
    start = np.arange(out) * stride - pad
    return start + np.where(start < 0, (-start + dilation - 1) // dilation, 0) * dilation


@functools.lru_cache(maxsize=256)
def _window_corners(shape, kernel, stride, top_left, dilation, out):
    """(OH, OW) int64 twice: the flat index in the plane of each window's first element
    inside the plane, and of its corner (kernel position 0, perhaps in the padding)."""
    starts = [np.arange(out[a]) * stride[a] - top_left[a] for a in range(2)]
    inside = [_first_inside(shape[a], kernel[a], stride[a], top_left[a], dilation[a], out[a])
              for a in range(2)]
    tables = tuple((rows[:, None] * shape[1] + cols[None, :]).astype(np.int64)
                   for rows, cols in (inside, starts))
    for t in tables:
        t.flags.writeable = False   # (shared by every call with this geometry)
    return tables


def max_pool2d_forward(x, kernel, stride, pads, dilation, out):
    """Max pooling of ``x`` (P, H, W): ``(y, where)`` (the rules above). ``pads``: ((top,
    bottom), (left, right)), the bottom and right covering ceil_mode's last windows; ``out``:
    the output size."""
    planes, h, w = x.shape
    y = np.empty((planes,) + tuple(out), x.dtype)
    where = np.empty(y.shape, np.int32)
    kernel, stride, dilation, out = tuple(kernel), tuple(stride), tuple(dilation), tuple(out)
    if kernel == (2, 2) == stride and dilation == (1, 1) and not any(pads[0] + pads[1]):
        _max_pool2d_forward_2x2(x, y, where)
    else:
        firsts, origins = _window_corners((h, w), kernel, stride, (pads[0][0], pads[1][0]),
                                          dilation, out)
        _max_pool2d_forward(x, firsts, origins, kernel[0], kernel[1], stride[0], stride[1],
                            pads[0][0], pads[0][1], pads[1][0], pads[1][1], dilation[0],
                            dilation[1], y, where)
    return y, where


@jit
def _max_pool2d_backward(g, where, gx):
    planes, size = gx.shape
    n = g.shape[1]
    for p in range(planes):
        for k in range(size):
            gx[p, k] = 0
        for k in range(n):
            gx[p, where[p, k]] += g[p, k]


def max_pool2d_backward(g, where, size):
    """The gradient (P, H, W) of :func:`max_pool2d_forward` for the upstream ``g`` (P, OH, OW):
    each window's ``g`` added at its maximum, zero elsewhere; ``size`` is (H, W)."""
    planes = g.shape[0]
    gx = np.empty((planes, size[0] * size[1]), g.dtype)
    _max_pool2d_backward(g.reshape(planes, -1), where.reshape(planes, -1), gx)
    return gx.reshape((planes,) + tuple(size))

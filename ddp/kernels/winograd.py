"""The 3x3 stride-1 convolution (one group) as Winograd's F(2x2, 3x3): 16 products of
(O, C) @ (C, tiles) where the patches' product is one of (O, 9 C) @ (9 C, pixels) — 2.25
times fewer multiplications, and no patch matrix (each input value is read by 4 tiles, not by
9 patches).

Each 2x2 tile of output pixels is ``A^T [(G w G^T) * (B^T d B)] A`` for its 4x4 patch ``d`` of
the padded input (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
the input's transform ``V = B^T d B`` (sums and differences only) is laid out (16, C, tiles),
the kernel's ``U = G w G^T`` (16, O, C), BLAS multiplies them element by element of the 4x4
transform, and ``A^T M A`` (sums again) gives the tile, plus the bias, in the NCHW output. The
backward runs the adjoints: ``dM = A dY A^T`` of the upstream gradient's tiles, ``dU = dM V^T``
for the kernel's gradient (then ``G^T dU G``) and ``dV = U^T dM`` for the input's (then
``B dV B^T`` of each tile added into its patch). A block of tiles at a time (whole samples, or
tile rows of one), so that V and M stay in cache; the transforms are bound by the stores into
them (16 planes written per tile), so each loop runs over all the tiles of a block in vector
lanes.

The transforms add and subtract values of the input's magnitude and halve the kernel's: in
float32 the output and both gradients miss the float64 values by 0.4-0.6x the direct sums'
error (16->32 on 28x28: at most 2.4e-7 of the largest value; tests/nn/test_conv_kernels.py).
An infinite input becomes NaN in the outputs of its tiles (inf - inf in the transforms) where
a direct sum gives an infinity: ddp.kernels.convolution sends such an input to the patches, and
the convolution's backward recomputes a weight gradient that is not finite by direct sums
(ddp.nn.functional._conv).
"""
from __future__ import annotations

import numpy as np

from . import jit

# Bytes of one block's V and M, (16, C + O, tiles): 16->32 at (32,16,28,28), one sample (14 x
# 15 tiles, 630 KiB) a block (half as many bytes, tile rows: backward 4.7 -> 5.9 ms) — but at
# least _BLOCK_TILES tiles, up to _BLOCK_MAX bytes: with many channels each block reads all of
# U (16 O C values) for its tiles (512->512 at (16,512,7,7), Conv2d forward / forward +
# backward: 94.9 / 380.7 ms in 768 KiB blocks of 10 tiles, 32.1 / 124.2 in 8 MiB of 128;
# 256->256 at (8,256,14,14) 16.3 / 63.1 -> 10.7 / 35.1). A block is at least one row of tiles.
_BLOCK_BYTES = 3 << 18
_BLOCK_TILES = 256
_BLOCK_MAX = 1 << 23


def _layout(x, v, prows, hrows, tp, lft):
    """The sizes the input's transform and its adjoint share (see :func:`_input_transform`):
    the padded row 2 tp, the strides of ``prows``, ``hrows``, ``v`` and of its planes, and the
    padded columns [lo, hi) inside the image."""
    pw = 2 * tp
    lo = min(pw, max(0, lft))
    return (pw, prows.shape[1], hrows.shape[1], v.shape[2], x.shape[1] * v.shape[2], lo,
            max(lo, min(pw, x.shape[3] + lft)))


@jit
def _input_transform(x, v, prows, hrows, n0, n1, ty0, ty1, tp, t, lft, layout):
    """``v[:, c, tile]`` = B^T d B of the tiles of samples n0..n1, tile rows ty0..ty1 (the 4x4
    patches d of ``x`` padded by ``t`` rows on top, ``lft`` columns on the left), ``tp`` tiles
    a row (one past the edge: its entries are not used); ``layout`` from :func:`_layout`.
    Scratch: ``prows`` (2, at least (ty1 - ty0 + 1) * 2 tp + 2), the padded input's even and
    odd rows, and ``hrows`` (8, at least (ty1 - ty0 + 1) * tp), ``d B`` of each. Laid out so,
    every loop runs over all the tiles (over the 14 tiles of a row, mostly outside the vector
    lanes)."""
    c_, h, w = x.shape[1], x.shape[2], x.shape[3]
    pw, pp, hp, count, plane, lo, hi = layout
    xf, vf, pf, hf = x.ravel(), v.ravel(), prows.ravel(), hrows.ravel()
    nty = ty1 - ty0
    tiles = nty * tp
    pf[:] = 0   # the padding (the same entries for every channel)
    for n in range(n0, n1):
        for c in range(c_):
            for pair in range(nty + 1):   # padded rows 2 (ty0 + pair) + par
                for par in range(2):
                    row = 2 * (ty0 + pair) + par - t
                    if 0 <= row < h:
                        src = ((n * c_ + c) * h + row) * w - lft
                        dst = par * pp + pair * pw
                        for q in range(lo, hi):
                            pf[np.uint64(dst + q)] = xf[np.uint64(src + q)]
            for par in range(2):   # d B: columns 2tx .. 2tx + 3
                src = par * pp
                out = 4 * par * hp
                for p in range((nty + 1) * tp):
                    a, b = pf[np.uint64(src + 2 * p)], pf[np.uint64(src + 2 * p + 1)]
                    c2, d = pf[np.uint64(src + 2 * p + 2)], pf[np.uint64(src + 2 * p + 3)]
                    hf[np.uint64(out + p)] = a - c2
                    hf[np.uint64(out + hp + p)] = b + c2
                    hf[np.uint64(out + 2 * hp + p)] = c2 - b
                    hf[np.uint64(out + 3 * hp + p)] = b - d
            base = c * count + (n - n0) * tiles
            for j in range(4):   # B^T (d B): rows 2ty, 2ty + 1, 2ty + 2, 2ty + 3 of column j
                ev = j * hp
                od = (4 + j) * hp
                p0 = j * plane + base
                for p in range(tiles):
                    e0, o0 = hf[np.uint64(ev + p)], hf[np.uint64(od + p)]
                    e1, o1 = hf[np.uint64(ev + tp + p)], hf[np.uint64(od + tp + p)]
                    vf[np.uint64(p0 + p)] = e0 - e1
                    vf[np.uint64(p0 + 4 * plane + p)] = o0 + e1
                    vf[np.uint64(p0 + 8 * plane + p)] = e1 - o0
                    vf[np.uint64(p0 + 12 * plane + p)] = o0 - o1


@jit
def _input_adjoint(dv, gx, prows, hrows, n0, n1, ty0, ty1, tp, t, lft, layout):
    """The adjoint of :func:`_input_transform` (same arguments, ``dv`` for ``v``): B dV B^T of
    each tile added into its 4x4 patch of the padded ``gx``, the padding dropped — in the
    reverse order of its steps, each one loop over all the tiles."""
    c_, h, w = gx.shape[1], gx.shape[2], gx.shape[3]
    pw, pp, hp, count, plane, lo, hi = layout
    gf, vf, pf, hf = gx.ravel(), dv.ravel(), prows.ravel(), hrows.ravel()
    nty = ty1 - ty0
    tiles = nty * tp
    span = (nty + 1) * tp
    for n in range(n0, n1):
        for c in range(c_):
            base = c * count + (n - n0) * tiles
            for j in range(4):   # B^T's adjoint: into d B's rows 2ty, 2ty + 1 (and the next
                ev = j * hp       # pair's: a second loop)
                od = (4 + j) * hp
                p0 = j * plane + base
                for p in range(tiles):
                    v0, v4 = vf[np.uint64(p0 + p)], vf[np.uint64(p0 + 4 * plane + p)]
                    v8, v12 = vf[np.uint64(p0 + 8 * plane + p)], vf[np.uint64(p0 + 12 * plane + p)]
                    hf[np.uint64(ev + p)] = v0
                    hf[np.uint64(od + p)] = v4 - v8 + v12
                for p in range(tiles, span):
                    hf[np.uint64(ev + p)] = 0
                    hf[np.uint64(od + p)] = 0
                for p in range(tiles):
                    v0, v4 = vf[np.uint64(p0 + p)], vf[np.uint64(p0 + 4 * plane + p)]
                    v8, v12 = vf[np.uint64(p0 + 8 * plane + p)], vf[np.uint64(p0 + 12 * plane + p)]
                    hf[np.uint64(ev + tp + p)] += v4 + v8 - v0
                    hf[np.uint64(od + tp + p)] -= v12
            for par in range(2):   # B's adjoint: columns 2k and 2k + 1 of the padded rows,
                h0 = 4 * par * hp   # from tiles k and k - 1
                dst = par * pp
                pf[np.uint64(dst)] = hf[np.uint64(h0)]
                pf[np.uint64(dst + 1)] = hf[np.uint64(h0 + hp)] - hf[np.uint64(h0 + 2 * hp)] + \
                    hf[np.uint64(h0 + 3 * hp)]
                for k in range(1, span):
                    a0, a1 = hf[np.uint64(h0 + k)], hf[np.uint64(h0 + hp + k)]
                    a2, a3 = hf[np.uint64(h0 + 2 * hp + k)], hf[np.uint64(h0 + 3 * hp + k)]
                    b0, b1 = hf[np.uint64(h0 + k - 1)], hf[np.uint64(h0 + hp + k - 1)]
                    b2, b3 = hf[np.uint64(h0 + 2 * hp + k - 1)], hf[np.uint64(h0 + 3 * hp + k - 1)]
                    pf[np.uint64(dst + 2 * k)] = a0 - b0 + b1 + b2
                    pf[np.uint64(dst + 2 * k + 1)] = a1 - a2 + a3 - b3
            for r in range(2 * nty + 2):   # padded row 2 ty0 + r: its image part
                row = 2 * ty0 + r - t
                if 0 <= row < h:
                    dst = ((n * c_ + c) * h + row) * w - lft
                    src = r % 2 * pp + r // 2 * pw
                    for q in range(lo, hi):
                        gf[np.uint64(dst + q)] += pf[np.uint64(src + q)]


@jit
def _output_transform(m, y, b, rows, n0, n1, ty0, ty1, tp):
    """The tiles ``A^T M A`` + ``b[o]`` (the bias, or zeros) of samples n0..n1, tile rows
    ty0..ty1, ``tp`` a row, written into ``y`` (N, O, OH, OW), the pixels past its edge
    dropped; ``rows`` is scratch of (4, at least (ty1 - ty0) * tp): the tiles' 4 pixels each,
    in one loop over a sample's tiles, then interleaved into the output rows."""
    o_, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    mf, yf, rf = m.ravel(), y.ravel(), rows.ravel()
    tiles, rt, count = (ty1 - ty0) * tp, rows.shape[1], m.shape[2]
    pl = o_ * count
    full = ow // 2   # tiles whose 2 columns are both in the output
    for n in range(n0, n1):
        for o in range(o_):
            add = b[o]
            p = o * count + (n - n0) * tiles
            for tx in range(tiles):
                q = p + tx
                s0, s1 = mf[np.uint64(q)], mf[np.uint64(q + pl)]
                s2, s3 = mf[np.uint64(q + 2 * pl)], mf[np.uint64(q + 3 * pl)]
                s4, s5 = mf[np.uint64(q + 4 * pl)], mf[np.uint64(q + 5 * pl)]
                s6, s7 = mf[np.uint64(q + 6 * pl)], mf[np.uint64(q + 7 * pl)]
                s8, s9 = mf[np.uint64(q + 8 * pl)], mf[np.uint64(q + 9 * pl)]
                s10, s11 = mf[np.uint64(q + 10 * pl)], mf[np.uint64(q + 11 * pl)]
                s12, s13 = mf[np.uint64(q + 12 * pl)], mf[np.uint64(q + 13 * pl)]
                s14, s15 = mf[np.uint64(q + 14 * pl)], mf[np.uint64(q + 15 * pl)]
                # A^T m: rows 0 + 1 + 2 and 1 - 2 - 3, per column; then the columns
                a0, a1, a2, a3 = s0 + s4 + s8, s1 + s5 + s9, s2 + s6 + s10, s3 + s7 + s11
                b0, b1, b2, b3 = s4 - s8 - s12, s5 - s9 - s13, s6 - s10 - s14, s7 - s11 - s15
                rf[np.uint64(tx)] = a0 + a1 + a2 + add
                rf[np.uint64(rt + tx)] = a1 - a2 - a3 + add
                rf[np.uint64(2 * rt + tx)] = b0 + b1 + b2 + add
                rf[np.uint64(3 * rt + tx)] = b1 - b2 - b3 + add
            for ty in range(ty0, ty1):
                for r in range(2):
                    if 2 * ty + r >= oh:
                        continue
                    left = 2 * r * rt + (ty - ty0) * tp
                    right = left + rt
                    dst = ((n * o_ + o) * oh + 2 * ty + r) * ow
                    for tx in range(full):
                        yf[np.uint64(dst + 2 * tx)] = rf[np.uint64(left + tx)]
                        yf[np.uint64(dst + 2 * tx + 1)] = rf[np.uint64(right + tx)]
                    if ow % 2:
                        yf[np.uint64(dst + 2 * full)] = rf[np.uint64(left + full)]


@jit
def _grad_transform(g, dm, rows, n0, n1, ty0, ty1, tp):
    """``dm[:, o, tile] = A dY A^T`` of the upstream gradient's 2x2 tiles dY (samples n0..n1,
    tile rows ty0..ty1, ``tp`` a row, 0 past the output's edge): the adjoint of
    :func:`_output_transform`. ``rows`` is scratch of (10, at least (ty1 - ty0) * tp): the
    tiles' 4 pixels each, then the sums and differences of their rows, the second negated."""
    o_, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    gf, df, rf = g.ravel(), dm.ravel(), rows.ravel()
    tiles, rt, count = (ty1 - ty0) * tp, rows.shape[1], dm.shape[2]
    rf[:4 * rt] = 0   # the pixels past the edge (the same for every channel)
    pl = o_ * count
    for n in range(n0, n1):
        for o in range(o_):
            src = (n * o_ + o) * oh * ow
            for row in range(2 * ty0, min(oh, 2 * ty1)):   # pixel (row, q) of tile (row // 2,
                dst = (row % 2) * 2 * rt + (row // 2 - ty0) * tp   # q // 2): even columns in
                for q in range(ow):                             # plane 0 (2), odd in 1 (3)
                    rf[np.uint64(dst + q % 2 * rt + q // 2)] = gf[np.uint64(src + row * ow + q)]
            for p in range(tiles):   # A dY's rows 1, 2 and 3: sums, differences of 0 and 1,
                y00, y01 = rf[np.uint64(p)], rf[np.uint64(rt + p)]   # and -1
                y10, y11 = rf[np.uint64(2 * rt + p)], rf[np.uint64(3 * rt + p)]
                rf[np.uint64(4 * rt + p)] = y00 + y10
                rf[np.uint64(5 * rt + p)] = y01 + y11
                rf[np.uint64(6 * rt + p)] = y00 - y10
                rf[np.uint64(7 * rt + p)] = y01 - y11
                rf[np.uint64(8 * rt + p)] = -y10
                rf[np.uint64(9 * rt + p)] = -y11
            q = o * count + (n - n0) * tiles
            for i in range(4):   # A dY's row i (r0, r1), then (r0, r1) A^T: 4 values
                first = (0, 4, 6, 8)[i] * rt
                d = np.uint64(q + 4 * i * pl)
                for p in range(tiles):
                    r0, r1 = rf[np.uint64(first + p)], rf[np.uint64(first + rt + p)]
                    df[d + np.uint64(p)] = r0
                    df[d + np.uint64(pl + p)] = r0 + r1
                    df[d + np.uint64(2 * pl + p)] = r0 - r1
                    df[d + np.uint64(3 * pl + p)] = -r1


def applies(x_channels, w_shape, stride, dilation):
    """Whether :func:`conv3x3` computes this convolution: a 3x3 kernel at stride 1, not
    dilated, at least 8 input and output channels and 32 together (fewer: the 16 products are
    too thin for BLAS, the transforms dominate. Conv2d forward + backward on 28x28 at batch 32
    against the patches: 8->16 3.19 against 2.78 ms, 8->32 5.36 against 5.60, 16->16 5.17
    against 6.82)."""
    return tuple(w_shape[2:]) == (3, 3) and tuple(stride) == (1, 1) and \
        tuple(dilation) == (1, 1) and min(x_channels, w_shape[0]) >= 8 and \
        x_channels + w_shape[0] >= 32


_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))


def kernel_transform(w):
    """``U = G w G^T`` of the kernel ``w`` (O, C, 3, 3), as (16, O, C): one product with
    G (x) G (16, 9)."""
    g = np.array(_G, w.dtype)
    return (np.kron(g, g) @ w.reshape(-1, 9).T).reshape(16, w.shape[0], w.shape[1])


def _blocks(n, c, o, out, itemsize):
    """The blocks ``(n0, n1, ty0, ty1)`` — samples, tile rows — of about ``_BLOCK_BYTES`` of
    V and M for C = ``c`` input and O = ``o`` output channels; the tile rows and the tiles of
    the largest block; and the tiles of a row ``tp`` (one past the output's edge: every loop
    then runs over all the tiles of a block, in vector lanes)."""
    th, tp = -(-out[0] // 2), -(-out[1] // 2) + 1
    per_row = 16 * (c + o) * tp * itemsize   # V and M of one row of tiles
    budget = min(_BLOCK_MAX, max(_BLOCK_BYTES, _BLOCK_TILES * per_row // tp))
    if per_row * th <= budget:   # whole samples
        per = max(1, budget // (per_row * th))
        blocks = [(s, min(n, s + per), 0, th) for s in range(0, n, per)]
        nty, tiles = th, min(n, per) * th * tp
    else:                              # tile rows of one sample
        nty = min(th, max(1, budget // per_row))
        blocks = [(s, s + 1, r, min(th, r + nty)) for s in range(n) for r in range(0, th, nty)]
        tiles = nty * tp
    return blocks, nty, tiles, tp


def _buffers(c, o, nty, tiles, tp, dtype):
    """V's and M's buffers for ``tiles``, and the transforms' scratch (see there)."""
    return (np.empty(16 * c * tiles, dtype), np.empty(16 * o * tiles, dtype),
            np.empty((2, (nty + 1) * 2 * tp + 2), dtype), np.empty((8, (nty + 1) * tp), dtype),
            np.empty((10, nty * tp), dtype))


def conv3x3(x, w, b, pads, out):
    """The convolution of ``x`` (N, C, H, W) with the 3x3 kernel ``w`` (O, C, 3, 3) at stride 1,
    padded by ``pads`` ((top, bottom), (left, right)), plus the bias ``b`` (O,) or None:
    (N, O) + ``out``."""
    n, c = x.shape[:2]
    o = w.shape[0]
    (t, _), (lft, _) = pads
    u = kernel_transform(w)
    blocks, nty, tiles, tp = _blocks(n, c, o, out, x.itemsize)
    vbuf, mbuf, prows, hrows, out_rows = _buffers(c, o, nty, tiles, tp, x.dtype)
    bias = np.zeros(o, x.dtype) if b is None else b
    y = np.empty((n, o) + tuple(out), x.dtype)
    for n0, n1, r0, r1 in blocks:
        count = (n1 - n0) * (r1 - r0) * tp
        v = vbuf[:16 * c * count].reshape(16, c, count)
        mm = mbuf[:16 * o * count].reshape(16, o, count)
        _input_transform(x, v, prows, hrows, n0, n1, r0, r1, tp, t, lft,
                         _layout(x, v, prows, hrows, tp, lft))
        np.matmul(u, v, out=mm)
        _output_transform(mm, y, bias, out_rows, n0, n1, r0, r1, tp)
    return y


def conv3x3_backward(g, x, w, pads, need_x, need_w):
    """The gradients ``(gx, gw)`` of :func:`conv3x3` (no bias) for the upstream ``g`` (N, O,
    OH, OW), each None where not needed, from one pass over the blocks: ``dM = A dY A^T`` of
    g's tiles, then ``dU += dM V^T`` (V of x's tiles) for the weight's, ``G^T dU G``; and
    ``dV = U^T dM`` for the input's, ``B dV B^T`` of each tile added into its patch."""
    n, c = x.shape[:2]
    o = g.shape[1]
    (t, _), (lft, _) = pads
    blocks, nty, tiles, tp = _blocks(n, c, o, g.shape[2:], x.itemsize)
    vbuf, mbuf, prows, hrows, out_rows = _buffers(c, o, nty, tiles, tp, x.dtype)
    ut = np.ascontiguousarray(kernel_transform(w).transpose(0, 2, 1)) if need_x else None
    gx = np.zeros_like(x) if need_x else None
    du = np.zeros((16, o, c), x.dtype) if need_w else None
    part = np.empty((16, o, c), x.dtype) if need_w else None
    for n0, n1, r0, r1 in blocks:
        count = (n1 - n0) * (r1 - r0) * tp
        v = vbuf[:16 * c * count].reshape(16, c, count)
        dm = mbuf[:16 * o * count].reshape(16, o, count)
        layout = _layout(x, v, prows, hrows, tp, lft)
        _grad_transform(g, dm, out_rows, n0, n1, r0, r1, tp)
        if need_w:
            _input_transform(x, v, prows, hrows, n0, n1, r0, r1, tp, t, lft, layout)
            np.matmul(dm, v.transpose(0, 2, 1), out=part)
            du += part
        if need_x:
            np.matmul(ut, dm, out=v)
            _input_adjoint(v, gx, prows, hrows, n0, n1, r0, r1, tp, t, lft, layout)
    gw = None
    if need_w:
        gk = np.array(_G, x.dtype)
        gw = (np.kron(gk, gk).T @ du.reshape(16, -1)).T.reshape(o, c, 3, 3)
    return gx, gw

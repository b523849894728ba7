"""Convolution (``conv1d``, ``conv2d``, ``conv_transpose2d``) as fused ops.

An im2col view of the (padded) input made with ``as_strided`` — element ``[n, c, i, j, oh, ow]``
is ``x[n, c, oh*stride + i*dilation, ow*stride + j*dilation]`` —, one batched matrix product, and
for the adjoint (col2im) one strided add per kernel position, never a loop over pixels. On the
CPU (one group, contiguous float32/float64) ddp.kernels.convolution builds the patches and
their adjoint with compiled loops instead (see :func:`_kernel_path`). The three convolution ops
differentiate into one another, so higher-order gradients work.
"""
from __future__ import annotations

import numpy as np

from ... import backend, kernels
from ...kernels import convolution as _kernels
from ...ops.autocast import autocast_op
from ...autograd.graph import Op
from ._helpers import _batched, _col2im, _crop_hw, _ntuple, _out_size, _pad_hw, _same_dtype, _shape

# Output pixels per matrix product on the CPU. The patch matrix is built and multiplied a block
# at a time, so that the block (1024 x K floats) stays in the L2 cache between the copy that
# makes it and BLAS's packing of it: the whole (N*OH*OW, K) matrix at once goes through memory
# twice and runs OpenBLAS at ~50 GFLOP/s against ~90 in cache. Forward of a 3x3 conv 16->32 at
# (32, 16, 28, 28): 4.6 ms in blocks against 7.8 for the per-sample products of the whole
# matrix. On a GPU the whole matrix is one product (no blocks).
_BLOCK = 1024


def _channels_last(cg, kernel, stride, dilation, out):
    """Whether the longer runs of contiguous values are channels last: kw*C/G (C/G when
    dilated) against OW (1 when strided; the whole image for a 1x1 kernel at stride 1, whose
    patches are the input itself). Forward + weight gradient of a 3x3 conv at batch 128,
    16->32 on 14x14: 7.4 ms channels last vs 8.9; 1->16 on 28x28: 1.7 ms channels first vs 3.9."""
    if tuple(kernel) == (1, 1) and tuple(stride) == (1, 1):
        return False
    return cg * (kernel[1] if dilation[1] == 1 else 1) >= (out[1] if stride[1] == 1 else 1)


def _patches(x, pads, kernel, groups, stride, dilation, out):
    """The patches of ``x`` (N, C, H, W) padded by ``pads``, as an (N, G, OH*OW, K/G) view,
    and whether they are channels last (then the (G, N*OH*OW, K/G) matrix is contiguous)."""
    xp = backend.get_array_module(x)
    as_strided = xp.lib.stride_tricks.as_strided
    (s0, s1), (d0, d1) = stride, dilation
    n, c = x.shape[:2]
    cg, k, l = c // groups, c // groups * kernel[0] * kernel[1], out[0] * out[1]
    if _channels_last(cg, kernel, stride, dilation, out):
        (t, b), (lft, r) = pads
        xh = xp.zeros((n, x.shape[2] + t + b, x.shape[3] + lft + r, c), dtype=x.dtype)
        xh[:, t:t + x.shape[2], lft:lft + x.shape[3]] = x.transpose(0, 2, 3, 1)  # padded NHWC
        bn, bh, bw, bc = xh.strides
        cols = as_strided(xh, (groups, n) + tuple(out) + tuple(kernel) + (cg,),
                          (bc * cg, bn, bh * s0, bw * s1, bh * d0, bw * d1, bc))
        return cols.reshape(groups, n, l, k).transpose(1, 0, 2, 3), True
    x = _pad_hw(x, pads)
    bn, bc, bh, bw = x.strides
    cols = as_strided(x, (n, groups, cg) + tuple(kernel) + tuple(out),
                      (bn, bc * cg, bc, bh * d0, bw * d1, bh * s0, bw * s1))
    return xp.swapaxes(cols.reshape(n, groups, k, l), 2, 3), False


def _nhwc_patches(x, pads, kernel, stride, dilation, out):
    """The patches of ``x`` (N, C, H, W) padded by ``pads``: an (N, OH, OW, kh, kw, C) view of
    a padded channels-last copy (the one copy of ``x``), each patch's (kw, C) rows contiguous."""
    xp = backend.get_array_module(x)
    (t, b), (lft, r) = pads
    n, c, h, w = x.shape
    xh = xp.zeros((n, h + t + b, w + lft + r, c), dtype=x.dtype)
    xh[:, t:t + h, lft:lft + w] = x.transpose(0, 2, 3, 1)
    bn, bh, bw, bc = xh.strides
    return xp.lib.stride_tricks.as_strided(
        xh, (n,) + tuple(out) + tuple(kernel) + (c,),
        (bn, bh * stride[0], bw * stride[1], bh * dilation[0], bw * dilation[1], bc))


def _patch_blocks(cols):
    """The rows of the patch matrix of ``cols`` (an :func:`_nhwc_patches` view) in blocks of
    about ``_BLOCK`` output pixels (whole samples, or image rows of one sample; on a GPU all
    samples, or one whole sample): yields ``(samples, rows, matrix)`` — slices of N and OH, and
    that block's (pixels, K) patch matrix, contiguous, in a buffer that the next block reuses.
    Whole samples of a small image per block: fewer, longer steps of the loop (16->32 on 14x14
    at batch 128, forward + backward: 5 samples per block ~2 ms faster than 1)."""
    xp = backend.get_array_module(cols)
    n, oh, ow = cols.shape[:3]
    if oh * ow >= _BLOCK:   # image rows of one sample at a time
        per = max(1, _BLOCK // ow) if xp is np else oh
        pieces = [(slice(s, s + 1), slice(r, min(oh, r + per)))
                  for s in range(n) for r in range(0, oh, per)]
    else:                   # whole samples
        per = _BLOCK // (oh * ow) if xp is np else n
        pieces = [(slice(s, min(n, s + per)), slice(0, oh)) for s in range(0, n, per)]
    ns, rs = pieces[0]
    buf = xp.empty((len(range(n)[ns]), len(range(oh)[rs])) + cols.shape[2:], dtype=cols.dtype)
    for ns, rs in pieces:
        block = buf[:ns.stop - ns.start, :rs.stop - rs.start]
        block[...] = cols[ns, rs]
        yield ns, rs, block.reshape(block.shape[0] * block.shape[1] * ow, -1)


def _blocked(groups, cin, kernel, stride, dilation, out):
    """Whether the convolution goes through :func:`_patch_blocks` (one group, channels-last
    patches: see :func:`_channels_last`)."""
    return groups == 1 and _channels_last(cin, kernel, stride, dilation, out)


def _conv_blocks(x, w, geom, out, b=None, rows=None):
    """:func:`_conv_matmul` through :func:`_patch_blocks`: each block's product, plus the bias
    ``b``, written straight into the NCHW output while it is in cache (a separate pass adding
    the bias took ~0.4 ms of the 16->32 conv's 4.5): transposed, (O, K) @ (K, pixels) per
    sample, by BLAS itself into the output (no transposing write: 16->32 on 28x28 at batch 32,
    forward 6.3 -> 5.8-6.0 ms).

    With ``rows``, an (N, R, OH, OW) array whose pixels are the output's, returns also the sum
    over the blocks of rows @ patches, (R, K), the K ordered (kh, kw, C): the patches are then
    multiplied a second time while in cache (see :func:`_conv_grads`); the product is then
    (pixels, K) @ (K, O), transposed by the write (the transposed product made that backward,
    16 output channels, 2-5 % slower)."""
    stride, pads, dilation, _ = geom
    xp = backend.get_array_module(x, w)
    o = w.shape[0]
    wm = xp.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(-1, o)  # (K, O), K as patches'
    dtype = xp.result_type(x.dtype, w.dtype)
    y = xp.empty((x.shape[0], o) + tuple(out), dtype=dtype)
    y3 = y.reshape(x.shape[0], o, -1)
    acc = None if rows is None else xp.zeros((rows.shape[1], wm.shape[0]), dtype=dtype)
    for ns, rs, mat in _patch_blocks(_nhwc_patches(x, pads, w.shape[2:], stride, dilation, out)):
        if rows is None:
            yb = y3[ns, :, rs.start * out[1]:rs.stop * out[1]]   # (samples, O, pixels), a view
            xp.matmul(wm.T, mat.reshape(yb.shape[0], yb.shape[2], -1).transpose(0, 2, 1), out=yb)
            if b is not None:
                yb += b[:, None]
            continue
        yb = xp.matmul(mat, wm).reshape(ns.stop - ns.start, -1, out[1], o).transpose(0, 3, 1, 2)
        if b is None:
            y[ns, :, rs] = yb
        else:
            xp.add(yb, b[:, None, None], out=y[ns, :, rs])
        # per sample, the block's (R, pixels) of ``rows``: a view
        rb = rows[ns, :, rs].reshape(ns.stop - ns.start, rows.shape[1], -1)
        prod = xp.matmul(rb, mat.reshape(rb.shape[0], rb.shape[2], -1))
        acc += prod[0] if rb.shape[0] == 1 else prod.sum(axis=0)
    return y if rows is None else (y, acc)


def _kernel_path(geom, w_shape, *arrays):
    """Whether the convolution runs through ddp.kernels.convolution's patch loops: one group,
    ``arrays`` that :func:`kernels.fits`, and patches that are not the input itself (a 1x1
    kernel at stride 1, unpadded, multiplies ``x`` in place)."""
    stride, pads, _, groups = geom
    if groups != 1 or (tuple(w_shape[2:]) == (1, 1) and tuple(stride) == (1, 1) and
                       not any(pads[0] + pads[1])):
        return False
    return kernels.fits(*arrays)


def _conv_matmul(x, w, geom, out, b=None):
    """Convolution of ``x`` (N, C, H, W) with ``w`` (O, C/groups, kh, kw), plus the bias ``b``
    (O,) when given: (N, O, OH, OW)."""
    stride, pads, dilation, groups = geom
    if _kernel_path(geom, w.shape, x, w, b):
        return _kernels.conv2d_forward(x, w, b, stride, pads, dilation, out)
    if _blocked(groups, x.shape[1], w.shape[2:], stride, dilation, out):
        return _conv_blocks(x, w, geom, out, b)
    xp = backend.get_array_module(x, w)
    cols, last = _patches(x, pads, w.shape[2:], groups, stride, dilation, out)
    w = xp.ascontiguousarray(w.transpose(0, 2, 3, 1) if last else w)  # K ordered as cols'
    o = w.shape[0]
    # into a C-ordered (N, G, O/G, OH*OW) output: matmul would follow the patches' layout
    y = xp.empty((x.shape[0], groups, o // groups, out[0] * out[1]),
                 dtype=xp.result_type(x.dtype, w.dtype))
    xp.matmul(w.reshape(groups, o // groups, -1), xp.swapaxes(cols, 2, 3), out=y)
    y = y.reshape(x.shape[0], o, out[0], out[1])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def _conv_weight_grad(g, x, w_shape, geom, sink=None):
    """Gradient of :func:`_conv_matmul` in ``w`` (of shape ``w_shape``); with ``sink`` (see
    :func:`_weight_out`) written there."""
    stride, pads, dilation, groups = geom
    if stride[1] == 1 and _kernel_path(geom, w_shape, g, x):   # (strided: the blocks below
        # copy rows of kw C values, the patch loops single ones: 4x4 at stride 2, 16->32 on
        # 28x28 at batch 16, 0.99 ms against 1.22)
        return _weight_out(np, _kernels.conv2d_backward(g, x, None, w_shape, stride, pads,
                                                        dilation, False, True)[1], sink)
    xp = backend.get_array_module(g, x)
    n, o, oh, ow = g.shape
    if _blocked(groups, x.shape[1], w_shape[2:], stride, dilation, (oh, ow)):
        # per block: g's (O, pixels) rows (a view when the block is within one sample) @ the
        # block's (pixels, K) patches, summed over the blocks
        gw = xp.zeros((o, w_shape[1] * w_shape[2] * w_shape[3]), dtype=g.dtype)
        for ns, rs, mat in _patch_blocks(_nhwc_patches(x, pads, w_shape[2:], stride, dilation,
                                                       (oh, ow))):
            gw += xp.matmul(g[ns, :, rs].transpose(1, 0, 2, 3).reshape(o, -1), mat)
        o, cg, kh, kw = w_shape
        return _weight_out(xp, gw.reshape(o, kh, kw, cg).transpose(0, 3, 1, 2), sink)
    cols, last = _patches(x, pads, w_shape[2:], groups, stride, dilation, (oh, ow))
    if not last:  # per-sample products, summed (a copy into one matrix costs more)
        g = xp.ascontiguousarray(g).reshape(n, groups, o // groups, oh * ow)
        return _weight_out(xp, xp.matmul(g, cols).sum(axis=0).reshape(w_shape), sink)
    g = xp.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(groups, o // groups, -1)
    gw = xp.matmul(g, cols.transpose(1, 0, 2, 3).reshape(groups, n * oh * ow, -1))
    o, cg, kh, kw = w_shape
    return _weight_out(xp, gw.reshape(o, kh, kw, cg).transpose(0, 3, 1, 2), sink)


def _weight_out(xp, gw, sink):
    """The weight's gradient ``gw`` (a view in another layout) as a contiguous array — or,
    with ``sink = (out, scale)`` (DDP's bucket: ``Node.gradient_sink``), ``scale * gw``
    written there: the copy the layout needs anyway, and none into the bucket."""
    if sink is None:
        return xp.ascontiguousarray(gw)
    out, scale = sink
    if scale == 1:
        out[...] = gw
    else:
        xp.multiply(gw, scale, out=out)
    return out


def _exact_weight_grad(gw, g, x, w_shape, geom, sink):
    """``gw``, the weight's gradient from a fast form (an array, in ``sink`` when offered), or,
    where it holds an infinity or NaN, :func:`_weight_grad_direct`'s (into ``sink``). The fast
    forms multiply the padding's zeros by x's values (the correlations of g's padded patches,
    the sub-pixel phases) or add and subtract x's values (Winograd's transforms): an infinite
    x gives NaN there where PyTorch's sums give an infinity or a finite value. The check is a
    pass over the small gradient (1.5 us for 32x16x3x3), on the host only (see
    ``backend.finite_on_host``)."""
    if backend.finite_on_host(gw):
        return gw
    xp = backend.get_array_module(g, x)
    return _weight_out(xp, _weight_grad_direct(g, x, w_shape, geom), sink)


def _weight_grad_direct(g, x, w_shape, geom):
    """The weight's gradient of :func:`_conv_matmul` summed as PyTorch does: per tap (i, j),
    ``g`` of the output pixels whose input pixel lies inside ``x`` times those input pixels,
    over samples and pixels — no product with the padding. A product per tap and group."""
    xp = backend.get_array_module(g, x)
    stride, pads, dilation, groups = geom
    o, cg, kh, kw = w_shape
    og = o // groups
    gw = xp.zeros(w_shape, dtype=g.dtype)

    def inside(a, tap):   # output pixels [p0, p1) whose input pixel is in x; the first's
        off, s, size = tap * dilation[a] - pads[a][0], stride[a], x.shape[2 + a]
        p0 = min(g.shape[2 + a], max(0, -(off // s)))
        p1 = max(p0, min(g.shape[2 + a], -(-(size - off) // s)))
        return p0, p1, p0 * s + off

    for i in range(kh):
        p0, p1, h0 = inside(0, i)
        for j in range(kw):
            q0, q1, w0 = inside(1, j)
            if p0 == p1 or q0 == q1:
                continue
            gs = g[:, :, p0:p1, q0:q1]
            xs = x[:, :, h0:h0 + (p1 - p0 - 1) * stride[0] + 1:stride[0],
                   w0:w0 + (q1 - q0 - 1) * stride[1] + 1:stride[1]]
            for k in range(groups):
                gw[k * og:(k + 1) * og, :, i, j] = xp.tensordot(
                    gs[:, k * og:(k + 1) * og], xs[:, k * cg:(k + 1) * cg],
                    axes=([0, 2, 3], [0, 2, 3]))
    return gw


def _conv_matmul_adjoint(g, w, geom, size, b=None):
    """Adjoint of :func:`_conv_matmul` in ``x``: ``g`` (N, O, OH, OW) spread back into an input
    of spatial ``size``, plus the bias ``b`` (C,) when given."""
    stride, pads, dilation, groups = geom
    o, oh, ow = g.shape[1:]
    cg, kh, kw = w.shape[1:]
    flipped = _flipped(w.shape, geom, size)
    if flipped is not None:
        return _adjoint_conv(g, w[:, :, ::-1, ::-1].swapaxes(0, 1), flipped, tuple(size), b)
    # strided: the sub-pixel form (when its phases' rows do not end before g's)
    # (a kernel that is not a whole multiple of the stride gets zero taps there, whose products
    # with an infinite g are NaN where PyTorch's sums have none: such a g takes the columns)
    if tuple(dilation) == (1, 1) and groups == 1 and cg * stride[0] * stride[1] >= 8 and \
            all(pads[a][0] + size[a] > (g.shape[2 + a] - 1) * stride[a] for a in range(2)) and \
            ((kh % stride[0] == 0 and kw % stride[1] == 0) or backend.finite_on_host(g)):
        sub = _subpixel(w, stride)
        if _blocked(1, o, sub.shape[2:], (1, 1), (1, 1), (oh, ow)):
            return _adjoint_subpixel(g, sub, geom, size, b)
    x = _conv_adjoint_cols(g, w, geom, size)
    if b is not None:
        x += b.reshape(1, -1, 1, 1)
    return x


def _adjoint_conv(g, w, geom, out, b):
    """The stride-1 convolution that gives an adjoint (flipped or sub-pixel kernel ``w``):
    through ddp.kernels.convolution where it fits, else :func:`_conv_blocks`. conv_transpose2d
    4x4 at stride 2, 32->16 on 14x14 at batch 16, forward 1.70 -> 0.97 ms; the stride-1 3x3
    adjoint, 32->16 on 28x28 at batch 32, 7.39 -> 4.54."""
    if type(w) is np.ndarray:
        w = np.ascontiguousarray(w)   # (a view of the kernel: small)
    if _kernel_path(geom, w.shape, g, w, b):
        return _kernels.conv2d_forward(g, w, b, geom[0], geom[1], geom[2], out)
    return _conv_blocks(g, w, geom, out, b)


def _flipped(w_shape, geom, size):
    """The geometry of the stride-1 adjoint as a convolution of g with the flipped kernel, its
    in and out channels swapped, padded by the kernel's extent less the padding; None where it
    does not apply: strided, a padding beyond the kernel's extent, not blocked, or fewer than 8
    input channels, whose (pixels, K) @ (K, C) products are too narrow for BLAS (1->16 on 28x28
    at batch 128: 4.95 ms against 1.95 for the columns and col2im)."""
    stride, pads, dilation, groups = geom
    flipped = tuple((dilation[a] * (w_shape[2 + a] - 1) - pads[a][0],
                     dilation[a] * (w_shape[2 + a] - 1) - pads[a][1]) for a in range(2))
    if tuple(stride) == (1, 1) and min(min(flipped)) >= 0 and w_shape[1] >= 8 and \
            _blocked(groups, w_shape[0], w_shape[2:], stride, dilation, tuple(size)):
        return ((1, 1), flipped, dilation, 1)
    return None


def _conv_grads(g, x, w, geom, sink=None):
    """Both gradients of :func:`_conv_matmul`, in ``x`` and in ``w``, from one pass over g's
    patches, where the input gradient is the flipped-kernel convolution (else None). The weight
    gradient is then x's (C, pixels) rows of each sample (NCHW: a view) @ g's patches, summed
    over the blocks, each block multiplied a second time while in cache: ``gw[o, c, i, j] = sum_q x[c, q] g[o, q - d*(i, j)
    + pad]`` is the flipped kernel's tap (kh-1-i, kw-1-j) of g's patch at input pixel q. Before:
    a second padded copy (of x), its own patch blocks and g's rows gathered per block
    (16->32 on 14x14 at batch 128: ~1.9 ms more); then an NHWC copy of x (~0.4 ms)."""
    flipped = _flipped(w.shape, geom, x.shape[2:])
    if flipped is None:
        return None
    xp = backend.get_array_module(g, x)
    gx, acc = _conv_blocks(g, w[:, :, ::-1, ::-1].swapaxes(0, 1), flipped, tuple(x.shape[2:]),
                           rows=x)
    o, c, kh, kw = w.shape
    return gx, _weight_out(xp, acc.reshape(c, kh, kw, o)[:, ::-1, ::-1].transpose(3, 0, 1, 2),
                           sink)


def _subpixel(w, stride):
    """The kernel of the stride-1 convolution that gives a strided adjoint's output phases:
    ``w`` (O, C, kh, kw) padded with zeros to whole multiples (m0*s0, m1*s1) of the stride, as
    (s0*s1*C, O, m0, m1) — output channel (a, b, c) holds the taps ``w[:, c, a + s0*i,
    b + s1*j]``, flipped."""
    xp = backend.get_array_module(w)
    (s0, s1), (o, c, kh, kw) = stride, w.shape
    m0, m1 = -(-kh // s0), -(-kw // s1)
    wz = xp.zeros((o, c, m0 * s0, m1 * s1), dtype=w.dtype)
    wz[:, :, :kh, :kw] = w
    taps = wz.reshape(o, c, m0, s0, m1, s1)[:, :, ::-1, :, ::-1]   # [o, c, i, a, j, b]
    return taps.transpose(3, 5, 1, 0, 2, 4).reshape(s0 * s1 * c, o, m0, m1)


def _adjoint_subpixel(g, sub, geom, size, b):
    """The strided adjoint as one stride-1 convolution of ``g`` with :func:`_subpixel`'s kernel
    ``sub`` (through :func:`_conv_blocks`), its s0*s1 groups of output channels the phases
    (a, b) of the padded input, ``x[.., q*s0 + a, r*s1 + b]``, interleaved and cropped by s0*s1
    copies. 4x4 kernel at stride 2, 32->16 on 14x14 at batch 16: 1.1 ms against 1.7 for the
    per-kernel-position products and col2im, which add 16 strided blocks."""
    xp = backend.get_array_module(g, sub)
    (s0, s1), ((t, _), (lft, _)) = geom[0], geom[1]
    n, (oh, ow), (m0, m1) = g.shape[0], g.shape[2:], sub.shape[2:]
    c = sub.shape[0] // (s0 * s1)
    # the phases' rows q = 0 .. ceil((t + H) / s0) - 1; past OH + m0 - 1 they read zeros only
    q0, q1 = -(-(t + size[0]) // s0), -(-(lft + size[1]) // s1)
    pads = ((m0 - 1, q0 - oh), (m1 - 1, q1 - ow))
    # (the bias added to each block of the convolution: added in the strided copies below,
    # 0.31 ms against 0.13 + 0.06)
    bias = None if b is None else xp.tile(b, s0 * s1)
    y = _adjoint_conv(g, sub, ((1, 1), pads, (1, 1), 1), (q0, q1), bias)
    y = y.reshape(n, s0, s1, c, q0, q1)
    # one strided copy per phase: output row h is padded row h + t = q*s0 + a (a transpose
    # of all phases at once gathers single values: 1.2 ms here against 0.2)
    x = xp.empty((n, c) + tuple(size), dtype=y.dtype)
    for a in range(s0):
        h0 = (a - t) % s0
        for b_ in range(s1):
            w0 = (b_ - lft) % s1
            q, r = (h0 + t - a) // s0, (w0 + lft - b_) // s1
            x[:, :, h0::s0, w0::s1] = y[:, a, b_, :, q:q + len(range(h0, size[0], s0)),
                                        r:r + len(range(w0, size[1], s1))]
    return x


def _conv_adjoint_cols(g, w, geom, size):
    """:func:`_conv_matmul_adjoint` as matrix products giving the columns, then col2im."""
    stride, pads, dilation, groups = geom
    xp = backend.get_array_module(g, w)
    n, o, oh, ow = g.shape
    cg, kh, kw = w.shape[1:]
    hw = (size[0] + sum(pads[0]), size[1] + sum(pads[1]))
    if kh * kw > 1 and cg >= 8:
        # one product per kernel position and group, g (N*OH*OW, O/G) @ w[:, :, i, j], gives
        # each position's columns as a contiguous (N, OH, OW, C/G) block, added into an NHWC
        # buffer in rows of OW*C/G (3x3 conv 16->32 on 14x14, batch 128: 4.4 ms vs 6.2 the
        # other way). Products under 8 columns wide are slow (3->32 on 56x56: 9.8 ms vs 3.9).
        rows = xp.ascontiguousarray(g.transpose(0, 2, 3, 1)).reshape(n * oh * ow, groups, -1)
        wk = w.reshape(groups, o // groups, cg, kh, kw).transpose(3, 4, 0, 1, 2)
        cols = xp.matmul(rows.transpose(1, 0, 2), xp.ascontiguousarray(wk))
        cols = cols.reshape(kh, kw, groups, n, oh, ow, cg).transpose(2, 3, 0, 1, 4, 5, 6)
        x = _crop_hw(_col2im(cols, (groups, n) + hw + (cg,), stride, dilation), pads)
        return xp.ascontiguousarray(x.transpose(1, 0, 4, 2, 3)).reshape((n, -1) + tuple(size))
    # one product per sample and group, w.T (K/G, O/G) @ g[n] (O/G, OH*OW), col2im in NCHW
    w = xp.ascontiguousarray(w).reshape(groups, o // groups, -1)
    g = xp.ascontiguousarray(g).reshape(n, groups, o // groups, oh * ow)
    cols = xp.matmul(xp.swapaxes(w, 1, 2), g).reshape(n, groups * cg, kh, kw, oh, ow)
    x = _crop_hw(_col2im(cols, (n, groups * cg) + hw, stride, dilation), pads)
    return xp.ascontiguousarray(x)


class Convolution(Op):
    """2-d convolution (cross-correlation) ``x ⋆ w + b``."""
    fresh_grads = True
    writes_grad_sinks = True   # the weight's gradient written into DDP's bucket

    @staticmethod
    def forward(ctx, x, w, b, geom=None, out=None):
        ctx.save_for_backward(x, w)
        ctx.geom = geom
        return _conv_matmul(x, w, geom, out, b)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        sink = _weight_sink(ctx, g)
        gc = np.ascontiguousarray(g) if type(g) is np.ndarray else g
        if need_x and need_w and not ctx.create_graph and \
                _kernel_path(ctx.geom, w.shape, x, w, gc):   # both from one pass over x's patches
            stride, pads, dilation, _ = ctx.geom
            gx, gw = _kernels.conv2d_backward(gc, x, w, w.shape, stride, pads, dilation,
                                              True, True)
            return gx, _exact_weight_grad(_weight_out(np, gw, sink), gc, x, w.shape, ctx.geom,
                                          sink), _bias_grad(ctx, g) if need_b else None
        both = _conv_grads(g, x, w, ctx.geom, sink) if need_x and need_w and \
            not ctx.create_graph else None   # (recorded under create_graph: the ops below)
        gb = _bias_grad(ctx, g) if need_b else None
        if both is not None:
            return both[0], _exact_weight_grad(both[1], g, x, w.shape, ctx.geom, sink), gb
        gw = None
        if need_w:
            gw = _conv_weight_grad(gc, x, w.shape, ctx.geom, sink) if sink is not None else \
                ConvolutionWeight.run(gc, x, geom=ctx.geom, kernel=tuple(w.shape[2:]))
            if not ctx.create_graph:
                gw = _exact_weight_grad(gw, gc, x, w.shape, ctx.geom, sink)
        return (ConvolutionTranspose.run(g, w, None, geom=ctx.geom, out=tuple(x.shape[2:]))
                if need_x else None,
                gw, gb)


def _weight_sink(ctx, g):
    """The weight's (input 1's) gradient sink (see ``Node.gradient_sink``; never offered under
    create_graph) when it has the gradient's dtype, else None."""
    sink = ctx.gradient_sink(1)
    return None if sink is None or sink[0].dtype != g.dtype else sink


def _bias_grad(ctx, g):
    """The bias's gradient, the sum of ``g`` over (N, H, W), into its gradient sink (scaled)
    when one is offered (see ``Node.gradient_sink``)."""
    sink = None if ctx.create_graph else ctx.gradient_sink(2)
    if sink is None or sink[0].dtype != g.dtype:
        return g.sum(axis=(0, 2, 3))
    out, scale = sink
    g.sum(axis=(0, 2, 3), out=out)
    if scale != 1:
        out *= scale
    return out


class ConvolutionTranspose(Op):
    """Transposed convolution (the adjoint of :class:`Convolution` in its input) plus ``b``;
    ``w`` is (C_in, C_out/groups, kh, kw) and ``out`` the output's spatial size."""
    fresh_grads = True
    writes_grad_sinks = True   # the weight's and bias's gradients written into DDP's buckets

    @staticmethod
    def forward(ctx, y, w, b, geom=None, out=None):
        ctx.save_for_backward(y, w)
        ctx.geom = geom
        return _conv_matmul_adjoint(y, w, geom, out, b)

    @staticmethod
    def backward(ctx, g):
        y, w = ctx.saved_tensors
        need_y, need_w, need_b = ctx.needs_input_grad
        gc = np.ascontiguousarray(g) if type(g) is np.ndarray else g
        if need_y and need_w and not ctx.create_graph and \
                _kernel_path(ctx.geom, w.shape, y, w, gc) and \
                (tuple(ctx.geom[0]) == (1, 1) or tuple(ctx.geom[2]) == (1, 1)):
            gy, gw = _adjoint_grads(gc, y, w, ctx.geom)
            sink = _weight_sink(ctx, g)
            return gy, _exact_weight_grad(_weight_out(np, gw, sink), y, gc, w.shape, ctx.geom,
                                          sink), _bias_grad(ctx, g) if need_b else None
        gw = None
        if need_w:   # w is also the weight of the convolution of g that gives y
            sink = _weight_sink(ctx, g)
            gw = _conv_weight_grad(y, g, w.shape, ctx.geom, sink) if sink is not None else \
                ConvolutionWeight.run(y, g, geom=ctx.geom, kernel=tuple(w.shape[2:]))
            if not ctx.create_graph:
                gw = _exact_weight_grad(gw, y, gc, w.shape, ctx.geom, sink)
        return (Convolution.run(g, w, None, geom=ctx.geom, out=tuple(y.shape[2:]))
                if need_y else None,
                gw, _bias_grad(ctx, g) if need_b else None)


def _adjoint_grads(g, y, w, geom):
    """Both gradients of :func:`_conv_matmul_adjoint` (of ``y``, kernel ``w``) for the upstream
    ``g`` through ddp.kernels.convolution, from one pass over g's patches: y's is the
    convolution of g with w, w's (a view) that convolution's weight gradient for y, each
    block's patches multiplied twice while in cache. Strided: the convolution of g's phases
    (ddp.kernels.convolution.conv2d_phases). conv_transpose2d 4x4 at stride 2, 32->16 on 14x14
    at batch 16, backward: 2.10 ms as the strided patches' convolution of g and its weight
    gradient (each its own patches) against 1.73."""
    stride, pads, dilation, _ = geom
    if tuple(stride) == (1, 1):
        return _kernels.conv2d_forward(g, w, None, stride, pads, dilation, tuple(y.shape[2:]), y)
    return _kernels.conv2d_phases(g, w, stride, pads, tuple(y.shape[2:]), y)


class ConvolutionWeight(Op):
    """The weight gradient of a convolution as an op (recorded only under create_graph)."""
    fresh_grads = True

    @staticmethod
    def forward(ctx, y, x, geom=None, kernel=None):
        ctx.save_for_backward(y, x)
        ctx.geom = geom
        w_shape = (y.shape[1], x.shape[1] // geom[3]) + tuple(kernel)
        return _conv_weight_grad(y, x, w_shape, geom)

    @staticmethod
    def backward(ctx, g):
        y, x = ctx.saved_tensors
        need_y, need_x = ctx.needs_input_grad
        return (Convolution.run(x, g, None, geom=ctx.geom, out=tuple(y.shape[2:]))
                if need_y else None,
                ConvolutionTranspose.run(y, g, None, geom=ctx.geom, out=tuple(x.shape[2:]))
                if need_x else None)


def _conv_padding(name, padding, kernel, dilation, stride):
    """``padding`` (int, pair, 'same' or 'valid') as ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding != "same":
            raise ValueError(f"{name}: invalid padding string {padding!r}, should be one of "
                             f"{{'valid', 'same'}}")
        if any(s != 1 for s in stride):
            raise ValueError(f"{name}: padding='same' is not supported for strided convolutions")
        # PyTorch puts the odd extra row/column of padding at the bottom/right
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in _ntuple(padding, 2, "padding"))


@autocast_op("conv2d")
def _conv2d(name, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d with errors naming ``name`` (the functional or the layer)."""
    x, unbatched = _batched(name, input, 4, "H, W")
    if weight.ndim != 4:
        raise RuntimeError(f"{name}: expected a 4-D weight (out_channels, in_channels/groups, kH, "
                           f"kW), got weight of shape {_shape(weight)}")
    stride, dilation = _ntuple(stride, 2, "stride"), _ntuple(dilation, 2, "dilation")
    kernel = tuple(weight.shape[2:])
    if x.shape[1] != weight.shape[1] * groups:
        raise RuntimeError(f"{name}: expected input with {weight.shape[1] * groups} channels, "
                           f"got input of shape {_shape(input)} (weight of shape "
                           f"{_shape(weight)}, groups={groups})")
    if weight.shape[0] % groups:
        raise RuntimeError(f"{name}: out_channels={weight.shape[0]} is not divisible by "
                           f"groups={groups}")
    _same_dtype(name, x, weight, bias)
    pads = _conv_padding(name, padding, kernel, dilation, stride)
    out = tuple(_out_size(x.shape[2 + a], kernel[a], stride[a], dilation[a], sum(pads[a]))
                for a in range(2))
    if min(out) < 1:
        raise RuntimeError(f"{name}: input of shape {_shape(input)} padded by {pads} is smaller "
                           f"than the (dilated) kernel {kernel} with dilation {dilation}")
    y = Convolution.apply(x, weight, bias, geom=(stride, pads, dilation, groups), out=out)
    return y.squeeze(0) if unbatched else y


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-d convolution of ``input`` (N, C, H, W) or (C, H, W) with ``weight``
    (out_channels, C/groups, kH, kW); ``padding`` may be an int, a pair, 'same' or 'valid'.

    Example:
        >>> F.conv2d(ddp.ones(1, 2, 5, 5), ddp.ones(3, 2, 3, 3), stride=2).shape
        ddp.Size([1, 3, 2, 2])
    """
    return _conv2d("conv2d", input, weight, bias, stride, padding, dilation, groups)


@autocast_op("conv1d")
def _conv1d(name, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv1d as conv2d over a unit height."""
    x, unbatched = _batched(name, input, 3, "L")
    if weight.ndim != 3:
        raise RuntimeError(f"{name}: expected a 3-D weight (out_channels, in_channels/groups, kL), "
                           f"got weight of shape {_shape(weight)}")
    if x.shape[1] != weight.shape[1] * groups:
        raise RuntimeError(f"{name}: expected input with {weight.shape[1] * groups} channels, "
                           f"got input of shape {_shape(input)} (weight of shape "
                           f"{_shape(weight)}, groups={groups})")
    if not isinstance(padding, str):
        padding = (0, _ntuple(padding, 1, "padding")[0])
    y = _conv2d(name, x.unsqueeze(2), weight.unsqueeze(2), bias,
                (1, _ntuple(stride, 1, "stride")[0]), padding,
                (1, _ntuple(dilation, 1, "dilation")[0]), groups).squeeze(2)
    return y.squeeze(0) if unbatched else y


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-d convolution of ``input`` (N, C, L) or (C, L) with ``weight`` (out, C/groups, kL).

    Example:
        >>> F.conv1d(ddp.ones(1, 2, 5), ddp.ones(3, 2, 3), padding="same").shape
        ddp.Size([1, 3, 5])
    """
    return _conv1d("conv1d", input, weight, bias, stride, padding, dilation, groups)


@autocast_op("conv_transpose2d")
def _conv_transpose2d(name, input, weight, bias=None, stride=1, padding=0, output_padding=0,
                      groups=1, dilation=1, output_size=None):
    x, unbatched = _batched(name, input, 4, "H, W")
    if weight.ndim != 4:
        raise RuntimeError(f"{name}: expected a 4-D weight (in_channels, out_channels/groups, kH, "
                           f"kW), got weight of shape {_shape(weight)}")
    if x.shape[1] != weight.shape[0]:
        raise RuntimeError(f"{name}: expected input with {weight.shape[0]} channels, got input "
                           f"of shape {_shape(input)} (weight of shape {_shape(weight)})")
    if weight.shape[0] % groups:
        raise RuntimeError(f"{name}: in_channels={weight.shape[0]} is not divisible by "
                           f"groups={groups}")
    _same_dtype(name, x, weight, bias)
    stride, dilation = _ntuple(stride, 2, "stride"), _ntuple(dilation, 2, "dilation")
    padding = _ntuple(padding, 2, "padding")
    output_padding = _ntuple(output_padding, 2, "output_padding")
    kernel = tuple(weight.shape[2:])
    base = [(x.shape[2 + a] - 1) * stride[a] - 2 * padding[a] + dilation[a] * (kernel[a] - 1) + 1
            for a in range(2)]
    if output_size is not None:  # ConvTranspose2d(..)(x, output_size=...): infer output_padding
        output_size = tuple(output_size)[-2:]
        output_padding = tuple(s - b for s, b in zip(output_size, base))
    for a in range(2):
        if not 0 <= output_padding[a] < max(stride[a], dilation[a]):
            raise ValueError(f"{name}: output padding {output_padding} must be non-negative and "
                             f"smaller than either stride {stride} or dilation {dilation}")
    out = tuple(b + op for b, op in zip(base, output_padding))
    if min(out) < 1:
        raise RuntimeError(f"{name}: input of shape {_shape(input)} gives an empty output {out}")
    geom = (stride, tuple((p, p) for p in padding), dilation, groups)
    y = ConvolutionTranspose.apply(x, weight, bias, geom=geom, out=out)
    return y.squeeze(0) if unbatched else y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 2-d convolution ("deconvolution"); ``weight`` is (C_in, out/groups, kH, kW).
    The output size is ``(H - 1)*stride - 2*padding + dilation*(kH - 1) + output_padding + 1``.

    Example:
        >>> F.conv_transpose2d(ddp.ones(1, 4, 3, 3), ddp.ones(4, 2, 4, 4), stride=2,
        ...                    padding=1).shape
        ddp.Size([1, 2, 6, 6])
    """
    return _conv_transpose2d("conv_transpose2d", input, weight, bias, stride, padding,
                             output_padding, groups, dilation)

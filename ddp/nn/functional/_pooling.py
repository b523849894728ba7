"""Max, average and adaptive-average pooling (1-D and 2-D); pooling backward runs through :class:`Col2Im`.
"""
from __future__ import annotations

import numbers
import sys
import numpy as np
from ... import backend, kernels
from ...kernels import pooling as _kernels
from ...autograd.graph import Op
from ...tensor import Tensor
from ._helpers import _batched, _crop_hw, _ntuple, _pad_hw, _shape, _window



def _default_stride(stride, kernel):
    """Pooling's stride: the kernel size when not given (None or empty)."""
    return kernel if stride is None or isinstance(stride, (tuple, list)) and not stride \
        else stride


def _pool_geometry(name, x, kernel, stride, padding, dilation, ceil_mode):
    """Output size and padding ((top, bottom), (left, right)) covering every window, with
    PyTorch's rules (a ceil_mode window must start inside the input or the left padding)."""
    kernel = _ntuple(kernel, 2)
    stride = _ntuple(_default_stride(stride, kernel), 2, "stride")
    padding, dilation = _ntuple(padding, 2, "padding"), _ntuple(dilation, 2, "dilation")
    out, pads = [], []
    for a in range(2):
        k, s, p, d, size = kernel[a], stride[a], padding[a], dilation[a], x.shape[2 + a]
        if p > (d * (k - 1) + 1) // 2:
            raise RuntimeError(f"{name}: padding should be at most half of the effective kernel "
                               f"size, got padding={padding}, kernel_size={kernel} and "
                               f"dilation={dilation}")
        span = size + 2 * p - d * (k - 1) - 1
        o = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (o - 1) * s >= size + p:
            o -= 1
        if o < 1:
            raise RuntimeError(f"{name}: input of shape {_shape(x)} is too small for "
                               f"kernel_size={kernel} with padding={padding} and "
                               f"dilation={dilation} (output size would be {o})")
        out.append(o)
        pads.append((p, max((o - 1) * s + d * (k - 1) + 1 - size - p, 0)))
    return kernel, stride, dilation, tuple(out), tuple(pads)


def _lowest(dtype):
    return -np.inf if backend.is_float_np(dtype) else np.iinfo(dtype).min


def _window_max(xpad, kernel, stride, dilation, out):
    """The maximum of each window of the padded array (one elementwise max per kernel position)."""
    xp = backend.get_array_module(xpad)
    y = _window(xpad, 0, 0, stride, dilation, out).copy()
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            if i or j:
                xp.maximum(y, _window(xpad, i, j, stride, dilation, out), out=y)
    return y


def _windows_overlap(kernel, stride, dilation):
    """Whether two windows can share an input element (else col2im may write, not add)."""
    return any(k > 1 and s < d * (k - 1) + 1 for k, s, d in zip(kernel, stride, dilation))


def _inside(xpad, pads):
    """(1, 1, H', W') bool: True at the places of the padded ``xpad`` inside the input."""
    xp = backend.get_array_module(xpad)
    inside = xp.zeros((1, 1) + xpad.shape[2:], dtype=bool)
    inside[:, :, pads[0][0]:xpad.shape[2] - pads[0][1], pads[1][0]:xpad.shape[3] - pads[1][1]] = 1
    return inside


def _max_hits(xpad, y, kernel, stride, dilation, out, pads):
    """``(i, j, hit)`` for each kernel position; ``hit`` is a bool (N, C, OH, OW) array, True
    where (i, j) is a window's maximum by PyTorch's rule: the first element equal to ``y``,
    never a padded one (a window of -inf, or of an integer type's lowest value, has its
    maximum at its first element inside the input), and in a window holding a NaN its last
    NaN. Each window has one hit."""
    xp = backend.get_array_module(xpad)
    inside = _inside(xpad, pads) if any(pads[0]) or any(pads[1]) else None
    positions = [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]
    free = xp.ones(y.shape, dtype=bool)   # windows whose maximum is still to come
    nan_at = None   # in the windows holding a NaN: the position of their last one
    if backend.is_float_np(y.dtype) and backend.may_hold_any(xp.isnan(y)):
        nan_at = xp.full(y.shape, -1, dtype=np.int32)
        for k, (i, j) in enumerate(positions):
            xp.copyto(nan_at, k, where=xp.isnan(_window(xpad, i, j, stride, dilation, out)))
        free = nan_at < 0
    for k, (i, j) in enumerate(positions):
        hit = _window(xpad, i, j, stride, dilation, out) == y
        if inside is not None:
            hit &= _window(inside, i, j, stride, dilation, out)
        hit &= free
        free ^= hit
        if nan_at is not None:
            hit |= nan_at == k
        yield i, j, hit


# unsigned integers as wide as a window row's kw hit flags (one byte each); the lowest set
# byte is the row's first flag only where the lowest byte comes first in memory
_WINDOW_WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_LITTLE_ENDIAN = sys.byteorder == "little"


def _repeat_w(a, times):
    """``a`` (..., OW) with each value repeated ``times`` along the last axis: (..., OW*times),
    one strided copy per repetition (whole-array loops, not ``times``-long ones)."""
    xp = backend.get_array_module(a)
    out = xp.empty(a.shape + (times,), dtype=a.dtype)
    for j in range(times):
        out[..., j] = a
    return out.reshape(a.shape[:-1] + (-1,))


def _keep_first_per_window(hits, kernel):
    """In place, of the tiled windows' flags ``hits`` (N, C, OH, kh, OW * kw; bool, contiguous)
    only each window's first (row-major) stays: a window row's kw flags are the bytes of one
    integer ``v``, and ``v & -v`` keeps its lowest set byte (the row's first); a row is cleared
    where an earlier row of its window has one."""
    xp = backend.get_array_module(hits)
    kh, kw = kernel
    words = hits.view(_WINDOW_WORDS[kw])           # (N, C, OH, kh, OW)
    words &= -words                                # unsigned: two's complement
    free = None                                    # windows without a flag in earlier rows
    for i in range(kh):
        row = words[:, :, :, i]
        if free is not None:
            xp.multiply(row, free, out=row)
        if i < kh - 1:
            free = row == 0 if free is None else free & (row == 0)


def _spread_tiled(g, xpad, y, kernel, pads):
    """:class:`SpreadToMaxima` where the windows tile the input (kernel = stride, no
    dilation), in image rows rather than kernel positions: the candidates of the whole input
    from one comparison with ``y`` repeated along the width, each window's first kept
    (:func:`_keep_first_per_window`), and one product with ``g`` repeated along the width
    writes the whole gradient. NumPy's loops then run over image rows (not over the kh*kw
    positions' strided (OH, OW) views): 2x2 pooling of (128, 16, 28, 28) 4.9 ms against 7.1
    (min of 25). PyTorch's rule as :func:`_max_hits`: a padded element never, a window's last
    NaN (the first of the windows' flags reversed)."""
    xp = backend.get_array_module(g)
    (kh, kw), (n, c, oh, ow) = kernel, y.shape
    full = xpad.shape[2:] == (oh * kh, ow * kw)
    rows = (n, c, oh, kh, ow * kw)
    region = xpad[:, :, :oh * kh, :ow * kw].reshape(rows)
    hits = xp.equal(region, _repeat_w(y, kw)[:, :, :, None])
    if any(pads[0]) or any(pads[1]):   # (equal to a window of -inf's maximum)
        hits &= _inside(xpad, pads)[:, :, :oh * kh, :ow * kw].reshape((1, 1) + rows[2:])
    _keep_first_per_window(hits, kernel)
    if backend.is_float_np(y.dtype) and backend.may_hold_any(xp.isnan(y)):
        # (a window holding a NaN has no hit yet: a NaN equals nothing)
        last_nan = xp.ascontiguousarray(xp.isnan(region)[:, :, ::-1, ::-1, ::-1])
        _keep_first_per_window(last_nan, kernel)
        hits |= last_nan[:, :, ::-1, ::-1, ::-1]
    # every element is in a window unless the windows stop short of the padded input's edge
    gx = (xp.empty if full else xp.zeros)(xpad.shape, dtype=g.dtype)
    xp.multiply(hits, _repeat_w(g, kw)[:, :, :, None],
                out=gx[:, :, :oh * kh, :ow * kw].reshape(rows))
    return xp.ascontiguousarray(_crop_hw(gx, pads))


# the fused CPU kernels' argmax is an int32 index in a plane
_KERNEL_PLANE_LIMIT = 2 ** 31


class MaxPool2DWithIndices(Op):
    """Max over windows (padding never wins); the gradient goes to the first maximum of each
    window, as PyTorch's. Backward finds the maxima from the saved (padded) input and a copy of
    the output, so the output may be modified in place (``ReLU(inplace=True)`` after pooling).

    On the CPU (float32/float64, contiguous), when backward or the indices will need the
    maxima's places, the fused kernel of ddp.kernels.pooling finds them with the maxima (and
    PyTorch's NaN rule: the last NaN of a window is its maximum); backward scatters to them
    (:class:`SpreadToArgmax`): 2x2 pooling of (32, 32, 28, 28) float32, forward + backward,
    0.69 + 1.57 -> 0.63 + 0.22 ms; 3x3 windows at stride 2, padding 1: 2.08 + 7.11 -> 2.05 +
    0.23. Without a gradient the NumPy forward stays: the maxima alone, faster where windows
    overlap at stride 1 (2x2 windows: 1.43 ms against the kernel's 2.81)."""

    @staticmethod
    def forward(ctx, x, kernel=None, stride=None, dilation=None, pads=None, out=None,
                return_indices=False):
        ctx.fused = (any(ctx.needs_input_grad) or return_indices) and kernels.fits(x) and \
            x.shape[2] * x.shape[3] < _KERNEL_PLANE_LIMIT
        if ctx.fused:
            y, where = _kernels.max_pool2d_forward(x.reshape((-1,) + x.shape[2:]), kernel,
                                                   stride, pads, dilation, out)
            y = y.reshape(x.shape[:2] + y.shape[1:])
            where = where.reshape(y.shape)
            # saved, not an attribute: the engine frees saved arrays once backward has run
            ctx.save_for_backward(where)
            ctx.argmax = dict(shape=x.shape, dtype=x.dtype)
            return (y, where.astype(np.int64)) if return_indices else y
        xpad = _pad_hw(x, pads, _lowest(x.dtype))
        y = _window_max(xpad, kernel, stride, dilation, out)
        # a copy of y for backward: 0.04 ms, recomputing it 0.66 (2x2 pooling of 128x16x28x28)
        ctx.save_for_backward(xpad, y.copy() if ctx.needs_input_grad else None)
        ctx.geometry = (kernel, stride, dilation, pads, out, x.shape)
        if not return_indices:
            return y
        # flat index row * W + col (in the unpadded input) of each window's first maximum
        xp, width = backend.get_array_module(x), x.shape[3]
        rows = xp.arange(out[0]) * stride[0] - pads[0][0]
        cols = xp.arange(out[1]) * stride[1] - pads[1][0]
        offsets = (xp.arange(kernel[0])[:, None] * dilation[0] * width
                   + xp.arange(kernel[1])[None, :] * dilation[1]).reshape(-1)
        first = xp.zeros(y.shape, dtype=np.int64)  # kernel position (row-major) of the maximum
        for i, j, hit in _max_hits(xpad, y, kernel, stride, dilation, out, pads):
            first[hit] = i * kernel[1] + j
        return y, (rows[:, None] * width + cols[None, :] + offsets[first]).astype(np.int64)

    @staticmethod
    def backward(ctx, g, *unused):
        saved = _saved_arrays(ctx)
        if ctx.fused:
            return SpreadToArgmax.run(g, where=saved[0], **ctx.argmax)
        xpad, y = saved
        return SpreadToMaxima.run(g, xpad=xpad, y=y, geometry=ctx.geometry)


def _saved_arrays(ctx):
    """The arrays a pooling backward op saved (constants: arrays even under create_graph)."""
    return [getattr(a, "_data", a) for a in ctx.saved_tensors]


# The backward ops below save their arrays (the maxima's places) with save_for_backward rather
# than as ctx attributes: run inside a plain backward, their ctx is the shared unrecorded one,
# whose attributes would keep the last call's arrays alive, and a recorded node's saved arrays
# are freed once its own backward has run.

class SpreadToArgmax(Op):
    """Max pooling's backward after the fused kernel: each window's gradient added at its
    maximum ``where`` (N, C, OH, OW), the flat index in its plane of the input (of ``shape``
    and ``dtype``). Linear in ``g``; its adjoint is :class:`GatherAtArgmax`, so it has
    higher-order gradients."""

    @staticmethod
    def forward(ctx, g, where=None, shape=None, dtype=None):
        ctx.save_for_backward(where)
        ctx.argmax = dict(shape=shape, dtype=dtype)
        planes = shape[0] * shape[1]
        # (the upstream gradient may be a broadcast or a view; the kernel reads it flat)
        g = np.ascontiguousarray(g.reshape((planes,) + where.shape[2:]), dtype=dtype)
        return _kernels.max_pool2d_backward(g, where.reshape(g.shape), shape[2:]).reshape(shape)

    @staticmethod
    def backward(ctx, gg):
        where, = _saved_arrays(ctx)
        return GatherAtArgmax.run(gg, where=where, **ctx.argmax)


class GatherAtArgmax(Op):
    """The adjoint of :class:`SpreadToArgmax`: each window reads the value at its maximum."""

    @staticmethod
    def forward(ctx, gx, where=None, shape=None, dtype=None):
        ctx.save_for_backward(where)
        ctx.argmax = dict(shape=shape, dtype=dtype)
        planes = shape[0] * shape[1]
        return np.take_along_axis(gx.reshape(planes, -1), where.reshape(planes, -1),
                                  axis=1).reshape(where.shape)

    @staticmethod
    def backward(ctx, gg):
        where, = _saved_arrays(ctx)
        return SpreadToArgmax.run(gg, where=where, **ctx.argmax)


class SpreadToMaxima(Op):
    """Max pooling's backward: each window's gradient goes to the window's first maximum (found
    from the padded input ``xpad`` and the pooled ``y``). Linear in ``g``; its adjoint is
    :class:`GatherAtMaxima`, so it has higher-order gradients."""

    @staticmethod
    def forward(ctx, g, xpad=None, y=None, geometry=None):
        ctx.save_for_backward(xpad, y)
        ctx.geometry = geometry
        kernel, stride, dilation, pads, out, shape = geometry
        # col2im fused with the hits: windows that cannot overlap are written, not added, and
        # no (N, C, kh, kw, OH, OW) array is made (2x2 pooling of 128x16x28x28: 4.1 -> 2.4 ms)
        xp = backend.get_array_module(g)
        if tuple(kernel) == tuple(stride) and tuple(dilation) == (1, 1) and \
                kernel[1] in _WINDOW_WORDS and _LITTLE_ENDIAN:
            return _spread_tiled(g, xpad, y, kernel, pads)
        overlap = _windows_overlap(kernel, stride, dilation)
        gx = xp.zeros(xpad.shape, dtype=g.dtype)
        for i, j, hit in _max_hits(xpad, y, kernel, stride, dilation, out, pads):
            window = _window(gx, i, j, stride, dilation, out)
            if overlap:
                window += g * hit
            else:
                xp.multiply(g, hit, out=window)
        return xp.ascontiguousarray(_crop_hw(gx, pads))

    @staticmethod
    def backward(ctx, gg):
        xpad, y = _saved_arrays(ctx)
        return GatherAtMaxima.run(gg, xpad=xpad, y=y, geometry=ctx.geometry)


class GatherAtMaxima(Op):
    """The adjoint of :class:`SpreadToMaxima`: each window reads the value at its maximum."""

    @staticmethod
    def forward(ctx, gx, xpad=None, y=None, geometry=None):
        ctx.save_for_backward(xpad, y)
        ctx.geometry = geometry
        kernel, stride, dilation, pads, out, shape = geometry
        gpad = _pad_hw(gx, pads)
        g = None
        for i, j, hit in _max_hits(xpad, y, kernel, stride, dilation, out, pads):
            term = _window(gpad, i, j, stride, dilation, out) * hit
            g = term if g is None else g + term
        return g

    @staticmethod
    def backward(ctx, gg):
        xpad, y = _saved_arrays(ctx)
        return SpreadToMaxima.run(gg, xpad=xpad, y=y, geometry=ctx.geometry)


class AvgPool2D(Op):
    """Mean over windows; ``divisor`` (OH, OW) holds each window's count."""

    @staticmethod
    def forward(ctx, x, kernel=None, stride=None, pads=None, out=None, divisor=None):
        xpad = _pad_hw(x, pads)
        one = (1, 1)
        y = _window(xpad, 0, 0, stride, one, out).copy()
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                if i or j:
                    y += _window(xpad, i, j, stride, one, out)
        ctx.geometry = (kernel, stride, pads, out, divisor, x.shape)
        y /= divisor
        return y

    @staticmethod
    def backward(ctx, g):
        return AvgPool2DAdjoint.run(g, geometry=ctx.geometry)


class AvgPool2DAdjoint(Op):
    """Average pooling's backward: each window's gradient, divided by its count, spread over
    the window. Its adjoint is :class:`AvgPool2D` itself (higher-order gradients)."""

    @staticmethod
    def forward(ctx, g, geometry=None):
        ctx.geometry = geometry
        kernel, stride, pads, out, divisor, shape = geometry
        # col2im written out, as for max pooling (2x2 pooling of 128x16x28x28, forward +
        # backward: 4.7 -> 2.2 ms)
        xp = backend.get_array_module(g)
        g = g / divisor
        gx = xp.zeros(shape[:2] + tuple(s + sum(p) for s, p in zip(shape[2:], pads)),
                      dtype=g.dtype)
        overlap = _windows_overlap(kernel, stride, (1, 1))
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                window = _window(gx, i, j, stride, (1, 1), out)
                if overlap:
                    window += g
                else:
                    window[...] = g
        return xp.ascontiguousarray(_crop_hw(gx, pads))

    @staticmethod
    def backward(ctx, gg):
        kernel, stride, pads, out, divisor, shape = ctx.geometry
        return AvgPool2D.run(gg, kernel=kernel, stride=stride, pads=pads, out=out,
                             divisor=divisor)


def _max_pool2d(name, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                return_indices=False):
    x, unbatched = _batched(name, input, 4, "H, W")
    kernel, stride, dilation, out, pads = _pool_geometry(name, x, kernel_size, stride, padding,
                                                          dilation, ceil_mode)
    res = MaxPool2DWithIndices.apply(x, kernel=kernel, stride=stride, dilation=dilation, pads=pads,
                            out=out, return_indices=return_indices)
    if unbatched:
        res = tuple(r.squeeze(0) for r in res) if return_indices else res.squeeze(0)
    return res


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over ``kernel_size`` windows (stride defaults to the kernel size). With
    ``return_indices`` also returns each maximum's flat index ``row * W + col`` in the input.

    Example:
        >>> F.max_pool2d(ddp.arange(16.).reshape(1, 1, 4, 4), 2)
        tensor([[[[ 5.,  7.],
                  [13., 15.]]]])
    """
    return _max_pool2d("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices)


def _pool1d(name, pool2d, input, kernel_size, stride, padding, **kwargs):
    """1-d pooling: the 2-d ``pool2d`` over a unit height (``dilation`` in kwargs, if any)."""
    x, unbatched = _batched(name, input, 3, "L")
    k = _ntuple(kernel_size, 1)[0]
    s = _ntuple(_default_stride(stride, k), 1, "stride")[0]
    if "dilation" in kwargs:
        kwargs["dilation"] = (1, _ntuple(kwargs["dilation"], 1, "dilation")[0])
    res = pool2d(name, x.unsqueeze(2), (1, k), (1, s), (0, _ntuple(padding, 1, "padding")[0]),
                 **kwargs)
    lead = (2, 0) if unbatched else (2,)
    for d in lead:
        res = tuple(r.squeeze(d) for r in res) if isinstance(res, tuple) else res.squeeze(d)
    return res


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over windows of the last dimension of (N, C, L) or (C, L).

    Example:
        >>> F.max_pool1d(ddp.tensor([[[1., 3., 2., 0.]]]), 2)
        tensor([[[3., 2.]]])
    """
    return _pool1d("max_pool1d", _max_pool2d, input, kernel_size, stride, padding,
                   dilation=dilation, ceil_mode=ceil_mode, return_indices=return_indices)


def _avg_divisor(size, kernel, stride, pad, out, count_include_pad):
    """Per-axis window counts: the window clipped to the padded input (count_include_pad) or to
    the input itself."""
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    if count_include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def _avg_pool2d(name, input, kernel_size, stride=None, padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):
    x, unbatched = _batched(name, input, 4, "H, W")
    kernel, stride, _, out, pads = _pool_geometry(name, x, kernel_size, stride, padding, 1,
                                                   ceil_mode)
    if divisor_override:
        divisor = float(divisor_override)
    else:
        def make():
            dh, dw = (_avg_divisor(x.shape[2 + a], kernel[a], stride[a], pads[a][0], out[a],
                                   count_include_pad) for a in range(2))
            return np.outer(dh, dw).astype(x._data.dtype)
        divisor = backend.cached_table(("avg_divisor", x.shape[2:], kernel, stride, pads, out,
                                        count_include_pad, x._data.dtype), make, x.device)
    y = AvgPool2D.apply(x, kernel=kernel, stride=stride, pads=pads, out=out, divisor=divisor)
    return y.squeeze(0) if unbatched else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Mean over ``kernel_size`` windows; ``count_include_pad`` counts zero padding in the
    divisor, ``divisor_override`` replaces it.

    Example:
        >>> F.avg_pool2d(ddp.arange(16.).reshape(1, 1, 4, 4), 2)
        tensor([[[[ 2.5000,  4.5000],
                  [10.5000, 12.5000]]]])
    """
    return _avg_pool2d("avg_pool2d", input, kernel_size, stride, padding, ceil_mode,
                       count_include_pad, divisor_override)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """Mean over windows of the last dimension of (N, C, L) or (C, L).

    Example:
        >>> F.avg_pool1d(ddp.tensor([[[1., 3., 2., 0.]]]), 2)
        tensor([[[2., 1.]]])
    """
    return _pool1d("avg_pool1d", _avg_pool2d, input, kernel_size, stride, padding,
                   ceil_mode=ceil_mode, count_include_pad=count_include_pad)


def _adaptive_matrix(size, out, like):
    """(out, size) averaging matrix of adaptive pooling: row i averages the input range
    ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    def make():
        m = np.zeros((out, size))
        for i in range(out):
            start, end = (i * size) // out, -((-(i + 1) * size) // out)
            m[i, start:end] = 1.0 / (end - start)
        return m.astype(like._data.dtype)
    return Tensor._make(backend.cached_table(("adaptive", size, out, like._data.dtype), make,
                                             like.device))


def _adaptive_avg(name, input, output_size, ndim):
    """Adaptive average pooling over the last ``ndim`` dimensions: a reshape-mean when the sizes
    divide, otherwise one product with an averaging matrix per dimension."""
    if input.ndim not in (ndim + 1, ndim + 2):
        raise RuntimeError(f"{name}: expected {ndim + 1}-D or {ndim + 2}-D input, got input of "
                           f"shape {_shape(input)}")
    if not input.is_floating_point():
        raise RuntimeError(f"{name}: expected a floating point input, got {input.dtype.name}")
    sizes = input.shape[-ndim:]
    outs = (output_size,) * ndim if isinstance(output_size, numbers.Integral) or \
        output_size is None else tuple(output_size)
    outs = tuple(s if o is None else int(o) for s, o in zip(sizes, outs))
    if all(s % o == 0 for s, o in zip(sizes, outs)):
        lead = tuple(input.shape[:-ndim])
        split = lead + tuple(x for o, s in zip(outs, sizes) for x in (o, s // o))
        return input.reshape(split).mean(dim=tuple(len(lead) + 2 * a + 1 for a in range(ndim)))
    y = input
    for a, (s, o) in enumerate(zip(sizes, outs)):
        m = _adaptive_matrix(s, o, input)
        y = (y.transpose(-1, -ndim + a) @ m.t()).transpose(-1, -ndim + a)
    return y


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed ``output_size`` (int, pair, None keeps that size); windows
    may overlap when the sizes do not divide.

    Example:
        >>> F.adaptive_avg_pool2d(ddp.ones(2, 3, 7, 5), (3, None)).shape
        ddp.Size([2, 3, 3, 5])
    """
    return _adaptive_avg("adaptive_avg_pool2d", input, output_size, 2)


def adaptive_avg_pool1d(input, output_size):
    """Average pooling of the last dimension to ``output_size`` windows.

    Example:
        >>> F.adaptive_avg_pool1d(ddp.tensor([[[1., 2., 3.]]]), 2)
        tensor([[[1.5000, 2.5000]]])
    """
    return _adaptive_avg("adaptive_avg_pool1d", input, output_size, 1)

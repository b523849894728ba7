"""``interpolate``: nearest and (bi)linear resampling as small matrix products.
"""
from __future__ import annotations

import math
import numbers
import numpy as np
from ... import backend
from ...ops.autocast import autocast_op
from ...tensor import Tensor
from ._helpers import _ntuple, _shape



def _source_index(out, size, scale, mode, align_corners):
    """For each output position: the source coordinate (linear modes) or index (nearest)."""
    dst = np.arange(out, dtype=np.float64)
    if mode == "nearest":
        return np.minimum(np.floor(dst * scale).astype(np.int64), size - 1)
    if mode == "nearest-exact":
        return np.minimum(np.floor((dst + 0.5) * scale).astype(np.int64), size - 1)
    if align_corners:
        return dst * ((size - 1) / (out - 1) if out > 1 else 0.0)
    return np.maximum((dst + 0.5) * scale - 0.5, 0.0)


def _linear_matrix(src, size):
    """(out, size) matrix of linear interpolation at source coordinates ``src``."""
    lo = np.minimum(np.floor(src).astype(np.int64), size - 1)
    hi = np.minimum(lo + 1, size - 1)
    frac = src - lo
    m = np.zeros((len(src), size))
    np.add.at(m, (np.arange(len(src)), lo), 1.0 - frac)
    np.add.at(m, (np.arange(len(src)), hi), frac)
    return m


_INTERP_DIMS = {"linear": 1, "bilinear": 2}


@autocast_op("interpolate")
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dimensions of (N, C, *spatial): ``mode`` 'nearest', 'nearest-exact',
    'linear' (3-D input) or 'bilinear' (4-D input), to ``size`` or by ``scale_factor``.

    Example:
        >>> F.interpolate(ddp.tensor([[[1., 2.]]]), scale_factor=2)
        tensor([[[1., 1., 2., 2.]]])
    """
    nd = input.ndim - 2
    if nd < 1:
        raise ValueError(f"interpolate: expected (N, C, *spatial) input, got shape "
                         f"{_shape(input)}")
    if mode in _INTERP_DIMS and _INTERP_DIMS[mode] != nd:
        raise NotImplementedError(f"interpolate: mode {mode!r} expects {_INTERP_DIMS[mode] + 2}-D "
                                  f"input, got input of shape {_shape(input)}")
    if mode not in ("nearest", "nearest-exact", "linear", "bilinear"):
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported")
    if antialias:
        raise NotImplementedError("interpolate: antialias is not supported")
    if align_corners is not None and mode.startswith("nearest"):
        raise ValueError("interpolate: align_corners can only be set with the linear modes")
    sizes = tuple(input.shape[2:])
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: exactly one of size and scale_factor must be given")
    if size is not None:
        outs = _ntuple(size, nd, "size")
        scales = [s / o for s, o in zip(sizes, outs)]
    else:
        factors = (float(scale_factor),) * nd if isinstance(scale_factor, numbers.Number) \
            else tuple(float(f) for f in scale_factor)
        outs = tuple(int(math.floor(s * f)) for s, f in zip(sizes, factors))
        scales = [s / o if recompute_scale_factor else 1.0 / f
                  for s, o, f in zip(sizes, outs, factors)]
    y = input
    for a in range(nd):
        axis = 2 + a
        def source(a=a):
            return _source_index(outs[a], sizes[a], scales[a], mode, bool(align_corners))
        key = ("interpolate", mode, outs[a], sizes[a], scales[a], bool(align_corners))
        if mode.startswith("nearest"):
            y = y[(slice(None),) * axis + (backend.cached_table(key, source, input.device),)]
        else:
            dt = input._data.dtype
            m = Tensor._make(backend.cached_table(
                key + (dt,), lambda a=a: _linear_matrix(source(a), sizes[a]).astype(dt),
                input.device))
            y = (y.transpose(-1, axis) @ m.t()).transpose(-1, axis)
    return y

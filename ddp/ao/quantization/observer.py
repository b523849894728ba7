"""Observers: modules that watch a tensor's range and choose its quantization parameters
(PyTorch's ``torch.ao.quantization.observer``; the formulas of its ``_calculate_qparams``).

Example:
    >>> obs = MinMaxObserver(dtype=ddp.qint8, qscheme=ddp.per_tensor_symmetric)
    >>> _ = obs(ddp.tensor([-1.0, 0.5, 2.55]))
    >>> obs.calculate_qparams()
    (tensor(0.0200), tensor(0))
"""
from __future__ import annotations

import numpy as np

from ...backend import qint8, qint32, quint8
from ...nn.module import Module
from ...qtensor import (per_channel_affine, per_channel_symmetric, per_tensor_affine,
                        per_tensor_symmetric)
from ...tensor import Tensor

__all__ = ["ObserverBase", "MinMaxObserver", "PerChannelMinMaxObserver", "PlaceholderObserver",
           "default_weight_observer", "default_per_channel_weight_observer",
           "default_dynamic_quant_observer"]

_EPS = np.finfo(np.float32).eps


class _PartialWrapper:
    """``Observer.with_args(**kwargs)``: a factory that builds the observer when called."""

    def __init__(self, cls, **kwargs):
        self.cls, self.kwargs = cls, kwargs

    def __call__(self, **kwargs):
        return self.cls(**{**self.kwargs, **kwargs})

    def with_args(self, **kwargs):
        return _PartialWrapper(self.cls, **{**self.kwargs, **kwargs})

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"functools.partial(<class '{self.cls.__module__}.{self.cls.__name__}'>, {args})"


class ObserverBase(Module):
    """Base of observers: ``forward(x)`` records and returns ``x``; ``calculate_qparams()``."""

    def __init__(self, dtype, is_dynamic=False):
        super().__init__()
        self.dtype = dtype
        self.is_dynamic = is_dynamic

    @classmethod
    def with_args(cls, **kwargs):
        return _PartialWrapper(cls, **kwargs)


def _quant_range(dtype, reduce_range, quant_min, quant_max):
    if quant_min is not None and quant_max is not None:
        return int(quant_min), int(quant_max)
    full = {qint8: (-128, 127), quint8: (0, 255), qint32: (-2 ** 31, 2 ** 31 - 1)}
    if dtype not in full:
        raise ValueError(f"observer: unsupported dtype {dtype} (ddp.qint8, ddp.quint8, "
                         f"ddp.qint32)")
    lo, hi = full[dtype]
    if reduce_range and dtype is not qint32:
        lo, hi = lo // 2, hi // 2
    return lo, hi


class _MinMaxBase(ObserverBase):
    def __init__(self, dtype=quint8, qscheme=per_tensor_affine, reduce_range=False,
                 quant_min=None, quant_max=None, factory_kwargs=None, eps=_EPS,
                 is_dynamic=False):
        super().__init__(dtype, is_dynamic)
        self.qscheme = qscheme
        self.reduce_range = reduce_range
        self.has_customized_qrange = quant_min is not None and quant_max is not None
        self.quant_min, self.quant_max = _quant_range(dtype, reduce_range, quant_min, quant_max)
        self.eps = np.float32(eps)

    def _calculate_qparams(self, min_val, max_val):
        """(float32 scales, int64 zero points) for the observed min/max arrays."""
        lo = np.minimum(min_val, np.float32(0))
        hi = np.maximum(max_val, np.float32(0))
        qmin, qmax = self.quant_min, self.quant_max
        zero_point = np.zeros(lo.shape, np.int64)
        if self.qscheme in (per_tensor_symmetric, per_channel_symmetric):
            hi = np.maximum(-lo, hi)
            scale = np.maximum(hi / np.float32((qmax - qmin) / 2), self.eps)
            if self.dtype is quint8:
                zero_point[...] = (qmin + qmax) // 2 if self.has_customized_qrange else 128
        else:
            scale = np.maximum((hi - lo) / np.float32(qmax - qmin), self.eps)
            zero_point = np.clip(qmin - np.rint(lo / scale).astype(np.int64), qmin, qmax)
        return Tensor._make(scale.astype(np.float32)), Tensor._make(zero_point)


class MinMaxObserver(_MinMaxBase):
    """The running min and max of everything it saw; affine or symmetric per-tensor params."""

    def __init__(self, dtype=quint8, qscheme=per_tensor_affine, reduce_range=False,
                 quant_min=None, quant_max=None, factory_kwargs=None, eps=_EPS,
                 is_dynamic=False, **kwargs):
        if qscheme not in (per_tensor_affine, per_tensor_symmetric):
            raise NotImplementedError("MinMaxObserver's qscheme only support "
                                      "torch.per_tensor_symmetric and torch.per_tensor_affine.")
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs,
                         eps, is_dynamic)
        self.min_val, self.max_val = np.float32(np.inf), np.float32(-np.inf)

    def forward(self, x_orig):
        if x_orig.numel():
            x = x_orig.detach()._data.astype(np.float32, copy=False)
            self.min_val = min(self.min_val, np.float32(x.min()))
            self.max_val = max(self.max_val, np.float32(x.max()))
        return x_orig

    def calculate_qparams(self):
        return self._calculate_qparams(np.asarray(self.min_val), np.asarray(self.max_val))

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class PerChannelMinMaxObserver(_MinMaxBase):
    """Min and max per index of ``ch_axis``: per-channel params (weights' output channels)."""

    def __init__(self, ch_axis=0, dtype=quint8, qscheme=per_channel_affine, reduce_range=False,
                 quant_min=None, quant_max=None, factory_kwargs=None, eps=_EPS,
                 is_dynamic=False):
        if qscheme not in (per_channel_affine, per_channel_symmetric):
            raise NotImplementedError("PerChannelMinMaxObserver's qscheme only support "
                                      "torch.per_channel_symmetric and torch.per_channel_affine.")
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs,
                         eps, is_dynamic)
        self.ch_axis = ch_axis
        self.min_val = self.max_val = None

    def forward(self, x_orig):
        if x_orig.numel():
            x = np.moveaxis(x_orig.detach()._data.astype(np.float32, copy=False),
                            self.ch_axis, 0).reshape(x_orig.shape[self.ch_axis], -1)
            lo, hi = x.min(axis=1), x.max(axis=1)
            self.min_val = lo if self.min_val is None else np.minimum(self.min_val, lo)
            self.max_val = hi if self.max_val is None else np.maximum(self.max_val, hi)
        return x_orig

    def calculate_qparams(self):
        if self.min_val is None:
            return self._calculate_qparams(np.zeros(0, np.float32), np.zeros(0, np.float32))
        return self._calculate_qparams(self.min_val, self.max_val)


class PlaceholderObserver(ObserverBase):
    """Says only the dtype (dynamic quantization chooses activation params per call)."""

    def __init__(self, dtype=None, custom_op_name="", compute_dtype=None, quant_min=None,
                 quant_max=None, qscheme=None, eps=None, is_dynamic=False):
        from ...backend import float32
        super().__init__(float32 if dtype is None else dtype, is_dynamic)
        self.qscheme = per_tensor_affine if qscheme is None else qscheme
        self.quant_min, self.quant_max = quant_min, quant_max

    def forward(self, x):
        return x

    def calculate_qparams(self):
        raise Exception("calculate_qparams should not be called for PlaceholderObserver")


default_weight_observer = MinMaxObserver.with_args(dtype=qint8, qscheme=per_tensor_symmetric)
default_per_channel_weight_observer = PerChannelMinMaxObserver.with_args(
    dtype=qint8, qscheme=per_channel_symmetric)
default_dynamic_quant_observer = PlaceholderObserver.with_args(
    dtype=quint8, quant_min=0, quant_max=255, is_dynamic=True)

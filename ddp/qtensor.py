"""Quantized tensors: integers ``q`` with a scale and zero point that mean ``(q - zero_point) *
scale`` (per tensor, or per channel along one axis), as PyTorch's ``qint8``/``quint8``/``qint32``.

``quantize_per_tensor`` and ``quantize_per_channel`` round as PyTorch's CPU kernels do:
``q = clamp(round_half_even(x * (1/scale) + zero_point))`` with the multiply-add rounded once in
float32 (FBGEMM's fused multiply-add); ``dequantize`` is ``float32(q - zero_point) * scale``.
A quantized tensor holds its integers only; arithmetic on it raises (as in PyTorch): call
``dequantize()`` first.

Example:
    >>> q = ddp.quantize_per_tensor(ddp.tensor([0.1, 0.25, -0.3]), 0.1, 3, ddp.quint8)
    >>> q.int_repr(), q.q_scale(), q.q_zero_point()
    (tensor([4, 6, 0], dtype=ddp.uint8), 0.1, 3)
    >>> q.dequantize()
    tensor([ 0.1000,  0.3000, -0.3000])
"""
from __future__ import annotations

import numbers

import numpy as np

from . import backend
from ._format import _add_suffixes, format_array
from .backend import qint8, qint32, quint8
from .tensor import Size, Tensor

__all__ = ["qscheme", "per_tensor_affine", "per_channel_affine", "per_tensor_symmetric",
           "per_channel_symmetric", "QTensor", "quantize_per_tensor", "quantize_per_channel",
           "dequantize", "qint8", "quint8", "qint32"]


class qscheme:
    """How a quantized tensor's scales apply (``ddp.per_tensor_affine``, ...)."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"ddp.{self.name}"

    def __reduce__(self):
        return (_qscheme_by_name, (self.name,))


per_tensor_affine = qscheme("per_tensor_affine")
per_channel_affine = qscheme("per_channel_affine")
per_tensor_symmetric = qscheme("per_tensor_symmetric")
per_channel_symmetric = qscheme("per_channel_symmetric")
_QSCHEMES = {q.name: q for q in (per_tensor_affine, per_channel_affine, per_tensor_symmetric,
                                 per_channel_symmetric)}
_QDTYPES = {d.name: d for d in (qint8, quint8, qint32)}


def _qscheme_by_name(name):
    return _QSCHEMES[name]


def _range(dtype):
    info = np.iinfo(dtype.np)
    return int(info.min), int(info.max)


class QTensor(Tensor):
    """A quantized tensor (``is_quantized``): ``int_repr()``, ``dequantize()``, ``q_scale()``,
    ``q_zero_point()``, ``q_per_channel_scales()``, ``q_per_channel_zero_points()``,
    ``q_per_channel_axis()``, ``qscheme()``; shape queries work, arithmetic does not."""

    def __init__(self, *args, **kwargs):
        raise TypeError("quantized tensors are made by ddp.quantize_per_tensor or "
                        "ddp.quantize_per_channel")

    @staticmethod
    def _from_int(q, dtype, scale=None, zero_point=None, scales=None, zero_points=None,
                  axis=None):
        t = object.__new__(QTensor)
        t._int, t._qdtype = q, dtype
        if scales is None:
            t._qparams = (per_tensor_affine, float(scale), int(zero_point))
        else:
            t._qparams = (per_channel_affine, np.asarray(scales, np.float64),
                          np.asarray(zero_points, np.int64), int(axis))
        t._requires_grad, t.grad, t.grad_fn, t._output_nr = False, None, None, 0
        t._vc, t._hooks, t._post_acc_hooks = [0], None, None
        return t

    @property
    def _data(self):
        raise NotImplementedError(
            f"this operation is not supported on a quantized tensor (dtype={self._qdtype}): "
            f"quantized tensors offer dequantize(), int_repr(), q_scale(), q_zero_point() and "
            f"the per-channel queries; call .dequantize() first")

    # ------------------------------------------------------------------ queries
    @property
    def shape(self):
        return Size(self._int.shape)

    def size(self, dim=None):
        return Size(self._int.shape) if dim is None else self._int.shape[dim]

    @property
    def dtype(self):
        return self._qdtype

    @property
    def device(self):
        return backend.device_of(self._int)

    @property
    def ndim(self):
        return self._int.ndim

    def dim(self):
        return self._int.ndim

    def numel(self):
        return int(self._int.size)

    def element_size(self):
        return self._int.itemsize

    @property
    def nbytes(self):
        return self._int.nbytes

    @property
    def is_quantized(self):
        return True

    def __len__(self):
        return self._int.shape[0]

    def qscheme(self):
        return self._qparams[0]

    def int_repr(self):
        """The stored integers, as an ordinary tensor of int8/uint8/int32."""
        return Tensor._make(self._int.copy())

    def q_scale(self):
        self._per_tensor("q_scale")
        return self._qparams[1]

    def q_zero_point(self):
        self._per_tensor("q_zero_point")
        return self._qparams[2]

    def q_per_channel_scales(self):
        self._per_channel("q_per_channel_scales")
        return Tensor._make(self._qparams[1].copy())

    def q_per_channel_zero_points(self):
        self._per_channel("q_per_channel_zero_points")
        return Tensor._make(self._qparams[2].copy())

    def q_per_channel_axis(self):
        self._per_channel("q_per_channel_axis")
        return self._qparams[3]

    def _per_tensor(self, name):
        if self._qparams[0] is not per_tensor_affine:
            raise RuntimeError(f"Expected quantizer->qscheme() == kPerTensorAffine to be true, "
                               f"but got false. ({name} on a per-channel quantized tensor)")

    def _per_channel(self, name):
        if self._qparams[0] is not per_channel_affine:
            raise RuntimeError(f"Expected quantizer->qscheme() == kPerChannelAffine to be true, "
                               f"but got false. ({name} on a per-tensor quantized tensor)")

    def dequantize(self):
        """The float32 tensor ``float32(q - zero_point) * scale``."""
        q = self._int.astype(np.float32)
        if self._qparams[0] is per_tensor_affine:
            _, scale, zero_point = self._qparams
            return Tensor._make((q - np.float32(zero_point)) * np.float32(scale))
        _, scales, zero_points, axis = self._qparams
        shape = [1] * q.ndim
        shape[axis] = -1
        return Tensor._make((q - zero_points.astype(np.float32).reshape(shape))
                            * scales.astype(np.float32).reshape(shape))

    # ------------------------------------------------------------------ copies and printing
    def clone(self):
        return QTensor._from_int(self._int.copy(), self._qdtype, *self._params_args())

    def detach(self):
        return self

    def _params_args(self):
        p = self._qparams
        if p[0] is per_tensor_affine:
            return (p[1], p[2])
        return (None, None, p[1], p[2], p[3])

    def __reduce_ex__(self, protocol):
        return (QTensor._from_int, (backend.to_device(self._int, backend.CPU), self._qdtype)
                + self._params_args())

    def __repr__(self):
        prefix = "tensor("
        body = format_array(backend.to_device(self.dequantize()._data, backend.CPU),
                            len(prefix))
        p = self._qparams
        suffixes = [f"size={tuple(self._int.shape)}", f"dtype={self._qdtype}",
                    f"quantization_scheme={p[0]}"]
        if p[0] is per_tensor_affine:
            suffixes += [f"scale={p[1]}", f"zero_point={p[2]}"]
        else:
            suffixes += [f"scale={Tensor._make(p[1])}", f"zero_point={Tensor._make(p[2])}",
                         f"axis={p[3]}"]
        return _add_suffixes(prefix + body, suffixes, len(prefix))


def _float_input(name, input):
    if not isinstance(input, Tensor) or isinstance(input, QTensor):
        raise TypeError(f"{name}: expected a float tensor, got {type(input).__name__}")
    if not input.is_floating_point():
        raise RuntimeError(f"{name}: expected a floating point tensor, got {input.dtype}")
    return input._data.astype(np.float32, copy=False)


def _check_qdtype(name, dtype):
    if dtype not in _QDTYPES.values():
        raise RuntimeError(f"{name}: dtype must be ddp.qint8, ddp.quint8 or ddp.qint32, got "
                           f"{dtype}")


def quantize_array(x, inverse_scale, zero_point, dtype):
    """``clamp(rint(x * inverse_scale + zero_point))`` with the multiply-add rounded once in
    float32 (its exact value fits a float64: 24 + 24 significant bits), as FBGEMM's ``fmaf``;
    ``inverse_scale`` and ``zero_point`` broadcast against ``x``."""
    xp = backend.get_array_module(x)
    lo, hi = _range(dtype)
    y = (x.astype(np.float64) * inverse_scale + zero_point).astype(np.float32)
    return xp.clip(xp.rint(y), lo, hi).astype(dtype.np)


def quantize_per_tensor(input, scale, zero_point, dtype):
    """Quantize a float tensor with one ``scale`` and ``zero_point`` (numbers, or 1-element
    tensors) to ``dtype`` (``ddp.qint8``, ``ddp.quint8`` or ``ddp.qint32``).

    Example:
        >>> ddp.quantize_per_tensor(ddp.tensor([-1.0, 0.0, 0.5]), 0.5, 0, ddp.qint8).int_repr()
        tensor([-2,  0,  1], dtype=ddp.int8)
    """
    _check_qdtype("quantize_per_tensor", dtype)
    x = _float_input("quantize_per_tensor", input)
    scale = float(scale.item() if isinstance(scale, Tensor) else scale)
    zero_point = int(zero_point.item() if isinstance(zero_point, Tensor) else zero_point)
    if not scale > 0 or not np.isfinite(np.float32(1) / np.float32(scale)):
        raise RuntimeError(f"quantize_per_tensor: scale must be positive and its reciprocal "
                           f"finite in float32, got {scale}")
    lo, hi = _range(dtype)
    if not lo <= zero_point <= hi:
        raise RuntimeError(f"quantize_per_tensor: zero_point {zero_point} is out of range for "
                           f"{dtype} [{lo}, {hi}]")
    inverse = np.float64(np.float32(1) / np.float32(scale))
    return QTensor._from_int(quantize_array(x, inverse, zero_point, dtype), dtype, scale,
                             zero_point)


def quantize_per_channel(input, scales, zero_points, axis, dtype):
    """Quantize with one scale and zero point per index of dimension ``axis`` (``scales``,
    ``zero_points``: 1-D tensors of that length).

    Example:
        >>> w = ddp.tensor([[1.0, -2.0], [0.1, 0.2]])
        >>> q = ddp.quantize_per_channel(w, ddp.tensor([0.02, 0.002], dtype=ddp.float64),
        ...                              ddp.zeros(2, dtype=ddp.int64), 0, ddp.qint8)
        >>> q.int_repr()
        tensor([[  50, -100],
                [  50,  100]], dtype=ddp.int8)
    """
    _check_qdtype("quantize_per_channel", dtype)
    x = _float_input("quantize_per_channel", input)
    if not isinstance(axis, numbers.Integral) or not -x.ndim <= axis < x.ndim:
        raise IndexError(f"quantize_per_channel: axis {axis} is out of range for an input of "
                         f"shape {tuple(x.shape)}")
    axis = int(axis) % x.ndim
    s = np.asarray(backend.to_device(scales._data if isinstance(scales, Tensor) else
                                     np.asarray(scales), backend.CPU), np.float64).reshape(-1)
    z = np.asarray(backend.to_device(zero_points._data if isinstance(zero_points, Tensor) else
                                     np.asarray(zero_points), backend.CPU), np.int64).reshape(-1)
    if s.size != x.shape[axis] or z.size != x.shape[axis]:
        raise RuntimeError(f"quantize_per_channel: expected {x.shape[axis]} scales and zero "
                           f"points (the size of axis {axis}), got {s.size} and {z.size}")
    if not (s > 0).all():
        raise RuntimeError("quantize_per_channel: scales must be positive")
    shape = [1] * x.ndim
    shape[axis] = -1
    xp = backend.get_array_module(x)
    inverse = xp.asarray((np.float32(1) / s.astype(np.float32)).astype(np.float64).reshape(shape))
    q = quantize_array(x, inverse, xp.asarray(z.reshape(shape)), dtype)
    return QTensor._from_int(q, dtype, scales=s, zero_points=z, axis=axis)


def dequantize(tensor):
    """``tensor.dequantize()`` (float tensors pass through, as in PyTorch)."""
    if isinstance(tensor, (list, tuple)):
        return [dequantize(t) for t in tensor]
    return tensor.dequantize() if isinstance(tensor, QTensor) else tensor


def from_file_entry(q, dtype_name, meta):
    """A QTensor from what ``ddp.save`` stored (see ddp.serialization)."""
    dtype = _QDTYPES[dtype_name]
    if "scales" in meta:
        return QTensor._from_int(q, dtype, scales=np.asarray(meta["scales"], np.float64),
                                 zero_points=np.asarray(meta["zero_points"], np.int64),
                                 axis=int(meta["axis"]))
    return QTensor._from_int(q, dtype, float(meta["scale"]), int(meta["zero_point"]))


def file_meta(t):
    """What ``ddp.save`` stores beside a QTensor's integers."""
    p = t._qparams
    if p[0] is per_tensor_affine:
        meta = {"scale": p[1], "zero_point": p[2]}
    else:
        meta = {"scales": p[1].tolist(), "zero_points": p[2].tolist(), "axis": p[3]}
    return {"qdtype": t._qdtype.name, **meta}

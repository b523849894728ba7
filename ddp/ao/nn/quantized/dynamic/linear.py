"""The dynamically quantized Linear and its kernel, ``linear_dynamic``.

``linear_dynamic`` reproduces FBGEMM's ``quantized::linear_dynamic`` (PyTorch's x86 engine):
the input's min and max (widened to include 0) choose an asymmetric uint8 scale and zero point
over ``[0, 127]`` (``reduce_range``: FBGEMM's int16 accumulation must not saturate) exactly as
its ``ChooseQuantizationParams``; the input is quantized with one float32 multiply-add; the
integer product is exact; the result is ``acc * (input_scale * weight_scale) + bias`` in float32.
So the outputs agree with PyTorch's to the last bit or two of float32.

The integer product runs on the float BLAS: integers stay exact in float32 while every partial
sum is below 2**24 (``K * 127 * 128``, K <= 1032 inner products), in float64 beyond. NumPy has no
int8 matrix product of its own (its integer matmul is a plain loop, ~100x slower than BLAS), so
this is the fastest exact route here, and it is slower than the float Linear: the quantization
of the input and the conversion of the weights come on top of a matrix product of the same
size (see docs/performance.md). What quantization buys here is size: int8 weights are 4x
smaller in memory, in ``state_dict()`` and in a ``ddp.save`` file.

Example:
    >>> from ddp.ao.nn.quantized.dynamic import Linear
    >>> q = Linear.from_float(nn.Linear(8, 3))
    >>> q
    DynamicQuantizedLinear(in_features=8, out_features=3, dtype=ddp.qint8, qscheme=ddp.per_tensor_affine)
    >>> q(ddp.randn(5, 8)).shape
    ddp.Size([5, 3])
"""
from __future__ import annotations

import numpy as np

from ..... import backend
from .....nn.module import Module
from .....qtensor import QTensor, per_tensor_affine, quantize_per_channel, quantize_per_tensor
from .....tensor import Tensor
from .....backend import qint8

_SMALL_SCALE = np.float32(6.1e-5)   # FBGEMM's smallest activation scale (fp16's min normal)
_EXACT_F32 = 2 ** 24                # integers up to this are exact in float32


def choose_qparams(x_min, x_max, qmin=0, qmax=255, reduce_range=True):
    """FBGEMM's ``ChooseQuantizationParams`` for an activation range: (float32 scale, int
    zero point) mapping ``[min(x_min, 0), max(x_max, 0)]`` onto ``[qmin, qmax]`` (halved with
    ``reduce_range``), zero exactly representable.

    Example:
        >>> scale, zero_point = choose_qparams(-1.0, 3.0)
        >>> float(scale), zero_point
        (0.031496062874794006, 32)
    """
    if reduce_range:
        qmin, qmax = qmin // 2, qmax // 2
    lo, hi = min(np.float32(x_min), np.float32(0)), max(np.float32(x_max), np.float32(0))
    scale = (float(hi) - float(lo)) / (qmax - qmin)
    if np.float32(scale) == 0 or np.isinf(np.float32(1) / np.float32(scale)):
        scale = 0.1
    if scale < float(_SMALL_SCALE):
        org = np.float32(scale)
        scale = float(_SMALL_SCALE)
        if lo == 0:
            hi = _SMALL_SCALE * np.float32(qmax - qmin)
        elif hi == 0:
            lo = -_SMALL_SCALE * np.float32(qmax - qmin)
        else:
            amplifier = _SMALL_SCALE / org
            lo, hi = lo * amplifier, hi * amplifier
    from_min, from_max = qmin - float(lo) / scale, qmax - float(hi) / scale
    err_min, err_max = abs(qmin) - abs(float(lo) / scale), abs(qmax) - abs(float(hi) / scale)
    zero = from_min if err_min < err_max else from_max
    zero_point = qmin if zero < qmin else qmax if zero > qmax else int(np.rint(zero))
    return np.float32(scale), zero_point


def _weight_terms(weight):
    """A quantized weight (out, in) as (integers - zero point) in float32, its float32 scales
    (a number, or one per output row) and a bound on its magnitude."""
    if not isinstance(weight, QTensor) or weight.dtype is not qint8:
        raise TypeError(f"linear_dynamic: expected a qint8 quantized weight, got "
                        f"{getattr(weight, 'dtype', type(weight).__name__)}")
    params = weight._qparams
    w = weight._int.astype(np.float32)
    if params[0] is per_tensor_affine:
        _, scale, zero_point = params
        if not zero_point:
            return w, np.float32(scale), 128
        return w - np.float32(zero_point), np.float32(scale), 255
    _, scales, zero_points, axis = params
    if axis != 0:
        raise RuntimeError("linear_dynamic: per-channel weights must be quantized along axis 0")
    if not zero_points.any():
        return w, scales.astype(np.float32), 128
    return w - zero_points.astype(np.float32)[:, None], scales.astype(np.float32), 255


def linear_dynamic(input, weight, bias=None, reduce_range=True):
    """``input @ dequantize(weight).T + bias`` computed as PyTorch's dynamic quantized linear:
    ``input`` (float, ``(*, in)``) quantized per call to uint8, ``weight`` a qint8 QTensor
    (out, in), per tensor or per output channel; returns a float32 tensor (no autograd).

    Example:
        >>> w = ddp.quantize_per_tensor(ddp.eye(3), 1 / 127, 0, ddp.qint8)
        >>> linear_dynamic(ddp.tensor([[1.0, 2.0, 3.0]]), w)
        tensor([[0.9921, 2.0079, 3.0000]])
    """
    x = input._data if isinstance(input, Tensor) else input
    xp = backend.get_array_module(x)
    w, w_scale, w_bound = _weight_terms(weight)
    if x.shape[-1] != w.shape[1]:
        raise RuntimeError(f"linear_dynamic: input of shape {tuple(x.shape)} does not fit a "
                           f"weight of shape {tuple(w.shape)} (in_features={w.shape[1]})")
    x = x.astype(np.float32, copy=False)
    x_min, x_max = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    scale, zero_point = choose_qparams(x_min, x_max, reduce_range=reduce_range)
    inverse = np.float64(np.float32(1) / scale)
    q = (x.astype(np.float64) * inverse + zero_point).astype(np.float32)
    qmax = 255  # FBGEMM clamps to uint8; the range chosen above keeps codes in [0, 127]
    a = xp.clip(xp.rint(q), 0, qmax) - np.float32(zero_point)
    w = xp.asarray(w)
    k = w.shape[1]
    a_bound = max(zero_point, (127 if reduce_range else 255) - zero_point)
    exact32 = k * a_bound * w_bound < _EXACT_F32
    acc = a.reshape(-1, k) @ w.T if exact32 else \
        (a.reshape(-1, k).astype(np.float64) @ w.T.astype(np.float64)).astype(np.float32)
    out = acc * (scale * xp.asarray(w_scale))
    if bias is not None:
        out += (bias._data if isinstance(bias, Tensor) else bias).astype(np.float32)
    return Tensor._make(out.reshape(x.shape[:-1] + (w.shape[0],)))


def quantize_weight(weight, observer):
    """The float ``weight`` quantized with the scale and zero point ``observer`` (which has
    seen it) chooses: per tensor or per channel, as PyTorch's ``_quantize_weight``."""
    from .....qtensor import per_channel_affine, per_channel_symmetric, per_tensor_symmetric
    scale, zero_point = observer.calculate_qparams()
    if observer.qscheme in (per_tensor_symmetric, per_tensor_affine):
        return quantize_per_tensor(weight.detach().float(), float(scale.item()),
                                   int(zero_point.item()), observer.dtype)
    if observer.qscheme in (per_channel_symmetric, per_channel_affine):
        return quantize_per_channel(weight.detach().float(), scale.double(), zero_point.long(),
                                    observer.ch_axis, observer.dtype)
    raise ValueError(f"quantize_weight: unsupported qscheme {observer.qscheme}")


def weight_observer_of(module):
    """The weight observer of ``module``'s qconfig (the default dynamic one when it has none),
    constructed; only qint8 weights are supported."""
    qconfig = getattr(module, "qconfig", None)
    if qconfig is None or qconfig.weight is None:
        from .....ao.quantization.qconfig import default_dynamic_qconfig
        qconfig = default_dynamic_qconfig
    observer = qconfig.weight()
    if observer.dtype is not qint8:
        raise RuntimeError(f"Unsupported dtype for dynamic quantization: {observer.dtype} "
                           f"(ddp supports ddp.qint8)")
    return observer


class LinearPackedParams(Module):
    """Holds the quantized weight and float bias as PyTorch's (state_dict keys ``dtype`` and
    ``_packed_params`` = (weight, bias))."""
    _version = 3

    def __init__(self, dtype=qint8):
        super().__init__()
        self.dtype = dtype
        self._packed_params = (None, None)

    def set_weight_bias(self, weight, bias):
        self._packed_params = (weight, None if bias is None else bias.detach())

    def _weight_bias(self):
        return self._packed_params

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "dtype"] = self.dtype
        destination[prefix + "_packed_params"] = self._weight_bias()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for key in ("dtype", "_packed_params"):
            if prefix + key not in state_dict:
                missing_keys.append(prefix + key)
        if prefix + "dtype" in state_dict:
            self.dtype = state_dict.pop(prefix + "dtype")
        if prefix + "_packed_params" in state_dict:
            weight, bias = state_dict.pop(prefix + "_packed_params")
            self.set_weight_bias(weight, bias)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, False, missing_keys,
                                      unexpected_keys, error_msgs)

    def __repr__(self):
        return repr(self._weight_bias())


class Linear(Module):
    """A Linear whose weight is int8 (per tensor or per output channel) and whose input is
    quantized to uint8 on every call (PyTorch's ``torch.ao.nn.quantized.dynamic.Linear``).
    Make one with :meth:`from_float` or ``ddp.ao.quantization.quantize_dynamic``.

    Example:
        >>> q = Linear(4, 2)
        >>> w = q.weight()
        >>> w.dtype, w.int_repr().dtype, isinstance(w.q_scale(), float)
        (ddp.qint8, ddp.int8, True)
    """
    _version = 4
    _FLOAT_MODULE = None  # nn.Linear, set below

    def __init__(self, in_features, out_features, bias_=True, dtype=qint8):
        super().__init__()
        if dtype is not qint8:
            raise RuntimeError(f"Unsupported dtype specified for dynamic quantized Linear: "
                               f"{dtype} (ddp supports ddp.qint8)")
        self.in_features, self.out_features = in_features, out_features
        self.scale, self.zero_point = 1.0, 0  # the output's (unused by dynamic quantization)
        from .....creation import zeros
        weight = quantize_per_tensor(zeros(out_features, in_features), 1.0, 0, qint8)
        self._packed_params = LinearPackedParams(dtype)
        self._packed_params.set_weight_bias(weight, zeros(out_features) if bias_ else None)

    def _get_name(self):
        return "DynamicQuantizedLinear"

    def __repr__(self):  # the packed parameters are not a child to show (as in PyTorch)
        return f"{self._get_name()}({self.extra_repr()})"

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"dtype={self._packed_params.dtype}, qscheme={self.weight().qscheme()}")

    def weight(self):
        return self._packed_params._weight_bias()[0]

    def bias(self):
        return self._packed_params._weight_bias()[1]

    def set_weight_bias(self, w, b):
        self._packed_params.set_weight_bias(w, b)

    def forward(self, x):
        weight, bias = self._packed_params._weight_bias()
        return linear_dynamic(x, weight, bias, reduce_range=True)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        from .....creation import tensor
        destination[prefix + "scale"] = tensor(self.scale)
        destination[prefix + "zero_point"] = tensor(self.zero_point)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for key in ("scale", "zero_point"):
            value = state_dict.pop(prefix + key, None)
            if value is not None:
                setattr(self, key, (float if key == "scale" else int)(value.item()))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, False, missing_keys,
                                      unexpected_keys, error_msgs)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        """The quantized copy of a float ``nn.Linear`` (its weights quantized by the module's
        ``qconfig``'s weight observer, by default per tensor, symmetric)."""
        from .....nn.linear import Linear as FloatLinear
        if not isinstance(mod, FloatLinear):
            raise TypeError(f"nn.quantized.dynamic.Linear.from_float only works for "
                            f"nn.Linear, got {type(mod).__name__}")
        observer = weight_observer_of(mod)
        observer(mod.weight)
        q = cls(mod.in_features, mod.out_features, bias_=mod.bias is not None)
        q.set_weight_bias(quantize_weight(mod.weight, observer), mod.bias)
        return q

"""Activation functions of ``ddp.nn.functional`` (relu, gelu, softmax, ...), PyTorch's names and
arguments.

Activations that would need many graph nodes when composed (GELU, ELU/SELU/CELU, Softplus,
LeakyReLU, Hardtanh, Hardswish, softmax, log_softmax) are fused primitives: one ``Op`` with its
forward and backward side by side. Their backward formulas use ``ctx.xp`` and recompute what
they need from saved inputs/outputs, so they stay differentiable under ``create_graph`` (double
backward). The rest are compositions of Tensor operations.

Example:
    >>> import ddp.nn.functional as F
    >>> F.gelu(ddp.tensor([0.0, 1.0]))
    tensor([0.0000, 0.8413])
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ... import backend
from ...ops.autocast import autocast_op
from ...autograd.graph import Op
from ...ops import elementwise as E
from ...ops.reduction import LogSoftmax, Softmax, normalize_axis
from ...tensor import Tensor, where

__all__ = ["relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_",
           "celu", "celu_", "gelu", "silu", "mish", "sigmoid", "tanh", "softplus", "softsign",
           "logsigmoid", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "prelu",
           "threshold", "threshold_", "softshrink", "hardshrink", "tanhshrink", "glu", "softmax",
           "softmin", "log_softmax"]


def _inplace_or_not(fn, input, inplace):
    """``fn(input)``, written back into ``input`` when ``inplace`` (PyTorch's ``inplace=True``)."""
    return input._inplace(fn) if inplace else fn(input)


# --------------------------------------------------------------------------- erf

# W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23 (1969),
# the coefficients of Netlib SPECFUN's CALERF: erf on |x| <= 0.46875, erfc * exp(x^2) on
# [0.46875, 4] and on (4, inf). Maximum error against math.erf over [-6, 6]: about 2e-16.
_ERF_A = (3.16112374387056560e0, 1.13864154151050156e2, 3.77485237685302021e2,
          3.20937758913846947e3, 1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e1, 2.44024637934444173e2, 1.28261652607737228e3,
          2.84423683343917062e3)
_ERF_C = (5.64188496988670089e-1, 8.88314979438837594e0, 6.61191906371416295e1,
          2.98635138197400131e2, 8.81952221241769090e2, 1.71204761263407058e3,
          2.05107837782607147e3, 1.23033935479799725e3, 2.15311535474403846e-8)
_ERF_D = (1.57449261107098347e1, 1.17693950891312499e2, 5.37181101862009858e2,
          1.62138957456669019e3, 3.29079923573345963e3, 4.36261909014324716e3,
          3.43936767414372164e3, 1.23033935480374942e3)
_ERF_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
          1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_ERF_Q = (2.56852019228982242e0, 1.87295284992346047e0, 5.27905102951428412e-1,
          6.05183413124413191e-2, 2.33520497626869185e-3)


def _rational(z, num, den):
    """Cody's ``(num[-1] z^n + num[0] z^(n-1) + ... + num[n-1]) / (z^n + den[0] z^(n-1) + ...)``."""
    n, d = num[-1] * z, z
    for a, b in zip(num[:len(den) - 1], den[:-1]):
        n = (n + a) * z
        d = (d + b) * z
    return (n + num[len(den) - 1]) / (d + den[-1])


def erf_array(a):
    """The error function of a NumPy/CuPy float array, elementwise (same dtype; half-precision
    types are computed in float32)."""
    xp = backend.get_array_module(a)
    x = a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)
    y = abs(x)
    small = xp.minimum(y, 0.46875)
    erf_small = x * _rational(small * small, _ERF_A, _ERF_B)
    mid = xp.clip(y, 0.46875, 4.0)
    big = xp.clip(y, 4.0, 30.0)  # erfc underflows to 0 well before 30 (and inf stays finite)
    inv2 = 1 / (big * big)
    erfc_scaled = xp.where(y <= 4.0, _rational(mid, _ERF_C, _ERF_D),
                           (0.56418958354775628695 - inv2 * _rational(inv2, _ERF_P, _ERF_Q)) / big)
    # exp(-y^2) as exp(-r^2) exp(-(y-r)(y+r)) with r = y rounded down to 1/16: no rounding loss
    r = xp.trunc(xp.minimum(y, 30.0) * 16) / 16
    erfc = xp.exp(-r * r) * xp.exp(-(y - r) * (y + r)) * erfc_scaled
    out = xp.where(y <= 0.46875, erf_small, xp.copysign(1 - erfc, x))
    return out.astype(a.dtype, copy=False)


class Erf(Op):
    """The error function; its derivative is ``2/sqrt(pi) * exp(-x^2)``."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return erf_array(a)

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        return g * (2 / math.sqrt(math.pi)) * ctx.xp.exp(-a * a)


def erf(input):
    """``erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt``, elementwise and differentiable.

    Example:
        >>> erf(ddp.tensor([0.0, 1.0]))
        tensor([0.0000, 0.8427])
    """
    return Erf.apply(input._float_input("erf"))


# --------------------------------------------------------------------------- fused primitives

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_TANH_BETA = math.sqrt(2 / math.pi)
_TANH_KAPPA = 0.044715


class Gelu(Op):
    """``x * Phi(x)`` (``approximate='none'``, Phi the normal CDF) or its tanh approximation."""

    @staticmethod
    def forward(ctx, a, approximate="none"):
        ctx.save_for_backward(a)
        ctx.approximate = approximate
        if approximate == "tanh":
            inner = _TANH_BETA * (a + _TANH_KAPPA * a * a * a)
            out = 0.5 * a * (1 + backend.get_array_module(a).tanh(inner))
        else:
            out = 0.5 * a * (1 + erf_array(a * _SQRT_HALF))
        return out.astype(a.dtype, copy=False)  # half-precision inputs keep their dtype

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        if ctx.approximate == "tanh":
            t = E.Tanh.run(_TANH_BETA * (a + _TANH_KAPPA * a * a * a))
            d_inner = _TANH_BETA * (1 + 3 * _TANH_KAPPA * a * a)
            return g * (0.5 * (1 + t) + 0.5 * a * (1 - t * t) * d_inner)
        cdf = 0.5 * (1 + Erf.run(a * _SQRT_HALF))
        pdf = _INV_SQRT_2PI * ctx.xp.exp(-0.5 * a * a)
        return g * (cdf + a * pdf)


class Elu(Op):
    """``scale * (x if x > 0 else alpha * (exp(input_scale * x) - 1))``: ELU, SELU and CELU."""

    @staticmethod
    def forward(ctx, a, alpha=1.0, scale=1.0, input_scale=1.0):
        xp = backend.get_array_module(a)
        neg = (alpha * scale) * xp.expm1(xp.minimum(a, 0) * input_scale)
        out = xp.where(a > 0, a * scale, neg).astype(a.dtype, copy=False)
        ctx.save_for_backward(a, out)
        ctx.coefs = (alpha * scale, scale, input_scale)
        return out

    @staticmethod
    def backward(ctx, g):
        a, out = ctx.saved_tensors
        neg_coef, scale, input_scale = ctx.coefs
        # for x <= 0, d out/dx = input_scale * (out + alpha * scale): written with the output, it
        # stays finite (and differentiable) where exp(x) would overflow on the other branch
        return ctx.xp.where(a > 0, g * scale, g * (input_scale * (out + neg_coef)))


class LeakyRelu(Op):
    @staticmethod
    def forward(ctx, a, negative_slope=0.01):
        ctx.positive = a > 0
        ctx.slope = negative_slope
        return backend.get_array_module(a).where(ctx.positive, a, a * negative_slope)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.where(ctx.positive, g, g * ctx.slope)


class Hardtanh(Op):
    """Clamp to ``[min_val, max_val]``; unlike ``clamp`` the gradient is zero at the bounds."""

    @staticmethod
    def forward(ctx, a, min_val=-1.0, max_val=1.0):
        ctx.inside = (a > min_val) & (a < max_val)
        return backend.get_array_module(a).clip(a, min_val, max_val).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.where(ctx.inside, g, 0.0)


class Hardswish(Op):
    """``x * relu6(x + 3) / 6``; gradient ``x/3 + 1/2`` on (-3, 3), 0 below, 1 above (PyTorch's
    values at the kinks)."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * backend.get_array_module(a).clip(a + 3, 0, 6) / 6

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        xp = ctx.xp
        return g * xp.where(a <= -3, 0.0, xp.where(a < 3, a / 3 + 0.5, 1.0))


class Softplus(Op):
    """``log(1 + exp(beta * x)) / beta`` without overflow; ``x`` itself where ``beta * x`` is
    above ``threshold`` (None: never)."""

    @staticmethod
    def forward(ctx, a, beta=1.0, threshold=20.0):
        xp = backend.get_array_module(a)
        z = a * beta
        out = (xp.maximum(z, 0) + xp.log1p(xp.exp(-abs(z)))) / beta
        if threshold is not None:
            out = xp.where(z > threshold, a, out)
        ctx.save_for_backward(a)
        ctx.beta, ctx.threshold = beta, threshold
        return out.astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        z = a * ctx.beta
        slope = E.Sigmoid.run(z)
        if ctx.threshold is not None:
            slope = ctx.xp.where(z > ctx.threshold, 1.0, slope)
        return g * slope


# --------------------------------------------------------------------------- functional API

def relu(input, inplace=False):
    """``max(x, 0)``.

    Example:
        >>> relu(ddp.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """
    return _inplace_or_not(Tensor.relu, input, inplace)


def relu_(input):
    """In-place ``relu``."""
    return relu(input, inplace=True)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """``x if x > 0 else negative_slope * x``.

    Example:
        >>> leaky_relu(ddp.tensor([-1.0, 2.0]), 0.1)
        tensor([-0.1000,  2.0000])
    """
    return _inplace_or_not(lambda x: LeakyRelu.apply(x, negative_slope=negative_slope), input,
                           inplace)


def leaky_relu_(input, negative_slope=0.01):
    """In-place ``leaky_relu``."""
    return leaky_relu(input, negative_slope, inplace=True)


def elu(input, alpha=1.0, inplace=False):
    """``x if x > 0 else alpha * (exp(x) - 1)``.

    Example:
        >>> elu(ddp.tensor([-1.0, 2.0]))
        tensor([-0.6321,  2.0000])
    """
    return _inplace_or_not(lambda x: Elu.apply(x, alpha=alpha), input, inplace)


def elu_(input, alpha=1.0):
    """In-place ``elu``."""
    return elu(input, alpha, inplace=True)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(input, inplace=False):
    """``scale * elu(x, alpha)`` with the self-normalising constants.

    Example:
        >>> selu(ddp.tensor([1.0]))
        tensor([1.0507])
    """
    return _inplace_or_not(lambda x: Elu.apply(x, alpha=_SELU_ALPHA, scale=_SELU_SCALE), input,
                           inplace)


def selu_(input):
    """In-place ``selu``."""
    return selu(input, inplace=True)


def celu(input, alpha=1.0, inplace=False):
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``.

    Example:
        >>> celu(ddp.tensor([-1.0]), alpha=2.0)
        tensor([-0.7869])
    """
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError: celu() with alpha=0")
    return _inplace_or_not(lambda x: Elu.apply(x, alpha=alpha, input_scale=1 / alpha), input,
                           inplace)


def celu_(input, alpha=1.0):
    """In-place ``celu``."""
    return celu(input, alpha, inplace=True)


def gelu(input, approximate="none"):
    """``x * Phi(x)`` with Phi the standard normal CDF (exact, through erf), or PyTorch's tanh
    approximation with ``approximate='tanh'``.

    Example:
        >>> gelu(ddp.tensor([1.0]), approximate="tanh")
        tensor([0.8412])
    """
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}")
    return Gelu.apply(input._float_input("gelu"), approximate=approximate)


def silu(input, inplace=False):
    """``x * sigmoid(x)`` (Swish).

    Example:
        >>> silu(ddp.tensor([1.0]))
        tensor([0.7311])
    """
    return _inplace_or_not(lambda x: x * x.sigmoid(), input, inplace)


def mish(input, inplace=False):
    """``x * tanh(softplus(x))``.

    Example:
        >>> mish(ddp.tensor([1.0]))
        tensor([0.8651])
    """
    return _inplace_or_not(lambda x: x * Softplus.apply(x, threshold=None).tanh(), input, inplace)


def sigmoid(input):
    """``1 / (1 + exp(-x))``.

    Example:
        >>> sigmoid(ddp.tensor([0.0]))
        tensor([0.5000])
    """
    return input.sigmoid()


def tanh(input):
    """Hyperbolic tangent.

    Example:
        >>> tanh(ddp.tensor([0.0]))
        tensor([0.])
    """
    return input.tanh()


@autocast_op("softplus")
def softplus(input, beta=1.0, threshold=20.0):
    """``log(1 + exp(beta * x)) / beta``, and ``x`` where ``beta * x > threshold``.

    Example:
        >>> softplus(ddp.tensor([0.0, 1e4]))
        tensor([6.9315e-01, 1.0000e+04])
    """
    return Softplus.apply(input._float_input("softplus"), beta=beta, threshold=threshold)


def softsign(input):
    """``x / (1 + |x|)``.

    Example:
        >>> softsign(ddp.tensor([1.0]))
        tensor([0.5000])
    """
    return input / (1 + input.abs())


def logsigmoid(input):
    """``log(sigmoid(x)) = -softplus(-x)``, stable for large ``|x|``.

    Example:
        >>> logsigmoid(ddp.tensor([-1e4, 0.0]))
        tensor([-1.0000e+04, -6.9315e-01])
    """
    return -Softplus.apply(-input._float_input("logsigmoid"), threshold=None)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """Clamp to ``[min_val, max_val]`` (gradient zero outside the open interval).

    Example:
        >>> hardtanh(ddp.tensor([-2.0, 0.5, 2.0]))
        tensor([-1.0000,  0.5000,  1.0000])
    """
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    return _inplace_or_not(lambda x: Hardtanh.apply(x, min_val=min_val, max_val=max_val), input,
                           inplace)


def hardtanh_(input, min_val=-1.0, max_val=1.0):
    """In-place ``hardtanh``."""
    return hardtanh(input, min_val, max_val, inplace=True)


def relu6(input, inplace=False):
    """``min(max(x, 0), 6)``.

    Example:
        >>> relu6(ddp.tensor([-1.0, 7.0]))
        tensor([0., 6.])
    """
    return hardtanh(input, 0.0, 6.0, inplace)


def hardsigmoid(input, inplace=False):
    """``relu6(x + 3) / 6``.

    Example:
        >>> hardsigmoid(ddp.tensor([0.0]))
        tensor([0.5000])
    """
    return _inplace_or_not(lambda x: Hardtanh.apply(x + 3, min_val=0.0, max_val=6.0) / 6, input,
                           inplace)


def hardswish(input, inplace=False):
    """``x * relu6(x + 3) / 6``.

    Example:
        >>> hardswish(ddp.tensor([1.0]))
        tensor([0.6667])
    """
    return _inplace_or_not(Hardswish.apply, input, inplace)


@autocast_op("prelu")
def prelu(input, weight):
    """``x if x > 0 else weight * x``, ``weight`` one value or one per channel (dim 1).

    Example:
        >>> prelu(ddp.tensor([[-1.0, 2.0]]), ddp.tensor([0.25]))
        tensor([[-0.2500,  2.0000]])
    """
    if weight.ndim != 1:
        raise RuntimeError(f"prelu: weight must be 1-D (got shape {tuple(weight.shape)})")
    n = weight.shape[0]
    if n != 1:
        channels = input.shape[1] if input.ndim >= 2 else (input.shape[0] if input.ndim else 1)
        if channels != n:
            raise RuntimeError(f"Mismatch of parameter numbers and input channel size. Found "
                               f"parameter numbers = {n} and channel size = {channels}.")
        if input.ndim >= 2:
            weight = weight.reshape((n,) + (1,) * (input.ndim - 2))
    return where(input > 0, input, weight * input)


def threshold(input, threshold, value, inplace=False):
    """``x if x > threshold else value``.

    Example:
        >>> threshold(ddp.tensor([0.5, 2.0]), 1.0, -1.0)
        tensor([-1.,  2.])
    """
    return _inplace_or_not(lambda x: where(x > threshold, x, value), input, inplace)


_threshold = threshold  # the name is shadowed by the argument below


def threshold_(input, threshold, value):
    """In-place ``threshold``."""
    return _threshold(input, threshold, value, inplace=True)


def softshrink(input, lambd=0.5):
    """``x - lambd`` above ``lambd``, ``x + lambd`` below ``-lambd``, 0 between.

    Example:
        >>> softshrink(ddp.tensor([-1.0, 0.2, 2.0]))
        tensor([-0.5000,  0.0000,  1.5000])
    """
    if lambd < 0:
        raise RuntimeError(f"lambda must be greater or equal to 0, but found to be {lambd}.")
    return where(input > lambd, input - lambd, where(input < -lambd, input + lambd, 0.0))


def hardshrink(input, lambd=0.5):
    """``x`` where ``|x| > lambd``, else 0.

    Example:
        >>> hardshrink(ddp.tensor([-1.0, 0.2, 2.0]))
        tensor([-1.,  0.,  2.])
    """
    return where(input.abs() > lambd, input, 0.0)


def tanhshrink(input):
    """``x - tanh(x)``.

    Example:
        >>> tanhshrink(ddp.tensor([0.0]))
        tensor([0.])
    """
    return input - input.tanh()


def glu(input, dim=-1):
    """Gated linear unit: ``a * sigmoid(b)`` with ``a, b`` the halves of ``input`` along ``dim``.

    Example:
        >>> glu(ddp.tensor([1.0, 0.0]))
        tensor([0.5000])
    """
    d = normalize_axis(dim, input.ndim)[0]
    if input.ndim == 0 or input.shape[d] % 2:
        size = input.shape[d] if input.ndim else 0
        raise RuntimeError(f"glu: Halving dimension must be even, but dimension {d} is size {size}")
    a, b = input.chunk(2, d)
    return a * b.sigmoid()


def _softmax_dim(name, input, dim, dtype, stacklevel):
    """The input cast to ``dtype`` and ``dim`` as an axis (PyTorch's legacy implicit choice when
    None: 0 for 0-, 1- and 3-D inputs, else 1, with a warning)."""
    if dtype is not None:
        input = input.to(dtype)
    input = input._float_input(name)
    if dim is None:
        warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call "
                      f"to include dim=X as an argument.",
                      stacklevel=stacklevel + 1)  # + the frame of the autocast_op entry
        dim = 0 if input.ndim in (0, 1, 3) else 1
    return input, normalize_axis(dim, input.ndim)[0] if input.ndim else None


@autocast_op("softmax", dtype_at=3)
def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``exp(x) / sum(exp(x))`` along ``dim``, computed without overflow.

    Example:
        >>> softmax(ddp.tensor([1e4, 0.0]), dim=0)
        tensor([1., 0.])
    """
    input, d = _softmax_dim("softmax", input, dim, dtype, _stacklevel)
    return Softmax.apply(input, dim=d)


@autocast_op("softmin", dtype_at=3)
def softmin(input, dim=None, _stacklevel=3, dtype=None):
    """``softmax(-x)`` along ``dim``.

    Example:
        >>> softmin(ddp.tensor([0.0, 1e4]), dim=0)
        tensor([1., 0.])
    """
    input, d = _softmax_dim("softmin", input, dim, dtype, _stacklevel)
    return Softmax.apply(-input, dim=d)


@autocast_op("log_softmax", dtype_at=3)
def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``x - logsumexp(x)`` along ``dim``, computed without overflow.

    Example:
        >>> log_softmax(ddp.tensor([1e4, 0.0]), dim=0)
        tensor([     0., -10000.])
    """
    input, d = _softmax_dim("log_softmax", input, dim, dtype, _stacklevel)
    return LogSoftmax.apply(input, dim=d)

"""Activation modules (``nn.ReLU``, ``nn.GELU``, ``nn.Softmax``, ...): thin wrappers around
``ddp.nn.functional``, with PyTorch's constructor arguments and ``repr``.

Example:
    >>> import ddp.nn as nn
    >>> nn.LeakyReLU(0.1)(ddp.tensor([-1.0, 1.0]))
    tensor([-0.1000,  1.0000])
"""
from __future__ import annotations

from .. import creation
from .functional import _activations as F
from .module import Module
from .parameter import Parameter

__all__ = ["ReLU", "ReLU6", "LeakyReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Sigmoid",
           "Tanh", "Softplus", "Softsign", "LogSigmoid", "Hardtanh", "Hardswish", "Hardsigmoid",
           "PReLU", "Threshold", "Softshrink", "Hardshrink", "Tanhshrink", "GLU", "Softmax",
           "Softmin", "LogSoftmax", "Softmax2d"]


class _Activation(Module):
    """An elementwise activation ``fn(input, **args)``; ``args`` are attributes and the repr.

    Subclasses set ``fn`` and ``__init__`` the arguments as attributes named as in PyTorch; those
    listed in ``_repr_args`` show in the repr, and ``inplace`` shows only when True.
    """
    fn = None
    _repr_args = ()

    def _args(self):
        return {name: getattr(self, name) for name in self._repr_args}

    def forward(self, input):
        kwargs = self._args()
        if "inplace" in self.__dict__:
            kwargs["inplace"] = self.inplace
        return type(self).fn(input, **kwargs)

    def extra_repr(self):
        parts = [f"{k}={v!r}" for k, v in self._args().items()]
        if self.__dict__.get("inplace"):
            parts.append("inplace=True")
        return ", ".join(parts)


class _InplaceActivation(_Activation):
    """An activation whose only argument is PyTorch's ``inplace``."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

class ReLU(_InplaceActivation):
    """``max(x, 0)``.

    Example:
        >>> ReLU()(ddp.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """
    fn = F.relu

class ReLU6(_InplaceActivation):
    """``min(max(x, 0), 6)``.

    Example:
        >>> ReLU6()(ddp.tensor([7.0]))
        tensor([6.])
    """
    fn = F.relu6

class LeakyReLU(_Activation):
    """``x if x > 0 else negative_slope * x``.

    Example:
        >>> LeakyReLU(0.5)(ddp.tensor([-2.0]))
        tensor([-1.])
    """
    fn = F.leaky_relu
    _repr_args = ("negative_slope",)

    def __init__(self, negative_slope=1e-2, inplace=False):
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace


class ELU(_Activation):
    """``x if x > 0 else alpha * (exp(x) - 1)``.

    Example:
        >>> ELU()(ddp.tensor([0.0, 1.0]))
        tensor([0., 1.])
    """
    fn = F.elu
    _repr_args = ("alpha",)

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha = alpha
        self.inplace = inplace


class SELU(_InplaceActivation):
    """Scaled ELU with the self-normalising constants.

    Example:
        >>> SELU()(ddp.tensor([0.0]))
        tensor([0.])
    """
    fn = F.selu

class CELU(_Activation):
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``.

    Example:
        >>> CELU()(ddp.tensor([1.0]))
        tensor([1.])
    """
    fn = F.celu
    _repr_args = ("alpha",)

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha = alpha
        self.inplace = inplace


class GELU(_Activation):
    """``x * Phi(x)`` (exact, through erf) or its tanh approximation.

    Example:
        >>> GELU(approximate="tanh")(ddp.tensor([0.0]))
        tensor([0.])
    """
    fn = F.gelu
    _repr_args = ("approximate",)

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate


class SiLU(_InplaceActivation):
    """``x * sigmoid(x)``.

    Example:
        >>> SiLU()(ddp.tensor([0.0]))
        tensor([0.])
    """
    fn = F.silu

class Mish(_InplaceActivation):
    """``x * tanh(softplus(x))``.

    Example:
        >>> Mish()(ddp.tensor([0.0]))
        tensor([0.])
    """
    fn = F.mish

class Sigmoid(_Activation):
    """``1 / (1 + exp(-x))``.

    Example:
        >>> Sigmoid()(ddp.tensor([0.0]))
        tensor([0.5000])
    """
    fn = F.sigmoid


class Tanh(_Activation):
    """Hyperbolic tangent.

    Example:
        >>> Tanh()(ddp.tensor([0.0]))
        tensor([0.])
    """
    fn = F.tanh


class Softplus(_Activation):
    """``log(1 + exp(beta * x)) / beta`` (``x`` where ``beta * x > threshold``).

    Example:
        >>> Softplus()(ddp.tensor([0.0]))
        tensor([0.6931])
    """
    fn = F.softplus
    _repr_args = ("beta", "threshold")

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta = beta
        self.threshold = threshold


class Softsign(_Activation):
    """``x / (1 + |x|)``.

    Example:
        >>> Softsign()(ddp.tensor([1.0]))
        tensor([0.5000])
    """
    fn = F.softsign


class LogSigmoid(_Activation):
    """``log(sigmoid(x))``, stable.

    Example:
        >>> LogSigmoid()(ddp.tensor([0.0]))
        tensor([-0.6931])
    """
    fn = F.logsigmoid


class Hardtanh(_Activation):
    """Clamp to ``[min_val, max_val]``.

    Example:
        >>> Hardtanh(-2.0, 2.0)(ddp.tensor([-3.0, 3.0]))
        tensor([-2.,  2.])
    """
    fn = F.hardtanh
    _repr_args = ("min_val", "max_val")

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False, min_value=None, max_value=None):
        super().__init__()
        self.min_val = min_val if min_value is None else min_value
        self.max_val = max_val if max_value is None else max_value
        self.inplace = inplace
        if self.max_val <= self.min_val:
            raise ValueError(f"Hardtanh: max_val ({self.max_val}) must be greater than min_val "
                             f"({self.min_val})")


class Hardswish(_InplaceActivation):
    """``x * relu6(x + 3) / 6``.

    Example:
        >>> Hardswish()(ddp.tensor([3.0]))
        tensor([3.])
    """
    fn = F.hardswish

class Hardsigmoid(_InplaceActivation):
    """``relu6(x + 3) / 6``.

    Example:
        >>> Hardsigmoid()(ddp.tensor([3.0]))
        tensor([1.])
    """
    fn = F.hardsigmoid

class Threshold(_Activation):
    """``x if x > threshold else value``.

    Example:
        >>> Threshold(1.0, 0.0)(ddp.tensor([0.5, 2.0]))
        tensor([0., 2.])
    """
    fn = F.threshold
    _repr_args = ("threshold", "value")

    def __init__(self, threshold, value, inplace=False):
        super().__init__()
        self.threshold = threshold
        self.value = value
        self.inplace = inplace


class Softshrink(_Activation):
    """``x -+ lambd`` outside ``[-lambd, lambd]``, 0 inside.

    Example:
        >>> Softshrink(1.0)(ddp.tensor([3.0]))
        tensor([2.])
    """
    fn = F.softshrink
    _repr_args = ("lambd",)

    def __init__(self, lambd=0.5):
        super().__init__()
        self.lambd = lambd

    def extra_repr(self):
        return str(self.lambd)


class Hardshrink(_Activation):
    """``x`` outside ``[-lambd, lambd]``, 0 inside.

    Example:
        >>> Hardshrink(1.0)(ddp.tensor([0.5, 3.0]))
        tensor([0., 3.])
    """
    fn = F.hardshrink
    _repr_args = ("lambd",)

    def __init__(self, lambd=0.5):
        super().__init__()
        self.lambd = lambd

    def extra_repr(self):
        return str(self.lambd)


class Tanhshrink(_Activation):
    """``x - tanh(x)``.

    Example:
        >>> Tanhshrink()(ddp.tensor([0.0]))
        tensor([0.])
    """
    fn = F.tanhshrink


class GLU(_Activation):
    """Gated linear unit over the halves of ``dim``.

    Example:
        >>> GLU()(ddp.tensor([[2.0, 0.0]]))
        tensor([[1.]])
    """
    fn = F.glu
    _repr_args = ("dim",)

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim


class Softmax(_Activation):
    """``exp(x) / sum(exp(x))`` along ``dim``.

    Example:
        >>> Softmax(dim=-1)(ddp.tensor([0.0, 0.0]))
        tensor([0.5000, 0.5000])
    """
    fn = F.softmax
    _repr_args = ("dim",)

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmax(input, self.dim, _stacklevel=5)


class Softmin(_Activation):
    """``softmax(-x)`` along ``dim``.

    Example:
        >>> Softmin(dim=0)(ddp.tensor([0.0, 0.0]))
        tensor([0.5000, 0.5000])
    """
    fn = F.softmin
    _repr_args = ("dim",)

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmin(input, self.dim, _stacklevel=5)


class LogSoftmax(_Activation):
    """``x - logsumexp(x)`` along ``dim``.

    Example:
        >>> LogSoftmax(dim=0)(ddp.tensor([0.0, 0.0]))
        tensor([-0.6931, -0.6931])
    """
    fn = F.log_softmax
    _repr_args = ("dim",)

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.log_softmax(input, self.dim, _stacklevel=5)


class PReLU(Module):
    """``x if x > 0 else a * x`` with a learnable slope ``a`` (one, or one per channel).

    Example:
        >>> m = PReLU(num_parameters=2, init=0.5)
        >>> m(ddp.tensor([[-2.0, -4.0]]))
        tensor([[-1., -2.]], grad_fn=<WhereBackward0>)
    """

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters = num_parameters
        self.init = init
        self.weight = Parameter(creation.empty(num_parameters, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self):
        from .init import constant_
        constant_(self.weight, self.init)

    def forward(self, input):
        return F.prelu(input, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class Softmax2d(Module):
    """Softmax over the channels of (N, C, H, W) or (C, H, W) input.

    Example:
        >>> Softmax2d()(ddp.zeros(1, 2, 1, 1)).flatten()
        tensor([0.5000, 0.5000])
    """

    def forward(self, input):
        if input.ndim not in (3, 4):
            raise ValueError(f"Softmax2d: expected input to be 3D or 4D, got {input.ndim}D "
                             f"instead (shape {tuple(input.shape)})")
        return F.softmax(input, -3)

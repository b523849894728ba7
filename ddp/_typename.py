"""How error messages name a value's type, as PyTorch's do (``torch.typename`` and the legacy
tensor type names): shared by ``nn`` and ``optim``, which sit on one floor and import neither
each other's private helpers.

Example:
    >>> from ddp._typename import legacy_tensor_typename, typename
    >>> typename(3.0), typename(ddp.nn.Parameter(ddp.ones(1))), legacy_tensor_typename(ddp.ones(1))
    ('float', 'ddp.nn.Parameter', 'ddp.FloatTensor')
"""
from __future__ import annotations

from .nn.parameter import Parameter
from .tensor import Tensor

__all__ = ["LEGACY_TYPE_NAMES", "legacy_tensor_typename", "typename"]

LEGACY_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor",
                     "float16": "HalfTensor", "bfloat16": "BFloat16Tensor",
                     "int64": "LongTensor", "int32": "IntTensor", "int16": "ShortTensor",
                     "int8": "CharTensor", "uint8": "ByteTensor", "bool": "BoolTensor"}


def typename(obj):
    """``torch.typename``'s spelling for error messages (``ddp.Tensor``, ``int``, ...).

    Example:
        >>> typename(ddp.ones(1)), typename([])
        ('ddp.Tensor', 'list')
    """
    if isinstance(obj, Tensor):
        return "ddp.nn.Parameter" if isinstance(obj, Parameter) else "ddp.Tensor"
    module = getattr(type(obj), "__module__", "") or ""
    name = type(obj).__qualname__
    return name if module in ("builtins", "") else f"{module}.{name}"


def legacy_tensor_typename(t):
    """``torch.typename``'s legacy spelling of a tensor, under ddp: ``ddp.FloatTensor``,
    ``ddp.cuda.FloatTensor``.

    Example:
        >>> legacy_tensor_typename(ddp.ones(1, dtype=ddp.int64))
        'ddp.LongTensor'
    """
    name = LEGACY_TYPE_NAMES.get(t.dtype.name, "Tensor")
    return ("ddp.cuda." if t.device.type == "cuda" else "ddp.") + name

"""PyTorch's legacy tensor type names: ``FloatTensor``, ``LongTensor``, ... (CPU) and
``ddp.cuda.FloatTensor``, ... — constructors, ``isinstance`` checks, and the names
``Tensor.type()`` returns.

``ddp.FloatTensor(2, 3)`` is an uninitialised 2x3 float32 tensor, ``ddp.FloatTensor(data)``
converts a list or array, ``isinstance(t, ddp.FloatTensor)`` is True for a float32 CPU tensor,
and ``t.type()`` is ``'torch.FloatTensor'`` — PyTorch's own strings, so programs that compare
them run unchanged.

Example:
    >>> ddp.FloatTensor([1, 2])
    tensor([1., 2.])
    >>> ddp.LongTensor(2, 3).shape, ddp.ones(1).type()
    (ddp.Size([2, 3]), 'torch.FloatTensor')
    >>> isinstance(ddp.zeros(2), ddp.FloatTensor), isinstance(ddp.zeros(2), ddp.LongTensor)
    (True, False)
"""
from __future__ import annotations

import numbers

from . import backend
from .creation import empty, tensor
from .tensor import Size, Tensor

# name -> dtype, in PyTorch's spelling
NAMES = {"FloatTensor": backend.float32, "DoubleTensor": backend.float64,
         "HalfTensor": backend.float16, "BFloat16Tensor": backend.bfloat16,
         "ByteTensor": backend.uint8, "CharTensor": backend.int8, "ShortTensor": backend.int16,
         "IntTensor": backend.int32, "LongTensor": backend.int64, "BoolTensor": backend.bool}
_BY_DTYPE = {dt: name for name, dt in NAMES.items()}


def type_name(t) -> str:
    """``'torch.FloatTensor'`` / ``'torch.cuda.LongTensor'``: what ``t.type()`` returns."""
    name = _BY_DTYPE.get(t.dtype)
    if name is None:
        raise TypeError(f"type(): no legacy type name for dtype {t.dtype}")
    return f"torch.{'cuda.' if t.is_cuda else ''}{name}"


def parse(name):
    """``'torch.cuda.FloatTensor'`` (or ``'ddp.…'``, or a legacy class) -> (dtype, device)."""
    if isinstance(name, _LegacyType):
        return name.dtype, name.device
    parts = str(name).split(".")
    if parts[0] in ("torch", "ddp"):
        parts = parts[1:]
    cuda = len(parts) == 2 and parts[0] == "cuda"
    if (len(parts) == 1 or cuda) and parts[-1] in NAMES:
        return NAMES[parts[-1]], ("cuda" if cuda else "cpu")
    raise ValueError(f"invalid type: '{name}'")


class _LegacyType(type):
    def __instancecheck__(cls, obj):
        return (isinstance(obj, Tensor) and obj.dtype == cls.dtype
                and obj.is_cuda == (cls.device == "cuda"))

    def __repr__(cls):
        return f"<class '{cls.__module__}.{cls.__name__}'>"


def _construct(cls, *args, device=None):
    dev = cls.device if device is None else device
    if len(args) == 0:
        return empty(0, dtype=cls.dtype, device=dev)
    if all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in args):
        return empty(*args, dtype=cls.dtype, device=dev)
    if len(args) == 1 and isinstance(args[0], Size):
        return empty(args[0], dtype=cls.dtype, device=dev)
    if len(args) == 1 and isinstance(args[0], Tensor):
        t = args[0]
        if t.dtype != cls.dtype:
            raise TypeError(f"expected {cls.dtype} (got {t.dtype}) in {cls.__name__}(tensor); "
                            f"use tensor.to({cls.dtype})")
        return t
    if len(args) == 1:
        return tensor(args[0], dtype=cls.dtype, device=dev)
    raise TypeError(f"{cls.__name__}(): expected sizes (ints), a Size, a sequence or an array, "
                    f"got {tuple(type(a).__name__ for a in args)}")


def _make_type(name, dtype, device, module):
    return _LegacyType(name, (), {"dtype": dtype, "device": device, "__module__": module,
                                  "__new__": _construct,
                                  "__doc__": f"Legacy constructor of {dtype} tensors on {device}."})


CPU_TYPES = {n: _make_type(n, dt, "cpu", "ddp") for n, dt in NAMES.items()}
CUDA_TYPES = {n: _make_type(n, dt, "cuda", "ddp.cuda") for n, dt in NAMES.items()}


def _type(self, dtype=None, non_blocking=False, **kwargs):
    """``t.type()``: PyTorch's type name (``'torch.FloatTensor'``); ``t.type(ddp.DoubleTensor)``
    or ``t.type('torch.cuda.LongTensor')`` or ``t.type(ddp.float64)``: converted."""
    if dtype is None:
        return type_name(self)
    if isinstance(dtype, backend.dtype):
        return self.to(dtype)
    dt, dev = parse(dtype)
    return self.to(device=dev, dtype=dt)


Tensor.type = _type   # the seam: Tensor.type speaks these names (registered once, at import)

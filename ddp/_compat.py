"""Package-level switches and facts PyTorch programs call: threads, determinism, ``compile``,
matmul precision, ``finfo``/``iinfo``, memory formats, ``typename``.

Each does what it says for ddp's NumPy/CuPy backends, or accepts and records the setting where
ddp has no such machinery (and says so here):

* ``set_num_threads(n)`` limits the BLAS/OpenMP pools of this process (threadpoolctl);
  ``get_num_threads()`` reports the BLAS pool's size.
* ``use_deterministic_algorithms(mode)``: ddp's kernels are deterministic on the CPU (NumPy);
  the flag is recorded for ``are_deterministic_algorithms_enabled()``.
* ``compile(model)`` returns the model unchanged (ddp has no graph compiler); as a decorator,
  the function unchanged.
* ``set_float32_matmul_precision('high'|'medium')`` asks for TF32 matmuls: CuPy reads that
  from ``CUPY_TF32`` before its first matmul, so it is recorded, not applied mid-run.

Example:
    >>> ddp.finfo(ddp.float32).eps, ddp.iinfo(ddp.int8).max
    (1.1920928955078125e-07, 127)
    >>> ddp.compile(ddp.nn.Linear(2, 2)).__class__.__name__
    'Linear'
"""
from __future__ import annotations

import numpy as np

from . import backend
from ._legacy_types import type_name

__all__ = ["set_num_threads", "get_num_threads", "set_num_interop_threads",
           "get_num_interop_threads", "use_deterministic_algorithms",
           "are_deterministic_algorithms_enabled", "is_deterministic_algorithms_warn_only_enabled",
           "compile", "set_float32_matmul_precision", "get_float32_matmul_precision", "finfo",
           "iinfo", "typename", "is_storage", "contiguous_format", "channels_last",
           "channels_last_3d", "preserve_format", "memory_format"]


# ---------------------------------------------------------------- threads
_interop = 1


def set_num_threads(n: int) -> None:
    """Limit this process's BLAS and OpenMP thread pools to ``n`` threads."""
    if int(n) < 1:
        raise RuntimeError(f"set_num_threads: number of threads must be positive, got {n}")
    from threadpoolctl import threadpool_limits
    global _limits
    _limits = threadpool_limits(limits=int(n))     # kept: the limit holds while referenced


def get_num_threads() -> int:
    """The size of the BLAS thread pool (the threads NumPy's matrix products use)."""
    from threadpoolctl import threadpool_info
    sizes = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(sizes) if sizes else 1


def set_num_interop_threads(n: int) -> None:
    """Recorded: ddp runs one op at a time (no inter-op pool)."""
    global _interop
    _interop = int(n)


def get_num_interop_threads() -> int:
    return _interop


# ---------------------------------------------------------------- determinism, compile, precision
_deterministic = False
_warn_only = False


def use_deterministic_algorithms(mode: bool, *, warn_only: bool = False) -> None:
    """Recorded; ddp's CPU kernels (NumPy) are deterministic whatever the flag."""
    global _deterministic, _warn_only
    _deterministic, _warn_only = bool(mode), bool(warn_only)


def are_deterministic_algorithms_enabled() -> bool:
    return _deterministic


def is_deterministic_algorithms_warn_only_enabled() -> bool:
    return _warn_only


def compile(model=None, *, fullgraph=False, dynamic=None, backend=None, mode=None,
            options=None, disable=False):
    """``torch.compile``: ddp has no graph compiler, so the model (or function) comes back as it
    is and runs eagerly; used as ``@ddp.compile(...)`` it returns the function unchanged."""
    if model is None:
        return lambda fn: fn
    return model


_matmul_precision = "highest"


def set_float32_matmul_precision(precision: str) -> None:
    if precision not in ("highest", "high", "medium"):
        raise RuntimeError(f"set_float32_matmul_precision: expected 'highest', 'high' or "
                           f"'medium', got {precision!r}")
    global _matmul_precision
    _matmul_precision = precision


def get_float32_matmul_precision() -> str:
    return _matmul_precision


# ---------------------------------------------------------------- number facts
class finfo:
    """Machine limits of a floating point dtype, with PyTorch's attribute names."""

    def __init__(self, type=None):
        dt = backend.get_default_dtype() if type is None else type
        info = np.finfo(backend.to_numpy_dtype(dt))
        self.dtype = dt.name if hasattr(dt, "name") else str(dt)
        self.bits = int(info.bits)
        self.eps = float(info.eps)
        self.max = float(info.max)
        self.min = float(info.min)
        self.tiny = self.smallest_normal = float(info.smallest_normal)
        self.resolution = 10.0 ** -int(info.precision)   # PyTorch: 10^-precision (bfloat16: 0.01)

    def __repr__(self):
        return (f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, "
                f"eps={self.eps:g}, smallest_normal={self.smallest_normal:g}, "
                f"tiny={self.tiny:g}, dtype={self.dtype})")


class iinfo:
    """Limits of an integer dtype, with PyTorch's attribute names."""

    def __init__(self, type):
        info = np.iinfo(backend.to_numpy_dtype(type))
        self.dtype = type.name
        self.bits, self.max, self.min = int(info.bits), int(info.max), int(info.min)

    def __repr__(self):
        return f"iinfo(min={self.min:g}, max={self.max:g}, dtype={self.dtype})"


def typename(obj) -> str:
    """``'torch.FloatTensor'`` for a tensor (PyTorch's legacy name), else the qualified type."""
    from .tensor import Tensor
    if isinstance(obj, Tensor):
        return type_name(obj)
    t = type(obj)
    return t.__qualname__ if t.__module__ in ("builtins", "__builtin__") else \
        f"{t.__module__}.{t.__qualname__}"


def is_storage(obj) -> bool:
    """False: ddp tensors own arrays, not storages."""
    return False


# ---------------------------------------------------------------- memory formats
class memory_format:
    """PyTorch's memory formats; ddp keeps arrays row-major (NCHW), so each is a name only."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"ddp.{self.name}"


contiguous_format = memory_format("contiguous_format")
channels_last = memory_format("channels_last")
channels_last_3d = memory_format("channels_last_3d")
preserve_format = memory_format("preserve_format")

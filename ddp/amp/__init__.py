"""``ddp.amp``: automatic mixed precision — :class:`autocast` regions and the :class:`GradScaler`,
as ``torch.amp``. ``ddp.autocast`` is the same class, and ``ddp.cuda.amp.autocast`` /
``ddp.cuda.amp.GradScaler`` are PyTorch's legacy CUDA-only spellings.

Example (float16 training with loss scaling; bfloat16 on the CPU needs no scaler):
    >>> model = ddp.nn.Linear(4, 2); opt = ddp.optim.SGD(model.parameters(), lr=0.1)
    >>> scaler = ddp.amp.GradScaler("cpu")
    >>> with ddp.autocast("cpu", dtype=ddp.float16):
    ...     loss = ddp.nn.functional.cross_entropy(model(ddp.randn(8, 4)), ddp.zeros(8).long())
    >>> scaler.scale(loss).backward()
    >>> scaler.step(opt); scaler.update()
    >>> model.weight.grad.dtype
    ddp.float32
"""
from __future__ import annotations

import sys
import types

from .. import backend
from ..ops.autocast import POLICIES, autocast_call, autocast_inputs
from .autocast_mode import (autocast, custom_bwd,
                            custom_fwd, get_autocast_dtype, is_autocast_available,
                            is_autocast_enabled)
from .grad_scaler import GradScaler, OptState

__all__ = ["autocast", "GradScaler", "custom_fwd", "custom_bwd", "is_autocast_available",
           "is_autocast_enabled", "get_autocast_dtype", "autocast_inputs", "autocast_call",
           "POLICIES", "OptState"]


class _CudaAutocast(autocast):
    """``ddp.cuda.amp.autocast(enabled=True, dtype=ddp.float16, cache_enabled=True)``:
    ``ddp.autocast('cuda', ...)``.

    Example:
        >>> ddp.cuda.amp.autocast(enabled=False).device
        'cuda'
    """

    def __init__(self, enabled=True, dtype=backend.float16, cache_enabled=True):
        super().__init__("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


class _CudaGradScaler(GradScaler):
    """``ddp.cuda.amp.GradScaler(...)``: ``ddp.amp.GradScaler('cuda', ...)``.

    Example:
        >>> ddp.cuda.amp.GradScaler(enabled=False).is_enabled()
        False
    """

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        super().__init__("cuda", init_scale, growth_factor, backoff_factor, growth_interval,
                         enabled)


_CudaAutocast.__name__ = _CudaAutocast.__qualname__ = "autocast"
_CudaGradScaler.__name__ = _CudaGradScaler.__qualname__ = "GradScaler"

# ``ddp.cuda.amp`` (also importable as ``ddp.cuda.amp``: ddp.cuda is a module, not a package)
cuda_amp = types.ModuleType("ddp.cuda.amp", "PyTorch's legacy ``torch.cuda.amp`` names.")
cuda_amp.autocast = _CudaAutocast
cuda_amp.GradScaler = _CudaGradScaler
cuda_amp.custom_fwd = lambda fwd=None, *, cast_inputs=None: custom_fwd(
    fwd, device_type="cuda", cast_inputs=cast_inputs)
cuda_amp.custom_bwd = lambda bwd=None: custom_bwd(bwd, device_type="cuda")
sys.modules.setdefault("ddp.cuda.amp", cuda_amp)

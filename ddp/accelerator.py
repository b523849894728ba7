"""``ddp.accelerator``: the device-agnostic accelerator API (PyTorch 2.6+), here CUDA via CuPy.

Example:
    >>> dev = ddp.accelerator.current_accelerator()
    >>> dev is None or dev.type == "cuda"
    True
    >>> ddp.accelerator.is_available() == ddp.cuda.is_available()
    True
"""
from __future__ import annotations

from . import backend, cuda

__all__ = ["current_accelerator", "current_device_index", "current_device_idx", "device_count",
           "is_available", "set_device_index", "set_device_idx", "synchronize"]


def is_available() -> bool:
    """True when a GPU is usable (the only accelerator ddp knows)."""
    return cuda.is_available()


def device_count() -> int:
    return cuda.device_count()


def current_accelerator(check_available: bool = False):
    """``device('cuda')`` where CuPy sees a GPU, else None (PyTorch's answer without one)."""
    return backend.device("cuda") if cuda.is_available() else None


def _require(name):
    if not cuda.is_available():
        raise RuntimeError(f"ddp.accelerator.{name}: no accelerator is available "
                           f"(ddp.accelerator.is_available() is False)")


def current_device_index() -> int:
    _require("current_device_index")
    return cuda.current_device()


def set_device_index(device) -> None:
    _require("set_device_index")
    cuda.set_device(device)


current_device_idx = current_device_index
set_device_idx = set_device_index


def synchronize(device=None) -> None:
    """Wait for the accelerator's queued work (nothing to wait for without one)."""
    cuda.synchronize(device)

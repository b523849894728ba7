"""``ddp.cuda``: whether a GPU is usable, how many, and selecting one (through CuPy).

Example:
    >>> ddp.cuda.is_available() in (True, False)
    True
"""
from __future__ import annotations

from . import backend


def is_available() -> bool:
    """True when CuPy is installed and sees a GPU."""
    return backend.cuda_is_available()


def device_count() -> int:
    if not is_available():
        return 0
    return backend.cupy_module().cuda.runtime.getDeviceCount()


def current_device() -> int:
    return backend.cupy_module().cuda.Device().id


def set_device(device) -> None:
    """Make ``device`` (an index, 'cuda:N' or a ddp.device) the current GPU."""
    dev = backend.as_device(device) if not isinstance(device, int) else backend.device("cuda", device)
    backend.cupy_module().cuda.Device(dev.index or 0).use()


def synchronize(device=None) -> None:
    """Wait for all work queued on the GPU."""
    if is_available():
        backend.cupy_module().cuda.Device().synchronize()


def manual_seed(seed) -> None:
    """Random numbers for CUDA tensors come from the CPU generator; seeding it covers both."""
    backend.manual_seed(seed)


manual_seed_all = manual_seed

from .amp import cuda_amp as amp  # noqa: E402  ddp.cuda.amp.autocast / GradScaler (legacy names)

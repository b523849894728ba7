"""``ddp.cuda``: whether a GPU is usable, how many, and which one this thread uses (PyTorch's
``torch.cuda`` names over the backend, which alone talks to CuPy).

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
    """How many GPUs are visible (0 without CuPy or a GPU)."""
    return backend.device_count()


def current_device() -> int:
    """The index of the current GPU of this thread."""
    return backend.current_device()


def _index(device) -> int:
    if isinstance(device, int):
        return device
    dev = backend.as_device(device)
    if dev.type != "cuda":
        raise ValueError(f"Expected a cuda device, but got: {dev}")
    return backend.current_device() if dev.index is None else dev.index


def set_device(device) -> None:
    """Make ``device`` (an index, ``'cuda:N'`` or a ``ddp.device``) the current GPU of this
    thread: ``'cuda'`` tensors made afterwards live there. The launcher calls it once per rank."""
    backend.set_device(_index(device))


class device:
    """Context manager that makes ``device`` the current GPU inside the block (``None`` or a
    negative index: no change), as ``torch.cuda.device``."""

    def __init__(self, device):
        self.idx = -1 if device is None else _index(device)
        self._ctx = None

    def __enter__(self):
        if self.idx >= 0:
            self._ctx = backend.device_context(backend.device("cuda", self.idx))
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        return False


class device:
    """``with ddp.cuda.device(1):`` makes GPU 1 current inside the block, then restores the
    previous one; ``None`` or a negative index changes nothing (PyTorch's rule)."""

    def __init__(self, device):
        self.idx = _index(device)
        self.prev = None

    def __enter__(self):
        if self.idx is not None and self.idx >= 0:
            self.prev = current_device()
            if self.prev != self.idx:
                set_device(self.idx)
        return self

    def __exit__(self, *exc):
        if self.prev is not None and self.prev != self.idx:
            set_device(self.prev)
        return False


def _index(dev):
    if dev is None or isinstance(dev, int):
        return dev
    d = backend.as_device(dev)
    if d.type != "cuda":
        raise ValueError(f"Expected a cuda device, but got: {d}")
    return d.index or 0


def synchronize(device=None) -> None:
    """Wait until all work queued on ``device`` (the current GPU by default) has finished."""
    if is_available():
        backend.synchronize(None if device is None else backend.device("cuda", _index(device)))


def manual_seed(seed) -> None:
    """Seed the GPUs' random generators (PyTorch seeds them all here too; ``ddp.manual_seed``
    seeds the CPU's and the GPUs')."""
    backend.manual_seed_cuda(seed)


manual_seed_all = manual_seed


def __getattr__(name):
    if name == "default_generators":   # one per visible GPU, made on first use
        return tuple(backend.default_generator_of(backend.device("cuda", i))
                     for i in range(device_count()))
    raise AttributeError(f"module 'ddp.cuda' has no attribute {name!r}")


from .amp import cuda_amp as amp  # noqa: E402  ddp.cuda.amp.autocast / GradScaler (legacy names)
from ._legacy_types import CUDA_TYPES as _CUDA_TYPES  # noqa: E402  ddp.cuda.FloatTensor, ...
globals().update(_CUDA_TYPES)

"""``ddp.backends``: PyTorch's backend switches, so programs that set them run unchanged.

ddp computes with NumPy on the CPU and CuPy on NVIDIA GPUs; there is no cuDNN (CuPy 14 removed
it), no MPS and no oneDNN. The flags are kept as plain module attributes a program may read and
set (``torch.backends.cudnn.benchmark = True``); the ``is_available()`` functions say truthfully
what exists.

Example:
    >>> import ddp.backends.cudnn as cudnn
    >>> cudnn.benchmark = True; cudnn.is_available()
    False
    >>> ddp.backends.mps.is_available()
    False
"""
from . import cpu, cuda, cudnn, mkldnn, mps, openmp  # noqa: F401

__all__ = ["cpu", "cuda", "cudnn", "mkldnn", "mps", "openmp"]

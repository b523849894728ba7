"""``ddp.nn.parallel``: :class:`DistributedDataParallel`, and PyTorch's one-process
:class:`DataParallel` / :func:`data_parallel` (a plain wrapper on one device)."""
from .data_parallel import DataParallel, data_parallel
from .distributed import DistributedDataParallel

__all__ = ["DataParallel", "DistributedDataParallel", "data_parallel"]

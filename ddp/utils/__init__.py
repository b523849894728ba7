"""Utilities, as ``torch.utils``: :mod:`ddp.utils.data` (datasets, samplers, DataLoader) and
:mod:`ddp.utils.hooks` (``RemovableHandle``).

Example:
    >>> import ddp
    >>> from ddp.utils.data import DataLoader
    >>> len(DataLoader(range(10), batch_size=4))
    3
"""
from . import data, hooks

__all__ = ["data", "hooks"]

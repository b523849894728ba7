"""``Flatten`` and ``Unflatten``.

Example:
    >>> import ddp.nn as nn
    >>> nn.Flatten()(ddp.ones(2, 3, 4)).shape
    ddp.Size([2, 12])
"""
from __future__ import annotations

from .module import Module

__all__ = ["Flatten", "Unflatten"]


class Flatten(Module):
    """Flatten dimensions ``start_dim`` to ``end_dim`` (by default all but the batch one).

    Example:
        >>> nn.Flatten(0, 1)(ddp.ones(2, 3, 4)).shape
        ddp.Size([6, 4])
    """

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Split dimension ``dim`` into ``unflattened_size`` (one entry may be -1).

    Example:
        >>> nn.Unflatten(1, (2, 5))(ddp.ones(3, 10)).shape
        ddp.Size([3, 2, 5])
    """

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim = dim
        self.unflattened_size = unflattened_size

    def forward(self, input):
        return input.unflatten(self.dim, self.unflattened_size)

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"

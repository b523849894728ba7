"""Dropout layers: ``Dropout``, ``Dropout1d``, ``Dropout2d``. They act in training mode only
and draw their masks from ddp's default generator (``ddp.manual_seed``).

Example:
    >>> import ddp.nn as nn
    >>> m = nn.Dropout(0.5).eval()
    >>> m(ddp.ones(3))
    tensor([1., 1., 1.])
"""
from __future__ import annotations

from .functional._dropout import dropout, dropout1d, dropout2d
from .module import Module

__all__ = ["Dropout", "Dropout1d", "Dropout2d"]


class _DropoutNd(Module):
    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """In training, zero each element with probability ``p`` and scale the others by
    ``1/(1-p)``; in eval, the identity.

    Example:
        >>> y = nn.Dropout(0.5)(ddp.ones(1000))
        >>> sorted(set(y.tolist()))
        [0.0, 2.0]
    """

    def forward(self, input):
        return dropout(input, self.p, self.training, self.inplace)


class Dropout1d(_DropoutNd):
    """Zero whole channels of (N, C, L) or (C, L) input with probability ``p`` (training).

    Example:
        >>> nn.Dropout1d(0.2)(ddp.ones(2, 3, 4)).shape
        ddp.Size([2, 3, 4])
    """

    def forward(self, input):
        return dropout1d(input, self.p, self.training, self.inplace)


class Dropout2d(_DropoutNd):
    """Zero whole channels (feature maps) of (N, C, H, W) input with probability ``p``
    (training).

    Example:
        >>> nn.Dropout2d(0.2)(ddp.ones(2, 3, 4, 4)).shape
        ddp.Size([2, 3, 4, 4])
    """

    def forward(self, input):
        return dropout2d(input, self.p, self.training, self.inplace)

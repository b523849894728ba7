"""Pooling layers: ``MaxPool1d/2d``, ``AvgPool1d/2d``, ``AdaptiveAvgPool1d/2d``.

Example:
    >>> import ddp.nn as nn
    >>> nn.MaxPool2d(2)
    MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
    >>> nn.MaxPool2d(2)(ddp.ones(1, 3, 8, 8)).shape
    ddp.Size([1, 3, 4, 4])
"""
from __future__ import annotations

from .functional._helpers import _ntuple
from .functional._pooling import _adaptive_avg, _avg_pool2d, _max_pool2d, _pool1d
from .module import Module

__all__ = ["MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d",
           "AdaptiveAvgPool2d"]


class _MaxPoolNd(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """Max over windows of the last dimension of (N, C, L) or (C, L) input.

    Example:
        >>> nn.MaxPool1d(3, stride=2, padding=1)(ddp.ones(2, 4, 9)).shape
        ddp.Size([2, 4, 5])
    """

    def forward(self, input):
        return _pool1d("MaxPool1d", _max_pool2d, input, self.kernel_size, self.stride,
                       self.padding, dilation=self.dilation, ceil_mode=self.ceil_mode,
                       return_indices=self.return_indices)


class MaxPool2d(_MaxPoolNd):
    """Max over ``kernel_size`` windows of (N, C, H, W) or (C, H, W) input; with
    ``return_indices`` also the flat index (``row * W + col``) of each maximum.

    Example:
        >>> y, idx = nn.MaxPool2d(2, return_indices=True)(ddp.arange(16.).reshape(1, 1, 4, 4))
        >>> idx
        tensor([[[[ 5,  7],
                  [13, 15]]]])
    """

    def forward(self, input):
        return _max_pool2d("MaxPool2d", input, self.kernel_size, self.stride, self.padding,
                           self.dilation, self.ceil_mode, self.return_indices)


class AvgPool1d(Module):
    """Mean over windows of the last dimension of (N, C, L) or (C, L) input.

    Example:
        >>> nn.AvgPool1d(2)
        AvgPool1d(kernel_size=(2,), stride=(2,), padding=(0,))
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__()
        self.kernel_size = _ntuple(kernel_size, 1)
        self.stride = _ntuple(stride if stride is not None else kernel_size, 1, "stride")
        self.padding = _ntuple(padding, 1, "padding")
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad

    def forward(self, input):
        return _pool1d("AvgPool1d", _avg_pool2d, input, self.kernel_size, self.stride,
                       self.padding, ceil_mode=self.ceil_mode,
                       count_include_pad=self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    """Mean over ``kernel_size`` windows of (N, C, H, W) or (C, H, W) input;
    ``count_include_pad`` counts the zero padding in the divisor, ``divisor_override`` replaces
    the divisor.

    Example:
        >>> nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)(ddp.ones(1, 1, 5, 5))
        tensor([[[[1., 1., 1.],
                  [1., 1., 1.],
                  [1., 1., 1.]]]])
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):
        return _avg_pool2d("AvgPool2d", input, self.kernel_size, self.stride, self.padding,
                           self.ceil_mode, self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool1d(Module):
    """Average pooling of the last dimension to ``output_size`` windows.

    Example:
        >>> nn.AdaptiveAvgPool1d(3)(ddp.ones(2, 4, 10)).shape
        ddp.Size([2, 4, 3])
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return _adaptive_avg("AdaptiveAvgPool1d", input, self.output_size, 1)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size`` (int, pair; None keeps that dimension);
    windows overlap when the sizes do not divide.

    Example:
        >>> nn.AdaptiveAvgPool2d((1, 1))(ddp.ones(2, 4, 7, 7)).shape
        ddp.Size([2, 4, 1, 1])
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return _adaptive_avg("AdaptiveAvgPool2d", input, self.output_size, 2)

    def extra_repr(self):
        return f"output_size={self.output_size}"

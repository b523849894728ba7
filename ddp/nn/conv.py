"""Convolution layers: ``Conv1d``, ``Conv2d`` and ``ConvTranspose2d``.

Example:
    >>> import ddp.nn as nn
    >>> nn.Conv2d(3, 16, 3, padding=1)
    Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    >>> nn.Conv2d(3, 16, 3, padding=1)(ddp.ones(2, 3, 8, 8)).shape
    ddp.Size([2, 16, 8, 8])
"""
from __future__ import annotations


from .. import creation
from ..autograd import no_grad
from . import init
from .functional._conv import _conv1d, _conv2d, _conv_transpose2d
from .functional._helpers import _ntuple
from .functional._padding import pad
from .lazy import LazyModuleMixin
from .module import Module
from .parameter import Parameter, UninitializedParameter

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d", "LazyConv1d", "LazyConv2d", "LazyConvTranspose2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    """What the convolutions share: arguments, attributes, parameters, initialisation, repr.

    ``weight`` is (out_channels, in_channels/groups, *kernel_size), or for a transposed
    convolution (in_channels, out_channels/groups, *kernel_size).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 transposed, output_padding, groups, bias, padding_mode, device=None, dtype=None):
        super().__init__()
        name, n = type(self).__name__, len(kernel_size)
        if groups <= 0:
            raise ValueError(f"{name}: groups must be a positive integer, got {groups}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels={in_channels} and out_channels={out_channels} "
                             f"must both be divisible by groups={groups}")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: invalid padding string {padding!r}, should be one of "
                                 f"('same', 'valid')")
            if padding == "same" and any(s != 1 for s in stride):
                raise ValueError(f"{name}: padding='same' is not supported for strided "
                                 f"convolutions")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {_PADDING_MODES}, got "
                             f"{padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.transposed = transposed
        self.output_padding = output_padding
        self.groups = groups
        self.padding_mode = padding_mode
        # F.pad's argument for padding_mode != 'zeros': (left, right) of the last dim first
        if padding == "same":
            totals = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
            pairs = [(t // 2, t - t // 2) for t in totals]
        else:
            pairs = [(0, 0)] * n if padding == "valid" else [(p, p) for p in padding]
        self._reversed_padding_repeated_twice = [p for pair in reversed(pairs) for p in pair]
        shape = (in_channels, out_channels // groups) if transposed else \
            (out_channels, in_channels // groups)
        self.weight = Parameter(creation.empty(shape + tuple(kernel_size), device=device,
                                               dtype=dtype))
        if bias:
            self.bias = Parameter(creation.empty(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init._default_layer_init(self.weight, self.bias)

    def extra_repr(self):
        n = len(self.kernel_size)
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * n:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * n:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * n:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s

    def __setstate__(self, state):
        super().__setstate__(state)
        if not hasattr(self, "padding_mode"):
            self.padding_mode = "zeros"


def _conv_args(n, kernel_size, stride, padding, dilation):
    padding = padding if isinstance(padding, str) else _ntuple(padding, n, "padding")
    return (_ntuple(kernel_size, n), _ntuple(stride, n, "stride"), padding,
            _ntuple(dilation, n, "dilation"))


class Conv1d(_ConvNd):
    """1-d convolution over (N, C_in, L) or (C_in, L) input; ``padding`` may be an int,
    'same' or 'valid'; ``padding_mode`` 'zeros', 'reflect', 'replicate' or 'circular'.

    Example:
        >>> nn.Conv1d(4, 8, 3, padding="same")(ddp.ones(2, 4, 10)).shape
        ddp.Size([2, 8, 10])
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        k, s, p, d = _conv_args(1, kernel_size, stride, padding, dilation)
        super().__init__(in_channels, out_channels, k, s, p, d, False, (0,), groups, bias,
                         padding_mode, device, dtype)

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return _conv1d("Conv1d", input, weight, bias, self.stride, 0, self.dilation,
                           self.groups)
        return _conv1d("Conv1d", input, weight, bias, self.stride, self.padding, self.dilation,
                       self.groups)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)


class Conv2d(_ConvNd):
    """2-d convolution over (N, C_in, H, W) or (C_in, H, W) input, with stride, padding (int,
    pair, 'same' or 'valid'), dilation, groups and ``padding_mode`` 'zeros', 'reflect',
    'replicate' or 'circular'.

    Example:
        >>> m = nn.Conv2d(4, 8, 3, stride=2, groups=2, bias=False)
        >>> m.weight.shape, m(ddp.ones(1, 4, 9, 9)).shape
        (ddp.Size([8, 2, 3, 3]), ddp.Size([1, 8, 4, 4]))
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        k, s, p, d = _conv_args(2, kernel_size, stride, padding, dilation)
        super().__init__(in_channels, out_channels, k, s, p, d, False, (0, 0), groups, bias,
                         padding_mode, device, dtype)

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return _conv2d("Conv2d", input, weight, bias, self.stride, 0, self.dilation,
                           self.groups)
        return _conv2d("Conv2d", input, weight, bias, self.stride, self.padding, self.dilation,
                       self.groups)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)


class ConvTranspose2d(_ConvNd):
    """Transposed 2-d convolution (the gradient of Conv2d with respect to its input); the
    output is ``(H - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1`` high, or
    ``output_size`` when given to forward.

    Example:
        >>> m = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        >>> m.weight.shape, m(ddp.ones(1, 8, 5, 5)).shape
        (ddp.Size([8, 4, 4, 4]), ddp.Size([1, 4, 10, 10]))
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {type(self).__name__}')
        if isinstance(padding, str):
            raise ValueError(f"{type(self).__name__}: padding must be an int or a pair, got "
                             f"{padding!r}")
        k, s, p, d = _conv_args(2, kernel_size, stride, padding, dilation)
        super().__init__(in_channels, out_channels, k, s, p, d, True,
                         _ntuple(output_padding, 2, "output_padding"), groups, bias,
                         padding_mode, device, dtype)

    def forward(self, input, output_size=None):
        return _conv_transpose2d("ConvTranspose2d", input, self.weight, self.bias, self.stride,
                                 self.padding, self.output_padding, self.groups, self.dilation,
                                 output_size)


class _LazyConvXdMixin(LazyModuleMixin):
    """A convolution whose ``in_channels`` is the first input's channel dimension; it takes
    its convolution's arguments less ``in_channels``."""
    _num_spatial_dims = 0

    def __init__(self, out_channels, kernel_size, *args, device=None, dtype=None, **kwargs):
        super().__init__(0, 0, kernel_size, *args, device=device, dtype=dtype, **kwargs)
        self.weight = UninitializedParameter(device=device, dtype=dtype)
        self.out_channels = out_channels
        if self.bias is not None:
            self.bias = UninitializedParameter(device=device, dtype=dtype)

    def reset_parameters(self):
        if not self.has_uninitialized_params() and self.in_channels != 0:
            super().reset_parameters()

    def initialize_parameters(self, input, *args, **kwargs):
        """Infer ``in_channels`` from ``input`` and initialise the parameters."""
        if self.has_uninitialized_params():
            self.in_channels = self._get_in_channels(input)
            if self.in_channels % self.groups != 0:
                raise ValueError("in_channels must be divisible by groups")
            shape = (self.in_channels, self.out_channels // self.groups) if self.transposed \
                else (self.out_channels, self.in_channels // self.groups)
            with no_grad():
                self.weight.materialize(shape + tuple(self.kernel_size))
                if self.bias is not None:
                    self.bias.materialize((self.out_channels,))
                self.reset_parameters()

    def _get_in_channels(self, input):
        batched = self._num_spatial_dims + 2
        if input.ndim not in (batched - 1, batched):
            raise RuntimeError(f"Expected {batched - 1}D (unbatched) or {batched}D (batched) "
                               f"input to {type(self).__name__}, but got input of size: "
                               f"{input.shape}")
        return input.shape[1] if input.ndim == batched else input.shape[0]


class LazyConv1d(_LazyConvXdMixin, Conv1d):
    """``Conv1d`` with ``in_channels`` inferred from the first input: ``LazyConv1d(out_channels,
    kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True, padding_mode='zeros')``.

    Example:
        >>> m = nn.LazyConv1d(8, 3)
        >>> m(ddp.ones(2, 4, 10)).shape, type(m).__name__
        (ddp.Size([2, 8, 8]), 'Conv1d')
    """
    cls_to_become = Conv1d
    _num_spatial_dims = 1


class LazyConv2d(_LazyConvXdMixin, Conv2d):
    """``Conv2d`` with ``in_channels`` inferred from the first input: ``LazyConv2d(out_channels,
    kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True, padding_mode='zeros')``.

    Example:
        >>> m = nn.LazyConv2d(8, 3, padding=1)
        >>> m(ddp.ones(1, 4, 5, 5)).shape, m.weight.shape
        (ddp.Size([1, 8, 5, 5]), ddp.Size([8, 4, 3, 3]))
    """
    cls_to_become = Conv2d
    _num_spatial_dims = 2


class LazyConvTranspose2d(_LazyConvXdMixin, ConvTranspose2d):
    """``ConvTranspose2d`` with ``in_channels`` inferred from the first input:
    ``LazyConvTranspose2d(out_channels, kernel_size, stride=1, padding=0, output_padding=0,
    groups=1, bias=True, dilation=1, padding_mode='zeros')``.

    Example:
        >>> m = nn.LazyConvTranspose2d(4, 4, stride=2, padding=1)
        >>> m(ddp.ones(1, 8, 5, 5)).shape, m.weight.shape
        (ddp.Size([1, 4, 10, 10]), ddp.Size([8, 4, 4, 4]))
    """
    cls_to_become = ConvTranspose2d
    _num_spatial_dims = 2

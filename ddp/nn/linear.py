"""``Identity`` and ``Linear``.

Example:
    >>> import ddp.nn as nn
    >>> nn.Linear(4, 2)
    Linear(in_features=4, out_features=2, bias=True)
    >>> nn.Linear(4, 2)(ddp.ones(3, 4)).shape
    ddp.Size([3, 2])
"""
from __future__ import annotations


from .. import creation
from ..autograd import no_grad
from . import init
from .functional._linear import linear
from .lazy import LazyModuleMixin
from .module import Module
from .parameter import Parameter, UninitializedParameter

__all__ = ["Identity", "Linear", "LazyLinear"]


class Identity(Module):
    """Returns its input unchanged; accepts and ignores any constructor arguments.

    Example:
        >>> x = ddp.ones(2)
        >>> nn.Identity(54, unused="x")(x) is x
        True
    """

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """``y = x @ weight.T + bias`` over the last dimension of ``x``; ``weight`` is
    (out_features, in_features). Initialised as PyTorch: ``kaiming_uniform_(a=sqrt(5))`` for the
    weight and U(-1/sqrt(in_features), 1/sqrt(in_features)) for the bias.

    Example:
        >>> m = nn.Linear(3, 5, bias=False)
        >>> m.weight.shape, m.bias
        (ddp.Size([5, 3]), None)
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(creation.empty((out_features, in_features), device=device,
                                               dtype=dtype))
        if bias:
            self.bias = Parameter(creation.empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init._default_layer_init(self.weight, self.bias)

    def forward(self, input):
        if input.ndim == 0 or input.shape[-1] != self.in_features:
            raise RuntimeError(f"Linear: input's last dimension "
                               f"{input.shape[-1] if input.ndim else '(none, a 0-d input)'} does "
                               f"not match in_features={self.in_features} (input of shape "
                               f"{tuple(input.shape)})")
        return linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class LazyLinear(LazyModuleMixin, Linear):
    """A ``Linear`` whose ``in_features`` is the first input's last dimension: ``weight`` and
    ``bias`` are ``UninitializedParameter`` s until the first forward, which initialises them
    as ``Linear`` does and makes the module a ``Linear``.

    Example:
        >>> m = nn.LazyLinear(2)
        >>> _ = m(ddp.ones(5, 7))
        >>> m
        Linear(in_features=7, out_features=2, bias=True)
    """
    cls_to_become = Linear

    def __init__(self, out_features, bias=True, device=None, dtype=None):
        super().__init__(0, 0, False)   # no bias yet: it would be replaced at once
        self.weight = UninitializedParameter(device=device, dtype=dtype)
        self.out_features = out_features
        if bias:
            self.bias = UninitializedParameter(device=device, dtype=dtype)

    def reset_parameters(self):
        if not self.has_uninitialized_params() and self.in_features != 0:
            super().reset_parameters()

    def initialize_parameters(self, input):
        """Infer ``in_features`` from ``input.shape[-1]`` and initialise the parameters."""
        if self.has_uninitialized_params():
            with no_grad():
                self.in_features = input.shape[-1]
                self.weight.materialize((self.out_features, self.in_features))
                if self.bias is not None:
                    self.bias.materialize((self.out_features,))
                self.reset_parameters()
        if self.in_features == 0:   # loaded from a state_dict: the weight knows it
            if input.shape[-1] != self.weight.shape[-1]:
                raise AssertionError(f"The in_features inferred from input: {input.shape[-1]} "
                                     f"is not equal to in_features from self.weight: "
                                     f"{self.weight.shape[-1]}")
            self.in_features = input.shape[-1]

"""Flatten parameters into one vector and back: ``parameters_to_vector`` /
``vector_to_parameters``, as in ``torch.nn.utils``.

Example:
    >>> ps = [ddp.nn.Parameter(ddp.ones(2, 2)), ddp.nn.Parameter(ddp.zeros(3))]
    >>> v = ddp.nn.utils.parameters_to_vector(ps); v.shape
    ddp.Size([7])
    >>> ddp.nn.utils.vector_to_parameters(v * 2, ps); ps[0].tolist()
    [[2.0, 2.0], [2.0, 2.0]]
"""
from __future__ import annotations

from ...tensor import Tensor

__all__ = ["parameters_to_vector", "vector_to_parameters"]


def _check_param_device(param, old_param_device):
    """The device shared by all parameters so far; raises when ``param`` is elsewhere."""
    if old_param_device is None:
        return param.device
    if param.device != old_param_device:
        raise TypeError("Found two parameters on different devices, this is currently not "
                        "supported.")
    return old_param_device


def parameters_to_vector(parameters):
    """All ``parameters`` flattened and concatenated into one 1-D tensor (differentiable:
    gradients flow back to the parameters).

    Example:
        >>> ddp.nn.utils.parameters_to_vector([ddp.ones(1, 2), ddp.zeros(1)])
        tensor([1., 1., 0.])
    """
    from ..._functions import cat
    device = None
    vec = []
    for param in parameters:
        device = _check_param_device(param, device)
        vec.append(param.reshape(-1))
    return cat(vec)


def vector_to_parameters(vec, parameters):
    """Set the data of ``parameters`` from consecutive slices of the 1-D tensor ``vec``; each
    parameter becomes a view of ``vec``'s storage (``param.data = ...``, as PyTorch).

    Example:
        >>> p = ddp.nn.Parameter(ddp.zeros(2, 2))
        >>> ddp.nn.utils.vector_to_parameters(ddp.arange(4.0), [p]); p.tolist()
        [[0.0, 1.0], [2.0, 3.0]]
    """
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {type(vec).__name__}")
    device = None
    pointer = 0
    for param in parameters:
        device = _check_param_device(param, device)
        n = param.numel()
        param.data = vec._data[pointer:pointer + n].reshape(tuple(param.shape))
        pointer += n

"""``ddp.nn.utils``: gradient clipping and parameter/vector conversion, as in
``torch.nn.utils``.

Example:
    >>> import ddp.nn as nn
    >>> w = nn.Parameter(ddp.ones(3)); w.grad = ddp.full((3,), 10.0)
    >>> nn.utils.clip_grad_value_([w], 1.0); w.grad
    tensor([1., 1., 1.])
"""
from . import clip_grad, convert_parameters
from .clip_grad import (clip_grad_norm, clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_,
                        get_total_norm)
from .convert_parameters import parameters_to_vector, vector_to_parameters

__all__ = ["clip_grad_norm", "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_",
           "get_total_norm", "parameters_to_vector", "vector_to_parameters"]

"""Dropout (elementwise, 1-D and 2-D channel dropout).
"""
from __future__ import annotations

import numpy as np
from ... import backend
from ...tensor import Tensor
from ._helpers import _shape



def _dropout_mask(input, p, shape):
    """A tensor of 0 and 1/(1-p) (keep probability 1-p) of ``shape``, drawn from the default
    generator of the input's device (drawn there: no host round trip)."""
    keep = backend.random_stream(None, input.device).random(shape, dtype=np.float32) >= p
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    return Tensor._make(keep.astype(input._data.dtype) * input._data.dtype.type(scale))


def _apply_dropout(name, input, p, training, inplace, shape):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    mask = _dropout_mask(input, p, shape)
    return input.mul_(mask) if inplace else input * mask


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)`` (training
    only; in eval it returns ``input``).

    Example:
        >>> F.dropout(ddp.ones(4), 0.5, training=False)
        tensor([1., 1., 1., 1.])
    """
    return _apply_dropout("dropout", input, p, training, inplace, tuple(input.shape))


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, L) or (C, L) input with probability ``p``.

    Example:
        >>> F.dropout1d(ddp.ones(2, 3, 4), training=False).shape
        ddp.Size([2, 3, 4])
    """
    if input.ndim not in (2, 3):
        raise RuntimeError(f"dropout1d: expected 2-D (unbatched) or 3-D (batched) input, got "
                           f"input of shape {_shape(input)}")
    shape = tuple(input.shape[:-1]) + (1,)
    return _apply_dropout("dropout1d", input, p, training, inplace, shape)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels (feature maps) of (N, C, H, W) input with probability ``p``. As
    PyTorch (for now), the mask covers the first two dimensions whatever the rank, so a 3-D input
    is taken as (N, C, L).

    Example:
        >>> F.dropout2d(ddp.ones(2, 3, 4, 4), training=False).shape
        ddp.Size([2, 3, 4, 4])
    """
    if input.ndim < 2:
        raise RuntimeError(f"dropout2d: expected 4-D input (N, C, H, W), got input of shape "
                           f"{_shape(input)}")
    shape = tuple(input.shape[:2]) + (1,) * (input.ndim - 2)
    return _apply_dropout("dropout2d", input, p, training, inplace, shape)

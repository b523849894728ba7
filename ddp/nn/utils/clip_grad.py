"""Gradient clipping: ``clip_grad_norm_`` and ``clip_grad_value_``, as in ``torch.nn.utils``.

The arithmetic runs on the gradient arrays directly (no autograd recording, no host
synchronisation on the GPU unless ``error_if_nonfinite`` asks for the check).

Example:
    >>> w = ddp.nn.Parameter(ddp.ones(4))
    >>> (w * 3).sum().backward()                       # grad = [3, 3, 3, 3], norm 6
    >>> ddp.nn.utils.clip_grad_norm_([w], max_norm=1.0)
    tensor(6.)
    >>> round(float(w.grad.norm()), 4)
    1.0
"""
from __future__ import annotations

import math
import types
import warnings

from ... import backend
from ...tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_norm", "clip_grad_value_", "get_total_norm",
           "clip_grads_with_norm_"]


def _as_list(tensors):
    if isinstance(tensors, Tensor):
        return [tensors]
    return list(tensors)


def _array_norm(a, p):
    """The ``p``-norm of the flattened array ``a`` as a 0-d array of its dtype (half precision
    is accumulated in float32, as PyTorch does)."""
    xp = backend.get_array_module(a)
    out_dtype = a.dtype
    if a.dtype.itemsize < 4:
        a = a.astype(xp.float32)
    a = a.reshape(-1)
    if p == 2.0:
        r = xp.sqrt(xp.dot(a, a)) if a.size else xp.zeros((), a.dtype)
    elif p == math.inf:
        r = xp.abs(a).max() if a.size else xp.zeros((), a.dtype)
    elif p == -math.inf:
        r = xp.abs(a).min() if a.size else xp.asarray(math.inf, a.dtype)
    elif p == 0.0:
        r = (a != 0).sum().astype(a.dtype)
    elif p == 1.0:
        r = xp.abs(a).sum()
    else:
        r = (xp.abs(a) ** p).sum() ** (1.0 / p)
    return xp.asarray(r).astype(out_dtype)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The ``norm_type``-norm of all ``tensors`` together, as if concatenated into one vector
    (a 0-d tensor on the first tensor's device). ``inf`` gives the largest absolute value.

    Example:
        >>> float(ddp.nn.utils.get_total_norm([ddp.tensor([3.0]), ddp.tensor([4.0])]))
        5.0
    """
    tensors = _as_list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return _zero()
    first_device = tensors[0].device
    xp = backend.array_module_of_device(first_device)
    token = backend.silence_fp()  # an overflowing norm is inf, silently, as in PyTorch
    try:
        norms = [backend.to_device(_array_norm(t._data, norm_type), first_device)
                 for t in tensors]
        total = _array_norm(xp.stack(norms), norm_type)
    finally:
        backend.restore_fp(token)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` "
                           f"is non-finite, so it cannot be clipped. To disable this error and "
                           f"scale the gradients by the non-finite norm anyway, set "
                           f"`error_if_nonfinite=False`")
    return Tensor._make(total)


def _zero():
    from ...creation import tensor
    return tensor(0.0)


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scale the gradients of ``parameters`` by ``min(1, max_norm / (total_norm + 1e-6))``,
    given a total norm computed beforehand (e.g. by :func:`get_total_norm`).

    Example:
        >>> w = ddp.nn.Parameter(ddp.ones(2)); w.grad = ddp.tensor([3.0, 4.0])
        >>> ddp.nn.utils.clip_grads_with_norm_([w], 1.0, ddp.tensor(5.0)); w.grad
        tensor([0.6000, 0.8000])
    """
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    max_norm = float(max_norm)
    if not grads:
        return
    total = total_norm._data if isinstance(total_norm, Tensor) else total_norm
    xp = backend.get_array_module(total)
    # an inf norm scales by 0, and inf * 0 is nan (PyTorch's result), silently
    token = backend.silence_fp()
    try:
        coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
        for g in grads:
            c = backend.to_device(xp.asarray(coef), g.device)
            xg = backend.get_array_module(g._data)
            xg.multiply(g._data, c.astype(g._data.dtype), out=g._data)
            g._vc[0] += 1
    finally:
        backend.restore_fp(token)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale the gradients of ``parameters`` in place so that their total ``norm_type``-norm
    (all gradients as one vector) is at most ``max_norm``: they are multiplied by
    ``max_norm / (total_norm + 1e-6)`` when that is below 1. Returns the total norm measured
    before clipping, as a 0-d tensor. ``error_if_nonfinite=True`` raises on a nan/inf norm.

    Example:
        >>> w = ddp.nn.Parameter(ddp.zeros(2)); w.grad = ddp.tensor([3.0, -4.0])
        >>> ddp.nn.utils.clip_grad_norm_(w, 10.0, norm_type="inf")  # no clipping needed
        tensor(4.)
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    else:
        is_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)
        if is_generator and not parameters:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.",
                          stacklevel=2)
    grads = [p.grad for p in parameters if p.grad is not None]
    total_norm = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total_norm, foreach)
    return total_norm


def clip_grad_norm(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Deprecated alias of :func:`clip_grad_norm_`."""
    warnings.warn("`torch.nn.utils.clip_grad_norm` is now deprecated in favor of "
                  "`torch.nn.utils.clip_grad_norm_`.", FutureWarning, stacklevel=2)
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient of ``parameters`` to ``[-clip_value, clip_value]`` in place.

    Example:
        >>> w = ddp.nn.Parameter(ddp.zeros(2)); w.grad = ddp.tensor([3.0, -0.5])
        >>> ddp.nn.utils.clip_grad_value_(w, 1.0); w.grad
        tensor([ 1.0000, -0.5000])
    """
    clip_value = float(clip_value)
    for p in _as_list(parameters):
        g = p.grad
        if g is not None:
            xp = backend.get_array_module(g._data)
            xp.clip(g._data, -clip_value, clip_value, out=g._data)
            g._vc[0] += 1

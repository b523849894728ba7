"""``backward`` and ``grad``, the entry points to the engine: they check the outputs and the
gradients the pass starts from, run :func:`~ddp.autograd.engine.run_backward`, and hand the
results to ``.grad`` (``backward``) or back to the caller (``grad``).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from . import graph
from .engine import run_backward


def _as_tuple(x):
    if x is None:
        return ()
    if isinstance(x, graph.Tensor):
        return (x,)
    return tuple(x)


def _root_grads(outputs, grad_outputs, create_graph, name):
    """The gradient each output starts with: ones for scalars, else what the caller gave."""
    Tensor = graph.Tensor
    grads = list(_as_tuple(grad_outputs)) if grad_outputs is not None else [None] * len(outputs)
    if len(grads) != len(outputs):
        raise RuntimeError(f"{name}: got {len(grads)} gradients for {len(outputs)} outputs")
    out = []
    for i, (t, g) in enumerate(zip(outputs, grads)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: outputs must be Tensors, got {type(t).__name__}")
        if not t.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a "
                               f"grad_fn")
        if g is None:
            if t.numel() != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs (output "
                                   f"{i} has shape {tuple(t.shape)})")
            xp = backend.get_array_module(t._data)
            with backend.device_context(t.device):
                g = Tensor._make(xp.ones(t._data.shape, t._data.dtype))
        elif not isinstance(g, Tensor):  # a number or array-like: in the output's dtype/device
            g = Tensor._make(backend.to_device(np.asarray(g, dtype=t._data.dtype),
                                               t.device))
        if tuple(g.shape) != tuple(t.shape):
            raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of "
                               f"{g.shape} and output[{i}] has a shape of {t.shape}.")
        if g.device != t.device:
            raise RuntimeError(f"{name}: grad_output[{i}] is on {g.device} but output[{i}] is on "
                               f"{t.device}")
        out.append(g if create_graph else g._data)
    return out


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate gradients of ``tensors`` into the ``.grad`` of the graph's leaves (or only of
    ``inputs``).

    Example:
        >>> x = ddp.ones(3, requires_grad=True)
        >>> ddp.autograd.backward([(x * 2).sum()]); x.grad
        tensor([2., 2., 2.])
    """
    outputs = _as_tuple(tensors)
    if retain_graph is None:
        retain_graph = create_graph
    grads = _root_grads(outputs, grad_tensors, create_graph, "backward")
    if inputs is None:
        run_backward(outputs, grads, retain_graph, create_graph)
        return
    inputs = _as_tuple(inputs)
    if not inputs:
        raise RuntimeError("backward: 'inputs' argument to backward() cannot be empty.")
    captured = run_backward(outputs, grads, retain_graph, create_graph, inputs=inputs,
                            accumulate=False)
    for t, g in zip(inputs, captured):
        if g is None:
            continue
        if t.grad is None:
            t.grad = g if create_graph else g.detach().clone()
        else:
            t.grad = t.grad + g


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         only_inputs=True, allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """The gradients of ``outputs`` with respect to ``inputs``, returned (not accumulated).

    Example:
        >>> x = ddp.tensor(2.0, requires_grad=True)
        >>> ddp.autograd.grad(x * x, x)
        (tensor(4.),)
    """
    outputs = _as_tuple(outputs)
    inputs_t = _as_tuple(inputs)
    if allow_unused is None:
        allow_unused = materialize_grads
    for i, t in enumerate(inputs_t):
        if not t.requires_grad:
            raise RuntimeError(f"One of the differentiated Tensors (input {i}, shape "
                               f"{tuple(t.shape)}) does not require grad")
    if retain_graph is None:
        retain_graph = create_graph
    grads = _root_grads(outputs, grad_outputs, create_graph, "grad")
    captured = run_backward(outputs, grads, retain_graph, create_graph, inputs=inputs_t,
                            accumulate=False)
    result = []
    for i, (t, g) in enumerate(zip(inputs_t, captured)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"One of the differentiated Tensors (input {i}, shape "
                                   f"{tuple(t.shape)}) appears to not have been used in the graph. "
                                   f"Set allow_unused=True if this is the desired behavior.")
            if materialize_grads:
                xp = backend.get_array_module(t._data)
                g = graph.Tensor._make(xp.zeros(t._data.shape, t._data.dtype))
        result.append(g)
    return tuple(result)

"""Automatic differentiation: ``backward``, ``grad``, custom ``Function``, grad modes, anomaly
detection, ``gradcheck``, and the end-of-backward callback queue.

Example:
    >>> x = ddp.tensor([1.0, 2.0], requires_grad=True)
    >>> (g,) = ddp.autograd.grad((x ** 3).sum(), x, create_graph=True)
    >>> ddp.autograd.grad(g.sum(), x)[0]      # second derivative 6x
    tensor([ 6., 12.])
"""
from __future__ import annotations

from .engine import queue_callback
from .function import Function, FunctionCtx, once_differentiable
from .grad_mode import (detect_anomaly, enable_grad, inference_mode, is_anomaly_enabled,
                        is_grad_enabled, no_grad, set_detect_anomaly, set_grad_enabled)
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .gradients import backward, grad
from . import graph as _graph
from .graph import Node

__all__ = ["backward", "grad", "Function", "FunctionCtx", "once_differentiable", "no_grad",
           "enable_grad", "set_grad_enabled", "inference_mode", "detect_anomaly",
           "set_detect_anomaly", "is_grad_enabled", "is_anomaly_enabled", "gradcheck",
           "gradgradcheck", "GradcheckError", "queue_callback", "Node"]


class _ExecutionEngine:
    """``Variable._execution_engine.queue_callback`` as PyTorch spells it."""
    queue_callback = staticmethod(queue_callback)


class _VariableMeta(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, _graph.Tensor)


class Variable(metaclass=_VariableMeta):
    """PyTorch's old name for a tensor: ``Variable(t, requires_grad=False)`` is a new leaf on
    ``t``'s data (requiring grad when asked); every tensor is an instance. ``volatile`` (removed in PyTorch 0.4) is accepted and ignored, as PyTorch warns.
    ``Variable._execution_engine.queue_callback`` is the engine's callback queue.

    Example:
        >>> v = ddp.autograd.Variable(ddp.ones(2), requires_grad=True)
        >>> v.requires_grad, isinstance(ddp.ones(1), ddp.autograd.Variable)
        (True, True)
    """
    _execution_engine = _ExecutionEngine()

    def __new__(cls, data=None, requires_grad=False, volatile=False):
        if data is None:
            raise TypeError("Variable(): expected a Tensor (PyTorch's Variable() needs data "
                            "here)")
        if not isinstance(data, _graph.Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got "
                            f"{type(data).__name__}")
        out = data.detach()          # a new tensor on the same data, as PyTorch's
        return out.requires_grad_(bool(requires_grad)) if requires_grad and not volatile else out

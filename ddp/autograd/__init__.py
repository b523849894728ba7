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
from .graph import Node

__all__ = ["backward", "grad", "Function", "FunctionCtx", "once_differentiable", "no_grad",
           "enable_grad", "set_grad_enabled", "inference_mode", "detect_anomaly",
           "set_detect_anomaly", "is_grad_enabled", "is_anomaly_enabled", "gradcheck",
           "gradgradcheck", "GradcheckError", "queue_callback", "Node"]


class _ExecutionEngine:
    """``Variable._execution_engine.queue_callback`` as PyTorch spells it."""
    queue_callback = staticmethod(queue_callback)


class Variable:
    """PyTorch's old name for a tensor; kept for ``Variable._execution_engine``."""
    _execution_engine = _ExecutionEngine()

"""How parameters' gradients are reset: the one body of ``Module.zero_grad`` and
``Optimizer.zero_grad`` (PyTorch writes it twice; here both call :func:`zero_grad`).

Example:
    >>> from ddp._grads import zero_grad
    >>> w = ddp.ones(2, requires_grad=True); w.grad = ddp.ones(2)
    >>> zero_grad([w], set_to_none=False); w.grad
    tensor([0., 0.])
"""
from __future__ import annotations

__all__ = ["zero_grad"]


def zero_grad(params, set_to_none=True):
    """Reset the ``.grad`` of each tensor in ``params``: to ``None`` (the default), or to zeros
    in place, first cutting a gradient that has a history (``create_graph=True``) off its graph
    so that zeroing it does not reach back into that graph.

    Example:
        >>> w = ddp.ones(2, requires_grad=True); w.grad = ddp.ones(2)
        >>> zero_grad([w]); w.grad is None
        True
    """
    for p in params:
        grad = p.grad
        if grad is None:
            continue
        if set_to_none:
            p.grad = None
            continue
        if grad.grad_fn is not None:
            grad.detach_()
        else:
            grad.requires_grad_(False)
        grad.zero_()

"""Custom differentiable functions, PyTorch's way: subclass ``Function`` with static
``forward(ctx, ...)`` and ``backward(ctx, *grads)`` working on Tensors.

Example:
    >>> class Exp(ddp.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         y = x.exp()
    ...         ctx.save_for_backward(y)
    ...         return y
    ...     @staticmethod
    ...     def backward(ctx, g):
    ...         y, = ctx.saved_tensors
    ...         return g * y
    >>> x = ddp.zeros(2, requires_grad=True); Exp.apply(x).sum().backward(); x.grad
    tensor([1., 1.])
"""
from __future__ import annotations

import functools

from ..backend import is_float_np
from . import graph
from .grad_mode import set_grad_enabled, state as _mode
from .graph import _FREED, _FREED_MESSAGE, Node, Op


class FunctionCtx(Node):
    """The ``ctx`` of a custom Function: saves Tensors and tracks their versions."""

    def save_for_backward(self, *tensors):
        self.saved = tensors
        self._saved_src = None  # saved items are Tensors already: nothing to rebuild
        self._saved_versions = tuple(x for t in tensors if hasattr(t, "_vc")
                                     for x in (t._vc, t._vc[0], t))  # flat, as _bind_saved

    @property
    def saved_tensors(self):
        saved = self.saved
        if saved is _FREED:
            raise RuntimeError(_FREED_MESSAGE.format(self.name()))
        if self._saved_versions:
            self._check_versions()
        if self._create_graph and self._saved_src:
            return self._saved_outputs_on_graph(saved)
        return saved

    def _saved_outputs_on_graph(self, saved):
        """Saved outputs as outputs of this node, so a double backward differentiates through
        them (forward made them under no_grad, off the graph)."""
        Tensor = graph.Tensor
        out = []
        for t, src in zip(saved, self._saved_src):
            if src is not None:
                vc = t._vc
                t = Tensor._make(t._data, True, self, src)
                t._vc = vc
            out.append(t)
        return tuple(out)

    def mark_dirty(self, *tensors):
        """Tensors modified in place by forward (accepted; they are returned as outputs)."""
        self._dirty = tensors

    def name(self):
        return f"{self._fn_cls.__name__}Backward"


class _CallUserBackward(Op):
    """The op a custom Function's node runs: the user's backward, on Tensors."""

    @staticmethod
    def backward(ctx, *grads):
        Tensor = graph.Tensor
        gs = [g if g is None or isinstance(g, Tensor) else Tensor._make(g) for g in grads]
        with set_grad_enabled(ctx._create_graph):
            res = ctx._fn_cls.backward(ctx, *gs)
        if not isinstance(res, tuple):
            res = (res,)
        n = len(ctx.next_edges)
        if len(res) > n and all(r is None for r in res[n:]):
            res = res[:n]
        if len(res) != n:
            raise RuntimeError(f"function {ctx.name()} returned an incorrect number of gradients "
                               f"(expected {n}, got {len(res)})")
        out = []
        for r, edge in zip(res, ctx.next_edges):
            if r is None or edge is None:
                out.append(None)
            elif not isinstance(r, Tensor):
                raise TypeError(f"{ctx.name()}: backward must return Tensors or None, got "
                                f"{type(r).__name__}")
            else:
                out.append(r if ctx._create_graph else r._data)
        return tuple(out)


class Function:
    """Base class of custom autograd functions; call them with ``MyFunction.apply(...)``."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("You must implement the forward function for custom "
                                  "autograd.Function.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("You must implement either the backward or vjp method for your "
                                  "custom autograd.Function to use it with backward mode AD.")

    @classmethod
    def apply(cls, *args, **kwargs):
        Tensor = graph.Tensor
        record = _mode.grad_enabled and any(isinstance(a, Tensor) and a._requires_grad
                                            for a in args)
        ctx = FunctionCtx(_CallUserBackward)
        ctx._fn_cls = cls
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a._requires_grad for a in args)
        ctx._saved_versions = ()
        ctx._saved_src = None
        with set_grad_enabled(False):
            out = cls.forward(ctx, *args, **kwargs)
        if not record:
            return out
        multi = isinstance(out, tuple)
        outs = out if multi else (out,)
        ctx.next_edges = tuple(
            None if not (isinstance(a, Tensor) and a._requires_grad) else
            (a, -1, a._data.shape, a._data.dtype) if a.grad_fn is None else
            (a.grad_fn, a._output_nr, a._data.shape, a._data.dtype) for a in args)
        ctx.n_outputs = len(outs)
        ctx._output_meta = tuple((o._data.shape, o._data.dtype) if isinstance(o, Tensor) else None
                                 for o in outs)
        non_diff = ctx.__dict__.pop("_non_diff_objects", ())
        results = []
        for i, o in enumerate(outs):
            if not isinstance(o, Tensor):
                results.append(o)
            elif any(o is x for x in non_diff) or not is_float_np(o._data.dtype):
                results.append(o)
            else:
                t = Tensor._make(o._data, True, ctx, i)
                t._vc = o._vc
                results.append(t)
        if ctx.saved:  # which saved tensors are outputs (by position), for double backward
            rewrapped = {id(o): i for i, (o, r) in enumerate(zip(outs, results)) if r is not o}
            src = tuple(rewrapped.get(id(x)) for x in ctx.saved)
            ctx._saved_src = src if any(i is not None for i in src) else None
        return tuple(results) if multi else results[0]


def once_differentiable(backward):
    """Decorator for a Function's backward that cannot itself be differentiated: it runs under
    ``no_grad``, so create_graph through it records nothing."""
    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        with set_grad_enabled(False):
            return backward(ctx, *grads)
    return wrapper

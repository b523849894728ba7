"""NumPy's names over Tensors: the ``xp`` that backward formulas see under ``create_graph``.

Backward formulas are written once with ``ctx.xp.<name>``; normally ``xp`` is NumPy or CuPy and
they run on arrays, and when the backward pass is itself recorded (higher-order gradients) it
is this module and the same formulas build a differentiable graph.
"""
from __future__ import annotations


def where(cond, a, b):
    from ..tensor import where as _where
    return _where(cond, a, b)


def log(x):
    return x.log()


def exp(x):
    return x.exp()


def sqrt(x):
    return x.sqrt()


def sin(x):
    return x.sin()


def cos(x):
    return x.cos()


def sign(x):
    return x.sign()


def floor(x):
    return x.floor()


def transpose(x, axes):
    return x.permute(*axes)


def swapaxes(x, a, b):
    return x.transpose(a, b)


def expand_dims(x, axis):
    return x.unsqueeze(axis)


def matmul(a, b):
    return a @ b


def concatenate(xs, axis=0):
    from .._functions import cat
    return cat(xs, axis)


def stack(xs, axis=0):
    from .._functions import stack as _stack
    return _stack(xs, axis)

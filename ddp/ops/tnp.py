"""NumPy's names over Tensors: the ``xp`` that backward formulas see under ``create_graph``.

Backward formulas are written once with ``ctx.xp.<name>``; normally ``xp`` is NumPy or CuPy and
they run on arrays, and when the backward pass is itself recorded (higher-order gradients) it
is this module and the same formulas build a differentiable graph.
"""
from __future__ import annotations

from .elementwise import where
from .reduction import normalize_axis
from .shape import Concat, Stack

__all__ = ["where", "log", "exp", "sqrt", "sin", "cos", "sign", "floor", "transpose", "swapaxes",
           "expand_dims", "matmul", "concatenate", "stack", "flip", "cumsum"]


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
    return Concat.apply(*xs, axis=normalize_axis(axis, xs[0].ndim)[0])


def stack(xs, axis=0):
    return Stack.apply(*xs, axis=normalize_axis(axis, xs[0].ndim + 1)[0])


def flip(x, axis):
    return x.flip(axis)


def cumsum(x, axis):
    return x.cumsum(axis)

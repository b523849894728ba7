"""Elementwise primitives with their gradients, and the operand promotion of binary operators.

Each backward uses ``ctx.xp``: NumPy/CuPy normally, ``ddp.ops.tnp`` under create_graph, so
these formulas also give higher-order gradients.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from .. import creation
from .. import kernels
from ..kernels import elementwise as _kernels
from ..autograd import graph
from ..autograd.graph import Op


# --------------------------------------------------------------------------- operand handling

def as_operand(x, like):
    """A Tensor for array-likes, and Python numbers unchanged (NumPy treats them as weak)."""
    Tensor = graph.Tensor
    if isinstance(x, Tensor) or isinstance(x, (bool, numbers.Number)) and not isinstance(x, np.generic):
        return x
    return creation.tensor(x, device=like.device)


def promote(name, a, b):
    """Operands of ``a <name> b`` cast to one dtype by PyTorch's rules; device mismatch raises.

    A Python number never widens a tensor of its category (``float32 * 2.5`` stays float32);
    a float number with an integer tensor gives the default float dtype; a 0-dim tensor yields to
    a dimensioned one of the same category.
    """
    Tensor = graph.Tensor
    a_t, b_t = isinstance(a, Tensor), isinstance(b, Tensor)
    if not a_t:
        a = as_operand(a, b)
        a_t = isinstance(a, Tensor)
    if not b_t:
        b = as_operand(b, a)
        b_t = isinstance(b, Tensor)
    if a_t and b_t:
        da, db = a._data, b._data
        if type(da) is not type(db) or (da.__class__ is not np.ndarray and da.device != db.device):
            raise RuntimeError(f"{name}: expected all tensors to be on the same device, but found "
                               f"at least two devices, {a.device} and {b.device} (shapes "
                               f"{tuple(a.shape)} and {tuple(b.shape)})")
        ta, tb = da.dtype, db.dtype
        if ta != tb:
            fa, fb = backend.is_float_np(ta), backend.is_float_np(tb)
            if fa == fb and da.ndim == 0 and db.ndim:
                a = a.to(backend.from_numpy_dtype(tb))
            elif fa == fb and db.ndim == 0 and da.ndim:
                b = b.to(backend.from_numpy_dtype(ta))
            else:
                r = backend.from_numpy_dtype(backend.promote_types(ta, tb))
                if ta != r.np:
                    a = a.to(r)
                if tb != r.np:
                    b = b.to(r)
        return a, b
    t, s = (a, b) if a_t else (b, a)
    kind = t._data.dtype.kind
    if isinstance(s, bool):
        pass  # a Python bool never widens a tensor
    elif isinstance(s, numbers.Integral):
        if kind == "b":
            t = t.to(backend.int64)
    elif isinstance(s, numbers.Real):
        if kind in "biu":
            t = t.to(backend.get_default_dtype())
        s = float(s)
    else:
        raise TypeError(f"{name}: unsupported operand type {type(s).__name__}")
    if t._data.dtype.kind == "V":  # ml_dtypes' bfloat16 widens with a Python number; PyTorch's not
        s = backend.get_array_module(t._data).asarray(s, dtype=t._data.dtype)
    return (t, s) if a_t else (s, t)


def _shape_error(name, a, b, exc):
    sa = tuple(getattr(a, "shape", ()))
    sb = tuple(getattr(b, "shape", ()))
    return RuntimeError(f"{name}: the size of tensor a {sa} must match the size of tensor b {sb} "
                        f"at non-singleton dimensions (they cannot be broadcast together)")


def binary(op, name, a, b):
    """Apply a binary primitive after promotion, with shape errors naming the op and shapes."""
    a, b = promote(name, a, b)
    try:
        return op.apply(a, b)
    except ValueError as exc:
        if "broadcast" in str(exc):
            raise _shape_error(name, a, b, exc) from None
        raise


_NO_KWARGS: dict = {}


def operator(op, name, reflected=False):
    """The Tensor method ``self <op> other`` (``other <op> self`` when ``reflected``).

    Operands that promotion would leave as they are — two NumPy-backed tensors of one dtype, or
    a float tensor and a Python float or int (NumPy keeps the tensor's dtype) — go straight to
    ``graph.apply``, the rest through :func:`binary`: an operator is the commonest op, and
    promotion and one call level are a tenth of its cost on small tensors.
    """
    def method(self, other):
        da = self._data
        if da.__class__ is np.ndarray:
            if isinstance(other, graph.Tensor):
                db = other._data
                fast = db.__class__ is np.ndarray and da.dtype is db.dtype
            else:
                fast = (other.__class__ is float or other.__class__ is int) and \
                    da.dtype.kind == "f"
            if fast:
                try:
                    return graph.apply(op, (other, self) if reflected else (self, other),
                                       _NO_KWARGS)
                except ValueError:
                    pass  # binary raises the error that names the shapes
        return binary(op, name, other, self) if reflected else binary(op, name, self, other)
    method.__name__ = method.__qualname__ = f"__{'r' if reflected else ''}{name}__"
    return method


def unary(op, float_input=True):
    """The Tensor method ``self.<op>()`` of a one-input primitive, straight to ``graph.apply``
    (``Op.apply`` would pack the arguments again and add a call level: a fifth of the cost of
    ``tanh`` on a small tensor). ``float_input``: a math function, which takes an integer tensor
    as the default float dtype (``Tensor._float_input``).
    """
    def method(self):
        if float_input and self._data.dtype.kind != "f":
            self = self._float_input()
        return graph.apply(op, (self,), _NO_KWARGS)
    method.__name__ = method.__qualname__ = op.__name__.lower()
    return method


def compare(ufunc, name, a, b):
    """A comparison or logical operator: no gradient, a bool (or integer) result."""
    a, b = promote(name, a, b)
    Tensor = graph.Tensor
    xa = a._data if isinstance(a, Tensor) else a
    xb = b._data if isinstance(b, Tensor) else b
    xp = backend.get_array_module(xa, xb)
    try:
        return Tensor._make(getattr(xp, ufunc)(xa, xb))
    except ValueError as exc:
        raise _shape_error(name, a, b, exc) from None


# --------------------------------------------------------------------------- binary primitives

class Add(Op):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Op):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)


class Mul(Op):
    fresh_grads = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (g * b if need_a else None), (g * a if need_b else None)


class Div(Op):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (g / b if need_a else None), (-g * a / (b * b) if need_b else None)


class Pow(Op):
    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        if not hasattr(a, "dtype"):  # a number base (2 ** x): an array, so backward's where works
            a = backend.get_array_module(b).asarray(a, dtype=out.dtype)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        xp = ctx.xp
        need_a, need_b = ctx.needs_input_grad
        ga = gb = None
        if need_a:
            # d/da a**b = b * a**(b-1); where b == 0 it is 0 even at a == 0 (PyTorch's choice).
            # A number exponent (x ** 2) decides on the host: cupy.where refuses a bool condition.
            if not hasattr(b, "shape"):
                ga = g * 0.0 if b == 0 else g * (b * a ** (b - 1))
            else:
                ga = g * xp.where(b == 0, 0.0, b * a ** (b - 1))
        if need_b:
            # d/db a**b = a**b * log(a); defined as 0 where a == 0 and b >= 0
            ga_safe = xp.where(a == 0, 1.0, a)
            gb = g * xp.where((a == 0) & (b >= 0), 0.0, out * xp.log(ga_safe))
        return ga, gb


class Maximum(Op):
    @staticmethod
    def forward(ctx, a, b):
        xp = backend.get_array_module(a, b)
        ctx.save_for_backward(a, b)
        return xp.maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        share = ctx.xp.where(a == b, 0.5, (a > b) * 1.0)  # ties split the gradient, as PyTorch
        return g * share, g * (1.0 - share)


class Minimum(Op):
    @staticmethod
    def forward(ctx, a, b):
        xp = backend.get_array_module(a, b)
        ctx.save_for_backward(a, b)
        return xp.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        share = ctx.xp.where(a == b, 0.5, (a < b) * 1.0)
        return g * share, g * (1.0 - share)


class Remainder(Op):
    """Python's ``%`` (the result takes the divisor's sign), as ``torch.remainder``."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return backend.get_array_module(a, b).remainder(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        gb = -g * ctx.xp.floor(a / b) if ctx.needs_input_grad[1] else None
        return g, gb


class FloorDivide(Op):
    """``a // b``; its gradient is zero almost everywhere."""

    @staticmethod
    def forward(ctx, a, b):
        return backend.get_array_module(a, b).floor_divide(a, b)

    @staticmethod
    def backward(ctx, g):
        z = g * 0.0
        return z, z


# --------------------------------------------------------------------------- unary primitives

class Neg(Op):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Op):
    @staticmethod
    def forward(ctx, a):
        out = backend.get_array_module(a).exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        out, = ctx.saved_tensors
        return g * out


class Log(Op):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return backend.get_array_module(a).log(a)

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        return g / a


class Log1p(Op):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return backend.get_array_module(a).log1p(a)

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        return g / (a + 1)


class Expm1(Op):
    @staticmethod
    def forward(ctx, a):
        out = backend.get_array_module(a).expm1(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        out, = ctx.saved_tensors
        return g * (out + 1)


class Sqrt(Op):
    @staticmethod
    def forward(ctx, a):
        out = backend.get_array_module(a).sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        out, = ctx.saved_tensors
        return g / (2 * out)


class Rsqrt(Op):
    @staticmethod
    def forward(ctx, a):
        out = 1 / backend.get_array_module(a).sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        out, = ctx.saved_tensors
        return -0.5 * g * out * out * out


class Reciprocal(Op):
    @staticmethod
    def forward(ctx, a):
        out = 1 / a
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        out, = ctx.saved_tensors
        return -g * out * out


class Abs(Op):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return abs(a)

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        return g * ctx.xp.sign(a)


class Sin(Op):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return backend.get_array_module(a).sin(a)

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        return g * ctx.xp.cos(a)


class Cos(Op):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return backend.get_array_module(a).cos(a)

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        return -g * ctx.xp.sin(a)


class Tanh(Op):
    @staticmethod
    def forward(ctx, a):
        out = backend.get_array_module(a).tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        out, = ctx.saved_tensors
        return g * (1 - out * out)


class Sigmoid(Op):
    @staticmethod
    def forward(ctx, a):
        xp = backend.get_array_module(a)
        # exp of -|a| never overflows; the two branches are the same function
        e = xp.exp(-abs(a))
        out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        out, = ctx.saved_tensors
        return g * out * (1 - out)


class Relu(Op):
    """``max(a, 0)``. On the CPU (float32/float64, contiguous) forward and backward are the
    one-pass loops of ddp.kernels.elementwise ((128, 16, 28, 28) float32: forward 0.77 -> 0.47
    ms, backward 1.39 -> 0.71); both paths' backward is PyTorch's where a NaN or an infinity
    is involved. Backward keeps only where the output is at most 0: a bool an element, a
    quarter of a float32 output's bytes, and all that remains of the output when the next op
    saves none of it (the fused max pooling: the small CNN's step peaks 24.9 -> 20.1 MiB)."""

    @staticmethod
    def forward(ctx, a):
        xp = backend.get_array_module(a)
        if kernels.fits(a):
            if not ctx.needs_input_grad:
                return _kernels.relu_forward(a)
            out, zeroed = _kernels.relu_forward(a, for_backward=True)
            ctx.save_for_backward(zeroed)
            return out
        if a.dtype.kind == "f" and a.size >= 3072:
            # against an array of zeros, not the scalar 0: NumPy's maximum with a scalar
            # operand runs ~2x slower ((128, 16, 28, 28) float32: 1.21 -> 0.60 ms); below ~3,000
            # elements the zeros cost more than that saves (16x16: 1.6 -> 2.8 us)
            out = xp.zeros_like(a)
            xp.maximum(a, out, out=out)
        else:
            out = xp.maximum(a, 0)
        if ctx.needs_input_grad:
            ctx.save_for_backward(out <= 0)
        return out

    @staticmethod
    def backward(ctx, g):
        zeroed, = ctx.saved_tensors
        if kernels.fits(g) and g.shape == zeroed.shape and zeroed.flags.c_contiguous:
            return _kernels.relu_backward(g, zeroed)
        # PyTorch's threshold_backward: 0 where the output is at most 0, else g (not
        # g * (out > 0): a NaN output passes g, and an infinite g there gives 0, not NaN)
        return ctx.xp.where(zeroed, 0, g)


class Clamp(Op):
    """Clamp to ``[lo, hi]`` (either may be None); the gradient passes where lo <= a <= hi."""

    @staticmethod
    def forward(ctx, a, lo=None, hi=None):
        ctx.save_for_backward(a)
        ctx.lo, ctx.hi = lo, hi
        xp = backend.get_array_module(a)
        out = a
        if lo is not None:
            out = xp.maximum(out, lo)
        if hi is not None:
            out = xp.minimum(out, hi)
        return out.astype(a.dtype, copy=False) if out is not a else a.copy()

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        keep = None
        if ctx.lo is not None:
            keep = a >= ctx.lo
        if ctx.hi is not None:
            keep = (a <= ctx.hi) if keep is None else keep & (a <= ctx.hi)
        return g if keep is None else g * keep


class ZeroGrad(Op):
    """Piecewise-constant functions (sign, floor, ceil, round, trunc): zero gradient."""
    fns = {"sign", "floor", "ceil", "round", "trunc"}

    @staticmethod
    def forward(ctx, a, fn="sign", decimals=0):
        xp = backend.get_array_module(a)
        if fn == "round":
            return xp.round(a, decimals)
        return getattr(xp, fn)(a)

    @staticmethod
    def backward(ctx, g):
        return g * 0


class Where(Op):
    """``where(cond, a, b)``: the condition is a plain (non-differentiable) array."""

    @staticmethod
    def forward(ctx, a, b, cond=None):
        ctx.cond = cond
        return backend.get_array_module(a, b, cond).where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        xp, cond = ctx.xp, ctx.cond
        need_a, need_b = ctx.needs_input_grad
        return (xp.where(cond, g, 0.0) if need_a else None), (xp.where(cond, 0.0, g) if need_b else None)


def where(condition, input=None, other=None):
    """``input`` where ``condition`` is True, ``other`` elsewhere (either may be a number).

    Example:
        >>> ddp.where(ddp.tensor([True, False]), 1.0, ddp.zeros(2))
        tensor([1., 0.])
    """
    if input is None and other is None:
        return condition.nonzero(as_tuple=True)
    cond = condition._data if isinstance(condition, graph.Tensor) else condition
    if not hasattr(cond, "dtype"):
        cond = np.asarray(cond)
    if cond.dtype != np.bool_:
        cond = cond.astype(bool)
    if not isinstance(input, graph.Tensor) and not isinstance(other, graph.Tensor):
        # two numbers: a 0-dim tensor of the number's default dtype
        input = creation.tensor(input, device=backend.device_of(cond))
    a, b = promote("where", input, other)
    try:
        return Where.apply(a, b, cond=cond)
    except ValueError:
        shapes = [tuple(getattr(x, "shape", ())) for x in (condition, input, other)]
        raise RuntimeError(f"where: the shapes of condition {shapes[0]}, input {shapes[1]} and "
                           f"other {shapes[2]} cannot be broadcast together") from None


class Cast(Op):
    """A dtype conversion; the engine casts the gradient back to the input's dtype."""

    @staticmethod
    def forward(ctx, a, dtype=None):
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g


class Clone(Op):
    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, g):
        return g

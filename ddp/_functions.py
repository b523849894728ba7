"""The ``ddp.<name>(tensor, ...)`` functions: joins (cat, stack), and the functional form of
every Tensor method (``ddp.exp(x)`` is ``x.exp()``).

Example:
    >>> ddp.cat([ddp.zeros(1, 2), ddp.ones(1, 2)]).shape
    ddp.Size([2, 2])
"""
from __future__ import annotations

from . import backend
from .ops import matrix as M
from .ops import reduction as R
from .ops import shape as S
from .tensor import Tensor


def _joinable(name, tensors):
    """Tensors to join: one dtype (PyTorch's promotion), one device, checked and named."""
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError(f"{name}(): expected a non-empty list of Tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}(): expected a sequence of Tensors, but element {i} is "
                            f"{type(t).__name__}")
    devices = {str(t.device) for t in tensors}
    if len(devices) > 1:
        raise RuntimeError(f"{name}(): expected all tensors to be on the same device, but found "
                           f"{sorted(devices)}")
    dt = tensors[0]._data.dtype
    for t in tensors[1:]:
        dt = backend.promote_types(dt, t._data.dtype)
    target = backend.from_numpy_dtype(dt)
    return [t if t._data.dtype == dt else t.to(target) for t in tensors]


def cat(tensors, dim=0, out=None):
    """Join tensors along an existing dimension.

    Example:
        >>> ddp.cat([ddp.ones(2), ddp.zeros(1)])
        tensor([1., 1., 0.])
    """
    tensors = _joinable("cat", tensors)
    tensors = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or tensors[:1]
    ref = tensors[0]
    for i, t in enumerate(tensors):
        if t.ndim == 0:
            raise RuntimeError(f"zero-dimensional tensor (at position {i}) cannot be concatenated")
    d = R.normalize_axis(dim, ref.ndim)[0]
    for i, t in enumerate(tensors):
        if t.ndim != ref.ndim:
            raise RuntimeError(f"cat(): Tensors must have same number of dimensions: got "
                               f"{ref.ndim} and {t.ndim} (shapes {tuple(ref.shape)} and "
                               f"{tuple(t.shape)}, tensor {i})")
        for k in range(ref.ndim):
            if k != d and t.shape[k] != ref.shape[k]:
                raise RuntimeError(f"cat(): Sizes of tensors must match except in dimension {d}. "
                                   f"Expected size {ref.shape[k]} but got size {t.shape[k]} for "
                                   f"tensor number {i} in the list (shapes {tuple(ref.shape)} and "
                                   f"{tuple(t.shape)})")
    return S.Concat.apply(*tensors, axis=d)


concatenate = concat = cat


def stack(tensors, dim=0, out=None):
    """Join tensors of one shape along a new dimension.

    Example:
        >>> ddp.stack([ddp.ones(2), ddp.zeros(2)], dim=1).shape
        ddp.Size([2, 2])
    """
    tensors = _joinable("stack", tensors)
    ref = tensors[0]
    for i, t in enumerate(tensors):
        if t.shape != ref.shape:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got "
                               f"{list(ref.shape)} at entry 0 and {list(t.shape)} at entry {i}")
    d = R.normalize_axis(dim, ref.ndim + 1)[0]
    return S.Stack.apply(*tensors, axis=d)


def hstack(tensors):
    return cat(tensors, 0 if tensors[0].ndim == 1 else 1)


def vstack(tensors):
    return cat([t.reshape(1, -1) if t.ndim == 1 else t for t in tensors], 0)


def broadcast_tensors(*tensors):
    xp = backend.get_array_module(*[t._data for t in tensors])
    shape = xp.broadcast_shapes(*[t._data.shape for t in tensors])
    return tuple(t.expand(shape) for t in tensors)


def broadcast_shapes(*shapes):
    import numpy as np
    from .tensor import Size
    return Size(np.broadcast_shapes(*shapes))


# Functional forms of Tensor methods: ddp.exp(x) == x.exp(), ddp.sum(x, 1) == x.sum(1), ...
_METHODS = """exp log log2 log10 log1p expm1 sqrt rsqrt reciprocal square abs absolute neg negative
sin cos tan tanh sigmoid relu clamp clip clamp_min clamp_max sign sgn floor ceil trunc fix round
frac sum nansum mean var std amax amin argmax argmin prod norm logsumexp softmax log_softmax all
any count_nonzero cumsum reshape flatten unflatten squeeze unsqueeze permute transpose swapaxes
swapdims t repeat_interleave split chunk unbind narrow flip roll gather take_along_dim
scatter scatter_add index_select index_add masked_fill masked_select nonzero argsort sort topk
unique add sub subtract mul multiply div divide true_divide floor_divide remainder fmod pow
maximum minimum lerp addcmul addcdiv dot eq ne lt le gt ge greater less greater_equal less_equal
not_equal equal logical_not logical_and logical_or isnan isinf isfinite allclose clone detach
numel is_floating_point diag diag_embed diagonal triu tril trace outer ger kthvalue
nan_to_num tensor_split bincount""".split()


def _functional(name):
    method = getattr(Tensor, name, None)
    if method is None:
        return None

    def fn(input, *args, **kwargs):
        if not isinstance(input, Tensor) and args and isinstance(args[0], Tensor):
            return _number_first(name, input, *args, **kwargs)
        return getattr(input, name)(*args, **kwargs)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (f"``ddp.{name}(input, ...)`` is ``input.{name}(...)``.\n\n"
                  f"Example:\n    >>> ddp.{name}  # doctest: +ELLIPSIS\n    <function {name} ...>\n\n"
                  + (method.__doc__ or ""))
    return fn


# ``ddp.sub(1.0, x)``, ``ddp.pow(2, x)``: a number first runs the Tensor's reflected operator
_REFLECTED = {"add": "__radd__", "sub": "__rsub__", "subtract": "__rsub__", "mul": "__rmul__",
              "multiply": "__rmul__", "div": "__rtruediv__", "divide": "__rtruediv__",
              "true_divide": "__rtruediv__", "floor_divide": "__rfloordiv__",
              "remainder": "__rmod__", "pow": "__rpow__"}


def _number_first(name, number, other, *args, alpha=1, rounding_mode=None, **kwargs):
    if name not in _REFLECTED or args or kwargs:
        raise TypeError(f"{name}(): argument 'input' must be Tensor, not {type(number).__name__}")
    if alpha != 1:
        other = other * alpha
    if rounding_mode == "floor":
        return other.__rfloordiv__(number)
    if rounding_mode is not None:
        from .creation import tensor
        return tensor(number, device=other.device).div(other, rounding_mode=rounding_mode)
    return getattr(other, _REFLECTED[name])(number)


FUNCTIONS = {n: f for n in _METHODS if (f := _functional(n)) is not None}


def einsum(equation, *operands):
    """Sum of products over the subscripts of ``equation`` (``'ij,jk->ik'``; ``...`` for
    broadcast dimensions; no ``->``: the letters that appear once, alphabetically), with
    gradients to every operand.

    Example:
        >>> a, b = ddp.ones(2, 3), ddp.ones(3, 4)
        >>> ddp.einsum("ij,jk->ik", a, b).shape, ddp.einsum("ij->", a).item()
        (ddp.Size([2, 4]), 6.0)
    """
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    operands = _joinable("einsum", operands)
    subs, out = M.parse_einsum(equation, [tuple(t.shape) for t in operands])
    return M.Einsum.apply(*operands, subs=subs, out=out)


def meshgrid(*tensors, indexing=None):
    """Coordinate grids from 1-D tensors: ``indexing='ij'`` (the default, as PyTorch's)
    gives shapes ``(len(t0), len(t1), ...)``, ``'xy'`` swaps the first two. Each grid is an
    expanded view, so gradients reach the inputs.

    Example:
        >>> x, y = ddp.meshgrid(ddp.arange(2), ddp.arange(3), indexing="ij")
        >>> x.shape, y[1].tolist()
        (ddp.Size([2, 3]), [0, 1, 2])
    """
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    indexing = "ij" if indexing is None else indexing
    if indexing not in ("ij", "xy"):
        raise ValueError(f"torch.meshgrid: indexing must be one of \"xy\" or \"ij\", but received: "
                         f"{indexing}")
    for i, t in enumerate(tensors):
        if t.ndim > 1:
            raise RuntimeError(f"torch.meshgrid: Expected 0D or 1D tensor in the tensor list but "
                               f"got: {t.ndim}D (tensor {i})")
    flat = [t.reshape(-1) for t in tensors]
    swap = indexing == "xy" and len(flat) >= 2
    if swap:
        flat[0], flat[1] = flat[1], flat[0]
    shape = tuple(t.shape[0] for t in flat)
    grids = []
    for i, t in enumerate(flat):
        view = [1] * len(flat)
        view[i] = -1
        grids.append(t.reshape(view).expand(*shape))
    if swap:
        grids[0], grids[1] = grids[1], grids[0]
    return tuple(grids)


def cdist(x1, x2, p=2.0, compute_mode=None):
    """p-norm distances between the rows of ``x1`` (..., P, M) and ``x2`` (..., R, M)."""
    if x1.ndim < 2 or x2.ndim < 2 or x1.shape[-1] != x2.shape[-1]:
        raise RuntimeError(f"cdist only supports at least 2D tensors with the same last "
                           f"dimension, got X1 {list(x1.shape)} and X2 {list(x2.shape)}")
    diff = (x1.unsqueeze(-2) - x2.unsqueeze(-3)).abs()
    if p == 2:
        return diff.pow(2).sum(-1).sqrt()
    if p == float("inf"):
        return diff.amax(-1)
    if p == 0:
        return (diff != 0).to(x1.dtype).sum(-1)
    return diff.pow(p).sum(-1).pow(1.0 / p)


def max(input, dim=None, keepdim=False, out=None):
    """``ddp.max(x)``, ``ddp.max(x, dim)`` → (values, indices), or ``ddp.max(x, other)``."""
    return input.max(dim, keepdim)


def min(input, dim=None, keepdim=False, out=None):
    """``ddp.min(x)``, ``ddp.min(x, dim)`` → (values, indices), or ``ddp.min(x, other)``."""
    return input.min(dim, keepdim)


def is_tensor(obj):
    """True for ddp tensors (and Parameters)."""
    return isinstance(obj, Tensor)


def numel(input):
    return input.numel()

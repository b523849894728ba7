"""Autocast regions: ``ddp.autocast`` (``torch.autocast``) and the functions that read and set
the autocast state. Inside a region, listed ops run in a lower-precision dtype
(``float16``/``bfloat16``) and numerically sensitive ones in ``float32``; the policies and the
hook every listed op wears live in :mod:`ddp.ops.autocast`.

Example:
    >>> lin = ddp.nn.Linear(4, 3)
    >>> with ddp.autocast("cpu", dtype=ddp.bfloat16):
    ...     y = lin(ddp.randn(2, 4))
    ...     p = y.softmax(-1)
    >>> y.dtype, p.dtype, lin.weight.dtype
    (ddp.bfloat16, ddp.bfloat16, ddp.float32)
"""
from __future__ import annotations

import functools
import warnings

import numpy as np

from .. import backend
from ..autograd import graph
from ..ops import autocast as _hook
from ..ops.autocast import _DEVICE_TYPES, _as_dtype, _map_args, state

__all__ = ["autocast", "is_autocast_enabled", "get_autocast_dtype", "set_autocast_enabled",
           "set_autocast_dtype", "is_autocast_cache_enabled", "set_autocast_cache_enabled",
           "clear_autocast_cache", "autocast_increment_nesting", "autocast_decrement_nesting",
           "is_autocast_cpu_enabled", "get_autocast_cpu_dtype", "get_autocast_gpu_dtype",
           "is_autocast_available"]


def _check_device(device_type):
    if device_type not in _DEVICE_TYPES:
        raise RuntimeError(f"User specified an unsupported autocast device_type '{device_type}'")


def _refresh():
    state.on = state.enabled["cpu"] or state.enabled["cuda"]


def is_autocast_available(device_type: str) -> bool:
    """Whether autocast supports ``device_type`` ('cpu' and 'cuda')."""
    return device_type in _DEVICE_TYPES


def is_autocast_enabled(device_type: str | None = None) -> bool:
    """Whether autocast is on for ``device_type`` in this thread (no argument: 'cuda', as
    PyTorch's legacy form).

    Example:
        >>> with ddp.autocast("cpu"):
        ...     ddp.is_autocast_enabled("cpu")
        True
    """
    device_type = "cuda" if device_type is None else device_type
    _check_device(device_type)
    return state.enabled[device_type]


def get_autocast_dtype(device_type: str):
    """The dtype lower-precision ops use under autocast on ``device_type`` (bfloat16 on 'cpu' and
    float16 on 'cuda' unless an enclosing region chose another).

    Example:
        >>> ddp.get_autocast_dtype("cpu")
        ddp.bfloat16
    """
    _check_device(device_type)
    return state.dtype[device_type]


def set_autocast_enabled(device_type, enabled=None):
    """Turn autocast on or off for ``device_type`` (``set_autocast_enabled(flag)``: 'cuda').
    Prefer the :class:`autocast` context manager, which restores the previous state.

    Example:
        >>> ddp.set_autocast_enabled("cpu", True); ddp.set_autocast_enabled("cpu", False)
    """
    if enabled is None:
        device_type, enabled = "cuda", device_type
    _check_device(device_type)
    state.enabled[device_type] = bool(enabled)
    _refresh()


def set_autocast_dtype(device_type: str, dtype) -> None:
    """Set the lower-precision dtype of ``device_type``'s autocast.

    Example:
        >>> ddp.set_autocast_dtype("cpu", ddp.bfloat16)
    """
    _check_device(device_type)
    state.dtype[device_type] = _as_dtype(dtype)


def is_autocast_cache_enabled() -> bool:
    """Whether casts of parameters are cached within an autocast region (default True)."""
    return state.cache_enabled


def set_autocast_cache_enabled(enabled: bool) -> None:
    """Enable or disable the autocast weight-cast cache."""
    state.cache_enabled = bool(enabled)


def clear_autocast_cache() -> None:
    """Drop the cached casts (done when the outermost autocast region exits)."""
    state.cache.clear()


def autocast_increment_nesting() -> int:
    state.nesting += 1
    return state.nesting


def autocast_decrement_nesting() -> int:
    state.nesting -= 1
    return state.nesting


def is_autocast_cpu_enabled() -> bool:
    return state.enabled["cpu"]


def get_autocast_cpu_dtype():
    return state.dtype["cpu"]


def get_autocast_gpu_dtype():
    return state.dtype["cuda"]


# ------------------------------------------------------------------------ the context manager

class autocast:
    """Context manager / decorator: inside, listed ops on ``device_type`` tensors run in
    ``dtype`` (default: bfloat16 for 'cpu', float16 for 'cuda') or in float32 by PyTorch's
    op lists (see the module docstring). Regions nest, ``enabled=False`` turns autocast off
    inside an enabled region, and the state is per thread. Wrap only the forward pass and the
    loss, then call ``backward()`` outside.

    Like PyTorch, ``device_type='cuda'`` without a usable GPU warns and disables itself, and
    ``cache_enabled`` (default True) caches the cast of each float32 parameter for the
    region, so a weight used at every time step of an RNN is cast once.

    Example:
        >>> model = ddp.nn.Linear(8, 2)
        >>> with ddp.autocast("cpu", dtype=ddp.bfloat16):
        ...     out = model(ddp.randn(4, 8))
        ...     with ddp.autocast("cpu", enabled=False):
        ...         full = model(ddp.randn(4, 8))
        >>> out.dtype, full.dtype
        (ddp.bfloat16, ddp.float32)
        >>> @ddp.autocast("cpu")
        ... def forward(x):
        ...     return model(x)
        >>> forward(ddp.randn(1, 8)).dtype
        ddp.bfloat16
    """

    def __init__(self, device_type: str, dtype=None, enabled: bool = True,
                 cache_enabled: bool | None = None):
        if not isinstance(device_type, str):
            raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
        _check_device(device_type)
        self.device = device_type
        self.fast_dtype = get_autocast_dtype(device_type) if dtype is None else _as_dtype(dtype)
        self._cache_enabled = is_autocast_cache_enabled() if cache_enabled is None \
            else bool(cache_enabled)
        enabled = bool(enabled)
        if enabled:
            if device_type == "cuda" and not backend.cuda_is_available():
                warnings.warn("CUDA is not available. Disabling autocast.", stacklevel=2)
                enabled = False
            elif self.fast_dtype not in (backend.bfloat16, backend.float16):
                warnings.warn(f"In {device_type.upper()} autocast, but the target dtype is not "
                              f"supported. Disabling autocast.\n{device_type.upper()} Autocast "
                              f"only supports dtypes of ddp.bfloat16, ddp.float16 currently.",
                              stacklevel=2)
                enabled = False
        self._enabled = enabled

    def __enter__(self):
        st, dev = state, self.device
        # saved per thread, in a stack: one instance may be entered again (a decorated function
        # that recurses) or from several threads
        st.saved.append((dev, st.enabled[dev], st.dtype[dev], st.cache_enabled, st.on))
        st.enabled[dev] = self._enabled
        st.dtype[dev] = self.fast_dtype
        st.cache_enabled = self._cache_enabled
        st.nesting += 1
        _refresh()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        st = state
        st.nesting -= 1
        if st.nesting == 0:  # leaving the outermost region: drop the cached weight casts
            st.cache.clear()
        dev, st.enabled[dev], st.dtype[dev], st.cache_enabled, st.on = st.saved.pop()
        return False

    def __call__(self, func):
        if not callable(func):
            raise TypeError(f"autocast()(func) requires a callable, but got "
                            f"{type(func).__name__}. Did you mean to use autocast as a context "
                            f"manager? For example:\n    with ddp.autocast(device_type=...):\n"
                            f"        output = model(input)")

        @functools.wraps(func)
        def decorate_autocast(*args, **kwargs):
            with self:
                return func(*args, **kwargs)
        return decorate_autocast


# ------------------------------------------------------------------------ custom Functions

def custom_fwd(fwd=None, *, device_type: str, cast_inputs=None):
    """Decorator for the ``forward`` of a custom ``ddp.autograd.Function``: with
    ``cast_inputs``, floating Tensor arguments are cast to it and ``forward`` runs with autocast
    off (only when called inside an autocast region); without, ``forward`` sees the current
    autocast state. Pair with :func:`custom_bwd`.

    Example:
        >>> class Square(ddp.autograd.Function):
        ...     @staticmethod
        ...     @ddp.amp.custom_fwd(device_type="cpu", cast_inputs=ddp.float32)
        ...     def forward(ctx, x):
        ...         ctx.save_for_backward(x)
        ...         return x * x
        ...     @staticmethod
        ...     @ddp.amp.custom_bwd(device_type="cpu")
        ...     def backward(ctx, g):
        ...         x, = ctx.saved_tensors
        ...         return 2 * x * g
    """
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    if fwd is None:
        return functools.partial(custom_fwd, device_type=device_type, cast_inputs=cast_inputs)

    @functools.wraps(fwd)
    def decorate_fwd(*args, **kwargs):
        ctx = args[0]
        ctx._dtype = get_autocast_dtype(device_type)
        if cast_inputs is None:
            ctx._fwd_used_autocast = is_autocast_enabled(device_type)
            return fwd(*args, **kwargs)
        ctx._fwd_used_autocast = False
        if not is_autocast_enabled(device_type):
            return fwd(*args, **kwargs)
        Tensor = graph.Tensor
        target = _as_dtype(cast_inputs)
        cuda = device_type == "cuda"
        args, kwargs = _map_args(args, kwargs, lambda t: t.to(target) if t.is_floating_point()
                                 and t._data.dtype != np.float64
                                 and _hook._on_cuda(t._data) == cuda else t, Tensor)
        with autocast(device_type, enabled=False):
            return fwd(*args, **kwargs)
    return decorate_fwd


def custom_bwd(bwd=None, *, device_type: str):
    """Decorator for the ``backward`` of a custom Function: runs it with the autocast state its
    ``forward`` (decorated with :func:`custom_fwd`) saw.

    Example:
        >>> ddp.amp.custom_bwd(device_type="cpu")  # doctest: +ELLIPSIS
        functools.partial(...)
    """
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    if bwd is None:
        return functools.partial(custom_bwd, device_type=device_type)

    @functools.wraps(bwd)
    def decorate_bwd(*args, **kwargs):
        ctx = args[0]
        with autocast(device_type, enabled=ctx._fwd_used_autocast, dtype=ctx._dtype):
            return bwd(*args, **kwargs)
    return decorate_bwd

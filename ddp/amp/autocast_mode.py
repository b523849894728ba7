"""Autocast: regions where listed ops run in a lower-precision dtype (``float16``/``bfloat16``)
and numerically sensitive ones in ``float32``, as ``torch.autocast``.

How it works. Every listed functional entry point (``F.linear``, ``ddp.matmul`` and ``@``,
convolutions, softmax, norms, losses, ``Tensor.exp``/``sum``/... — see :data:`POLICIES`) starts
with one check of a thread-local flag::

    if _autocast.on:
        return autocast_call("linear", linear, input, weight, bias)

With autocast off that flag read is all it costs. With autocast on, :func:`autocast_call` looks
the op up in the table of the inputs' device, casts the floating point Tensor arguments through
the differentiable ``Tensor.to`` (so float32 parameters stay the master weights and their
gradients come back in float32), and calls the op with autocast suspended — its internals are
not autocast again, as PyTorch excludes its Autocast dispatch key inside an autocast kernel.

Policies (``POLICIES[device][op]``):

* ``lower_precision_fp``: floating inputs (not float64) are cast to the autocast dtype.
  On the GPU (CuPy, float16) the op then runs natively, on tensor cores. On the CPU NumPy has no
  fast half-precision matrix product (float16 ``matmul`` takes no BLAS path: 49 ms against
  0.3 ms in float32 at 256x256; ml_dtypes' bfloat16 ``matmul`` returns float32), so the rounded
  inputs are widened to float32, the op runs in float32 and its result is rounded to the
  autocast dtype: numerically what a bfloat16/float16 GEMM with float32 accumulation gives.
  bfloat16 on CuPy takes the same route (CuPy has no bfloat16 kernels).
* ``fp32``: floating inputs are cast to float32 (the output is float32).
* ``promote``: inputs of mixed floating types are cast to the widest (``cat``/``stack`` already
  promote natively in ddp, so they need no hook).
* ``keep``: for a float16/bfloat16 input the op is computed in float32 and its result cast back
  to the input's dtype — what PyTorch's CPU kernels for softmax and the norms do for
  low-precision inputs (float32 accumulation, low-precision output), and cuDNN batch norm does.
* ``banned``: raises (``binary_cross_entropy`` under CUDA autocast, as PyTorch).

Ops without an entry for the device run in the dtype their inputs have.

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
import threading
import warnings

import numpy as np

from .. import backend
from ..autograd.grad_mode import state as _grad_mode

__all__ = ["autocast", "is_autocast_enabled", "get_autocast_dtype", "set_autocast_enabled",
           "set_autocast_dtype", "is_autocast_cache_enabled", "set_autocast_cache_enabled",
           "clear_autocast_cache", "autocast_increment_nesting", "autocast_decrement_nesting",
           "is_autocast_cpu_enabled", "get_autocast_cpu_dtype", "get_autocast_gpu_dtype",
           "is_autocast_available"]

_DEVICE_TYPES = ("cpu", "cuda")
_F32 = np.dtype(np.float32)
_F16 = np.dtype(np.float16)
_BF16 = backend._BFLOAT16
_AUTOCAST_FLOATS = (_F16, _BF16, _F32)   # float64 is never autocast

# ------------------------------------------------------------------------------------ policies

LOWER, FP32, PROMOTE, KEEP, BANNED = "lower_precision_fp", "fp32", "promote", "keep", "banned"

# ddp's names for the hooks (a hook may serve several PyTorch ops: "matmul" is also mm, bmm,
# Tensor.__matmul__ and the RNN/LSTM/GRU cells' products; "log" also log2 and log10).
_LOWER_OPS = ("matmul", "linear", "conv1d", "conv2d", "conv_transpose2d", "prelu")
_LOSSES = ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "cross_entropy", "nll_loss",
           "kl_div", "binary_cross_entropy_with_logits")

POLICIES = {
    # PyTorch 2.13's AutocastCPU kernels (aten/src/ATen/autocast_mode.cpp), checked against
    # torch.autocast("cpu") for each op by tests/amp/test_autocast.py.
    "cpu": {
        **dict.fromkeys(_LOWER_OPS, LOWER),
        **dict.fromkeys(_LOSSES + ("binary_cross_entropy", "prod", "reflect_pad",
                                   "replicate_pad"), FP32),
        **dict.fromkeys(("cat", "stack"), PROMOTE),
        **dict.fromkeys(("softmax", "log_softmax", "softmin", "layer_norm", "group_norm",
                         "batch_norm"), KEEP),
    },
    # The CUDA lists (AT_FORALL_LOWER_PRECISION_FP / AT_FORALL_FP32 / ..._SET_OPT_DTYPE /
    # AT_FORALL_PROMOTE in ATen/autocast_mode.h).
    "cuda": {
        **dict.fromkeys(_LOWER_OPS, LOWER),
        **dict.fromkeys(_LOSSES + ("exp", "expm1", "log", "log1p", "reciprocal", "rsqrt", "tan",
                                   "pow", "rpow", "rtruediv", "softplus", "layer_norm",
                                   "group_norm", "norm", "logsumexp", "interpolate", "prod",
                                   "softmax", "log_softmax", "softmin", "cumsum", "sum"), FP32),
        **dict.fromkeys(("dot", "cat", "stack"), PROMOTE),
        "batch_norm": KEEP,
        "binary_cross_entropy": BANNED,
    },
}

_BCE_BANNED = (
    "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast.\n"
    "Many models use a sigmoid layer right before the binary cross entropy layer.\n"
    "In this case, combine the two layers using torch.nn.functional.binary_cross_entropy_with_"
    "logits\nor torch.nn.BCEWithLogitsLoss.  binary_cross_entropy_with_logits and BCEWithLogits "
    "are\nsafe to autocast.")


# --------------------------------------------------------------------------------- the state

class _State(threading.local):
    """Autocast state of one thread (a new thread starts with autocast off, as in PyTorch)."""

    def __init__(self):
        self.on = False                      # the one flag the hooks read: autocast is active
        self.enabled = {"cpu": False, "cuda": False}
        self.dtype = {"cpu": backend.bfloat16, "cuda": backend.float16}
        self.cache_enabled = True
        self.nesting = 0
        self.cache = {}                      # (id, dtype, widened, grad mode) -> cast weight
        self.saved = []                      # what each entered autocast region restores


state = _State()


def _check_device(device_type):
    if device_type not in _DEVICE_TYPES:
        raise RuntimeError(f"User specified an unsupported autocast device_type '{device_type}'")


def _as_dtype(dtype):
    return dtype if isinstance(dtype, backend.dtype) else \
        backend.from_numpy_dtype(backend.to_numpy_dtype(dtype))


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


# ------------------------------------------------------------------------------------ the hook

_Tensor = None
_on_cuda = backend.is_cuda_array   # which device's policy an array follows (tests swap it)


def _tensor_cls():
    global _Tensor
    if _Tensor is None:
        from ..tensor import Tensor
        _Tensor = Tensor
    return _Tensor


def _first_tensor(args, Tensor):
    for a in args:
        if isinstance(a, Tensor):
            return a
        if isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, Tensor):
                    return b
    return None


def _map_args(args, kwargs, fn, Tensor):
    """``args``/``kwargs`` with ``fn`` applied to every Tensor (also inside lists and tuples)."""
    def one(a):
        if isinstance(a, Tensor):
            return fn(a)
        if isinstance(a, (list, tuple)) and any(isinstance(b, Tensor) for b in a):
            return type(a)(fn(b) if isinstance(b, Tensor) else b for b in a)
        return a
    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def _map_out(out, fn, Tensor):
    if isinstance(out, Tensor):
        return fn(out)
    if type(out) is tuple:
        return tuple(fn(o) if isinstance(o, Tensor) else o for o in out)
    return out


def _lower(t, low, widen, st):
    """``t`` rounded to ``low`` (and widened back to float32 when ``widen``), through the
    differentiable cast; a float32 leaf that requires grad (a parameter) is cast once per
    region and grad mode while its version is unchanged."""
    cacheable = st.cache_enabled and t._requires_grad and t.grad_fn is None \
        and t._data.dtype == _F32
    if cacheable:
        key = (id(t), low.np, widen, _grad_mode.grad_enabled)
        hit = st.cache.get(key)
        if hit is not None and hit[0] is t and hit[1] == t._vc[0]:
            return hit[2]
    out = t.to(low)
    if widen:
        out = out.to(backend.float32)
    if cacheable:
        st.cache[key] = (t, t._vc[0], out)
    return out


def autocast_inputs(op_name, *tensors, device_type=None):
    """The casts :func:`autocast_call` applies to ``op_name``'s inputs, for inspection and for
    custom ops: returns ``tensors`` cast by the op's policy (unchanged when autocast is off for
    their device or the op is not listed). ``lower_precision_fp`` returns the tensors in the
    autocast dtype.

    Example:
        >>> with ddp.autocast("cpu"):
        ...     a, b = ddp.amp.autocast_inputs("matmul", ddp.ones(2), ddp.ones(2))
        >>> a.dtype
        ddp.bfloat16
    """
    Tensor = _tensor_cls()
    st = state
    if not st.on:
        return tensors
    first = _first_tensor(tensors, Tensor)
    device = device_type or ("cuda" if first is not None and _on_cuda(first._data)
                             else "cpu")
    policy = POLICIES[device].get(op_name) if st.enabled[device] else None
    if policy is None:
        return tensors
    cuda = device == "cuda"
    eligible = [t for t in tensors if isinstance(t, Tensor)
                and t._data.dtype in _AUTOCAST_FLOATS and _on_cuda(t._data) == cuda]
    if policy == LOWER:
        low = st.dtype[device]
        cast = {id(t): t.to(low) for t in eligible}
    elif policy == FP32 or (policy == KEEP and first is not None
                            and first._data.dtype in (_F16, _BF16)):
        cast = {id(t): t.to(backend.float32) for t in eligible}
    elif policy == PROMOTE and len({t._data.dtype for t in eligible}) > 1:
        wide = functools.reduce(backend.promote_types, [t._data.dtype for t in eligible])
        cast = {id(t): t.to(backend.from_numpy_dtype(wide)) for t in eligible}
    else:
        return tensors
    return tuple(cast.get(id(t), t) if isinstance(t, Tensor) else t for t in tensors)


def autocast_call(op_name, fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` — the entry point named ``op_name`` — under the autocast
    policy of its inputs' device, with autocast suspended inside. Entry points call it only
    when ``state.on``.

    Example:
        >>> with ddp.autocast("cpu"):
        ...     ddp.amp.autocast_call("matmul", ddp.matmul, ddp.ones(2, 2), ddp.ones(2, 2)).dtype
        ddp.bfloat16
    """
    Tensor = _tensor_cls()
    st = state
    first = _first_tensor(args, Tensor)
    if first is None and kwargs:
        first = _first_tensor(tuple(kwargs.values()), Tensor)
    cuda = first is not None and _on_cuda(first._data)
    device = "cuda" if cuda else "cpu"
    policy = POLICIES[device].get(op_name) if st.enabled[device] else None
    prev = st.on
    st.on = False
    try:
        if policy is None:
            return fn(*args, **kwargs)

        def eligible(t):
            return t._data.dtype in _AUTOCAST_FLOATS and _on_cuda(t._data) == cuda

        if policy == LOWER:
            low = st.dtype[device]
            widen = not cuda or low.np != _F16   # see the module docstring
            args, kwargs = _map_args(args, kwargs, lambda t: _lower(t, low, widen, st)
                                     if eligible(t) else t, Tensor)
            out = fn(*args, **kwargs)
            if widen:
                out = _map_out(out, lambda o: o.to(low) if o._data.dtype == _F32 else o, Tensor)
            return out
        if policy == FP32:
            args, kwargs = _map_args(args, kwargs, lambda t: t.to(backend.float32)
                                     if eligible(t) and t._data.dtype != _F32 else t, Tensor)
            return fn(*args, **kwargs)
        if policy == KEEP:
            in_dtype = first._data.dtype
            if in_dtype not in (_F16, _BF16):
                return fn(*args, **kwargs)
            args, kwargs = _map_args(args, kwargs, lambda t: t.to(backend.float32)
                                     if eligible(t) else t, Tensor)
            keep = backend.from_numpy_dtype(in_dtype)
            return _map_out(fn(*args, **kwargs),
                            lambda o: o.to(keep) if o._data.dtype == _F32 else o, Tensor)
        if policy == PROMOTE:
            dts = set()
            _map_args(args, kwargs, lambda t: dts.add(t._data.dtype) if eligible(t) else None,
                      Tensor)
            if len(dts) > 1:
                wide = backend.from_numpy_dtype(functools.reduce(backend.promote_types, dts))
                args, kwargs = _map_args(args, kwargs, lambda t: t.to(wide)
                                         if eligible(t) else t, Tensor)
            return fn(*args, **kwargs)
        raise RuntimeError(_BCE_BANNED)  # BANNED
    finally:
        st.on = prev


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
        Tensor = _tensor_cls()
        target = _as_dtype(cast_inputs)
        cuda = device_type == "cuda"
        args, kwargs = _map_args(args, kwargs, lambda t: t.to(target) if t.is_floating_point()
                                 and t._data.dtype != np.float64
                                 and _on_cuda(t._data) == cuda else t, Tensor)
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

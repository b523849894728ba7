"""The autocast hook the ops consult: per-thread state, PyTorch's per-op policies, and
:func:`autocast_op`, the one decorator every listed entry point wears (``F.linear``,
``ddp.matmul`` and ``@``, convolutions, softmax, norms, losses, ``Tensor.exp``/``sum``/...).

With autocast off, the decorator's check of one thread-local flag is all an entry point pays.
With autocast on, :func:`autocast_call` looks the op up in the table of its inputs' device,
casts the floating point Tensor arguments through the differentiable ``Tensor.to`` (so float32
parameters stay the master weights and their gradients come back in float32), and calls the op
with autocast suspended — its internals are not autocast again, as PyTorch excludes its
Autocast dispatch key inside an autocast kernel. ``ddp.amp`` (``autocast``, ``custom_fwd``, the
get/set functions) is the user API over this state.

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
    >>> @autocast_op("matmul")
    ... def product(a, b):
    ...     return a @ b
    >>> with ddp.autocast("cpu", dtype=ddp.bfloat16):
    ...     product(ddp.ones(2, 2), ddp.ones(2, 2)).dtype
    ddp.bfloat16
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from .. import backend
from ..autograd import graph
from ..autograd.grad_mode import state as _grad_mode

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


def _as_dtype(dtype):
    return dtype if isinstance(dtype, backend.dtype) else \
        backend.from_numpy_dtype(backend.to_numpy_dtype(dtype))


# ------------------------------------------------------------------------------------ the hook

_on_cuda = backend.is_cuda_array   # which device's policy an array follows (tests swap it)


def autocast_op(op_name, dtype_at=None):
    """Decorate the entry point named ``op_name`` (a key of :data:`POLICIES`): while autocast
    is on it runs through :func:`autocast_call`, otherwise it runs as written. ``dtype_at``: the
    position of a ``dtype`` argument; a call that gives one explicitly is not autocast (PyTorch's
    ``fp32_set_opt_dtype`` ops: sum, prod, softmax, ...).

    Example:
        >>> autocast_op("linear")(lambda x: x)(ddp.ones(1))
        tensor([1.])
    """
    def decorate(fn):
        if dtype_at is None:
            @functools.wraps(fn)
            def entry(*args, **kwargs):
                if backend.gpu_in_use() and (guard := _device_guard(args)) is not None:
                    with guard:
                        return entry(*args, **kwargs)
                if state.on:
                    return autocast_call(op_name, fn, *args, **kwargs)
                return fn(*args, **kwargs)
        else:
            @functools.wraps(fn)
            def entry(*args, **kwargs):
                if backend.gpu_in_use() and (guard := _device_guard(args)) is not None:
                    with guard:
                        return entry(*args, **kwargs)
                if state.on and kwargs.get("dtype") is None and (
                        len(args) <= dtype_at or args[dtype_at] is None):
                    return autocast_call(op_name, fn, *args, **kwargs)
                return fn(*args, **kwargs)
        return entry
    return decorate


def _device_guard(args):
    """The functional entry points (the ops' callers) also run on their first tensor's GPU: their
    argument checks and preprocessing touch arrays outside any op."""
    for a in args:
        data = getattr(a, "_data", None)
        if data is not None:
            return backend.device_guard(data)
    return None


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
    Tensor = graph.Tensor
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
    Tensor = graph.Tensor
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

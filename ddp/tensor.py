"""``Tensor``: an array (NumPy or CuPy) with autograd, shaped like PyTorch's tensor.

Every differentiable operation goes through an ``Op`` in ``ddp.ops`` (forward and backward side by
side); this module only turns PyTorch's calling conventions into those ops.

Example:
    >>> x = ddp.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    >>> (x @ x).sum().backward()
    >>> x.grad
    tensor([[ 7., 11.],
            [ 9., 13.]])
"""
from __future__ import annotations

import numbers
import weakref
from collections import OrderedDict, namedtuple

import numpy as np

from . import _shared_memory, backend
from . import creation as C
from ._format import tensor_repr
from .autograd import graph as _graph
from .autograd.grad_mode import state as _mode
from .autograd.gradients import backward as _backward
from .autograd.hooks import RemovableHandle
from .creation import _size_args
from .ops import elementwise as E
from .ops import matrix as M
from .ops import reduction as R
from .ops import shape as S
from .ops import tnp
from .ops.autocast import autocast_op
from .ops.elementwise import where

_new = object.__new__
_float_kinds = "f"


class Size(tuple):
    """The shape of a tensor: a tuple that prints as ``ddp.Size([2, 3])``."""

    def __repr__(self):
        return f"ddp.Size({list(self)})"

    def numel(self):
        n = 1
        for s in self:
            n *= s
        return n


def _index_array(x):
    """An index for an array: Tensors and lists become arrays; ints, slices, None, ... pass."""
    if isinstance(x, Tensor):
        return x._data
    if isinstance(x, list):
        if not any(isinstance(i, Tensor) for i in x):
            return np.asarray(x)
        # a list of tensors indexes like their stack, on their device (CuPy refuses np.asarray)
        arrays = [i._data if isinstance(i, Tensor) else i for i in x]
        dev_arr = next((a for a in arrays if backend.is_cuda_array(a)), None)
        if dev_arr is None:
            return np.asarray(arrays)
        xp = backend.get_array_module(dev_arr)
        return xp.stack([backend.to_device(xp.asarray(a) if backend.is_array(a) else
                                           np.asarray(a), backend.device_of(dev_arr))
                         for a in arrays])
    return x


def _convert_index(idx):
    if isinstance(idx, tuple):
        return tuple(_index_array(i) for i in idx)
    return _index_array(idx)


MinMax = namedtuple("MinMax", ["values", "indices"])


class Tensor:
    """A multi-dimensional array on a device, recording operations for autograd.

    ``Tensor(data)`` and ``Tensor(2, 3)`` (uninitialised float tensor) work as PyTorch's legacy
    constructor; prefer :func:`ddp.tensor`, :func:`ddp.zeros` and friends.

    Example:
        >>> t = ddp.Tensor([1, 2])          # legacy constructor: always the default float dtype
        >>> t.dtype, t.shape
        (ddp.float32, ddp.Size([2]))
    """
    __slots__ = ("_data", "_requires_grad", "grad", "grad_fn", "_output_nr", "_vc", "_hooks",
                 "_post_acc_hooks", "__dict__", "__weakref__")
    __array_priority__ = 1000  # numpy array (op) Tensor defers to the Tensor's reflected operator
    # a leaf's gradient sink (set per tensor by DDP's reducer, see autograd.engine._offer_sinks)
    _grad_sink = None

    def __init__(self, *args, device=None, dtype=None):
        dt = backend.to_numpy_dtype(dtype) if dtype is not None else backend.get_default_dtype().np
        if len(args) == 1 and not isinstance(args[0], (int, np.integer, Size)):
            data = args[0]
            arr = data._data if isinstance(data, Tensor) else \
                data.astype(dt) if backend.is_cuda_array(data) else np.asarray(data, dtype=dt)
        else:  # Tensor(2, 3) or Tensor(Size): a shape; Tensor() is empty, as in PyTorch
            arr = np.empty(_size_args(args) if args else (0,), dtype=dt)
        arr = backend.to_device(arr, (backend.device_of(arr) if backend.is_cuda_array(arr)
                                      else backend.get_default_device()) if device is None
                                else backend.as_device(device))
        _init(self, arr)

    @staticmethod
    def _make(data, requires_grad=False, grad_fn=None, output_nr=0):
        """Wrap an array without copying (the fast internal constructor)."""
        t = _new(Tensor)
        if data.__class__ is not np.ndarray and isinstance(data, np.generic):
            data = np.asarray(data)  # NumPy gives scalars for full reductions; keep 0-d arrays
        t._data = data
        t._requires_grad = requires_grad
        t.grad = None
        t.grad_fn = grad_fn
        t._output_nr = output_nr
        t._vc = [0]
        t._hooks = None
        t._post_acc_hooks = None
        return t

    # ------------------------------------------------------------------ attributes
    @property
    def shape(self) -> Size:
        return Size(self._data.shape)

    def size(self, dim=None):
        """The shape, or the size of dimension ``dim``."""
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[R.normalize_axis(dim, self._data.ndim)[0]]

    @property
    def dtype(self):
        return backend.from_numpy_dtype(self._data.dtype)

    @property
    def device(self):
        return backend.device_of(self._data)

    @property
    def is_cuda(self):
        return backend.is_cuda_array(self._data)

    # ddp has no XPU, MPS or meta devices; programs test these flags to pick one.
    is_xpu = is_mps = is_meta = property(lambda self: False)

    def share_memory_(self):
        """Move a CPU tensor's data into shared memory (once), so processes started by
        ``ddp.multiprocessing`` that receive it work on the same bytes; a no-op on CUDA.

        Example:
            >>> ddp.ones(2).share_memory_().is_shared()
            True
        """
        if not self.is_cuda and not self.is_shared():
            self._data = _shared_memory.share_array(self._data)
        return self

    def is_shared(self):
        """True when the data is in shared memory (:meth:`share_memory_`)."""
        return _shared_memory.is_shared(self._data)

    def is_pinned(self, device=None):
        return False

    def pin_memory(self, device=None):
        """The tensor itself: CuPy copies from pageable memory (no pinned pool here)."""
        return self

    @property
    def ndim(self):
        return self._data.ndim

    def dim(self):
        return self._data.ndim

    ndimension = dim

    def numel(self):
        return int(self._data.size)

    nelement = numel

    def element_size(self):
        return self._data.itemsize

    @property
    def itemsize(self):
        return self._data.itemsize

    @property
    def nbytes(self):
        return self._data.nbytes

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        self.requires_grad_(value)

    def requires_grad_(self, requires_grad=True):
        """Start (or stop) recording operations on this leaf tensor; returns self."""
        if self.grad_fn is not None and not requires_grad:
            raise RuntimeError("you can only change requires_grad flags of leaf variables. If you "
                               "want to use a computed variable in a subgraph that doesn't require "
                               "differentiation use var_no_grad = var.detach().")
        if requires_grad and not backend.is_float_np(self._data.dtype):
            raise RuntimeError(f"only Tensors of floating point dtype can require gradients "
                               f"(got {self.dtype})")
        self._requires_grad = bool(requires_grad)
        return self

    @property
    def data(self):
        """The same storage, detached from the graph and from version tracking."""
        return Tensor._make(self._data)

    @data.setter
    def data(self, value):
        value = value._data if isinstance(value, Tensor) else value
        self._data = value

    @property
    def _version(self):
        return self._vc[0]

    def is_floating_point(self):
        return backend.is_float_np(self._data.dtype)

    def is_contiguous(self):
        return bool(self._data.flags.c_contiguous)

    @property
    def T(self):
        return self.permute(*range(self.ndim - 1, -1, -1))

    @property
    def mT(self):
        return self.transpose(-2, -1)

    @property
    def output_nr(self):
        return self._output_nr

    # ------------------------------------------------------------------ conversion
    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted to "
                               f"Scalar")
        return self._data.reshape(()).item()

    def tolist(self):
        return self._host().tolist()

    def numpy(self, force=False):
        """The NumPy array behind a CPU tensor (shared memory)."""
        if self._requires_grad and not force:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use "
                               "tensor.detach().numpy() instead.")
        if not isinstance(self._data, np.ndarray):
            if not force:
                raise TypeError(f"can't convert {self.device} device type tensor to numpy. Use "
                                f"Tensor.cpu() to copy the tensor to host memory first.")
            return backend.to_host(self._data)
        return self._data

    def _host(self):
        return backend.to_host(self._data)

    def __array__(self, dtype=None, copy=None):
        if not isinstance(self._data, np.ndarray):  # PyTorch refuses the silent device->host copy
            raise TypeError(f"can't convert {self.device} device type tensor to numpy. Use "
                            f"Tensor.cpu() to copy the tensor to host memory first.")
        arr = self._data
        return arr.astype(dtype, copy=False) if dtype is not None else arr

    def to(self, *args, **kwargs):
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(other_tensor)``; differentiable.

        Example:
            >>> ddp.ones(2).to(ddp.float64).dtype
            ddp.float64
        """
        dev, dt, copy = None, None, kwargs.pop("copy", False)
        kwargs.pop("non_blocking", None)
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, Tensor):
                dev, dt = a.device, a.dtype
            elif isinstance(a, backend.dtype) or (isinstance(a, type) and a in (float, int, bool)) \
                    or isinstance(a, np.dtype):
                dt = a
            elif a is not None:
                dev = backend.as_device(a)
        out = self
        if dt is not None:
            npd = backend.to_numpy_dtype(dt)
            if npd != self._data.dtype:
                out = E.Cast.apply(out, dtype=npd)
        if dev is not None and dev != out.device:
            out = S.ToDevice.apply(out, device=backend.as_device(dev))
        if copy and out is self:
            out = self.clone()
        return out

    def cuda(self, device=None, non_blocking=False):
        """A copy on GPU ``device`` (default: the current GPU of this thread, as in PyTorch)."""
        if device is None or isinstance(device, int):
            device = backend.device("cuda", backend.current_device() if device is None else device)
        return self.to(device)

    def cpu(self):
        return self.to(backend.CPU)

    def type(self, dtype=None):
        if dtype is None:
            return f"ddp.{self.dtype.name}"
        return self.to(dtype)

    def type_as(self, other):
        return self.to(other.dtype)

    def float(self):
        return self.to(backend.float32)

    def double(self):
        return self.to(backend.float64)

    def half(self):
        return self.to(backend.float16)

    def bfloat16(self):
        return self.to(backend.bfloat16)

    def int(self):
        return self.to(backend.int32)

    def long(self):
        return self.to(backend.int64)

    def short(self):
        return self.to(backend.int16)

    def bool(self):
        return self.to(backend.bool)

    def byte(self):
        return self.to(backend.uint8)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iub":
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with more than one value is ambiguous "
                               f"(shape {tuple(self.shape)})")
        return bool(self.item())

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __contains__(self, value):
        return bool((self == value).any())

    __hash__ = object.__hash__

    def __repr__(self):
        return tensor_repr(self)

    def __format__(self, spec):
        if self._data.ndim == 0:
            return format(self.item(), spec)
        return repr(self)

    def __reduce_ex__(self, protocol):  # pickling (DataLoader workers, checkpoints)
        return (_rebuild, (self._host(), str(self.device), self._requires_grad))

    # ------------------------------------------------------------------ autograd
    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate the gradient of this tensor into the ``.grad`` of the leaves.

        Example:
            >>> x = ddp.tensor(3.0, requires_grad=True); (x * x).backward(); x.grad
            tensor(6.)
        """
        _backward(self, gradient, retain_graph, create_graph, inputs=inputs)

    def detach(self):
        """A tensor sharing this one's data (and version counter), outside the graph."""
        t = Tensor._make(self._data)
        t._vc = self._vc
        return t

    def detach_(self):
        """Detach this tensor from the graph in place (it becomes a leaf)."""
        self.grad_fn = None
        self._requires_grad = False
        return self

    def retain_grad(self):
        """Keep ``.grad`` for this non-leaf tensor after backward."""
        if self.grad_fn is None:
            return
        if getattr(self, "_retains", False):
            return
        ref = weakref.ref(self)

        def keep(g):  # a copy: the same gradient array may flow to several tensors
            t = ref()
            if t is not None:
                t.grad = g.detach().clone() if t.grad is None else t.grad + g.detach()
        keep._retains_grad = True  # the engine runs it after the other hooks, as PyTorch does
        self.register_hook(keep)
        self._retains = True

    @property
    def retains_grad(self):
        return getattr(self, "_retains", False)

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this tensor's gradient is computed; it may return a
        replacement. Returns a handle with ``remove()``.

        Example:
            >>> x = ddp.ones(2, requires_grad=True)
            >>> h = x.register_hook(lambda g: g * 2)
        """
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is None:
            if self._hooks is None:
                self._hooks = OrderedDict()
            return _add_hook(self._hooks, hook)
        fn = self.grad_fn
        if fn.pre_hooks is None:
            fn.pre_hooks = {}
        return _add_hook(fn.pre_hooks.setdefault(self._output_nr, OrderedDict()), hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` after this leaf's ``.grad`` has been accumulated in a backward
        pass (the distributed layer launches gradient allreduces from these).

        Example:
            >>> w = ddp.ones(2, requires_grad=True)
            >>> h = w.register_post_accumulate_grad_hook(lambda p: print(p.grad))
        """
        if self.grad_fn is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self._post_acc_hooks is None:
            self._post_acc_hooks = OrderedDict()
        return _add_hook(self._post_acc_hooks, hook)

    # ------------------------------------------------------------------ in-place machinery
    def _adopt(self, result, recording):
        """Write ``result`` into this tensor's storage; under recording it also takes its place
        in the graph. Checks the shape and dtype as PyTorch does."""
        r = result._data
        if r.shape != self._data.shape:
            raise RuntimeError(f"output with shape {list(self._data.shape)} doesn't match the "
                               f"broadcast shape {list(r.shape)}")
        if r.dtype != self._data.dtype and not np.can_cast(r.dtype, self._data.dtype, "same_kind"):
            raise RuntimeError(f"result type {backend.from_numpy_dtype(r.dtype).name} can't be "
                               f"cast to the desired output type {self.dtype.name}")
        self._data[...] = r
        self._vc[0] += 1
        if recording:
            self.grad_fn = result.grad_fn
            self._output_nr = result._output_nr
            self._requires_grad = result._requires_grad
        return self

    def _inplace(self, fn, *others):
        """Run ``fn(self, *others)`` out of place and write the result back into self.

        Under recording, ``fn`` sees a copy standing at self's place in the graph, so values that
        ops save stay intact after the write."""
        recording = _mode.grad_enabled and (self._requires_grad or any(
            isinstance(o, Tensor) and o._requires_grad for o in others))
        if recording:
            if self._requires_grad and self.grad_fn is None:
                raise RuntimeError("a leaf Variable that requires grad is being used in an in-place "
                                   "operation.")
            src = Tensor._make(self._data.copy(), self._requires_grad, self.grad_fn,
                               self._output_nr)
            view = getattr(self, "_view_of", None)
            if view is not None:
                return self._inplace_through_base(fn(src, *others), *view)
            return self._adopt(fn(src, *others), True)
        return self._adopt(fn(self, *others), False)

    def _inplace_through_base(self, result, base, index):
        """An in-place edit of a view of a tensor in the graph: write it into the base as
        ``base[index] = result`` (recorded on the base), then re-derive this view from the base,
        so gradients flow through both, as PyTorch's CopySlices does."""
        if index is None:
            raise RuntimeError(
                "in-place operation on a view made by reshape/view/permute/transpose/expand of a "
                "tensor that requires grad is not supported; use the out-of-place op, or edit the "
                "base through indexing (base[...] = value)")
        if result._data.shape != self._data.shape:
            raise RuntimeError(f"output with shape {list(self._data.shape)} doesn't match the "
                               f"broadcast shape {list(result._data.shape)}")
        base[index] = result  # writes the shared storage and records IndexPut on the base
        fresh = S.Getitem.apply(base, index=index)
        self.grad_fn, self._output_nr = fresh.grad_fn, fresh._output_nr
        self._requires_grad = fresh._requires_grad
        return self

    def _fast_inplace(self, ufunc, other):
        """``self = ufunc(self, other)`` in storage, when nothing is recorded and types agree."""
        if _mode.grad_enabled and (self._requires_grad or isinstance(other, Tensor)
                                   and other._requires_grad):
            return False
        o = other._data if isinstance(other, Tensor) else other
        if isinstance(o, (bool, numbers.Number)) and not isinstance(o, np.generic):
            if isinstance(o, float) and self._data.dtype.kind in "biu":
                return False
        elif type(o) is not type(self._data) or o.dtype != self._data.dtype:
            return False
        elif backend.overlaps(self._data, o):   # t[1:].add_(t[:-1]): a GPU kernel would race
            o = o.copy()
        try:
            ufunc(self._data, o, out=self._data)
        except TypeError:  # e.g. an integer tensor /= 2: the float result can't be stored
            raise RuntimeError(f"result type Float can't be cast to the desired output type "
                               f"{self.dtype.name}") from None
        except ValueError as exc:
            raise RuntimeError(f"{ufunc.__name__}_: cannot write a result of another shape into a "
                               f"tensor of shape {tuple(self.shape)} ({exc})") from None
        self._vc[0] += 1
        return True

    def add_(self, other, alpha=1):
        other, alpha = _alpha_first(other, alpha)
        if alpha != 1:
            other = other * alpha
        if self._fast_inplace(_xp_ufunc(self, "add"), other):
            return self
        return self._inplace(lambda s, o: s + o, other)

    def sub_(self, other, alpha=1):
        other, alpha = _alpha_first(other, alpha)
        if alpha != 1:
            other = other * alpha
        if self._fast_inplace(_xp_ufunc(self, "subtract"), other):
            return self
        return self._inplace(lambda s, o: s - o, other)

    def mul_(self, other):
        if self._fast_inplace(_xp_ufunc(self, "multiply"), other):
            return self
        return self._inplace(lambda s, o: s * o, other)

    def div_(self, other, rounding_mode=None):
        if rounding_mode is None and self._fast_inplace(_xp_ufunc(self, "true_divide"), other):
            return self
        return self._inplace(lambda s, o: s.div(o, rounding_mode=rounding_mode), other)

    def pow_(self, exponent):
        return self._inplace(lambda s, o: s ** o, exponent)

    def addcmul_(self, t1, t2, value=1):
        return self._inplace(lambda s, a, b: s + value * a * b, t1, t2)

    def addcdiv_(self, t1, t2, value=1):
        return self._inplace(lambda s, a, b: s + value * a / b, t1, t2)

    def lerp_(self, end, weight):
        return self._inplace(lambda s, e: s + weight * (e - s), end)

    def clamp_(self, min=None, max=None):
        return self._inplace(lambda s: s.clamp(min, max))

    clip_ = clamp_

    def neg_(self):
        return self._inplace(lambda s: -s)

    def abs_(self):
        return self._inplace(lambda s: s.abs())

    def exp_(self):
        return self._inplace(lambda s: s.exp())

    def log_(self):
        return self._inplace(lambda s: s.log())

    def sqrt_(self):
        return self._inplace(lambda s: s.sqrt())

    def tanh_(self):
        return self._inplace(lambda s: s.tanh())

    def sigmoid_(self):
        return self._inplace(lambda s: s.sigmoid())

    def relu_(self):
        return self._inplace(lambda s: s.relu())

    def floor_(self):
        return self._inplace(lambda s: s.floor())

    def round_(self, decimals=0):
        return self._inplace(lambda s: s.round(decimals=decimals))

    def zero_(self):
        """Fill with zeros in place; returns self."""
        return self.fill_(0)

    def fill_(self, value):
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor "
                                   f"with {value.ndim} dimensions.")
            if _mode.grad_enabled and value._requires_grad:
                return self._inplace(lambda s, v: v.expand(s.shape) + s * 0, value.reshape(()))
            value = value.item()
        if _mode.grad_enabled and self._requires_grad:
            return self._inplace(lambda s: s * 0 + value)
        self._data.fill(value)
        self._vc[0] += 1
        return self

    def copy_(self, src, non_blocking=False):
        """Copy ``src`` (broadcast, cast, moved to this device) into this tensor; returns self."""
        if not isinstance(src, Tensor):
            src = C.tensor(src)
        if _mode.grad_enabled and (self._requires_grad or src._requires_grad):
            return self._inplace(lambda s, o: s * 0 + o.to(s.device, s.dtype), src)
        data = backend.to_device(src._data, self.device)
        if backend.overlaps(self._data, data):
            data = data.copy()
        try:
            self._data[...] = data
        except ValueError:
            raise RuntimeError(f"copy_: the size of src {tuple(src.shape)} must be broadcastable to "
                               f"the destination's {tuple(self.shape)}") from None
        self._vc[0] += 1
        return self

    def masked_fill_(self, mask, value):
        return self._inplace(lambda s: s.masked_fill(mask, value))

    def index_add_(self, dim, index, source, alpha=1):
        return self._inplace(lambda s, src: s.index_add(dim, index, src, alpha=alpha), source)

    def scatter_(self, dim, index, src, reduce=None):
        return self._inplace(lambda s, o: s.scatter(dim, index, o, reduce=reduce), src)

    def scatter_add_(self, dim, index, src):
        return self._inplace(lambda s, o: s.scatter_add(dim, index, o), src)

    def uniform_(self, a=0.0, b=1.0, generator=None):
        return self._fill_random(self._draws(generator).uniform(a, b, self._data.shape))

    def normal_(self, mean=0.0, std=1.0, generator=None):
        return self._fill_random(self._draws(generator).normal(mean, std, self._data.shape))

    def bernoulli_(self, p=0.5, generator=None):
        return self._fill_random(self._draws(generator).random(self._data.shape) < p)

    def random_(self, low=0, high=None, generator=None):
        if high is None:
            low, high = 0, low
        return self._fill_random(self._draws(generator).integers(low, high, self._data.shape))

    def exponential_(self, lambd=1.0, generator=None):
        return self._fill_random(self._draws(generator).exponential(1.0 / lambd, self._data.shape))

    def _fill_random(self, values):
        if _mode.grad_enabled and self._requires_grad and self.grad_fn is None:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place "
                               "operation.")
        with backend.device_context(self.device):   # drawn on this device
            self._data[...] = values.astype(self._data.dtype, copy=False)
        self._vc[0] += 1
        return self

    def _draws(self, generator):
        return backend.random_stream(generator, self.device)

    def __setitem__(self, idx, value):
        index = _convert_index(idx)
        if _mode.grad_enabled and (self._requires_grad or isinstance(value, Tensor)
                                   and value._requires_grad):
            if not isinstance(value, Tensor):
                value = Tensor._make(backend.get_array_module(self._data).asarray(
                    value, dtype=self._data.dtype))
            value = value.to(self.dtype)
            self._inplace(lambda s, v: S.IndexPut.apply(s, v, index=index), value)
            return
        v = value._data if isinstance(value, Tensor) else value
        if backend.is_array(v):
            v = backend.to_device(v, self.device)
            if backend.overlaps(self._data, v):
                v = v.copy()
        try:
            self._data[index] = v
        except (ValueError, IndexError) as exc:
            raise type(exc)(f"index assignment into a tensor of shape {tuple(self.shape)}: "
                            f"{exc}") from None
        self._vc[0] += 1

    def __getitem__(self, idx):
        index = _convert_index(idx)
        try:
            out = S.Getitem.apply(self, index=index)
        except IndexError as exc:
            raise IndexError(f"index {idx!r} is invalid for a tensor of shape "
                             f"{tuple(self.shape)}: {exc}") from None
        if out._data.base is not None:  # a view: writes through it must show in this tensor
            _share_view(out, self, index)
        return out

    # ------------------------------------------------------------------ arithmetic
    __add__ = E.operator(E.Add, "add")
    __radd__ = E.operator(E.Add, "add", reflected=True)
    __sub__ = E.operator(E.Sub, "sub")
    __rsub__ = E.operator(E.Sub, "sub", reflected=True)
    __mul__ = E.operator(E.Mul, "mul")
    __rmul__ = E.operator(E.Mul, "mul", reflected=True)

    def __truediv__(self, other):
        return _true_divide(self, other)

    @autocast_op("rtruediv")
    def __rtruediv__(self, other):
        return _true_divide(other, self)

    def __floordiv__(self, other):
        _integer_zero_division("floor_divide", self, other)
        return E.binary(E.FloorDivide, "floor_divide", self, other)

    def __rfloordiv__(self, other):
        _integer_zero_division("floor_divide", other, self)
        return E.binary(E.FloorDivide, "floor_divide", other, self)

    def __mod__(self, other):
        _integer_zero_division("remainder", self, other)
        return E.binary(E.Remainder, "remainder", self, other)

    def __rmod__(self, other):
        _integer_zero_division("remainder", other, self)
        return E.binary(E.Remainder, "remainder", other, self)

    @autocast_op("pow")
    def __pow__(self, other):
        return E.binary(E.Pow, "pow", self, other)

    @autocast_op("rpow")
    def __rpow__(self, other):
        return E.binary(E.Pow, "pow", other, self)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __neg__(self):
        if self._data.dtype == np.bool_:
            raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported. "
                               "Use `~` or `logical_not()` instead.")
        return E.Neg.apply(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return self.abs()

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def __invert__(self):
        if self._data.dtype.kind not in "biu":
            raise TypeError("~ (bitwise_not) is only supported for integer and bool tensors")
        return Tensor._make(~self._data)

    def __and__(self, other):
        return E.compare("bitwise_and", "bitwise_and", self, other)

    __rand__ = __and__

    def __or__(self, other):
        return E.compare("bitwise_or", "bitwise_or", self, other)

    __ror__ = __or__

    def __xor__(self, other):
        return E.compare("bitwise_xor", "bitwise_xor", self, other)

    __rxor__ = __xor__

    def __eq__(self, other):
        return E.compare("equal", "eq", self, other)

    def __ne__(self, other):
        return E.compare("not_equal", "ne", self, other)

    def __lt__(self, other):
        return E.compare("less", "lt", self, other)

    def __le__(self, other):
        return E.compare("less_equal", "le", self, other)

    def __gt__(self, other):
        return E.compare("greater", "gt", self, other)

    def __ge__(self, other):
        return E.compare("greater_equal", "ge", self, other)

    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__
    greater, less, greater_equal, less_equal, not_equal = gt, lt, ge, le, ne

    def equal(self, other):
        """True when both tensors have the same shape and elements."""
        return tuple(self.shape) == tuple(other.shape) and bool((self == other).all())

    def logical_not(self):
        return Tensor._make(backend.get_array_module(self._data).logical_not(self._data))

    def logical_and(self, other):
        return E.compare("logical_and", "logical_and", self, other)

    def logical_or(self, other):
        return E.compare("logical_or", "logical_or", self, other)

    def isnan(self):
        return Tensor._make(backend.get_array_module(self._data).isnan(self._data))

    def isinf(self):
        return Tensor._make(backend.get_array_module(self._data).isinf(self._data))

    def isfinite(self):
        return Tensor._make(backend.get_array_module(self._data).isfinite(self._data))

    def allclose(self, other, rtol=1e-5, atol=1e-8, equal_nan=False):
        xp = backend.get_array_module(self._data)
        return bool(xp.allclose(self._data, other._data, rtol=rtol, atol=atol, equal_nan=equal_nan))

    def add(self, other, alpha=1):
        other, alpha = _alpha_first(other, alpha)
        return self + (other * alpha if alpha != 1 else other)

    def sub(self, other, alpha=1):
        other, alpha = _alpha_first(other, alpha)
        return self - (other * alpha if alpha != 1 else other)

    subtract = sub

    def mul(self, other):
        return self * other

    multiply = mul

    def div(self, other, rounding_mode=None):
        """True division, or ``rounding_mode`` 'floor' / 'trunc'."""
        if rounding_mode is None:
            return _true_divide(self, other)
        if rounding_mode == "floor":
            return self // other
        if rounding_mode == "trunc":
            _integer_zero_division("div(rounding_mode='trunc')", self, other)
            return _true_divide(self, other).trunc().to(E.promote("div", self, other)[0].dtype)
        raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but "
                         f"found '{rounding_mode}'")

    divide = true_divide = div

    def floor_divide(self, other):
        return self // other

    def remainder(self, other):
        return self % other

    def fmod(self, other):
        return self - (self / other).trunc() * other

    def pow(self, exponent):
        return self ** exponent

    def matmul(self, other):
        return matmul(self, other)

    def mm(self, other):
        return mm(self, other)

    def bmm(self, other):
        return bmm(self, other)

    @autocast_op("dot")
    def dot(self, other):
        if self.ndim != 1 or other.ndim != 1:
            raise RuntimeError(f"1D tensors expected, but got {self.ndim}D and {other.ndim}D tensors")
        return matmul(self, other)

    def maximum(self, other):
        return E.binary(E.Maximum, "maximum", self, other)

    def minimum(self, other):
        return E.binary(E.Minimum, "minimum", self, other)

    def lerp(self, end, weight):
        return self + weight * (end - self)

    def addcmul(self, t1, t2, value=1):
        return self + value * t1 * t2

    def addcdiv(self, t1, t2, value=1):
        return self + value * t1 / t2

    # ------------------------------------------------------------------ unary math
    def _float_input(self, name=None):
        """Integer tensors are promoted to the default float dtype by math functions."""
        dt = self._data.dtype
        return self if dt.kind == "f" or backend.is_float_np(dt) else \
            self.to(backend.get_default_dtype())

    exp = autocast_op("exp")(E.unary(E.Exp))

    log = autocast_op("log")(E.unary(E.Log))

    def log2(self):
        return self.log() / float(np.log(2.0))

    def log10(self):
        return self.log() / float(np.log(10.0))

    log1p = autocast_op("log1p")(E.unary(E.Log1p))

    expm1 = autocast_op("expm1")(E.unary(E.Expm1))

    sqrt = E.unary(E.Sqrt)

    rsqrt = autocast_op("rsqrt")(E.unary(E.Rsqrt))

    reciprocal = autocast_op("reciprocal")(E.unary(E.Reciprocal))

    def square(self):
        return self * self

    abs = E.unary(E.Abs, float_input=False)

    absolute = abs

    def neg(self):
        return -self

    negative = neg

    sin = E.unary(E.Sin)

    cos = E.unary(E.Cos)

    @autocast_op("tan")
    def tan(self):
        return self.sin() / self.cos()

    tanh = E.unary(E.Tanh)

    sigmoid = E.unary(E.Sigmoid)

    relu = E.unary(E.Relu, float_input=False)

    def clamp(self, min=None, max=None):
        """Clamp into ``[min, max]``; either bound may be None or a tensor."""
        if min is None and max is None:
            raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
        if isinstance(min, Tensor) or isinstance(max, Tensor):
            # where, not maximum/minimum: at a tie the gradient goes to self, as PyTorch's clamp
            out = self
            if min is not None:
                out = where(out < min, min, out)
            if max is not None:
                out = where(out > max, max, out)
            return out
        x = self
        if (isinstance(min, float) or isinstance(max, float)) and self._data.dtype.kind in "biu":
            x = self.to(backend.get_default_dtype())
        return E.Clamp.apply(x, lo=min, hi=max)

    clip = clamp

    def clamp_min(self, min):
        return self.clamp(min=min)

    def clamp_max(self, max):
        return self.clamp(max=max)

    def sign(self):
        return E.ZeroGrad.apply(self, fn="sign")

    sgn = sign

    def floor(self):
        return E.ZeroGrad.apply(self, fn="floor")

    def ceil(self):
        return E.ZeroGrad.apply(self, fn="ceil")

    def trunc(self):
        return E.ZeroGrad.apply(self, fn="trunc")

    fix = trunc

    def round(self, decimals=0):
        return E.ZeroGrad.apply(self, fn="round", decimals=decimals)

    def frac(self):
        return self - self.trunc()

    # ------------------------------------------------------------------ reductions
    def _axes(self, dim):
        return R.normalize_axis(dim, self._data.ndim)

    @autocast_op("sum", dtype_at=3)
    def sum(self, dim=None, keepdim=False, dtype=None, axis=None, keepdims=None):
        """Sum over ``dim`` (int, tuple, or all); integer and bool tensors sum as int64."""
        if dim is None and axis is None and dtype is None and keepdims is None and not keepdim \
                and self._data.dtype.kind == "f":
            # a float tensor's full sum (a loss, a chain's end), the commonest: no arguments to
            # reconcile, nor a keyword dict to build again (~10 % of it on a small tensor)
            return _graph.apply(R.Sum, (self,), _FULL_SUM)
        dim, keepdim = _np_aliases(dim, keepdim, axis, keepdims)
        x = self if dtype is None else self.to(dtype)
        out_dtype = np.int64 if x._data.dtype.kind in "biu" else None
        return R.Sum.apply(x, axis=self._axes(dim), keepdims=keepdim, dtype=out_dtype)

    def sum_to_size(self, *size):
        return S.SumToSize.apply(self, shape=_size_args(size))

    def nansum(self, dim=None, keepdim=False):
        return self.where(~self.isnan(), 0.0).sum(dim, keepdim) if self.is_floating_point() \
            else self.sum(dim, keepdim)

    def mean(self, dim=None, keepdim=False, dtype=None, axis=None, keepdims=None):
        dim, keepdim = _np_aliases(dim, keepdim, axis, keepdims)
        x = self if dtype is None else self.to(dtype)
        if not backend.is_float_np(x._data.dtype):
            raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a "
                               f"floating point or complex dtype. Got: {x.dtype.name}")
        return R.Mean.apply(x, axis=self._axes(dim), keepdims=keepdim)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        """Variance with Bessel's correction by default (``correction=1``)."""
        if isinstance(unbiased, bool) or unbiased is None:
            corr = 1 if correction is None else correction
            if unbiased is False:
                corr = 0
        else:  # var(dim, correction) positional use
            corr = 1 if correction is None else correction
        axes = self._axes(dim)
        n = self.numel() if axes is None else int(np.prod([self._data.shape[a] for a in axes]))
        centered = self - self.mean(dim=axes, keepdim=True)
        return (centered * centered).sum(dim=axes, keepdim=keepdim) / max(n - corr, 0)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return self.var(dim, unbiased, keepdim, correction=correction).sqrt()

    def _minmax(self, smallest, dim, keepdim, other):
        if isinstance(dim, Tensor) or other is not None:
            return self.minimum(dim if other is None else other) if smallest else \
                self.maximum(dim if other is None else other)
        if dim is None:
            return R.AMax.apply(self, axis=None, keepdims=False, smallest=smallest)
        axis = self._axes(dim)[0]
        values, indices = R.MaxWithIndices.apply(self, axis=axis, keepdims=keepdim,
                                                 smallest=smallest)
        return MinMax(values, indices)

    def max(self, dim=None, keepdim=False, other=None):
        """``max()`` (all), ``max(dim)`` → (values, indices), or ``max(other)`` elementwise."""
        return self._minmax(False, dim, keepdim, other)

    def min(self, dim=None, keepdim=False, other=None):
        return self._minmax(True, dim, keepdim, other)

    def amax(self, dim=(), keepdim=False):
        return R.AMax.apply(self, axis=self._axes(dim) if dim != () else None, keepdims=keepdim)

    def amin(self, dim=(), keepdim=False):
        return R.AMax.apply(self, axis=self._axes(dim) if dim != () else None, keepdims=keepdim,
                            smallest=True)

    def argmax(self, dim=None, keepdim=False):
        return _arg_reduce(self, "argmax", dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _arg_reduce(self, "argmin", dim, keepdim)

    @autocast_op("prod", dtype_at=3)
    def prod(self, dim=None, keepdim=False, dtype=None):
        x = self if dtype is None else self.to(dtype)
        if dim is None:
            return R.Prod.apply(x.reshape(-1), axis=0, keepdims=False).reshape(
                (1,) * self.ndim if keepdim else ())
        return R.Prod.apply(x, axis=self._axes(dim)[0], keepdims=keepdim)

    @autocast_op("norm", dtype_at=4)
    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        """Vector p-norm over ``dim`` (all elements by default); ``p`` may be 'fro', inf, -inf."""
        x = self if dtype is None else self.to(dtype)
        axes = self._axes(dim)
        if p in ("fro", 2, 2.0):
            return R.Norm2.apply(x, axis=axes, keepdims=keepdim)
        if p == float("inf"):
            return x.abs().amax(dim=axes if axes is not None else (), keepdim=keepdim)
        if p == float("-inf"):
            return x.abs().amin(dim=axes if axes is not None else (), keepdim=keepdim)
        if p == 0:
            return (x != 0).to(x.dtype).sum(dim=axes, keepdim=keepdim)
        if p == 1:
            return x.abs().sum(dim=axes, keepdim=keepdim)
        s = (x.abs() ** p).sum(dim=axes, keepdim=keepdim)
        nz = s != 0  # at the zero vector the gradient is 0 (as PyTorch's), not inf * 0 = NaN
        return (s.where(nz, 1.0) ** (1.0 / p)).where(nz, 0.0)

    @autocast_op("logsumexp")
    def logsumexp(self, dim, keepdim=False):
        """``log(sum(exp(x)))`` over ``dim`` without overflow."""
        axes = self._axes(dim)
        m = self.detach().amax(dim=axes, keepdim=True)
        m = m.where(m.isfinite(), 0.0)
        out = (self - m).exp().sum(dim=axes, keepdim=True).log() + m
        return out if keepdim else out.squeeze(axes)

    @autocast_op("softmax", dtype_at=2)
    def softmax(self, dim, dtype=None):
        x = self._float_input("softmax") if dtype is None else self.to(dtype)
        return R.Softmax.apply(x, dim=self._axes(dim)[0])

    @autocast_op("log_softmax", dtype_at=2)
    def log_softmax(self, dim, dtype=None):
        x = self._float_input("log_softmax") if dtype is None else self.to(dtype)
        return R.LogSoftmax.apply(x, dim=self._axes(dim)[0])

    def all(self, dim=None, keepdim=False):
        return Tensor._make(self._data.astype(bool).all(axis=self._axes(dim), keepdims=keepdim))

    def any(self, dim=None, keepdim=False):
        return Tensor._make(self._data.astype(bool).any(axis=self._axes(dim), keepdims=keepdim))

    def count_nonzero(self, dim=None):
        return (self != 0).sum(dim)

    @autocast_op("cumsum", dtype_at=2)
    def cumsum(self, dim, dtype=None):
        x = self if dtype is None else self.to(dtype)
        return R.CumSum.apply(x, axis=self._axes(dim)[0])

    # ------------------------------------------------------------------ shape
    def reshape(self, *shape):
        shape = _check_shape(_size_args(shape, "reshape"), self)
        try:
            out = S.Reshape.apply(self, shape=shape)
        except ValueError:
            raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size "
                               f"{self.numel()}") from None
        if out._data.base is not None:
            _share_view(out, self)
        return out

    def view(self, *shape):
        """The same data in another shape, never a copy: where the strides allow no such view
        (a transposed or sliced tensor), PyTorch's error, so writes are never lost to a copy."""
        if len(shape) == 1 and isinstance(shape[0], (backend.dtype, np.dtype)):
            raise NotImplementedError("view(dtype) is not supported; use .to(dtype)")
        size = _check_shape(_size_args(shape, "view"), self)
        arr = self._data
        # a descriptor with the same shape and strides (no data read): NumPy's in-place reshape
        # refuses exactly when a copy would be needed, for CuPy's arrays as for its own
        probe = np.lib.stride_tricks.as_strided(np.empty(1, np.dtype(f"V{arr.itemsize}")),
                                                arr.shape, arr.strides)
        try:
            probe.shape = size
        except AttributeError:
            raise RuntimeError("view size is not compatible with input tensor's size and stride "
                               "(at least one dimension spans across two contiguous subspaces). "
                               "Use .reshape(...) instead.") from None
        except ValueError:
            pass                        # a wrong element count: reshape names it
        return self.reshape(*size)

    def view_as(self, other):
        return self.reshape(other.shape)

    reshape_as = view_as

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = (R.normalize_axis(d, self.ndim)[0] for d in (start_dim, end_dim))
        if s > e:
            raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
        shape = self._data.shape
        return self.reshape(shape[:s] + (-1,) + shape[e + 1:]) if s <= e else self

    def unflatten(self, dim, sizes):
        d = self._axes(dim)[0]
        shape = self._data.shape
        return self.reshape(shape[:d] + tuple(sizes) + shape[d + 1:])

    def squeeze(self, dim=None):
        shape = self._data.shape
        if dim is None:
            new = tuple(s for s in shape if s != 1)
        else:
            axes = self._axes(dim)
            new = tuple(s for i, s in enumerate(shape) if not (i in axes and s == 1))
        return self.reshape(new) if new != shape else self._view_alias()

    def unsqueeze(self, dim):
        nd = self.ndim + 1
        if not -nd <= dim < nd:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-nd}, {nd - 1}], "
                             f"but got {dim})")
        d = dim % nd
        shape = self._data.shape
        return self.reshape(shape[:d] + (1,) + shape[d:])

    def _view_alias(self):
        return S.Reshape.apply(self, shape=self._data.shape)

    def permute(self, *dims):
        dims = _size_args(dims, "permute")
        if len(dims) != self.ndim:
            raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does "
                               f"not match the length of the desired ordering of dimensions i.e. "
                               f"input.dim() = {self.ndim} is not equal to len(dims) = {len(dims)}")
        axes = tuple(R.normalize_axis(d, self.ndim)[0] for d in dims) if self.ndim else dims
        if len(set(axes)) != len(axes):
            raise RuntimeError("permute(): duplicate dims are not allowed.")
        out = S.Permute.apply(self, axes=axes)
        _share_view(out, self)
        return out

    def transpose(self, dim0, dim1):
        nd = self.ndim
        if nd == 0:
            return self
        axes = list(range(nd))
        a, b = self._axes((dim0,))[0], self._axes((dim1,))[0]
        axes[a], axes[b] = axes[b], axes[a]
        return self.permute(*axes)

    swapaxes = swapdims = transpose

    def t(self):
        if self.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}D")
        return self.transpose(0, 1) if self.ndim == 2 else self

    def expand(self, *sizes):
        sizes = _size_args(sizes, "expand")
        shape = self._data.shape
        if len(sizes) < len(shape):
            raise RuntimeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater "
                               f"or equal to the number of dimensions in the tensor ({len(shape)})")
        lead = len(sizes) - len(shape)
        target = tuple(shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
        try:
            out = S.Expand.apply(self, shape=target)
        except ValueError:
            raise RuntimeError(f"expand: the expanded size of the tensor {list(sizes)} must match "
                               f"the existing size {list(shape)} at non-singleton dimensions") from None
        _share_view(out, self)
        return out

    def expand_as(self, other):
        return self.expand(other.shape)

    def broadcast_to(self, shape):
        return self.expand(shape)

    def repeat(self, *sizes):
        sizes = _size_args(sizes, "repeat")
        if len(sizes) < self.ndim:
            raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number "
                               "of dimensions of tensor")
        return S.Repeat.apply(self, reps=sizes)

    def repeat_interleave(self, repeats, dim=None):
        x = self.reshape(-1) if dim is None else self
        d = 0 if dim is None else self._axes(dim)[0]
        idx = np.repeat(np.arange(x.shape[d]), repeats)
        return x.index_select(d, Tensor._make(backend.to_device(idx, x.device)))

    def contiguous(self, memory_format=None):
        """Row-major data (a copy when not already); ``memory_format`` is accepted (ddp keeps
        every tensor row-major)."""
        if self._data.flags.c_contiguous:
            return self
        return E.Clone.apply(self)

    def clone(self):
        """A copy with its own storage, still connected to the graph."""
        return E.Clone.apply(self)

    def split(self, split_size_or_sections, dim=0):
        d = self._axes(dim)[0]
        n = self._data.shape[d]
        if isinstance(split_size_or_sections, int):
            size = split_size_or_sections
            if size < 0 or (size == 0 and n != 0):
                raise RuntimeError(f"split_size can only be 0 if dimension size is 0, but got "
                                   f"dimension size of {n}" if size == 0 else
                                   f"split expects split_size be non-negative, but got "
                                   f"split_size={size}")
            if size == 0:
                return (self,)
            sizes = [size] * (n // size) + ([n % size] if n % size else [])
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} "
                                   f"(input tensor's size at dimension {d}), but got "
                                   f"split_sizes={sizes}")
        return self._pieces(d, sizes, squeeze=False)

    def chunk(self, chunks, dim=0):
        if chunks <= 0:
            raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
        n = self._data.shape[self._axes(dim)[0]]
        size = -(-n // chunks) if n else 1
        return self.split(max(size, 1), dim)

    def unbind(self, dim=0):
        d = self._axes(dim)[0]
        return self._pieces(d, (1,) * self._data.shape[d], squeeze=True)

    def _pieces(self, d, sizes, squeeze):
        """Views of consecutive pieces along ``d`` from one graph node (see ``ops.shape.Split``)."""
        pieces = S.Split.apply(self, sizes=tuple(sizes), axis=d, squeeze=squeeze)
        lead, start = (slice(None),) * d, 0
        for piece, size in zip(pieces, sizes):
            _share_view(piece, self, lead + ((start,) if squeeze else (slice(start, start + size),)))
            start += size
        return pieces

    def narrow(self, dim, start, length):
        d = self._axes(dim)[0]
        n = self._data.shape[d]
        start = int(start) + n if int(start) < 0 else int(start)  # negative: from the end
        if not 0 <= start <= n or length < 0 or start + length > n:
            raise RuntimeError(f"narrow(): start ({start}) + length ({length}) exceeds dimension "
                               f"size ({n}) of dimension {d}")
        return self[(slice(None),) * d + (slice(start, start + length),)]

    # ------------------------------------------------------------------ diagonals, triangles
    def diagonal(self, offset=0, dim1=0, dim2=1):
        """Diagonal ``offset`` of the matrices in dimensions ``dim1``/``dim2``, moved last.

        Example:
            >>> ddp.arange(9.).view(3, 3).diagonal(1)
            tensor([1., 5.])
        """
        d1, d2 = (R.normalize_axis(d, self.ndim)[0] for d in (dim1, dim2))
        if d1 == d2:
            raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
        return M.Diagonal.apply(self, offset=int(offset), dim1=d1, dim2=d2)

    def diag_embed(self, offset=0, dim1=-2, dim2=-1):
        """Write the last dimension onto diagonal ``offset`` of new dimensions ``dim1``, ``dim2``.

        Example:
            >>> ddp.tensor([1., 2.]).diag_embed()
            tensor([[1., 0.],
                    [0., 2.]])
        """
        ndim = self.ndim + 1
        for d in (dim1, dim2):
            if not -ndim <= d < ndim:
                raise IndexError(f"Dimension out of range (expected to be in range of "
                                 f"[{-ndim}, {ndim - 1}], but got {d})")
        if dim1 % ndim == dim2 % ndim:
            raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
        if self.ndim == 0:
            raise RuntimeError("diag_embed(): expected a tensor with at least 1 dimension")
        return M.DiagEmbed.apply(self, offset=int(offset), dim1=dim1, dim2=dim2)

    def diag(self, diagonal=0):
        """A 1-D tensor becomes a square matrix with it on diagonal ``diagonal``; a 2-D tensor
        gives that diagonal back.

        Example:
            >>> ddp.tensor([1., 2.]).diag()
            tensor([[1., 0.],
                    [0., 2.]])
        """
        if self.ndim == 1:
            return self.diag_embed(diagonal, 0, 1)
        if self.ndim == 2:
            return self.diagonal(diagonal)
        raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {self.ndim}D")

    def _triangle(self, name, k, upper):
        if self.ndim < 2:
            raise RuntimeError(f"{name}: input tensor must have at least 2 dimensions")
        return M.Triangle.apply(self, k=int(k), upper=upper)

    def triu(self, diagonal=0):
        """The upper triangle (from diagonal ``diagonal``) of the last two dimensions; zeros below.

        Example:
            >>> ddp.ones(2, 2).triu()
            tensor([[1., 1.],
                    [0., 1.]])
        """
        return self._triangle("triu", diagonal, True)

    def tril(self, diagonal=0):
        """The lower triangle (to diagonal ``diagonal``) of the last two dimensions; zeros above."""
        return self._triangle("tril", diagonal, False)

    def triu_(self, diagonal=0):
        return self._inplace(lambda s: s.triu(diagonal))

    def tril_(self, diagonal=0):
        return self._inplace(lambda s: s.tril(diagonal))

    def trace(self):
        """Sum of the main diagonal of a 2-D tensor."""
        if self.ndim != 2:
            raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {self.ndim}")
        return self.diagonal().sum()

    def outer(self, vec2):
        """Outer product of two 1-D tensors."""
        if self.ndim != 1 or vec2.ndim != 1:
            raise RuntimeError(f"outer: expected 1-D tensors, got {self.ndim}-D and {vec2.ndim}-D")
        return self.unsqueeze(1) * vec2.unsqueeze(0)

    ger = outer

    def flip(self, *dims):
        dims = _size_args(dims, "flip")
        index = [slice(None)] * self.ndim
        for d in self._axes(dims):
            index[d] = slice(None, None, -1)
        return self[tuple(index)]

    def roll(self, shifts, dims=None):
        if dims is None:
            return self.reshape(-1).roll(shifts, 0).reshape(self.shape)
        shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        out = self
        for s, d in zip(shifts, dims):
            n = self._data.shape[d]
            idx = (np.arange(n) - s) % n
            out = out.index_select(d, Tensor._make(backend.to_device(idx, self.device)))
        return out

    def gather(self, dim, index):
        """``out[i][j] = self[i][index[i][j]]`` along ``dim`` (``index`` an int64 tensor)."""
        idx = _int_index("gather", index, self)
        d = self._axes(dim)[0]
        if idx.ndim != self.ndim:
            raise RuntimeError(f"gather(): Index tensor must have the same number of dimensions as "
                               f"input tensor (index {tuple(idx.shape)}, input {tuple(self.shape)})")
        _check_index_range(idx, self._data.shape[d], d)
        return S.Gather.apply(self, axis=d, index=idx)

    def take_along_dim(self, indices, dim):
        return self.gather(dim, indices)

    def scatter(self, dim, index, src=None, value=None, reduce=None):
        """Out-of-place ``scatter_``: write ``src`` (or ``value``) at ``index`` along ``dim``."""
        idx = _int_index("scatter", index, self)
        d = self._axes(dim)[0]
        if src is None:
            src = value
        if reduce == "add":
            return self.scatter_add(dim, index, src if isinstance(src, Tensor) else
                                    self.new_full(idx.shape, src))
        if reduce is not None:
            raise NotImplementedError(f"scatter(reduce={reduce!r}) is not supported; use 'add'")
        if not isinstance(src, Tensor):
            src = self.new_full(tuple(idx.shape), src)
        _check_index_range(idx, self._data.shape[d], d)
        return S.Scatter.apply(self, src.to(self.dtype), axis=d, index=idx)

    def scatter_add(self, dim, index, src):
        idx = _int_index("scatter_add", index, self)
        d = self._axes(dim)[0]
        _check_index_range(idx, self._data.shape[d], d)
        part = src[tuple(slice(0, s) for s in idx.shape)] if tuple(src.shape) != tuple(idx.shape) \
            else src
        return self + S.GatherScatter.apply(part.to(self.dtype), shape=self._data.shape, axis=d,
                                            index=idx)

    def index_select(self, dim, index):
        idx = _int_index("index_select", index, self)
        d = self._axes(dim)[0]
        n = self._data.shape[d] if self.ndim else 1
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
            bad = int(idx.max()) if int(idx.max()) >= n else int(idx.min())
            # PyTorch's CPU kernel: IndexError along dimension 0, RuntimeError along the others
            raise (IndexError if d == 0 else RuntimeError)(
                f"index_select(): index {bad} is out of range for dimension {d} with size {n} "
                f"(index out of range in self)")
        return self[(slice(None),) * d + (idx.reshape(-1) if idx.ndim == 0 else idx,)]

    def select(self, dim, index):
        """The slice at ``index`` of dimension ``dim`` (that dimension removed), a view."""
        d = R.normalize_axis(dim, self.ndim)[0]
        n = self._data.shape[d]
        if not -n <= index < n:
            raise IndexError(f"select(): index {index} out of range for tensor of size "
                             f"{list(self.shape)} at dimension {d}")
        return self[(slice(None),) * d + (index,)]

    def take(self, index):
        """Elements of the flattened tensor at ``index`` (shaped like ``index``)."""
        idx = _int_index("take", index, self)
        n = self.numel()
        if idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
            bad = int(idx.max()) if int(idx.max()) >= n else int(idx.min())
            raise IndexError(f"out of range: tried to access index {bad} on a tensor of {n} "
                             f"elements.")
        return self.reshape(-1)[Tensor._make(idx)]

    def index_add(self, dim, index, source, alpha=1):
        idx = _int_index("index_add", index, self)
        d = self._axes(dim)[0]
        src = source * alpha if alpha != 1 else source
        return self + S.scatter_into_zeros(src.to(self.dtype), self._data.shape,
                                           (slice(None),) * d + (idx,))

    def masked_fill(self, mask, value):
        """``value`` where ``mask`` is True, this tensor elsewhere."""
        m = mask._data if isinstance(mask, Tensor) else mask
        if m.dtype != np.bool_:
            raise RuntimeError(f"masked_fill only supports boolean masks, but got mask with dtype "
                               f"{backend.from_numpy_dtype(m.dtype).name}")
        if isinstance(value, Tensor) and value.ndim == 0 and not value.requires_grad:
            value = value.item()
        out = where(mask, value, self)
        return out if out._data.dtype == self._data.dtype else out.to(self.dtype)  # keeps the dtype

    def masked_select(self, mask):
        m = mask._data if isinstance(mask, Tensor) else mask
        m = backend.get_array_module(m).broadcast_to(m, self._data.shape)
        return self.expand(m.shape)[Tensor._make(m)] if m.shape != self._data.shape else self[mask]

    def where(self, condition, other):
        return where(condition, self, other)

    def nonzero(self, as_tuple=False):
        xp = backend.get_array_module(self._data)
        nz = xp.nonzero(self._data)
        if as_tuple:
            return tuple(Tensor._make(i.astype(np.int64)) for i in nz)
        return Tensor._make(xp.stack(nz, axis=1).astype(np.int64) if nz else
                            xp.zeros((0, 0), np.int64))

    def argsort(self, dim=-1, descending=False):
        xp = backend.get_array_module(self._data)
        d = self._axes(dim)[0]
        idx = xp.argsort(-self._data if descending else self._data, axis=d, kind="stable")
        return Tensor._make(idx.astype(np.int64))

    def sort(self, dim=-1, descending=False):
        idx = self.argsort(dim, descending)
        return MinMax(self.gather(self._axes(dim)[0], idx), idx)

    def kthvalue(self, k, dim=-1, keepdim=False):
        """The ``k``-th smallest element along ``dim`` (1-based) and its index.

        Example:
            >>> ddp.tensor([3., 1., 2.]).kthvalue(2)
            MinMax(values=tensor(2.), indices=tensor(2))
        """
        d = self._axes(dim)[0]
        n = self._data.shape[d] if self.ndim else 1
        if not 1 <= k <= n:
            raise RuntimeError(f"kthvalue(): selected number k out of range for dimension {d} "
                               f"(k={k}, size {n}, input shape {list(self.shape)})")
        values, idx = self.sort(d)
        values, idx = values.narrow(d, k - 1, 1), idx.narrow(d, k - 1, 1)
        return MinMax(values, idx) if keepdim else MinMax(values.squeeze(d), idx.squeeze(d))

    def nan_to_num(self, nan=0.0, posinf=None, neginf=None):
        """NaN, +inf and -inf replaced by ``nan``, ``posinf`` and ``neginf`` (default: the
        dtype's largest and lowest finite values); the gradient passes where values are kept."""
        if not self.is_floating_point():
            return self.clone()
        info = np.finfo(self._data.dtype)
        hi = float(info.max) if posinf is None else posinf
        lo = float(info.min) if neginf is None else neginf
        x = where(self.isnan(), self.new_full((), nan), self)
        x = where(x == float("inf"), x.new_full((), hi), x)
        return where(x == float("-inf"), x.new_full((), lo), x)

    def tensor_split(self, indices_or_sections, dim=0):
        """Pieces along ``dim``: ``n`` sections as equal as possible (the first ``size % n`` one
        longer), or cut before each index of a list."""
        d = self._axes(dim)[0]
        n = self._data.shape[d]
        if isinstance(indices_or_sections, int):
            k = indices_or_sections
            if k <= 0:
                raise RuntimeError(f"tensor_split(): number of sections must be larger than 0, "
                                   f"got {k}")
            q, r = divmod(n, k)
            bounds = [i * q + min(i, r) for i in range(k + 1)]
        else:
            cuts = [int(i) for i in (indices_or_sections.tolist() if isinstance(
                indices_or_sections, Tensor) else indices_or_sections)]
            bounds = [0] + [min(max(c, 0), n) for c in cuts] + [n]
        return tuple(self.narrow(d, a, max(b - a, 0)) for a, b in zip(bounds, bounds[1:]))

    def bincount(self, weights=None, minlength=0):
        """How often each value 0..max occurs in a 1-D non-negative integer tensor (summed
        ``weights`` instead of counts when given)."""
        if self.ndim != 1 or self._data.dtype.kind not in "iu" or (
                self.numel() and int(self._data.min()) < 0):
            raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
        xp = backend.get_array_module(self._data)
        w = None if weights is None else weights.detach()._data
        out = xp.bincount(self._data, weights=w, minlength=minlength)
        return Tensor._make(out if w is not None else out.astype(np.int64))

    def topk(self, k, dim=-1, largest=True, sorted=True):
        d = self._axes(dim)[0]
        n = self._data.shape[d] if self.ndim else 1
        if not 0 <= k <= n:
            raise RuntimeError(f"topk(): selected index k out of range (k={k} for dimension {d} "
                               f"of size {n}, input shape {list(self.shape)})")
        values, idx = self.sort(d, descending=largest)
        return MinMax(values.narrow(d, 0, k), idx.narrow(d, 0, k))

    def unique(self, sorted=True, return_inverse=False, return_counts=False):
        xp = backend.get_array_module(self._data)
        res = xp.unique(self._data, return_inverse=return_inverse, return_counts=return_counts)
        if not isinstance(res, tuple):
            return Tensor._make(res)
        return tuple(Tensor._make(r if i == 0 else r.astype(np.int64).reshape(
            self._data.shape if (return_inverse and i == 1) else -1)) for i, r in enumerate(res))

    # ------------------------------------------------------------------ new_* constructors
    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        return C.tensor(data, dtype=dtype or self.dtype, device=device or self.device,
                      requires_grad=requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return C.zeros(*size, dtype=dtype or self.dtype, device=device or self.device,
                     requires_grad=requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return C.ones(*size, dtype=dtype or self.dtype, device=device or self.device,
                    requires_grad=requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return C.full(size, fill_value, dtype=dtype or self.dtype, device=device or self.device,
                    requires_grad=requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        return self.new_zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)

    def data_ptr(self):
        d = self._data
        return d.ctypes.data if isinstance(d, np.ndarray) else d.data.ptr

    def untyped_storage(self):
        return self._data.base if self._data.base is not None else self._data


# ---------------------------------------------------------------------- helpers and functions

def _integer_zero_division(op, a, b):
    """Integer division or remainder by zero is PyTorch's RuntimeError (NumPy would give 0 and a
    warning); floating point division by zero stays inf/nan, as in PyTorch."""
    def kind(x):
        if isinstance(x, Tensor):
            return x._data.dtype.kind
        return "b" if isinstance(x, bool) else "i" if isinstance(x, numbers.Integral) else "f"
    if kind(a) not in "biu" or kind(b) not in "biu":
        return
    zero = bool((b._data == 0).any()) if isinstance(b, Tensor) else b == 0
    if zero:
        shapes = [list(x.shape) if isinstance(x, Tensor) else type(x).__name__ for x in (a, b)]
        raise RuntimeError(f"ZeroDivisionError: integer {op} by zero (operands {shapes[0]} and "
                           f"{shapes[1]})")


def _check_shape(shape, t):
    """Refuse what PyTorch refuses in a target shape before NumPy reinterprets it."""
    for i, d in enumerate(shape):
        if d < -1:
            raise RuntimeError(f"invalid shape dimension {d} at index {i} of shape {list(shape)}")
    if list(shape).count(-1) > 1:
        raise RuntimeError(f"only one dimension can be inferred (shape {list(shape)} for a tensor "
                           f"of shape {list(t.shape)})")
    return shape


def _check_index_range(idx, size, dim):
    """gather/scatter indices must lie in [0, size): PyTorch does not wrap negative ones."""
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= size:
            raise RuntimeError(f"index {hi if hi >= size else lo} is out of bounds for dimension "
                               f"{dim} with size {size}")


def _alpha_first(other, alpha):
    """PyTorch's deprecated ``add_(alpha, other)`` order (a number, then the tensor), still
    accepted by torch 2 and written by old programs (``p.data.add_(-lr, p.grad.data)``)."""
    if isinstance(alpha, Tensor) and isinstance(other, numbers.Number):
        return alpha, other
    return other, alpha


def _init(t, arr):
    t._data = arr
    t._requires_grad = False
    t.grad = None
    t.grad_fn = None
    t._output_nr = 0
    t._vc = [0]
    t._hooks = None
    t._post_acc_hooks = None


def _share_view(view, base, index=None):
    """``view`` shares ``base``'s storage: it shares the version counter, and under autograd
    remembers its base (and the index, for views made by indexing) for in-place edits."""
    view._vc = base._vc
    if view._requires_grad:
        view._view_of = (base, index)


def _rebuild(arr, device, requires_grad):
    t = Tensor._make(backend.to_device(arr, backend.as_device(device)))
    if requires_grad:
        t.requires_grad_(True)
    return t


def _add_hook(hooks, hook):
    """Store ``hook`` in ``hooks`` (an OrderedDict: a plain dict cannot be weakly referenced)
    under a new handle's id."""
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    return handle


_FULL_SUM = {"axis": None, "keepdims": False, "dtype": None}  # Tensor.sum's keywords for a full sum


def _np_aliases(dim, keepdim, axis, keepdims):
    """PyTorch accepts NumPy's ``axis``/``keepdims`` spellings for reductions."""
    return (axis if dim is None else dim), (keepdims if keepdims is not None else keepdim)


def _xp_ufunc(t, name):
    return getattr(backend.get_array_module(t._data), name)


def _int_index(name, index, target):
    """The integer array of an index argument, on ``target``'s device (a list becomes one there)."""
    if isinstance(index, Tensor):
        idx = index._data
    else:
        idx = backend.to_device(np.asarray(index), target.device)
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"{name}(): Expected dtype int64 for index (got "
                           f"{backend.from_numpy_dtype(idx.dtype).name})")
    return idx


def _arg_reduce(t, fn, dim, keepdim):
    data = t._data
    if dim is None:
        out = getattr(data.reshape(-1), fn)()
        if keepdim:
            out = out.reshape((1,) * data.ndim)
    else:
        out = getattr(data, fn)(axis=t._axes(dim)[0], keepdims=keepdim)
    xp = backend.get_array_module(data)
    return Tensor._make(xp.asarray(out, dtype=np.int64))


def _true_divide(a, b):
    """``a / b``: integer operands divide as the default float dtype, as in PyTorch."""
    a, b = E.promote("div", a, b)
    ref = a if isinstance(a, Tensor) else b
    if ref._data.dtype.kind in "biu" and not (isinstance(a, float) or isinstance(b, float)):
        fl = backend.get_default_dtype()
        a = a.to(fl) if isinstance(a, Tensor) else float(a)
        b = b.to(fl) if isinstance(b, Tensor) else float(b)
    return E.binary(E.Div, "div", a, b)


@autocast_op("matmul")
def matmul(a, b):
    """Matrix product with NumPy's broadcasting rules; names the shapes when they don't fit.

    Example:
        >>> ddp.matmul(ddp.ones(2, 3), ddp.ones(3)).shape
        ddp.Size([2])
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"matmul(): argument 'other' must be Tensor, not "
                        f"{type(b if isinstance(a, Tensor) else a).__name__}")
    if a._data.ndim == 0 or b._data.ndim == 0:
        raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are "
                           f"{a.ndim}D and {b.ndim}D")
    if type(a._data) is not type(b._data):
        raise RuntimeError(f"matmul: expected all tensors to be on the same device, but found "
                           f"{a.device} and {b.device} (shapes {tuple(a.shape)} and {tuple(b.shape)})")
    if a._data.dtype != b._data.dtype:
        raise RuntimeError(f"matmul: expected both operands to have the same dtype, but got "
                           f"{a.dtype.name} for {tuple(a.shape)} and {b.dtype.name} for "
                           f"{tuple(b.shape)}")
    ka = a._data.shape[-1]
    kb = b._data.shape[-2] if b._data.ndim > 1 else b._data.shape[0]
    if ka != kb:
        sa = "x".join(map(str, a._data.shape))
        sb = "x".join(map(str, b._data.shape))
        raise RuntimeError(f"matmul: mat1 and mat2 shapes cannot be multiplied ({sa} and {sb})")
    try:
        return S.Matmul.apply(a, b)
    except ValueError:
        raise RuntimeError(f"matmul: the batch dimensions of {tuple(a.shape)} and {tuple(b.shape)} "
                           f"cannot be broadcast together") from None


def mm(a, b):
    """Matrix product of two 2-D tensors."""
    if a.ndim != 2 or b.ndim != 2:
        raise RuntimeError(f"mm: self must be a matrix and mat2 must be a matrix (got {a.ndim}D "
                           f"and {b.ndim}D)")
    return matmul(a, b)


def bmm(a, b):
    """Batched matrix product of (b, n, m) and (b, m, p) tensors."""
    if a.ndim != 3 or b.ndim != 3:
        raise RuntimeError(f"bmm: batch1 must be a 3D tensor and batch2 must be a 3D tensor (got "
                           f"{tuple(a.shape)} and {tuple(b.shape)})")
    if a.shape[0] != b.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    return matmul(a, b)


_graph.bind_tensor(Tensor, tnp)  # the one seam: the floors below hand back Tensors through it

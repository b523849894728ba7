"""A simulated CUDA device: a CuPy-shaped module over NumPy, so CI (which has no GPU) runs the
CUDA code path of ddp.

This is test infrastructure, not a product feature. ``tests/conftest.py`` hands it to ddp's
backend (``ddp.backend.use_cuda_module(simcuda.cupy, simcuda.cupyx)``) for every ``gpu``-marked
test when no real GPU is visible; on a machine with a GPU the same tests run on CuPy.

What it reproduces, because each of these broke (or would break) ddp on a real GPU:

* arrays are their own type (:class:`ndarray`), not NumPy's: ``np.asarray(a)`` / ``__array__``
  raise ``TypeError`` as CuPy's do (implicit device->host copies are refused), and an operation
  that mixes a device array with a NumPy array raises ``TypeError`` ("Unsupported type");
* every array has a device index; the current device is per thread (``cuda.Device(i)`` as a
  context, ``.use()``), and an operation on an array that is not on the current device raises
  ``ValueError`` as CuPy does without peer access — so work on a helper thread that forgot to
  select the device fails here as it does on GPU 1 of a real machine;
* reductions and scalar indexing give 0-d device arrays, not host scalars; ``bool()``, ``int()``,
  ``float()``, ``.item()``, ``.get()``, ``tolist()`` are device->host synchronisations and are
  counted in :data:`stats` (tests assert hot paths make none);
* ``where`` needs an array condition (a Python bool fails, as in CuPy);
* ``cupyx.scatter_add`` / ``ufunc.at`` accept only CuPy's dtypes (int32, uint32, uint64,
  float16, float32, float64);
* an in-place operation whose output overlaps an input at a different offset
  (``a[1:] += a[:-1]``) raises: on a GPU the threads race and the result is undefined;
* streams and events exist with CuPy's names (``cuda.Stream``, ``cuda.Event``,
  ``get_current_stream``); work runs eagerly, so they order nothing, but their use is checked
  (an event must be recorded before it is waited on).

Example:
    >>> from tests import simcuda
    >>> a = simcuda.cupy.arange(3.0)
    >>> type(a.sum()).__name__, a.sum().get()
    ('ndarray', array(3.))
"""
from __future__ import annotations

import os
import threading
import types

import numpy as np

DEVICE_COUNT = int(os.environ.get("DDP_SIMCUDA_DEVICES", "4"))
SCATTER_DTYPES = tuple(np.dtype(d) for d in (np.int32, np.uint32, np.uint64, np.float16,
                                             np.float32, np.float64))
# How many device->host and host->device transfers happened (tests reset and read it).
stats = {"to_host": 0, "to_device": 0}
_local = threading.local()


def reset_stats():
    stats["to_host"] = stats["to_device"] = 0


def _current() -> int:
    return getattr(_local, "device", 0)


# --------------------------------------------------------------------------- arrays

class ndarray:
    """A device array: a NumPy array that lives on simulated GPU ``device.id``."""
    __slots__ = ("_a", "_dev")
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, *, _array=None, _device=None):
        self._a = np.empty(shape, dtype) if _array is None else _array
        self._dev = _current() if _device is None else _device

    # what CuPy refuses
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    # host transfers (counted)
    def get(self, stream=None, order="C", out=None, blocking=True):
        stats["to_host"] += 1
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order)

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        stats["to_device"] += 1
        self._a[...] = arr

    def item(self):
        stats["to_host"] += 1
        return self._a.item()

    def tolist(self):
        stats["to_host"] += 1
        return self._a.tolist()

    def __bool__(self):
        stats["to_host"] += 1
        return bool(self._a)

    def __int__(self):
        stats["to_host"] += 1
        return int(self._a)

    def __float__(self):
        stats["to_host"] += 1
        return float(self._a)

    def __index__(self):
        stats["to_host"] += 1
        return self._a.__index__()

    def __complex__(self):
        stats["to_host"] += 1
        return complex(self._a)

    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield self[i]

    def __reduce__(self):  # pickles through the host, as CuPy arrays do
        return (_rebuild, (self._a, self._dev))

    # metadata (host-side, no synchronisation)
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    device = property(lambda self: Device(self._dev))
    data = property(lambda self: MemoryPointer(self))

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "version": 3,
                "data": (self._a.__array_interface__["data"][0], False),
                "strides": None if self._a.flags.c_contiguous else self.strides}

    @property
    def base(self):
        b = self._a.base
        return None if not isinstance(b, np.ndarray) else _wrap(b, self._dev)

    T = property(lambda self: _wrap(self._a.T, self._dev))
    real = property(lambda self: _wrap(self._a.real, self._dev))
    imag = property(lambda self: _wrap(self._a.imag, self._dev))
    mT = property(lambda self: _wrap(np.swapaxes(self._a, -1, -2), self._dev))

    def __getattr__(self, name):  # methods: sum, reshape, astype, view, transpose, fill, ...
        if name in ("_a", "_dev") or name.startswith("__"):  # no __array_interface__ etc.
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap_result(attr, self._dev)

        def method(*args, **kwargs):
            _check_device(self, f"ndarray.{name}")
            return _call(attr, args, kwargs, f"ndarray.{name}")
        return method

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # indexing
    def __getitem__(self, key):
        _check_device(self, "__getitem__")
        return _wrap_result(self._a[_unwrap_index(key, self)], self._dev)

    def __setitem__(self, key, value):
        _check_device(self, "__setitem__")
        key = _unwrap_index(key, self)
        if isinstance(value, ndarray):
            _check_device(value, "__setitem__")
            _check_race(self._a[key] if not isinstance(self._a[key], np.generic) else None,
                        [value._a], "__setitem__")
            value = value._a
        elif isinstance(value, np.ndarray):
            raise TypeError(f"Unsupported type {type(value)}: assign a cupy.ndarray "
                            "(cupy.asarray copies host data explicitly)")
        self._a[key] = value

    # NumPy protocol: np.exp(device_array) dispatches here, as it does to CuPy
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _ufunc_call(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        ours = getattr(cupy, func.__name__, None)
        if ours is None:
            return NotImplemented
        return ours(*args, **kwargs)


def _rebuild(array, dev):
    return ndarray(None, _array=np.array(array), _device=dev)


def _binary(ufunc, reflected=False, inplace=False):
    if inplace:
        def op(self, other):
            _ufunc_call(ufunc, "__call__", (self, other), {"out": (self,)})
            return self
    elif reflected:
        def op(self, other):
            return _ufunc_call(ufunc, "__call__", (other, self), {})
    else:
        def op(self, other):
            return _ufunc_call(ufunc, "__call__", (self, other), {})
    return op


for _name, _uf in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                   ("truediv", np.true_divide), ("floordiv", np.floor_divide),
                   ("mod", np.remainder), ("pow", np.power), ("matmul", np.matmul),
                   ("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor),
                   ("lshift", np.left_shift), ("rshift", np.right_shift)]:
    setattr(ndarray, f"__{_name}__", _binary(_uf))
    setattr(ndarray, f"__r{_name}__", _binary(_uf, reflected=True))
    setattr(ndarray, f"__i{_name}__", _binary(_uf, inplace=True))
for _name, _uf in [("lt", np.less), ("le", np.less_equal), ("gt", np.greater),
                   ("ge", np.greater_equal), ("eq", np.equal), ("ne", np.not_equal)]:
    setattr(ndarray, f"__{_name}__", _binary(_uf))
ndarray.__neg__ = lambda self: _ufunc_call(np.negative, "__call__", (self,), {})
ndarray.__pos__ = lambda self: _ufunc_call(np.positive, "__call__", (self,), {})
ndarray.__abs__ = lambda self: _ufunc_call(np.absolute, "__call__", (self,), {})
ndarray.__invert__ = lambda self: _ufunc_call(np.invert, "__call__", (self,), {})
ndarray.__hash__ = None


class MemoryPointer:
    """``a.data``: the device pointer of an array (``.ptr``) and its device."""

    def __init__(self, array):
        self.ptr = array._a.__array_interface__["data"][0]
        self.device = array.device
        self.device_id = array._dev


# --------------------------------------------------------------------------- the checks

def _check_device(a, where):
    if a._dev != _current():
        raise ValueError(f"The device where the array resides ({a._dev}) is different from the "
                         f"current device ({_current()}). Peer access is unavailable between "
                         f"these devices. (simulated CUDA, in {where})")


def _unwrap(value, where, allow_host=False):
    """Device arrays -> their NumPy arrays (on the current device); host arrays refused."""
    if isinstance(value, ndarray):
        _check_device(value, where)
        return value._a
    if isinstance(value, np.ndarray) and not allow_host:
        raise TypeError(f"Unsupported type {type(value)} in {where}: a NumPy array cannot meet "
                        "a CUDA array (copy it with cupy.asarray)")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, where, allow_host) for v in value)
    return value


def _unwrap_index(key, arr=None):
    """Indices may be device arrays, host ints/slices/lists, or NumPy arrays, which CuPy copies to
    the device (a host->device transfer, counted)."""
    if isinstance(key, tuple):
        return tuple(_unwrap_index(k, arr) for k in key)
    if isinstance(key, ndarray):
        _check_device(key, "__getitem__")
        return key._a
    if isinstance(key, np.ndarray):
        stats["to_device"] += 1
        return key
    if isinstance(key, list):
        return [_unwrap_index(k, arr) for k in key]
    return key


def _check_race(out, inputs, where):
    """An output that overlaps an input at another position races on a GPU."""
    if out is None:
        return
    o = out.__array_interface__
    for a in inputs:
        if not isinstance(a, np.ndarray) or not np.shares_memory(out, a):
            continue
        i = a.__array_interface__
        same = i["data"][0] == o["data"][0] and a.strides == out.strides and a.shape == out.shape
        if not same:
            raise RuntimeError(f"simulated CUDA race in {where}: the output overlaps an input at "
                               f"another offset (on a GPU the result is undefined; copy first)")


def _wrap(a, dev):
    return ndarray(None, _array=a, _device=dev)


def _wrap_result(value, dev=None):
    dev = _current() if dev is None else dev
    if isinstance(value, np.ndarray):
        return _wrap(value, dev)
    if isinstance(value, np.generic):  # CuPy gives 0-d device arrays, never host scalars
        return _wrap(np.asarray(value), dev)
    if isinstance(value, tuple):
        return tuple(_wrap_result(v, dev) for v in value)
    if isinstance(value, list):
        return [_wrap_result(v, dev) for v in value]
    return value


def _call(fn, args, kwargs, where):
    args = tuple(_unwrap(a, where) for a in args)
    kwargs = {k: _unwrap(v, where) for k, v in kwargs.items()}
    return _wrap_result(fn(*args, **kwargs))


def _ufunc_call(ufunc, method, inputs, kwargs):
    where = f"{ufunc.__name__}{'' if method == '__call__' else '.' + method}"
    if method == "at" and np.dtype(getattr(inputs[0], "dtype", None)) not in SCATTER_DTYPES:
        raise TypeError(f"cupy.{where} does not support dtype {inputs[0].dtype} (CuPy's "
                        f"atomics: int32, uint32, uint64, float16, float32, float64)")
    if method == "at":  # ufunc.at(a, indices, b): indices as in a[indices]
        ins = (_unwrap(inputs[0], where), _unwrap_index(inputs[1])) + \
            tuple(_unwrap(x, where) for x in inputs[2:])
    else:
        ins = tuple(_unwrap(x, where) for x in inputs)
    out = kwargs.get("out")
    if out is not None:
        out = out if isinstance(out, tuple) else (out,)
        outs = tuple(_unwrap(o, where) for o in out)
        for o in outs:
            _check_race(o, ins, where)
        kwargs = dict(kwargs, out=outs)
    if method == "at":
        _check_race(ins[0], ins[2:], where)
    kwargs = {k: (_unwrap(v, where) if k != "out" else v) for k, v in kwargs.items()}
    result = getattr(ufunc, method)(*ins, **kwargs)
    if out is not None:
        return out[0] if len(out) == 1 else out
    return _wrap_result(result)


class _Ufunc:
    """``cupy.add`` and friends: calls, ``at``, ``reduce``, ``accumulate``, ``reduceat``, ``outer``."""

    def __init__(self, ufunc):
        self._uf = ufunc
        self.__name__ = ufunc.__name__
        self.nin, self.nout = ufunc.nin, ufunc.nout

    def __call__(self, *args, **kwargs):
        return _ufunc_call(self._uf, "__call__", args, kwargs)

    def __getattr__(self, method):
        return lambda *args, **kwargs: _ufunc_call(self._uf, method, args, kwargs)


# --------------------------------------------------------------------------- the module

def _host_to_device(fn_name):
    def convert(obj, dtype=None, *args, **kwargs):
        if isinstance(obj, ndarray):
            if obj._dev != _current():  # CuPy copies between devices
                obj = _wrap(obj._a.copy(), _current())
            elif fn_name == "asarray" and (dtype is None or np.dtype(dtype) == obj.dtype):
                return obj
            return _wrap(getattr(np, fn_name)(obj._a, dtype, *args, **kwargs), _current())
        if isinstance(obj, np.ndarray) or isinstance(obj, (list, tuple)) and _has_host_array(obj):
            stats["to_device"] += 1
        obj = _unwrap(obj, fn_name, allow_host=True)
        return _wrap(np.array(getattr(np, fn_name)(obj, dtype, *args, **kwargs)), _current())
    return convert


def _has_host_array(obj):
    return any(isinstance(o, np.ndarray) or isinstance(o, (list, tuple)) and _has_host_array(o)
               for o in obj)


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(out=out)
    return np.asarray(a)


def get_array_module(*args):
    return cupy if any(isinstance(a, ndarray) for a in args) else np


def where(condition, x=None, y=None):
    if not isinstance(condition, ndarray):  # cupy.where calls condition.astype(...)
        raise AttributeError(f"'{type(condition).__name__}' object has no attribute 'astype' "
                             "(cupy.where needs a cupy.ndarray condition; simulated CUDA)")
    if x is None and y is None:
        return _call(np.nonzero, (condition,), {}, "where")
    return _call(np.where, (condition, x, y), {}, "where")


def shares_memory(a, b, max_work=None):
    return isinstance(a, ndarray) and isinstance(b, ndarray) and a._dev == b._dev \
        and np.shares_memory(a._a, b._a)


def may_share_memory(a, b, max_work=None):
    return isinstance(a, ndarray) and isinstance(b, ndarray) and a._dev == b._dev \
        and np.may_share_memory(a._a, b._a)


def copyto(dst, src, casting="same_kind", where=None):
    _check_race(_unwrap(dst, "copyto"), [_unwrap(src, "copyto")], "copyto")
    np.copyto(_unwrap(dst, "copyto"), _unwrap(src, "copyto"), casting=casting,
              where=True if where is None else _unwrap(where, "copyto"))


class _Module(types.ModuleType):
    """``cupy``: the names defined here, else NumPy's, wrapped to take and give device arrays."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(np, name)
        if isinstance(attr, np.ufunc):
            wrapped = _Ufunc(attr)
        elif isinstance(attr, types.ModuleType):
            wrapped = _submodule(f"cupy.{name}", attr)
        elif isinstance(attr, type) or not callable(attr):
            wrapped = attr               # dtypes, np.newaxis, np.pi, np.inf, finfo/iinfo
        else:
            def wrapped(*args, _fn=attr, _name=name, **kwargs):
                return _call(_fn, args, kwargs, _name)
            wrapped.__name__ = name
        setattr(self, name, wrapped)
        return wrapped


def _submodule(name, np_module):
    mod = types.ModuleType(name)

    def getattr_(attr_name):
        attr = getattr(np_module, attr_name)
        if isinstance(attr, types.ModuleType):   # cupy.lib.stride_tricks
            return _submodule(f"{name}.{attr_name}", attr)
        if not callable(attr) or isinstance(attr, type):
            return attr
        return lambda *args, **kwargs: _call(attr, args, kwargs, f"{name}.{attr_name}")
    mod.__getattr__ = getattr_
    return mod


class _IndexGrid:
    """``cupy.ogrid`` / ``mgrid`` / ``r_`` / ``c_``: NumPy's, giving device arrays."""

    def __init__(self, grid):
        self._grid = grid

    def __getitem__(self, key):
        return _wrap_result(self._grid[key])


cupy = _Module("cupy", "A simulated CuPy (tests/simcuda).")
cupy.ogrid, cupy.mgrid = _IndexGrid(np.ogrid), _IndexGrid(np.mgrid)
cupy.r_, cupy.c_ = _IndexGrid(np.r_), _IndexGrid(np.c_)
cupy.ndarray = ndarray
cupy.array = _host_to_device("array")
cupy.asarray = _host_to_device("asarray")
cupy.asanyarray = cupy.asarray
cupy.asnumpy = asnumpy
cupy.get_array_module = get_array_module
cupy.where = where
cupy.shares_memory = shares_memory
cupy.may_share_memory = may_share_memory
cupy.copyto = copyto
cupy.__version__ = "14.2.0+simulated"
cupy.is_simulated = True


# --------------------------------------------------------------------------- cupy.cuda

class Device:
    """``cupy.cuda.Device(i)``: a GPU; a context manager that makes it current in this thread."""

    def __init__(self, device=None):
        if device is None:
            device = _current()
        device = int(device)
        if not 0 <= device < DEVICE_COUNT:
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {device} "
                               f"(simulated CUDA has {DEVICE_COUNT} devices)")
        self.id = device
        self._saved = []

    def use(self):
        _local.device = self.id

    def __enter__(self):
        self._saved.append(_current())
        _local.device = self.id
        return self

    def __exit__(self, *exc):
        _local.device = self._saved.pop()

    def synchronize(self):
        pass

    compute_capability = "90"

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Event:
    """``cupy.cuda.Event``: records a point in a stream; waiting on one never recorded fails."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.recorded = False
        self.device_id = _current()

    def record(self, stream=None):
        self.recorded = True

    def synchronize(self):
        if not self.recorded:
            raise RuntimeError("simulated CUDA: synchronize() on an event never recorded")

    def query(self):
        return True

    done = property(query)


class Stream:
    """``cupy.cuda.Stream``: a queue of device work (eager here); ``with stream:`` makes it current."""

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.ptr = 0 if null else id(self)
        self.device_id = _current()
        self._saved = []

    def use(self):
        _streams()[_current()] = self
        return self

    def __enter__(self):
        self._saved.append(_streams().get(_current(), Stream.null))
        _streams()[_current()] = self
        return self

    def __exit__(self, *exc):
        _streams()[_current()] = self._saved.pop()

    def synchronize(self):
        pass

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        if not event.recorded:
            raise RuntimeError("simulated CUDA: wait_event() on an event never recorded")

    def __repr__(self):
        return f"<simulated Stream {self.ptr:#x} on device {self.device_id}>"


Stream.null = Stream(null=True)


def _streams():
    s = getattr(_local, "streams", None)
    if s is None:
        s = _local.streams = {}
    return s


def get_current_stream(device=None):
    return _streams().get(_current() if device is None else device, Stream.null)


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return DEVICE_COUNT

    @staticmethod
    def getDevice():
        return _current()

    @staticmethod
    def setDevice(i):
        Device(i).use()

    @staticmethod
    def deviceSynchronize():
        pass

    @staticmethod
    def getDeviceProperties(i):
        return {"name": b"Simulated GPU", "totalGlobalMem": 16 << 30, "major": 9, "minor": 0}

    @staticmethod
    def runtimeGetVersion():
        return 12080


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


_pool = _MemoryPool()
cuda = types.ModuleType("cupy.cuda", "Simulated cupy.cuda.")
cuda.Device = Device
cuda.Stream = Stream
cuda.Event = Event
cuda.get_current_stream = get_current_stream
cuda.runtime = _Runtime()
cuda.MemoryPool = _MemoryPool
cuda.is_available = lambda: DEVICE_COUNT > 0
cupy.cuda = cuda
cupy.get_default_memory_pool = lambda: _pool
cupy.get_default_pinned_memory_pool = lambda: _pool


# --------------------------------------------------------------------------- cupy.random

class _RandomGenerator:
    """``cupy.random.default_rng(seed)``: CuPy's Generator API (random, standard_normal,
    integers, ...), drawing on the host here and placing the result on the current device."""

    def __init__(self, seed=None):
        self._rng = np.random.default_rng(seed)

    def random(self, size=None, dtype=np.float64, out=None):
        return _wrap(np.asarray(self._rng.random(size, dtype=dtype)), _current())

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        return _wrap(np.asarray(self._rng.standard_normal(size, dtype=dtype)), _current())

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        return _wrap(np.asarray(self._rng.integers(low, high, size, dtype=dtype,
                                                   endpoint=endpoint)), _current())

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
        return _wrap(np.asarray(self._rng.uniform(low, high, size).astype(dtype)), _current())

    def standard_exponential(self, size=None, dtype=np.float64, method="inv", out=None):
        return _wrap(np.asarray(self._rng.standard_exponential(size, dtype=dtype)), _current())


random = types.ModuleType("cupy.random", "Simulated cupy.random.")
random.default_rng = _RandomGenerator
random.Generator = _RandomGenerator
cupy.random = random


# --------------------------------------------------------------------------- cupyx

def scatter_add(a, slices, value):
    """``cupyx.scatter_add``: ``np.add.at`` with CuPy's dtype restriction."""
    _ufunc_call(np.add, "at", (a, slices, value), {})


def empty_pinned(shape, dtype=float, order="C"):
    """Page-locked host memory is host memory: a NumPy array."""
    return np.empty(shape, dtype, order)


def zeros_pinned(shape, dtype=float, order="C"):
    return np.zeros(shape, dtype, order)


cupyx = types.ModuleType("cupyx", "Simulated cupyx.")
cupyx.scatter_add = scatter_add
cupyx.empty_pinned = empty_pinned
cupyx.zeros_pinned = zeros_pinned
cupyx.is_simulated = True

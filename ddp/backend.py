"""The one place that knows NumPy from CuPy: devices, array modules, dtypes and random numbers.

Every other module asks this one for the array module (``xp``) of an array or a device, so the
same op code runs on NumPy (CPU) and CuPy (GPU). CuPy is imported lazily, on first use of a
``cuda`` device, so a CPU-only machine never needs it.

Example:
    >>> import ddp
    >>> ddp.device("cpu"), ddp.float32
    (device(type='cpu'), ddp.float32)
"""
from __future__ import annotations

import builtins as _builtins  # float/int/bool below are dtypes; the Python types come from here

import numpy as np

try:  # bfloat16 for NumPy; CuPy reuses the same dtype object.
    import ml_dtypes as _ml_dtypes
except ImportError as _exc:  # pragma: no cover - a declared dependency: a broken install
    raise ImportError("ddp needs the 'ml_dtypes' package for bfloat16 (a dependency of ddp: "
                      "reinstall with `pip install ddp` or `pip install ml_dtypes`)") from _exc
_BFLOAT16 = np.dtype(_ml_dtypes.bfloat16)

import contextlib as _contextlib
import math as _math
import os as _os
import threading as _threading

_cuda = None          # the CUDA array module (cupy, or a stand-in from use_cuda_module)
_cuda_x = None        # its companion of extras (cupyx: scatter_add, pinned host memory)
_cuda_error = None    # why CuPy could not be imported
_cuda_array_type = None   # _cuda.ndarray, once a CUDA module is in use (isinstance checks)


def cuda_module():
    """The CUDA array module (``cupy``), imported on first use; a clear error without a GPU.

    This is the only place that imports CuPy: every other module asks the backend.
    """
    global _cuda_error
    if _cuda is None:
        if _cuda_error is not None:
            raise _cuda_error
        try:
            import cupy
            import cupyx
            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("no CUDA device is visible")
        except Exception as exc:  # ImportError, CUDA driver errors
            _cuda_error = RuntimeError(
                "CUDA is not available: the 'cuda' device needs CuPy and a GPU "
                f"(pip install 'ddp[cuda12]' or 'ddp[cuda13]'); cause: {exc}")
            raise _cuda_error from exc
        use_cuda_module(cupy, cupyx)
    return _cuda


def cuda_extras():
    """CuPy's companion module ``cupyx`` (scatter_add, pinned host buffers)."""
    cuda_module()
    return _cuda_x


def use_cuda_module(module, extras=None):
    """Make ``module`` (CuPy's interface) the CUDA array module; ``None`` forgets it.

    ddp imports CuPy itself; tests hand in a simulated device (tests/simcuda) so the CUDA code
    path runs on machines without a GPU.
    """
    global _cuda, _cuda_x, _cuda_error, _cuda_array_type, inline_fp
    _cuda, _cuda_x, _cuda_error = module, extras, None
    _cuda_array_type = None if module is None else module.ndarray
    inline_fp = _fp_state if module is None else None
    _cuda_devices.clear()
    _cuda_generators.clear()
    _cached_tables.clear()


def gpu_in_use() -> bool:
    """Whether a CUDA array module is loaded (so GPU arrays may exist); cheap."""
    return _cuda_array_type is not None


def cuda_is_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        cuda_module()
        return True
    except RuntimeError:
        return False


def device_count() -> int:
    """How many GPUs this process sees (0 without CuPy or a GPU)."""
    return cuda_module().cuda.runtime.getDeviceCount() if cuda_is_available() else 0


def current_device() -> int:
    """The index of this thread's current GPU (each thread has its own, as in CUDA)."""
    return cuda_module().cuda.runtime.getDevice()


def set_device(index: int):
    """Make GPU ``index`` current in this thread (``ddp.cuda.set_device``)."""
    cuda_module().cuda.Device(_cuda_index(index)).use()


def device_context(dev):
    """A context in which ``dev``'s GPU is current (nothing to do for the CPU).

    Example:
        >>> with device_context("cpu"):
        ...     pass
    """
    dev = as_device(dev)
    if dev.type == "cpu":
        return _contextlib.nullcontext()
    return cuda_module().cuda.Device(_cuda_index(dev.index))


def _cuda_index(index):
    if index is None:
        return current_device()
    count = cuda_module().cuda.runtime.getDeviceCount()
    if not 0 <= index < count:
        raise RuntimeError(f"CUDA error: invalid device ordinal: cuda:{index} requested, "
                           f"{count} GPU(s) visible")
    return index


def synchronize(dev=None):
    """Wait until the GPU ``dev`` (the current one by default) finished its queued work."""
    if _cuda is None:
        return
    with device_context(as_device(dev) if dev is not None else device("cuda", current_device())):
        _cuda.cuda.get_current_stream().synchronize()


def pinned_empty(shape, np_dtype):
    """A host array in page-locked memory when a GPU is in use (faster copies to it), else a
    plain NumPy array."""
    if _cuda is None:
        return np.empty(shape, np_dtype)
    return _cuda_x.empty_pinned(shape, np_dtype)


def overlaps(a, b) -> bool:
    """Whether writing ``a`` elementwise from ``b`` could read what it already wrote: the two share
    memory at different positions. NumPy buffers such copies; CuPy's kernels race, so callers
    copy ``b`` first."""
    if a is b:
        return False
    xp = get_array_module(a)
    if not xp.may_share_memory(a, b):
        return False
    same_layout = a.shape == b.shape and a.strides == b.strides and data_ptr(a) == data_ptr(b)
    return not same_layout


def data_ptr(a) -> int:
    """The address of an array's first element (host or device memory)."""
    return a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a.data.ptr


def copy_to_host(array, out):
    """Copy device ``array`` into the host array ``out`` (pinned, same shape), ordered on the
    current stream after the work that produced ``array``; returns once the copy is done."""
    with device_context(device_of(array)):
        if not array.flags.c_contiguous:
            array = _cuda.ascontiguousarray(array)
        array.get(out=out)
    return out


def copy_from_host(host, array):
    """Copy the host array ``host`` into device ``array`` (the inverse of :func:`copy_to_host`)."""
    with device_context(device_of(array)):
        if array.flags.c_contiguous:
            array.set(host)
        else:
            array[...] = _cuda.asarray(host)


def thread_gpu():
    """This thread's current GPU index, or None when no GPU is in use (what work handed to
    another thread must run on: the current device is per thread)."""
    return None if _cuda_array_type is None else _cuda.cuda.runtime.getDevice()


# Whether ddp's debug checks run: value checks that need a device->host sync (index bounds,
# target ranges) always run on the CPU and on a GPU only under ``launcher --debug`` (DDP_DEBUG=1),
# so a training step never waits for the device to answer a yes/no question.
_DEBUG = _os.environ.get("DDP_DEBUG", "") not in ("", "0")


def validates(array) -> bool:
    """Whether a value check on ``array`` runs (always on the CPU; on a GPU under --debug)."""
    return _DEBUG or _cuda_array_type is None or not isinstance(array, _cuda_array_type)


_cached_tables: dict = {}
_cached_lock = _threading.Lock()


def cached_table(key, make, dev):
    """A small constant array (pooling divisors, interpolation matrices, pad indices) made once by
    ``make()`` on the host and kept on ``dev``, so a GPU step does not copy it again."""
    dev = as_device(dev)
    full_key = (key, dev)
    table = _cached_tables.get(full_key)
    if table is None:
        table = to_device(make(), dev)
        with _cached_lock:
            if len(_cached_tables) > 4096:   # many distinct shapes: forget the oldest half
                for k in list(_cached_tables)[:2048]:
                    del _cached_tables[k]
            _cached_tables[full_key] = table
    return table


# --------------------------------------------------------------------------- devices

class device:
    """A device: ``device('cpu')``, ``device('cuda')``, ``device('cuda:1')`` or ``device('cuda', 1)``.

    Example:
        >>> ddp.device("cuda:1").index
        1
    """
    __slots__ = ("type", "index")

    def __init__(self, type, index=None):
        if isinstance(type, device):
            type, index = type.type, type.index if index is None else index
        elif isinstance(type, _builtins.int):
            type, index = "cuda", type
        elif not isinstance(type, str):
            raise TypeError(f"device(): expected a string like 'cpu' or 'cuda:0', got {type!r}")
        elif ":" in type:
            type, _, idx = type.partition(":")
            if not idx.isdigit():
                raise RuntimeError(f"Invalid device string: '{type}:{idx}'")
            index = _builtins.int(idx)
        if type not in ("cpu", "cuda"):
            raise RuntimeError(f"Expected one of cpu, cuda device type at start of device string: {type}")
        if type == "cpu" and index not in (None, 0):
            raise RuntimeError(f"CPU device index must be 0 or None, got {index}")
        self.type = type
        self.index = None if type == "cpu" else index

    def __eq__(self, other):
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, device) and self.type == other.type and self.index == other.index

    def __hash__(self):
        return hash((self.type, self.index))

    def __repr__(self):
        return f"device(type='{self.type}')" if self.index is None else \
            f"device(type='{self.type}', index={self.index})"

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"


CPU = device("cpu")
_cuda_devices: dict[int, device] = {}


def as_device(dev) -> device:
    """Normalise ``None``/str/int/device to a :class:`device` (``None`` means CPU)."""
    if dev is None:
        return CPU
    if isinstance(dev, device):
        return dev
    return device(dev)


_default_device = CPU


def set_default_device(dev):
    """Where tensors are made when a creation function gets no ``device`` (CPU unless set).

    Example:
        >>> ddp.set_default_device("cpu")    # "cuda": every ddp.zeros/tensor/randn on the GPU
        >>> ddp.zeros(2).device
        device(type='cpu')
    """
    global _default_device
    dev = CPU if dev is None else as_device(dev)
    if dev.type == "cuda":
        cuda_module()  # a clear error now, not at the first tensor
    _default_device = dev


def get_default_device() -> device:
    return _default_device


def array_module_of_device(dev):
    """The array module (numpy or cupy) that holds arrays of ``dev``."""
    return np if as_device(dev).type == "cpu" else cuda_module()


def is_cuda_array(array) -> bool:
    """Whether ``array`` is a CUDA (CuPy) array."""
    return _cuda_array_type is not None and isinstance(array, _cuda_array_type)


def may_hold_any(mask) -> bool:
    """Whether some element of the bool array ``mask`` may be True: asked of a host array (a
    pass over it), assumed of a device one (asking is a wait for the device). For work only
    some inputs need (a NaN's rule, say): skipped on the host where nothing needs it, always
    done on a device.

    Example:
        >>> may_hold_any(np.zeros(3, np.bool_)), may_hold_any(np.array([False, True]))
        (False, True)
    """
    return True if is_cuda_array(mask) else mask.any().item()   # (bool: a dtype here)


def finite_on_host(a) -> bool:
    """Whether the float array ``a`` holds no infinity and no NaN, asked of a host array from
    one BLAS pass (its sum of squares: 35 us for 400k float32 values, against 68 us and a bool
    array for ``isfinite(a).all()``); a device array is taken as finite without asking (that
    would wait for the device). For picking an exact path over a fast one: values past ~1e19
    (float32) square to infinity and answer False, which only makes the host slower.

    Example:
        >>> finite_on_host(np.ones(3, np.float32)), finite_on_host(np.array([1.0, np.inf]))
        (True, False)
    """
    if is_cuda_array(a):
        return True
    v = a.reshape(-1)
    if v.dtype.itemsize < 4:   # (float16's squares overflow from 256)
        v = v.astype(np.float32)
    return _math.isfinite(_builtins.float(np.dot(v, v)))


def is_array(value) -> bool:
    """Whether ``value`` is an array of either module (NumPy or CuPy)."""
    return isinstance(value, np.ndarray) or is_cuda_array(value)


def get_array_module(*arrays):
    """``numpy`` or ``cupy``, whichever holds the given arrays (NumPy when none is a CuPy array).

    Example:
        >>> get_array_module(np.zeros(2)) is np
        True
    """
    if _cuda_array_type is not None:
        for a in arrays:
            if isinstance(a, _cuda_array_type):
                return _cuda
    return np


def device_of(array) -> device:
    """The :class:`device` an array lives on."""
    if _cuda_array_type is None or not isinstance(array, _cuda_array_type):
        return CPU
    idx = array.device.id
    dev = _cuda_devices.get(idx)
    if dev is None:
        dev = _cuda_devices[idx] = device("cuda", idx)
    return dev


def to_device(array, dev: device):
    """Copy ``array`` to device ``dev`` (no copy when it is already there); ``cuda`` without an
    index means the current GPU."""
    dev = as_device(dev)
    if dev.type == "cpu":
        return to_host(array)
    cp = cuda_module()
    index = _cuda_index(dev.index)
    if isinstance(array, _cuda_array_type) and array.device.id == index:
        return array
    with cp.cuda.Device(index):
        return cp.asarray(array)


def to_host(array):
    """``array`` as a NumPy array (a device->host copy for a CUDA array, else itself)."""
    if _cuda_array_type is not None and isinstance(array, _cuda_array_type):
        return array.get()
    return array


def sum_to_shape(g, shape):
    """Sum an array's broadcast dimensions away, or broadcast it up, to reach ``shape``.

    Example:
        >>> sum_to_shape(np.ones((2, 3)), (1, 3))
        array([[2., 2., 2.]])
    """
    gshape = g.shape
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    if lead > 0:
        g = g.sum(axis=tuple(range(lead)))
        gshape = g.shape
    axes = tuple(i for i, (gs, s) in enumerate(zip(gshape, shape)) if s == 1 and gs != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if g.shape != shape:
        g = get_array_module(g).broadcast_to(g, shape)
    return g


def index_add_at(out, index, values, into_zeros=False):
    """``out[index] += values`` where repeated positions add up (NumPy's ``add.at``);
    ``into_zeros``: ``out`` is all zeros (as in Getitem's adjoint), so the first addition to
    each row can be a plain store."""
    if isinstance(out, np.ndarray):
        if type(index) is tuple and len(index) == 1 and isinstance(index[0], np.ndarray):
            index = index[0]   # (rows,) as Getitem's adjoint passes it: the same positions
        if _is_row_index(out, index, values):
            _add_rows(out, index, values, into_zeros)
        else:
            np.add.at(out, index, values)
    else:
        _cuda_index_add(out, index, values)


# The element types CuPy's atomic add (cupyx.scatter_add, ufunc.at) supports.
_CUDA_ATOMIC = frozenset(np.dtype(d) for d in (np.int32, np.uint32, np.uint64, np.float16,
                                               np.float32, np.float64))


def _cuda_index_add(out, index, values):
    """``index_add_at`` on the GPU for every dtype: CuPy's atomics cover six; int64 adds as uint64
    (two's complement: the same bits), and the narrow types add in a wider one and round once."""
    dt = out.dtype
    if dt in _CUDA_ATOMIC:
        _cuda_x.scatter_add(out, index, values)
    elif dt == np.int64:
        vals = _cuda.asarray(values, dtype=np.int64)
        _cuda_x.scatter_add(out.view(np.uint64), index, vals.view(np.uint64))
    else:
        wide = np.float32 if is_float_np(dt) else np.int32   # bfloat16 / bool, int8/16, uint8
        acc = out.astype(wide)
        _cuda_x.scatter_add(acc, index, _cuda.asarray(values, dtype=wide))
        out[...] = (acc != 0) if dt == np.bool_ else acc.astype(dt)


def _is_row_index(out, index, values):
    """An integer array selecting whole rows of ``out``, with one row of values per entry."""
    return (isinstance(index, np.ndarray) and index.dtype.kind in "iu" and index.size > 32
            and getattr(values, "shape", ())[:index.ndim] == index.shape
            and values.ndim == index.ndim + out.ndim - 1)


def _add_rows(out, index, values, into_zeros=False):
    """Scatter-add rows in rounds of distinct rows: sort the indices, number each entry within
    its run of equal ones, then add all first entries at once (correct: they are distinct), all
    second entries, ... — as many rounds as the most repeated row. The sort is of one int64
    key ``row * entries + entry`` (NumPy's SIMD sort, 38 µs for 4,096 against 195 µs for the
    stable ``argsort``); each round gathers with ``take`` and stores with ``put`` on rows seen
    as single void elements (66 and 68 µs for 3,376 rows of 128 float32 against 115 and 119 µs
    for fancy indexing, which walks each row element by element); into zeros the first round
    only stores. For an embedding gradient (4,096 rows of 128 into 10,000) ~0.4 ms, against
    1.0-1.4 ms for the fancy-index ``+=`` rounds, 5.4 ms for ``add.reduceat`` over the sorted
    rows and 3.8-7 ms for ``np.add.at``."""
    n = out.shape[0]
    idx = index.reshape(-1)
    if idx.min() < 0:
        idx = idx % n  # -1 and n-1 are the same row
    m = idx.size
    # (take copies a non-contiguous source whole at every call: once here, e.g. sum()'s
    # stride-0 gradient)
    rows = np.ascontiguousarray(values.reshape((m,) + out.shape[1:]))
    bits = (m - 1).bit_length()
    if n < 2 ** (62 - bits):   # the key (row << bits) | entry, split again with shifts
        key = idx.astype(np.int64) << bits
        key |= np.arange(m)
        key.sort()
        order = key & ((1 << bits) - 1)
        idx = key >> bits
    else:
        order = np.argsort(idx, kind="stable")
        idx = idx[order]
    first = np.empty(m, np.bool_)
    first[0] = True
    np.not_equal(idx[1:], idx[:-1], out=first[1:])
    if first.all():
        rank = None
    else:   # each entry's position within its run: its index less its run's first one's
        pos = np.arange(m)
        rank = pos - np.maximum.accumulate(np.where(first, pos, 0))
    for r in range(1 if rank is None else rank.max().item() + 1):  # (``int`` is a dtype here)
        sel = first if r == 0 else rank == r
        where, add = (idx, order) if rank is None else (idx[sel], order[sel])
        vals = np.take(rows, add, axis=0)
        if r or not into_zeros:
            vals = np.take(out, where, axis=0) + vals
        _put_rows(out, where, vals)


def _put_rows(out, where, vals):
    """``out[where] = vals`` for distinct row indices ``where``: with ``put`` on the rows seen
    as void elements of one row's bytes where ``out`` is contiguous (a row at a time, not an
    element at a time as fancy indexing copies)."""
    size = out.itemsize * (out.size // out.shape[0])
    if not out.flags.c_contiguous or not size:
        out[where] = vals
        return
    row = np.dtype((np.void, size))
    vals = np.ascontiguousarray(vals, out.dtype)
    np.put(out.reshape(out.shape[0], -1).view(row).reshape(-1), where,
           vals.reshape(vals.shape[0], -1).view(row).reshape(-1))


# --------------------------------------------------------------------------- FP exceptions
# Inside ddp's ops, floating-point exceptions (log(0), 0/0, float16 overflow) give inf/nan
# silently, as PyTorch's kernels do, while the process-wide NumPy error state that the user's
# (and scikit-learn's) code sees stays untouched. ``np.errstate`` costs ~6 µs per use — more
# than an op's whole overhead — so the ops set NumPy's error-state context variable to a
# prebuilt "ignore" state directly (~0.1 µs), the mechanism ``np.errstate`` itself uses.
try:
    from numpy._core import _ufunc_config as _fpconfig
    _FP_SILENT = _fpconfig._make_extobj(all="ignore")
    _fp_state = _fpconfig._extobj_contextvar
except (ImportError, AttributeError):  # pragma: no cover - a NumPy without these internals
    _fp_state = _FP_SILENT = None
# enter_op/exit_op inline, for their hottest caller (autograd's apply, around every op): the
# context variable to set to FP_SILENT while no CUDA module is in use (then there is no GPU to
# guard), else None; use_cuda_module keeps it current
inline_fp = _fp_state
FP_SILENT = _FP_SILENT


def silence_fp():
    """Make floating-point exceptions silent in this thread; returns a token for
    :func:`restore_fp`. The ops' forward and backward run between the two.

    Example:
        >>> token = silence_fp(); _ = np.log(np.zeros(1)); restore_fp(token)
    """
    if _fp_state is not None:
        return _fp_state.set(_FP_SILENT)
    quiet = np.errstate(all="ignore")
    quiet.__enter__()
    return quiet


def restore_fp(token):
    """Undo :func:`silence_fp` (or :func:`row_buffer`)."""
    if _fp_state is not None:
        _fp_state.reset(token)
    else:
        token.__exit__(None, None, None)


_row_states: dict = {}   # row length -> NumPy's state: exceptions silent, a buffer of one row
_BUFSIZE = np.getbufsize()


def row_buffer(xp, k):
    """Silent floating-point exceptions and NumPy ufunc buffers of ``k`` elements, for work on
    (rows, ``k``) arrays, until :func:`restore_fp` of the returned token; None (nothing set)
    off NumPy or where ``k`` is outside 512 ≤ k < the default buffer (8192).

    Why: a ufunc whose operands broadcast in two dimensions — a per-row or a per-column factor
    over (rows, k) — goes through the iterator's buffers, which NumPy 2 fills from several
    rows when a row is shorter than the buffer: at (128, 1024) float32 ``x * r`` with ``r``
    (128, 1) takes 35 µs, ``x * w`` with ``w`` (1024,) 30 µs, against 21 µs for ``x * y`` of
    the same shape; with a buffer of one row both take 22 µs, unbuffered (the same from 512 to
    4096 columns; below 512 the smaller buffer is slower). What matters is that the buffer
    cannot hold two rows: at (32, 32, 784) a buffer of 784 or 1024 elements, at (32, 8, 3136)
    one of 512 to 4096, make the per-channel ``x * w`` unbuffered (236 -> 154 and 211 -> 105
    µs), 1568 and 8192 do not. NumPy takes multiples of 16 only: ``k`` rounded down to one
    (``k`` = 1000 gets 992, as fast as 1000 would be).

    Example:
        >>> token = row_buffer(np, 1000); print(np.getbufsize()); restore_fp(token)
        992
    """
    if xp is not np or _fp_state is None or not 512 <= k < _BUFSIZE:
        return None
    state = _row_states.get(k)
    if state is None:
        state = _row_states[k] = _fpconfig._make_extobj(all="ignore", bufsize=k - k % 16)
    return _fp_state.set(state)


def broadcast_row(shape, other):
    """The length of the innermost run over which arrays of ``shape`` and ``other`` broadcast
    alike — the product of the trailing dimensions where each is either full or broadcast in
    both — when broadcasting them together takes a second run (a two-dimensional broadcast,
    the case :func:`row_buffer` is for), else 0.

    Example:
        >>> broadcast_row((32, 32, 28, 28), (1, 32, 1, 1)), broadcast_row((8, 5), (8, 5))
        (784, 0)
    """
    if shape == other:
        return 0
    run = None   # (shape broadcast, other broadcast) over the run
    k = 1
    i = 1
    n = max(len(shape), len(other))
    while i <= n:
        a = shape[-i] if i <= len(shape) else 1
        b = other[-i] if i <= len(other) else 1
        i += 1
        if a == b == 1:
            continue
        kind = (a == 1, b == 1)
        if run is None:
            run = kind
        elif kind != run:
            return k
        k *= a if b == 1 else b
    return 0


def enter_op(arrays):
    """What an op's forward or backward runs under: silent floating-point exceptions and, when its
    first GPU array lives on another GPU than this thread's current one, that GPU (PyTorch's device
    guard: an op on ``cuda:1`` tensors runs on GPU 1). Returns a token for :func:`exit_op`."""
    # silence_fp() and restore_fp(), inline: this runs around every op
    token = _fp_state.set(_FP_SILENT) if _fp_state is not None else silence_fp()
    if _cuda_array_type is not None:
        for a in arrays:
            if isinstance(a, _cuda_array_type):
                guard = device_guard(a)
                if guard is not None:
                    guard.__enter__()
                    return (token, guard)
                break
    return token


def device_guard(array):
    """``None`` when ``array`` is on the CPU or on this thread's current GPU, else a context that
    makes its GPU current (CuPy computes on the current GPU only)."""
    if _cuda_array_type is None or not isinstance(array, _cuda_array_type):
        return None
    index = array.device.id
    return None if index == _cuda.cuda.runtime.getDevice() else _cuda.cuda.Device(index)


def exit_op(token):
    """Undo :func:`enter_op`."""
    if type(token) is tuple:
        token[1].__exit__(None, None, None)
        token = token[0]
    if _fp_state is not None:
        _fp_state.reset(token)
    else:
        restore_fp(token)


# --------------------------------------------------------------------------- dtypes

class dtype:
    """A tensor element type, wrapping a NumPy dtype (``ddp.float32.np``).

    Example:
        >>> ddp.float16.is_floating_point, ddp.float16.itemsize
        (True, 2)
    """
    __slots__ = ("name", "np", "is_floating_point", "is_signed", "itemsize")
    is_quantized = False

    def __init__(self, name, np_dtype):
        self.name = name
        self.np = np.dtype(np_dtype)
        self.is_floating_point = self.np.kind == "f" or self.np == _BFLOAT16
        self.is_signed = self.np.kind in "fi" or self.np == _BFLOAT16
        self.itemsize = self.np.itemsize

    @property
    def is_complex(self):
        return False

    def __repr__(self):
        return f"ddp.{self.name}"

    def __reduce__(self):  # dtypes pickle as the singleton of the same name
        return (_dtype_by_name, (self.name,))


float16 = half = dtype("float16", np.float16)
float32 = float = dtype("float32", np.float32)
float64 = double = dtype("float64", np.float64)
bfloat16 = dtype("bfloat16", _BFLOAT16)
uint8 = dtype("uint8", np.uint8)
int8 = dtype("int8", np.int8)
int16 = short = dtype("int16", np.int16)
int32 = int = dtype("int32", np.int32)
int64 = long = dtype("int64", np.int64)
bool = dtype("bool", np.bool_)


class _QuantizedDtype(dtype):
    """A quantized element type: integers (``np``) that mean ``(q - zero_point) * scale``.
    Only quantized tensors (``ddp.quantize_per_tensor``) hold it; no array has it."""
    __slots__ = ()
    is_quantized = True


qint8 = _QuantizedDtype("qint8", np.int8)
quint8 = _QuantizedDtype("quint8", np.uint8)
qint32 = _QuantizedDtype("qint32", np.int32)

_ALL_DTYPES = [float16, float32, float64, bfloat16, uint8, int8, int16, int32, int64, bool]
_FROM_NUMPY = {d.np: d for d in _ALL_DTYPES}
_BY_NAME = {d.name: d for d in _ALL_DTYPES}
_BY_NAME.update((d.name, d) for d in (qint8, quint8, qint32))  # by name (files, pickles) only


def _dtype_by_name(name):
    return _BY_NAME[name]


def from_numpy_dtype(np_dtype) -> dtype:
    """The :class:`dtype` of a NumPy dtype; raises for types a tensor cannot hold."""
    d = _FROM_NUMPY.get(np_dtype)
    if d is None:
        d = _FROM_NUMPY.get(np.dtype(np_dtype))
        if d is None:
            raise TypeError(f"can't convert np.ndarray of type {np_dtype}: the supported types are "
                            + ", ".join(sorted(_BY_NAME)))
    return d


def to_numpy_dtype(dt):
    """The NumPy dtype for a ddp dtype, NumPy dtype, Python type or name."""
    if isinstance(dt, dtype):
        if dt.is_quantized:
            raise RuntimeError(f"{dt} is a quantized dtype: tensors of it are made by "
                               f"ddp.quantize_per_tensor or ddp.quantize_per_channel")
        return dt.np
    if dt is builtins_float:  # Python's float is a double, as in PyTorch
        return np.dtype(np.float64)
    if dt is builtins_int:
        return np.dtype(np.int64)
    if dt is builtins_bool:
        return np.dtype(np.bool_)
    if isinstance(dt, str) and dt in _BY_NAME:
        return _BY_NAME[dt].np
    return from_numpy_dtype(np.dtype(dt)).np


builtins_float, builtins_int, builtins_bool = _builtins.float, _builtins.int, _builtins.bool

_default_dtype = float32


def set_default_dtype(d):
    """Set the floating point dtype of new tensors made from Python floats (float32 by default)."""
    global _default_dtype
    d = from_numpy_dtype(to_numpy_dtype(d))
    if not d.is_floating_point:
        raise TypeError(f"only floating-point types are supported as the default type, got {d}")
    _default_dtype = d


def get_default_dtype() -> dtype:
    """The dtype of new floating point tensors (``ddp.float32`` unless changed)."""
    return _default_dtype


def is_float_np(np_dtype):
    return np_dtype.kind == "f" or np_dtype == _BFLOAT16


# PyTorch's promotion: a floating type beats an integral one whatever their sizes; within a
# category NumPy's table agrees with PyTorch's (bfloat16 with float16 gives float32 in both).
_promote_cache: dict = {}


def promote_types(a, b):
    """The NumPy dtype that ``a op b`` computes in, with PyTorch's category rule."""
    key = (a, b)
    r = _promote_cache.get(key)
    if r is None:
        fa, fb = is_float_np(a), is_float_np(b)
        if fa != fb:
            r = a if fa else b
        elif a == _BFLOAT16 or b == _BFLOAT16:
            r = a if a == b else np.dtype(np.float32) if (a.itemsize == 2 and b.itemsize == 2) \
                else (a if a.itemsize > b.itemsize else b)
        else:
            r = np.promote_types(a, b)
        _promote_cache[key] = r
    return r


# --------------------------------------------------------------------------- random numbers

class Generator:
    """A seeded source of random numbers for one device.

    On the CPU it is one NumPy ``PCG64`` stream. On a GPU the numbers are drawn on the device
    (no host round trip): draw ``k`` of a generator seeded ``s`` comes from CuPy's generator
    seeded by ``SeedSequence([s, k])``, so a seed fixes every draw and the state is the pair
    ``(s, k)``.

    Example:
        >>> g = ddp.Generator().manual_seed(0)
        >>> ddp.rand(2, generator=g).shape
        ddp.Size([2])
    """

    def __init__(self, device="cpu"):
        self.device = as_device(device)
        self.manual_seed(_DEFAULT_SEED)

    def manual_seed(self, seed):
        self._seed = _builtins.int(seed)
        self._draws = 0
        self._rng = np.random.Generator(np.random.PCG64(self._seed)) \
            if self.device.type == "cpu" else None
        return self

    def seed(self):
        """Seed from fresh entropy and return the seed used."""
        s = _builtins.int(np.random.SeedSequence().entropy % (2 ** 63))
        self.manual_seed(s)
        return s

    def initial_seed(self):
        return self._seed

    def get_state(self):
        """The generator's state (a picklable dict)."""
        if self._rng is None:
            return {"seed": self._seed, "draws": self._draws}
        return self._rng.bit_generator.state

    def set_state(self, state):
        if self._rng is None:
            self._seed, self._draws = state["seed"], state["draws"]
        else:
            self._rng.bit_generator.state = state
        return self

    @property
    def numpy(self) -> np.random.Generator:
        """The NumPy stream of a CPU generator."""
        if self._rng is None:
            raise RuntimeError(f"a generator for {self.device} draws on the device, not in NumPy")
        return self._rng

    def draws(self):
        """An object with NumPy's Generator methods (random, standard_normal, integers, normal,
        uniform, exponential, permutation) whose arrays live on this generator's device."""
        if self._rng is not None:
            return self._rng
        self._draws += 1
        child = _builtins.int(np.random.SeedSequence([self._seed, self._draws])
                              .generate_state(1, np.uint64)[0] >> 1)
        with device_context(self.device):
            return _CudaDraws(cuda_module().random.default_rng(child), self.device)


_DEFAULT_SEED = 67280421310721


class _CudaDraws:
    """NumPy's Generator method names over CuPy's generator (which has only a few of them)."""

    def __init__(self, rng, dev):
        self._rng, self._dev = rng, dev

    def _on_device(self, draw, *args, **kwargs):
        with device_context(self._dev):
            return draw(*args, **kwargs)

    def random(self, size=None, dtype=np.float64):
        return self._on_device(self._rng.random, size, dtype=dtype)

    def standard_normal(self, size=None, dtype=np.float64):
        return self._on_device(self._rng.standard_normal, size, dtype=dtype)

    def integers(self, low, high=None, size=None, dtype=np.int64):
        return self._on_device(self._rng.integers, low, high, size, dtype=dtype)

    def normal(self, loc=0.0, scale=1.0, size=None):
        if size is None:
            size = np.broadcast_shapes(np.shape(loc), np.shape(scale))
        return self._on_device(lambda: loc + scale * self._rng.standard_normal(size))

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._on_device(lambda: low + (high - low) * self._rng.random(size))

    def exponential(self, scale=1.0, size=None):
        return self._on_device(lambda: scale * self._rng.standard_exponential(size))

    def permutation(self, n):
        return self._on_device(lambda: _cuda.argsort(self._rng.random(n)))


default_generator = Generator()
_cuda_generators: dict[int, Generator] = {}
_cuda_seed = [_DEFAULT_SEED]   # what new GPU default generators start from (manual_seed sets it)


def default_generator_of(dev) -> Generator:
    """The default generator of a device: ``ddp.default_generator`` for the CPU, one per GPU
    (``ddp.cuda.default_generators``)."""
    dev = as_device(dev)
    if dev.type == "cpu":
        return default_generator
    index = _cuda_index(dev.index)
    gen = _cuda_generators.get(index)
    if gen is None:
        gen = _cuda_generators[index] = Generator(device("cuda", index)).manual_seed(_cuda_seed[0])
    return gen


def random_stream(generator, dev):
    """What a random op on ``dev`` draws from: ``generator``'s draws, or the device's default
    generator's. A generator of another device type is refused, as in PyTorch."""
    dev = as_device(dev)
    gen = generator if generator is not None else default_generator_of(dev)
    if gen.device.type != dev.type:
        raise RuntimeError(f"Expected a '{dev.type}' device type for generator but found "
                           f"'{gen.device.type}'")
    return gen.draws()


def numpy_generator(generator=None) -> np.random.Generator:
    """The NumPy stream of a CPU ``generator`` (the default generator when None)."""
    return (generator or default_generator).numpy


def manual_seed(seed):
    """Seed the default generator, so results are reproducible.

    Example:
        >>> _ = ddp.manual_seed(0); a = ddp.rand(3)
        >>> _ = ddp.manual_seed(0); ddp.equal(a, ddp.rand(3))
        True
    """
    default_generator.manual_seed(seed)
    manual_seed_cuda(seed)
    return default_generator


def manual_seed_cuda(seed):
    """Seed every GPU's default generator (``ddp.cuda.manual_seed_all``)."""
    _cuda_seed[0] = _builtins.int(seed)
    for gen in _cuda_generators.values():
        gen.manual_seed(seed)


def seed():
    return default_generator.seed()


def initial_seed():
    return default_generator.initial_seed()


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(state):
    default_generator.set_state(state)

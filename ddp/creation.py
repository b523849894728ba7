"""Functions that make tensors: from data, filled, ranges, and random.

They build arrays and wrap them with ``Tensor._make`` (the class the tensor floor registers in
:mod:`ddp.autograd.graph`), so this module sits below ``ddp.tensor``, whose own methods
(``new_zeros``, ``uniform_``, ...) make tensors with these functions.

Random tensors are drawn on their own device from that device's :class:`ddp.Generator` (no
host round trip on a GPU); ``ddp.manual_seed`` seeds every device's default generator.

Example:
    >>> _ = ddp.manual_seed(0)       # returns the default Generator, as torch.manual_seed does
    >>> ddp.zeros(2, 3).shape, ddp.arange(5).dtype, ddp.rand(2).dtype
    (ddp.Size([2, 3]), ddp.int64, ddp.float32)
"""
from __future__ import annotations

import numbers

import numpy as np

from . import backend
from .autograd import graph


def _size_args(args, name="size"):
    """``f(2, 3)``, ``f((2, 3))``, ``f([2, 3])`` and ``f(Size)`` all give ``(2, 3)``."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    out = []
    for a in args:
        if isinstance(a, graph.Tensor):
            a = a.item()
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
            raise TypeError(f"{name}: expected a sequence of ints, but got {type(a).__name__} {a!r}")
        out.append(int(a))
    return tuple(out)


def _dtype_np(dtype, default=None):
    if dtype is None:
        return default
    return backend.to_numpy_dtype(dtype)


def _device(device):
    """The device asked for, or the default device (``ddp.set_default_device``)."""
    return backend.get_default_device() if device is None else backend.as_device(device)


def _finish(arr, device, requires_grad):
    t = graph.Tensor._make(backend.to_device(arr, _device(device)))
    if requires_grad:
        t.requires_grad_(True)
    return t


def _infer_array(data):
    """A NumPy array from Python data with PyTorch's dtype inference (floats → default dtype)."""
    if isinstance(data, (list, tuple)) and any(isinstance(x, graph.Tensor) for x in _flat(data)):
        data = _untensor(data)
    arr = np.asarray(data)
    if arr.dtype == np.float64 and not _has_numpy_float64(data):
        arr = arr.astype(backend.get_default_dtype().np)
    elif arr.dtype.kind in "iu" and not isinstance(data, (np.ndarray, np.generic)) \
            and not _has_numpy_scalar(data):
        arr = arr.astype(np.int64)
    elif arr.dtype == object:
        raise TypeError(f"tensor(): could not infer a dtype from {type(data).__name__} data "
                        f"(ragged nested sequences or unsupported element types)")
    return arr


def _flat(data):
    for x in data:
        if isinstance(x, (list, tuple)):
            yield from _flat(x)
        else:
            yield x


def _untensor(data):
    return [(_untensor(x) if isinstance(x, (list, tuple)) else
             (x._host() if isinstance(x, graph.Tensor) else x)) for x in data]


def _has_numpy_float64(data):
    if isinstance(data, (np.ndarray, np.generic)):
        return data.dtype == np.float64
    if isinstance(data, (list, tuple)):
        return any(isinstance(x, (np.ndarray, np.generic)) and x.dtype == np.float64
                   for x in _flat(data))
    return False


def _has_numpy_scalar(data):
    return isinstance(data, (list, tuple)) and any(isinstance(x, (np.ndarray, np.generic))
                                                   for x in _flat(data))


def tensor(data, dtype=None, device=None, requires_grad=False, pin_memory=False):
    """A new tensor holding a copy of ``data`` (numbers, nested lists, arrays or tensors).

    Example:
        >>> ddp.tensor([[1, 2], [3, 4]]).dtype
        ddp.int64
    """
    if isinstance(data, graph.Tensor):
        arr = data._data.copy()
        dev = device if device is not None else data.device
    else:
        arr = data.copy() if backend.is_cuda_array(data) else _infer_array(data)
        if isinstance(data, np.ndarray) and arr is data:
            arr = data.copy()
        dev = device if device is not None else \
            backend.device_of(arr) if backend.is_cuda_array(arr) else backend.get_default_device()
    if arr.dtype.kind not in "biuf" and arr.dtype != backend.bfloat16.np:
        raise TypeError(f"can't convert np.ndarray of type {arr.dtype}. The only supported types "
                        f"are: float64, float32, float16, bfloat16, int64, int32, int16, int8, "
                        f"uint8, and bool.")
    npd = _dtype_np(dtype)
    if npd is not None and arr.dtype != npd:
        arr = arr.astype(npd)
    backend.from_numpy_dtype(arr.dtype)
    return _finish(arr, dev, requires_grad)


def as_tensor(data, dtype=None, device=None):
    """A tensor sharing ``data``'s memory when it already has the dtype and device asked for."""
    if isinstance(data, graph.Tensor):
        return data.to(device=device, dtype=dtype) if (device or dtype) else data
    if isinstance(data, np.ndarray) or backend.is_cuda_array(data):
        t = from_numpy(data) if isinstance(data, np.ndarray) else graph.Tensor._make(data)
        return t.to(device=device, dtype=dtype) if (device or dtype) else t
    return tensor(data, dtype=dtype, device=device)


def asarray(obj, dtype=None, device=None, copy=None, requires_grad=False):
    t = tensor(obj, dtype, device) if copy else as_tensor(obj, dtype, device)
    return t.requires_grad_(True) if requires_grad else t


def from_numpy(array):
    """A CPU tensor sharing ``array``'s memory: writes to one show in the other.

    Example:
        >>> a = np.zeros(2, np.float32)
        >>> ddp.from_numpy(a).add_(1)
        tensor([1., 1.])
        >>> a
        array([1., 1.], dtype=float32)
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(array).__name__})")
    backend.from_numpy_dtype(array.dtype)
    return graph.Tensor._make(array)


def _shape(args, size=None, name="size", op=None):
    """The shape a creation function was given: positional sizes or ``size=`` (PyTorch accepts
    both), never negative (PyTorch's message names the dimension)."""
    shape = _size_args(args if size is None else (size,), name)
    for d in shape:
        if d < 0:
            raise RuntimeError(f"{op + ': ' if op else ''}Trying to create tensor with "
                               f"negative dimension {d}: {list(shape)}")
    return shape


def _filled(fill, size, dtype, device, requires_grad, default, op=None):
    shape = _shape(size, op=op)
    dev = _device(device)
    xp = backend.array_module_of_device(dev)
    npd = _dtype_np(dtype, default)
    with backend.device_context(dev):
        arr = xp.full(shape, fill, dtype=npd)
    t = graph.Tensor._make(arr)
    if requires_grad:
        t.requires_grad_(True)
    return t


def zeros(*args, size=None, dtype=None, device=None, requires_grad=False, out=None):
    """A tensor of zeros of the given shape (default float dtype)."""
    return _filled(0, args if size is None else (size,), dtype, device, requires_grad,
                   backend.get_default_dtype().np, "zeros")


def ones(*args, size=None, dtype=None, device=None, requires_grad=False, out=None):
    """A tensor of ones of the given shape."""
    return _filled(1, args if size is None else (size,), dtype, device, requires_grad,
                   backend.get_default_dtype().np, "ones")


def empty(*args, size=None, dtype=None, device=None, requires_grad=False, memory_format=None,
          pin_memory=False, out=None):
    """An uninitialised tensor (here: zeros, which costs the same and is deterministic)."""
    return _filled(0, args if size is None else (size,), dtype, device, requires_grad,
                   backend.get_default_dtype().np, "empty")


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    """A tensor filled with ``fill_value``; its dtype follows the value (float → default dtype)."""
    if isinstance(fill_value, graph.Tensor):
        fill_value = fill_value.item()
    if dtype is None:
        default = np.dtype(np.bool_) if isinstance(fill_value, bool) else \
            np.dtype(np.int64) if isinstance(fill_value, numbers.Integral) else \
            backend.get_default_dtype().np
    else:
        default = None
    return _filled(fill_value, (size,) if isinstance(size, int) else size, dtype, device,
                   requires_grad, default)


def _like(t, dtype, device):
    return (t.dtype if dtype is None else dtype), (t.device if device is None else device)


def zeros_like(input, dtype=None, device=None, requires_grad=False, memory_format=None):
    dt, dev = _like(input, dtype, device)
    return zeros(input.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def ones_like(input, dtype=None, device=None, requires_grad=False, memory_format=None):
    dt, dev = _like(input, dtype, device)
    return ones(input.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def empty_like(input, dtype=None, device=None, requires_grad=False, memory_format=None):
    return zeros_like(input, dtype, device, requires_grad)


def full_like(input, fill_value, dtype=None, device=None, requires_grad=False, memory_format=None):
    dt, dev = _like(input, dtype, device)
    return full(input.shape, fill_value, dtype=dt, device=dev, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """``[start, end)`` with ``step``; int64 for integer arguments, else the default float dtype.

    Example:
        >>> ddp.arange(0, 1, 0.25)
        tensor([0.0000, 0.2500, 0.5000, 0.7500])
    """
    if end is None:
        start, end = 0, start
    vals = [v.item() if isinstance(v, graph.Tensor) else v for v in (start, end, step)]
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    integral = all(isinstance(v, numbers.Integral) for v in vals)
    default = np.dtype(np.int64) if integral else backend.get_default_dtype().np
    npd = _dtype_np(dtype, default)
    arr = np.arange(*vals, dtype=np.float64 if not integral else np.int64).astype(npd)
    return _finish(arr, device, requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    if int(steps) < 0:
        raise RuntimeError(f"linspace: number of steps must be non-negative (got {steps})")
    arr = np.linspace(float(start), float(end), int(steps)).astype(
        _dtype_np(dtype, backend.get_default_dtype().np))
    return _finish(arr, device, requires_grad)


def logspace(start, end, steps, base=10.0, dtype=None, device=None, requires_grad=False):
    arr = np.logspace(float(start), float(end), int(steps), base=base).astype(
        _dtype_np(dtype, backend.get_default_dtype().np))
    return _finish(arr, device, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    """The identity matrix (``n`` x ``m``)."""
    arr = np.eye(n, n if m is None else m, dtype=_dtype_np(dtype, backend.get_default_dtype().np))
    return _finish(arr, device, requires_grad)


# ---------------------------------------------------------------------- random

def _random(generator, device, draw, requires_grad=False):
    """``draw(stream)`` on the device's own random stream (``backend.random_stream``), with that
    device current: the numbers never cross from the host."""
    dev = _device(device)
    stream = backend.random_stream(generator, dev)
    with backend.device_context(dev):
        t = graph.Tensor._make(draw(stream))
    if requires_grad:
        t.requires_grad_(True)
    return t


def rand(*args, size=None, generator=None, dtype=None, device=None, requires_grad=False):
    """Uniform samples on ``[0, 1)``."""
    npd = _dtype_np(dtype, backend.get_default_dtype().np)
    shape = _shape(args, size, op="rand")
    return _random(generator, device, lambda rng: rng.random(shape).astype(npd),
                   requires_grad)


def randn(*args, size=None, generator=None, dtype=None, device=None, requires_grad=False):
    """Standard normal samples."""
    npd = _dtype_np(dtype, backend.get_default_dtype().np)
    shape = _shape(args, size, op="randn")
    return _random(generator, device, lambda rng: rng.standard_normal(shape).astype(npd),
                   requires_grad)


def randint(low=0, high=None, size=None, generator=None, dtype=None, device=None,
            requires_grad=False):
    """Integers uniform on ``[low, high)``: ``randint(high, size)`` or ``randint(low, high, size)``."""
    if size is None:
        if isinstance(high, (tuple, list)):
            low, high, size = 0, low, high
        else:
            raise TypeError("randint() missing required argument 'size'")
    if high is None:                 # randint(high, size=...)
        low, high = 0, low
    if low >= high:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= "
                           f"to={high} (randint)")
    npd = _dtype_np(dtype, np.dtype(np.int64))
    return _random(generator, device,
                   lambda rng: rng.integers(low, high, _size_args((size,))).astype(npd),
                   requires_grad)


def randperm(n, generator=None, dtype=None, device=None, requires_grad=False):
    """A random permutation of ``0 .. n-1``."""
    npd = _dtype_np(dtype, np.dtype(np.int64))
    return _random(generator, device, lambda rng: rng.permutation(n).astype(npd), requires_grad)


def rand_like(input, dtype=None, device=None, generator=None):
    dt, dev = _like(input, dtype, device)
    return rand(input.shape, dtype=dt, device=dev, generator=generator)


def randn_like(input, dtype=None, device=None, generator=None):
    dt, dev = _like(input, dtype, device)
    return randn(input.shape, dtype=dt, device=dev, generator=generator)


def randint_like(input, low=0, high=None, dtype=None, device=None, generator=None):
    if high is None:
        low, high = 0, low
    dt, dev = _like(input, dtype, device)
    return randint(low, high, tuple(input.shape), dtype=dt, device=dev, generator=generator)


def normal(mean=0.0, std=1.0, size=None, generator=None, dtype=None, device=None,
           requires_grad=False):
    """Normal samples: ``normal(mean, std, size)``, or elementwise from tensor ``mean``/``std``."""
    if isinstance(mean, graph.Tensor) or isinstance(std, graph.Tensor):
        ref = mean if isinstance(mean, graph.Tensor) else std
        m = mean._data if isinstance(mean, graph.Tensor) else mean
        s = std._data if isinstance(std, graph.Tensor) else std
        return _random(generator, ref.device,
                       lambda rng: rng.normal(m, s).astype(ref._data.dtype), requires_grad)
    if size is None:
        raise TypeError("normal() with float mean and std needs a size")
    npd = _dtype_np(dtype, backend.get_default_dtype().np)
    return _random(generator, device,
                   lambda rng: rng.normal(mean, std, _size_args((size,))).astype(npd),
                   requires_grad)


def bernoulli(input, p=None, generator=None):
    """Samples of 0/1 with probabilities ``input`` (or ``p``)."""
    probs = input._data if p is None else p
    return _random(generator, input.device,
                   lambda rng: (rng.random(input._data.shape) < probs).astype(input._data.dtype))


def multinomial(input, num_samples, replacement=False, generator=None):
    """Indices drawn with weights ``input`` (1-D or one row per distribution)."""
    probs = np.asarray(input._host(), dtype=np.float64)
    rows = probs.reshape(-1, probs.shape[-1])
    if not np.isfinite(rows).all() or (rows < 0).any():
        raise RuntimeError("multinomial: probability tensor contains either `inf`, `nan` or "
                           "element < 0")
    # drawn on the host (a few numbers per row): a CPU generator's stream, else the default one
    rng = (generator if generator is not None and generator.device.type == "cpu"
           else backend.default_generator).numpy
    out = []
    for row in rows:
        if not replacement and num_samples > (row > 0).sum():
            raise RuntimeError("multinomial: cannot sample n_sample > prob_dist.size(-1) samples "
                               "without replacement")
        out.append(rng.choice(len(row), size=num_samples, replace=replacement, p=row / row.sum()))
    arr = np.asarray(out, dtype=np.int64).reshape(probs.shape[:-1] + (num_samples,))
    return _finish(arr, input.device, False)

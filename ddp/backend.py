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

_cupy = None          # the cupy module once imported
_cupy_error = None    # why it could not be imported


def cupy_module():
    """Return the ``cupy`` module, importing it on first use; raise a clear error without it."""
    global _cupy, _cupy_error
    if _cupy is None:
        if _cupy_error is not None:
            raise _cupy_error
        try:
            import cupy
            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("no CUDA device is visible")
        except Exception as exc:  # ImportError, CUDA driver errors
            _cupy_error = RuntimeError(
                "CUDA is not available: the 'cuda' device needs CuPy and a GPU "
                f"(pip install 'ddp[cuda]'); cause: {exc}")
            raise _cupy_error from exc
        _cupy = cupy
    return _cupy


def cuda_is_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        cupy_module()
        return True
    except RuntimeError:
        return False


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
        >>> ddp.set_default_device("cuda")   # every ddp.zeros/tensor/randn now lands on the GPU
    """
    global _default_device
    dev = CPU if dev is None else as_device(dev)
    if dev.type == "cuda":
        cupy_module()  # a clear error now, not at the first tensor
    _default_device = dev


def get_default_device() -> device:
    return _default_device


def array_module_of_device(dev):
    """The array module (numpy or cupy) that holds arrays of ``dev``."""
    return np if as_device(dev).type == "cpu" else cupy_module()


def get_array_module(*arrays):
    """``numpy`` or ``cupy``, whichever holds the given arrays (NumPy when none is a CuPy array).

    Example:
        >>> get_array_module(np.zeros(2)) is np
        True
    """
    for a in arrays:
        if a.__class__ is not np.ndarray and type(a).__module__.startswith("cupy"):
            return cupy_module()
    return np


def device_of(array) -> device:
    """The :class:`device` an array lives on."""
    if isinstance(array, np.ndarray) or not type(array).__module__.startswith("cupy"):
        return CPU
    idx = array.device.id
    dev = _cuda_devices.get(idx)
    if dev is None:
        dev = _cuda_devices[idx] = device("cuda", idx)
    return dev


def to_device(array, dev: device):
    """Copy ``array`` to device ``dev`` (no copy when it is already there)."""
    if dev.type == "cpu":
        if isinstance(array, np.ndarray):
            return array
        return array.get()
    cp = cupy_module()
    index = 0 if dev.index is None else dev.index
    if isinstance(array, cp.ndarray) and array.device.id == index:
        return array
    with cp.cuda.Device(index):
        return cp.asarray(array)


def is_cuda_array(array) -> bool:
    return type(array).__module__.startswith("cupy")


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


def index_add_at(out, index, values):
    """``out[index] += values`` where repeated positions add up (NumPy's ``add.at``)."""
    if isinstance(out, np.ndarray):
        if _is_row_index(out, index, values):
            _add_rows(out, index, values)
        else:
            np.add.at(out, index, values)
    else:
        import cupyx
        cupyx.scatter_add(out, index, values)


def _is_row_index(out, index, values):
    """An integer array selecting whole rows of ``out``, with one row of values per entry."""
    return (isinstance(index, np.ndarray) and index.dtype.kind in "iu" and index.size > 32
            and getattr(values, "shape", ())[:index.ndim] == index.shape
            and values.ndim == index.ndim + out.ndim - 1)


def _add_rows(out, index, values):
    """Scatter-add rows by sorting the indices and summing each run with ``add.reduceat``:
    several times faster than ``np.add.at`` for embedding-style gradients."""
    idx = index.reshape(-1) % out.shape[0]  # -1 and n-1 are the same row
    rows = values.reshape((idx.size,) + out.shape[1:])
    order = np.argsort(idx, kind="stable")
    idx = idx[order]
    starts = np.flatnonzero(np.concatenate(([True], idx[1:] != idx[:-1])))
    out[idx[starts]] += np.add.reduceat(rows[order], starts, axis=0)


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
    _fp_state = None


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
    """Undo :func:`silence_fp`."""
    if _fp_state is not None:
        _fp_state.reset(token)
    else:
        token.__exit__(None, None, None)


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
    """A seeded source of random numbers (a NumPy ``PCG64`` stream on the CPU).

    CUDA tensors draw on the CPU generator and are copied over, so the same seed gives the same
    numbers on every device.

    Example:
        >>> g = ddp.Generator().manual_seed(0)
        >>> ddp.rand(2, generator=g).shape
        ddp.Size([2])
    """

    def __init__(self, device="cpu"):
        self.device = as_device(device)
        self._seed = 67280421310721
        self._rng = np.random.Generator(np.random.PCG64(self._seed))

    def manual_seed(self, seed):
        self._seed = _builtins.int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self._seed))
        return self

    def seed(self):
        """Seed from fresh entropy and return the seed used."""
        s = _builtins.int(np.random.SeedSequence().entropy % (2 ** 63))
        self.manual_seed(s)
        return s

    def initial_seed(self):
        return self._seed

    def get_state(self):
        """The generator's state as a uint8 tensor-compatible NumPy array (picklable dict)."""
        return self._rng.bit_generator.state

    def set_state(self, state):
        self._rng.bit_generator.state = state
        return self

    @property
    def numpy(self) -> np.random.Generator:
        return self._rng


default_generator = Generator()


def numpy_generator(generator=None) -> np.random.Generator:
    """The NumPy stream of ``generator`` (the default generator when None)."""
    return (generator or default_generator).numpy


def manual_seed(seed):
    """Seed the default generator, so results are reproducible.

    Example:
        >>> ddp.manual_seed(0); a = ddp.rand(3); ddp.manual_seed(0); bool((a == ddp.rand(3)).all())
        True
    """
    default_generator.manual_seed(seed)
    return default_generator


def seed():
    return default_generator.seed()


def initial_seed():
    return default_generator.initial_seed()


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(state):
    default_generator.set_state(state)

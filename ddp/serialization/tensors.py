"""What every format shares about tensors: the dtypes a file may name, little-endian bytes out,
and ``map_location`` (where loaded tensors go).

Example:
    >>> restore = Restorer("cpu", "ckpt.pt")
    >>> restore(np.ones(2, np.float32), "cpu")
    array([1., 1.], dtype=float32)
"""
from __future__ import annotations

import sys

import numpy as np

from .. import backend
from ..tensor import Tensor

# NumPy dtypes an array in a file may have (never np.dtype(<string from the file>) directly:
# an object dtype would turn file bytes into pointers).
NP_DTYPES = {name: np.dtype(name) for name in (
    "bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
    "float16", "float32", "float64", "complex64", "complex128")}
if backend.bfloat16 is not None:
    NP_DTYPES["bfloat16"] = backend.bfloat16.np
TENSOR_DTYPES = {d.name for d in backend._ALL_DTYPES}


def le_bytes(arr):
    """A C-contiguous little-endian uint8 view (or copy) of a host array."""
    arr = np.ascontiguousarray(arr)
    if sys.byteorder == "big" or arr.dtype.byteorder == ">":  # pragma: no cover - LE machines
        arr = arr.byteswap().view(arr.dtype.newbyteorder("<"))
    return arr.reshape(-1).view(np.uint8)


def host_array(src):
    """A NumPy array of ``src`` (a CuPy array is copied to the host; one tensor at a time)."""
    return backend.to_host(src)


def _device_location(location):
    if location is None:
        return None
    if isinstance(location, (str, backend.device)):
        return str(backend.as_device(location))
    raise TypeError(f"map_location entries must be str or ddp.device, got {location!r}")


class Restorer:
    """Moves loaded CPU arrays to their device according to ``map_location``: ``None`` (where
    they were saved), a device, a dict ``{saved: new}`` or a callable ``fn(tensor, saved)``."""

    def __init__(self, map_location, name):
        if isinstance(map_location, dict):
            map_location = {_device_location(k): _device_location(v)
                            for k, v in map_location.items()}
        self.map_location = map_location
        self.name = name

    def __call__(self, arr, saved):
        ml = self.map_location
        target = saved
        if ml is None:
            pass
        elif isinstance(ml, dict):
            target = ml.get(saved, saved)
        elif isinstance(ml, (str, backend.device)):
            target = _device_location(ml)
        elif callable(ml):
            res = ml(Tensor._make(arr), saved)
            if res is not None:
                return res._data if isinstance(res, Tensor) else res
        else:
            raise TypeError(f"ddp.load: map_location must be None, a str, a ddp.device, a dict or "
                            f"a callable, got {type(ml).__name__}")
        try:
            dev = backend.as_device(target)
        except RuntimeError as exc:
            raise RuntimeError(f"ddp.load: {self.name} holds a tensor saved on {target!r}, which "
                               f"ddp cannot place ({exc}); pass map_location='cpu'") from None
        if dev.type == "cuda" and not backend.cuda_is_available():
            raise RuntimeError(
                f"ddp.load: {self.name} holds a tensor saved on {saved}, but CUDA is not "
                f"available here (ddp.cuda.is_available() is False). On a CPU-only machine pass "
                f"map_location='cpu' (or map_location=ddp.device('cpu')) to load it onto the CPU.")
        return backend.to_device(arr, dev)

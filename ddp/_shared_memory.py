"""CPU arrays in named shared memory, so processes started by ``ddp.multiprocessing`` (fork or
spawn) can work on the same parameters (hogwild training, ``Module.share_memory()``).

An array is moved once (:func:`share_array` copies it into a fresh segment); pickling such an
array for another process sends the segment's name and the view's offset, shape and strides
(:func:`handle`), and :func:`attach` maps the same bytes there. Segments live until the process
that made them exits (then they are unlinked). CuPy arrays are never moved (PyTorch's
``share_memory_`` is a no-op on CUDA).

Example:
    >>> import numpy as np
    >>> a = share_array(np.arange(4.0))
    >>> b = attach(*handle(a[1:]))             # what another process would rebuild
    >>> b[0] = 10.0; float(a[1])
    10.0
"""
from __future__ import annotations

import atexit
from multiprocessing import shared_memory

import numpy as np

_owned: dict[str, shared_memory.SharedMemory] = {}     # segments this process made
_attached: dict[str, shared_memory.SharedMemory] = {}  # segments other processes made
_spans: dict[str, tuple[int, int]] = {}                # name -> (first address, one past the last)


def _root(arr):
    """(name, start address) of the segment holding ``arr``'s first byte, or None."""
    address = arr.__array_interface__["data"][0]
    for name, (start, stop) in _spans.items():
        if start <= address < stop:
            return name, start
    return None


def is_shared(arr) -> bool:
    """True when ``arr`` (a NumPy array) lies in a segment made by :func:`share_array`."""
    return isinstance(arr, np.ndarray) and arr.size > 0 and _root(arr) is not None


def _wrap(shm):
    buf = shm.buf
    start = np.frombuffer(buf, np.uint8).__array_interface__["data"][0]
    _spans[shm.name] = (start, start + len(buf))
    return buf


def share_array(arr):
    """A copy of NumPy array ``arr`` in a new shared-memory segment (same shape and dtype)."""
    arr = np.ascontiguousarray(arr)
    shm = shared_memory.SharedMemory(create=True, size=max(arr.nbytes, 1))
    _owned[shm.name] = shm
    out = np.ndarray(arr.shape, arr.dtype, buffer=_wrap(shm))
    out[...] = arr
    return out


def handle(arr):
    """What another process needs to map ``arr``: (name, offset, shape, strides, dtype)."""
    name, address = _root(arr)
    return name, arr.__array_interface__["data"][0] - address, arr.shape, arr.strides, arr.dtype


def attach(name, offset, shape, strides, dtype):
    """The array that :func:`handle` described, on the same bytes."""
    shm = _owned.get(name) or _attached.get(name)
    if shm is None:
        # Python < 3.13 registers the attached segment with the resource tracker too; the
        # processes ddp.multiprocessing starts share their parent's tracker, where it is the
        # same entry the owner's unlink removes (unregistering here would remove it twice).
        shm = shared_memory.SharedMemory(name=name)
        _attached[name] = shm
        _wrap(shm)
    return np.ndarray(shape, dtype, buffer=shm.buf, offset=offset, strides=strides)


@atexit.register
def _unlink_owned():
    for shm in _owned.values():
        try:
            shm.unlink()
        except FileNotFoundError:
            pass

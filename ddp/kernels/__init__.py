"""Fused loops for the CPU, compiled by Numba: the ops whose NumPy form makes one pass over the
array per operation (layer, group and batch norm: ten of them) run here as one or two passes
that keep a row in cache, like PyTorch's own kernels.

A kernel is a plain Python function decorated with :func:`jit`; it is compiled on its first call
(cached on disk, so later processes load it), so ``import ddp`` does not import Numba. Ops ask
:func:`fits` whether their arrays can go to a kernel (NumPy, C-contiguous, float32 or float64,
of one dtype) and otherwise take their NumPy/CuPy path, which stays the one the GPU runs.

``DDP_CPU_KERNELS=0`` turns the kernels off (the NumPy path everywhere: tests compare the two).

Example:
    >>> import numpy as np
    >>> from ddp import kernels
    >>> kernels.fits(np.ones((2, 3), np.float32), None) == kernels.enabled()
    True
    >>> kernels.fits(np.ones((2, 3), np.float32), np.ones(3))   # two dtypes
    False
"""
from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

# Reassociation lets a sum run in vector lanes (0.47 -> 0.16 ms for layer norm's forward and
# backward at (128, 1024) float32); no "nnan"/"ninf", so NaN and infinity propagate as in NumPy.
_FASTMATH = frozenset({"reassoc", "contract", "arcp", "nsz"})
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_enabled = None


def enabled() -> bool:
    """Whether kernels run: Numba imports and ``DDP_CPU_KERNELS`` is not ``0``."""
    global _enabled
    if _enabled is None:
        # (Numba is a dependency: absent only from a broken install; found, not imported yet)
        _enabled = os.environ.get("DDP_CPU_KERNELS", "1") != "0" and \
            importlib.util.find_spec("numba") is not None
    return _enabled


def fits(*arrays) -> bool:
    """True when kernels run and ``arrays`` (None skipped) are NumPy arrays, C-contiguous, not
    empty, all of one dtype, float32 or float64."""
    if not enabled():
        return False
    dtype = None
    for a in arrays:
        if a is None:
            continue
        if type(a) is not np.ndarray or not a.flags.c_contiguous or a.size == 0:
            return False
        if dtype is None:
            if a.dtype not in _FLOATS:
                return False
            dtype = a.dtype
        elif a.dtype != dtype:
            return False
    return True


def jit(fn=None, *, nan_free=False, strict=False):
    """``fn`` compiled by Numba on its first call (nopython, no GIL, cached on disk, the
    fast-math flags above). ``nan_free``: also "nnan", for a loop whose result does not matter
    where the input holds a NaN (the row maxima of a softmax, whose row sum propagates the NaN
    anyway): LLVM then vectorises a max. (Not "ninf": masked scores are -inf.) ``strict``: no
    fast-math at all, each operation rounded as written (no fused multiply-add): an optimizer's
    update, whose every bit PyTorch's trajectories pin."""
    if fn is None:
        return functools.partial(jit, nan_free=nan_free, strict=strict)
    flags = set() if strict else set(_FASTMATH) | ({"nnan"} if nan_free else set())
    compiled = None

    @functools.wraps(fn)
    def call(*args):
        nonlocal compiled
        if compiled is None:
            import numba
            try:
                compiled = numba.njit(cache=True, nogil=True, fastmath=flags)(fn)
            except RuntimeError:   # no writable place for the cache (a read-only install
                # and home): compiled in each process instead
                compiled = numba.njit(nogil=True, fastmath=flags)(fn)
        return compiled(*args)
    return call

"""The elementwise sum of a few equal arrays written into each of them, in one pass: what the
ranks sharing one machine do with their gradient buckets (ddp.distributed.shared_sum). NumPy
takes two (``np.add`` into the first, then a copy into each other one), reading the sum back
from memory: 3.55 MiB float32 from each of 2 ranks, 0.52 -> 0.27 ms in one process.

Example:
    >>> import numpy as np
    >>> a, b = np.ones(3, np.float32), np.full(3, 2, np.float32)
    >>> sum_into_each((a, b)); a.tolist(), b.tolist()
    ([3.0, 3.0, 3.0], [3.0, 3.0, 3.0])
"""
from __future__ import annotations

from . import jit


@jit(strict=True)
def _sum_into_each(arrays):
    first = arrays[0]
    for i in range(first.size):
        s = first[i]
        for k in range(1, len(arrays)):   # in the arrays' order, whoever runs it: same bits
            s += arrays[k][i]
        for k in range(len(arrays)):
            arrays[k][i] = s


def sum_into_each(arrays):
    """Every array of the tuple ``arrays`` (1-d, of one size and dtype: :func:`ddp.kernels.fits`)
    receives their sum, added in the tuple's order."""
    _sum_into_each(tuple(arrays))

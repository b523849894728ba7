"""Collectives that differ between ranks become an error on every rank, never corrupt data.

MPI matches the k-th collective of each rank on a communicator whatever it is: an allreduce of
3 floats on one rank and of 4 on another gives "Message truncated" on one and half-reduced data
on the other; an ``int32`` allreduce against a ``float32`` one of the same size mixes bits
silently; an allreduce against a broadcast hangs or corrupts. So before each collective on a
*checked* communicator every rank reduces a 16-byte fingerprint of what it is about to do
(operation, shapes, dtypes, root, reduce op): the MAX of ``[h, -h]`` over the ranks equals
``[h, -h]`` only if every rank has the same ``h``. If not, every rank gathers the descriptions
(with the call site in the user's code) and raises the same ``RuntimeError`` naming each rank's
call; the data collective never runs, and the communicator stays usable.

The fingerprints always match one another: every collective on a checked communicator starts
with exactly one of them. It costs one small allreduce per collective (a few microseconds here);
DistributedDataParallel's gradient traffic, the hot path, runs on a private unchecked
communicator whose bucket layout is checked once per layout instead (``Reducer._build``).
``DDP_CHECK_COLLECTIVES=0`` turns the per-collective check off.

Example:
    >>> signature("Allreduce", np.zeros((2, 3), np.float32), op="sum")
    ('Allreduce', ((2, 3), 'float32'), 'op=sum')
    >>> describe(signature("Bcast", np.zeros(4), root=1))
    'Bcast float64 (4,) root=1'
"""
from __future__ import annotations

import linecache
import os
import sys
import zlib

import numpy as np

from .waiting import wait

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the ddp package


def enabled(env=None) -> bool:
    """Whether communicators check collectives (``DDP_CHECK_COLLECTIVES``, on by default)."""
    value = (os.environ if env is None else env).get("DDP_CHECK_COLLECTIVES", "1").strip()
    return value not in ("0", "false", "False", "off", "no")


def signature(name, *arrays, root=None, op=None):
    """What must agree between the ranks for collective ``name`` over ``arrays`` (None entries,
    such as a non-root's receive buffer, are left out)."""
    sig = (name,) + tuple((tuple(a.shape), str(a.dtype)) for a in arrays if a is not None)
    if root is not None:
        sig += (f"root={root}",)
    if op is not None:
        sig += (f"op={op}",)
    return sig


# the names one MPI operation goes by (the API's, the communicator's, the non-blocking one)
_KINDS = {"all_reduce": "Allreduce", "Iallreduce": "Allreduce", "broadcast": "Bcast",
          "all_gather": "Allgather", "all_gather_into_tensor": "Allgather",
          "reduce_scatter": "Reduce_scatter", "reduce": "Reduce", "gather": "Gather",
          "scatter": "Scatter", "barrier": "Barrier"}


def comparable(sig):
    """The part of a signature that must agree between ranks whatever path issued it: the
    operation (``all_reduce (async)`` and ``Iallreduce`` are both ``Allreduce``), the shapes
    and the dtypes."""
    name = sig[0].replace(" (async)", "")
    return (_KINDS.get(name, name),) + tuple(x for x in sig[1:] if isinstance(x, tuple))


def describe(sig) -> str:
    """``Allreduce float32 (3,) op=sum``: a signature for people."""
    parts = [sig[0]]
    for item in sig[1:]:
        parts.append(f"{item[1]} {item[0]}" if isinstance(item, tuple) else str(item))
    return " ".join(parts)


def call_site() -> str:
    """``file:line (code)`` of the innermost frame outside the ddp package: where the user's
    program asked for the collective (``loss.backward()`` for DDP's buckets)."""
    f = sys._getframe(1)
    while f is not None and (f.f_code.co_filename.startswith(_HERE)
                             or f.f_code.co_filename.startswith("<frozen")):
        f = f.f_back
    if f is None:
        return "?"
    name, line = f.f_code.co_filename, f.f_lineno
    code = linecache.getline(name, line).strip()
    return f"{name}:{line}" + (f" ({code})" if code else "")


class Checker:
    """The per-collective check on an mpi4py communicator (see the module docstring)."""

    def __init__(self, mpi_comm, label="the world group"):
        from mpi4py import MPI
        self.comm = mpi_comm
        self.label = label
        # ranks of COMM_WORLD, so errors name the ranks users see in RANK and in the output
        self.world_ranks = MPI.Group.Translate_ranks(mpi_comm.Get_group(),
                                                     list(range(mpi_comm.Get_size())),
                                                     MPI.COMM_WORLD.Get_group())
        self._max = MPI.MAX
        self._in_place = MPI.IN_PLACE
        self.count = 0

    def verify(self, sig):
        """Raise ``RuntimeError`` on every rank if the ranks are not all calling ``sig``."""
        self.count += 1
        h = zlib.crc32(repr(sig).encode())
        buf = np.array([h, -h], dtype=np.int64)
        wait(self.comm.Iallreduce(self._in_place, buf, op=self._max), buf)
        if buf[0] == h and buf[1] == -h:
            return
        everyone = self.comm.allgather((describe(sig), call_site()))
        lines = "\n".join(f"  rank {self.world_ranks[r]}: {what} at {where}"
                          for r, (what, where) in enumerate(everyone))
        raise RuntimeError(
            f"ranks called different collectives (collective #{self.count} on {self.label}):"
            f"\n{lines}\n"
            f"Every rank must issue the same collectives in the same order, with the same "
            f"shapes and dtypes; nothing was sent.")

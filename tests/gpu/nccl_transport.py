"""A stand-in for CuPy's NCCL binding (``cupy.cuda.nccl``) for tests on the simulated device:
the same functions and constants, doing NCCL's work on the arrays' memory (reached through the
device pointers NCCL is given) with MPI, or locally for one rank. It records every call, so
tests can check what travelled by NCCL and in which types.

Test infrastructure, as tests/simcuda is.
"""
from __future__ import annotations

import ctypes

import numpy as np

from ddp import backend

NCCL_INT8, NCCL_UINT8, NCCL_INT32, NCCL_INT64 = 0, 1, 2, 4
NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_BFLOAT16 = 6, 7, 8, 9
NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN = 0, 1, 2, 3
_DTYPES = {NCCL_INT8: np.int8, NCCL_UINT8: np.uint8, NCCL_INT32: np.int32, NCCL_INT64: np.int64,
           NCCL_FLOAT16: np.float16, NCCL_FLOAT32: np.float32, NCCL_FLOAT64: np.float64,
           NCCL_BFLOAT16: backend.bfloat16.np}
_UFUNCS = {NCCL_SUM: np.add, NCCL_PROD: np.multiply, NCCL_MAX: np.maximum, NCCL_MIN: np.minimum}


def _view(ptr, count, code):
    """The ``count`` elements of type ``code`` at address ``ptr`` (simulated device memory is
    host memory), as a NumPy array that writes through."""
    dtype = np.dtype(_DTYPES[code])
    raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype, count=count)


class Transport:
    """``cupy.cuda.nccl`` over an mpi4py communicator (None: one rank)."""

    def __init__(self, mpi_comm=None):
        self.mpi_comm = mpi_comm
        self.calls = []            # (collective name, numpy dtype, count)
        self.async_error = None    # set to an exception: check_async_error raises it
        self.aborted = False
        for name, value in globals().items():
            if name.startswith("NCCL_"):
                setattr(self, name, value)

    def get_unique_id(self):
        return (42,) * 8

    def NcclCommunicator(self, size, uid, rank):   # noqa: N802  (CuPy's name)
        assert uid == self.get_unique_id()
        expected = 1 if self.mpi_comm is None else self.mpi_comm.Get_size()
        assert size == expected and 0 <= rank < size
        return _Comm(self, rank)


class _Comm:
    def __init__(self, transport, rank):
        self.t, self.rank = transport, rank
        self.comm = transport.mpi_comm

    def _record(self, name, code, count, stream):
        assert stream != 0, "NCCL must run on the communication stream, not the null stream"
        self.t.calls.append((name, np.dtype(_DTYPES[code]), count))

    def _reduce(self, values, op):
        if self.comm is None:
            return values
        everyone = self.comm.allgather(values.copy())
        out = everyone[0].astype(np.float64 if values.dtype.kind == "f" else values.dtype)
        for other in everyone[1:]:
            out = _UFUNCS[op](out, other)
        return out.astype(values.dtype)

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):   # noqa: N802
        self._record("allReduce", datatype, count, stream)
        src = _view(sendbuf, count, datatype)
        _view(recvbuf, count, datatype)[...] = self._reduce(src, op)

    def reduce(self, sendbuf, recvbuf, count, datatype, op, root, stream):
        self._record("reduce", datatype, count, stream)
        out = self._reduce(_view(sendbuf, count, datatype), op)
        if self.rank == root:
            _view(recvbuf, count, datatype)[...] = out

    def bcast(self, buff, count, datatype, root, stream):
        self._record("bcast", datatype, count, stream)
        buf = _view(buff, count, datatype)
        if self.comm is not None:
            buf[...] = self.comm.bcast(buf.copy() if self.rank == root else None, root=root)

    def allGather(self, sendbuf, recvbuf, count, datatype, stream):   # noqa: N802
        self._record("allGather", datatype, count, stream)
        mine = _view(sendbuf, count, datatype).copy()
        everyone = [mine] if self.comm is None else self.comm.allgather(mine)
        _view(recvbuf, count * len(everyone), datatype)[...] = np.concatenate(everyone)

    def reduceScatter(self, sendbuf, recvbuf, recvcount, datatype, op, stream):   # noqa: N802
        self._record("reduceScatter", datatype, recvcount, stream)
        size = 1 if self.comm is None else self.comm.Get_size()
        total = self._reduce(_view(sendbuf, recvcount * size, datatype), op)
        _view(recvbuf, recvcount, datatype)[...] = total[self.rank * recvcount:
                                                         (self.rank + 1) * recvcount]

    def check_async_error(self):
        if self.t.async_error is not None:
            raise self.t.async_error

    def abort(self):
        self.t.aborted = True

    def destroy(self):
        pass

"""The NCCL communicator: collectives between GPUs through CuPy's NCCL binding, bootstrapped over
MPI (``init_process_group("nccl")``).

- Rank 0 makes NCCL's unique id and the MPI companion broadcasts it; every rank then joins the
  NCCL communicator on its current GPU (the launcher pins one GPU per rank).
- Device arrays travel by NCCL on a dedicated non-blocking stream, ordered against the compute
  stream with events: the collective waits for the kernels that produced its input, and later
  kernels wait for the collective, without the host ever blocking. CuPy's memory pool has no
  ``record_stream``, so a :class:`StreamWork` keeps its arrays alive until its event completes.
- Host (NumPy) arrays, Python objects, and what NCCL lacks (bitwise reductions) go through the
  MPI companion. ``avg`` is a sum, as for every communicator (``ddp.distributed`` divides).
- A watchdog thread turns an asynchronous NCCL error, or a collective that does not finish
  within the timeout, into a message naming the rank and the collective, then stops the job
  (every rank, through MPI's abort), instead of a hang.
- Ranks that share a GPU cannot form an NCCL communicator (NCCL refuses duplicate devices):
  :func:`create` falls back to the MPI path with one warning.

The transport (the module with ``get_unique_id``, ``NcclCommunicator`` and the ``NCCL_*``
constants, CuPy's ``cupy.cuda.nccl``) can be injected: tests run this communicator on the
simulated device over a transport that does NCCL's work with MPI.

Example (on GPUs, under ``launcher -n 2``):
    >>> dist.init_process_group("nccl")                       # doctest: +SKIP
    >>> t = ddp.ones(4, device="cuda"); dist.all_reduce(t)    # doctest: +SKIP
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
import warnings

import numpy as np

from .. import backend
from .communicator import Communicator, Work, _check_op

# NCCL's element types by NumPy dtype (bool travels as uint8: same bytes)
_DTYPE_NAMES = {np.dtype(np.int8): "NCCL_INT8", np.dtype(np.uint8): "NCCL_UINT8",
                np.dtype(np.bool_): "NCCL_UINT8", np.dtype(np.int32): "NCCL_INT32",
                np.dtype(np.int64): "NCCL_INT64", np.dtype(np.float16): "NCCL_FLOAT16",
                np.dtype(np.float32): "NCCL_FLOAT32", np.dtype(np.float64): "NCCL_FLOAT64",
                backend.bfloat16.np: "NCCL_BFLOAT16"}
_NCCL_CODES = {"NCCL_INT8": 0, "NCCL_UINT8": 1, "NCCL_INT32": 2, "NCCL_INT64": 4,
               "NCCL_FLOAT16": 6, "NCCL_FLOAT32": 7, "NCCL_FLOAT64": 8, "NCCL_BFLOAT16": 9}
_OP_NAMES = {"sum": "NCCL_SUM", "avg": "NCCL_SUM", "product": "NCCL_PROD", "max": "NCCL_MAX",
             "min": "NCCL_MIN"}
_OP_CODES = {"NCCL_SUM": 0, "NCCL_PROD": 1, "NCCL_MAX": 2, "NCCL_MIN": 3}
_DEFAULT_TIMEOUT = float(os.environ.get("DDP_NCCL_TIMEOUT_SECONDS", "600"))


def nccl_dtype(transport, dtype):
    """The transport's code for ``dtype``; a clear error for types NCCL cannot move."""
    name = _DTYPE_NAMES.get(np.dtype(dtype))
    if name is None:
        raise TypeError(f"NCCL cannot move {np.dtype(dtype)} arrays (supported: "
                        f"{', '.join(sorted(str(d) for d in _DTYPE_NAMES))})")
    return getattr(transport, name, _NCCL_CODES[name])


def nccl_op(transport, op):
    name = _OP_NAMES[op]
    return getattr(transport, name, _OP_CODES[name])


def default_transport():
    """CuPy's NCCL binding, or a clear error saying what to install."""
    backend.cuda_module()
    try:
        from cupy.cuda import nccl
        nccl.NcclCommunicator  # noqa: B018  (absent when libnccl could not be loaded)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError("the NCCL backend needs NCCL for CuPy: pip install 'ddp[cuda12]' "
                           "(or 'ddp[cuda13]'), which brings nvidia-nccl") from exc
    return nccl


class SharedGPUError(RuntimeError):
    """Two ranks of this job are on the same GPU (NCCL refuses that)."""


class StreamWork(Work):
    """An NCCL collective in flight on the communication stream: ``wait()`` makes the caller's
    current stream wait for it (no host block); the arrays stay referenced until it is done."""
    __slots__ = ("_done", "_arrays", "name", "started")

    def __init__(self, done_event, arrays, value, name):
        super().__init__()
        self._done, self._arrays, self.name = done_event, arrays, name
        self._value = value
        self.started = time.monotonic()

    def wait(self, timeout=None):
        backend.cuda_module().cuda.get_current_stream().wait_event(self._done)
        if not self._event.is_set():
            self._set(self._value, None)
        return True

    def is_completed(self):
        if self._done.query():
            self._arrays = None   # the memory may be reused now
            return True
        return False


class NCCLCommunicator(Communicator):
    """Collectives of device arrays over NCCL, everything else over the MPI ``companion``.

    ``companion``: the MPI communicator of the same ranks (made when omitted);
    ``device``: the GPU index (default: this thread's current GPU); ``transport``: CuPy's
    ``cupy.cuda.nccl`` unless given; ``timeout``: seconds a collective may take before the
    watchdog stops the job; ``on_fault``: what the watchdog calls with its message (default:
    print it and abort the job).
    """
    name = "nccl"
    has_nonblocking = True    # collectives are asynchronous on the stream: no thread needed

    def __init__(self, companion=None, device=None, transport=None, timeout=None,
                 on_fault=None, watchdog=True):
        if companion is None:
            from .mpi import MPICommunicator
            companion = MPICommunicator()
        super().__init__(companion.rank, companion.size, companion.local_rank,
                         companion.local_size)
        self.mpi = companion
        self.device = backend.current_device() if device is None else int(device)
        self.transport = default_transport() if transport is None else transport
        self.timeout = _DEFAULT_TIMEOUT if timeout is None else float(timeout)
        self._on_fault = on_fault or self._stop_job
        self._check_own_gpus()
        cp = backend.cuda_module()
        with cp.cuda.Device(self.device):
            uid = self.transport.get_unique_id() if self.rank == 0 else None
            uid = companion.bcast_obj(uid)
            self._nccl = self.transport.NcclCommunicator(self.size, uid, self.rank)
            self._stream = cp.cuda.Stream(non_blocking=True)
        self._inflight: list[StreamWork] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watchdog = None
        if watchdog:
            self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                              name=f"ddp-nccl-watchdog-{self.rank}")
            self._watchdog.start()

    def _check_own_gpus(self):
        """Every rank must have its own GPU: (host, device) pairs must be distinct."""
        here = (socket.gethostname(), self.device)
        everyone = self.mpi.allgather_obj(here)
        shared = [r for r, where in enumerate(everyone) if everyone.count(where) > 1]
        if shared:
            raise SharedGPUError(f"ranks {shared} share a GPU ({everyone[shared[0]][0]} "
                                 f"cuda:{everyone[shared[0]][1]}); NCCL needs one GPU per rank")

    # ---------------------------------------------------------------- launching
    def _launch(self, name, arrays, value, call):
        """Run ``call(stream_ptr)`` on the communication stream after the compute stream's
        work; returns its :class:`StreamWork`."""
        cp = backend.cuda_module()
        with cp.cuda.Device(self.device):
            ready = cp.cuda.Event(disable_timing=True)
            ready.record(cp.cuda.get_current_stream())
            self._stream.wait_event(ready)
            call(self._stream.ptr)
            done = cp.cuda.Event(disable_timing=True)
            done.record(self._stream)
        work = StreamWork(done, arrays, value, name)
        with self._lock:
            self._inflight = [w for w in self._inflight if not w.is_completed()] + [work]
        return work

    def _blocking(self, work):
        work.wait()
        return work.result()

    @staticmethod
    def _on_device(*arrays):
        return all(backend.is_cuda_array(a) for a in arrays if a is not None)

    # ---------------------------------------------------------------- collectives
    def Iallreduce(self, array, op="sum"):
        _check_op(op)
        if not self._on_device(array) or op not in _OP_NAMES:
            return self.mpi.Iallreduce(array, op)
        contiguous = array if array.flags.c_contiguous else array.copy()
        t = self.transport
        work = self._launch("allreduce", (contiguous,), array, lambda s: self._nccl.allReduce(
            contiguous.data.ptr, contiguous.data.ptr, contiguous.size,
            nccl_dtype(t, contiguous.dtype), nccl_op(t, op), s))
        if contiguous is not array:
            work.wait()
            array[...] = contiguous
        return work

    Iallreduce_nonblocking = Iallreduce

    def Allreduce(self, array, op="sum"):
        if not self._on_device(array) or op not in _OP_NAMES:
            return self.mpi.Allreduce(array, op)
        return self._blocking(self.Iallreduce(array, op))

    def Bcast(self, array, root=0):
        if not self._on_device(array):
            return self.mpi.Bcast(array, root)
        t = self.transport
        return self._blocking(self._launch("broadcast", (array,), array, lambda s: self._nccl.bcast(
            array.data.ptr, array.size, nccl_dtype(t, array.dtype), root, s)))

    def Allgather(self, send, recv):
        if not self._on_device(send, recv):
            return self.mpi.Allgather(send, recv)
        t = self.transport
        self._blocking(self._launch("allgather", (send, recv), None,
                                    lambda s: self._nccl.allGather(
                                        send.data.ptr, recv.data.ptr, send.size,
                                        nccl_dtype(t, send.dtype), s)))

    def Reduce_scatter(self, send, recv, op="sum"):
        _check_op(op)
        if not self._on_device(send, recv) or op not in _OP_NAMES:
            return self.mpi.Reduce_scatter(send, recv, op)
        t = self.transport
        self._blocking(self._launch("reduce_scatter", (send, recv), None,
                                    lambda s: self._nccl.reduceScatter(
                                        send.data.ptr, recv.data.ptr, recv.size,
                                        nccl_dtype(t, send.dtype), nccl_op(t, op), s)))

    def Reduce(self, array, op="sum", root=0):
        _check_op(op)
        if not self._on_device(array) or op not in _OP_NAMES:
            return self.mpi.Reduce(array, op, root)
        t = self.transport
        return self._blocking(self._launch("reduce", (array,), array, lambda s: self._nccl.reduce(
            array.data.ptr, array.data.ptr, array.size, nccl_dtype(t, array.dtype),
            nccl_op(t, op), root, s)))

    def Gather(self, send, recv, root=0):
        """NCCL has no gather: an allgather into a scratch array, kept at ``root``."""
        if not self._on_device(send, recv):
            return self.mpi.Gather(send, recv, root)
        cp = backend.cuda_module()
        scratch = cp.empty((self.size,) + tuple(send.shape), dtype=send.dtype)
        self.Allgather(send, scratch)
        if self.rank == root:
            recv[...] = scratch.reshape(recv.shape)

    def Scatter(self, send, recv, root=0):
        """NCCL has no scatter: ``root`` broadcasts the whole array, each rank keeps its block."""
        if not self._on_device(recv) or (self.rank == root and not self._on_device(send)):
            return self.mpi.Scatter(send, recv, root)
        cp = backend.cuda_module()
        whole = send if self.rank == root else \
            cp.empty((self.size,) + tuple(recv.shape), dtype=recv.dtype)
        whole = whole if whole.flags.c_contiguous else whole.copy()
        self.Bcast(whole, root)
        recv[...] = whole[self.rank]

    def Barrier(self):
        """Every rank's queued NCCL work is done, then an MPI barrier."""
        self._stream.synchronize()
        self.mpi.Barrier()

    # ---------------------------------------------------------------- objects, groups
    def bcast_obj(self, obj, root=0):
        return self.mpi.bcast_obj(obj, root)

    def allgather_obj(self, obj):
        return self.mpi.allgather_obj(obj)

    def gather_obj(self, obj, root=0):
        return self.mpi.gather_obj(obj, root)

    def split(self, ranks):
        sub = self.mpi.split(ranks)
        if sub is None:
            return None
        return NCCLCommunicator(sub, self.device, self.transport, self.timeout, self._on_fault,
                                watchdog=self._watchdog is not None)

    def progress(self):
        with self._lock:
            self._inflight = [w for w in self._inflight if not w.is_completed()]

    # ---------------------------------------------------------------- faults and teardown
    def _watch(self, interval=1.0):
        while not self._closed.wait(interval):
            self.watch_once()

    def watch_once(self, now=None):
        """One look of the watchdog: an asynchronous NCCL error, or a collective in flight for
        longer than ``timeout`` seconds, is reported through ``on_fault``. Returns the message
        (None when all is well)."""
        message = None
        try:
            self._nccl.check_async_error()
        except Exception as exc:  # NCCL's asynchronous error, as CuPy raises it
            message = f"NCCL error on rank {self.rank} (cuda:{self.device}): {exc}"
        if message is None:
            now = time.monotonic() if now is None else now
            with self._lock:
                late = [w for w in self._inflight if not w.is_completed()
                        and now - w.started > self.timeout]
            if late:
                message = (f"NCCL {late[0].name} on rank {self.rank} (cuda:{self.device}) did not "
                           f"finish within {self.timeout:g} s: a rank is missing from the "
                           f"collective or the network failed")
        if message is not None:
            self._on_fault(message)
        return message

    def _stop_job(self, message):
        print(f"[rank {self.rank}] ddp: {message}; stopping the job", file=sys.stderr,
              flush=True)
        self.abort(1)

    def abort(self, code=1):
        try:
            self._nccl.abort()
        finally:
            self.mpi.abort(code)

    def free(self):
        self._closed.set()
        self._stream.synchronize()
        self._inflight = []
        self._nccl.destroy()
        self.mpi.free()


def create(device_id=None, explicit=True, **kwargs):
    """The communicator of ``backend="nccl"``: NCCL when every rank has its own GPU, else the MPI
    path (device arrays staged through pinned host memory) with one warning when NCCL was asked
    for explicitly."""
    from .mpi import MPICommunicator
    device = None
    if device_id is not None:
        device = device_id if isinstance(device_id, int) else backend.as_device(device_id).index
        backend.set_device(device)
    companion = MPICommunicator()
    try:
        return NCCLCommunicator(companion, device, **kwargs)
    except SharedGPUError as exc:
        if explicit:
            warnings.warn(f"{exc}: using MPI with host staging for this job instead of NCCL "
                          f"(pin one GPU per rank: launcher does)", stacklevel=3)
        return companion

"""The MPI communicator (mpi4py): works across machines under mpirun/mpiexec/srun.

- Collectives on one communicator are executed by one communication thread in submission
  order, so asynchronous buckets never reorder collectives and the main thread keeps running
  backward while an allreduce is on the wire (mpi4py releases the GIL inside MPI calls).
  Blocking collectives wait for the work already submitted, then run in the caller's thread.
  In the main thread they start MPI's non-blocking form and poll it, so signal handlers
  still run (SIGTERM reaches a rank waiting for a peer; see waiting.py).
- CuPy arrays are staged through host memory (the PyPI MPI wheels are not CUDA-aware); the
  current stream is synchronised first.
- float16 and bfloat16 travel as 16-bit words reduced by a user-defined MPI op (MPI has no
  bfloat16 type, and MPICH's float16 sum is slow).
"""
from __future__ import annotations

import pickle
import queue
import threading

import numpy as np

from .. import backend
from . import consistency, shared_sum
from .communicator import Communicator, Work, _check_op
from .stall import async_name, maybe_inspector
from .waiting import wait

_MPI = None


def mpi():
    """The ``mpi4py.MPI`` module (imported on first use: importing it initialises MPI)."""
    global _MPI
    if _MPI is None:
        from mpi4py import MPI
        _MPI = MPI
    return _MPI


_PINNED_BUFFERS = 64   # staging buffers kept per communicator (DDP has one per bucket)
_HALF_OPS = {}


def _half_op(dtype, op):
    """An MPI reduction over 16-bit floats (float16, bfloat16) sent as 16-bit words: half the
    bytes of float32, with the arithmetic done in float32 and rounded once per step. MPI has no
    bfloat16 type, and MPICH's own float16 sum is about 10x slower than this (measured: a 3.7 MB
    bucket step took 196 ms against 17 ms)."""
    key = (np.dtype(dtype), op)
    if key not in _HALF_OPS:
        ufunc = {"sum": np.add, "avg": np.add, "max": np.maximum, "min": np.minimum,
                 "product": np.multiply}[op]

        def reduce(inbuf, outbuf, datatype):
            a = np.frombuffer(inbuf, dtype=key[0])
            b = np.frombuffer(outbuf, dtype=key[0])
            b[...] = ufunc(a.astype(np.float32), b.astype(np.float32))
        _HALF_OPS[key] = mpi().Op.Create(reduce, commute=True)
    return _HALF_OPS[key]


def _is_half(dtype):
    return dtype == np.float16 or (backend.bfloat16 is not None and dtype == backend.bfloat16.np)


def _reduce_args(host, op):
    """(buffer spec, MPI op) for a reduction of ``host``; 16-bit floats go as 16-bit words."""
    if _is_half(host.dtype) and op in ("sum", "avg", "max", "min", "product"):
        return [host.view(np.uint16), mpi().UINT16_T], _half_op(host.dtype, op)
    return host, _mpi_op(op)


def _words(host):
    """``host`` as MPI can move it: bfloat16 viewed as 16-bit words (no copy), else as is."""
    if host is not None and backend.bfloat16 is not None and host.dtype == backend.bfloat16.np:
        return host.view(np.uint16)
    return host


def _pickled(obj):
    return np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)


def _unpickled(data, sizes):
    ends = np.cumsum(sizes)
    return [pickle.loads(data[end - size:end]) for size, end in zip(sizes, ends)]


def _mpi_op(op):
    MPI = mpi()
    return {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "product": MPI.PROD,
            "band": MPI.BAND, "bor": MPI.BOR, "bxor": MPI.BXOR}[op]


class MPICommunicator(Communicator):
    """A communicator over an ``mpi4py`` intracommunicator (``COMM_WORLD`` by default)."""
    name = "mpi"
    has_nonblocking = True    # MPI_Iallreduce, advanced by progress()

    def __init__(self, comm=None, checked=None, label="the world group"):
        MPI = mpi()
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        rank = self.comm.Get_rank()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        super().__init__(rank, self.comm.Get_size(), node.Get_rank(), node.Get_size())
        node.Free()
        checked = consistency.enabled() if checked is None else checked
        self.label = label
        # None unless DDP_STALL_CHECK_SECONDS is set; sub-communicators get theirs from split/dup
        self._stall = maybe_inspector(self.comm, checked)
        # every collective first checks that all ranks call the same (see consistency.py)
        self._check = consistency.Checker(self.comm, label) if checked and self.size > 1 else None
        self._queue = None
        self._thread = None
        self._outstanding = []   # non-blocking requests, tested by progress()
        self._pinned = {}        # (device pointer, shape, dtype) -> its pinned host buffer
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._idle = threading.Condition(self._pending_lock)

    # ---------------------------------------------------------------- staging
    def _host(self, array):
        """(host array to hand to MPI, function that writes a host result back).

        A GPU array goes through a page-locked host buffer kept for that array (a DDP bucket
        reuses its buffer every step; the PyPI MPI wheels are not CUDA-aware), copied on the
        current stream after the kernels that produced it."""
        if isinstance(array, np.ndarray):
            if not array.flags.c_contiguous:
                tmp = np.ascontiguousarray(array)
                return tmp, lambda: array.__setitem__(..., tmp)
            return array, None
        key = (backend.data_ptr(array), array.shape, array.dtype)
        host = self._pinned.pop(key, None)
        if host is None:
            host = backend.pinned_empty(array.shape, array.dtype)
            if len(self._pinned) >= _PINNED_BUFFERS:    # forget the least recently used
                self._pinned.pop(next(iter(self._pinned)))
        self._pinned[key] = host
        backend.copy_to_host(array, host)
        return host, lambda: backend.copy_from_host(host, array)

    # ---------------------------------------------------------------- collectives
    def Allreduce(self, array, op="sum"):
        _check_op(op)
        self._enter("Allreduce", array, op=op)
        return self._allreduce_now(array, op)

    def Bcast(self, array, root=0):
        self._enter("Bcast", array, root=root)
        host, back = self._host(array)
        buf = _words(host)
        wait(self.comm.Ibcast(buf, root=root), buf)
        if back is not None:
            back()
        return array

    def Allgather(self, send, recv):
        self._enter("Allgather", send)
        s, _ = self._host(send)
        r, back = self._host(recv)
        sbuf, rbuf = _words(s), _words(r)
        wait(self.comm.Iallgather(sbuf, rbuf), sbuf, rbuf)
        if back is not None:
            back()

    def Reduce_scatter(self, send, recv, op="sum"):
        _check_op(op)
        self._enter("Reduce_scatter", send, op=op)
        s, _ = self._host(send)
        r, back = self._host(recv)
        (sbuf, mpi_op), (rbuf, _) = _reduce_args(s, op), _reduce_args(r, op)
        wait(self.comm.Ireduce_scatter_block(sbuf, rbuf, op=mpi_op), sbuf, rbuf)
        if back is not None:
            back()

    def Gather(self, send, recv, root=0):
        self._enter("Gather", send, root=root)
        s, _ = self._host(send)
        if self.rank == root:
            r, back = self._host(recv)
            sbuf, rbuf = _words(s), _words(r)
            wait(self.comm.Igather(sbuf, rbuf, root=root), sbuf, rbuf)
            if back is not None:
                back()
        else:
            sbuf = _words(s)
            wait(self.comm.Igather(sbuf, None, root=root), sbuf)

    def Scatter(self, send, recv, root=0):
        self._enter("Scatter", recv, root=root)
        r, back = self._host(recv)
        s = self._host(send)[0] if self.rank == root else None
        sbuf, rbuf = _words(s), _words(r)
        wait(self.comm.Iscatter(sbuf, rbuf, root=root), sbuf, rbuf)
        if back is not None:
            back()

    def Reduce(self, array, op="sum", root=0):
        _check_op(op)
        self._enter("Reduce", array, root=root, op=op)
        host, back = self._host(array)
        MPI = mpi()
        buf, mpi_op = _reduce_args(host, op)
        wait(self.comm.Ireduce(MPI.IN_PLACE if self.rank == root else buf,
                               buf if self.rank == root else None, op=mpi_op, root=root), buf)
        if back is not None and self.rank == root:
            back()
        return array

    def Barrier(self):
        self._enter("Barrier")
        wait(self.comm.Ibarrier())

    # Python objects travel pickled, as mpi4py's lowercase collectives send them, but through
    # the non-blocking byte collectives: a rank waiting for its peers' objects still hears
    # signals (see waiting.py). Like mpi4py, every rank, the root included, gets copies.
    def bcast_obj(self, obj, root=0):
        self._enter("bcast_obj", root=root)
        data = _pickled(obj) if self.rank == root else None
        size = np.array([0 if data is None else data.size], np.int64)
        wait(self.comm.Ibcast(size, root=root), size)
        if data is None:
            data = np.empty(int(size[0]), np.uint8)
        wait(self.comm.Ibcast(data, root=root), data)
        return pickle.loads(data)

    def allgather_obj(self, obj):
        self._enter("allgather_obj")
        data = _pickled(obj)
        sizes = self._sizes(data, everywhere=True)
        recv = np.empty(int(sizes.sum()), np.uint8)
        wait(self.comm.Iallgatherv(data, [recv, sizes]), data, recv)
        return _unpickled(recv, sizes)

    def gather_obj(self, obj, root=0):
        self._enter("gather_obj", root=root)
        data = _pickled(obj)
        sizes = self._sizes(data, everywhere=False, root=root)
        if self.rank != root:
            wait(self.comm.Igatherv(data, None, root=root), data)
            return None
        recv = np.empty(int(sizes.sum()), np.uint8)
        wait(self.comm.Igatherv(data, [recv, sizes], root=root), data, recv)
        return _unpickled(recv, sizes)

    def _sizes(self, data, everywhere, root=0):
        """Every rank's pickle size (at ``root`` only unless ``everywhere``)."""
        mine = np.array([data.size], np.int64)
        sizes = np.empty(self.size, np.int64)
        start = self.comm.Iallgather if everywhere else (
            lambda s, r: self.comm.Igather(s, r, root=root))
        wait(start(mine, sizes), mine, sizes)
        return sizes

    # ---------------------------------------------------------------- asynchronous
    def submit(self, fn, *args):
        """Queue a collective for the communication thread; returns its :class:`Work`."""
        if self._stall is not None:
            sig = getattr(fn, "signature", None) or consistency.signature(
                async_name(fn), *[a for a in args if hasattr(a, "shape")])
            self._stall.reached(sig, blocking=False)
        if self._thread is None:
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._serve, name=f"ddp-comm-{self.rank}",
                                            daemon=True)
            self._thread.start()
        work = Work()
        if self._stall is not None:
            work._on_wait = self._stall.waiter()
        with self._pending_lock:
            self._pending += 1
        self._queue.put((work, fn, args, backend.thread_gpu()))
        return work

    def _serve(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            work, fn, args, gpu = item
            try:
                if gpu is None:
                    work._set(fn(*args), None)
                else:   # the submitter's GPU: the current device is per thread
                    with backend.device_context(backend.device("cuda", gpu)):
                        work._set(fn(*args), None)
            except BaseException as exc:  # handed to whoever waits on the work
                work._set(None, exc)
            with self._pending_lock:
                self._pending -= 1
                if not self._pending:
                    self._idle.notify_all()

    def _enter(self, name, *arrays, root=None, op=None, blocking=True):
        """Start of a collective: tell the stall inspector (when enabled) that this rank
        reached it, except from the communication thread, whose collectives were reported
        when they were submitted; wait for the submitted work; then check that every rank
        calls the same collective (see ``consistency``)."""
        sig = None
        if self._stall is not None and threading.current_thread() is not self._thread:
            sig = consistency.signature(name, *arrays, root=root, op=op)
            self._stall.reached(sig, blocking=blocking)
        self._drain()
        if self._check is not None:
            self._check.verify(sig or consistency.signature(name, *arrays, root=root, op=op))

    def _drain(self):
        """Wait until the communication thread has run everything submitted (keeps the order
        of collectives identical on every rank). From the thread itself: nothing to wait for."""
        if self._thread is None or threading.current_thread() is self._thread:
            return
        with self._pending_lock:
            while self._pending:
                self._idle.wait()

    def Iallreduce(self, array, op="sum"):
        return self.submit(self.Allreduce, array, op)

    def Iallreduce_nonblocking(self, array, op="sum"):
        """MPI's own non-blocking allreduce (the alternative to the communication thread). It
        advances only while MPI is called: call :meth:`progress` now and then (the DDP reducer
        does from every gradient hook)."""
        self._enter("Iallreduce", array, op=op, blocking=False)
        host, back = self._host(array)
        buf, mpi_op = _reduce_args(host, op)
        work = _RequestWork(self.comm.Iallreduce(mpi().IN_PLACE, buf, op=mpi_op),
                            (array, host, buf), back)
        if self._stall is not None:
            work._on_wait = self._stall.waiter()
        self._outstanding.append(work)
        return work

    def progress(self):
        """Let MPI move outstanding non-blocking operations forward: testing a request runs
        MPI's progress engine."""
        self._outstanding = [w for w in self._outstanding if not w.is_completed()]

    # ---------------------------------------------------------------- one machine, shared memory
    @property
    def has_shared_sum(self):
        """Whether :meth:`shared_buffers` can work: several ranks, all on this machine."""
        return 1 < self.size == self.local_size and shared_sum.available()

    def shared_buffers(self, shapes):
        """Collective: a ``shared_sum.SharedBuffer`` per ``(size, dtype)`` in ``shapes``, memory
        every rank maps (None where that cannot be: see :meth:`has_shared_sum`)."""
        if not self.has_shared_sum:
            return None
        self._enter("shared_buffers")
        return shared_sum.allocate(self, shapes)

    def Allreduce_shared(self, *buffers):
        """Sum each of ``buffers`` (from :meth:`shared_buffers`) over the ranks, in place,
        without MPI moving their bytes: two barriers around their ``sum()``, however many
        (each pair of barriers waits for the slowest rank). A completed :class:`Work`."""
        self._enter("Allreduce", *[buffer.mine for buffer in buffers], op="sum")
        wait(self.comm.Ibarrier())   # every rank's buffers are complete
        for buffer in buffers:
            buffer.sum()
        wait(self.comm.Ibarrier())   # every sum is written: each rank may change its own again
        for buffer in buffers:
            buffer.settle()
        return Work.completed([buffer.mine for buffer in buffers])

    def _allreduce_now(self, array, op):
        host, back = self._host(array)
        buf, mpi_op = _reduce_args(host, op)
        wait(self.comm.Iallreduce(mpi().IN_PLACE, buf, op=mpi_op), buf)
        if back is not None:
            back()
        return array

    # ---------------------------------------------------------------- groups and teardown
    def split(self, ranks):
        ranks = sorted(set(ranks))
        self._enter("split", root=tuple(ranks))
        color = 0 if self.rank in ranks else mpi().UNDEFINED
        sub = self.comm.Split(color, key=self.rank)
        if sub == mpi().COMM_NULL:
            if self._stall is not None:
                self._stall._children += 1   # keep the channel ids in step with the members
            return None
        return self._child(sub, f"the group of ranks {ranks}", self._check is not None)

    def dup(self, label=None, checked=None):
        self._enter("dup")
        return self._child(self.comm.Dup(), label or f"a duplicate of {self.label}",
                           self._check is not None if checked is None else checked)

    def _child(self, sub, label, checked):
        child = MPICommunicator(sub, checked=checked, label=label)
        if self._stall is not None:
            child._stall = self._stall.child(label, sub, checked)
        return child

    def abort(self, code=1):
        self.comm.Abort(code)

    def free(self):
        if self._thread is not None:
            self._drain()
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._stall is not None:
            self._stall.close()
            self._stall = None
        if self.comm != mpi().COMM_WORLD:
            self.comm.Free()


class _RequestWork(Work):
    """A :class:`Work` backed by an MPI request; keeps its buffers alive until completion
    (mpi4py holds no reference to them) and copies a staged result back."""
    __slots__ = ("_request", "_buffers", "_back")

    def __init__(self, request, buffers, back):
        super().__init__()
        self._request, self._buffers, self._back = request, buffers, back

    def _complete(self):
        if self._back is not None:
            self._back()
        self._set([self._buffers[0]], None)
        self._buffers = None

    def wait(self, timeout=None):
        if not self._event.is_set():
            if self._on_wait is not None:
                self._on_wait()
            wait(self._request, self._buffers)
            self._complete()
        return True

    def is_completed(self):
        if not self._event.is_set() and self._request.Test():
            self._complete()
        return self._event.is_set()

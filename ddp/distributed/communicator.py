"""The communicator interface, named after MPI's operations, and the single-rank fallback.

A communicator moves NumPy/CuPy arrays between the ranks of a group. ``ddp.distributed`` (the
PyTorch-shaped API) and the DDP reducer talk only to this interface; ``mpi.py`` implements it
over mpi4py, ``SingleCommunicator`` for one process (every collective is the identity), and a
NCCL communicator can join later without touching its users.

Asynchronous collectives return a :class:`Work`; collectives on one communicator run in the
order they were issued on every rank (a single communication thread executes them), which is
what makes concurrent buckets safe.

Example:
    >>> comm = SingleCommunicator()
    >>> buf = np.ones(3)
    >>> comm.Allreduce(buf, "sum"); buf
    array([1., 1., 1.])
"""
from __future__ import annotations

import pickle
import threading


REDUCE_OPS = ("sum", "avg", "max", "min", "product", "band", "bor", "bxor")


class Work:
    """A collective in flight: ``wait()`` blocks until it is done (and re-raises its error);
    ``is_completed()`` polls; ``result()`` gives what it produced (PyTorch's ``Work``).

    Example:
        >>> work = dist.all_reduce(t, async_op=True)
        >>> work.wait()
        True
    """
    __slots__ = ("_event", "_error", "_value", "_callbacks", "_lock")

    def __init__(self):
        self._event = threading.Event()
        self._error = None
        self._value = None
        self._callbacks = []
        self._lock = threading.Lock()

    @classmethod
    def completed(cls, value=None):
        w = cls()
        w._set(value, None)
        return w

    def _set(self, value, error):
        with self._lock:
            self._value, self._error = value, error
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self)

    def wait(self, timeout=None):
        if not self._event.wait(timeout):
            raise TimeoutError("collective did not complete in time")
        if self._error is not None:
            raise self._error
        return True

    def is_completed(self):
        return self._event.is_set()

    def is_success(self):
        return self._event.is_set() and self._error is None

    def result(self):
        self.wait()
        return self._value

    value = result

    def then(self, fn):
        """A new Work completed with ``fn(self)`` once this one completes (a ``Future.then``)."""
        nxt = Work()

        def run(w):
            try:
                nxt._set(fn(w), None)
            except BaseException as exc:  # the error surfaces at nxt.wait()
                nxt._set(None, exc)
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(run)
                return nxt
        run(self)
        return nxt

    def get_future(self):
        return self


class Communicator:
    """What a collective backend provides. Arrays are reduced in place where MPI does.

    ``rank``/``size`` are this process's place in the group; ``local_rank``/``local_size`` its
    place among the ranks of the same machine.
    """
    name = "abstract"
    rank = 0
    size = 1
    local_rank = 0
    local_size = 1

    # -- array collectives (blocking) --------------------------------------------------------
    def Allreduce(self, array, op="sum"):
        raise NotImplementedError

    def Bcast(self, array, root=0):
        raise NotImplementedError

    def Allgather(self, send, recv):
        """``recv`` (size, *send.shape) receives every rank's ``send``."""
        raise NotImplementedError

    def Reduce_scatter(self, send, recv, op="sum"):
        """``send`` (size * n, ...) reduced across ranks; rank r keeps block r in ``recv``."""
        raise NotImplementedError

    def Gather(self, send, recv, root=0):
        raise NotImplementedError

    def Scatter(self, send, recv, root=0):
        raise NotImplementedError

    def Reduce(self, array, op="sum", root=0):
        raise NotImplementedError

    def Barrier(self):
        raise NotImplementedError

    # -- Python objects ----------------------------------------------------------------------
    def bcast_obj(self, obj, root=0):
        raise NotImplementedError

    def allgather_obj(self, obj):
        raise NotImplementedError

    def gather_obj(self, obj, root=0):
        raise NotImplementedError

    # -- asynchronous ------------------------------------------------------------------------
    def submit(self, fn, *args):
        """Run ``fn(*args)`` (a collective on this communicator) after those already submitted;
        returns a :class:`Work`."""
        w = Work()
        try:
            w._set(fn(*args), None)
        except BaseException as exc:
            w._set(None, exc)
        return w

    def Iallreduce(self, array, op="sum"):
        return self.submit(self.Allreduce, array, op)

    def split(self, ranks):
        """A communicator over ``ranks`` (all ranks must call it); None on ranks outside it."""
        raise NotImplementedError

    def abort(self, code=1):
        raise SystemExit(code)

    def free(self):
        pass


class SingleCommunicator(Communicator):
    """One process: every collective leaves its data as it is (the debug mode's backend)."""
    name = "single"

    def Allreduce(self, array, op="sum"):
        _check_op(op)
        return array

    def Bcast(self, array, root=0):
        return array

    def Allgather(self, send, recv):
        recv[0] = send

    def Reduce_scatter(self, send, recv, op="sum"):
        recv[...] = send.reshape(recv.shape)

    def Gather(self, send, recv, root=0):
        recv[0] = send

    def Scatter(self, send, recv, root=0):
        recv[...] = send[0]

    def Reduce(self, array, op="sum", root=0):
        return array

    def Barrier(self):
        pass

    def bcast_obj(self, obj, root=0):
        return pickle.loads(pickle.dumps(obj))  # a copy, as a real broadcast gives

    def allgather_obj(self, obj):
        return [self.bcast_obj(obj)]

    def gather_obj(self, obj, root=0):
        return [self.bcast_obj(obj)]

    def split(self, ranks):
        return self if list(ranks) in ([0], []) or 0 in ranks else None


def _check_op(op):
    if op not in REDUCE_OPS:
        raise ValueError(f"unknown reduce op {op!r}; expected one of {', '.join(REDUCE_OPS)}")


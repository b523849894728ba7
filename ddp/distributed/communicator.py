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
    >>> comm.Allreduce(buf, "sum")            # in place (one rank: the identity); returns buf
    array([1., 1., 1.])
"""
from __future__ import annotations

import abc
import importlib
import pickle
import threading


REDUCE_OPS = ("sum", "avg", "max", "min", "product", "band", "bor", "bxor")


class Work:
    """A collective in flight: ``wait()`` blocks until it is done (and re-raises its error);
    ``is_completed()`` polls; ``result()`` gives what it produced (PyTorch's ``Work``).

    Example:
        >>> dist.init_process_group()
        >>> work = dist.all_reduce(ddp.ones(2), async_op=True)
        >>> work.wait()
        True
    """
    __slots__ = ("_event", "_error", "_value", "_callbacks", "_lock", "_on_wait")

    def __init__(self):
        self._on_wait = None   # called when someone starts waiting on it (the stall inspector)
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
        if self._on_wait is not None and not self._event.is_set():
            self._on_wait()
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


class Communicator(abc.ABC):
    """What a collective backend provides: everything ``ddp.distributed``, the DDP reducer and
    DistributedDataParallel call on a communicator, and nothing else. Arrays (NumPy, or the
    backend's device arrays) are reduced in place.

    Attributes every communicator sets (through ``Communicator.__init__``): ``rank``/``size``,
    this process's place in the group, and ``local_rank``/``local_size``, its place among the
    ranks of the same machine (the reducer reads ``local_size`` to decide whether a core is
    free for a communication thread). ``name`` is the backend's name.

    Abstract: the blocking collectives, the object collectives and ``split``. With defaults
    that a backend may override: ``submit`` (runs at once), ``Iallreduce`` (through
    ``submit``), ``Iallreduce_nonblocking``/``progress`` (the backend's own non-blocking
    allreduce, advanced by ``progress()``; ``has_nonblocking`` says whether it is a real one),
    ``shared_buffers``/``Allreduce_shared`` (sums in memory all the ranks of one machine map,
    where ``has_shared_sum``), ``dup``, ``abort`` and ``free``.

    Example:
        >>> class Loopback(SingleCommunicator):
        ...     name = "loopback"
        >>> Loopback().dup().size
        1
    """
    name = "abstract"
    has_nonblocking = False   # True: Iallreduce_nonblocking overlaps without a thread
    has_shared_sum = False    # True: shared_buffers and Allreduce_shared work
    rank: int                 # set by __init__
    size: int
    local_rank: int
    local_size: int

    def __init__(self, rank=0, size=1, local_rank=None, local_size=None):
        self.rank, self.size = rank, size
        self.local_rank = rank if local_rank is None else local_rank
        self.local_size = size if local_size is None else local_size

    # -- array collectives (blocking) --------------------------------------------------------
    @abc.abstractmethod
    def Allreduce(self, array, op="sum"):
        """Reduce ``array`` over the ranks in place (``op`` one of :data:`REDUCE_OPS`)."""

    @abc.abstractmethod
    def Bcast(self, array, root=0):
        """Overwrite ``array`` with rank ``root``'s."""

    @abc.abstractmethod
    def Allgather(self, send, recv):
        """``recv`` (size, *send.shape) receives every rank's ``send``."""

    @abc.abstractmethod
    def Reduce_scatter(self, send, recv, op="sum"):
        """``send`` (size * n, ...) reduced across ranks; rank r keeps block r in ``recv``."""

    @abc.abstractmethod
    def Gather(self, send, recv, root=0):
        """Rank ``root``'s ``recv`` (size, *send.shape) receives every rank's ``send``."""

    @abc.abstractmethod
    def Scatter(self, send, recv, root=0):
        """Rank r's ``recv`` receives block r of rank ``root``'s ``send``."""

    @abc.abstractmethod
    def Reduce(self, array, op="sum", root=0):
        """Reduce ``array`` over the ranks; only rank ``root``'s is overwritten."""

    @abc.abstractmethod
    def Barrier(self):
        """Return once every rank has called it."""

    # -- Python objects ----------------------------------------------------------------------
    @abc.abstractmethod
    def bcast_obj(self, obj, root=0):
        """Rank ``root``'s picklable ``obj``, on every rank."""

    @abc.abstractmethod
    def allgather_obj(self, obj):
        """Every rank's ``obj``, in rank order, on every rank."""

    @abc.abstractmethod
    def gather_obj(self, obj, root=0):
        """Every rank's ``obj`` in rank order on rank ``root`` (None elsewhere)."""

    # -- groups ------------------------------------------------------------------------------
    @abc.abstractmethod
    def split(self, ranks):
        """A communicator over ``ranks`` (all ranks must call it); None on ranks outside it."""

    def dup(self, label=None, checked=None):
        """A new communicator over the same ranks whose collectives never match this one's
        (DistributedDataParallel keeps its gradient traffic on one). Every rank calls it.
        ``label`` names it in stall reports; ``checked=False`` skips the per-collective
        signature check (``consistency``) for traffic whose shapes are checked otherwise."""
        return self.split(list(range(self.size)))

    # -- asynchronous ------------------------------------------------------------------------
    def submit(self, fn, *args):
        """Run ``fn(*args)`` (a collective on this communicator) after those already submitted;
        returns a :class:`Work`. This default runs it at once."""
        w = Work()
        try:
            w._set(fn(*args), None)
        except BaseException as exc:
            w._set(None, exc)
        return w

    def Iallreduce(self, array, op="sum"):
        """An allreduce in submission order, returning a :class:`Work` (the reducer's
        "thread" mode)."""
        return self.submit(self.Allreduce, array, op)

    def Iallreduce_nonblocking(self, array, op="sum"):
        """The backend's own non-blocking allreduce (the reducer's "nonblocking" mode), advanced
        by :meth:`progress`. Without one (``has_nonblocking`` False) it is :meth:`Iallreduce`."""
        return self.Iallreduce(array, op)

    def progress(self):
        """Let outstanding non-blocking operations move forward (called from gradient hooks)."""

    def shared_buffers(self, shapes):
        """Collective: one buffer per ``(size, dtype)`` in ``shapes`` in memory that every rank
        maps, for :meth:`Allreduce_shared` (the reducer's "shared" mode); None where the
        backend cannot (``has_shared_sum`` False)."""
        return None

    def Allreduce_shared(self, *buffers):
        """Sum buffers from :meth:`shared_buffers` over the ranks, each in place; a completed
        :class:`Work`."""
        raise NotImplementedError(f"the {self.name} backend has no shared-memory sum")

    def abort(self, code=1):
        """End the whole job with ``code``."""
        raise SystemExit(code)

    def free(self):
        """Release the communicator (after its pending work)."""


class SingleCommunicator(Communicator):
    """One process: every collective leaves its data as it is (the debug mode's backend)."""
    name = "single"

    def __init__(self):
        super().__init__(0, 1)

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


# ---------------------------------------------------------------------- backends by name

# name -> "module:Class". A backend's module is imported only when it is asked for, so a
# missing optional dependency (mpi4py, CuPy's NCCL) costs nothing until then.
_BACKENDS = {
    "single": "ddp.distributed.communicator:SingleCommunicator",
    "mpi": "ddp.distributed.mpi:MPICommunicator",
    "nccl": "ddp.distributed.nccl:NCCLCommunicator",
}


def register_backend(name, target):
    """Make ``init_process_group(backend=name)`` build ``target``: a :class:`Communicator`
    subclass or a ``"module:Class"`` string (imported on first use).

    Example:
        >>> register_backend("loopback", SingleCommunicator)
        >>> type(new_communicator("loopback")).__name__
        'SingleCommunicator'
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_backend: the name must be a non-empty string, got {name!r}")
    _BACKENDS[name.lower()] = target


def backend_names():
    """The registered backend names.

    Example:
        >>> {"mpi", "nccl", "single"} <= set(backend_names())
        True
    """
    return sorted(_BACKENDS)


def communicator_class(name):
    """The :class:`Communicator` subclass registered as ``name`` (importing its module).

    Example:
        >>> communicator_class("single").__name__
        'SingleCommunicator'
    """
    target = _BACKENDS.get(str(name).lower())
    if target is None:
        raise ValueError(f"unknown backend {name!r}; registered: {', '.join(backend_names())}")
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise RuntimeError(f"the {name!r} backend ({module}:{attr}) is not available: "
                               f"{exc}") from exc
    if not (isinstance(target, type) and issubclass(target, Communicator)):
        raise TypeError(f"backend {name!r} is {target!r}, not a Communicator subclass")
    return target


def new_communicator(name, *args, **kwargs):
    """A new communicator of the backend ``name`` (collective: every rank calls it).

    Example:
        >>> new_communicator("single").size
        1
    """
    return communicator_class(name)(*args, **kwargs)

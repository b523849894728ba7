"""``ddp.multiprocessing``: Python's ``multiprocessing`` with tensors that travel by shared
memory, and ``spawn`` — PyTorch's ``torch.multiprocessing``.

Everything in :mod:`multiprocessing` is here (``Process``, ``Queue``, ``set_start_method``,
``get_context``, ...). A CPU tensor already in shared memory (``t.share_memory_()``,
``module.share_memory()``) is sent to another process as a handle to the same bytes, so the
processes of a hogwild run update one set of parameters; any other tensor is copied, as
:mod:`multiprocessing` copies what it pickles. (PyTorch moves such a tensor into shared memory
as it sends it; here the owner decides, so no segment outlives its use unseen.)
CUDA tensors are copied.

Example:
    >>> import ddp.multiprocessing as mp
    >>> w = ddp.zeros(3).share_memory_()
    >>> w.is_shared()
    True
    >>> mp.get_start_method() in mp.get_all_start_methods()
    True
"""
from __future__ import annotations

import multiprocessing
import pickle
import multiprocessing.reduction as _reduction
import traceback
from multiprocessing import *  # noqa: F401,F403  (Process, Queue, set_start_method, ...)

from .. import _shared_memory
from ..nn.parameter import Parameter
from ..tensor import Tensor

__all__ = [*multiprocessing.__all__, "spawn", "start_processes", "ProcessContext",
           "ProcessRaisedException", "ProcessExitedException", "get_sharing_strategy",
           "set_sharing_strategy", "get_all_sharing_strategies"]


# ---------------------------------------------------------------- tensors through pickling
def _rebuild_shared(handle, requires_grad, is_parameter):
    t = Tensor._make(_shared_memory.attach(*handle))
    return Parameter(t, requires_grad) if is_parameter else t.requires_grad_(requires_grad)


def _reduce(t):
    if t.is_shared() and t.grad_fn is None:
        return (_rebuild_shared, (_shared_memory.handle(t._data), t.requires_grad,
                                  isinstance(t, Parameter)))
    return t.__reduce_ex__(pickle.HIGHEST_PROTOCOL)


for _cls in (Tensor, Parameter):
    _reduction.ForkingPickler.register(_cls, _reduce)

_STRATEGY = "file_system"


def get_all_sharing_strategies():
    """``{'file_system'}``: segments are named POSIX shared memory."""
    return {"file_system"}


def get_sharing_strategy():
    return _STRATEGY


def set_sharing_strategy(new_strategy):
    if new_strategy not in get_all_sharing_strategies():
        raise ValueError(f"set_sharing_strategy: {new_strategy!r} is not one of "
                         f"{sorted(get_all_sharing_strategies())}")


# ---------------------------------------------------------------- spawn
class ProcessException(Exception):
    def __init__(self, msg, error_index, pid):
        super().__init__(msg)
        self.msg, self.error_index, self.pid = msg, error_index, pid

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.pid)


class ProcessRaisedException(ProcessException):
    """A spawned process raised; the message carries its traceback."""


class ProcessExitedException(ProcessException):
    """A spawned process ended with a non-zero exit code (or a signal)."""

    def __init__(self, msg, error_index, error_pid, exit_code, signal_name=None):
        super().__init__(msg, error_index, error_pid)
        self.exit_code, self.signal_name = exit_code, signal_name

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.pid, self.exit_code,
                            self.signal_name)


def _wrap(fn, i, args, errors):
    try:
        fn(i, *args)
    except KeyboardInterrupt:
        pass
    except Exception:
        errors.put(traceback.format_exc())
        raise SystemExit(1)


class ProcessContext:
    """The processes ``spawn(..., join=False)`` started; ``join()`` waits and re-raises."""

    def __init__(self, processes, error_queues):
        self.processes, self.error_queues = processes, error_queues

    def pids(self):
        return [p.pid for p in self.processes]

    def join(self, timeout=None):
        """Wait for all processes; True when all ended. A failure stops the others and is
        raised here: ProcessRaisedException with the child's traceback, or
        ProcessExitedException with its exit code."""
        for i, p in enumerate(self.processes):
            p.join(timeout)
            if p.exitcode is None:
                return False
            if p.exitcode != 0:
                for q in self.processes:
                    if q.is_alive():
                        q.terminate()
                for q in self.processes:
                    q.join()
                if not self.error_queues[i].empty():
                    tb = self.error_queues[i].get()
                    raise ProcessRaisedException(
                        f"\n\n-- Process {i} terminated with the following error:\n{tb}", i, p.pid)
                code = p.exitcode
                if code < 0:
                    import signal
                    name = signal.Signals(-code).name
                    raise ProcessExitedException(f"process {i} terminated with signal {name}",
                                                 i, p.pid, code, name)
                raise ProcessExitedException(f"process {i} terminated with exit code {code}",
                                             i, p.pid, code)
        return True


def start_processes(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
    """Run ``fn(i, *args)`` in ``nprocs`` new processes (``i`` = 0..nprocs-1)."""
    ctx = multiprocessing.get_context(start_method)
    error_queues, processes = [], []
    for i in range(nprocs):
        errors = ctx.SimpleQueue()
        p = ctx.Process(target=_wrap, args=(fn, i, args, errors), daemon=daemon)
        p.start()
        error_queues.append(errors)
        processes.append(p)
    context = ProcessContext(processes, error_queues)
    if not join:
        return context
    while not context.join():
        pass
    return None


def spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
    """``torch.multiprocessing.spawn``: ``fn(i, *args)`` in ``nprocs`` spawned processes; with
    ``join=True`` waits, and an exception in any child is raised here with its traceback."""
    return start_processes(fn, args, nprocs, join, daemon, start_method)

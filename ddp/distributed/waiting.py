"""Waiting for an MPI request without making the rank deaf to signals.

Python runs signal handlers only between bytecodes of the main thread, so a main thread blocked
inside ``MPI_Allreduce``/``MPI_Wait`` for a peer that never arrives cannot turn SIGTERM into an
exception: its ``finally:`` (the checkpoint) never runs, and the launcher's watchdog ends the
rank after its grace period. So the main thread starts the non-blocking form of each collective
and polls ``MPI_Test``: the handler runs between two polls, and the exception leaves the
collective like any other. Polling costs what ``MPI_Wait`` costs (MPICH's wait polls too:
2-rank allreduce of 64 B to 8 MiB within ±5 % of the blocking call, see docs/launcher.md).
Other threads cannot receive signals and simply block in ``Wait``.

A request abandoned by an exception stays referenced, with its buffers, until the process
ends: a peer that calls the collective later must not make MPI write into freed memory.
"""
from __future__ import annotations

import os
import threading
import time

_ABANDONED = []
_BEGUN = [0]   # waits begun in the main thread: the launcher's peer watcher tells calls apart by it
# Polls before each further one gives the core away. With more ranks than cores (4 on 2) a pure
# spin holds the core a peer needs for a whole time slice: a 64 B allreduce took 5.3 ms
# instead of 0.16 ms; yielding after 16 polls brings it back to the blocking call's time (4 ranks:
# 64 B and 256 KiB within the machine's noise). Without contention a yield returns at once.
_SPIN = 16
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))


def wait(request, *buffers):
    """Wait for ``request`` (an ``mpi4py.MPI.Request``); ``buffers`` are the arrays MPI reads or
    writes, kept alive if the wait is interrupted.

    Example:
        >>> from mpi4py import MPI
        >>> import numpy as np
        >>> a = np.ones(3)
        >>> wait(MPI.COMM_SELF.Iallreduce(MPI.IN_PLACE, a), a)
        >>> a.tolist()
        [1.0, 1.0, 1.0]
    """
    if threading.current_thread() is not threading.main_thread():
        request.Wait()
        return
    _BEGUN[0] += 1
    test, polls = request.Test, 0
    try:
        while not test():   # between two polls is where Python runs a pending signal handler
            polls += 1
            if polls > _SPIN:
                _yield()
    except BaseException:
        _ABANDONED.append((request, buffers))
        raise


def waits_begun() -> int:
    """How many waits the main thread has begun: a new number is a new collective, also one
    from the same line of a loop.

    Example:
        >>> before = waits_begun()
        >>> from mpi4py import MPI
        >>> import numpy as np
        >>> a = np.ones(1)
        >>> wait(MPI.COMM_SELF.Iallreduce(MPI.IN_PLACE, a), a)
        >>> waits_begun() - before
        1
    """
    return _BEGUN[0]


def abandoned() -> bool:
    """Whether a wait was interrupted (a signal, a KeyboardInterrupt) before its collective
    completed: MPI cannot finish or free such a request, so the launcher ends the rank without
    ``MPI_Finalize``."""
    return bool(_ABANDONED)

"""The stall inspector: name the ranks that have not reached a collective, instead of hanging
silently (what Horovod's stall inspector does).

Enabled by ``DDP_STALL_CHECK_SECONDS=S`` (the launcher sets 60 unless told otherwise; off
without it, and off for a single rank). Every MPI communicator then numbers its collectives in
the order the program issues them, which is the same on every rank of a correct program, and:

- each rank tells the communicator's rank 0 "I reached collective #k (its name)": a small
  non-blocking ``isend`` on a private duplicate of the communicator, so it never matches user
  messages and never waits;
- a daemon thread on rank 0 receives these reports (``Iprobe`` polling, a few times per
  threshold) and, when some ranks reached collective #k more than S seconds ago and others
  have not, prints a warning to stderr naming the missing ranks (as ranks of ``COMM_WORLD``),
  the collective and where they are instead; repeated every S seconds while it lasts.

It only watches: nothing is cancelled and the program goes on when the late ranks arrive. A
warning means a rank is stuck (deadlock, dead node, infinite loop), much slower than the others
(rank 0 alone evaluating while others wait at a barrier), or issuing a different sequence of
collectives (a collective under ``if rank == 0:``).

The communicator calls :meth:`StallInspector.reached` at the start of each collective; with
the inspector off it holds None and the cost is one attribute test.

Example (as the MPI communicator uses it):
    >>> from ddp.distributed.communicator import SingleCommunicator
    >>> comm = SingleCommunicator()
    >>> inspector = maybe_inspector(comm)        # None unless DDP_STALL_CHECK_SECONDS is set
    >>> if inspector is not None:
    ...     inspector.reached("Allreduce")
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
import time

_TAG = 7  # any tag: the duplicated communicator carries nothing else


def threshold_seconds(env=None):
    """The stall threshold from ``DDP_STALL_CHECK_SECONDS`` (None when unset, 0 or invalid)."""
    value = (os.environ if env is None else env).get("DDP_STALL_CHECK_SECONDS", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def async_name(fn) -> str:
    """A readable name for an asynchronous collective from the function that runs it:
    ``all_reduce.<locals>.run`` -> ``all_reduce (async)``, ``_allreduce_now`` -> ``allreduce
    (async)``."""
    parts = (getattr(fn, "__qualname__", None) or type(fn).__name__).split(".<locals>.")
    name = parts[-2 if len(parts) > 1 else -1].rsplit(".", 1)[-1].strip("_")
    return (name[:-4] if name.endswith("_now") else name) + " (async)"


def maybe_inspector(comm):
    """A :class:`StallInspector` for the mpi4py communicator ``comm`` when enabled, else None.
    Collective over ``comm`` when enabled (it duplicates the communicator)."""
    seconds = threshold_seconds()
    if seconds is None or comm.Get_size() < 2:
        return None
    from mpi4py import MPI
    if MPI.Query_thread() < MPI.THREAD_MULTIPLE:  # the same on every rank: no mismatch
        if comm.Get_rank() == 0:
            sys.stderr.write("ddp stall inspector: off (MPI was not initialised with "
                             "MPI_THREAD_MULTIPLE)\n")
        return None
    return StallInspector(comm, seconds)


class StallInspector:
    """Reports from every rank of ``comm`` to its rank 0, which warns about missing ranks."""

    def __init__(self, comm, seconds):
        from mpi4py import MPI
        self.comm = comm.Dup()
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.seconds = float(seconds)
        # ranks of COMM_WORLD, so warnings name the ranks users see in RANK and in the output
        self.world_ranks = MPI.Group.Translate_ranks(comm.Get_group(), list(range(self.size)),
                                                     MPI.COMM_WORLD.Get_group())
        self._seq = 0
        self._lock = threading.Lock()
        self._sends = []            # isend requests not known to be complete (non-root)
        self._thread = None
        if self.rank == 0:
            self._latest = [0] * self.size          # last collective number each rank reached
            self._names = ["(none yet)"] * self.size
            self._first = {}                        # k -> (time first reached, name)
            self._warned = {}                       # k -> time of the last warning about it
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._watch, name="ddp-stall-inspector",
                                            daemon=True)
            self._thread.start()
            atexit.register(self.close)  # before mpi4py finalises MPI

    # ------------------------------------------------------------------ every rank
    def reached(self, name: str) -> None:
        """This rank has reached its next collective, ``name``."""
        with self._lock:
            self._seq += 1
            seq = self._seq
            if self.rank == 0:
                self._record(0, seq, name, time.monotonic())
                return
            self._sends = [r for r in self._sends if not r.Test()]
            self._sends.append(self.comm.isend((seq, name), dest=0, tag=_TAG))

    def close(self, collective: bool = False) -> None:
        """Stop watching (idempotent). ``collective=True`` (every rank calls it, as when a
        sub-communicator is freed): rank 0 first receives every report still on its way, then
        the duplicate communicator is freed, so no stale message outlives it. Otherwise (the
        world communicator, or at exit) the duplicate is left to ``MPI_Finalize``."""
        if self.comm is None:
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if collective:
            with self._lock:
                finals = self.comm.allgather(self._seq)
                if self.rank == 0:
                    for source in range(1, self.size):
                        while self._latest[source] < finals[source]:
                            seq, name = self.comm.recv(source=source, tag=_TAG)
                            self._record(source, seq, name, time.monotonic())
                else:
                    from mpi4py import MPI
                    MPI.Request.Waitall(self._sends)
                self._sends = []
                self.comm.Free()
        self.comm = None

    # ------------------------------------------------------------------ rank 0
    def _record(self, rank, seq, name, now):
        if seq > self._latest[rank]:
            self._latest[rank], self._names[rank] = seq, name
        self._first.setdefault(seq, (now, name))

    def _watch(self):
        from mpi4py import MPI
        status = MPI.Status()
        poll = min(0.25, self.seconds / 4)
        comm = self.comm
        while not self._stop.is_set():
            while comm.Iprobe(source=MPI.ANY_SOURCE, tag=_TAG, status=status):
                source = status.Get_source()
                seq, name = comm.recv(source=source, tag=_TAG)
                with self._lock:
                    self._record(source, seq, name, time.monotonic())
            with self._lock:
                message = self._check(time.monotonic())
            if message:
                sys.stderr.write(message)
                sys.stderr.flush()
            self._stop.wait(poll)

    def _check(self, now):
        """The warning to print now, if any (called with the lock held)."""
        low = min(self._latest)
        for k in [k for k in self._first if k <= low]:  # everyone got there: forget it
            del self._first[k]
            self._warned.pop(k, None)
        if max(self._latest) <= low:
            return None
        k = low + 1  # the first collective some ranks reached and others did not
        since, name = self._first[k]
        last = self._warned.get(k)
        if now - since < self.seconds or (last is not None and now - last < self.seconds):
            return None
        self._warned[k] = now
        there = [self.world_ranks[r] for r in range(self.size) if self._latest[r] >= k]
        missing = [r for r in range(self.size) if self._latest[r] < k]
        where = ", ".join(
            f"rank {self.world_ranks[r]} at #{self._latest[r]} {self._names[r]}"
            if self._latest[r] else f"rank {self.world_ranks[r]} before any" for r in missing)
        verb = "has" if len(there) == 1 else "have"
        return (f"ddp stall inspector: collective #{k} ({name}): {_ranks(there)} {verb} waited "
                f"{now - since:.0f} s for {_ranks(self.world_ranks[r] for r in missing)} "
                f"({where}). A rank may be stuck, much slower than the others, or calling a "
                f"different sequence of collectives (DDP_STALL_CHECK_SECONDS={self.seconds:g}; "
                f"0 turns this check off).\n")


def _ranks(ranks) -> str:
    """``rank 1`` or ``ranks 0, 2``."""
    ranks = list(ranks)
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(str(r) for r in ranks)

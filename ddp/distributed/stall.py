"""The stall inspector: when ranks wait in a collective that others do not reach, say where every
rank is (operation, shapes, dtypes, call site), and stop the job when it cannot resolve.

Enabled by ``DDP_STALL_CHECK_SECONDS=S`` (the launcher sets 60 unless told otherwise; off
without it, and off for a single rank). One inspector per process watches every communicator
(the world group, sub-groups, DistributedDataParallel's private one), each a *channel*:

- at the start of each collective a rank sends world rank 0 a small report: the channel, the
  collective's number on it (the same on every rank of a correct program), whether the rank
  blocks in it or only started it (asynchronous), its signature and the user's call site. A
  non-blocking ``isend`` on a private duplicate of ``COMM_WORLD``: it never matches user
  messages and never waits. A rank also reports when it starts waiting for an asynchronous
  collective it started (``Work.wait``), and at exit that it has finished.
- a daemon thread on world rank 0 receives the reports and, when some ranks reached
  collective #k of a channel more than S seconds ago and others have not, prints a warning
  listing what each rank of the job is doing; repeated every S seconds while it lasts.
- the job is stopped (``MPI_Abort``) when the stall cannot resolve: every rank that is missing
  has finished, or is blocked in another collective that waits for a rank in turn, and no
  report has arrived for S seconds (a rank that ran one more step than the others, a
  collective under ``if rank == 0:``, a user collective racing DDP's gradient allreduce). A
  rank that is merely slow (still computing) is only warned about.
- on an unchecked channel (see ``consistency``; DDP's, or all with
  ``DDP_CHECK_COLLECTIVES=0``) ranks whose collective #k differs in operation, shape or dtype
  are reported at once, by rank, and the job is stopped.

The communicator calls :meth:`Channel.reached` at the start of each collective; with the
inspector off it holds None and the cost is one attribute test.

Example (as the MPI communicator uses it):
    >>> from ddp.distributed.communicator import SingleCommunicator
    >>> comm = SingleCommunicator()
    >>> channel = maybe_inspector(comm)        # None unless DDP_STALL_CHECK_SECONDS is set
    >>> if channel is not None:
    ...     channel.reached(("Allreduce", ((3,), "float32")), blocking=True)
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
import time

_TAG = 7  # any tag: the duplicated communicator carries nothing else
_inspector = None  # the process's StallInspector, once the world communicator made it
_worlds = 0        # world channels made so far (a re-initialised group gets a fresh channel)


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


def maybe_inspector(comm, checked=True):
    """The :class:`Channel` of the world communicator ``comm`` (mpi4py's ``COMM_WORLD``) when
    the inspector is enabled, else None. Collective over ``COMM_WORLD`` the first time (it
    duplicates it). Sub-communicators get theirs from their parent's :meth:`Channel.child`."""
    global _inspector, _worlds
    seconds = threshold_seconds()
    if seconds is None or comm.Get_size() < 2:
        return None
    from mpi4py import MPI
    if comm != MPI.COMM_WORLD:
        return None
    if MPI.Query_thread() < MPI.THREAD_MULTIPLE:  # the same on every rank: no mismatch
        if comm.Get_rank() == 0:
            sys.stderr.write("ddp stall inspector: off (MPI was not initialised with "
                             "MPI_THREAD_MULTIPLE)\n")
        return None
    if _inspector is None or _inspector.comm is None:
        _inspector = StallInspector(seconds)
    _worlds += 1
    return _inspector.channel((_worlds,), "the world group", list(range(comm.Get_size())),
                              checked)


class Channel:
    """One communicator as the inspector sees it: numbers its collectives and reports them."""

    def __init__(self, inspector, cid, label, members):
        self.inspector, self.cid, self.label, self.members = inspector, cid, label, members
        self._seq = 0
        self._children = 0

    def reached(self, sig, blocking=True, site=None):
        """This rank has reached its next collective on this channel, described by ``sig``
        (a ``consistency.signature``); ``blocking``: the caller waits in it."""
        if site is None:
            from .consistency import call_site
            site = call_site()
        self._seq += 1
        self.inspector.report(("at", self.cid, self._seq, blocking, sig, site))

    def waiter(self):
        """A callable for the :class:`Work` of the collective just reported: the rank now
        blocks until that asynchronous collective completes."""
        cid, seq, inspector = self.cid, self._seq, self.inspector
        return lambda: inspector.report(("wait", cid, seq))

    def child(self, label, mpi_comm, checked):
        """The channel of a communicator made from this one (split or dup; every rank of this
        one calls it in the same order, so the ids agree)."""
        from mpi4py import MPI
        self._children += 1
        members = MPI.Group.Translate_ranks(mpi_comm.Get_group(), list(range(mpi_comm.Get_size())),
                                            MPI.COMM_WORLD.Get_group())
        return self.inspector.channel(self.cid + (self._children,), label, members, checked)

    def close(self, collective=False):
        """Stop numbering (the communicator is freed)."""
        self.inspector.report(("close", self.cid))


class StallInspector:
    """Reports from every rank to world rank 0, which warns about stalls and stops deadlocks."""

    def __init__(self, seconds):
        from mpi4py import MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.seconds = float(seconds)
        self.abort_delay = 1.0   # lets the launcher forward the report before the abort
        self._lock = threading.Lock()
        self._sends = []         # isend requests not known to be complete (non-root)
        self._thread = None
        if self.rank == 0:
            self._reset_bookkeeping()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._watch, name="ddp-stall-inspector",
                                            daemon=True)
            self._thread.start()
        atexit.register(self.close)  # before mpi4py finalises MPI

    # ------------------------------------------------------------------ every rank
    def channel(self, cid, label, members, checked):
        ch = Channel(self, cid, label, list(members))
        self.report(("chan", cid, label, list(members), bool(checked)))
        return ch

    def report(self, message):
        with self._lock:
            if self.comm is None:
                return
            if self.rank == 0:
                self._receive(0, message, time.monotonic())
                return
            self._sends = [r for r in self._sends if not r.Test()]
            self._sends.append(self.comm.isend(message, dest=0, tag=_TAG))

    def close(self, collective=False):
        """Stop watching (idempotent); at exit a rank first reports that it has finished. The
        duplicate communicator is left to ``MPI_Finalize``."""
        if self.comm is None:
            return
        self.report(("exit",))
        if self._thread is not None:
            # world rank 0 watches on while other ranks still run: one of them may be waiting
            # for a collective that this rank, finishing early, will never enter
            give_up = time.monotonic() + 3 * self.seconds + 2
            while self._thread.is_alive() and time.monotonic() < give_up:
                with self._lock:
                    if len(self._exited) == self.size:
                        break
                    if self._stopping:   # the watcher is about to stop the job
                        give_up = float("inf")
                self._stop.wait(0.05)
            self._stop.set()
            self._thread.join()
            self._thread = None
        with self._lock:
            self.comm = None

    # ------------------------------------------------------------------ world rank 0
    def _reset_bookkeeping(self):
        self._channels = {}      # cid -> dict(label, members, checked, latest, first, sigs, warned)
        self._current = {}       # rank -> (cid, seq, blocking, sig, site): its latest report
        self._exited = set()
        self._last_report = time.monotonic()
        self._stopping = False

    def _receive(self, source, message, now):
        """Book one report (called with the lock held)."""
        self._last_report = now
        kind = message[0]
        if kind == "chan":
            _, cid, label, members, checked = message
            self._channels.setdefault(cid, dict(label=label, members=members, checked=checked,
                                                latest={r: 0 for r in members}, first={},
                                                sigs={}, warned={}))
        elif kind == "at":
            _, cid, seq, blocking, sig, site = message
            ch = self._channels.get(cid)
            if ch is None:
                return
            ch["latest"][source] = max(ch["latest"].get(source, 0), seq)
            ch["first"].setdefault(seq, (now, sig))
            if not ch["checked"]:
                ch["sigs"].setdefault(seq, {})[source] = (sig, site)
            self._current[source] = (cid, seq, blocking, sig, site)
        elif kind == "wait":      # blocks on an asynchronous collective it started
            _, cid, seq = message
            cur = self._current.get(source)
            if cur is not None and cur[:2] == (cid, seq):
                self._current[source] = (cid, seq, True) + cur[3:]
            else:
                ch = self._channels.get(cid)
                first = ch["first"].get(seq) if ch is not None else None
                self._current[source] = (cid, seq, True, first[1] if first else ("?",), "?")
        elif kind == "close":
            self._channels.pop(message[1], None)
        elif kind == "exit":
            self._exited.add(source)

    def _watch(self):
        from mpi4py import MPI
        status = MPI.Status()
        poll = min(0.25, self.seconds / 4)
        comm = self.comm
        while not self._stop.is_set():
            while comm.Iprobe(source=MPI.ANY_SOURCE, tag=_TAG, status=status):
                source = status.Get_source()
                message = comm.recv(source=source, tag=_TAG)
                with self._lock:
                    self._receive(source, message, time.monotonic())
            with self._lock:
                message, stop = self._check(time.monotonic())
            if message:
                sys.stderr.write(message)
                sys.stderr.flush()
            if stop:
                time.sleep(self.abort_delay)
                MPI.COMM_WORLD.Abort(1)
                return
            self._stop.wait(poll)

    def _complete(self, cid, seq):
        ch = self._channels.get(cid)
        return ch is None or min(ch["latest"].values()) >= seq

    def _where(self, rank):
        """What ``rank`` is doing, from its latest report."""
        if rank in self._exited:
            return "has finished (its program ended)"
        cur = self._current.get(rank)
        if cur is None:
            return "has not reached any collective yet"
        cid, seq, blocking, sig, site = cur
        from .consistency import describe
        what = f"#{seq}{self._on(cid)}: {describe(sig)} at {site}"
        if not self._complete(cid, seq):
            return ("waits in " if blocking else "started ") + what
        return f"is computing (its last collective, {what}, completed)"

    def _on(self, cid):
        label = self._channels[cid]["label"] if cid in self._channels else "?"
        return "" if label == "the world group" else f" of {label}"

    def _blocked(self, rank):
        """``rank`` cannot move on by itself: finished, or blocking in an incomplete collective."""
        if rank in self._exited:
            return True
        cur = self._current.get(rank)
        return cur is not None and cur[2] and not self._complete(cur[0], cur[1])

    def _check(self, now):
        """(warning to print now or None, whether to stop the job); called with the lock held."""
        if self._stopping:
            return None, False
        from .consistency import comparable, describe
        for cid, ch in list(self._channels.items()):
            latest = ch["latest"]
            low = min(latest.values())
            for k, by_rank in sorted(ch["sigs"].items()):
                if len({comparable(sig) for sig, _ in by_rank.values()}) > 1:
                    self._stopping = True
                    lines = "".join(f"  rank {r}: {describe(sig)} at {site}\n"
                                    for r, (sig, site) in sorted(by_rank.items()))
                    return (f"ddp stall inspector: ranks called different collectives as "
                            f"#{k}{self._on(cid)}:\n{lines}Stopping the job: every rank must "
                            f"issue the same collectives in the same order, with the same shapes "
                            f"and dtypes.\n"), True
            for k in [k for k in ch["first"] if k <= low]:  # everyone got there: forget it
                del ch["first"][k]
                ch["warned"].pop(k, None)
                ch["sigs"].pop(k, None)
            if max(latest.values()) <= low:
                continue
            k = low + 1  # the first collective some ranks reached and others did not
            since, sig = ch["first"][k]
            last = ch["warned"].get(k)
            if now - since < self.seconds or (last is not None and now - last < self.seconds):
                continue
            ch["warned"][k] = now
            there = [r for r in ch["members"] if latest[r] >= k]
            missing = [r for r in ch["members"] if latest[r] < k]
            verb = "has" if len(there) == 1 else "have"
            lines = "".join(f"  rank {r} {self._where(r)}\n" for r in range(self.size))
            stop = all(self._blocked(r) for r in missing) and now - self._last_report >= \
                self.seconds
            head = (f"ddp stall inspector: collective #{k}{self._on(cid)} ({describe(sig)}): "
                    f"{_ranks(there)} {verb} waited {now - since:.0f} s for {_ranks(missing)}. "
                    f"Where each rank is:\n")
            if stop:
                self._stopping = True
                tail = ("This cannot resolve (the ranks missing have finished or wait in other "
                        "collectives): stopping the job. Every rank must issue the same "
                        "collectives in the same order; with uneven inputs use DDP's join().\n")
            else:
                tail = (f"A rank may be stuck, much slower than the others, or calling a "
                        f"different sequence of collectives (DDP_STALL_CHECK_SECONDS="
                        f"{self.seconds:g}; 0 turns this check off).\n")
            return head + lines + tail, stop
        return None, False


def _ranks(ranks) -> str:
    """``rank 1`` or ``ranks 0, 2``."""
    ranks = list(ranks)
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(str(r) for r in ranks)

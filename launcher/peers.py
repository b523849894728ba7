"""Ranks that vanish: every rank of a job keeps a TCP connection to rank 0, so the job notices
a rank that ends before its peers are done, instead of the others waiting for it forever.

MPI has no notion of a rank that has left: a rank that returns from the script (or calls
``sys.exit(0)``) while the others still communicate leaves them blocked in their next
collective, and one that calls ``os._exit(0)`` can even make the job report success. So at
start-up (before the script runs) each rank connects to rank 0's *hub*, and a small thread on
every rank (the *agent*) looks at its own main thread a few times a second:

- a rank whose script ends tells the hub ("finished, at train.py:9") and waits for the other
  ranks to finish too (an exit barrier: no rank reaches ``MPI_Finalize`` while another one
  still runs, and no rank's exit makes the MPI launcher kill a rank still writing its
  checkpoint);
- a rank whose connection closes without that message ended abruptly: killed by a signal,
  crashed (segfault) or ``os._exit``. The operating system closes the socket of a dead
  process, on any machine, so the hub names it at once by rank, host and pid;
- a rank whose main thread has been inside ``ddp.distributed`` (a collective) for
  :data:`STUCK_SECONDS` tells the hub where it waits. When a rank has left and another has
  waited in a collective for :data:`GRACE_SECONDS` since, the collective can never complete:
  the hub prints both (``rank 1 (host vm, pid 4242) finished its script (returned, at
  train.py:9) while rank 0 waits in all_reduce at train.py:14``) and stops the job with
  exit status 1 (``MPI_Abort``);
- a rank that waits in ``init_process_group`` for longer than the stall threshold
  (``DDP_STALL_CHECK_SECONDS``) while others have not arrived is reported with where each
  missing rank is (the stall inspector takes over once the process group exists).

Looking at the main thread is ``sys._current_frames()``: nothing on the training path changes.
The agent never fails a job by itself: if the connection cannot be set up, the job runs
without it (one warning). Single-process runs have no agents; ``DDP_WATCH_PEERS=0`` turns
them off.

What the worker does (``launcher.cli.run_worker``)::

    peers = start(comm, rank, size, abort, say)   # collective: every rank of COMM_WORLD
    ...                                           # the script runs
    peers.finish(0, "returned")                   # waits until every rank has finished
"""
from __future__ import annotations

import json
import os
import selectors
import socket
import sys
import threading
import time

SAMPLE_SECONDS = 0.2     # how often an agent looks at its main thread
STUCK_SECONDS = 1.0      # in a collective this long: tell the hub
GRACE_SECONDS = 5.0      # a rank left and another has waited in a collective this long: stop
SIGNAL_SPREAD_SECONDS = 5.0  # a signal to the job reaches every rank within this
CONNECT_SECONDS = 60.0

_HERE = os.path.dirname(os.path.abspath(__file__))
_DDP = None         # the ddp package folder, found without importing ddp
_DISTRIBUTED = None


def ddp_folders():
    """(the ddp package folder, its distributed folder), each ending in a separator."""
    global _DDP, _DISTRIBUTED
    if _DDP is None:
        import importlib.util
        spec = importlib.util.find_spec("ddp")
        _DDP = os.path.abspath(spec.submodule_search_locations[0]) + os.sep
        _DISTRIBUTED = os.path.join(_DDP, "distributed") + os.sep
    return _DDP, _DISTRIBUTED


def _is_plumbing(filename):
    """Frames that say nothing about where a thread waits: the standard library's threading and
    queue modules, and this package."""
    base = os.path.basename(filename)
    return base in ("threading.py", "queue.py", "selectors.py") or filename.startswith(_HERE)


def _waits_begun():
    """How many collectives the main thread has begun waiting for (0 before ddp.distributed
    is imported: none then)."""
    waiting = sys.modules.get("ddp.distributed.waiting")
    return 0 if waiting is None else waiting.waits_begun()


def describe(frame):
    """(collective, user call site) when ``frame`` (a thread's innermost frame) waits inside
    ``ddp.distributed``, else (None, user call site). The collective is the outermost function
    of the ``ddp.distributed`` frames around the innermost one (``all_reduce``,
    ``init_process_group``, the reducer's hook), the call site the first frame outside ddp.

    Example:
        >>> import sys; describe(sys._getframe())[0] is None
        True
    """
    return _describe(frame)[:2]


def _describe(frame):
    """:func:`describe` and the outermost ``ddp.distributed`` frame itself (None outside)."""
    ddp_dir, dist_dir = ddp_folders()
    f = frame
    while f is not None and _is_plumbing(os.path.abspath(f.f_code.co_filename)):
        f = f.f_back
    collective = entry = None
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(dist_dir):
        collective, entry = f.f_code.co_name, f
        f = f.f_back
    while f is not None and (os.path.abspath(f.f_code.co_filename).startswith(ddp_dir)
                             or _is_plumbing(os.path.abspath(f.f_code.co_filename))
                             or f.f_code.co_filename.startswith("<frozen")):
        f = f.f_back
    site = "?" if f is None else f"{f.f_code.co_filename}:{f.f_lineno}"
    return collective, site, entry


def at(place):
    """``place`` (from ``failure.where``) after "at", unless it already says "in <collective> at".

    Example:
        >>> at("train.py:3"), at("in all_reduce at train.py:3")
        ('at train.py:3', 'in all_reduce at train.py:3')
    """
    return place if place.startswith("in ") else "at " + place


def _ranks(ranks):
    ranks = sorted(ranks)
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


class _Line:
    """Newline-delimited JSON over a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.lock = threading.Lock()

    def send(self, **msg):
        data = (json.dumps(msg) + "\n").encode()
        with self.lock:
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

    def receive(self):
        """Messages that arrived (None at the end of the list when the peer has closed)."""
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return []
        except OSError:
            chunk = b""
        if not chunk:
            return [None]
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


class Peers:
    """This rank's end of the connections (the hub on rank 0, an agent elsewhere)."""

    def __init__(self, rank, size, roster, abort, say, events=None):
        self.rank, self.size, self.roster = rank, size, roster
        self._abort, self._say, self._events = abort, say, events
        self._main = threading.main_thread().ident
        self._lock = threading.Lock()
        self._all_done = threading.Event()
        self._closed = False
        # the local main thread: (since, collective, site) while it waits in ddp.distributed
        self._stuck_since = None
        self._call = None           # which wait that is (see _sample)
        self._reported = None
        self._finished = None       # how this rank finished (a message to the hub)
        self._orphaned = False      # rank 0 ended before telling this finished rank "all done"
        # the hub's view of every rank (rank 0 only)
        self.state = ["running"] * size        # running, finished, vanished, failing
        self.how = [""] * size
        self.gone_at = [None] * size
        self.stuck = [None] * size             # (since, collective, site)
        self.where = [None] * size             # answers to "where are you?"
        self.signals = [None] * size           # (time, signum) of SIGTERM/SIGINT received
        self._stall_warned = 0.0
        self._conns = {}                        # rank -> _Line (hub) / {0: hub} (agent)
        self._selector = selectors.DefaultSelector()

    # ------------------------------------------------------------------ the main thread
    def finish(self, code, how, wait=None, where=None):
        """The script ended with exit status ``code`` (``how``: "returned", "sys.exit(0)",
        "stopped by SIGTERM", ...): tell the hub and wait until every rank has finished
        (``wait`` seconds at most; None: as long as it takes). Returns True when all ranks
        finished."""
        where = where or "?"
        with self._lock:
            self._finished = (code, how, where)
        if self.rank == 0:
            self._hub_event(0, "finished", code=code, how=how, where=where)
        else:
            self._conns[0].send(t="finished", code=code, how=how, where=where)
        return self._all_done.wait(wait) and not self._orphaned

    def signalled(self, signum):
        """This rank received SIGTERM/SIGINT (called by the signal watchdog at once, before
        the script's finally blocks run)."""
        if self.rank == 0:
            with self._lock:
                self.signals[0] = (time.monotonic(), signum)
        elif 0 in self._conns:
            self._conns[0].send(t="signal", signum=signum)

    def failing(self, why=""):
        """This rank is about to stop the job itself (``why``: "raised ValueError: ... at
        train.py:12", a non-zero exit): its connection closing is no news, and rank 0's journal
        keeps the reason for the launcher's last line."""
        if self.rank == 0:
            self._note(kind="failing", rank=0, why=why)
            with self._lock:
                self.state[0] = "failing"
        elif 0 in self._conns:
            self._conns[0].send(t="failing", why=why)

    # ------------------------------------------------------------------ the thread
    def _sample(self, now):
        """Is the main thread waiting in ddp.distributed? (since, collective, site) or None."""
        frame = sys._current_frames().get(self._main)
        if frame is None:
            return None
        collective, site, entry = _describe(frame)
        if collective is None:
            self._stuck_since = self._call = None
            return None
        # A new call (even of the same collective from the same line, in a loop) is a new frame
        # or a new wait. Not the frame itself is kept: it would keep the main thread's frames
        # that have returned meanwhile alive until the next sample, and their locals with them
        # (DDP's reducer hands a gradient the bucket's memory only when nothing else holds it).
        call = (id(entry), entry.f_code, _waits_begun())
        del frame, entry
        if self._stuck_since is None or call != self._call:
            self._stuck_since = (now, collective, site)
        self._call = call
        return self._stuck_since

    def _run(self):
        while not self._closed:
            now = time.monotonic()
            stuck = self._sample(now)
            if stuck is not None and now - stuck[0] < STUCK_SECONDS:
                stuck = None
            if stuck != self._reported:
                self._reported = stuck
                if self.rank == 0:
                    with self._lock:
                        self.stuck[0] = stuck
                elif stuck is None:
                    self._conns[0].send(t="free")
                else:
                    self._conns[0].send(t="stuck", ago=now - stuck[0], collective=stuck[1],
                                        site=stuck[2])
            for key, _ in self._selector.select(SAMPLE_SECONDS):
                source = key.data
                for msg in self._conns[source].receive():
                    if self.rank == 0:
                        self._hub_message(source, msg)
                    else:
                        self._agent_message(msg)
            if self.rank == 0:
                self._hub_check(time.monotonic())

    # ------------------------------------------------------------------ agents
    def _agent_message(self, msg):
        if msg is None:  # rank 0 is gone
            self._selector.unregister(self._conns[0].sock)
            if not self._all_done.is_set():
                self._hub_gone()
            return
        if msg["t"] == "all_done":
            self._all_done.set()
        elif msg["t"] == "where":
            self._conns[0].send(t="here", where=self._location())
        elif msg["t"] == "stop":  # the hub stops the job; this rank may be the one it aborts
            self._say(msg["text"])

    def _hub_gone(self):
        """Rank 0 ended abruptly: this agent watches on alone (its own main thread only)."""
        host, pid = self.roster[0]
        try:
            self._say(f"rank 0 (host {host}, pid {pid}) ended without finishing its script "
                      f"(killed by a signal, crashed, or os._exit)")
        except OSError:   # no one reads our stderr any more (mpiexec has gone): watch on
            pass
        gone = time.monotonic()
        while not self._closed:
            if self._finished is not None:   # this rank's script is done: nothing to wait
                # for, and no one left to say "all done" (a job that rank 0 stopped while this
                # rank waited at the end: it was left running after mpiexec had gone)
                self._orphaned = True
                self._all_done.set()
                return
            stuck = self._sample(time.monotonic())
            if stuck is not None and time.monotonic() - max(stuck[0], gone) >= GRACE_SECONDS:
                self._say(f"rank {self.rank} waits in {stuck[1]} at {stuck[2]} for rank 0, "
                          f"which has ended; stopping the job")
                self._abort(1)
            time.sleep(SAMPLE_SECONDS)

    def _location(self):
        frame = sys._current_frames().get(self._main)
        if frame is None:
            return "(ended)"
        collective, site = describe(frame)
        if self._finished is not None:
            return f"finished its script at {self._finished[2]}"
        return f"in {collective} at {site}" if collective else f"at {site}"

    # ------------------------------------------------------------------ the hub (rank 0)
    def _hub_message(self, source, msg):
        now = time.monotonic()
        if msg is None:
            self._selector.unregister(self._conns[source].sock)
            with self._lock:
                vanished = self.state[source] == "running"
                if vanished:
                    self.state[source], self.gone_at[source] = "vanished", now
            if vanished:
                host, pid = self.roster[source]
                self._report(f"rank {source} (host {host}, pid {pid}) ended without finishing its "
                             f"script (killed by a signal, crashed, or os._exit)")
            return
        kind = msg["t"]
        if kind == "finished":
            self._hub_event(source, "finished", **{k: msg[k] for k in ("code", "how", "where")})
        elif kind == "signal":
            with self._lock:
                self.signals[source] = (now, msg["signum"])
        elif kind == "failing":
            self._note(kind="failing", rank=source, why=msg.get("why", ""))
            with self._lock:
                self.state[source] = "failing"
        elif kind == "stuck":
            with self._lock:
                self.stuck[source] = (now - msg["ago"], msg["collective"], msg["site"])
        elif kind == "free":
            with self._lock:
                self.stuck[source] = None
        elif kind == "here":
            with self._lock:
                self.where[source] = msg["where"]

    def _hub_event(self, source, state, code, how, where):
        self._note(kind="finished", rank=source, code=code, how=how)
        with self._lock:
            self.state[source] = state
            self.how[source] = f"{how}, {at(where)}" if code == 0 else f"{how} (exit status " \
                f"{code}), {at(where)}"
            self.gone_at[source] = time.monotonic()
            self.stuck[source] = None

    def _hub_check(self, now):
        with self._lock:
            state, stuck = list(self.state), list(self.stuck)
            gone_at, how = list(self.gone_at), list(self.how)
        if all(s == "finished" for s in state):
            if not self._all_done.is_set():
                self._note(kind="all_done")
                for conn in self._conns.values():
                    conn.send(t="all_done")
                self._all_done.set()
            return
        if self._signal_to_some(now, state):
            return
        gone = [r for r in range(self.size) if state[r] in ("finished", "vanished")]
        for waiting in range(self.size):
            if state[waiting] != "running" or stuck[waiting] is None:
                continue
            since, collective, site = stuck[waiting]
            for left in gone:
                if now - max(since, gone_at[left]) >= GRACE_SECONDS:
                    host, pid = self.roster[left]
                    what = (f"finished its script ({how[left]})" if state[left] == "finished"
                            else "ended without finishing its script (killed by a signal, "
                                 "crashed, or os._exit)")
                    w_host = self.roster[waiting][0]
                    self._report(
                        f"rank {left} (host {host}, pid {pid}) {what} while rank {waiting} "
                        f"(host {w_host}) still waits in {collective} at {site}; a rank that "
                        f"leaves early skips collectives the others still call (a return or "
                        f"sys.exit on one rank only?). Stopping the job.")
                    self._stop(1)
                    return
        if "vanished" in state and all(s in ("finished", "vanished") for s in state):
            left = [r for r in range(self.size) if state[r] == "vanished"]
            self._report(f"{_ranks(left)} ended without finishing the script while the others "
                         f"finished it; the job failed")
            self._stop(1)
            return
        self._check_init_stall(now, state, stuck)

    def _signal_to_some(self, now, state):
        """A signal that reached some ranks only (``kill`` of one pid) stops the whole job once
        the others have had :data:`SIGNAL_SPREAD_SECONDS` to receive it too: the signalled
        ranks could otherwise wait at the exit barrier for ranks that go on training."""
        with self._lock:
            signals = list(self.signals)
        got = [r for r in range(self.size) if signals[r] is not None]
        if not got:
            return False
        first, signum = min(signals[r] for r in got)
        missing = [r for r in range(self.size) if signals[r] is None and state[r] == "running"]
        if not missing or now - first < SIGNAL_SPREAD_SECONDS:
            return False
        import signal as _signal
        name = _signal.Signals(signum).name
        self._report(f"{_ranks(got)} received {name} and {_ranks(missing)} did not (a signal to "
                     f"some ranks only); stopping the job")
        self._stop(128 + signum)
        return True

    def _check_init_stall(self, now, state, stuck):
        """Ranks waiting in init_process_group (before the stall inspector exists) for longer
        than the stall threshold: name the ranks that have not arrived and where they are."""
        threshold = _stall_seconds()
        if threshold is None:
            return
        waiting = [r for r in range(self.size) if stuck[r] is not None
                   and stuck[r][1] == "init_process_group"]
        if not waiting or now - self._stall_warned < threshold:
            return
        since = min(stuck[r][0] for r in waiting)
        if now - since < threshold:
            return
        missing = [r for r in range(self.size) if r not in waiting and state[r] == "running"]
        if not missing:
            return
        if self._stall_warned >= 0 and not getattr(self, "_asked", False):
            self._asked = True
            with self._lock:
                for r in missing:
                    self.where[r] = None
            for r in missing:
                if r == 0:
                    self.where[0] = self._location()
                else:
                    self._conns[r].send(t="where")
            self._asked_at = now
            return
        if any(self.where[r] is None for r in missing) and now - self._asked_at < 2.0:
            return
        self._asked = False
        self._stall_warned = now
        where = ", ".join(f"rank {r} {self.where[r] or 'did not answer'}" for r in missing)
        site = stuck[waiting[0]][2]
        verb = "has" if len(waiting) == 1 else "have"
        self._say(f"stall before the process group exists: {_ranks(waiting)} {verb} waited "
                  f"{now - since:.0f} s in init_process_group (at {site}) for {_ranks(missing)} "
                  f"({where}) (DDP_STALL_CHECK_SECONDS={threshold:g}; 0 turns this check off)")

    def _report(self, text):
        self._say(text)
        self._note(kind="report", text=text)

    def _note(self, **event):
        """Rank 0 keeps a journal in the launcher's job folder (``DDP_JOB_DIR``): the roster,
        each rank that finished, the end, and every report, so that the launcher can say
        what happened even when mpiexec kills rank 0 before it could print."""
        if self._events:
            try:
                with open(self._events, "a", encoding="utf-8") as f:
                    f.write(json.dumps(event) + "\n")
            except OSError:
                pass

    def _stop(self, code):
        for conn in self._conns.values():
            conn.send(t="stop", text="stopping the job (see rank 0's message)")
        self._abort(code)

    def close(self):
        self._closed = True


def _stall_seconds():
    value = os.environ.get("DDP_STALL_CHECK_SECONDS", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def start(comm, rank, size, abort, say, events=None):
    """Connect every rank of ``comm`` (mpi4py COMM_WORLD; collective) to rank 0 and start this
    rank's thread. Returns the :class:`Peers`, or None when the connections cannot be made (the
    job then runs without them, after one warning)."""
    host = socket.gethostname()
    roster = comm.allgather((host, os.getpid()))
    one_machine = all(h == roster[0][0] for h, _ in roster)
    server = address = None
    if rank == 0:
        try:
            server = socket.create_server(("127.0.0.1" if one_machine else "", 0),
                                          backlog=size)
            address = ("127.0.0.1" if one_machine else host, server.getsockname()[1])
        except OSError as exc:
            say(f"warning: cannot listen for the other ranks ({exc}); ranks that vanish will "
                f"not be noticed")
    address = comm.bcast(address, root=0)
    peers = Peers(rank, size, [tuple(x) for x in roster], abort, say, events)
    ok = address is not None
    if ok and rank != 0:
        try:
            sock = socket.create_connection(tuple(address), timeout=CONNECT_SECONDS)
            sock.sendall(f"{rank}\n".encode())
            peers._conns[0] = _Line(sock)
        except OSError as exc:
            say(f"warning: cannot reach rank 0 at {address[0]}:{address[1]} ({exc})")
            ok = False
    if ok and rank == 0:
        server.settimeout(CONNECT_SECONDS)
        try:
            for _ in range(size - 1):
                sock, _ = server.accept()
                sock.settimeout(CONNECT_SECONDS)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(16)
                    if not chunk:
                        raise OSError("a rank closed its connection at once")
                    data += chunk
                peers._conns[int(data)] = _Line(sock)
        except (OSError, ValueError) as exc:
            say(f"warning: not every rank connected ({exc})")
            ok = False
        server.close()
    if not comm.allreduce(int(ok), op=_mpi_min()):  # all or none: a half hub would mislead
        for conn in peers._conns.values():
            conn.sock.close()
        return None
    peers._note(kind="roster", roster=peers.roster)
    for source, conn in peers._conns.items():
        conn.sock.setblocking(False)
        peers._selector.register(conn.sock, selectors.EVENT_READ, source)
    threading.Thread(target=peers._run, name="launcher-peers", daemon=True).start()
    return peers


def _mpi_min():
    from mpi4py import MPI
    return MPI.MIN

"""When one rank fails, stop them all.

A rank that raises leaves the other ranks blocked in their next collective forever: MPI has no
notion of a dead peer. So the worker ends a failing rank with ``MPI_Abort``, which makes the
MPI launcher kill every rank of the job at once (ChainerMN's global except hook and
``python -m mpi4py`` do the same):

- an exception: its traceback is printed with the rank (``[rank 1] Traceback ...``), then,
  :data:`ABORT_DELAY_SECONDS` later, ``MPI_Abort(1)``;
- ``sys.exit(n)`` with n != 0: the job stops with code n (``sys.exit(0)`` is a normal exit);
- SIGTERM/SIGINT (Slurm's scancel, preemption, Ctrl-C): raised in the main thread as
  :class:`SignalExit` / ``KeyboardInterrupt`` so ``finally`` blocks and checkpoint handlers
  run, then the job stops with 128 + the signal number (one line says where each rank was,
  no traceback). A rank blocked in a collective cannot
  run Python signal handlers (they only run between bytecodes of the main thread), so a
  watchdog thread notices the signal through the wakeup fd and, if the main thread has not
  reacted within :data:`GRACE_SECONDS`, prints where it is blocked and exits the process.

Single-process runs print the usual traceback and exit with the usual code.

Example:
    >>> exit_code(SystemExit(3)), exit_code(SystemExit(None)), exit_code(ValueError())
    (3, 0, 1)
"""
from __future__ import annotations

import faulthandler
import os
import signal
import socket
import sys
import threading
import time
import traceback

from .peers import at, ddp_folders

GRACE_SECONDS = 3.0  # a signalled rank blocked outside Python exits after this long
# A failing rank waits this long before MPI_Abort, so that the MPI launcher forwards its
# traceback before killing the job (hydra drops output still in flight at the abort) and other
# ranks failing at the same moment (a mismatch found on every rank) can print theirs.
ABORT_DELAY_SECONDS = 1.0


class SignalExit(BaseException):
    """Raised in the main thread when the rank receives SIGTERM (like KeyboardInterrupt)."""

    def __init__(self, signum):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


# A rank stopped by a signal waits this long at most for the other ranks to finish their
# finally blocks too, before it stops the job (DDP_SIGNAL_GRACE_SECONDS overrides it).
SIGNAL_GRACE_SECONDS = 60.0

_state = {"rank": 0, "size": 1, "abort": None, "peers": None}
_real_exit = os._exit   # the launcher's own way out (the script's os._exit is watched)


def _script_exit(code):
    """``os._exit`` as the script sees it in a rank of a job: the other ranks learn that this
    rank finished (status 0: after they all have, as at the end of the script) or is stopping
    the job (another status), so a rank that leaves early is named, and ``os._exit(0)`` on
    every rank at the end (to skip a slow teardown) is still a success. Forked children
    (DataLoader workers) exit as usual."""
    peers = _state["peers"]
    if peers is not None and os.getpid() == _state.get("pid"):
        try:
            code = int(code)
        except (TypeError, ValueError):
            code = 1
        frame = sys._getframe(1)
        where_ = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        if code == 0:
            _flush_all()
            _tell_stall_inspector()
            peers.finish(0, "os._exit(0)", where=where_)
        else:
            peers.failing(f"called os._exit({code}) at {where_}")
            _write(f"launcher: rank {_state['rank']} called os._exit({code}) at {where_}; "
                   f"stopping all {_state['size']} ranks\n")
    _real_exit(code)


def _flush_all():
    try:
        from .ranks import finish_output
        finish_output()
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
_handled = threading.Event()  # the main thread has turned the signal into an exception


def exit_code(exc: BaseException) -> int:
    """The process exit status that ``exc`` stands for."""
    if isinstance(exc, SystemExit) and not isinstance(exc, SignalExit):
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    if isinstance(exc, SignalExit):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return 1


def _ours(filename: str) -> bool:
    """A frame of the launcher or of runpy (not the user's code)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return (filename.startswith("<frozen runpy") or os.path.basename(filename) == "runpy.py"
            or os.path.abspath(filename).startswith(here + os.sep))


def _user_traceback(tb):
    """Skip the launcher's and runpy's frames at the top of a traceback."""
    while tb is not None and _ours(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb


def where(exc) -> str:
    """``file:line (code)`` of the innermost user frame of ``exc``'s traceback: frames of the
    launcher and of ddp are skipped (a SIGTERM that interrupts an ``all_reduce`` is reported at
    the user's call, ``in all_reduce at train.py:40 (...)``)."""
    ddp_dir, dist_dir = ddp_folders()
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _ours(f.filename)]
    user = [i for i, f in enumerate(frames) if not os.path.abspath(f.filename).startswith(ddp_dir)]
    if not user:
        return "?" if not frames else _site(frames[-1])
    inner = frames[user[-1] + 1:user[-1] + 2]
    inside = (f"in {inner[0].name} at "
              if inner and os.path.abspath(inner[0].filename).startswith(dist_dir) else "")
    return inside + _site(frames[user[-1]])


def _site(f):
    return f"{f.filename}:{f.lineno}" + (f" ({f.line})" if f.line else "")


def _write(text: str) -> None:
    """Write to stderr (rank-prefixed under the launcher) and flush everything, partial lines
    included (the process may end right after)."""
    try:
        from .ranks import finish_output
        finish_output()
        sys.stderr.write(text)
        sys.stderr.flush()
        sys.stdout.flush()
    except Exception:  # a closed stream must not keep us from aborting
        pass


def fail(exc: BaseException) -> int:
    """Report ``exc`` raised by the script; with several ranks, abort the whole job (does not
    return). Returns the exit status otherwise."""
    code = exit_code(exc)
    rank, size = _state["rank"], _state["size"]
    if isinstance(exc, SystemExit) and not isinstance(exc, SignalExit):
        if not isinstance(exc.code, (int, type(None))):
            _write(f"{exc.code}\n")  # sys.exit("message") prints the message, as Python does
        if code != 0 and size > 1:
            _write(f"launcher: rank {rank} exited with code {code}; stopping all {size} ranks\n")
    elif isinstance(exc, (SignalExit, KeyboardInterrupt)):
        name = signal.Signals(code - 128).name
        who = f"rank {rank}" if size > 1 else "the script"
        _write(f"launcher: {who} stopped by {name} {at(where(exc))}"
               + (f"; stopping all {size} ranks\n" if size > 1 else "\n"))
        if _state["peers"] is not None:
            return code  # finished() waits for the other ranks' finally blocks
    else:
        text = "".join(traceback.format_exception(type(exc), exc, _user_traceback(
            exc.__traceback__)))
        if size > 1:
            text += f"launcher: rank {rank} failed; stopping all {size} ranks\n"
        _write(text)
    if size > 1 and code != 0:
        if _state["peers"] is not None:
            _state["peers"].failing(_why(exc))
        abort(code)
    return code


def _why(exc: BaseException) -> str:
    """One line on why this rank stops the job, for the launcher's summary."""
    if isinstance(exc, SystemExit):
        return f"exited with {how_it_ended(exc)} {at(where(exc))}"
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
    return f"raised {message} {at(where(exc))}"


def how_it_ended(exc: BaseException) -> str:
    """A few words on how the script ended, for the other ranks' messages.

    Example:
        >>> how_it_ended(SystemExit(0)), how_it_ended(SystemExit(None))
        ('sys.exit(0)', 'sys.exit()')
    """
    if isinstance(exc, SignalExit):
        return f"stopped by {signal.Signals(exc.signum).name}"
    if isinstance(exc, KeyboardInterrupt):
        return "stopped by SIGINT"
    if isinstance(exc, SystemExit):
        return f"sys.exit({'' if exc.code is None else repr(exc.code)})"
    return f"raised {type(exc).__name__}"


def crash_reports_to(path: str) -> None:
    """Python's traceback of a crash (SIGSEGV, SIGFPE, SIGABRT, SIGBUS, SIGILL) goes to
    ``path`` in the launcher's job folder, where ``launcher -n`` finds it after mpiexec has
    ended and names the rank that crashed (mpiexec names only its pid)."""
    try:
        _state["fault_file"] = open(path, "w")
        faulthandler.enable(file=_state["fault_file"], all_threads=False)
    except (OSError, ValueError, RuntimeError):
        pass


def set_peers(peers) -> None:
    """The rank's connection to the other ranks (``launcher.peers``), or None; with one, the
    script's ``os._exit`` tells the other ranks first (:func:`_script_exit`)."""
    _state["peers"] = peers
    _state["pid"] = os.getpid()
    if peers is not None:
        os._exit = _script_exit


def _signal_grace() -> float:
    try:
        return float(os.environ.get("DDP_SIGNAL_GRACE_SECONDS", SIGNAL_GRACE_SECONDS))
    except ValueError:
        return SIGNAL_GRACE_SECONDS


def _tell_stall_inspector() -> None:
    """The stall inspector (``ddp.distributed.stall``) learns that this rank has finished
    when the script ends, not only at exit: the rank now waits at the exit barrier, and the
    inspector's reports should say "has finished" for it, not "is computing"."""
    stall = sys.modules.get("ddp.distributed.stall")
    inspector = getattr(stall, "_inspector", None)
    if inspector is not None and getattr(inspector, "comm", None) is not None:
        try:
            inspector.report(("exit",))
        except Exception:  # the inspector is a helper; finishing must not fail on it
            pass


def finished(code: int, how: str, where=None) -> None:
    """The script of this rank ended with ``code`` (0, or 128 + a signal): wait for the other
    ranks to finish too (a signal: for the grace period at most, then the job is stopped), so
    that no rank's exit makes the MPI launcher kill one still in its ``finally:``."""
    peers = _state["peers"]
    if peers is None:
        if _state["size"] > 1 and code != 0:
            abort(code)
        return
    _tell_stall_inspector()
    if code == 0:
        if not peers.finish(0, how, where=where):
            # rank 0 ended before the job finished (it stopped the job): the job failed, and
            # MPI_Finalize would wait for ranks that are gone
            _real_exit(1)
    elif not peers.finish(code, how, wait=_signal_grace(), where=where):
        _write(f"launcher: rank {_state['rank']}: the other ranks did not finish within "
               f"{_signal_grace():g} s of the signal; stopping the job\n")
        abort(code)
    elif _left_a_collective():
        # MPI_Finalize would wait for (or warn about) the collective this rank left on the
        # signal, which no peer will join now; every rank has finished its script
        _write("")
        _real_exit(code)


def _left_a_collective() -> bool:
    waiting = sys.modules.get("ddp.distributed.waiting")   # not imported: nothing was left
    return waiting is not None and waiting.abandoned()


def abort(code: int) -> None:
    """Stop every rank of the job with exit status ``code`` (``MPI_Abort``)."""
    if _state["abort"] is not None:
        time.sleep(ABORT_DELAY_SECONDS)
        unlink_mapped_segments()
        _state["abort"](code)
    _real_exit(code)  # no MPI: just this process


def unlink_mapped_segments(maps="/proc/self/maps") -> list:
    """Before ``MPI_Abort``: unlink the MPI library's segment files in /dev/shm that this rank
    maps, and return their paths. The ranks the abort kills never unlink them (MPICH leaves 2
    MiB per job), and under a bare ``mpiexec`` no launcher above the job removes them
    afterwards (``supervise`` does for ``launcher -n``); the job is ending, and its ranks keep
    their mappings until they exit."""
    from .supervise import SHM_DIR, SHM_PREFIXES
    removed = []
    try:
        with open(maps, encoding="utf-8", errors="replace") as f:
            paths = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    except OSError:
        return removed   # (not Linux)
    for path in sorted(paths):
        if os.path.dirname(path) == SHM_DIR and os.path.basename(path).startswith(SHM_PREFIXES):
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass   # (gone already: another rank's abort)
    return removed


def _excepthook(exc_type, exc, tb):
    """``sys.excepthook``: exceptions that escape outside the worker's own handler."""
    if exc is None:
        exc = exc_type()
    if exc.__traceback__ is None:
        exc = exc.with_traceback(tb)
    fail(exc)


def _on_signal(signum, frame):
    _handled.set()
    if signum == signal.SIGINT:
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt
    raise SignalExit(signum)


def _watchdog(sock):
    """Wakes up on every Python-handled signal; exits the process if the main thread has not
    turned SIGTERM/SIGINT into an exception within the grace period (it is blocked in C)."""
    while True:
        try:
            data = sock.recv(64)
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if signum not in (signal.SIGTERM, signal.SIGINT):
                continue
            if signal.getsignal(signum) is not _on_signal:
                continue  # the script handles it (ddp.training.Checkpoint stops at a step end,
                # on every rank together even when only some ranks received the signal)
            if _state["peers"] is not None:
                _state["peers"].signalled(signum)
            if _handled.wait(GRACE_SECONDS):
                continue
            name = signal.Signals(signum).name
            _write(f"launcher: rank {_state['rank']} received {name} but its main thread is "
                   f"blocked (in a collective?) for {GRACE_SECONDS:g} s; exiting. It was at:\n")
            try:
                faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
            except Exception:
                pass
            if _state["peers"] is not None:
                finished(128 + signum, f"stopped by {name} while blocked", where="(blocked)")
            _real_exit(128 + signum)


def _reset_in_child():
    """A forked child (e.g. a fork-started DataLoader worker) gets the default behaviour back."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):
        pass


def install(rank: int, size: int, comm=None) -> None:
    """Install the except hook and the signal handling for this rank. ``comm`` (mpi4py's
    COMM_WORLD) is what gets aborted; without it a failure ends just this process."""
    _state.update(rank=rank, size=size,
                  abort=(lambda code: comm.Abort(code)) if comm is not None else None)
    sys.excepthook = _excepthook
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:
        return
    if previous != -1:  # someone else's wakeup fd (an event loop): leave it alone
        signal.set_wakeup_fd(previous)
        return
    _state["sockets"] = (reader, writer)  # keep them open for the life of the process
    threading.Thread(target=_watchdog, args=(reader,), name="launcher-signal-watchdog",
                     daemon=True).start()
    os.register_at_fork(after_in_child=_reset_in_child)

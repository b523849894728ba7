"""The launcher's own process while a job runs: it starts mpiexec (or the single process),
passes signals on, names what failed, and reruns the job after a failure (``--max-restarts``).

- mpiexec runs in a session of its own, so a Ctrl-C in the terminal reaches the job once,
  through the launcher: SIGINT/SIGTERM are handed to mpiexec, which hands them to every rank;
  each rank then runs its ``finally:`` blocks (``launcher.failure``, ``ddp.training``'s
  checkpoint). A second Ctrl-C (or SIGTERM) ends the job at once: mpiexec and its ranks are
  killed and the launcher exits non-zero. If the launcher itself dies, the kernel sends
  mpiexec SIGTERM (``PR_SET_PDEATHSIG`` on Linux), so no job is left behind.
- ``--max-restarts N`` (torchrun's option): when the job fails, it is started again, at most N
  times, with ``DDP_RESTART_COUNT`` (and torchrun's ``TORCHELASTIC_RESTART_COUNT``) set to the
  number of restarts so far; a script that resumes from its checkpoint
  (``ddp.training.Checkpoint``) continues where the failed run stopped. A job stopped by a
  signal is not restarted.
- After each attempt the MPI library's segments in ``/dev/shm`` that its ranks left behind
  (killed, or gone by ``os._exit``; no process maps them) are removed: such jobs do not fill
  a small /dev/shm.
- Each attempt gets a job folder (``DDP_JOB_DIR``) where rank 0 notes ranks that vanished
  (``launcher.peers``); after a failed attempt the launcher repeats those lines with the
  exit status, so the end of the output says what went wrong.

Example:
    >>> describe_status(-11)
    'killed by SIGSEGV'
    >>> describe_status(3)
    'exit status 3'
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

KILL_AFTER_SECONDS = 5.0  # after a second signal, mpiexec gets this long before SIGKILL


def describe_status(code: int) -> str:
    """A subprocess return code in words."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _die_with_parent():
    """In the child before exec: get SIGTERM when the launcher dies (Linux)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Signals:
    """SIGINT/SIGTERM while a job runs: the first is passed on, a second kills the job."""

    def __init__(self):
        self.proc = None
        self.received = []
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.received.append(signum)
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        if len(self.received) == 1:
            sys.stderr.write(f"launcher: {signal.Signals(signum).name}: passing it to every "
                             f"rank (their finally blocks run); send it again to stop at once\n")
            sys.stderr.flush()
            _signal_group(proc, signum)
        else:
            sys.stderr.write("launcher: second signal: stopping the job now\n")
            sys.stderr.flush()
            _signal_group(proc, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
            self.kill_at = time.monotonic() + KILL_AFTER_SECONDS


def _signal_group(proc, signum):
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass


def _wait(proc, signals):
    """Wait for ``proc``; after a second signal, SIGKILL its process group when it lingers."""
    while True:
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            kill_at = getattr(signals, "kill_at", None)
            if kill_at is not None and time.monotonic() > kill_at:
                _signal_group(proc, signal.SIGKILL)


def run(cmd, max_restarts=0, say=None) -> int:
    """Run ``cmd`` (mpiexec ... or a single worker) until it succeeds, at most
    ``1 + max_restarts`` times; returns the launcher's exit status."""
    say = say or (lambda text: (sys.stderr.write(f"launcher: {text}\n"), sys.stderr.flush()))
    attempt = 0
    with _Signals() as signals:
        while True:
            job_dir = tempfile.mkdtemp(prefix="ddp-job-")
            env = dict(os.environ, DDP_JOB_DIR=job_dir, DDP_RESTART_COUNT=str(attempt),
                       TORCHELASTIC_RESTART_COUNT=str(attempt),
                       DDP_MAX_RESTARTS=str(max_restarts))
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                        preexec_fn=_die_with_parent)
            except OSError as exc:
                say(f"cannot run {cmd[0]}: {exc}")
                shutil.rmtree(job_dir, ignore_errors=True)
                return 2
            signals.proc = proc
            shm_before = _shm_files()
            code = _wait(proc, signals)
            signals.proc = None
            # after a success too: ranks that left by os._exit skipped MPI_Finalize, which
            # unlinks the segment (one 2 MiB file per such job)
            _remove_orphaned_shm(shm_before)
            events = _read_events(job_dir)
            shutil.rmtree(job_dir, ignore_errors=True)
            if code == 0 and events:
                code = 1  # mpiexec saw exit status 0, but a rank left without finishing
            if code == 0 and not signals.received:
                return 0
            if signals.received:
                signum = signals.received[0]
                if code == 0:
                    code = 128 + signum
                return code if code > 0 else 128 - code
            status = code if code > 0 else 128 - code
            summary = f"the job failed ({describe_status(code)})"
            if events:
                summary += ": " + "; ".join(events)
            if attempt >= max_restarts:
                say(summary + (f"; no restarts left (--max-restarts {max_restarts})"
                               if max_restarts else ""))
                return status
            attempt += 1
            say(f"{summary}; restarting it (restart {attempt} of {max_restarts})")


SHM_DIR = "/dev/shm"
# the segments MPI libraries make in SHM_DIR, which a rank killed before it unlinks them
# leaves behind (MPICH: 4 MiB per failed 2-rank job here; a container's /dev/shm of 64 MiB
# is full after some 15 failed jobs, and then every MPI job fails to start)
SHM_PREFIXES = ("mpich_shm_", "vader_segment", "sm_segment")


def _shm_files():
    """Names of MPI segment files in SHM_DIR owned by us."""
    try:
        return {e.name for e in os.scandir(SHM_DIR) if e.name.startswith(SHM_PREFIXES)
                and e.stat(follow_symlinks=False).st_uid == os.getuid()}
    except OSError:
        return set()


def _mapped_files():
    """Paths in SHM_DIR that our processes map (None where /proc cannot tell: not Linux)."""
    if not os.path.isdir("/proc/self"):
        return None
    paths = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != os.getuid():
                continue
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.split(None, 5)
                    if len(fields) == 6 and fields[5].startswith(SHM_DIR):
                        paths.add(fields[5].strip())
        except OSError:
            continue   # ended meanwhile, or not readable (init, setuid programs): no MPI rank
    return paths


def _remove_orphaned_shm(before):
    """After an attempt: remove the MPI segment files that appeared while it ran and
    that none of our processes maps any more (another job's are mapped by its ranks)."""
    new = _shm_files() - before
    if not new:
        return
    mapped = _mapped_files()
    if mapped is None:
        return
    for name in new:
        path = os.path.join(SHM_DIR, name)
        if path not in mapped and path + " (deleted)" not in mapped:
            try:
                os.unlink(path)
            except OSError:
                pass


def _read_events(job_dir):
    """What rank 0's journal (``launcher.peers``) says went wrong: its reports, and the ranks
    that never finished their script when the job ended before all of them did."""
    events = []
    try:
        with open(os.path.join(job_dir, "events"), encoding="utf-8") as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        return []
    reports = [e["text"] for e in events if e.get("kind") == "report"]
    roster = next((e["roster"] for e in events if e.get("kind") == "roster"), None)
    crashes = _crash_reports(job_dir, roster)
    for e in events:
        if e.get("kind") == "failing" and e.get("why"):
            rank = e.get("rank", 0)
            who = f"rank {rank}"
            if roster is not None and rank < len(roster):
                who += f" (host {roster[rank][0]}, pid {roster[rank][1]})"
            reports.append(f"{who} {e['why']}")
    if roster is None or any(e.get("kind") in ("all_done", "failing") for e in events):
        return crashes + reports
    finished = {e["rank"] for e in events if e.get("kind") == "finished"}
    missing = [r for r in range(len(roster)) if r not in finished]
    named = [text for text in reports if "ended without finishing" in text]
    reports = crashes + reports
    if missing and not named and not crashes:
        who = ", ".join(f"rank {r} (host {roster[r][0]}, pid {roster[r][1]})" for r in missing)
        reports.append(f"{who} did not finish the script (killed by a signal, crashed, "
                       f"os._exit, or stopped with the job)")
    return reports


def _crash_reports(job_dir, roster):
    """One line per rank that crashed (its faulthandler file, ``launcher.failure``); the full
    Python traceback of the crash is printed, rank-prefixed."""
    lines = []
    for name in sorted(os.listdir(job_dir)) if os.path.isdir(job_dir) else []:
        if not name.startswith("fault-"):
            continue
        try:
            rank = int(name[len("fault-"):])
            with open(os.path.join(job_dir, name), encoding="utf-8", errors="replace") as f:
                text = f.read().strip()
        except (OSError, ValueError):
            continue
        if not text:
            continue
        kept = [line for line in text.splitlines() if not line.startswith("Extension modules")]
        sys.stderr.write("".join(f"[rank {rank}] {line}\n" for line in kept))
        first = kept[0]
        here = os.path.dirname(os.path.abspath(__file__))
        frames = [line.strip() for line in kept if line.strip().startswith("File ")
                  and not any(part in line for part in (os.sep + "lib" + os.sep + "python",
                                                        "<frozen", here))]
        who = f"rank {rank}"
        if roster is not None and rank < len(roster):
            who += f" (host {roster[rank][0]}, pid {roster[rank][1]})"
        lines.append(f"{who} crashed: {first}" + (f" ({frames[0]})" if frames else ""))
    return lines

"""What a worker sets up before the training script runs: its rank, the rank environment
variables, a BLAS/OpenMP thread share, rank-prefixed output, the GPU of the rank and its seed.

Order matters: the thread variables must be in ``os.environ`` before NumPy (and with it the
BLAS library, which reads them once when it loads) is imported, so nothing here imports NumPy
or ``ddp`` until :func:`set_rank_env` has run. ``mpi4py`` does not import NumPy, so the rank
and local rank come from MPI itself.

Example:
    >>> thread_share(None, 2, cores=16, env={})   # 2 ranks on a 16-core machine
    8
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
from dataclasses import dataclass

# Variables with which BLAS/OpenMP libraries size their thread pools (NumPy's OpenBLAS, MKL,
# Apple's Accelerate, BLIS, numexpr); all get the same value.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS")

@dataclass
class RankInfo:
    """This process's place in the job (``size == 1`` and ``comm is None`` without MPI)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    comm: object = None  # mpi4py COMM_WORLD when running under MPI


def environment():
    """``ddp.distributed.environment``, the one reader of the launchers' variables, loaded from
    its file without importing ``ddp`` (which would load NumPy before the thread variables are
    set). It registers under its own name, so ``ddp.distributed`` later uses the same module."""
    name = "ddp.distributed.environment"
    if name not in sys.modules:
        import importlib.util
        package = importlib.util.find_spec("ddp")  # finds the package without importing it
        path = os.path.join(package.submodule_search_locations[0], "distributed",
                            "environment.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def in_mpi_job(env=None) -> bool:
    """True when an MPI launcher (mpirun/mpiexec/srun) started this process as one of several
    ranks. Only the launchers' own variables count: a stray ``WORLD_SIZE`` does not (see
    ``ddp.distributed.environment``)."""
    return environment().in_mpi_job(env)


def discover(use_mpi: bool) -> RankInfo:
    """Rank, world size and local rank/size. With ``use_mpi`` MPI is initialised (mpi4py's
    default: MPI_THREAD_MULTIPLE, which ddp's communication thread needs) and the local rank
    comes from ``COMM_WORLD.Split_type(COMM_TYPE_SHARED)``, which works under every MPI
    launcher and on every machine of a multi-node job."""
    if not use_mpi:
        return RankInfo()
    from mpi4py import MPI
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    node = world.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    local_rank, local_size = node.Get_rank(), node.Get_size()
    node.Free()
    return RankInfo(rank, size, local_rank, local_size, world)


def usable_cores() -> int:
    """Cores this process may run on (``ddp.distributed.environment.usable_cores``)."""
    return environment().usable_cores()


def thread_share(threads, local_size, cores=None, env=None) -> int:
    """BLAS/OpenMP threads for each rank: ``threads`` when given (``--threads``), else an
    ``OMP_NUM_THREADS`` the user already exported, else the machine's cores split evenly
    between the ranks on it, at least 1. Threads x local ranks never exceeds the cores by
    default, which is what keeps several ranks on one machine from slowing each other down.

    Example:
        >>> thread_share(None, 4, cores=2, env={})
        1
        >>> thread_share(3, 4, cores=2, env={})
        3
    """
    if threads is not None:
        return max(1, int(threads))
    env = os.environ if env is None else env
    preset = env.get("OMP_NUM_THREADS", "")
    if preset.isdigit() and int(preset) > 0:
        return int(preset)
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(1, local_size))


def set_rank_env(info: RankInfo, threads: int, seed=None, debug=False, stall_seconds=None):
    """Export what the script (and ddp) read: PyTorch's RANK/WORLD_SIZE/LOCAL_RANK/
    LOCAL_WORLD_SIZE, the thread share, the seeds, debug switches and the stall threshold."""
    env = os.environ
    env.update(RANK=str(info.rank), WORLD_SIZE=str(info.size), LOCAL_RANK=str(info.local_rank),
               LOCAL_WORLD_SIZE=str(info.local_size), DDP_LAUNCHER="1")
    for var in THREAD_VARS:
        env[var] = str(threads)
    if seed is not None:
        env["DDP_SEED"] = str(seed)
        env["DDP_RANK_SEED"] = str(rank_seed(seed, info.rank))
    if debug:
        env["DDP_DEBUG"] = "1"       # every collective checks all ranks call the same one
        env["DDP_SYNC_COMM"] = "1"   # the DDP reducer communicates synchronously
    if stall_seconds is not None:
        env["DDP_STALL_CHECK_SECONDS"] = str(stall_seconds)
    else:
        env.setdefault("DDP_STALL_CHECK_SECONDS", "60")


def limit_threads_late(threads: int) -> None:
    """NumPy was imported before the launcher ran (a sitecustomize or .pth file), so its BLAS
    already read the environment: cap its pools with threadpoolctl when available."""
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        sys.stderr.write(f"launcher: warning: NumPy was imported before the launcher could set "
                         f"OMP_NUM_THREADS={threads}; BLAS thread pools are not limited "
                         f"(pip install threadpoolctl to fix)\n")


# --------------------------------------------------------------------------- output

class PrefixedStream:
    """A text stream that puts ``prefix`` at the start of every line and hands only whole lines
    to the real stream, flushed, so lines of different ranks never mix (the MPI launcher
    forwards whatever bytes a rank wrote; a partial line would be cut by another rank's) and
    nothing waits in a buffer when a rank is killed. A carriage return ends a piece too (a
    progress bar redrawing its line). A partial line waits for its end, also across
    ``flush()`` (pytest's dots, ``print(..., end="", flush=True)``), and is written when the
    stream is closed or the process exits (:meth:`finish`). Output written by C code straight
    to the file descriptor is not prefixed.

    Example:
        >>> import io; s = io.StringIO(); p = PrefixedStream(s, "[rank 1] ")
        >>> _ = p.write("a\\nb"); p.flush(); s.getvalue()      # "b" waits for its line
        '[rank 1] a\\n'
        >>> _ = p.write("c\\n"); s.getvalue()
        '[rank 1] a\\n[rank 1] bc\\n'
    """

    def __init__(self, stream, prefix):
        self._stream = stream
        self._prefix = prefix
        self._partial = ""        # the end of the last write, after its last line end
        self._lock = threading.Lock()
        _open_streams.append(self)

    def write(self, text):
        with self._lock:
            pieces = (self._partial + text).replace("\r\n", "\n").split("\n")
            *lines, last = pieces
            *redrawn, self._partial = last.split("\r")
            out = "".join(f"{self._prefix}{line}\n" for line in lines)
            out += "".join(f"{self._prefix}{piece}\r" for piece in redrawn)
            if out:
                self._stream.write(out)
                self._stream.flush()
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        with self._lock:
            self._stream.flush()

    def finish(self):
        """Write a partial line that is still waiting (at exit), ended by a newline."""
        with self._lock:
            if self._partial:
                self._stream.write(f"{self._prefix}{self._partial}\n")
                self._partial = ""
            try:
                self._stream.flush()
            except (OSError, ValueError):
                pass

    def close(self):
        self.finish()

    def __getattr__(self, name):  # encoding, fileno, isatty, buffer, ...
        return getattr(self._stream, name)


_open_streams: list = []


def finish_output() -> None:
    """Write out every rank-prefixed stream's waiting partial line (at exit, before an
    abort)."""
    for stream in list(_open_streams):
        try:
            stream.finish()
        except Exception:  # a closed stream must not stop the others
            pass


atexit.register(finish_output)


def setup_output(mode: str, info: RankInfo) -> None:
    """``prefix`` (default): every line of stdout/stderr starts with ``[rank N] ``; ``all``:
    unchanged but line-buffered; ``rank0``: only rank 0's stdout is kept (unprefixed), stderr of
    every rank stays, prefixed. A single process keeps plain output."""
    os.environ["DDP_OUTPUT"] = mode  # progress bars stay off under "all" (ddp.progress)
    if info.size == 1:
        return
    prefix = f"[rank {info.rank}] "
    if mode == "all":
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(line_buffering=True)
        return
    sys.stderr = PrefixedStream(sys.stderr, prefix)
    if mode == "rank0":
        if info.rank != 0:
            sys.stdout = open(os.devnull, "w")
        elif hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(line_buffering=True)
    else:
        sys.stdout = PrefixedStream(sys.stdout, prefix)


def say(message: str) -> None:
    """A launcher message on stderr (prefixed with the rank under MPI)."""
    sys.stderr.write(f"launcher: {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- after NumPy

def rank_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``: ``seed + rank`` (different per rank, the same on every run)."""
    return int(seed) + int(rank)


def seed_everything(seed: int, rank: int) -> int:
    """Seed ddp's generator, NumPy's legacy global generator and ``random`` with this rank's
    seed; returns it. (DDP broadcasts rank 0's parameters at construction, so models still
    start identical on every rank.)"""
    import random

    import numpy as np

    import ddp
    s = rank_seed(seed, rank)
    ddp.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)
    return s


def pin_device(info: RankInfo):
    """Make GPU ``local_rank % n_gpus`` the current device of this rank (``ddp.cuda.set_device``,
    so device indices stay those of the machine) and export ``DDP_DEVICE`` (``cuda:N`` or
    ``cpu``). Returns the device index, or None without a GPU."""
    import ddp
    if not ddp.cuda.is_available():
        os.environ["DDP_DEVICE"] = "cpu"
        return None
    n = ddp.cuda.device_count()
    index = info.local_rank % n
    ddp.cuda.set_device(index)
    os.environ["DDP_DEVICE"] = f"cuda:{index}"
    if info.local_rank == 0 and info.local_size > n:
        say(f"{info.local_size} ranks share {n} GPU(s) on this machine")
    return index

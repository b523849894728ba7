"""The ``launcher`` command: run a training script on every rank of an MPI job.

Three ways in, one code path for the script:

- ``mpirun -n 4 launcher train.py ARGS`` (or ``srun``): the MPI launcher already started the
  ranks; each one sees it runs inside an MPI job and becomes a *worker*.
- ``launcher -n 4 train.py ARGS``: the launcher runs
  ``mpiexec -n 4 PYTHON -m launcher --worker ... train.py ARGS`` (the bundled MPICH's mpiexec
  installed with this Python first, then the one on PATH) and stays to pass signals on, name
  what failed and rerun the job (``--max-restarts``; ``launcher.supervise``).
- ``launcher train.py ARGS`` / ``launcher --debug train.py``: one process, no MPI.

A worker (:func:`run_worker`) sets up the rank (``launcher.ranks``), the failure handling
(``launcher.failure``), the connection to the other ranks (``launcher.peers``) and the GPU
monitor (``launcher.monitor``), then runs the script with
``runpy.run_path(script, run_name="__main__")`` and ``sys.argv = [script, *ARGS]``.

Nothing here imports NumPy before the worker has exported the thread counts.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys

from . import config, ranks

DESCRIPTION = """\
Run a ddp training script on every rank of an MPI job, with the rank environment, a fair
share of BLAS threads, one GPU per rank, per-rank seeds and rank-prefixed output, and with
failures and stalls reported instead of hanging."""

EPILOG = """\
ways to start a job:
  launcher -n 4 train.py --lr 0.1      start 4 ranks on this machine (runs mpiexec itself;
                                       the bundled MPICH by default, --mpiexec to choose)
  mpirun -n 4 launcher train.py        an MPI launcher starts the ranks; each one runs the
  mpiexec -n 4 launcher train.py       script as a worker (any MPI that mpi4py was built for)
  launcher -n 8 --hostfile hosts train.py
                                       several machines: hosts lists one machine per line
                                       (MPICH: "node1:4"; Open MPI: "node1 slots=4"); Python,
                                       ddp and the script must be at the same paths on each
  srun -n 8 launcher train.py          Slurm: srun starts the ranks (needs a PMI that Slurm
                                       and the MPI library share: srun --mpi=list); or, inside
                                       salloc/sbatch, launcher -n 8 train.py lets mpiexec
                                       place the ranks on the allocation
  launcher train.py                    one process, no MPI (like python train.py)
  launcher --debug train.py            single-process debug mode (see below)

what every rank gets before the script runs:
  RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE   PyTorch's variables (from MPI; the local rank
                                       is the rank among the ranks on the same machine)
  OMP/OPENBLAS/MKL_NUM_THREADS         --threads, else an OMP_NUM_THREADS you exported, else
                                       cores // ranks on the machine (at least 1), set before
                                       NumPy loads, so ranks x threads never exceed the cores
  the current GPU                      ddp.cuda.set_device(LOCAL_RANK % GPUs), DDP_DEVICE=cuda:N
                                       (DDP_DEVICE=cpu without a GPU)
  seeds (--seed S)                     ddp.manual_seed, numpy.random.seed and random.seed get
                                       S + RANK; exported as DDP_SEED and DDP_RANK_SEED
  dist.init_process_group()            then picks MPI by itself

output (--output):
  prefix (default)  every line of stdout and stderr starts with "[rank N] "
  rank0             only rank 0's stdout is shown (stderr of every rank stays, prefixed)
  all               every rank's output, unchanged
  A single process keeps plain output.

failures:
  An exception on any rank prints its traceback with the rank ("[rank 1] Traceback ...") and
  stops every rank at once (MPI_Abort); the job exits non-zero within seconds instead of the
  other ranks waiting forever in their next collective. sys.exit(N) on a rank stops the job
  with code N; SIGTERM/SIGINT run the script's finally blocks on every rank, then stop the
  job (a second Ctrl-C stops it at once).
  A rank that ends before the others are done (return, sys.exit(0), os._exit, a signal, a
  segfault) while they still wait in a collective is named by rank, host and pid, and the job
  stops with status 1 (launcher/peers.py).

preemption and restarts:
  ddp.training.Checkpoint saves every N steps and, on SIGTERM, at the end of the step on every
  rank, then resumes exactly; --max-restarts N reruns a failed job (torchrun's option).

torchrun:
  a script started by torchrun (WORLD_SIZE set, no MPI job) stops with an error instead of
  training alone: use launcher -n N.

stalls (--stall-seconds, env DDP_STALL_CHECK_SECONDS, default 60 under the launcher):
  When some ranks have reached a collective and others have not for that long, rank 0 prints
  a warning naming the missing ranks and the collective, and repeats it every period, so a
  stuck or much slower rank shows up instead of a silent hang. 0 turns it off.

debug mode (--debug, with or without -n):
  anomaly detection (ddp.autograd.set_detect_anomaly(True): NaN/Inf in backward names the
  op), DDP_DEBUG=1 (every tensor collective checks that all ranks call the same one with the
  same shapes and dtypes, and raises on every rank naming each rank's call otherwise),
  DDP_SYNC_COMM=1 (the DDP reducer communicates synchronously), every warning shown, and
  Python tracebacks on fatal signals (faulthandler). Without -n it is one process: the
  collectives of a single rank are no-ops, so the script's logic can be stepped through with
  pdb.

`python train.py` keeps working without the launcher: ddp never requires it.
See docs/launcher.md for more.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="launcher", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="launcher [options] script.py [script args ...]\n"
              "       mpirun -n N launcher [options] script.py [script args ...]")
    job = p.add_argument_group("starting ranks (the launcher runs mpiexec)")
    job.add_argument("-n", "--nproc", type=int, metavar="N",
                     help="number of ranks to start with mpiexec (not needed under mpirun/srun)")
    job.add_argument("--hostfile", metavar="FILE",
                     help="machines to run on, passed to mpiexec (-f for MPICH, --hostfile for "
                          "Open MPI)")
    job.add_argument("--mpiexec", metavar="PATH",
                     help="mpiexec to use (default: the one installed with this Python, i.e. "
                          "the bundled MPICH, then mpiexec/mpirun on PATH)")
    job.add_argument("--mpiexec-args", default="", metavar='"ARGS"',
                     help='extra mpiexec arguments, one string, e.g. "-ppn 4" or "--map-by '
                          'socket"')
    job.add_argument("--dry-run", action="store_true",
                     help="print what would run (the mpiexec command, or the script and its "
                          "arguments) instead of running it")
    job.add_argument("--max-restarts", type=int, default=0, metavar="N",
                     help="when the job fails, start it again, at most N times (torchrun's "
                          "option; the script resumes from its checkpoint, see "
                          "ddp.training.Checkpoint); default 0")
    rank = p.add_argument_group("every rank")
    rank.add_argument("--threads", type=int, metavar="N",
                      help="BLAS/OpenMP threads per rank (default: OMP_NUM_THREADS if exported, "
                           "else max(1, cores // ranks on the machine))")
    rank.add_argument("--seed", type=int, metavar="S",
                      help="seed every rank with S + RANK (ddp, numpy.random, random)")
    rank.add_argument("--output", choices=("prefix", "rank0", "all"), default="prefix",
                      help="prefix: '[rank N] ' before every line (default); rank0: only rank "
                           "0's stdout; all: unchanged")
    rank.add_argument("--debug", action="store_true",
                      help="anomaly detection, collective signature checks (DDP_DEBUG=1), "
                           "synchronous communication (DDP_SYNC_COMM=1); one process unless "
                           "-n is given")
    rank.add_argument("--stall-seconds", type=float, metavar="S",
                      help="warn when ranks wait longer than S seconds for others at a "
                           "collective (default: DDP_STALL_CHECK_SECONDS or 60; 0: off)")
    rank.add_argument("--monitor", type=float, metavar="SECONDS",
                      help="print each rank's GPU utilisation and memory every SECONDS "
                           "(needs nvidia-ml-py; nothing without a GPU)")
    p.add_argument("--config", metavar="FILE",
                   help="YAML file of launcher options (n, hostfile, threads, seed, output, "
                        "stall_seconds, ...); command-line options override it")
    p.add_argument("-m", "--module", action="store_true",
                   help="the script is a module name, run like python -m (e.g. pkg.train)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("script", help="the training script (or module with -m)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    return p


# --------------------------------------------------------------------------- mpiexec

def find_mpiexec(explicit=None) -> str | None:
    """``explicit``, else the mpiexec installed with this Python's scripts (where the ``mpich``
    wheel puts hydra's), else ``mpiexec``/``mpirun`` on PATH."""
    if explicit:
        return shutil.which(explicit) or explicit
    import sysconfig
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        for name in ("mpiexec", "mpirun"):
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return shutil.which("mpiexec") or shutil.which("mpirun")


def mpi_flavour(mpiexec: str) -> str:
    """'openmpi' or 'mpich' (hydra: MPICH, Intel MPI, MVAPICH), from ``mpiexec --version``."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return "mpich"
    return "openmpi" if ("Open MPI" in out or "OpenRTE" in out) else "mpich"


def worker_args(args) -> list[str]:
    """The options a worker needs, as command-line arguments."""
    out = ["--output", args.output]
    if args.threads is not None:
        out += ["--threads", str(args.threads)]
    if args.seed is not None:
        out += ["--seed", str(args.seed)]
    if args.debug:
        out.append("--debug")
    if args.stall_seconds is not None:
        out += ["--stall-seconds", str(args.stall_seconds)]
    if args.monitor is not None:
        out += ["--monitor", str(args.monitor)]
    if args.module:
        out.append("--module")
    return out


def mpiexec_command(args, mpiexec: str, flavour: str) -> list[str]:
    cmd = [mpiexec]
    if flavour == "openmpi":
        cmd.append("--oversubscribe")  # MPICH runs more ranks than cores without asking
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
    if args.nproc is not None:
        cmd += ["-n", str(args.nproc)]
    if args.hostfile:
        cmd += ["--hostfile" if flavour == "openmpi" else "-f", args.hostfile]
    cmd += shlex.split(args.mpiexec_args)
    cmd += [sys.executable, "-m", "launcher", "--worker", *worker_args(args), args.script,
            *args.args]
    return cmd


def check_job_args(args) -> str | None:
    """What is wrong with the job options, before anything starts (None when nothing)."""
    if args.nproc is not None and args.nproc < 1:
        return f"-n must be at least 1, got {args.nproc}"
    if args.max_restarts < 0:
        return f"--max-restarts must be 0 or more, got {args.max_restarts}"
    if args.hostfile and not os.path.isfile(args.hostfile):
        return f"hostfile {args.hostfile!r} does not exist"
    if args.threads is not None and args.threads < 1:
        return f"--threads must be at least 1, got {args.threads}"
    return None


def start_job(args) -> int:
    """Run mpiexec with a worker per rank under :mod:`launcher.supervise` (signals passed on,
    restarts, what failed); its exit status becomes ours."""
    from . import supervise
    if ranks.in_mpi_job():
        sys.stderr.write("launcher: -n/--hostfile given, but this process is already a rank of "
                         "an MPI job; use either `mpirun -n N launcher script.py` or "
                         "`launcher -n N script.py`\n")
        return 2
    mpiexec = find_mpiexec(args.mpiexec)
    if mpiexec is None:
        sys.stderr.write("launcher: no mpiexec found (pip install mpich, or --mpiexec PATH)\n")
        return 2
    cmd = mpiexec_command(args, mpiexec, mpi_flavour(mpiexec))
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    return supervise.run(cmd, max_restarts=args.max_restarts)


def single_with_restarts(args) -> int:
    """``launcher --max-restarts N train.py``: one process, rerun by the supervisor."""
    from . import supervise
    cmd = [sys.executable, "-m", "launcher", *worker_args(args), args.script, *args.args]
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    return supervise.run(cmd, max_restarts=args.max_restarts)


def dry_run_worker(args) -> int:
    """``--dry-run`` without ``-n``: say what this process would run, run nothing."""
    job = ranks.environment().detect()
    kind = "module" if args.module else "script"
    where = (f"as rank {job.rank} of {job.mpi_size} ({job.mpi_source})" if job.in_mpi_job
             else "in this process (no MPI)")
    print(f"launcher: dry run: would run {kind} {shlex.join([args.script, *args.args])} "
          f"{where} with options {shlex.join(worker_args(args))}")
    return 0


# --------------------------------------------------------------------------- worker

def run_worker(args) -> int:
    """Set up this rank, run the script, and turn its failure into the job's failure."""
    from . import failure

    numpy_early = "numpy" in sys.modules
    info = ranks.discover(use_mpi=args.worker or ranks.in_mpi_job())
    try:  # torchrun's WORLD_SIZE without MPI, or sizes that disagree: never train alone
        ranks.environment().check(mpi_size=info.size if info.comm is not None else None,
                                  what="launcher")
    except RuntimeError as exc:
        ranks.say(str(exc).partition(": ")[2])
        return 2
    threads = ranks.thread_share(args.threads, info.local_size)
    ranks.set_rank_env(info, threads, seed=args.seed, debug=args.debug,
                       stall_seconds=args.stall_seconds)
    ranks.setup_output(args.output, info)
    failure.install(info.rank, info.size, info.comm)
    peers = None
    if info.comm is not None and info.size > 1 and os.environ.get("DDP_WATCH_PEERS") != "0":
        from . import peers as peers_module
        job_dir = os.environ.get("DDP_JOB_DIR")
        peers = peers_module.start(
            info.comm, info.rank, info.size, abort=failure.abort, say=ranks.say,
            events=os.path.join(job_dir, "events") if job_dir and info.rank == 0 else None)
        failure.set_peers(peers)
        if job_dir and os.path.isdir(job_dir) and not args.debug:
            failure.crash_reports_to(os.path.join(job_dir, f"fault-{info.rank}"))
    try:
        if numpy_early:
            ranks.limit_threads_late(threads)
        if args.debug:
            import faulthandler
            import warnings
            faulthandler.enable()
            warnings.simplefilter("default")
        # From here on NumPy may load: the thread variables are set.
        import ddp
        device = ranks.pin_device(info)
        if args.seed is not None:
            ranks.seed_everything(args.seed, info.rank)
        if args.debug:
            ddp.autograd.set_detect_anomaly(True)
        if args.monitor is not None and args.monitor > 0:
            from . import monitor
            monitor.start(args.monitor, device, announce=info.local_rank == 0)
        run_script(args.script, args.args, module=args.module)
    except BaseException as exc:  # noqa: B902 - every way out of the script is handled here
        code = failure.fail(exc)   # a failing rank of a job stops the job here
        how, where = failure.how_it_ended(exc), failure.where(exc)
    else:
        code, how, where = 0, "returned", f"the end of {args.script}"
    failure.finished(code, how, where)   # with other ranks: wait until every rank has finished
    return code


def run_script(script: str, argv: list[str], module: bool = False) -> None:
    """Run ``script`` as ``__main__`` with ``sys.argv = [script, *argv]`` (as ``python script``
    would: its directory first on ``sys.path``)."""
    import runpy
    if module:
        sys.argv = [script, *argv]
        sys.path.insert(0, os.getcwd())
        runpy.run_module(script, run_name="__main__", alter_sys=True)
        return
    if not os.path.exists(script):
        raise SystemExit(f"launcher: can't open file {script!r}: no such file")
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


def main(argv=None) -> int:
    """Entry point of the ``launcher`` console script and of ``python -m launcher``."""
    parser = build_parser()
    args = config.parse_args(parser, argv)
    problem = check_job_args(args)
    if problem:
        parser.error(problem)
    if args.worker:
        return run_worker(args)
    if args.nproc is not None or args.hostfile:
        return start_job(args)
    if args.max_restarts:
        if ranks.in_mpi_job():
            parser.error("--max-restarts needs the launcher to start the job (`launcher -n N "
                         "--max-restarts M script.py`); under mpirun/srun the MPI launcher owns "
                         "the ranks")
        return single_with_restarts(args)
    if args.dry_run:
        return dry_run_worker(args)
    return run_worker(args)  # under mpirun/srun, or a single process


if __name__ == "__main__":
    sys.exit(main())

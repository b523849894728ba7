"""Starting ``ddp-bench`` jobs: each one is ``launcher -n P -m ddp.bench.worker ...``, built by
the launcher's own code (:func:`launcher.cli.build_parser`, ``find_mpiexec``, ``mpi_flavour``,
``mpiexec_command``), so a benchmark runs where a training job runs: the bundled MPICH by
default, the cluster's mpiexec with ``--mpiexec``, several machines with ``--hostfile``, one
BLAS thread per rank, a crash on any rank stopping the job with its traceback.

While a job runs, the CPU time that *other* processes used is read from /proc/stat, so that a
figure measured on a busy machine says so (``background_cores``); ``wait_idle`` starts a job on
a quiet machine.

Example:
    >>> cmd = job_command(2, ["--spec", "s.json", "--out", "o.json"], mpiexec="mpiexec")
    >>> cmd[cmd.index("-n") + 1], cmd[-6:-4]
    ('2', ['--module', 'ddp.bench.worker'])
"""
from __future__ import annotations

import json
import os
import resource
import shlex
import socket
import subprocess
import sys
import tempfile
import time

from launcher import cli as launcher_cli

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def job_command(ranks, worker_args, mpiexec=None, hostfile=None, mpiexec_args=""):
    """The mpiexec command line of a ``ranks``-rank worker job, as the launcher builds it."""
    argv = ["-n", str(ranks), "--threads", "1", "--output", "rank0"]
    argv += ["--mpiexec", mpiexec] if mpiexec else []
    argv += ["--hostfile", hostfile] if hostfile else []
    argv += ["--mpiexec-args", mpiexec_args] if mpiexec_args else []
    args = launcher_cli.build_parser().parse_args(
        argv + ["-m", "ddp.bench.worker", *worker_args])
    found = launcher_cli.find_mpiexec(args.mpiexec)
    if found is None:
        raise SystemExit("ddp-bench: no mpiexec found (pip install mpich, or --mpiexec PATH)")
    return launcher_cli.mpiexec_command(args, found, launcher_cli.mpi_flavour(found))


def run(spec: dict, ranks: int, opts) -> dict:
    """Run one job measuring ``spec`` (see :mod:`ddp.bench.worker`) on ``ranks`` ranks and
    return what its rank 0 wrote, plus ``background_cores`` and ``wall_s``. ``opts`` carries
    ``mpiexec``, ``hostfile``, ``mpiexec_args`` and ``wait_idle`` (seconds, 0: do not wait)."""
    with tempfile.TemporaryDirectory(prefix="ddp-bench-") as tmp:
        spec_file, out_file = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        with open(spec_file, "w") as f:
            json.dump(spec, f)
        cmd = job_command(ranks, ["--spec", spec_file, "--out", out_file],
                          getattr(opts, "mpiexec", None), getattr(opts, "hostfile", None),
                          getattr(opts, "mpiexec_args", ""))
        env = job_env()
        wait = getattr(opts, "wait_idle", 0) or 0
        for attempt in range(3 if wait else 1):
            if wait and not wait_idle(wait):
                print(f"(machine still busy after waiting {wait:g} s)", flush=True)
            shown = [("python" if c == sys.executable else c) for c in cmd[:-4]]
            progress = env.get("DDP_PROGRESS") == "1"  # the worker's bar takes the next line
            print(f"$ {shlex.join(shown)}  ({spec['framework']} {spec['task']})",
                  end="\n" if progress else "", flush=True)
            t0, busy0 = time.time(), busy_cpu_s()
            mine0 = _children_cpu_s()
            proc = subprocess.run(cmd, env=env)
            wall = time.time() - t0
            others = max(0.0, busy_cpu_s() - busy0 - (_children_cpu_s() - mine0)) / wall
            print(f"   [{wall:.1f} s; other processes used {others:.2f} cores]", flush=True)
            if proc.returncode != 0:
                raise SystemExit(f"ddp-bench: the {ranks}-rank {spec['framework']} job failed "
                                 f"(exit status {proc.returncode}): {shlex.join(cmd)}")
            if others <= 0.1:
                break
        with open(out_file) as f:
            result = json.load(f)
    result["background_cores"] = others
    result["wall_s"] = wall
    return result


def job_env() -> dict:
    """The environment of a job: one BLAS thread per rank, a free port for gloo, the same ddp
    and launcher as this process (first on PYTHONPATH), a progress bar on rank 0 when this
    process writes to a terminal."""
    import ddp
    root = os.path.dirname(os.path.dirname(os.path.abspath(ddp.__file__)))
    env = dict(os.environ, **ONE_THREAD, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.pop("DDP_SYNC_COMM", None)
    if "DDP_PROGRESS" not in env and sys.stderr.isatty():
        env["DDP_PROGRESS"] = "1"  # the worker's stderr is a pipe; ours is a terminal
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def busy_cpu_s() -> float:
    """CPU seconds the whole machine (all processes) has used, from /proc/stat (0 where
    there is none)."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, idle, iowait, irq, softirq = map(int, f.readline().split()[1:8])
    except OSError:
        return 0.0
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_idle(limit_s: float) -> bool:
    """Wait (at most ``limit_s``) for two consecutive seconds in which the machine is idle."""
    quiet, end = 0, time.time() + limit_s
    while quiet < 2 and time.time() < end:
        b0 = busy_cpu_s()
        time.sleep(1)
        quiet = quiet + 1 if busy_cpu_s() - b0 < 0.15 else 0
    return quiet >= 2

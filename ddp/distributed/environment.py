"""Which job started this process: the one place that reads the launchers' environment.

The ``launcher`` (before NumPy loads: it reads this file without importing ``ddp``) and
``init_process_group`` both ask :func:`detect`, so they cannot disagree about whether a process
is a rank of an MPI job. Only the MPI launchers' own variables make an MPI job:

====================  =========================================================================
``OMPI_COMM_WORLD_SIZE``  Open MPI's ``mpirun`` (and PRRTE)
``PMI_SIZE``              MPICH/Intel MPI hydra (``mpiexec``), Slurm's PMI-1/PMI-2 plugins
``PMIX_SIZE``             PMIx launchers
``MV2_COMM_WORLD_SIZE``   MVAPICH
``MPI_LOCALNRANKS``       hydra: ranks on this machine (more than one means a job)
``SLURM_STEP_NUM_TASKS``  a Slurm *step* started by ``srun``. ``SLURM_NTASKS`` describes the
                          allocation and is set in the sbatch batch step too, where the script
                          is one process (which may run ``launcher -n 8``): it does not count.
====================  =========================================================================

PyTorch's variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``LOCAL_RANK``; torchrun adds
``TORCHELASTIC_RUN_ID``) never make an MPI job: ddp's ranks talk over MPI, so a script started
by torchrun would train alone. :func:`check` turns that, and a ``WORLD_SIZE`` that differs from
MPI's, into an error that says what to run instead.

This module imports nothing outside the standard library.

Example:
    >>> detect({"PMI_SIZE": "4", "PMI_RANK": "1"}).mpi_size
    4
    >>> detect({"SLURM_NTASKS": "8", "SLURM_JOB_ID": "1"}).in_mpi_job   # an sbatch script
    False
    >>> detect({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "3"}).mpi_rank   # under srun
    3
"""
from __future__ import annotations

import os
from dataclasses import dataclass

def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, which honours the cgroup cpuset or
    ``taskset`` a cluster job runs under (``os.cpu_count()`` counts the whole machine's).

    Example:
        >>> 1 <= usable_cores() <= (os.cpu_count() or 1)
        True
    """
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


# (size variable, rank variable, who sets them), in the order they are trusted.
MPI_VARIABLES = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "Open MPI"),
    ("PMI_SIZE", "PMI_RANK", "an MPICH-style mpiexec (hydra) or Slurm's PMI"),
    ("PMIX_SIZE", "PMIX_RANK", "a PMIx launcher"),
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MVAPICH"),
    ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "srun"),
    ("MPI_LOCALNRANKS", "MPI_LOCALRANKID", "hydra"),
)
TORCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                   "MASTER_PORT", "TORCHELASTIC_RUN_ID", "GROUP_RANK")


def _int(value):
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class JobEnvironment:
    """What the environment says about this process's job.

    ``mpi_size``/``mpi_rank``/``mpi_source``: from the first MPI launcher variable set (None
    without one; ``mpi_rank`` may be None where a launcher sets only the size).
    ``torch_size``/``torch_rank``: ``WORLD_SIZE``/``RANK`` (torchrun's, or the ``launcher``'s
    own copy of MPI's). ``torchrun``: torchrun's or torch.distributed.launch's variables are
    there (``TORCHELASTIC_RUN_ID`` or ``MASTER_ADDR``). ``launcher``: ddp's ``launcher`` set
    this rank up (``DDP_LAUNCHER=1``)."""
    mpi_size: int | None = None
    mpi_rank: int | None = None
    mpi_source: str | None = None
    torch_size: int | None = None
    torch_rank: int | None = None
    torchrun: bool = False
    launcher: bool = False

    @property
    def in_mpi_job(self) -> bool:
        """An MPI launcher started this process as one of several ranks."""
        return self.mpi_size is not None and self.mpi_size > 1

    @property
    def rank(self) -> int:
        """The best guess of this process's global rank before MPI is initialised (0 alone)."""
        for value in (self.mpi_rank if self.in_mpi_job else None, self.torch_rank):
            if value is not None:
                return value
        return 0


def detect(env=None) -> JobEnvironment:
    """Read the job environment (``os.environ`` by default).

    Example:
        >>> detect({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}).rank
        1
        >>> e = detect({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"})
        >>> e.in_mpi_job, e.torchrun, e.torch_size
        (False, True, 2)
    """
    env = os.environ if env is None else env
    size = rank = source = None
    for size_var, rank_var, who in MPI_VARIABLES:
        value = _int(env.get(size_var))
        if value is not None and value > 0:
            size, rank, source = value, _int(env.get(rank_var)), f"{size_var} ({who})"
            if size_var == "MPI_LOCALNRANKS":
                rank = None  # a local count and a local rank: not the world's
            break
    return JobEnvironment(
        mpi_size=size, mpi_rank=rank, mpi_source=source,
        torch_size=_int(env.get("WORLD_SIZE")), torch_rank=_int(env.get("RANK")),
        torchrun=bool(env.get("TORCHELASTIC_RUN_ID") or env.get("MASTER_ADDR")),
        launcher=env.get("DDP_LAUNCHER") == "1")


def in_mpi_job(env=None) -> bool:
    """True when an MPI launcher (mpirun/mpiexec/srun) started this process as one of several
    ranks; PyTorch's variables alone never count.

    Example:
        >>> in_mpi_job({"PMI_SIZE": "1", "WORLD_SIZE": "4", "SLURM_NTASKS": "8"})
        False
    """
    return detect(env).in_mpi_job


def check(env=None, mpi_size=None, what="init_process_group") -> JobEnvironment:
    """Refuse a job environment that would silently train on fewer ranks than meant.

    - ``WORLD_SIZE`` > 1 without an MPI job (a script started by ``torchrun``, or by hand with
      ``WORLD_SIZE`` exported): ddp's ranks are MPI ranks, so each process would train alone;
    - ``WORLD_SIZE`` different from the MPI job's size (the environment's, or ``mpi_size``: the
      size of an initialised ``COMM_WORLD``);
    - an MPI launcher that announces several ranks while MPI itself runs one (``srun`` without a
      PMI the MPI library shares, a second MPI library's ``mpirun``).

    Raises RuntimeError saying what to run instead; returns the :class:`JobEnvironment`.

    Example:
        >>> check({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h"})
        Traceback (most recent call last):
        ...
        RuntimeError: init_process_group: WORLD_SIZE=2 and RANK=1 say this process is one of 2 ranks started by torchrun (or torch.distributed.launch), but it is not part of an MPI job, so it would train alone. ddp's ranks talk over MPI: start the script with `launcher -n 2 script.py ARGS` (or `mpirun -n 2 launcher script.py ARGS`) instead of torchrun; `launcher --help` has the options that match torchrun's.
    """
    job = detect(env)
    size = job.torch_size
    if size is not None and size > 1 and not job.in_mpi_job and (mpi_size or 1) <= 1:
        who = ("torchrun (or torch.distributed.launch)" if job.torchrun
               else "whatever exported WORLD_SIZE")
        rank = "" if job.torch_rank is None else f" and RANK={job.torch_rank}"
        raise RuntimeError(
            f"{what}: WORLD_SIZE={size}{rank} say this process is one of {size} ranks started "
            f"by {who}, but it is not part of an MPI job, so it would train alone. ddp's ranks "
            f"talk over MPI: start the script with `launcher -n {size} script.py ARGS` (or "
            f"`mpirun -n {size} launcher script.py ARGS`) instead of torchrun; `launcher "
            f"--help` has the options that match torchrun's.")
    real = mpi_size if mpi_size is not None else job.mpi_size
    if size is not None and real is not None and size != real and (size > 1 or real > 1):
        raise RuntimeError(
            f"{what}: WORLD_SIZE={size} but the MPI job has {real} ranks "
            f"({'COMM_WORLD' if mpi_size is not None else job.mpi_source}); the environment of "
            f"another launcher leaked into this job. Unset WORLD_SIZE/RANK (the `launcher` sets "
            f"them from MPI) or start every rank with the same launcher.")
    if mpi_size is not None and job.in_mpi_job and mpi_size != job.mpi_size:
        raise RuntimeError(
            f"{what}: {job.mpi_source} announces {job.mpi_size} ranks, but MPI started this "
            f"process in a job of {mpi_size}: the MPI library and the launcher do not talk to "
            f"each other (under Slurm, `srun --mpi=list` shows the PMI plugins; or use "
            f"`launcher -n {job.mpi_size} script.py` inside the allocation).")
    return job

"""``launcher``: run a ddp training script on every rank of an MPI job.

    mpirun -n 4 launcher train.py [script args]     # an MPI launcher starts the ranks
    launcher -n 4 train.py [script args]            # the launcher runs mpiexec itself
    launcher --debug train.py                       # one process, debug checks on

Each rank gets RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE, a share of the BLAS threads, its
GPU, an optional per-rank seed and rank-prefixed output; an exception on any rank stops the
whole job, and ranks that do not reach a collective are reported by the stall inspector
(``ddp.distributed.stall``). ``launcher --help`` and docs/launcher.md explain it all.

Modules: ``cli`` (arguments, mpiexec, the worker), ``supervise`` (the launcher's process while
mpiexec runs: signals, restarts, what failed), ``ranks`` (environment, threads, output,
device, seeds), ``failure`` (traceback with the rank, MPI_Abort, signals), ``peers`` (ranks
that vanish, the exit barrier), ``monitor`` (GPU utilisation via NVML). Importing this package imports neither NumPy nor ddp: the worker must
export the thread counts before NumPy loads.
"""

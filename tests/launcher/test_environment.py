"""``ddp.distributed.environment``: the one reader of the launchers' variables, shared by the
``launcher`` and ``init_process_group``; and what ``init_process_group`` does with it (torchrun
without MPI, sizes that disagree, the gloo and nccl backend names)."""
import subprocess
import sys
import textwrap

import pytest

from ddp.distributed import environment as envmod
from launcher import ranks
from tests.launcher.test_launcher import clean_env, launcher, needs_mpi

# What each launcher exports for rank 1 of a 4-rank job (the variables that matter here).
LAUNCHERS = {
    "openmpi": {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "1",
                "OMPI_COMM_WORLD_LOCAL_RANK": "1"},
    "hydra": {"PMI_SIZE": "4", "PMI_RANK": "1", "MPI_LOCALNRANKS": "2", "MPI_LOCALRANKID": "1",
              "HYDRA_CONTROL_FD": "9"},
    "pmix": {"PMIX_SIZE": "4", "PMIX_RANK": "1", "PMIX_NAMESPACE": "job"},
    "mvapich": {"MV2_COMM_WORLD_SIZE": "4", "MV2_COMM_WORLD_RANK": "1"},
    "srun step": {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4",
                  "SLURM_PROCID": "1", "SLURM_STEP_ID": "0"},
}


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_every_mpi_launcher_is_a_job_with_its_rank(name):
    job = envmod.detect(LAUNCHERS[name])
    assert job.in_mpi_job and job.mpi_size == 4 and job.rank == 1, (name, job)
    assert ranks.in_mpi_job(LAUNCHERS[name])  # the launcher asks the same module


def test_hydra_local_count_alone_is_a_job_without_a_world_rank():
    job = envmod.detect({"MPI_LOCALNRANKS": "2", "MPI_LOCALRANKID": "1"})
    assert job.in_mpi_job and job.mpi_rank is None


def test_sbatch_batch_step_is_not_a_rank():
    """Inside an sbatch script the allocation's SLURM_NTASKS is set, but the script is one
    process: it must be free to run `launcher -n 8` (the old detection in ddp.distributed
    counted SLURM_NTASKS and disagreed with the launcher's)."""
    batch = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8", "SLURM_NPROCS": "8", "SLURM_NNODES": "2"}
    assert not envmod.detect(batch).in_mpi_job
    assert not ranks.in_mpi_job(batch)
    assert envmod.detect({**batch, "SLURM_STEP_NUM_TASKS": "1"}).in_mpi_job is False  # srun -n 1


def test_single_rank_and_empty_environments():
    for env in ({}, {"PMI_SIZE": "1", "PMI_RANK": "0"}, {"WORLD_SIZE": "1", "RANK": "0"},
                {"PMI_SIZE": "x"}):
        assert not envmod.detect(env).in_mpi_job, env
        envmod.check(env)  # nothing to refuse
    assert envmod.detect({}).rank == 0


def test_pytorch_variables_never_make_an_mpi_job():
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "none"}
    job = envmod.detect(torchrun)
    assert not job.in_mpi_job and job.torchrun and job.torch_size == 2 and job.rank == 1


def test_torchrun_without_mpi_is_refused_with_advice():
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1"}
    with pytest.raises(RuntimeError, match=r"WORLD_SIZE=2 and RANK=1.*torchrun.*train alone"
                                           r".*launcher -n 2"):
        envmod.check(torchrun)
    with pytest.raises(RuntimeError, match="whatever exported WORLD_SIZE"):
        envmod.check({"WORLD_SIZE": "3"})


def test_world_size_that_differs_from_mpi_is_refused():
    with pytest.raises(RuntimeError, match=r"WORLD_SIZE=2 but the MPI job has 4 ranks.*PMI_SIZE"):
        envmod.check({"PMI_SIZE": "4", "PMI_RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(RuntimeError, match=r"WORLD_SIZE=2 but the MPI job has 3 ranks "
                                           r"\(COMM_WORLD\)"):
        envmod.check({"PMI_SIZE": "3", "WORLD_SIZE": "2"}, mpi_size=3)
    # srun announces 4 ranks but MPI runs each process alone (no shared PMI)
    with pytest.raises(RuntimeError, match=r"SLURM_STEP_NUM_TASKS.*announces 4 ranks.*job of 1"
                                           r".*srun --mpi=list"):
        envmod.check({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "0"}, mpi_size=1)
    # the launcher's own copy agrees with MPI: accepted
    envmod.check({"PMI_SIZE": "2", "WORLD_SIZE": "2", "RANK": "1", "DDP_LAUNCHER": "1"},
                 mpi_size=2)


def _python(code, env_extra=(), timeout=120):
    env = clean_env()
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=timeout)


TORCHRUN_ENV = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
                "TORCHELASTIC_RUN_ID": "none"}


def test_script_started_by_torchrun_stops_instead_of_training_alone():
    proc = _python("""
        import ddp.distributed as dist
        dist.init_process_group()
        print("trained alone")
    """, TORCHRUN_ENV)
    assert proc.returncode != 0 and "trained alone" not in proc.stdout
    assert "RuntimeError: init_process_group: WORLD_SIZE=2" in proc.stderr
    assert "launcher -n 2" in proc.stderr


def test_launcher_refuses_a_torchrun_environment(tmp_path):
    path = tmp_path / "s.py"
    path.write_text("print('ran')\n")
    env = clean_env()
    env.update(TORCHRUN_ENV)
    code, out, err, _ = launcher(path, env=env)
    assert code == 2 and "ran" not in out
    assert "launcher: WORLD_SIZE=2 and RANK=0" in err and "launcher -n 2" in err


@needs_mpi
def test_launcher_refuses_world_size_that_differs_from_mpi(tmp_path):
    path = tmp_path / "s.py"
    path.write_text("print('ran')\n")
    env = clean_env()
    env["WORLD_SIZE"] = "3"
    code, out, err, _ = launcher("-n", 2, path, env=env, timeout=120)
    assert code != 0 and "ran" not in out
    assert "WORLD_SIZE=3 but the MPI job has 2 ranks" in err


def test_gloo_is_mpi_without_a_warning_and_nccl_needs_a_gpu():
    proc = _python("""
        import warnings
        warnings.simplefilter("error")
        import ddp, ddp.distributed as dist
        dist.init_process_group(backend="gloo")
        print(dist.get_backend(), dist.get_world_size(), type(dist.get_communicator()).__name__)
        dist.destroy_process_group()
        ddp.backend.cuda_is_available = lambda: False   # what a CPU-only machine answers
        try:
            dist.init_process_group(backend="nccl")
        except RuntimeError as exc:
            print("nccl:", exc)
        assert not dist.is_initialized()
    """)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first == "gloo 1 MPICommunicator"
    assert second.startswith("nccl: init_process_group(backend='nccl'): NCCL needs a CUDA GPU")
    assert "backend='gloo'" in second


def test_unknown_backend_names_the_choices():
    proc = _python("""
        import ddp.distributed as dist
        dist.init_process_group(backend="ucc")
    """)
    assert proc.returncode != 0
    assert "ValueError: init_process_group: unknown backend 'ucc'" in proc.stderr

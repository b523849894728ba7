"""The ``launcher`` command, run as a subprocess the way users run it (these are plain pytest
tests: the launcher starts mpiexec itself), plus unit tests of its pieces.

Every job runs in its own session and is killed as a whole if it outlives its timeout, so a
hang fails the test instead of leaving ranks behind.
"""
import io
import json
import os
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
from types import SimpleNamespace

import pytest

from launcher import cli, failure, monitor, ranks

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MPIEXEC = cli.find_mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")

# Variables of an enclosing MPI job, scheduler or test setup that must not leak into the jobs.
_STRIP_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_", "SLURM_", "MV2_", "DDP_")
_STRIP = set(ranks.THREAD_VARS) | {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}


def clean_env():
    env = {k: v for k, v in os.environ.items()
           if k not in _STRIP and not k.startswith(_STRIP_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def run(cmd, timeout=30, env=None, cwd=None):
    """Run ``cmd``; returns (returncode, stdout, stderr, seconds). Kills the whole session
    (mpiexec and every rank) and fails if it takes longer than ``timeout``."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or clean_env(), cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd} did not finish in {timeout} s\nstdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err, time.monotonic() - start


def launcher(*args, **kw):
    return run([sys.executable, "-m", "launcher", *map(str, args)], **kw)


def script(tmp_path, body, name="script.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return str(path)


REPORT = """
    import json, os, random, sys
    import numpy as np
    import ddp
    import ddp.distributed as dist
    dist.init_process_group()
    try:
        from threadpoolctl import threadpool_info
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    except ImportError:
        blas = None
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "DDP_SEED", "DDP_RANK_SEED", "DDP_DEVICE",
            "DDP_STALL_CHECK_SECONDS", "DDP_DEBUG", "DDP_SYNC_COMM")
    report = {k: os.environ.get(k) for k in keys}
    report.update(rank=dist.get_rank(), world=dist.get_world_size(), blas=blas, argv=sys.argv,
                  ddp=ddp.rand(2).tolist(), np=float(np.random.rand()), py=random.random(),
                  anomaly=ddp.autograd.is_anomaly_enabled(),
                  mpi="mpi4py.MPI" in sys.modules)
    print("REPORT " + json.dumps(report))
    sys.exit(0)
"""


def reports(stdout):
    """{rank: report} from the REPORT lines (prefixed or not)."""
    out = {}
    for line in stdout.splitlines():
        if "REPORT " in line:
            prefix, _, payload = line.partition("REPORT ")
            r = json.loads(payload)
            out[r["rank"]] = dict(r, prefix=prefix)
    return out


# --------------------------------------------------------------------------- jobs

@needs_mpi
def test_rank_env_threads_seeds_and_output(tmp_path):
    path = script(tmp_path, REPORT)
    rc, out, err, _ = launcher("-n", 2, "--seed", 7, path, "--lr", "0.1", cwd=tmp_path)
    assert rc == 0, err
    got = reports(out)
    assert sorted(got) == [0, 1], out
    share = str(max(1, ranks.usable_cores() // 2))
    for r, rep in got.items():
        assert rep["prefix"] == f"[rank {r}] "
        assert (rep["RANK"], rep["WORLD_SIZE"]) == (str(r), "2")
        assert (rep["LOCAL_RANK"], rep["LOCAL_WORLD_SIZE"]) == (str(r), "2")
        assert (rep["world"], rep["argv"]) == (2, [path, "--lr", "0.1"])
        assert rep["OMP_NUM_THREADS"] == rep["OPENBLAS_NUM_THREADS"] == share
        if rep["blas"] is not None:  # NumPy's BLAS really runs with the share
            assert set(rep["blas"]) <= {int(share)}
        assert (rep["DDP_SEED"], rep["DDP_RANK_SEED"]) == ("7", str(7 + r))
        assert rep["DDP_DEVICE"] == "cpu" or rep["DDP_DEVICE"].startswith("cuda:")
        assert rep["DDP_STALL_CHECK_SECONDS"] == "60" and rep["DDP_DEBUG"] is None
    for key in ("ddp", "np", "py"):  # seeds differ per rank
        assert got[0][key] != got[1][key]

    # the same seed again, and an explicit thread count: the same numbers on every rank
    rc, out2, err, _ = launcher("-n", 2, "--seed", 7, "--threads", 1, path, "--lr", "0.1",
                                cwd=tmp_path)
    assert rc == 0, err
    again = reports(out2)
    for r in (0, 1):
        assert again[r]["OMP_NUM_THREADS"] == "1"
        for key in ("ddp", "np", "py"):
            assert again[r][key] == got[r][key]


@needs_mpi
def test_under_mpiexec_the_launcher_is_a_worker(tmp_path):
    """``mpiexec -n 2 launcher script.py``: the ranks find out they are ranks, and --output
    rank0 keeps only rank 0's stdout, unprefixed."""
    path = script(tmp_path, REPORT)
    exe = os.path.join(sysconfig.get_path("scripts"), "launcher")
    entry = [exe] if os.path.exists(exe) else [sys.executable, "-m", "launcher"]
    rc, out, err, _ = run([MPIEXEC, "-n", "2", *entry, "--output", "rank0", path])
    assert rc == 0, err
    got = reports(out)
    assert list(got) == [0] and got[0]["prefix"] == "", out
    assert got[0]["WORLD_SIZE"] == "2" and got[0]["world"] == 2 and got[0]["mpi"]


@needs_mpi
def test_exception_on_one_rank_stops_every_rank(tmp_path):
    path = script(tmp_path, """
        import time
        import ddp, ddp.distributed as dist
        dist.init_process_group()
        if dist.get_rank() == 1:
            time.sleep(0.5)
            raise ValueError("boom on rank 1")
        t = ddp.ones(3)
        dist.all_reduce(t)          # rank 0 and 2 would wait here forever
        dist.barrier()
        print("unreachable")
    """)
    rc, out, err, seconds = launcher("-n", 3, path, timeout=30)
    assert rc != 0
    assert seconds < 10
    assert "[rank 1] Traceback (most recent call last):" in err
    assert "[rank 1] ValueError: boom on rank 1" in err
    assert 'script.py", line 6, in <module>' in err
    assert "runpy" not in err and "launcher/cli.py" not in err  # only the user's frames
    assert "unreachable" not in out


@needs_mpi
def test_sys_exit_code_of_one_rank_ends_the_job(tmp_path):
    path = script(tmp_path, """
        import sys, time
        import ddp.distributed as dist
        dist.init_process_group()
        if dist.get_rank() == 1:
            time.sleep(0.3)
            sys.exit(3)
        dist.barrier()
    """)
    rc, out, err, seconds = launcher("-n", 2, path, timeout=30)
    assert rc == 3, err
    assert seconds < 10
    assert "rank 1 exited with code 3" in err


@needs_mpi
def test_stall_warning_names_the_late_rank(tmp_path):
    path = script(tmp_path, """
        import time
        import ddp, ddp.distributed as dist
        dist.init_process_group()
        t = ddp.ones(2)
        dist.barrier()
        if dist.get_rank() == 1:
            time.sleep(3.5)
        dist.all_reduce(t)
        print("sum", t.tolist())
        dist.destroy_process_group()
    """)
    rc, out, err, seconds = launcher("-n", 2, "--stall-seconds", 1, path, timeout=30)
    assert rc == 0, err
    assert "[rank 0] sum [2.0, 2.0]" in out and "[rank 1] sum [2.0, 2.0]" in out
    warnings = [line for line in err.splitlines() if "stall inspector" in line]
    assert warnings, err
    assert all(line.startswith("[rank 0] ") for line in warnings)
    assert "collective #2 (Allreduce float32 (2,) op=sum): rank 0 has waited 1 s for rank 1" \
        in warnings[0]
    assert "[rank 0]   rank 1 is computing (its last collective, #1: Barrier at " in err
    assert len(warnings) >= 2  # repeated every period while the rank is missing


@needs_mpi
def test_debug_mode_catches_mismatched_collectives(tmp_path):
    path = script(tmp_path, """
        import ddp, ddp.distributed as dist
        dist.init_process_group()
        t = ddp.ones(3 if dist.get_rank() == 0 else 4)
        dist.all_reduce(t)
        print("unreachable")
    """)
    rc, out, err, seconds = launcher("--debug", "-n", 2, path, timeout=30)
    assert rc != 0
    assert seconds < 10
    assert "different collectives" in err
    for r in (0, 1):  # every rank reports, naming both ranks' calls
        assert f"[rank {r}] RuntimeError: ranks called different collectives" in err
        assert f"[rank {r}]   rank 0: ('all_reduce', ((3,), 'float32'))" in err
        assert f"[rank {r}]   rank 1: ('all_reduce', ((4,), 'float32'))" in err
    assert "unreachable" not in out


def test_debug_mode_is_one_process_with_checks(tmp_path):
    path = script(tmp_path, REPORT)
    rc, out, err, _ = launcher("--debug", "--monitor", 0.1, path, "x")
    assert rc == 0, err
    rep = reports(out)[0]
    assert rep["prefix"] == ""  # a single process keeps plain output
    assert rep["anomaly"] and rep["DDP_DEBUG"] == "1" and rep["DDP_SYNC_COMM"] == "1"
    assert (rep["RANK"], rep["WORLD_SIZE"], rep["world"]) == ("0", "1", 1)
    assert rep["argv"] == [path, "x"]
    assert not rep["mpi"]  # no MPI at all in a single process
    if rep["DDP_DEVICE"] == "cpu":
        assert "--monitor: no GPU" in err


def test_plain_python_still_works(tmp_path):
    path = script(tmp_path, REPORT)
    rc, out, err, _ = run([sys.executable, path])
    assert rc == 0, err
    rep = reports(out)[0]
    assert rep["world"] == 1 and rep["RANK"] is None and not rep["anomaly"]


def test_single_process_failure_is_plain_python(tmp_path):
    path = script(tmp_path, "def f():\n    raise KeyError('k')\nf()\n")
    rc, out, err, _ = launcher(path)
    assert rc == 1
    assert err.startswith("Traceback (most recent call last):") and "KeyError: 'k'" in err
    rc, _, err, _ = launcher(script(tmp_path, "import sys; sys.exit('bad input')", "b.py"))
    assert rc == 1 and "bad input" in err


@needs_mpi
def test_sigterm_to_a_rank_blocked_in_a_collective(tmp_path):
    """Python signal handlers cannot run while a rank is blocked in MPI; the watchdog ends
    it after the grace period, and with it the job."""
    path = script(tmp_path, """
        import os, time
        import ddp.distributed as dist
        dist.init_process_group()
        print("pid", os.getpid(), flush=True)
        if dist.get_rank() == 1:
            time.sleep(60)
        dist.barrier()
    """)
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "-n", "2", path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(), start_new_session=True)
    try:
        pids = {}
        for line in proc.stdout:
            if "] pid " in line:
                pids[line.split("]")[0] + "]"] = int(line.split()[-1])
            if len(pids) == 2:
                break
        time.sleep(1.0)  # rank 0 is now blocked in the barrier
        start = time.monotonic()
        os.kill(pids["[rank 0]"], signal.SIGTERM)
        rc = proc.wait(timeout=20)
        seconds = time.monotonic() - start
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rc == 128 + signal.SIGTERM
    assert seconds < failure.GRACE_SECONDS + 6
    assert "rank 0 received SIGTERM" in err and "blocked" in err


def test_help_explains_everything():
    rc, out, err, _ = launcher("--help")
    assert rc == 0
    for word in ("-n N", "--debug", "--seed", "--hostfile", "hostfile", "srun", "mpirun",
                 "--threads", "--output", "--stall-seconds", "--monitor", "RANK",
                 "LOCAL_RANK", "OMP_NUM_THREADS", "MPI_Abort", "DDP_DEBUG"):
        assert word in out, word


@needs_mpi
def test_dry_run_builds_the_mpiexec_command(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost:4\n")  # the hostfile must exist (named before mpiexec runs)
    rc, out, err, _ = launcher("-n", 4, "--hostfile", hosts, "--mpiexec-args", "-ppn 2",
                               "--seed", 1, "--debug", "--dry-run", "train.py", "--epochs", 3)
    assert rc == 0, err
    cmd = out.split()
    assert cmd[0] == MPIEXEC
    assert cmd[cmd.index("-n") + 1] == "4" and str(hosts) in cmd and "-ppn" in cmd
    tail = cmd[cmd.index("--worker"):]
    assert tail[-3:] == ["train.py", "--epochs", "3"]
    assert "--debug" in tail and tail[tail.index("--seed") + 1] == "1"
    assert cmd[cmd.index("--worker") - 3:cmd.index("--worker")] == [sys.executable, "-m",
                                                                  "launcher"]


# --------------------------------------------------------------------------- pieces

def test_thread_share():
    assert ranks.thread_share(None, 4, cores=16, env={}) == 4
    assert ranks.thread_share(None, 4, cores=2, env={}) == 1
    assert ranks.thread_share(None, 3, cores=16, env={"OMP_NUM_THREADS": "2"}) == 2
    assert ranks.thread_share(5, 3, cores=2, env={"OMP_NUM_THREADS": "2"}) == 5


def test_in_mpi_job():
    assert not ranks.in_mpi_job({})
    assert not ranks.in_mpi_job({"PMI_SIZE": "1", "WORLD_SIZE": "4", "SLURM_NTASKS": "8"})
    assert ranks.in_mpi_job({"PMI_SIZE": "2"})
    assert ranks.in_mpi_job({"OMPI_COMM_WORLD_SIZE": "4"})
    assert ranks.in_mpi_job({"SLURM_STEP_NUM_TASKS": "4"})


def test_prefixed_stream_keeps_lines_whole():
    sink = io.StringIO()
    s = ranks.PrefixedStream(sink, "[rank 3] ")
    s.write("a\nb")
    assert sink.getvalue() == "[rank 3] a\n"   # the partial line waits
    s.write("c\n\n")
    s.write("50%")
    s.flush()                                   # a flush does not cut the line
    assert sink.getvalue() == "[rank 3] a\n[rank 3] bc\n[rank 3] \n"
    s.write(" 100%\n")
    assert sink.getvalue() == "[rank 3] a\n[rank 3] bc\n[rank 3] \n[rank 3] 50% 100%\n"
    s.write("10%\r20%\r")                       # a progress bar redrawing its line
    assert sink.getvalue().endswith("[rank 3] 10%\r[rank 3] 20%\r")
    s.write("..")
    s.finish()                                  # at exit the rest is written, ended
    assert sink.getvalue().endswith("[rank 3] ..\n")


@needs_mpi
def test_partial_lines_of_two_ranks_never_mix(tmp_path):
    """pytest's dots: many flushed partial lines on both ranks at once."""
    path = script(tmp_path, """
        import os, sys, time
        rank = os.environ["RANK"]
        for line in range(20):
            for _ in range(10):
                print(rank, end="", flush=True)
                time.sleep(0.001)
            print(flush=True)
        print(rank * 3, end="")      # no newline at the end of the output
    """)
    code, out, err, _ = launcher("-n", 2, path, timeout=120)
    assert code == 0, err
    lines = out.splitlines()
    assert sorted(lines) == sorted([f"[rank {r}] {str(r) * 10}" for r in "01" for _ in range(20)]
                                   + ["[rank 0] 000", "[rank 1] 111"])


def test_exit_codes():
    assert failure.exit_code(SystemExit(None)) == 0
    assert failure.exit_code(SystemExit(4)) == 4
    assert failure.exit_code(SystemExit("message")) == 1
    assert failure.exit_code(RuntimeError()) == 1
    assert failure.exit_code(KeyboardInterrupt()) == 130
    assert failure.exit_code(failure.SignalExit(signal.SIGTERM)) == 143


class FakeNVML:
    """Just enough of pynvml: two GPUs, NVML's bus id format."""
    class NVMLError(Exception):
        pass

    bus = ["00000000:1A:00.0", "00000000:3B:00.0"]

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=self.bus[h].encode())

    def nvmlDeviceGetName(self, h):
        return b"Fake GPU"

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=42 + h)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=3 * 2**30, total=80 * 2**30)


def test_monitor_maps_the_cuda_device_through_its_pci_bus_id():
    nvml = FakeNVML()
    handle = monitor.nvml_handle(nvml, "0000:3b:00.0")   # CUDA's spelling of NVML's GPU 1
    assert handle == 1
    assert monitor.nvml_handle(nvml, "0000:99:00.0") is None
    line = monitor.sample(nvml, handle, "cuda:0")
    assert line == "launcher: gpu cuda:0 (Fake GPU): util 43%, memory 3.0/80.0 GiB"


def test_monitor_without_gpu_is_a_no_op(capsys):
    assert monitor.start(0.1, None) is None
    assert "no GPU" in capsys.readouterr().err


def test_importing_the_launcher_does_not_import_numpy():
    rc, out, err, _ = run([sys.executable, "-c", "import sys, launcher, launcher.cli, "
                           "launcher.ranks, launcher.failure, launcher.monitor; "
                           "print('numpy' in sys.modules, 'ddp' in sys.modules)"])
    assert rc == 0 and out.split() == ["False", "False"], err

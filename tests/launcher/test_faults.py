"""Faults a job must survive without hanging or reporting success: ranks that vanish (return,
sys.exit(0), os._exit(0), a signal, a segfault) while the others still communicate, a stall
before init_process_group, signals to the job, bad launcher input, and --max-restarts.

Each job runs under ``launcher -n N`` in its own session with a timeout that turns a hang
into a failure; each test checks the exit status, that the message names the rank (and its
host), and that no process of the job is left.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.launcher.test_launcher import clean_env, launcher, needs_mpi, script

HOST = socket.gethostname()
TIMEOUT = 240


def leftovers(path):
    """Processes still running the script ``path`` (there must be none after a job)."""
    out = subprocess.run(["pgrep", "-f", str(path)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def assert_no_leftovers(path):
    for _ in range(150):  # the kernel may take a moment to reap a killed job (seconds on a
        # loaded machine: a rank left over after 10 s once, under load 3.5 on 2 cores)
        if not leftovers(path):
            return
        time.sleep(0.2)
    pytest.fail(f"processes of {path} left behind: {leftovers(path)}")


VANISH = """
    import os, sys, signal
    import ddp, ddp.distributed as dist
    dist.init_process_group()
    t = ddp.ones(3)
    dist.all_reduce(t)
    if dist.get_rank() == int(sys.argv[2]):
        how = sys.argv[1]
        if how == "return":
            pass
        elif how == "exit0":
            sys.exit(0)
        elif how == "_exit0":
            os._exit(0)
        elif how == "segv":
            import ctypes
            ctypes.string_at(0)
        elif how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
    else:
        for _ in range(3):
            dist.all_reduce(t)
        print("rank", dist.get_rank(), "finished")
"""


@needs_mpi
@pytest.mark.parametrize("how,n,leaver", [("return", 2, 1), ("exit0", 2, 1), ("_exit0", 2, 1),
                                          ("exit0", 4, 2), ("return", 4, 0)])
def test_rank_that_finishes_early_stops_the_job_naming_it(tmp_path, how, n, leaver):
    path = script(tmp_path, VANISH)
    code, out, err, _ = launcher("-n", n, path, how, leaver, timeout=TIMEOUT)
    assert code != 0
    assert "finished" not in out
    assert f"rank {leaver} (host {HOST}, pid " in err
    what = {"return": "returned", "exit0": "sys.exit(0)", "_exit0": "os._exit(0)"}[how]
    assert f"finished its script ({what}" in err
    waiting = [r for r in range(n) if r != leaver]
    assert any(f"while rank {r} (host {HOST}) still waits in all_reduce at {path}:" in err
               for r in waiting), err
    assert "launcher: the job failed (exit status 1)" in err   # repeated at the end
    assert_no_leftovers(path)


@needs_mpi
def test_under_mpiexec_itself_a_rank_that_leaves_early_stops_the_job(tmp_path):
    """`mpiexec -n 2 launcher script.py`: no launcher process above mpiexec; rank 0 still
    notices and stops the job."""
    from launcher import supervise
    from tests.launcher.test_launcher import MPIEXEC, run
    path = script(tmp_path, VANISH)
    before = supervise._shm_files()
    code, out, err, _ = run([MPIEXEC, "-n", "2", sys.executable, "-m", "launcher", str(path),
                             "exit0", "1"], timeout=TIMEOUT)
    assert code != 0
    assert "finished" not in out
    assert f"rank 1 (host {HOST}, pid " in err and "finished its script (sys.exit(0)" in err
    assert_no_leftovers(path)
    # no launcher above mpiexec to clean up: the aborting rank unlinked MPICH's segment (it was
    # left in /dev/shm before, 2 MiB per such job)
    left = supervise._shm_files() - before
    mapped = supervise._mapped_files()
    assert not [f for f in left if os.path.join(supervise.SHM_DIR, f) not in mapped], left


def test_an_aborting_rank_unlinks_the_mpi_segments_it_maps(tmp_path):
    """Only the files in /dev/shm with an MPI library's prefix, of those the maps list."""
    from launcher import failure, supervise
    ours = os.path.join(supervise.SHM_DIR, f"mpich_shm_test_{os.getpid()}")
    other = os.path.join(supervise.SHM_DIR, f"ddp_test_{os.getpid()}")
    for p in (ours, other):
        open(p, "w").close()
    maps = tmp_path / "maps"
    maps.write_text(f"7f00-7f10 rw-s 00000000 00:1a 12 {ours}\n"
                    f"7f10-7f20 rw-s 00000000 00:1a 13 {other}\n"
                    f"7f20-7f30 r-xp 00000000 08:01 14 /usr/lib/libc.so.6\n"
                    "7f30-7f40 rw-p 00000000 00:00 0\n")
    try:
        assert failure.unlink_mapped_segments(str(maps)) == [ours]
        assert not os.path.exists(ours) and os.path.exists(other)
    finally:
        for p in (ours, other):
            if os.path.exists(p):
                os.unlink(p)


def test_a_finished_rank_stops_waiting_when_rank_0_is_gone():
    """A rank that finished its script waits for rank 0's "all done"; when rank 0 ends instead
    (it stopped the job; mpiexec has gone, so stderr is a broken pipe) the wait ends with
    False — the job failed — instead of lasting for ever (such a rank was once left running
    after its job). The rank's end of the connection, with the hub's end in the test's hand."""
    import selectors
    import threading
    from launcher import peers as peers_module
    hub, agent = socket.socketpair()

    def broken_stderr(message):
        raise BrokenPipeError(32, "Broken pipe")
    peers = peers_module.Peers(1, 2, [(HOST, 1), (HOST, 2)], abort=lambda code: None,
                               say=broken_stderr)
    peers._conns[0] = peers_module._Line(agent)
    agent.setblocking(False)
    peers._selector.register(agent, selectors.EVENT_READ, 0)
    threading.Thread(target=peers._run, daemon=True).start()
    result = []
    waiter = threading.Thread(target=lambda: result.append(peers.finish(0, "returned")),
                              daemon=True)
    waiter.start()
    hub.settimeout(60)
    assert b'"finished"' in hub.recv(4096)   # the rank told rank 0 it finished
    hub.close()                              # and rank 0 ends without an answer
    waiter.join(60)
    peers.close()
    assert result == [False]


@needs_mpi
@pytest.mark.parametrize("how,status", [("segv", "exit status 11"), ("kill", "exit status 9")])
def test_rank_that_dies_is_named_by_rank_and_host(tmp_path, how, status):
    path = script(tmp_path, VANISH)
    code, out, err, _ = launcher("-n", 2, path, how, 1, timeout=TIMEOUT)
    assert code != 0, err
    assert "finished" not in out
    assert f"rank 1 (host {HOST}, pid " in err
    assert f"launcher: the job failed ({status})" in err
    if how == "segv":   # Python's traceback of the crash, named by rank, with the line
        assert "rank 1 (host" in err and "crashed: Fatal Python error: Segmentation fault" in err
        assert f'File "{path}", line 16' in err
    else:               # rank 0 names it at once, unless mpiexec killed rank 0 first
        assert ("ended without finishing its script" in err
                or "did not finish the script" in err), err
    assert_no_leftovers(path)


@needs_mpi
def test_os_exit_0_on_every_rank_at_the_end_is_a_success(tmp_path):
    path = script(tmp_path, """
        import os
        import ddp, ddp.distributed as dist
        dist.init_process_group()
        t = ddp.ones(1)
        dist.all_reduce(t)
        print("sum", t.tolist(), flush=True)
        os._exit(0)            # skip the teardown, as some scripts do
    """)
    from launcher import supervise
    before = supervise._shm_files()
    code, out, err, _ = launcher("-n", 2, path, timeout=TIMEOUT)
    assert code == 0, err
    assert out.count("sum [2.0]") == 2
    assert "launcher: rank" not in err and "failed" not in err
    if os.path.isdir("/dev/shm"):   # MPI_Finalize, which unlinks its segment, never ran
        left = supervise._shm_files() - before
        mapped = supervise._mapped_files()
        assert not [f for f in left if os.path.join(supervise.SHM_DIR, f) not in mapped], left


@needs_mpi
def test_ranks_that_all_finish_succeed_even_when_one_is_much_later(tmp_path):
    """Rank 0 alone evaluating after the others finished is legitimate: they wait for it at
    the exit barrier and the job succeeds."""
    path = script(tmp_path, """
        import time
        import ddp, ddp.distributed as dist
        dist.init_process_group()
        t = ddp.ones(2)
        dist.all_reduce(t)
        if dist.get_rank() == 0:
            time.sleep(8)    # longer than the peers' grace period
            print("evaluated", t.tolist())
    """)
    code, out, err, _ = launcher("-n", 2, path, timeout=TIMEOUT)
    assert code == 0, err
    assert "[rank 0] evaluated [2.0, 2.0]" in out
    assert "launcher: rank" not in err


@needs_mpi
def test_ranks_that_go_on_in_a_sub_group_after_one_finished_are_not_stopped(tmp_path):
    """Rank 0 finishes; ranks 1 and 2 keep calling sub-group collectives (always inside
    ddp.distributed, from the same line) for longer than the grace period: legitimate."""
    path = script(tmp_path, """
        import time
        import ddp, ddp.distributed as dist
        dist.init_process_group()
        group = dist.new_group([1, 2])
        t = ddp.ones(1)
        if dist.get_rank() in (1, 2):
            end, calls = time.monotonic() + 8, 0
            while time.monotonic() < end:
                dist.all_reduce(t, group=group)
                calls += 1
            print("sub-group calls > 10:", calls > 10)
    """)
    code, out, err, _ = launcher("-n", 3, path, timeout=TIMEOUT)
    assert code == 0, err
    assert out.count("sub-group calls > 10: True") == 2
    assert "launcher: rank" not in err


@needs_mpi
def test_stall_before_init_process_group_is_reported(tmp_path):
    path = script(tmp_path, """
        import os, time
        import ddp.distributed as dist
        if os.environ["RANK"] == "1":
            time.sleep(8)    # slow data loading before the process group
        dist.init_process_group()
        print("joined")
    """)
    env = clean_env()
    env["DDP_STALL_CHECK_SECONDS"] = "2"
    code, out, err, _ = launcher("-n", 2, path, env=env, timeout=TIMEOUT)
    assert code == 0, err
    assert out.count("joined") == 2
    assert "stall before the process group exists: rank 0 has waited" in err
    assert "in init_process_group (at" in err
    assert f"for rank 1 (rank 1 at {path}:4)" in err


def _start(cmd, env=None):
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or clean_env(), start_new_session=True)


def _finish(proc, timeout=TIMEOUT):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the job did not end in {timeout} s\n{out}\n{err}")
    return proc.returncode, out, err


def _wait_for(paths, proc):
    deadline = time.monotonic() + TIMEOUT
    while not all(os.path.exists(p) for p in paths):
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            pytest.fail(f"the job ended before it was ready\n{out}\n{err}")
        time.sleep(0.1)


SLOW_FINALLY = """
    import os, sys, time
    import ddp.distributed as dist
    dist.init_process_group()
    rank = dist.get_rank()
    open(os.path.join(sys.argv[1], f"ready{rank}"), "w").close()
    try:
        while True:
            time.sleep(0.05)
    finally:
        if rank == 0:
            time.sleep(3)     # a checkpoint that takes a while to write
        open(os.path.join(sys.argv[1], f"finally{rank}"), "w").close()
"""


@needs_mpi
def test_sigterm_lets_every_rank_finish_its_finally_block(tmp_path):
    """Rank 1 finishes its finally at once; its exit must not make mpiexec kill rank 0 while
    rank 0 still writes its checkpoint."""
    path = script(tmp_path, SLOW_FINALLY)
    proc = _start([sys.executable, "-m", "launcher", "-n", "2", str(path), str(tmp_path)])
    _wait_for([tmp_path / "ready0", tmp_path / "ready1"], proc)
    proc.send_signal(signal.SIGTERM)
    code, out, err = _finish(proc)
    assert code == 128 + signal.SIGTERM, err
    assert (tmp_path / "finally0").exists() and (tmp_path / "finally1").exists()
    assert "rank 0 stopped by SIGTERM" in err
    assert_no_leftovers(path)


BLOCKED = """
    import os, sys, time
    import ddp, ddp.distributed as dist
    dist.init_process_group()
    rank = dist.get_rank()
    try:
        if rank == 0:
            CALL
        while True:
            time.sleep(0.05)
    finally:
        open(os.path.join(sys.argv[1], f"finally{rank}"), "w").close()
"""


@needs_mpi
@pytest.mark.parametrize("call,name", [("dist.all_reduce(ddp.ones(3))", "all_reduce"),
                                       ("dist.barrier()", "barrier"),
                                       ("dist.broadcast_object_list([None], src=1)",
                                        "broadcast_object_list")])
def test_sigterm_reaches_a_rank_blocked_in_a_collective(tmp_path, call, name):
    """Rank 0 waits in a collective rank 1 never calls. The signal is sent once the stall
    inspector has seen rank 0 inside it: its finally block (the checkpoint) still runs, and the
    job says where it was."""
    path = script(tmp_path, BLOCKED.replace("CALL", call))
    env = clean_env()
    env["DDP_STALL_CHECK_SECONDS"] = "1"
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen([sys.executable, "-m", "launcher", "-n", "2", path,
                                 str(tmp_path)], stdout=subprocess.DEVNULL, stderr=err_file,
                                env=env, start_new_session=True)
        deadline = time.monotonic() + TIMEOUT
        while "rank 0 waits in #" not in err_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"rank 0 was never seen waiting\n{err_path.read_text()}")
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the job did not end\n{err_path.read_text()}")
    err = err_path.read_text()
    assert code == 128 + signal.SIGTERM, err
    assert (tmp_path / "finally0").exists() and (tmp_path / "finally1").exists(), err
    assert f"rank 0 stopped by SIGTERM in {name} at {path}:7" in err
    assert "pending" not in err   # no MPICH complaint about the collective left behind
    assert_no_leftovers(path)


@needs_mpi
def test_second_ctrl_c_stops_at_once_and_exits_non_zero(tmp_path):
    path = script(tmp_path, """
        import os, sys, time
        import ddp.distributed as dist
        dist.init_process_group()
        open(os.path.join(sys.argv[1], f"ready{dist.get_rank()}"), "w").close()
        try:
            while True:
                time.sleep(0.05)
        finally:
            while True:          # a finally block that never ends
                try:
                    time.sleep(0.05)
                except KeyboardInterrupt:
                    pass
    """)
    proc = _start([sys.executable, "-m", "launcher", "-n", "2", str(path), str(tmp_path)])
    _wait_for([tmp_path / "ready0", tmp_path / "ready1"], proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    code, out, err = _finish(proc)
    assert code != 0
    assert "second signal: stopping the job now" in err
    assert_no_leftovers(path)


@pytest.mark.parametrize("argv,message", [
    (["-n", "0"], "-n must be at least 1, got 0"),
    (["-n", "-2"], "-n must be at least 1, got -2"),
    (["-n", "2", "--hostfile", "/nonexistent/hosts"], "hostfile '/nonexistent/hosts' does not "
                                                      "exist"),
    (["--max-restarts", "-1"], "--max-restarts must be 0 or more"),
])
def test_bad_job_options_are_refused_before_anything_runs(tmp_path, argv, message):
    path = script(tmp_path, "print('ran')\n")
    code, out, err, _ = launcher(*argv, path, timeout=60)
    assert code == 2 and "ran" not in out
    assert message in err


def test_dry_run_without_n_runs_nothing(tmp_path):
    path = script(tmp_path, "print('ran')\n")
    code, out, err, _ = launcher("--dry-run", path, "--lr", "0.1", timeout=60)
    assert code == 0 and "ran" not in out.replace("would run", "")
    assert f"would run script {path} --lr 0.1 in this process" in out


RESTART = """
    import os, sys
    import ddp, ddp.distributed as dist
    dist.init_process_group()
    restart = int(os.environ["DDP_RESTART_COUNT"])
    marker = os.path.join(sys.argv[1], "died")
    t = ddp.ones(1)
    dist.all_reduce(t)
    if dist.get_rank() == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("rank 1 fails once")
    print(f"done after {restart} restart(s)", t.tolist())
"""


@needs_mpi
def test_max_restarts_reruns_the_job_after_a_failure(tmp_path):
    path = script(tmp_path, RESTART)
    code, out, err, _ = launcher("-n", 2, "--max-restarts", 2, path, tmp_path, timeout=TIMEOUT)
    assert code == 0, err
    assert "RuntimeError: rank 1 fails once" in err
    assert (f"the job failed (exit status 1): rank 1 (host {HOST}, pid ") in err
    assert ("raised RuntimeError: rank 1 fails once at " in err
            and "; restarting it (restart 1 of 2)" in err)
    assert "[rank 0] done after 1 restart(s) [2.0]" in out
    assert "[rank 1] done after 1 restart(s) [2.0]" in out


@needs_mpi
def test_max_restarts_from_a_config_file_and_exhausted(tmp_path):
    path = script(tmp_path, """
        import ddp.distributed as dist
        dist.init_process_group()
        raise SystemExit(3)
    """)
    config = tmp_path / "job.yaml"
    config.write_text("n: 2\nmax-restarts: 1\n")
    code, out, err, _ = launcher("--config", config, path, timeout=TIMEOUT)
    assert code == 3
    assert err.count("restarting it (restart 1 of 1)") == 1
    assert "no restarts left (--max-restarts 1)" in err
    assert "exited with sys.exit(3) at " in err   # the reason, in the launcher's last line


def test_max_restarts_of_a_single_process(tmp_path):
    path = script(tmp_path, RESTART.replace("dist.get_rank() == 1", "True"))
    code, out, err, _ = launcher("--max-restarts", 1, path, tmp_path, timeout=TIMEOUT)
    assert code == 0, err
    assert "restarting it (restart 1 of 1)" in err
    assert "done after 1 restart(s) [1.0]" in out


@pytest.mark.skipif(not os.path.isdir("/dev/shm/") or not os.path.isdir("/proc/self"),
                    reason="Linux /dev/shm and /proc")
def test_segments_a_failed_job_leaves_in_dev_shm_are_removed_not_those_still_mapped():
    # ranks killed before they unlink MPICH's segments leave them behind (4 MiB each here)
    import mmap
    from launcher import supervise
    before = supervise._shm_files()
    paths = [os.path.join(supervise.SHM_DIR, f"mpich_shm_test{os.getpid()}_{k}") for k in (0, 1)]
    for path in paths:
        with open(path, "wb") as f:
            f.write(b"\0" * 4096)
    with open(paths[1], "r+b") as f:
        held = mmap.mmap(f.fileno(), 4096)   # a running job's segment: mapped
    try:
        supervise._remove_orphaned_shm(before)
        assert not os.path.exists(paths[0]) and os.path.exists(paths[1])
    finally:
        held.close()
        for path in paths:
            if os.path.exists(path):
                os.unlink(path)


@needs_mpi
@pytest.mark.skipif(not os.path.isdir("/dev/shm/"), reason="no /dev/shm")
def test_a_failed_job_leaves_no_segment_in_dev_shm(tmp_path):
    from launcher import supervise
    path = script(tmp_path, VANISH)
    before = supervise._shm_files()
    code, _, err, _ = launcher("-n", 2, path, "kill", 1, timeout=TIMEOUT)
    assert code != 0, err
    left = supervise._shm_files() - before
    mapped = supervise._mapped_files()
    assert not [f for f in left if os.path.join(supervise.SHM_DIR, f) not in mapped], left

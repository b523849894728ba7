"""Faults between ranks that used to hang or corrupt, run the way users run them: jobs under
``launcher -n 2`` / ``-n 4`` as subprocesses, each in its own session, killed as a whole if it
outlives a generous timeout (a hang fails the test), and checked for leftover processes.

- collectives that differ between ranks (shape, dtype, order): an error on every rank naming
  each rank's call, before any data moves, without ``--debug``;
- a rank that runs one step more than the others, or a user collective racing DDP's bucket
  allreduce: the stall inspector says which collective each rank is in and stops the job;
- the same uneven loop under ``model.join()`` ends normally with identical parameters.

(Plain tests: skipped when pytest itself runs under MPI.) Plus unit tests of the inspector's
bookkeeping on world rank 0.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from launcher import cli

pytestmark = pytest.mark.mpi_skip

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_mpi = pytest.mark.skipif(cli.find_mpiexec() is None, reason="no mpiexec (pip install mpich)")
_STRIP_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_", "SLURM_", "MV2_", "DDP_")


def launch(tmp_path, body, *args, n=2, stall=1, timeout=120, env=None):
    """Run ``body`` as a script under ``launcher -n N --stall-seconds S``; returns (rc, stdout,
    stderr). Fails on a hang, and if any process of the job outlives it."""
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(_STRIP_PREFIXES) and k not in ("RANK", "WORLD_SIZE",
                                                                 "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    clean["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, clean.get("PYTHONPATH")) if p)
    clean.update(env or {})
    cmd = [sys.executable, "-m", "launcher", "-n", str(n), "--stall-seconds", str(stall),
           str(path), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean, cwd=ROOT, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the job hung ({timeout} s)\nstdout:\n{out}\nstderr:\n{err}")
    for _ in range(100):       # the job's processes are gone (give the kernel a moment)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"processes of the job were left behind\nstderr:\n{err}")
    return proc.returncode, out, err


MISMATCH = """
    import sys
    import ddp, ddp.distributed as dist
    dist.init_process_group()
    rank = dist.get_rank()
    case = sys.argv[1]
    t = ddp.ones(4)
    if case == "shape":
        t = ddp.ones(3 if rank == 0 else 4)
        dist.all_reduce(t)
    elif case == "dtype":
        t = ddp.ones(4, dtype=ddp.float32 if rank == 0 else ddp.int32)
        dist.all_reduce(t)
    elif case == "order":
        if rank == 0:
            dist.all_reduce(t)
        else:
            dist.broadcast(t, 0)
    elif case == "metric":   # a helper's allreduce against a user's broadcast
        if rank == 0:
            dist.all_reduce_metric(2.0)
        else:
            dist.broadcast(ddp.ones(1, dtype=ddp.float64), 0)
    print("unreachable", t.tolist())
"""


@needs_mpi
@pytest.mark.parametrize("case,rank0,rank1", [
    ("shape", "Allreduce float32 (3,) op=sum at ", "Allreduce float32 (4,) op=sum at "),
    ("dtype", "Allreduce float32 (4,) op=sum at ", "Allreduce int32 (4,) op=sum at "),
    ("order", "Allreduce float32 (4,) op=sum at ", "Bcast float32 (4,) root=0 at "),
    ("metric", "Allreduce float64 (1,) op=sum at ", "Bcast float64 (1,) root=0 at "),
])
def test_collectives_that_differ_are_an_error_on_every_rank(tmp_path, case, rank0, rank1):
    rc, out, err = launch(tmp_path, MISMATCH, case)
    assert rc != 0
    assert "unreachable" not in out            # no half-reduced data printed
    for r in (0, 1):
        assert f"[rank {r}] RuntimeError: ranks called different collectives" in err, err
        assert f"[rank {r}]   rank 0: {rank0}" in err
        assert f"[rank {r}]   rank 1: {rank1}" in err
        assert f"[rank {r}]   rank 0: {rank0}{tmp_path / 'job.py'}:" in err   # the call site


UNEVEN = """
    import sys
    import numpy as np
    import ddp, ddp.nn as nn, ddp.distributed as dist
    from ddp.nn.parallel import DistributedDataParallel as DDP
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    ddp.manual_seed(0)
    model = DDP(nn.Linear(4, 2))
    opt = ddp.optim.SGD(model.parameters(), lr=0.1)
    steps = 2 + (rank == world - 1)         # the last rank has one batch more
    def loop():
        for step in range(steps):
            opt.zero_grad()
            x = ddp.tensor(np.random.default_rng(10 * rank + step).standard_normal((3, 4)))
            model(x.float()).sum().backward()
            opt.step()
    if sys.argv[1] == "join":
        with model.join():
            loop()
    else:
        loop()
    if sys.argv[1] in ("barrier", "join"):
        dist.barrier()
    if sys.argv[1] != "exit":              # "exit": the program just ends
        params = [p.detach().numpy().tolist() for p in model.parameters()]
        same = all(x == params for x in dist.get_communicator().allgather_obj(params))
        print("finished, identical:", same)
"""


@needs_mpi
@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("after", ["barrier", "exit"])
def test_a_rank_running_one_step_more_stops_the_job_saying_where_each_rank_is(tmp_path, n,
                                                                              after):
    rc, out, err = launch(tmp_path, UNEVEN, after, n=n)
    assert rc != 0, err
    last = n - 1
    assert "finished, identical" not in out
    report = [line for line in err.splitlines() if line.startswith("[rank 0] ")]
    text = "\n".join(report)
    assert "of DDP's communicator" in text, err
    assert f"[rank 0]   rank {last} waits in #" in text      # in its extra bucket allreduce
    assert "(model(x.float()).sum().backward())" in text      # its call site
    if after == "barrier":    # the others wait in a barrier: the inspector stops the job
        assert "stopping the job" in text, err
        for r in range(last):
            assert f"[rank 0]   rank {r} waits in #" in text and ": Barrier at " in text
    else:                     # the others' programs end: the launcher's exit watch or ours
        assert "stopping the job" in text.lower(), err
        assert "finished its script" in err or "[rank 0]   rank 0 has finished" in text


@needs_mpi
@pytest.mark.parametrize("n", [2, 4])
def test_the_same_uneven_loop_under_join_ends_with_identical_parameters(tmp_path, n):
    rc, out, err = launch(tmp_path, UNEVEN, "join", n=n)
    assert rc == 0, err
    for r in range(n):
        assert f"[rank {r}] finished, identical: True" in out
    assert "stall inspector" not in err


@needs_mpi
def test_a_user_collective_racing_ddps_bucket_allreduce_is_reported(tmp_path):
    body = """
        import ddp, ddp.nn as nn, ddp.distributed as dist
        from ddp.nn.parallel import DistributedDataParallel as DDP
        dist.init_process_group()
        rank = dist.get_rank()
        ddp.manual_seed(0)
        model = DDP(nn.Linear(4, 2))
        loss = model(ddp.randn(3, 4)).sum()
        metric = loss.detach().reshape(1)
        if rank == 0:
            dist.all_reduce(metric)        # before backward on rank 0
        loss.backward()
        if rank != 0:
            dist.all_reduce(metric)        # after it elsewhere
        print("unreachable", metric.tolist())
    """
    rc, out, err = launch(tmp_path, body)
    assert rc != 0 and "unreachable" not in out
    assert "[rank 0]   rank 0 waits in #" in err and "Allreduce float32 (1,) op=sum at " in err
    assert "(dist.all_reduce(metric)        # before backward on rank 0)" in err
    assert "[rank 0]   rank 1 waits in #" in err and "of DDP's communicator" in err
    assert "(loss.backward())" in err and "stopping the job" in err


@needs_mpi
@pytest.mark.parametrize("mode", ["thread", "nonblocking"])
def test_ranks_waiting_on_asynchronous_collectives_of_different_groups_stop_the_job(tmp_path,
                                                                                   mode):
    body = """
        import ddp, ddp.nn as nn, ddp.distributed as dist
        from ddp.nn.parallel import DistributedDataParallel as DDP
        dist.init_process_group()
        rank = dist.get_rank()
        ddp.manual_seed(0)
        model = DDP(nn.Linear(4, 2))
        loss = model(ddp.randn(3, 4)).sum()
        metric = loss.detach().reshape(1)
        if rank == 0:
            dist.all_reduce(metric, async_op=True).wait()
        loss.backward()
        if rank != 0:
            dist.all_reduce(metric, async_op=True).wait()
        print("unreachable")
    """
    rc, out, err = launch(tmp_path, body, env={"DDP_COMM_MODE": mode})
    assert rc != 0 and "unreachable" not in out
    assert "[rank 0]   rank 0 waits in #" in err and ": all_reduce (async) float32 (1,) at " in err
    assert "[rank 0]   rank 1 waits in #" in err and "of DDP's communicator" in err
    assert "stopping the job" in err


def test_a_rank_waiting_on_its_asynchronous_collective_counts_as_blocked():
    insp = inspector(2)
    world, other = (1,), (1, 1)
    for r in range(2):
        insp._receive(r, ("chan", world, "the world group", [0, 1], True), 0.0)
        insp._receive(r, ("chan", other, "DDP's communicator", [0, 1], False), 0.0)
    insp._receive(0, ("at", world, 1, False, sig("all_reduce (async)"), "t.py:3"), 0.0)
    insp._receive(1, ("at", other, 1, False, sig("Iallreduce"), "t.py:4"), 0.0)
    message, stop = insp._check(5.0)
    assert not stop and "  rank 0 started #1: all_reduce (async)" in message  # may go on
    insp._receive(0, ("wait", world, 1), 6.0)
    insp._receive(1, ("wait", other, 1), 6.0)
    message, stop = insp._check(9.0)
    assert stop and "  rank 0 waits in #1: all_reduce (async)" in message


# ---------------------------------------------------------------- bookkeeping on world rank 0

def inspector(size, seconds=2.0):
    from ddp.distributed import stall
    insp = stall.StallInspector.__new__(stall.StallInspector)
    insp.size, insp.seconds = size, seconds
    insp._reset_bookkeeping()
    return insp


def sig(op, shape=(3,), dtype="float32"):
    return (op, (shape, dtype))


def test_a_slow_rank_is_warned_about_and_a_deadlock_stops_the_job():
    insp = inspector(3)
    world, ddp_chan = (1,), (1, 1)
    for r in range(3):
        insp._receive(r, ("chan", world, "the world group", [0, 1, 2], True), 0.0)
        insp._receive(r, ("at", world, 1, True, ("Barrier",), "t.py:1"), 0.0)
    for r in (0, 2):
        insp._receive(r, ("at", world, 2, True, sig("Allreduce"), "t.py:5"), 10.0)
    assert insp._check(11.0) == (None, False)            # not yet past the threshold
    message, stop = insp._check(12.5)
    assert not stop                                       # rank 1 is computing: only a warning
    assert "collective #2 (Allreduce float32 (3,)): ranks 0, 2 have waited 2 s for rank 1" \
        in message
    assert "  rank 1 is computing (its last collective, #1: Barrier at t.py:1, completed)" \
        in message
    assert "  rank 0 waits in #2: Allreduce float32 (3,) at t.py:5" in message
    assert insp._check(13.0) == (None, False)            # repeated once per period, not more
    # rank 1 now waits in a collective of another communicator: nobody can move
    insp._receive(1, ("chan", ddp_chan, "DDP's communicator", [0, 1, 2], False), 14.0)
    insp._receive(1, ("at", ddp_chan, 1, True, sig("Iallreduce", (10,)), "t.py:9"), 14.0)
    message, stop = insp._check(14.7)
    assert not stop                                       # reports still arrive
    message, stop = insp._check(16.5)
    assert stop and "stopping the job" in message
    assert "  rank 1 waits in #1 of DDP's communicator: Iallreduce float32 (10,) at t.py:9" \
        in message
    assert insp._check(30.0) == (None, False)            # said once


def test_a_finished_rank_that_others_wait_for_stops_the_job():
    insp = inspector(2)
    chan = (1,)
    for r in range(2):
        insp._receive(r, ("chan", chan, "the world group", [0, 1], True), 0.0)
    insp._receive(0, ("at", chan, 1, True, sig("Allreduce"), "t.py:5"), 1.0)
    insp._receive(1, ("exit",), 1.0)
    message, stop = insp._check(4.0)
    assert stop and "  rank 1 has finished (its program ended)" in message


def test_everyone_arriving_clears_the_stall():
    insp = inspector(2)
    chan = (1,)
    for r in range(2):
        insp._receive(r, ("chan", chan, "the world group", [0, 1], True), 0.0)
    insp._receive(0, ("at", chan, 1, True, sig("Allreduce"), "t.py:5"), 0.0)
    insp._receive(1, ("at", chan, 1, True, sig("Allreduce"), "t.py:5"), 5.0)
    assert insp._check(30.0) == (None, False) and not insp._channels[chan]["first"]


def test_on_an_unchecked_channel_a_different_collective_stops_the_job_at_once():
    insp = inspector(2)
    chan = (1, 1)
    for r in range(2):
        insp._receive(r, ("chan", chan, "DDP's communicator", [0, 1], False), 0.0)
    insp._receive(0, ("at", chan, 1, False, sig("Iallreduce", (10,)), "t.py:9"), 0.0)
    insp._receive(1, ("at", chan, 1, False, sig("Iallreduce", (12,)), "t.py:9"), 0.0)
    message, stop = insp._check(0.1)
    assert stop and "ranks called different collectives as #1 of DDP's communicator" in message
    assert "  rank 0: Iallreduce float32 (10,) at t.py:9" in message
    assert "  rank 1: Iallreduce float32 (12,) at t.py:9" in message


def test_names_and_thresholds():
    from ddp.distributed import consistency, stall

    def all_reduce():
        def run():
            pass
        return run
    assert stall.async_name(all_reduce()) == "all_reduce (async)"  # named after its caller
    assert stall.threshold_seconds({}) is None
    assert stall.threshold_seconds({"DDP_STALL_CHECK_SECONDS": "0"}) is None
    assert stall.threshold_seconds({"DDP_STALL_CHECK_SECONDS": "1.5"}) == 1.5
    assert consistency.enabled({}) and not consistency.enabled({"DDP_CHECK_COLLECTIVES": "0"})
    assert consistency.call_site().startswith(__file__ + ":")

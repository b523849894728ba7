"""``ddp.training.Checkpoint`` with the launcher: a job SIGTERMed mid-training always leaves its
checkpoint (several runs), a resumed run ends with exactly the parameters of an uninterrupted
one (model, momentum, scheduler, sampler epoch, dropout RNG), and ``--max-restarts`` resumes a
job whose rank died once."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.launcher.test_faults import TIMEOUT, _finish, _start, assert_no_leftovers
from tests.launcher.test_launcher import clean_env, launcher, needs_mpi, script

TRAIN = """
    import os, sys, time
    import numpy as np
    import ddp, ddp.nn as nn, ddp.distributed as dist
    from ddp.training import Checkpoint
    from ddp.utils.data import DataLoader, TensorDataset, DistributedSampler

    out = sys.argv[1]
    dist.init_process_group()
    rank = dist.get_rank()
    ddp.manual_seed(0)
    X, Y = ddp.randn(64, 4), ddp.randn(64, 1)
    data = TensorDataset(X, Y)
    sampler = DistributedSampler(data, shuffle=True, seed=1)
    loader = DataLoader(data, batch_size=4, sampler=sampler)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    net = nn.parallel.DistributedDataParallel(model) if dist.get_world_size() > 1 else model
    opt = ddp.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = ddp.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    scaler = ddp.amp.GradScaler(enabled=False)
    ddp.manual_seed(100 + rank)          # dropout masks differ per rank and are resumed
    ckpt = Checkpoint(os.path.join(out, "ckpt.pt"), model=net, optimizer=opt, scheduler=sched,
                      scaler=scaler, sampler=sampler, every=int(os.environ.get("EVERY", "5")))
    if ckpt.resumed:
        print("resumed at step", ckpt.global_step, flush=True)
    crash_at = int(os.environ.get("CRASH_AT", "-1"))
    try:
        for epoch in ckpt.epochs(3):
            for x, y in ckpt.batches(loader):
                loss = ((net(x) - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                ckpt.step()
                if ckpt.global_step == 3:
                    with open(os.path.join(out, f"ready{rank}"), "w") as f:
                        f.write(str(os.getpid()))
                if rank == 1 and ckpt.global_step == crash_at and not os.path.exists(
                        os.path.join(out, "crashed")):
                    open(os.path.join(out, "crashed"), "w").close()
                    raise RuntimeError("rank 1 dies once")
                time.sleep(float(os.environ.get("STEP_SECONDS", "0")))
            sched.step()
    finally:
        print("finally at step", ckpt.global_step, flush=True)
    if rank == 0:
        np.save(os.path.join(out, "final.npy"),
                np.concatenate([p.detach().numpy().ravel() for p in model.parameters()]))
"""


def _env(**extra):
    env = clean_env()
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _uninterrupted(tmp_path, path, n):
    ref = tmp_path / f"reference{n}"
    ref.mkdir()
    if n == 1:
        code, out, err, _ = launcher(path, ref, env=_env(), timeout=TIMEOUT)
    else:
        code, out, err, _ = launcher("-n", n, path, ref, env=_env(), timeout=TIMEOUT)
    assert code == 0, err
    return np.load(ref / "final.npy")


@needs_mpi
def test_sigterm_mid_training_always_leaves_the_checkpoint_and_resumes_exactly(tmp_path):
    path = script(tmp_path, TRAIN)
    expected = _uninterrupted(tmp_path, path, 2)
    for attempt in range(3):
        run = tmp_path / f"run{attempt}"
        run.mkdir()
        proc = _start([sys.executable, "-m", "launcher", "-n", "2", str(path), str(run)],
                      env=_env(STEP_SECONDS=0.15, EVERY=1000))   # no periodic save: only SIGTERM
        deadline = time.monotonic() + TIMEOUT
        while not ((run / "ready0").exists() and (run / "ready1").exists()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.1 * attempt)          # a different moment of the step each time
        proc.send_signal(signal.SIGTERM)
        code, out, err = _finish(proc)
        assert code == 128 + signal.SIGTERM, err
        assert (run / "ckpt.pt").exists(), f"attempt {attempt}: no checkpoint\n{err}"
        assert not (run / "final.npy").exists()        # it really stopped early
        stopped = [int(line.split()[-1]) for line in out.splitlines() if "finally at step" in line]
        assert len(stopped) == 2 and stopped[0] == stopped[1], out   # the same step on both
        assert_no_leftovers(path)
        code, out, err, _ = launcher("-n", 2, path, run, env=_env(), timeout=TIMEOUT)
        assert code == 0, err
        assert f"[rank 0] resumed at step {stopped[0]}" in out
        np.testing.assert_array_equal(np.load(run / "final.npy"), expected)


@needs_mpi
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """``kill`` of one rank's pid (a node's preemption notice): the agreement at the end of
    the step stops all ranks together, with the checkpoint, and the job exits with 143."""
    path = script(tmp_path, TRAIN)
    run = tmp_path / "run"
    run.mkdir()
    proc = _start([sys.executable, "-m", "launcher", "-n", "2", str(path), str(run)],
                  env=_env(STEP_SECONDS=0.3, EVERY=1000))
    deadline = time.monotonic() + TIMEOUT
    while not all((run / f"ready{r}").exists() and (run / f"ready{r}").read_text()
                  for r in (0, 1)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.kill(int((run / "ready1").read_text()), signal.SIGTERM)
    code, out, err = _finish(proc)
    assert code == 128 + signal.SIGTERM, err
    assert (run / "ckpt.pt").exists() and not (run / "final.npy").exists()
    stopped = [int(line.split()[-1]) for line in out.splitlines() if "finally at step" in line]
    assert len(stopped) == 2 and stopped[0] == stopped[1], out
    assert "received SIGTERM and" not in err     # not the launcher's "some ranks only" stop
    assert_no_leftovers(path)


@needs_mpi
def test_max_restarts_resumes_a_job_whose_rank_died_once(tmp_path):
    path = script(tmp_path, TRAIN)
    expected = _uninterrupted(tmp_path, path, 2)
    run = tmp_path / "run"
    run.mkdir()
    code, out, err, _ = launcher("-n", 2, "--max-restarts", 1, path, run,
                                 env=_env(CRASH_AT=13, EVERY=5), timeout=TIMEOUT)
    assert code == 0, err
    assert "RuntimeError: rank 1 dies once" in err
    assert "restarting it (restart 1 of 1)" in err
    assert "[rank 0] resumed at step 10" in out and "[rank 1] resumed at step 10" in out
    np.testing.assert_array_equal(np.load(run / "final.npy"), expected)


def test_single_process_sigterm_saves_then_dies_by_the_signal_and_resumes(tmp_path):
    """Without the launcher: the default SIGTERM action still ends the process (by the
    signal), after the checkpoint was written at the end of the step."""
    path = script(tmp_path, TRAIN)
    expected = _uninterrupted(tmp_path, path, 1)
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen([sys.executable, str(path), str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=_env(STEP_SECONDS=0.1, EVERY=1000), start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    while not (run / "ready0").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code, out, err = _finish(proc)
    assert code == -signal.SIGTERM, err
    assert (run / "ckpt.pt").exists()
    proc = subprocess.run([sys.executable, str(path), str(run)], capture_output=True, text=True,
                          env=_env(), timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "resumed at step" in proc.stdout
    np.testing.assert_array_equal(np.load(run / "final.npy"), expected)


def test_checkpoint_refuses_other_files_and_world_sizes(tmp_path):
    import ddp
    from ddp.training import Checkpoint
    other = tmp_path / "other.pt"
    ddp.save({"weights": ddp.ones(2)}, str(other))
    with pytest.raises(RuntimeError, match="is not a ddp.training.Checkpoint file"):
        Checkpoint(other, model=ddp.nn.Linear(1, 1))
    path = tmp_path / "ckpt.pt"
    model = ddp.nn.Linear(1, 1)
    Checkpoint(path, model=model).save()
    with pytest.raises(RuntimeError, match="holds no optimizer state"):
        Checkpoint(path, model=model, optimizer=ddp.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="every must be 0 or more"):
        Checkpoint(tmp_path / "x.pt", every=-1)
    state = ddp.load(str(path))
    state["rng"] = state["rng"] * 2
    state["epoch_rng"] = state["epoch_rng"] * 2
    ddp.save(state, str(path))
    with pytest.raises(RuntimeError, match="saved by 2 ranks and this job has 1"):
        Checkpoint(path, model=model)

"""Rank-aware helpers of ddp.distributed: under mpiexec -n 2 / -n 4 (``mpi`` tests) against one
process on the full data, and in a single process as identities (``mpi_skip`` tests)."""
import logging
import os

import numpy as np
import pytest

import ddp
import ddp.distributed as dist
from ddp.metrics import Accuracy, ConfusionMatrix, MeanMetric
from ddp.utils.data import DataLoader, DistributedSampler, TensorDataset

mpi = pytest.mark.mpi(min_size=2)
single = pytest.mark.mpi_skip


@pytest.fixture(scope="module")
def world():
    if not dist.is_initialized():
        dist.init_process_group()
    return dist.get_rank(), dist.get_world_size()


def gathered(obj):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shared_tmp_dir(tmp_path_factory):
    """A directory every rank agrees on: rank 0 makes it and broadcasts its path."""
    box = [str(tmp_path_factory.mktemp("shared")) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --------------------------------------------------------------------------- under MPI

@mpi
def test_print0_prints_once(world, capsys):
    rank, size = world
    dist.print0("hello from", "print0", sep="|")
    out = capsys.readouterr().out
    assert out == ("hello from|print0\n" if rank == 0 else "")
    assert sum(gathered(out.count("hello from"))) == 1


@mpi
def test_is_main_process_and_rank_zero_only(world):
    rank, _ = world
    assert dist.is_main_process() == (rank == 0)

    @dist.rank_zero_only
    def value(x):
        """doc kept"""
        return x * 2
    assert value(21) == (42 if rank == 0 else None)
    assert value.__doc__ == "doc kept" and value.__name__ == "value"
    assert gathered(dist.is_main_process()).count(True) == 1


@mpi
def test_setup_rank_logging(world, capsys):
    rank, _ = world
    logger = logging.getLogger("ddp.test_helpers")
    logger.propagate = False
    try:
        dist.setup_rank_logging(logging.INFO, logger=logger)
        dist.setup_rank_logging(logging.INFO, logger=logger)   # again: not a second handler
        logger.info("step %d", 10)
        logger.warning("careful")
        err = capsys.readouterr().err
        lines = err.splitlines()
        if rank == 0:
            assert len(lines) == 2 and "step 10" in lines[0] and "careful" in lines[1]
        else:
            assert len(lines) == 1 and "careful" in lines[0]   # other ranks: warnings only
        assert all(line.startswith(f"[rank {rank}]") for line in lines)
        dist.setup_rank_logging(logging.INFO, rank_zero_only=False, logger=logger)
        logger.info("everyone")
        err = capsys.readouterr().err
        assert err.startswith(f"[rank {rank}]") and "everyone" in err
    finally:
        for h in list(logger.handlers):
            logger.removeHandler(h)


@mpi
def test_all_reduce_metric(world):
    rank, size = world
    values = [float(r) * 1.5 + 1 for r in range(size)]
    assert dist.all_reduce_metric(values[rank]) == pytest.approx(np.mean(values), rel=1e-15)
    assert dist.all_reduce_metric(values[rank], op="sum") == pytest.approx(sum(values))
    assert dist.all_reduce_metric(values[rank], op="max") == max(values)
    assert dist.all_reduce_metric(values[rank], op="min") == min(values)
    n = dist.all_reduce_metric(rank + 10, op="sum")
    assert n == sum(r + 10 for r in range(size)) and isinstance(n, int)
    arrays = [np.arange(4) * (r + 1) for r in range(size)]
    out = dist.all_reduce_metric(arrays[rank], op="sum")
    np.testing.assert_array_equal(out, np.sum(arrays, axis=0))
    np.testing.assert_array_equal(arrays[rank], np.arange(4) * (rank + 1))   # input untouched
    np.testing.assert_allclose(dist.all_reduce_metric(arrays[rank]), np.mean(arrays, axis=0))
    t = ddp.tensor(arrays[rank], dtype=ddp.float32, requires_grad=True)
    m = dist.all_reduce_metric(t, op="max")
    assert isinstance(m, ddp.Tensor) and not m.requires_grad and m.dtype == ddp.float32
    np.testing.assert_array_equal(m.numpy(), np.max(arrays, axis=0))
    with pytest.raises(ValueError, match="op must be"):
        dist.all_reduce_metric(1.0, op="median")


@mpi
def test_reduce_confusion_matrix(world):
    rank, size = world
    rng = np.random.default_rng(0)
    preds, targets = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    full = ConfusionMatrix(4)
    full.update(ddp.tensor(preds), ddp.tensor(targets))
    s = DistributedSampler(range(50), shuffle=False, pad=False)
    idx = list(s)
    cm = ConfusionMatrix(4)
    cm.update(ddp.tensor(preds[idx]), ddp.tensor(targets[idx]))
    assert dist.reduce_confusion_matrix(cm) is cm
    np.testing.assert_array_equal(cm.counts, full.counts)
    acc = Accuracy(4)
    acc.update(ddp.tensor(preds[idx]), ddp.tensor(targets[idx]))
    assert dist.reduce_confusion_matrix(acc).compute() == pytest.approx(
        float((preds == targets).mean()), rel=1e-15)
    mean = MeanMetric()
    mean.update(ddp.tensor(preds[idx].astype(np.float64)))
    assert dist.reduce_confusion_matrix(mean).compute() == pytest.approx(preds.mean(), rel=1e-14)


@mpi
@pytest.mark.parametrize("n", [1, 5, 11, 16])
@pytest.mark.parametrize("pad", [False, True])
def test_gather_for_eval_gives_dataset_in_order(world, n, pad):
    rank, size = world
    rng = np.random.default_rng(n)
    feats = rng.standard_normal((n, 3))
    ds = TensorDataset(ddp.tensor(feats), ddp.arange(n))
    sampler = DistributedSampler(ds, shuffle=False, pad=pad)
    preds, ids = [], []
    for x, i in DataLoader(ds, batch_size=2, sampler=sampler):
        preds.append(x * 2)                      # the "model"
        ids.append(i)
    mine = ddp.cat(preds) if preds else ddp.zeros(0, 3, dtype=ddp.float64)
    mine_ids = ddp.cat(ids) if ids else ddp.zeros(0, dtype=ddp.int64)
    out = dist.gather_for_eval(mine, len(ds))
    assert isinstance(out, ddp.Tensor) and tuple(out.shape) == (n, 3)
    np.testing.assert_array_equal(out.numpy(), feats * 2)
    np.testing.assert_array_equal(dist.gather_for_eval(mine_ids, n).numpy(), np.arange(n))
    # NumPy input, bfloat16 values
    np.testing.assert_array_equal(dist.gather_for_eval(mine_ids.numpy(), n), np.arange(n))
    half = dist.gather_for_eval(mine_ids.to(ddp.bfloat16), n)
    assert half.dtype == ddp.bfloat16
    np.testing.assert_array_equal(half.float().numpy(), np.arange(n))


@mpi
def test_gather_for_eval_shuffled_order(world):
    rank, size = world
    n = 13
    s = DistributedSampler(range(n), shuffle=True, seed=4, pad=False)
    s.set_epoch(1)
    mine = ddp.tensor(list(s), dtype=ddp.int64)
    order = dist.gather_for_eval(mine, n).tolist()
    assert order == ddp.Generator().manual_seed(5).numpy.permutation(n).tolist()


@mpi
def test_gather_for_eval_too_few_rows(world):
    with pytest.raises(ValueError, match="fewer"):
        dist.gather_for_eval(ddp.zeros(1), 10 ** 6)


@mpi
def test_save_on_rank0_load_on_every_rank(world, tmp_path_factory):
    rank, size = world
    path = os.path.join(shared_tmp_dir(tmp_path_factory), "ckpt.pt")
    ddp.manual_seed(0)
    model = ddp.nn.Linear(3, 2)                  # same seed: the same on every rank
    state = {"model": model.state_dict(), "epoch": 3, "rank": rank}
    dist.save_on_rank0(state, path)
    assert os.path.exists(path)                  # every rank sees the complete file now
    loaded = dist.load_on_every_rank(path)
    assert loaded["epoch"] == 3 and loaded["rank"] == 0          # rank 0's object
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded["model"][k].numpy(), v.numpy())
    dist.barrier()


@mpi
def test_save_on_rank0_error_reaches_every_rank(world, tmp_path_factory):
    rank, _ = world
    bad = os.path.join(shared_tmp_dir(tmp_path_factory), "missing-dir", "x", "ckpt.pt")
    with pytest.raises(Exception) as info:
        dist.save_on_rank0({"a": 1}, bad)
    if rank != 0:
        assert "rank 0 could not save" in str(info.value)


# --------------------------------------------------------------------------- one process

@single
def test_single_process_identities(tmp_path, capsys):
    assert dist.is_main_process()
    dist.print0("x")
    assert capsys.readouterr().out == "x\n"
    assert dist.rank_zero_only(lambda: 5)() == 5
    assert dist.all_reduce_metric(2.5) == 2.5 and dist.all_reduce_metric(3, op="sum") == 3
    np.testing.assert_array_equal(dist.all_reduce_metric(np.arange(3), op="max"), np.arange(3))
    t = dist.all_reduce_metric(ddp.tensor([1.0, 2.0]))
    np.testing.assert_array_equal(t.numpy(), [1.0, 2.0])
    cm = ConfusionMatrix(2)
    cm.update(ddp.tensor([0, 1, 1]), ddp.tensor([0, 1, 0]))
    np.testing.assert_array_equal(dist.reduce_confusion_matrix(cm).counts, [[1, 1], [0, 1]])
    preds = ddp.arange(7)
    np.testing.assert_array_equal(dist.gather_for_eval(preds, 7).numpy(), np.arange(7))
    np.testing.assert_array_equal(dist.gather_for_eval(preds, 5).numpy(), np.arange(5))
    dist.save_on_rank0({"w": ddp.ones(2)}, tmp_path / "a.pt")
    np.testing.assert_array_equal(dist.load_on_every_rank(tmp_path / "a.pt")["w"].numpy(),
                                  [1.0, 1.0])


@single
def test_rank_from_launcher_env_before_init(monkeypatch, capsys):
    if dist.is_initialized():
        pytest.skip("a process group is initialised in this process")
    monkeypatch.setenv("PMI_SIZE", "4")   # a rank is one of a job of several (environment.py)
    monkeypatch.setenv("PMI_RANK", "3")
    assert not dist.is_main_process()
    dist.print0("hidden")
    assert capsys.readouterr().out == ""
    assert dist.rank_zero_only(lambda: 1)() is None
    monkeypatch.setenv("PMI_RANK", "0")
    assert dist.is_main_process()


@single
def test_single_backend_identities():
    """With the single-rank backend initialised, the helpers are still identities."""
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="single")
    try:
        assert dist.all_reduce_metric(4.0, op="mean") == 4.0
        np.testing.assert_array_equal(dist.gather_for_eval(ddp.arange(3), 3).numpy(), [0, 1, 2])
        s = DistributedSampler(range(5), shuffle=False, pad=False)
        assert list(s) == [0, 1, 2, 3, 4]
    finally:
        if created:
            dist.destroy_process_group()

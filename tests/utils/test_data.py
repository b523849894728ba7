"""ddp.utils.data: datasets, samplers, collation and the DataLoader (single and multi-process).

Datasets used by worker processes are defined at module level so that the 'spawn' and
'forkserver' contexts can unpickle them (this module is importable as tests.utils.test_data).
"""
import collections
import os
import random
import threading
import time

import numpy as np
import pytest

import ddp
from ddp.utils.data import (BatchSampler, ChainDataset, ConcatDataset, DataLoader, Dataset,
                            IterableDataset, RandomSampler, SequentialSampler, StackDataset,
                            Subset, SubsetRandomSampler, TensorDataset, WeightedRandomSampler,
                            default_collate, default_convert, get_worker_info, random_split)


# --------------------------------------------------------------------------- module-level datasets

class Range(Dataset):
    """Item i is i (a Python int)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


class WorkerTagged(Dataset):
    """Item i is (i, worker id, worker pid, value set by worker_init_fn)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        info = get_worker_info()
        wid = -1 if info is None else info.id
        return i, wid, os.getpid(), _INIT_MARK.get("id", -2)


_INIT_MARK = {}


def mark_worker(worker_id):
    _INIT_MARK["id"] = worker_id * 100


class RandomItems(Dataset):
    """Each item draws from ddp's, numpy's global and Python's random generators."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return ddp.rand(1).item(), float(np.random.rand()), random.random()


class Faulty(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        if i == 5:
            raise ValueError(f"item {i} is broken")
        return i


class Unpicklable(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return threading.Lock() if i == 5 else i


class Slow(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        time.sleep(0.8)
        return i


class Dies(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        os._exit(3)


class ShardedStream(IterableDataset):
    """0..n-1, split between workers with get_worker_info."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))

    def __len__(self):
        return self.n


def batches(loader):
    return [b.tolist() for b in loader]


# --------------------------------------------------------------------------- datasets

def test_tensor_dataset_items_and_mismatch_error():
    x, y = ddp.arange(12).reshape(6, 2).float(), ddp.arange(6)
    ds = TensorDataset(x, y)
    assert len(ds) == 6
    xi, yi = ds[4]
    assert xi.tolist() == [8.0, 9.0] and yi.item() == 4
    with pytest.raises(ValueError, match="Size mismatch between tensors"):
        TensorDataset(ddp.zeros(5, 2), ddp.zeros(4))


def test_subset_concat_chain_stack():
    s = Subset(Range(10), [7, 2, 5])
    assert len(s) == 3 and [s[i] for i in range(3)] == [7, 2, 5]
    c = ConcatDataset([Range(3), Subset(Range(10), [9, 8]), Range(2)])
    assert len(c) == 7 and c.cumulative_sizes == [3, 5, 7]
    assert [c[i] for i in range(7)] == [0, 1, 2, 9, 8, 0, 1]
    assert c[-1] == 1 and c[-3] == 8
    with pytest.raises(IndexError):
        c[7]
    assert len(Range(2) + Range(3)) == 5
    assert list(ChainDataset([ShardedStream(2), ShardedStream(3)])) == [0, 1, 0, 1, 2]
    assert list(ShardedStream(2) + ShardedStream(1)) == [0, 1, 0]
    assert StackDataset(Range(3), Range(3))[2] == (2, 2)
    assert StackDataset(a=Range(3), b=Subset(Range(5), [4, 3, 2]))[0] == {"a": 0, "b": 4}
    with pytest.raises(ValueError, match="Size mismatch"):
        StackDataset(Range(2), Range(3))


def test_random_split_lengths_disjoint_and_reproducible():
    parts = random_split(Range(10), [3, 7], generator=ddp.Generator().manual_seed(42))
    assert [len(p) for p in parts] == [3, 7]
    items = [p[i] for p in parts for i in range(len(p))]
    assert sorted(items) == list(range(10))  # disjoint and covering
    again = random_split(Range(10), [3, 7], generator=ddp.Generator().manual_seed(42))
    assert [list(p.indices) for p in again] == [list(p.indices) for p in parts]
    assert [len(p) for p in random_split(Range(10), [0.5, 0.3, 0.2])] == [5, 3, 2]
    # remainder dealt round-robin from the first split: floor(0.34*11)=3 ×3 = 9, +1 +1
    assert [len(p) for p in random_split(Range(11), [0.34, 0.33, 0.33])] == [4, 4, 3]
    ddp.manual_seed(5)
    a = random_split(Range(8), [4, 4])[0].indices
    ddp.manual_seed(5)
    assert random_split(Range(8), [4, 4])[0].indices == a
    with pytest.raises(ValueError, match="Sum of input lengths"):
        random_split(Range(10), [3, 3])


# --------------------------------------------------------------------------- samplers

def test_random_sampler_options():
    g = ddp.Generator().manual_seed(0)
    perm = list(RandomSampler(Range(10), generator=g))
    assert sorted(perm) == list(range(10)) and perm != list(range(10))
    many = list(RandomSampler(Range(4), num_samples=10, generator=g))
    assert len(many) == 10 and sorted(many[:4]) == sorted(many[4:8]) == [0, 1, 2, 3]
    rep = list(RandomSampler(Range(3), replacement=True, num_samples=50, generator=g))
    assert len(rep) == 50 and set(rep) <= {0, 1, 2} and len(set(rep)) == 3
    assert len(RandomSampler(Range(3), replacement=True, num_samples=7)) == 7
    with pytest.raises(ValueError, match="num_samples"):
        RandomSampler(Range(3), num_samples=0)
    with pytest.raises(TypeError, match="replacement"):
        RandomSampler(Range(3), replacement=1)


def test_subset_random_sampler():
    s = SubsetRandomSampler([10, 20, 30, 40], generator=ddp.Generator().manual_seed(1))
    assert sorted(s) == [10, 20, 30, 40] and len(s) == 4


def test_weighted_random_sampler_frequencies_follow_weights():
    weights = [1.0, 2.0, 7.0]
    s = WeightedRandomSampler(weights, num_samples=20000, generator=ddp.Generator().manual_seed(0))
    counts = np.bincount(list(s), minlength=3) / 20000
    np.testing.assert_allclose(counts, np.array(weights) / 10, atol=0.015)
    no_rep = list(WeightedRandomSampler([1, 1, 1, 1], 4, replacement=False))
    assert sorted(no_rep) == [0, 1, 2, 3]
    assert list(WeightedRandomSampler(ddp.tensor([0.0, 0.0, 1.0]), 3)) == [2, 2, 2]
    with pytest.raises(ValueError, match="1d"):
        WeightedRandomSampler([[1.0, 2.0]], 2)


def test_batch_sampler():
    assert list(BatchSampler(SequentialSampler(Range(7)), 3, False)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(BatchSampler(range(7), 3, True)) == [[0, 1, 2], [3, 4, 5]]
    assert len(BatchSampler(range(7), 3, False)) == 3 and len(BatchSampler(range(7), 3, True)) == 2
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(range(3), 0, False)


# ------------------------------------------------------------------ DataLoader, one process

def test_sequential_order_and_len():
    loader = DataLoader(Range(10), batch_size=4)
    assert batches(loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(loader) == 3
    assert [b.item() for b in DataLoader(Range(3))] == [0, 1, 2]  # batch_size=1 default
    assert batches(DataLoader(Range(3), batch_size=2))[0] == [0, 1]


@pytest.mark.parametrize("n,bs", [(10, 3), (9, 3), (2, 5)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_drop_last_and_len(n, bs, drop_last):
    loader = DataLoader(Range(n), batch_size=bs, drop_last=drop_last)
    out = batches(loader)
    assert len(loader) == len(out) == (n // bs if drop_last else -(-n // bs))
    assert all(len(b) == bs for b in out[:-1])
    if drop_last:
        assert all(len(b) == bs for b in out)
    else:
        assert sum(out, []) == list(range(n))


def test_shuffle_with_seed_is_reproducible():
    def run(seed):
        return batches(DataLoader(Range(20), batch_size=6, shuffle=True,
                                  generator=ddp.Generator().manual_seed(seed)))
    a = run(0)
    assert a == run(0)
    assert a != run(1)
    assert sorted(sum(a, [])) == list(range(20)) and sum(a, []) != list(range(20))
    # Each epoch reshuffles; ddp.manual_seed drives the loader without a generator.
    loader = DataLoader(Range(20), batch_size=6, shuffle=True)
    ddp.manual_seed(3)
    e1, e2 = batches(loader), batches(loader)
    assert e1 != e2
    ddp.manual_seed(3)
    assert batches(loader) == e1


def test_batch_sampler_and_option_conflicts():
    bs = [[3, 1], [0], [2, 4, 5]]
    assert batches(DataLoader(Range(6), batch_sampler=bs)) == bs
    assert len(DataLoader(Range(6), batch_sampler=bs)) == 3
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        DataLoader(Range(6), batch_sampler=bs, batch_size=2)
    with pytest.raises(ValueError, match="sampler option is mutually exclusive with shuffle"):
        DataLoader(Range(6), sampler=SequentialSampler(Range(6)), shuffle=True)
    with pytest.raises(ValueError, match="expected unspecified shuffle"):
        DataLoader(ShardedStream(4), shuffle=True)
    with pytest.raises(ValueError, match="persistent_workers option needs num_workers > 0"):
        DataLoader(Range(4), persistent_workers=True)
    with pytest.raises(ValueError, match="prefetch_factor"):
        DataLoader(Range(4), prefetch_factor=2)
    with pytest.raises(ValueError, match="mutually exclusive with drop_last"):
        DataLoader(Range(4), batch_size=None, drop_last=True)
    with pytest.raises(ValueError, match="multiprocessing_context can only be used"):
        DataLoader(Range(4), multiprocessing_context="spawn")
    with pytest.raises(ValueError, match="valid start method"):
        DataLoader(Range(4), num_workers=1, multiprocessing_context="teleport")
    loader = DataLoader(Range(4))
    with pytest.raises(ValueError, match="should not be set after"):
        loader.batch_size = 2
    # A custom sampler sets the order.
    out = batches(DataLoader(Range(5), batch_size=2, sampler=[4, 3, 2, 1, 0]))
    assert out == [[4, 3], [2, 1], [0]]


def test_custom_collate_fn():
    def collate(samples):
        return {"sum": sum(samples), "n": len(samples)}
    out = list(DataLoader(Range(7), batch_size=3, collate_fn=collate))
    assert out == [{"sum": 3, "n": 3}, {"sum": 12, "n": 3}, {"sum": 6, "n": 1}]


Point = collections.namedtuple("Point", ["x", "y"])


def test_default_collate_structures_and_dtypes():
    samples = [{"img": np.full((2, 2), i, np.float32), "label": i, "w": 0.5 * i,
                "name": f"s{i}", "pair": (ddp.tensor([i, i]), np.int32(i)),
                "pt": Point(i, float(i)), "flag": bool(i % 2)}
               for i in range(3)]
    b = default_collate(samples)
    assert set(b) == set(samples[0])
    assert b["img"].shape == (3, 2, 2) and b["img"].dtype == ddp.float32
    assert b["img"][2].tolist() == [[2.0, 2.0], [2.0, 2.0]]
    assert b["label"].dtype == ddp.int64 and b["label"].tolist() == [0, 1, 2]
    assert b["w"].dtype == ddp.float64 and b["w"].tolist() == [0.0, 0.5, 1.0]
    assert b["name"] == ["s0", "s1", "s2"]
    assert isinstance(b["pair"], list) and b["pair"][0].shape == (3, 2)  # tuples come back as lists
    assert b["pair"][0].dtype == ddp.int64 and b["pair"][1].dtype == ddp.int32
    assert isinstance(b["pt"], Point) and b["pt"].y.dtype == ddp.float64
    assert b["flag"].dtype == ddp.bool and b["flag"].tolist() == [False, True, False]
    # Tuples of (tensor, int), as a TensorDataset-like loader yields them.
    x, y = next(iter(DataLoader([(ddp.ones(3), 1), (ddp.zeros(3), 0)], batch_size=2)))
    assert x.shape == (2, 3) and y.tolist() == [1, 0]
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [1]])
    with pytest.raises(TypeError, match="default_collate: batch must contain"):
        default_collate([object(), object()])


def test_default_convert_when_batching_is_off():
    out = list(DataLoader([np.arange(3), np.arange(3) + 1], batch_size=None))
    assert all(isinstance(t, ddp.Tensor) for t in out) and out[1].tolist() == [1, 2, 3]
    conv = default_convert((np.float32(1.5), "a", 3))
    assert isinstance(conv, list) and conv[1:] == ["a", 3]
    assert conv[0].dtype == ddp.float32 and conv[0].item() == 1.5
    conv = default_convert({"a": np.zeros(2), "b": 3})
    assert isinstance(conv["a"], ddp.Tensor) and conv["b"] == 3
    assert list(DataLoader(Range(3), batch_size=None)) == [0, 1, 2]


def test_iterable_dataset_single_process_and_len():
    loader = DataLoader(ShardedStream(7), batch_size=3)
    assert batches(loader) == [[0, 1, 2], [3, 4, 5], [6]]
    assert len(loader) == 3
    assert len(DataLoader(ShardedStream(7), batch_size=3, drop_last=True)) == 2
    out = batches(DataLoader(ShardedStream(7), batch_size=3, drop_last=True))
    assert out == [[0, 1, 2], [3, 4, 5]]


def test_pin_memory_is_accepted_on_cpu():
    loader = DataLoader(TensorDataset(ddp.arange(6).float()), batch_size=4, pin_memory=True)
    out = [x.tolist() for (x,) in loader]
    assert out == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0]]


@pytest.mark.gpu
def test_pin_memory_copies_into_page_locked_buffers(monkeypatch):
    """pin_memory=True copies CPU batches into the CUDA module's pinned host buffers (recorded
    here through the CUDA module the backend uses: CuPy, or the simulated device)."""
    extras = ddp.backend.cuda_extras()
    pinned = []

    def empty_pinned(shape, dtype, order="C", _original=extras.empty_pinned):
        buf = _original(shape, dtype)
        pinned.append(buf)
        return buf
    monkeypatch.setattr(extras, "empty_pinned", empty_pinned)
    ds = [{"x": np.full(2, i, np.float32), "y": i, "name": "n"} for i in range(4)]
    for workers in (0, 1):
        pinned.clear()
        out = list(DataLoader(ds, batch_size=2, pin_memory=True, num_workers=workers))
        assert [b["x"].tolist() for b in out] == [[[0, 0], [1, 1]], [[2, 2], [3, 3]]]
        assert out[1]["y"].tolist() == [2, 3] and out[0]["name"] == ["n", "n"]
        assert len(pinned) == 4 and out[0]["x"]._data is pinned[0]
        assert out[0]["x"].to("cuda").is_cuda


# --------------------------------------------------------------------------- worker processes

def test_workers_give_the_same_batches_as_one_process():
    def run(workers):
        return batches(DataLoader(Range(23), batch_size=4, shuffle=True, num_workers=workers,
                                  generator=ddp.Generator().manual_seed(7)))
    single = run(0)
    assert run(2) == single
    assert sorted(sum(single, [])) == list(range(23))


def test_iterable_dataset_with_two_workers_does_not_duplicate():
    loader = DataLoader(ShardedStream(11), batch_size=2, num_workers=2)
    out = batches(loader)
    flat = sum(out, [])
    assert sorted(flat) == list(range(11)) and len(flat) == 11
    assert out == [[0, 2], [1, 3], [4, 6], [5, 7], [8, 10], [9]]  # round-robin over workers
    # Unbatched, three workers, uneven shards.
    assert sorted(DataLoader(ShardedStream(10), batch_size=None, num_workers=3)) == list(range(10))


def test_worker_randomness_is_deterministic_given_a_seed():
    def run(seed):
        loader = DataLoader(RandomItems(), batch_size=3, num_workers=2,
                            generator=ddp.Generator().manual_seed(seed))
        return [[c.tolist() for c in b] for b in loader]
    a = run(0)
    assert a == run(0)
    assert a != run(1)
    # Worker 0 made batches 0 and 2, worker 1 batches 1 and 3: their streams differ.
    assert a[0] != a[1]


def test_worker_init_fn_and_worker_info():
    loader = DataLoader(WorkerTagged(8), batch_size=2, num_workers=2, worker_init_fn=mark_worker)
    rows = []
    for idx, wid, pid, mark in loader:
        rows += zip(idx.tolist(), wid.tolist(), pid.tolist(), mark.tolist())
    assert [r[0] for r in rows] == list(range(8))
    assert {r[1] for r in rows} == {0, 1}
    assert all(mark == wid * 100 for _, wid, _, mark in rows)  # init_fn ran with each id
    assert os.getpid() not in {r[2] for r in rows} and len({r[2] for r in rows}) == 2
    assert get_worker_info() is None


def test_worker_exception_surfaces_with_message_and_workers_stop():
    it = iter(DataLoader(Faulty(), batch_size=2, num_workers=2))
    assert next(it).tolist() == [0, 1]
    assert next(it).tolist() == [2, 3]
    with pytest.raises(ValueError) as excinfo:
        next(it)
    msg = str(excinfo.value)
    assert "item 5 is broken" in msg and "in DataLoader worker process 0" in msg
    assert "Traceback" in msg and "__getitem__" in msg
    workers = it._workers
    del it, excinfo
    assert not any(w.is_alive() for w in workers)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_a_batch_that_cannot_be_pickled_is_an_error_not_a_hang(context):
    # The worker's queue pickles in a background thread, after put() returned: without the
    # result queue's handler the worker printed the error and the main process waited forever.
    loader = DataLoader(Unpicklable(), batch_size=2, num_workers=1, collate_fn=list,
                        multiprocessing_context=context)
    it = iter(loader)
    assert next(it) == [0, 1] and next(it) == [2, 3]
    with pytest.raises(TypeError) as excinfo:
        next(it)
    msg = str(excinfo.value)
    assert "in DataLoader worker process 0" in msg and "lock" in msg
    assert "everything a DataLoader worker returns must be picklable" in msg
    assert next(it) == [6, 7]  # the worker carries on with the next batch


def test_workers_exit_at_end_of_epoch_and_on_break():
    it = iter(DataLoader(Range(6), batch_size=2, num_workers=2))
    workers = it._workers
    assert batches(it) == [[0, 1], [2, 3], [4, 5]]
    assert not any(w.is_alive() for w in workers)
    it = iter(DataLoader(Range(100), batch_size=2, num_workers=2))
    next(it)
    workers = it._workers
    del it
    assert not any(w.is_alive() for w in workers)


def test_prefetch_factor_bounds_batches_in_flight():
    it = iter(DataLoader(Range(40), batch_size=2, num_workers=2, prefetch_factor=3))
    assert it._send_idx == 6 and it._tasks_outstanding == 6
    next(it)
    assert it._send_idx == 7
    assert len(batches(it)) == 19


def test_persistent_workers_across_epochs():
    loader = DataLoader(WorkerTagged(9), batch_size=2, num_workers=2, persistent_workers=True)
    epochs = []
    for _ in range(2):
        idx, pids = [], set()
        for i, _, pid, _ in loader:
            idx += i.tolist()
            pids |= set(pid.tolist())
        epochs.append((idx, pids))
    assert epochs[0][0] == epochs[1][0] == list(range(9))
    assert epochs[0][1] == epochs[1][1] and len(epochs[0][1]) == 2  # the same two processes
    it = iter(loader)
    workers = it._workers
    assert all(w.is_alive() for w in workers)
    next(it)  # break off mid-epoch: the next epoch still starts from the beginning
    assert [b[0].tolist() for b in loader] == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    del loader, it
    assert not any(w.is_alive() for w in workers)


def test_persistent_workers_with_iterable_dataset():
    loader = DataLoader(ShardedStream(5), batch_size=2, num_workers=2, persistent_workers=True)
    assert sorted(sum(batches(loader), [])) == list(range(5))
    assert sorted(sum(batches(loader), [])) == list(range(5))


def test_timeout_raises():
    it = iter(DataLoader(Slow(), num_workers=1, timeout=0.2))
    with pytest.raises(RuntimeError, match="DataLoader timed out after 0.2 seconds"):
        next(it)
    del it


def test_dead_worker_is_reported():
    it = iter(DataLoader(Dies(), num_workers=1, timeout=1))
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        next(it)
    del it


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_spawn_and_forkserver_contexts(context):
    loader = DataLoader(Range(10), batch_size=3, shuffle=True, num_workers=2,
                        multiprocessing_context=context, generator=ddp.Generator().manual_seed(1))
    expect = batches(DataLoader(Range(10), batch_size=3, shuffle=True,
                                generator=ddp.Generator().manual_seed(1)))
    assert batches(loader) == expect


# --------------------------------------------------------------------------- PyTorch as oracle

def describe(batch, tensor_type):
    """A collated batch as text: container types, keys, and each tensor's dtype and values."""
    if isinstance(batch, tensor_type):
        return f"tensor[{str(batch.dtype).split('.')[1]}]({batch.tolist()!r})"
    if isinstance(batch, dict):
        return f"{type(batch).__name__}(" + ", ".join(
            f"{k!r}: {describe(v, tensor_type)}" for k, v in batch.items()) + ")"
    if isinstance(batch, (list, tuple)):
        return f"{type(batch).__name__}(" + ", ".join(
            describe(v, tensor_type) for v in batch) + ")"
    return f"{type(batch).__name__}({batch!r})"


def test_collate_and_lengths_match_pytorch(oracle):
    samples = [{"img": np.full((2,), i, np.float32), "n": i, "f": i / 2, "s": str(i),
                "t": (np.int16(i), [i, i + 1]), "b": bool(i)} for i in range(4)]
    cases = [(10, 3, False), (10, 3, True), (9, 3, False), (1, 4, True)]

    def reference(torch):
        from torch.utils.data import DataLoader as TDataLoader
        from torch.utils.data import default_collate as t_collate

        class TorchStream(torch.utils.data.IterableDataset):  # fork: no pickling needed
            def __iter__(self):
                info = torch.utils.data.get_worker_info()
                return iter(range(info.id, 11, info.num_workers))
        return {"collated": describe(t_collate(samples), torch.Tensor),
                "lengths": [len(TDataLoader(Range(n), batch_size=bs, drop_last=drop))
                            for n, bs, drop in cases],
                "batches": [[b.numpy() for b in TDataLoader(Range(n), batch_size=bs,
                                                            drop_last=drop)]
                            for n, bs, drop in cases],
                "stream": [b.numpy() for b in TDataLoader(TorchStream(), batch_size=2,
                                                          num_workers=2)]}
    want = oracle(reference)
    assert describe(default_collate(samples), ddp.Tensor) == want["collated"]
    for (n, bs, drop), length, expected in zip(cases, want["lengths"], want["batches"]):
        assert len(DataLoader(Range(n), batch_size=bs, drop_last=drop)) == int(length)
        assert batches(DataLoader(Range(n), batch_size=bs, drop_last=drop)) == \
            [b.tolist() for b in expected]
    assert batches(DataLoader(ShardedStream(11), batch_size=2, num_workers=2)) == \
        [b.tolist() for b in want["stream"]]


# --------------------------------------------------------------------------- MPI

class EnvProbe(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return os.environ.get("MPI4PY_RC_INITIALIZE", "unset")


def test_spawned_workers_are_told_not_to_initialise_mpi():
    before = os.environ.get("MPI4PY_RC_INITIALIZE")
    loader = DataLoader(EnvProbe(), batch_size=2, num_workers=1, multiprocessing_context="spawn")
    assert next(iter(loader)) == ["false", "false"]
    assert os.environ.get("MPI4PY_RC_INITIALIZE") == before


_MPI_SCRIPT = """
import sys
from mpi4py import MPI          # top level: re-imported by spawn/forkserver children
import ddp
from ddp.utils.data import DataLoader

def main():
    comm = MPI.COMM_WORLD
    loader = DataLoader(list(range(20)), batch_size=4, shuffle=True, num_workers=2,
                        multiprocessing_context=sys.argv[1])
    total = comm.allreduce(sum(int(b.sum()) for b in loader))
    # a file per rank: the ranks' stdout interleave (the test once counted words in it)
    with open(f"{sys.argv[2]}/total.{comm.Get_rank()}", "w") as f:
        f.write(str(total))

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("context", ["fork", "forkserver"])
def test_workers_inside_an_mpi_job(tmp_path, context):
    import shutil
    import subprocess
    import sys
    pytest.importorskip("mpi4py")
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec not found")
    if any(v in os.environ for v in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")):
        pytest.skip("already inside an MPI job: no nested mpiexec")
    script = tmp_path / "mpi_loader.py"
    script.write_text(_MPI_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script), context, str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [(tmp_path / f"total.{rank}").read_text() for rank in (0, 1)] == ["380", "380"]

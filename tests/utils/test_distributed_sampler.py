"""DistributedSampler in one process: every rank simulated by passing ``rank`` explicitly."""
import math
import warnings

import pytest

import ddp
from ddp.utils.data import DataLoader, DistributedSampler, TensorDataset


def shards(n, replicas, **kw):
    return [list(DistributedSampler(range(n), num_replicas=replicas, rank=r, **kw))
            for r in range(replicas)]


def torch_reference(n, replicas, rank, drop_last, order):
    """PyTorch's DistributedSampler.__iter__ transcribed, on a given order of indices."""
    if drop_last and n % replicas != 0:
        num_samples = math.ceil((n - replicas) / replicas)
    else:
        num_samples = math.ceil(n / replicas)
    total = num_samples * replicas
    indices = list(order)
    if not drop_last:
        pad = total - len(indices)
        if pad <= len(indices):
            indices += indices[:pad]
        else:
            indices += (indices * math.ceil(pad / len(indices)))[:pad]
    else:
        indices = indices[:total]
    return indices[rank:total:replicas]


def test_exported_from_utils_data():
    import ddp.utils.data as data
    assert "DistributedSampler" in data.__all__
    assert issubclass(DistributedSampler, data.Sampler)


@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 12, 23])
@pytest.mark.parametrize("shuffle", [False, True])
def test_partition_with_padding(n, replicas, shuffle):
    parts = shards(n, replicas, shuffle=shuffle, seed=5)
    lens = {len(p) for p in parts}
    assert lens == {math.ceil(n / replicas)}
    assert all(len(DistributedSampler(range(n), replicas, r)) == len(parts[r])
               for r in range(replicas))
    flat = [i for p in parts for i in p]
    assert set(flat) == set(range(n))                       # every index at least once
    # removing the padding (the first total - n indices of the order, repeated) leaves the
    # dataset exactly once
    total = len(flat)
    interleaved = [parts[k % replicas][k // replicas] for k in range(total)]
    assert sorted(interleaved[:n]) == list(range(n))
    assert interleaved[n:] == (interleaved[:n] * replicas)[:total - n]


@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [1, 3, 7, 10, 23])
@pytest.mark.parametrize("drop_last", [False, True])
def test_matches_pytorch_algorithm(n, replicas, drop_last):
    for r in range(replicas):
        got = list(DistributedSampler(range(n), replicas, r, shuffle=False, drop_last=drop_last))
        assert got == torch_reference(n, replicas, r, drop_last, range(n))
        # shuffled: PyTorch's algorithm on the permutation drawn from seed + epoch
        s = DistributedSampler(range(n), replicas, r, shuffle=True, seed=11, drop_last=drop_last)
        s.set_epoch(3)
        perm = ddp.Generator().manual_seed(14).numpy.permutation(n).tolist()
        assert list(s) == torch_reference(n, replicas, r, drop_last, perm)


@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [3, 7, 10, 12, 23])
def test_drop_last(n, replicas):
    parts = shards(n, replicas, shuffle=True, drop_last=True)
    assert {len(p) for p in parts} == {n // replicas}
    flat = [i for p in parts for i in p]
    assert len(set(flat)) == len(flat) == (n // replicas) * replicas   # no duplicates


def test_shuffle_deterministic_across_ranks_and_epochs():
    a = shards(20, 4, shuffle=True, seed=7)
    b = shards(20, 4, shuffle=True, seed=7)
    assert a == b                                          # same seed: same shards
    assert sorted(i for p in a for i in p) == list(range(20))
    assert a != shards(20, 4, shuffle=True, seed=8)
    samplers = [DistributedSampler(range(20), 4, r, seed=7) for r in range(4)]
    for s in samplers:
        s.set_epoch(1)
    c = [list(s) for s in samplers]
    assert c != a and sorted(i for p in c for i in p) == list(range(20))
    assert [list(range(20))[r::4] for r in range(4)] == shards(20, 4, shuffle=False)


def test_repeat_warning_once_and_not_after_set_epoch():
    s = DistributedSampler(range(10), num_replicas=2, rank=0, shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = list(s)
        s.set_epoch(1)
        second = list(s)                  # a new epoch: no warning
    assert first != second
    with pytest.warns(UserWarning, match="set_epoch"):
        assert list(s) == second          # same epoch again: same order, warned
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(s)                           # only once
    with warnings.catch_warnings():       # no warning without shuffling
        warnings.simplefilter("error")
        t = DistributedSampler(range(10), num_replicas=2, rank=0, shuffle=False)
        assert list(t) == list(t)


def test_repeat_warning_through_dataloader():
    ds = TensorDataset(ddp.arange(8))
    s = DistributedSampler(ds, num_replicas=2, rank=1)
    loader = DataLoader(ds, batch_size=2, sampler=s)
    epoch0 = [b[0].tolist() for b in loader]
    with pytest.warns(UserWarning, match="order repeats"):
        epoch1 = [b[0].tolist() for b in loader]
    assert epoch0 == epoch1
    s.set_epoch(1)
    epoch2 = [b[0].tolist() for b in loader]
    assert epoch2 != epoch0
    fresh = DistributedSampler(ds, 2, 1, seed=0)
    fresh.set_epoch(1)
    assert sum(epoch2, []) == list(fresh)


@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [0, 1, 3, 7, 10, 12, 23])
@pytest.mark.parametrize("shuffle", [False, True])
def test_pad_false_exact_shards(n, replicas, shuffle):
    parts = shards(n, replicas, shuffle=shuffle, pad=False)
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(n))                   # every index exactly once
    for r, p in enumerate(parts):
        assert len(p) == len(range(r, n, replicas))
        assert len(DistributedSampler(range(n), replicas, r, shuffle=shuffle, pad=False)) == len(p)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    if not shuffle:
        assert parts == [list(range(r, n, replicas)) for r in range(replicas)]


def test_pad_false_with_drop_last_trims():
    assert shards(10, 4, shuffle=False, drop_last=True, pad=False) == \
        shards(10, 4, shuffle=False, drop_last=True)


def test_defaults_without_process_group():
    s = DistributedSampler(range(5), shuffle=False)
    assert (s.num_replicas, s.rank) == (1, 0)
    assert list(s) == [0, 1, 2, 3, 4] and len(s) == 5


def test_invalid_rank():
    with pytest.raises(ValueError, match="Invalid rank"):
        DistributedSampler(range(5), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="Invalid rank"):
        DistributedSampler(range(5), num_replicas=2, rank=-1)


def test_num_samples_and_total_size_like_pytorch():
    s = DistributedSampler(range(10), num_replicas=4, rank=0)
    assert (s.num_samples, s.total_size) == (3, 12)
    s = DistributedSampler(range(10), num_replicas=4, rank=0, drop_last=True)
    assert (s.num_samples, s.total_size) == (2, 8)

"""DistributedSampler with the real rank and world size under mpiexec -n 2 / -n 4: the shards of
all ranks, gathered, partition the dataset exactly as one process computes it."""
import numpy as np
import pytest

import ddp
import ddp.distributed as dist
from ddp.utils.data import DataLoader, DistributedSampler, TensorDataset

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.usefixtures("process_group")]



def gathered(obj):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@pytest.mark.parametrize("n", [1, 5, 17, 24])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_real_ranks_partition(n, shuffle, drop_last):
    rank, world = dist.get_rank(), dist.get_world_size()
    s = DistributedSampler(range(n), shuffle=shuffle, seed=3, drop_last=drop_last)
    assert (s.num_replicas, s.rank) == (world, rank)
    s.set_epoch(2)
    shards = gathered(list(s))
    # the same shards computed locally, for every rank, by one process
    local = []
    for r in range(world):
        ref = DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=shuffle, seed=3,
                                 drop_last=drop_last)
        ref.set_epoch(2)
        local.append(list(ref))
    assert shards == local
    assert len({len(p) for p in shards}) == 1 and len(s) == len(shards[rank])
    flat = [i for p in shards for i in p]
    if drop_last:
        assert len(flat) == len(set(flat)) == (n // world) * world
    else:
        assert set(flat) == set(range(n)) and len(flat) == -(-n // world) * world
        order = [shards[k % world][k // world] for k in range(len(flat))]
        assert sorted(order[:n]) == list(range(n))          # padding only after the dataset


def test_same_permutation_on_every_rank_and_new_per_epoch():
    n = 23
    s = DistributedSampler(range(n), seed=7)
    epochs = []
    for epoch in range(3):
        s.set_epoch(epoch)
        shards = gathered(list(s))
        world = len(shards)
        order = [shards[k % world][k // world] for k in range(len(shards[0]) * world)][:n]
        expect = ddp.Generator().manual_seed(7 + epoch).numpy.permutation(n).tolist()
        assert order == expect
        epochs.append(order)
    assert epochs[0] != epochs[1] != epochs[2]


@pytest.mark.parametrize("n", [1, 3, 10, 17])
def test_eval_sampler_exact_shards(n):
    rank, world = dist.get_rank(), dist.get_world_size()
    s = DistributedSampler(range(n), shuffle=False, pad=False)
    shards = gathered(list(s))
    assert shards == [list(range(r, n, world)) for r in range(world)]
    assert sorted(i for p in shards for i in p) == list(range(n))
    assert len(s) == len(range(rank, n, world))


def test_dataloader_epochs_cover_dataset():
    n = 30
    x = ddp.arange(n, dtype=ddp.float64) * 10
    ds = TensorDataset(x, ddp.arange(n))
    s = DistributedSampler(ds, seed=1)
    loader = DataLoader(ds, batch_size=4, sampler=s)
    seen_per_epoch = []
    for epoch in range(2):
        s.set_epoch(epoch)
        mine = []
        for xb, yb in loader:
            np.testing.assert_array_equal(xb.numpy(), yb.numpy() * 10.0)
            mine += yb.tolist()
        everyone = gathered(mine)
        flat = [i for p in everyone for i in p]
        assert set(flat) == set(range(n))
        assert len(flat) == -(-n // len(everyone)) * len(everyone)
        seen_per_epoch.append(everyone)
    assert seen_per_epoch[0] != seen_per_epoch[1]

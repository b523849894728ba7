"""SyncBatchNorm under mpiexec -n 2 / -n 4: each rank normalises its shard of one global batch;
together they must compute what BatchNorm computes on the whole batch in one process.

Every rank builds the same global batch, runs SyncBatchNorm on its shard and BatchNorm on the
whole batch locally. The loss is a sum over the global batch, so the input gradient of a shard
is the matching rows of the single-process input gradient, and the parameter gradients summed
over the ranks equal the single-process ones.
"""
import copy

import numpy as np
import pytest

import ddp
import ddp.distributed as dist
import ddp.nn as nn

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.usefixtures("process_group")]

BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
TAIL = {2: (), 3: (5,), 4: (3, 4), 5: (2, 3, 2)}
C = 3



def rank_world():
    return dist.get_rank(), dist.get_world_size()


def shard_sizes(kind):
    _, world = rank_world()
    if kind == "equal":
        return [4] * world
    if kind == "unequal":                       # 5 and 3 samples (then 4, 2, ...)
        return [[5, 3, 4, 2][r % 4] for r in range(world)]
    return [0] + [3] * (world - 1)              # rank 0 holds no sample at all


def my_slice(sizes, rank=None):
    rank = rank_world()[0] if rank is None else rank
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def sum_over_ranks(array, group=None):
    out = np.array(array, dtype=np.float64, copy=True)
    dist.get_communicator(group).Allreduce(out, "sum")
    return out


def same_on_every_rank(array):
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, np.asarray(array))
    for other in everyone[1:]:
        np.testing.assert_array_equal(other, everyone[0])


def make_pair(ndim, momentum, dtype, device="cpu", affine=True, seed=0):
    rng = np.random.default_rng(seed)
    bn = BN[ndim](C, momentum=momentum, affine=affine).to(dtype)
    if affine:
        with ddp.no_grad():
            bn.weight.copy_(ddp.tensor(rng.uniform(0.5, 1.5, C)))
            bn.bias.copy_(ddp.tensor(rng.standard_normal(C)))
    bn = bn.to(device)
    sbn = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(bn))
    return bn, sbn


def run_steps(ndim, sizes, momentum, dtype, tol, device="cpu", affine=True, steps=3):
    rank, _ = rank_world()
    mine = my_slice(sizes)
    bn, sbn = make_pair(ndim, momentum, dtype, device, affine)
    assert isinstance(sbn, nn.SyncBatchNorm)
    total = sum(sizes)
    for step in range(steps):
        rng = np.random.default_rng(100 + step)
        x = rng.standard_normal((total, C) + TAIL[ndim]) * np.array([1, 3, .5]).reshape(
            (1, C) + (1,) * (ndim - 2)) + 2
        gy = rng.standard_normal(x.shape)
        xr = ddp.tensor(x, dtype=dtype, device=device, requires_grad=True)
        xs = ddp.tensor(x[mine], dtype=dtype, device=device, requires_grad=True)
        for m in (bn, sbn):
            m.zero_grad(set_to_none=True)
        yr, ys = bn(xr), sbn(xs)
        assert ys.shape == xs.shape and ys.dtype == dtype
        (yr * ddp.tensor(gy, dtype=dtype, device=device)).sum().backward()
        (ys * ddp.tensor(gy[mine], dtype=dtype, device=device)).sum().backward()
        np.testing.assert_allclose(ys.detach().cpu().double().numpy(),
                                   yr.detach().cpu().double().numpy()[mine], rtol=tol, atol=tol)
        np.testing.assert_allclose(xs.grad.cpu().double().numpy(),
                                   xr.grad.cpu().double().numpy()[mine], rtol=tol, atol=tol)
        if affine:
            for name in ("weight", "bias"):
                local = getattr(sbn, name).grad.cpu().double().numpy()
                np.testing.assert_allclose(sum_over_ranks(local),
                                           getattr(bn, name).grad.cpu().double().numpy(),
                                           rtol=tol, atol=tol)
    for name in ("running_mean", "running_var"):
        mine_stats = getattr(sbn, name).cpu().double().numpy()
        same_on_every_rank(mine_stats)
        np.testing.assert_allclose(mine_stats, getattr(bn, name).cpu().double().numpy(),
                                   rtol=tol, atol=tol)
    assert int(sbn.num_batches_tracked) == steps == int(bn.num_batches_tracked)
    # eval: running statistics, no communication (rank 0 runs one more eval batch than the
    # others: a collective there would hang)
    bn.eval(), sbn.eval()
    rng = np.random.default_rng(7)
    x = rng.standard_normal((max(total, 1), C) + TAIL[ndim])
    for _ in range(2 if rank == 0 else 1):
        ye = sbn(ddp.tensor(x, dtype=dtype, device=device))
    with ddp.no_grad():
        expect = bn(ddp.tensor(x, dtype=dtype, device=device))
    np.testing.assert_allclose(ye.detach().cpu().double().numpy(),
                               expect.cpu().double().numpy(), rtol=tol, atol=tol)
    dist.barrier()


@pytest.mark.parametrize("ndim", [2, 3, 4, 5])
@pytest.mark.parametrize("sizes", ["equal", "unequal"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_batchnorm_on_global_batch(ndim, sizes, momentum):
    run_steps(ndim, shard_sizes(sizes), momentum, ddp.float64, 1e-11)


def test_float32():
    run_steps(4, shard_sizes("unequal"), 0.1, ddp.float32, 2e-5)


def test_without_affine():
    run_steps(3, shard_sizes("unequal"), 0.3, ddp.float64, 1e-11, affine=False)


def test_a_rank_with_an_empty_shard():
    run_steps(4, shard_sizes("empty"), 0.1, ddp.float64, 1e-11)


def test_large_mean_offset_keeps_precision():
    """|mean| / std = 1e3: the variance still agrees with BatchNorm's two-pass one."""
    sizes = shard_sizes("unequal")
    rng = np.random.default_rng(5)
    x = 1000.0 + rng.standard_normal((sum(sizes), C, 4))
    bn, sbn = make_pair(3, 0.5, ddp.float64)
    yr, ys = bn(ddp.tensor(x)), sbn(ddp.tensor(x[my_slice(sizes)]))
    np.testing.assert_allclose(ys.detach().numpy(), yr.detach().numpy()[my_slice(sizes)],
                               rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(sbn.running_var.numpy(), bn.running_var.numpy(), rtol=1e-8)


@pytest.mark.gpu
def test_on_gpu():
    run_steps(4, shard_sizes("unequal"), 0.1, ddp.float32, 2e-5, device="cuda")


def test_one_communication_per_forward_and_backward():
    rank, _ = rank_world()
    comm = dist.get_communicator()
    calls = []
    original = comm.Allreduce

    def counting(array, op="sum"):
        calls.append((array.shape, op))
        return original(array, op)
    comm.Allreduce = counting
    try:
        sbn = nn.SyncBatchNorm(C)
        x = ddp.randn(4, C, 2, dtype=ddp.float64, requires_grad=True)
        y = sbn(x)
        assert calls == [((2 * C + 1,), "sum")]
        y.sum().backward()
        assert calls[1:] == [((2 * C,), "sum")]
        sbn.eval()
        sbn(x)
        assert len(calls) == 2
    finally:
        del comm.Allreduce


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4),
                                      nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.BatchNorm1d(5),
                                  nn.Tanh(), nn.Linear(5, 2))

    def forward(self, x):
        return self.head(self.features(x))


def test_converted_model_trains_like_one_process():
    """Conv -> SyncBN -> ... trained on shards with summed gradients equals the unconverted
    model trained on the whole batch (a loss that sums over the global batch)."""
    rank, _ = rank_world()
    sizes = shard_sizes("unequal")
    mine, total = my_slice(sizes), sum(sizes)
    ddp.manual_seed(0)
    ref = Net().double()
    model = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(ref))
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules()) == 2
    opt_ref = ddp.optim.SGD(ref.parameters(), lr=0.05)
    opt = ddp.optim.SGD(model.parameters(), lr=0.05)
    for step in range(3):
        rng = np.random.default_rng(step)
        x, target = rng.standard_normal((total, 2, 4, 4)), rng.standard_normal((total, 2))
        opt_ref.zero_grad(), opt.zero_grad()
        out_ref = ref(ddp.tensor(x))
        (((out_ref - ddp.tensor(target)) ** 2).sum() / total).backward()
        out = model(ddp.tensor(x[mine]))
        (((out - ddp.tensor(target[mine])) ** 2).sum() / total).backward()
        np.testing.assert_allclose(out.detach().numpy(), out_ref.detach().numpy()[mine],
                                   rtol=1e-10, atol=1e-12)
        for p in model.parameters():
            dist.all_reduce(p.grad)                    # what DDP does (with a sum loss)
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-9, atol=1e-12,
                                       err_msg=name)
        opt_ref.step(), opt.step()
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        same_on_every_rank(a.numpy())
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_inside_distributed_data_parallel():
    """DDP(convert_sync_batchnorm(model)) with a mean loss on equal shards trains exactly like
    the unconverted model on the whole batch (SyncBN's collectives interleave with DDP's)."""
    from ddp.nn.parallel import DistributedDataParallel as DDP
    rank, world = rank_world()
    sizes = shard_sizes("equal")
    mine, total = my_slice(sizes), sum(sizes)
    ddp.manual_seed(1)
    ref = Net().double()
    model = DDP(nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(ref)))
    opt_ref = ddp.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    opt = ddp.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(3):
        rng = np.random.default_rng(10 + step)
        x, target = rng.standard_normal((total, 2, 4, 4)), rng.standard_normal((total, 2))
        opt_ref.zero_grad(), opt.zero_grad()
        ((ref(ddp.tensor(x)) - ddp.tensor(target)) ** 2).mean().backward()
        ((model(ddp.tensor(x[mine])) - ddp.tensor(target[mine])) ** 2).mean().backward()
        opt_ref.step(), opt.step()
    for (name, a), b in zip(model.module.state_dict().items(), ref.state_dict().values()):
        same_on_every_rank(a.numpy())
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_process_group_of_even_or_odd_ranks():
    rank, world = rank_world()
    evens = [r for r in range(world) if r % 2 == 0]
    odds = [r for r in range(world) if r % 2 == 1]
    groups = {0: dist.new_group(evens), 1: dist.new_group(odds)}
    group, members = groups[rank % 2], (evens, odds)[rank % 2]
    sizes = shard_sizes("unequal")
    total = sum(sizes)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((total, C, 3))
    gy = rng.standard_normal(x.shape)
    bn = nn.BatchNorm1d(C).double()
    sbn = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(bn), process_group=group)
    assert sbn.process_group is group
    rows = np.concatenate([np.arange(total)[my_slice(sizes, r)] for r in members])
    xr = ddp.tensor(x[rows], requires_grad=True)          # the group's part of the batch
    yr = bn(xr)
    (yr * ddp.tensor(gy[rows])).sum().backward()
    xs = ddp.tensor(x[my_slice(sizes)], requires_grad=True)
    ys = sbn(xs)
    (ys * ddp.tensor(gy[my_slice(sizes)])).sum().backward()
    local_rows = slice(sum(sizes[r] for r in members if r < rank),
                       sum(sizes[r] for r in members if r <= rank))
    np.testing.assert_allclose(ys.detach().numpy(), yr.detach().numpy()[local_rows], rtol=1e-11,
                               atol=1e-12)
    np.testing.assert_allclose(xs.grad.numpy(), xr.grad.numpy()[local_rows], rtol=1e-11,
                               atol=1e-12)
    np.testing.assert_allclose(sum_over_ranks(sbn.weight.grad.numpy(), group),
                               bn.weight.grad.numpy(), rtol=1e-11)
    np.testing.assert_allclose(sbn.running_var.numpy(), bn.running_var.numpy(), rtol=1e-11)
    for g in groups.values():
        dist.destroy_process_group(g)

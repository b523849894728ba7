"""Every collective of ddp.distributed under mpiexec -n 2 / -n 4, against NumPy.

Each rank can compute every rank's input (``data(r)`` is seeded by ``r``), so the expected
result is computed locally with NumPy over all ranks' inputs.
"""
import numpy as np
import pytest

import ddp
import ddp.distributed as dist

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.usefixtures("process_group")]



def rank_world():
    return dist.get_rank(), dist.get_world_size()


def data(r, shape=(3, 4), seed=0):
    """Rank r's input: float64 values in [0.5, 2) (positive, so PRODUCT stays tame)."""
    return np.random.default_rng(1000 * seed + r).uniform(0.5, 2.0, shape)


def ints(r, shape=(5,), seed=0):
    return np.random.default_rng(1000 * seed + r).integers(-2 ** 40, 2 ** 40, shape)


def all_inputs(fn=data, **kw):
    _, world = rank_world()
    return np.stack([fn(r, **kw) for r in range(world)])


def test_init_and_ranks():
    rank, world = rank_world()
    assert dist.is_initialized() and dist.get_backend() == "mpi"
    from mpi4py import MPI
    assert (rank, world) == (MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size())
    ranks = [None] * world
    dist.all_gather_object(ranks, (rank, dist.get_local_rank(), dist.get_local_world_size()))
    assert [r[0] for r in ranks] == list(range(world))
    assert sorted(r[1] for r in ranks) == list(range(world))    # all on this one machine
    assert {r[2] for r in ranks} == {world}


@pytest.mark.parametrize("op,ref", [
    (dist.ReduceOp.SUM, lambda a: a.sum(0)),
    (dist.ReduceOp.AVG, lambda a: a.mean(0)),
    (dist.ReduceOp.MAX, lambda a: a.max(0)),
    (dist.ReduceOp.MIN, lambda a: a.min(0)),
    (dist.ReduceOp.PRODUCT, lambda a: a.prod(0)),
])
@pytest.mark.parametrize("async_op", [False, True])
def test_all_reduce_float64(op, ref, async_op):
    rank, _ = rank_world()
    t = ddp.tensor(data(rank))
    work = dist.all_reduce(t, op=op, async_op=async_op)
    if async_op:
        assert work.wait() is True and work.is_completed()
    else:
        assert work is None
    np.testing.assert_allclose(t.numpy(), ref(all_inputs()), rtol=1e-14)


@pytest.mark.parametrize("op,ref", [
    (dist.ReduceOp.SUM, lambda a: a.sum(0)), (dist.ReduceOp.MAX, lambda a: a.max(0)),
    (dist.ReduceOp.MIN, lambda a: a.min(0)),
    (dist.ReduceOp.BAND, lambda a: np.bitwise_and.reduce(a)),
    (dist.ReduceOp.BOR, lambda a: np.bitwise_or.reduce(a)),
    (dist.ReduceOp.BXOR, lambda a: np.bitwise_xor.reduce(a)),
])
def test_all_reduce_int64_exact(op, ref):
    rank, _ = rank_world()
    t = ddp.tensor(ints(rank))
    assert t.dtype == ddp.int64
    dist.all_reduce(t, op=op)
    assert t.dtype == ddp.int64
    np.testing.assert_array_equal(t.numpy(), ref(all_inputs(ints)))


def test_all_reduce_avg_of_int_refused():
    t = ddp.tensor([1, 2])
    with pytest.raises(RuntimeError, match="floating point"):
        dist.all_reduce(t, op=dist.ReduceOp.AVG)


def test_all_reduce_float32_and_bfloat16():
    rank, world = rank_world()
    t32 = ddp.tensor(data(rank), dtype=ddp.float32)
    dist.all_reduce(t32)
    np.testing.assert_allclose(t32.numpy(), all_inputs().astype(np.float32).sum(0), rtol=1e-6)
    # bfloat16: small integers and halves are exact, and so are their sums
    vals = np.arange(8) * 0.5 - rank
    tb = ddp.tensor(vals, dtype=ddp.bfloat16)
    dist.all_reduce(tb, op=dist.ReduceOp.SUM)
    assert tb.dtype == ddp.bfloat16
    expect = sum(np.arange(8) * 0.5 - r for r in range(world))
    np.testing.assert_array_equal(tb.float().numpy(), expect)
    tb = ddp.tensor(vals, dtype=ddp.bfloat16)
    dist.all_reduce(tb, op=dist.ReduceOp.MAX)
    np.testing.assert_array_equal(tb.float().numpy(), np.arange(8) * 0.5)


def test_all_reduce_non_contiguous_view_writes_back():
    rank, _ = rank_world()
    base = ddp.tensor(data(rank, (4, 6)))
    view = base.t()[::2]                               # non-contiguous
    dist.all_reduce(view)
    expect = all_inputs(shape=(4, 6))
    full = data(rank, (4, 6))
    full.T[::2] = expect.sum(0).T[::2]
    np.testing.assert_allclose(base.numpy(), full, rtol=1e-14)


def test_several_async_all_reduces_in_flight():
    rank, _ = rank_world()
    ts = [ddp.tensor(data(rank, (7,), seed=s)) for s in range(6)]
    works = [dist.all_reduce(t, async_op=True) for t in ts]
    blocking = ddp.tensor(data(rank, (2,), seed=9))
    dist.all_reduce(blocking)                          # waits for the earlier ones, in order
    for w in works:
        w.wait()
    for s, t in enumerate(ts):
        np.testing.assert_allclose(t.numpy(), all_inputs(shape=(7,), seed=s).sum(0), rtol=1e-14)
    np.testing.assert_allclose(blocking.numpy(), all_inputs(shape=(2,), seed=9).sum(0))


@pytest.mark.parametrize("dtype", [ddp.float64, ddp.int64, ddp.bfloat16])
def test_broadcast_from_last_rank(dtype):
    rank, world = rank_world()
    src = world - 1
    t = ddp.tensor(np.round(data(rank) * 4), dtype=dtype)
    work = dist.broadcast(t, src=src, async_op=True)
    work.wait()
    np.testing.assert_array_equal(t.double().numpy(),
                                  ddp.tensor(np.round(data(src) * 4), dtype=dtype).double().numpy())
    assert t.dtype == dtype


@pytest.mark.parametrize("op,ref", [(dist.ReduceOp.SUM, lambda a: a.sum(0)),
                                    (dist.ReduceOp.AVG, lambda a: a.mean(0)),
                                    (dist.ReduceOp.MAX, lambda a: a.max(0))])
def test_reduce_to_non_zero_rank(op, ref):
    rank, world = rank_world()
    dst = 1
    t = ddp.tensor(data(rank))
    dist.reduce(t, dst=dst, op=op)
    if rank == dst:
        np.testing.assert_allclose(t.numpy(), ref(all_inputs()), rtol=1e-14)


@pytest.mark.parametrize("dtype", [ddp.float64, ddp.int64, ddp.bfloat16])
def test_all_gather(dtype):
    rank, world = rank_world()
    mine = ddp.tensor(np.round(data(rank) * 4), dtype=dtype)
    out = [ddp.zeros(3, 4, dtype=dtype) for _ in range(world)]
    dist.all_gather(out, mine)
    for r, t in enumerate(out):
        assert t.dtype == dtype
        expect = ddp.tensor(np.round(data(r) * 4), dtype=dtype).double().numpy()
        np.testing.assert_array_equal(t.double().numpy(), expect)


def test_all_gather_into_tensor_async():
    rank, world = rank_world()
    out = ddp.zeros(world * 3, 4, dtype=ddp.float64)
    dist.all_gather_into_tensor(out, ddp.tensor(data(rank)), async_op=True).wait()
    np.testing.assert_array_equal(out.numpy(), np.concatenate(list(all_inputs())))


@pytest.mark.parametrize("op,ref", [(dist.ReduceOp.SUM, lambda a: a.sum(0)),
                                    (dist.ReduceOp.AVG, lambda a: a.mean(0)),
                                    (dist.ReduceOp.MIN, lambda a: a.min(0))])
def test_reduce_scatter_tensor_and_list(op, ref):
    rank, world = rank_world()
    full = all_inputs(shape=(world * 2, 3))            # rank r's input: (world * 2, 3)
    expect = ref(full)[rank * 2:(rank + 1) * 2]
    out = ddp.zeros(2, 3, dtype=ddp.float64)
    dist.reduce_scatter_tensor(out, ddp.tensor(full[rank]), op=op)
    np.testing.assert_allclose(out.numpy(), expect, rtol=1e-14)
    out2 = ddp.zeros(2, 3, dtype=ddp.float64)
    chunks = [ddp.tensor(c) for c in np.split(full[rank], world)]
    dist.reduce_scatter(out2, chunks, op=op, async_op=True).wait()
    np.testing.assert_allclose(out2.numpy(), expect, rtol=1e-14)


def test_reduce_scatter_int64():
    rank, world = rank_world()
    full = all_inputs(ints, shape=(world * 3,))
    out = ddp.zeros(3, dtype=ddp.int64)
    dist.reduce_scatter_tensor(out, ddp.tensor(full[rank]))
    np.testing.assert_array_equal(out.numpy(), full.sum(0)[rank * 3:(rank + 1) * 3])


@pytest.mark.parametrize("dtype", [ddp.float64, ddp.bfloat16])
def test_gather_to_last_rank(dtype):
    rank, world = rank_world()
    dst = world - 1
    gl = [ddp.zeros(3, 4, dtype=dtype) for _ in range(world)] if rank == dst else None
    dist.gather(ddp.tensor(data(rank), dtype=dtype), gather_list=gl, dst=dst)
    if rank == dst:
        for r, t in enumerate(gl):
            assert t.dtype == dtype
            np.testing.assert_array_equal(t.double().numpy(),
                                          ddp.tensor(data(r), dtype=dtype).double().numpy())


@pytest.mark.parametrize("dtype", [ddp.float64, ddp.bfloat16])
def test_scatter_from_rank_one(dtype):
    rank, world = rank_world()
    src = 1
    sl = [ddp.tensor(data(r, seed=5), dtype=dtype) for r in range(world)] if rank == src else None
    out = ddp.zeros(3, 4, dtype=dtype)
    dist.scatter(out, scatter_list=sl, src=src)
    np.testing.assert_array_equal(out.double().numpy(),
                                  ddp.tensor(data(rank, seed=5), dtype=dtype).double().numpy())


def test_reduce_scatter_and_reduce_bfloat16():
    rank, world = rank_world()
    full = np.arange(world * 4, dtype=np.float64).reshape(world * 4) * 0.5 + rank
    out = ddp.zeros(4, dtype=ddp.bfloat16)
    dist.reduce_scatter_tensor(out, ddp.tensor(full, dtype=ddp.bfloat16))
    expect = sum(np.arange(world * 4) * 0.5 + r for r in range(world))[rank * 4:(rank + 1) * 4]
    np.testing.assert_array_equal(out.float().numpy(), expect)
    t = ddp.tensor(full, dtype=ddp.bfloat16)
    dist.reduce(t, dst=world - 1, op=dist.ReduceOp.MAX)
    if rank == world - 1:
        np.testing.assert_array_equal(t.float().numpy(), np.arange(world * 4) * 0.5 + world - 1)


def test_scatter_int64():
    rank, world = rank_world()
    sl = [ddp.tensor(ints(r)) for r in range(world)] if rank == 0 else None
    out = ddp.zeros(5, dtype=ddp.int64)
    dist.scatter(out, sl, src=0)
    np.testing.assert_array_equal(out.numpy(), ints(rank))


def test_object_collectives():
    rank, world = rank_world()
    objs = [{"rank": rank, "x": [rank] * 3}, f"s{rank}", None]
    dist.broadcast_object_list(objs, src=world - 1)
    assert objs == [{"rank": world - 1, "x": [world - 1] * 3}, f"s{world - 1}", None]
    out = [None] * world
    dist.all_gather_object(out, (rank, np.arange(rank)))
    assert [o[0] for o in out] == list(range(world))
    for r, o in enumerate(out):
        np.testing.assert_array_equal(o[1], np.arange(r))
    dst = 1
    gathered = [None] * world if rank == dst else None
    dist.gather_object({"r": rank}, gathered, dst=dst)
    if rank == dst:
        assert gathered == [{"r": r} for r in range(world)]
    else:
        assert gathered is None


def test_new_group_of_even_ranks():
    rank, world = rank_world()
    evens = [r for r in range(world) if r % 2 == 0]
    odds = [r for r in range(world) if r % 2 == 1]
    g_even = dist.new_group(evens)
    g_odd = dist.new_group(odds)
    mine, members = (g_even, evens) if rank % 2 == 0 else (g_odd, odds)
    other = g_odd if rank % 2 == 0 else g_even
    assert other is dist.GroupMember.NON_GROUP_MEMBER
    assert dist.get_world_size(mine) == len(members)
    assert dist.get_rank(mine) == members.index(rank)
    t = ddp.tensor(data(rank))
    dist.all_reduce(t, group=mine)
    np.testing.assert_allclose(t.numpy(), sum(data(r) for r in members), rtol=1e-14)
    # broadcast inside the group from its last member (a global rank)
    b = ddp.tensor(data(rank, seed=3))
    dist.broadcast(b, src=members[-1], group=mine)
    np.testing.assert_array_equal(b.numpy(), data(members[-1], seed=3))
    objs = [None] * len(members)
    dist.all_gather_object(objs, rank, group=mine)
    assert objs == members
    dist.barrier(group=mine)
    dist.destroy_process_group(g_even)
    dist.destroy_process_group(g_odd)
    t = ddp.tensor([1.0])
    dist.all_reduce(t)                                 # the world group still works
    assert t.item() == world


def test_barrier_orders_side_effects(tmp_path_factory):
    rank, world = rank_world()
    box = [str(tmp_path_factory.mktemp("barrier")) if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    import os
    path = os.path.join(box[0], f"rank{rank}")
    with open(path, "w") as f:
        f.write(str(rank))
    dist.barrier()
    for r in range(world):                             # every rank's file exists now
        with open(os.path.join(box[0], f"rank{r}")) as f:
            assert f.read() == str(r)
    dist.barrier(async_op=True).wait()
    dist.barrier()                                     # nobody leaves before all have read


def test_shape_mismatch_errors_are_local():
    _, world = rank_world()
    with pytest.raises(ValueError, match="tensor_list"):
        dist.all_gather([ddp.zeros(2)] * (world + 1), ddp.zeros(2))
    with pytest.raises(ValueError, match="elements"):
        dist.all_gather_into_tensor(ddp.zeros(world * 2 + 1), ddp.zeros(2))

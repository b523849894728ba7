"""The NCCL communicator on 2 and 4 ranks, each on its own (simulated or real) GPU: collectives
give MPI's answers, and DDP trained over NCCL equals one process on the full batch.

On the simulated device NCCL's work is done by tests/gpu/nccl_transport.py over MPI; on a real
GPU the same tests use CuPy's NCCL.
"""
import numpy as np
import pytest

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.distributed.nccl import NCCLCommunicator
from ddp.distributed.process_group import ProcessGroup
from ddp.nn.parallel import DistributedDataParallel as DDP

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.gpu,
              pytest.mark.usefixtures("process_group")]


@pytest.fixture
def nccl_group():
    """A process group over NCCL, this rank on GPU ``rank``."""
    mpi = dist.get_communicator()
    ddp.cuda.set_device(mpi.rank % ddp.cuda.device_count())
    transport = None
    if getattr(ddp.backend.cuda_module(), "is_simulated", False):
        from tests.gpu.nccl_transport import Transport
        transport = Transport(mpi.comm.Dup())
    comm = NCCLCommunicator(mpi.dup(), transport=transport, watchdog=False)
    yield ProcessGroup(comm, range(comm.size), "nccl"), transport
    comm.free()
    ddp.cuda.set_device(0)


def test_collectives_match_mpi(nccl_group):
    group, transport = nccl_group
    comm, rank, world = group.comm, group.comm.rank, group.comm.size
    for dtype in (np.float32, np.float64, np.float16, np.int64):
        a = ddp.backend.cuda_module().full(5, rank + 1, dtype=dtype)
        comm.Allreduce(a, "sum")
        assert a.get().tolist() == [world * (world + 1) / 2] * 5
    t = ddp.full((3,), float(rank), device="cuda")
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    assert t.cpu().tolist() == [world - 1] * 3
    gathered = [ddp.zeros(2, device="cuda") for _ in range(world)]
    dist.all_gather(gathered, ddp.full((2,), float(rank), device="cuda"), group=group)
    assert [g.cpu().tolist() for g in gathered] == [[r, r] for r in range(world)]
    b = ddp.full((2,), float(rank), device="cuda")
    dist.broadcast(b, src=world - 1, group=group)
    assert b.cpu().tolist() == [world - 1] * 2
    if transport is not None:
        assert {name for name, _, _ in transport.calls} >= {"allReduce", "allGather", "bcast"}


def test_ddp_over_nccl_equals_one_process_on_the_full_batch(nccl_group):
    group, transport = nccl_group
    rank, world = group.comm.rank, group.comm.size
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4 * world, 5)), rng.integers(0, 3, 4 * world)

    def model():
        ddp.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()

    def train(m, xs, ys):
        opt = ddp.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(m(xs), ys).backward()
            opt.step()
    dev = f"cuda:{ddp.cuda.current_device()}"
    net = DDP(model().to(dev), process_group=group, bucket_cap_mb=0.0001)
    part = slice(4 * rank, 4 * rank + 4)
    train(net, ddp.tensor(x[part], device=dev), ddp.tensor(y[part], device=dev))
    ref = model()
    train(ref, ddp.tensor(x), ddp.tensor(y))
    for p, q in zip(net.module.parameters(), ref.parameters()):
        assert p.is_cuda
        np.testing.assert_allclose(p.detach().cpu().numpy(), q.detach().numpy(), rtol=1e-10,
                                   atol=1e-12)
    if transport is not None:   # the buckets went by NCCL
        assert sum(name == "allReduce" for name, _, _ in transport.calls) >= 3 * 2

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


@pytest.mark.parametrize("mode", ["thread", "nonblocking"])
def test_mpi_path_for_gpu_arrays(process_group, mode, monkeypatch):
    """Without NCCL, GPU arrays go through MPI staged in pinned host buffers (one per array,
    reused) and DDP's communication thread works on the rank's GPU, not GPU 0."""
    mpi = dist.get_communicator()
    rank, world = mpi.rank, mpi.size
    ddp.cuda.set_device(rank % ddp.cuda.device_count())
    try:
        a = ddp.backend.cuda_module().full(6, float(rank))
        for _ in range(2):
            mpi.Allreduce(a, "sum")
        assert a.get().tolist() == [sum(range(world)) * world] * 6
        assert sum(k[0] == ddp.backend.data_ptr(a) for k in mpi._pinned) == 1
        # work handed to the communication thread (a comm hook's averaging) runs on this GPU
        assert mpi.submit(lambda: float((a / world).sum())).result() == a.get().sum() / world
        dev = f"cuda:{ddp.cuda.current_device()}"
        monkeypatch.setenv("DDP_COMM_MODE", mode)   # "thread": the collective runs on another
        ddp.manual_seed(0)
        net = DDP(nn.Linear(4, 2).double().to(dev), bucket_cap_mb=0.0001)
        x = ddp.tensor(np.full((2, 4), float(rank)), device=dev)
        net(x).sum().backward()
        grads = [p.grad.cpu().numpy() for p in net.parameters()]
        np.testing.assert_allclose(grads[0], np.full((2, 4), 2 * sum(range(world)) / world))
        np.testing.assert_allclose(grads[1], np.full(2, 2.0))
    finally:
        ddp.cuda.set_device(0)

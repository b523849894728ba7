"""The NCCL communicator in one process: what goes by NCCL (device arrays, in which element types,
on the communication stream), what goes by the MPI companion (host arrays, objects, bitwise ops),
the collectives NCCL lacks (gather, scatter), the watchdog, and the errors.

On the simulated device, NCCL's work is done by tests/gpu/nccl_transport.py; the multi-rank
behaviour (results equal to MPI's, DDP on NCCL) is tested in tests/distributed/test_nccl.py.
"""
import numpy as np
import pytest

import ddp
import ddp.distributed as dist
from ddp.distributed.communicator import SingleCommunicator
from ddp.distributed.nccl import NCCLCommunicator, SharedGPUError, StreamWork
from tests.gpu.nccl_transport import Transport

pytestmark = pytest.mark.gpu


@pytest.fixture
def nccl():
    transport = Transport()
    comm = NCCLCommunicator(SingleCommunicator(), device=0, transport=transport, watchdog=False)
    yield comm, transport
    comm.free()


def test_device_arrays_go_by_nccl_in_their_own_types(nccl):
    comm, transport = nccl
    cp = ddp.backend.cuda_module()
    for dtype in (np.float16, ddp.bfloat16.np, np.float32, np.float64, np.int32, np.int64,
                  np.int8, np.uint8, np.bool_):
        a = cp.ones(5, dtype=dtype)
        comm.Allreduce(a, "sum")
        assert a.get().astype(np.float64).tolist() == [1.0] * 5
    sent = [(name, dt) for name, dt, _ in transport.calls]
    assert sent[-1] == ("allReduce", np.dtype(np.uint8))          # bool travels as uint8
    assert ("allReduce", np.dtype(ddp.bfloat16.np)) in sent
    assert len(transport.calls) == 9


def test_host_arrays_objects_and_bitwise_ops_use_the_companion(nccl):
    comm, transport = nccl
    comm.Allreduce(np.ones(3), "sum")
    comm.Allreduce(ddp.backend.cuda_module().ones(3, dtype=np.int32), "bor")
    assert comm.allgather_obj({"a": 1}) == [{"a": 1}]
    assert transport.calls == []


def test_every_collective_routes_and_computes(nccl):
    comm, transport = nccl
    cp = ddp.backend.cuda_module()
    a = cp.arange(4.0)
    comm.Bcast(a, 0)
    comm.Reduce(a, "max", 0)
    recv = cp.zeros((1, 4))
    comm.Allgather(a, recv)
    comm.Gather(a, recv, 0)
    assert recv.get().tolist() == [[0, 1, 2, 3]]
    out = cp.zeros(4)
    comm.Reduce_scatter(a, out, "sum")
    scattered = cp.zeros(4)
    comm.Scatter(cp.arange(4.0).reshape(1, 4), scattered, 0)
    assert scattered.get().tolist() == [0, 1, 2, 3]
    assert [c[0] for c in transport.calls] == ["bcast", "reduce", "allGather", "allGather",
                                               "reduceScatter", "bcast"]


def test_async_allreduce_keeps_its_array_until_done(nccl):
    comm, _ = nccl
    a = ddp.backend.cuda_module().ones(8)
    work = comm.Iallreduce(a, "sum")
    assert isinstance(work, StreamWork) and work._arrays is not None
    assert work.wait() and work.result() is a
    assert work.is_completed() and work._arrays is None


def test_non_contiguous_device_arrays(nccl):
    comm, _ = nccl
    a = ddp.backend.cuda_module().arange(12.0).reshape(3, 4)[:, 1]
    comm.Allreduce(a, "sum")
    assert a.get().tolist() == [1, 5, 9]


def test_watchdog_reports_nccl_errors_and_late_collectives():
    faults = []
    transport = Transport()
    comm = NCCLCommunicator(SingleCommunicator(), device=0, transport=transport, timeout=30,
                            on_fault=faults.append, watchdog=False)
    assert comm.watch_once() is None
    transport.async_error = RuntimeError("NCCL error: unhandled system error")
    assert "unhandled system error" in comm.watch_once() and "rank 0" in faults[-1]
    transport.async_error = None
    class NeverDone:                            # as if a peer never joined the collective
        def query(self):
            return False
    work = StreamWork(NeverDone(), (), None, "allreduce")
    comm._inflight.append(work)
    assert comm.watch_once(now=work.started + 29) is None
    message = comm.watch_once(now=work.started + 31)
    assert "allreduce" in message and "did not finish within 30 s" in message
    comm.free()


def test_ranks_sharing_a_gpu_are_refused():
    class TwoRanksOneGPU(SingleCommunicator):
        def allgather_obj(self, obj):
            return [obj, obj]
    with pytest.raises(SharedGPUError, match="share a GPU"):
        NCCLCommunicator(TwoRanksOneGPU(), device=0, transport=Transport(), watchdog=False)


def test_nccl_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(ddp.backend, "cuda_is_available", lambda: False)
    with pytest.raises(RuntimeError, match="NCCL needs a CUDA GPU"):
        dist.init_process_group("nccl")
    assert not dist.is_initialized()


def test_types_nccl_cannot_move(nccl):
    comm, _ = nccl
    from ddp.distributed.nccl import nccl_dtype
    with pytest.raises(TypeError, match="NCCL cannot move"):
        nccl_dtype(Transport(), np.complex64)

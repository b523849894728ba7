"""The communicator interface: an ABC that declares everything its users call, and backends by
name (plain tests; they also run on every rank under mpiexec)."""
import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from ddp.distributed import communicator
from ddp.distributed.communicator import Communicator, SingleCommunicator

ROOT = pathlib.Path(__file__).resolve().parents[2]

# The modules that use a ddp Communicator (in mpi.py and stall.py ``comm`` is mpi4py's).
USERS = ["ddp/distributed/reducer.py", "ddp/distributed/collectives.py",
         "ddp/distributed/process_group.py", "ddp/distributed/helpers.py",
         "ddp/distributed/algorithms", "ddp/nn/parallel/distributed.py",
         "ddp/nn/sync_batchnorm.py", "ddp/amp/grad_scaler.py"]


def _comm_attributes(path):
    """Attributes read on an expression named ``comm`` (``comm.x``, ``self.comm.x``,
    ``pg.comm.x``) in a file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else \
                owner.attr if isinstance(owner, ast.Attribute) else None
            if name in ("comm", "_comm"):
                found.add((node.attr, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return found


def test_the_interface_declares_everything_its_users_call():
    used = set()
    for entry in USERS:
        p = ROOT / entry
        for f in ([p] if p.suffix == ".py" else sorted(p.rglob("*.py"))):
            used |= _comm_attributes(f)
    assert {a for a, _ in used} >= {"Allreduce", "Iallreduce", "Iallreduce_nonblocking",
                                    "progress", "local_size", "bcast_obj"}  # the scan sees them
    undeclared = sorted(f"{a} ({where})" for a, where in used if not hasattr(Communicator, a)
                        and a not in Communicator.__annotations__)
    assert not undeclared, "called on a communicator but not declared by Communicator:\n" + \
        "\n".join(undeclared)


def test_a_backend_must_implement_the_abstract_collectives():
    class Half(Communicator):
        def Allreduce(self, array, op="sum"):
            return array
    with pytest.raises(TypeError, match="abstract"):
        Half()
    assert {"Allreduce", "Bcast", "Allgather", "Barrier", "bcast_obj", "split"} <= \
        Communicator.__abstractmethods__


def test_the_defaults_give_a_working_asynchronous_surface():
    comm = SingleCommunicator()
    assert (comm.rank, comm.size, comm.local_rank, comm.local_size) == (0, 1, 0, 1)
    assert not comm.has_nonblocking
    buf = np.arange(3.0)
    work = comm.Iallreduce_nonblocking(buf, "sum")
    comm.progress()
    assert work.wait() and work.is_completed()
    np.testing.assert_array_equal(buf, [0.0, 1.0, 2.0])
    assert comm.dup().size == 1
    with pytest.raises(ValueError, match="unknown reduce op"):
        comm.Allreduce(buf, "mean")


def test_backends_by_name():
    assert communicator._BACKENDS["nccl"] == "ddp.distributed.nccl:NCCLCommunicator"
    assert communicator._BACKENDS["mpi"] == "ddp.distributed.mpi:MPICommunicator"
    assert communicator.communicator_class("SINGLE") is SingleCommunicator
    with pytest.raises(ValueError, match="unknown backend 'nope'.*mpi, nccl"):
        communicator.communicator_class("nope")
    communicator.register_backend("bogus", "ddp.distributed.no_such_module:X")
    try:
        with pytest.raises(RuntimeError, match="'bogus' backend .* not available"):
            communicator.new_communicator("bogus")
        communicator.register_backend("bogus", dict)
        with pytest.raises(TypeError, match="not a Communicator subclass"):
            communicator.new_communicator("bogus")
    finally:
        del communicator._BACKENDS["bogus"]


def test_init_process_group_builds_a_registered_backend():
    code = """
import ddp.distributed as dist
from ddp.distributed.communicator import SingleCommunicator
class Loopback(SingleCommunicator):
    name = "loopback"
dist.register_backend("loopback", Loopback)
dist.init_process_group("loopback")
print(type(dist.get_communicator()).__name__, dist.get_backend(), dist.get_world_size())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                     "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Loopback", "loopback", "1"]


@pytest.mark.parametrize("affinity, one_machine, mode", [
    ({0, 1, 2, 3}, True, "thread"), ({0}, True, "shared"), ({0}, False, "nonblocking")])
def test_auto_comm_mode_counts_the_cores_the_job_may_use(monkeypatch, affinity, one_machine,
                                                         mode):
    # a cluster job's cpuset (its CPU affinity) decides whether a core is spare for DDP's
    # communication thread, not os.cpu_count(), which counts the whole machine's; without one,
    # ranks that share a machine sum in shared memory
    from ddp.distributed import environment, reducer
    monkeypatch.delenv("DDP_COMM_MODE", raising=False)
    monkeypatch.setattr(environment.os, "sched_getaffinity", lambda pid: affinity, raising=False)
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 64)

    class TwoRanksOnThisMachine:
        local_size = 2
        has_nonblocking = True
        has_shared_sum = one_machine

    assert reducer._choose_comm_mode(TwoRanksOnThisMachine()) == mode

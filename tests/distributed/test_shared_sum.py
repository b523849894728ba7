"""Sums in memory the ranks of one machine share (ddp/distributed/shared_sum.py): under
``launcher -n 2`` / ``-n 4`` against the sum one process computes, and the files' lifecycle
in one process."""
import os

import numpy as np
import pytest

import ddp.distributed as dist
from ddp.distributed import shared_sum
from ddp.distributed.communicator import SingleCommunicator

needs_shm = pytest.mark.skipif(not shared_sum.available(), reason="no /dev/shm")


def _ours():
    return {n for n in os.listdir(shared_sum.SHM_DIR)
            if n.startswith("ddp-") and f"-{os.getpid()}-" in n}


@needs_shm
def test_one_rank_sums_with_itself_and_leaves_no_file():
    before = _ours()
    bufs = shared_sum.allocate(SingleCommunicator(), [(5, np.float32), (3, np.float64)])
    assert [b.mine.dtype for b in bufs] == [np.float32, np.float64]
    assert not np.any(bufs[0].mine) and _ours() == before   # zero-filled, files unlinked
    bufs[0].mine[:] = np.arange(5)
    bufs[0].sum()
    np.testing.assert_array_equal(bufs[0].mine, np.arange(5))
    old = bufs[1].mine
    old[:] = 7.0
    new = bufs[1].fresh()
    assert new is bufs[1].mine and not np.any(new) and old.tolist() == [7.0] * 3
    bufs[1].settle()
    assert _ours() == before


@needs_shm
def test_no_room_in_dev_shm_gives_none_and_leaves_no_file(monkeypatch):
    # a full memory file system would be SIGBUS at the first write; the reservation fails
    def full(fd, offset, length):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(shared_sum.os, "posix_fallocate", full)
    before = _ours()
    assert shared_sum.allocate(SingleCommunicator(), [(1 << 20, np.float32)]) is None
    assert _ours() == before


@needs_shm
def test_files_of_processes_that_died_are_removed():
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = os.path.join(shared_sum.SHM_DIR, f"ddp-bucket-{dead}-abc123")
    mine = os.path.join(shared_sum.SHM_DIR, f"ddp-bucket-{os.getpid()}-abc123")
    for path in (stale, mine):
        open(path, "wb").close()
    try:
        shared_sum.remove_stale()
        assert not os.path.exists(stale) and os.path.exists(mine)
    finally:
        for path in (stale, mine):
            if os.path.exists(path):
                os.unlink(path)


@pytest.mark.mpi(min_size=2)
@pytest.mark.usefixtures("process_group")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", ["kernel", "numpy"])
@pytest.mark.parametrize("together", [False, True])
def test_every_rank_gets_the_same_sum(dtype, path, together, request):
    if path == "numpy":
        request.getfixturevalue("numpy_path")
    comm = dist.get_communicator()
    if not comm.has_shared_sum:
        pytest.skip("the ranks are not all on one machine")
    rank, world = comm.rank, comm.size
    sizes = [1, world - 1, 1000003]   # parts of 0 and 1 element, and uneven ones
    bufs = comm.shared_buffers([(n, dtype) for n in sizes])
    rng = [np.random.default_rng(r) for r in range(world)]
    for step in range(3):
        data = [[g.standard_normal(n).astype(dtype) for n in sizes] for g in rng]
        if step == 1 and rank == world - 1:   # one rank alone moves a buffer (a lent .grad)
            bufs[2].fresh()
        for buf, mine in zip(bufs, data[rank]):
            buf.mine[...] = mine
            if not together:
                comm.Allreduce_shared(buf).wait()
        if together:   # (as DDP's reducer sums its buckets)
            comm.Allreduce_shared(*bufs).wait()
        for k, buf in enumerate(bufs):
            want = np.sum([d[k] for d in data], axis=0, dtype=np.float64)
            np.testing.assert_allclose(buf.mine, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                       atol=1e-5)
            everyone = comm.allgather_obj(buf.mine.tobytes())
            assert all(b == everyone[0] for b in everyone)   # the same bits everywhere
    assert not _ours()

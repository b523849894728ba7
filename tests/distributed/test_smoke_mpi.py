"""Smoke test that the MPI stack (mpich wheel + mpi4py) works under mpiexec."""

import numpy as np
import pytest


@pytest.mark.mpi(min_size=2)
def test_allreduce_of_ranks():
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    expected = size * (size - 1) // 2

    # Pickle-based (lowercase) allreduce of a Python int.
    assert comm.allreduce(rank, op=MPI.SUM) == expected

    # Buffer-based (uppercase) Allreduce of a NumPy array filled with the rank.
    send = np.full(8, rank, dtype=np.float64)
    recv = np.empty_like(send)
    comm.Allreduce(send, recv, op=MPI.SUM)
    np.testing.assert_array_equal(recv, np.full(8, expected, dtype=np.float64))

    # In-place variant, as used for gradient buckets.
    buf = np.arange(5, dtype=np.float32) + rank
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    np.testing.assert_array_equal(
        buf, np.arange(5, dtype=np.float32) * size + expected
    )

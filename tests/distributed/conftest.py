"""The MPI test modules share one default process group (created on first use)."""
import pytest

import ddp.distributed as dist


@pytest.fixture(scope="session")
def process_group():
    """The default process group; MPI when the tests run under mpiexec."""
    if not dist.is_initialized():
        dist.init_process_group()
    yield

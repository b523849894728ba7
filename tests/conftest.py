"""Shared pytest configuration for the ddp test suite.

* Pins BLAS/OpenMP to one thread per process (set before NumPy is imported),
  so that several MPI ranks on a small machine do not oversubscribe the cores.
* Registers the ``gpu`` marker and skips such tests when CuPy or a CUDA
  device is unavailable.
* Under a multi-rank MPI run, a failing test prints its report and aborts the
  whole MPI job, so the other ranks never hang in a collective waiting for the
  failed one.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402

import pytest  # noqa: E402

# Environment variables that MPI launchers set with the world size.
_MPI_SIZE_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def pytest_addoption(parser):
    parser.addoption("--record-oracle", action="store_true", default=False,
                     help="run PyTorch live and write its answers to tests/oracle_data "
                          "(see tests/oracle.py)")


@pytest.fixture
def oracle(request):
    """PyTorch's recorded answer for this test (tests/oracle.py)."""
    from tests.oracle import Oracle
    return Oracle(request.node, request.config.getoption("--record-oracle"))


def pytest_sessionfinish(session, exitstatus):
    if session.config.getoption("--record-oracle"):
        from tests.oracle import write_pending
        write_pending()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: test that needs CuPy and a CUDA device (skipped otherwise)"
    )


def _gpu_unavailable_reason():
    """Return None when CuPy sees a CUDA device, else why not."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when no driver/device
        return f"no CUDA device available ({type(exc).__name__}: {exc})"
    if count < 1:
        return "no CUDA device available (getDeviceCount() == 0)"
    return None


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return  # do not pay for importing CuPy when no test needs it
    reason = _gpu_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"gpu test skipped: {reason}")
    for item in gpu_items:
        item.add_marker(skip)


def _env_suggests_multirank():
    for var in _MPI_SIZE_ENV:
        try:
            if int(os.environ.get(var, "0")) > 1:
                return True
        except ValueError:
            pass
    return False


def _mpi_world_if_multirank():
    """COMM_WORLD when this is a live MPI job with >1 rank, else None.

    mpi4py is only touched when it is already imported (pytest-mpi imports it
    under --with-mpi) or when a launcher's environment says we run as one of
    several ranks; plain ``pytest`` runs never import it here.
    """
    if "mpi4py.MPI" not in sys.modules and not _env_suggests_multirank():
        return None
    try:
        from mpi4py import MPI
    except Exception:
        return None
    try:
        if not MPI.Is_initialized() or MPI.Is_finalized():
            return None
        comm = MPI.COMM_WORLD
        if comm.Get_size() <= 1:
            return None
    except Exception:
        return None
    return comm


def pytest_runtest_logreport(report):
    if not report.failed:
        return
    comm = _mpi_world_if_multirank()
    if comm is None:
        return
    rank, size = comm.Get_rank(), comm.Get_size()
    prefix = f"[rank {rank}/{size}] "
    text = report.longreprtext or "(no traceback)"
    lines = [
        f"{prefix}FAILED {report.nodeid} ({report.when}); aborting the MPI job "
        "so other ranks do not hang in a collective",
    ]
    lines += [prefix + line for line in text.splitlines()]
    for section, content in getattr(report, "sections", ()):
        lines.append(f"{prefix}----- {section} -----")
        lines += [prefix + line for line in content.splitlines()]
    try:
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()
        sys.stdout.flush()
    finally:
        comm.Abort(1)

"""Shared pytest configuration for the ddp test suite.

* Pins BLAS/OpenMP to one thread per process (set before NumPy is imported),
  so that several MPI ranks on a small machine do not oversubscribe the cores.
* Registers the ``gpu`` marker; such tests run on the simulated CUDA device of tests/simcuda
  when CuPy or a CUDA
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
def numpy_path(monkeypatch):
    """The ops' NumPy path on the CPU: ddp.kernels' fused loops off (as DDP_CPU_KERNELS=0)."""
    from ddp import kernels
    monkeypatch.setattr(kernels, "_enabled", False)


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
        "markers", "gpu: test of the CUDA path (CuPy on a GPU, else the simulated device of tests/simcuda)"
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


_simulate_gpu = False   # no real GPU: gpu-marked tests run on tests/simcuda


def pytest_collection_modifyitems(config, items):
    global _simulate_gpu
    if not any(item.get_closest_marker("gpu") for item in items):
        return  # do not pay for importing CuPy when no test needs it
    _simulate_gpu = _gpu_unavailable_reason() is not None


@pytest.fixture(autouse=True)
def _cuda_device(request):
    """A gpu-marked test runs on CuPy where a GPU is visible, else on the simulated device
    (tests/simcuda), which reproduces CuPy's restrictions, so CI runs the CUDA path too."""
    if not (_simulate_gpu and request.node.get_closest_marker("gpu")):
        yield
        return
    from ddp import backend
    from tests import simcuda
    backend.use_cuda_module(simcuda.cupy, simcuda.cupyx)
    simcuda.reset_stats()
    try:
        yield
    finally:
        backend.set_default_device("cpu")
        backend.use_cuda_module(None)


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

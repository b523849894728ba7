"""The simulated CUDA device can fail: each GPU defect found by reading the code (issue 10) is
written here the way the code used to be, and the simulation refuses or counts it as CuPy on a
GPU would. The fixed code is tested in the other files of this folder.

These tests are about tests/simcuda itself, so they run on it even where a GPU is visible.
"""
import threading

import numpy as np
import pytest

import ddp
from tests import simcuda

cp, cupyx = simcuda.cupy, simcuda.cupyx


@pytest.fixture(autouse=True)
def on_simulated_device():
    ddp.backend.use_cuda_module(cp, cupyx)
    simcuda.reset_stats()
    yield
    ddp.backend.set_default_device("cpu")
    ddp.backend.use_cuda_module(None)


def test_where_with_a_python_bool_condition_is_refused():
    """Pow.backward computed ``xp.where(b == 0, ...)`` with b a number: a bool condition."""
    a = cp.arange(3.0)
    b = 2
    with pytest.raises(AttributeError, match="astype"):
        cp.where(b == 0, 0.0, b * a ** (b - 1))
    ddp.tensor([1.0, 2.0], device="cuda", requires_grad=True).pow(2).sum().backward()  # fixed


def test_implicit_host_conversion_is_refused():
    """np.asarray on device arrays (list-of-tensor indices, Tensor(cupy_array))."""
    a = cp.arange(3)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray([a, a])
    with pytest.raises(TypeError, match="cannot meet a CUDA array"):
        a + np.ones(3)
    with pytest.raises(TypeError, match="Tensor.cpu"):   # ddp refuses as PyTorch does
        np.asarray(ddp.ones(2, device="cuda"))


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.int8, np.int16, ddp.bfloat16.np])
def test_atomic_add_dtypes_are_cupys(dtype):
    """cupyx.scatter_add / ufunc.at have no int64, bool, int8/16 or bfloat16 kernels."""
    out = cp.zeros(3, dtype=dtype)
    with pytest.raises(TypeError, match="does not support dtype"):
        cupyx.scatter_add(out, cp.asarray(np.array([0, 1])), cp.ones(2, dtype=dtype))
    ddp.backend.index_add_at(out, cp.asarray(np.array([0, 1, 1])), cp.ones(3, dtype=dtype))
    assert out.get().astype(np.float64).tolist()[0] == 1


def test_each_thread_has_its_own_current_device():
    """The MPI communication thread ran on GPU 0 while the rank's arrays lived on its GPU."""
    with cp.cuda.Device(1):
        a = cp.ones(4)
    errors = []

    def comm_thread(select):
        try:
            if select:
                with cp.cuda.Device(a.device.id):
                    a / 2
            else:
                a / 2
        except ValueError as exc:
            errors.append(exc)
    for select in (False, True):
        t = threading.Thread(target=comm_thread, args=(select,))
        t.start()
        t.join()
    assert len(errors) == 1 and "resides (1)" in str(errors[0])


def test_cuda_means_the_current_device_not_gpu_0():
    """'cuda' always meant GPU 0: with GPU 1 current, a hard-coded 0 lands elsewhere."""
    with cp.cuda.Device(1):
        assert cp.zeros(2).device.id == 1
        assert ddp.ones(2).cuda().device.index == 1
        assert ddp.zeros(2, device="cuda").device.index == 1


def test_overlapping_in_place_update_races():
    """``t[1:].add_(t[:-1])``: NumPy buffers the overlap, a GPU kernel races."""
    a = cp.arange(6.0)
    with pytest.raises(RuntimeError, match="race"):
        a[1:] += a[:-1]
    with pytest.raises(RuntimeError, match="race"):
        a[1:] = a[:-1]
    t = ddp.arange(6.0, device="cuda")
    t[1:].add_(t[:-1])                       # ddp copies first
    assert t.cpu().tolist() == [0, 1, 3, 5, 7, 9]


def test_host_round_trips_are_counted():
    """Dropout masks drawn on the host and copied; per-call tables rebuilt on the host;
    ``bool(...)`` range checks: each is a transfer the simulation counts."""
    x = cp.ones((4, 4))
    host_mask = np.random.default_rng(0).random((4, 4)) > 0.5    # the old dropout
    x * cp.asarray(host_mask)
    assert simcuda.stats["to_device"] == 1
    bool((x >= 0).all())                                           # the old target check
    assert simcuda.stats["to_host"] == 1
    simcuda.reset_stats()
    xt = ddp.ones(4, 4, device="cuda", requires_grad=True)
    ddp.nn.functional.dropout(xt, 0.5).sum().backward()            # fixed: nothing crosses
    ddp.nn.functional.cross_entropy(xt, ddp.tensor([0, 1, 2, 3], device="cuda")).backward()
    assert simcuda.stats == {"to_host": 0, "to_device": 1}   # the target list, once


def test_reductions_give_device_scalars():
    """CuPy's sum/max give 0-d device arrays: using one as a Python number is a sync."""
    s = cp.arange(4.0).sum()
    assert isinstance(s, simcuda.ndarray) and s.shape == ()
    float(s)
    assert simcuda.stats["to_host"] == 1

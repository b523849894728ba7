"""ddp.kernels' machinery: which arrays go to a kernel, the switch, the compilation."""
import os
import subprocess
import sys

import numpy as np
import pytest

from ddp import kernels
from ddp.kernels import sums


def test_fits_takes_contiguous_float_numpy_arrays_of_one_dtype():
    a = np.ones((3, 4), np.float32)
    assert kernels.fits(a, None, np.ones(4, np.float32))
    assert not kernels.fits(a, np.ones(4))                  # float32 with float64
    assert not kernels.fits(a.T)                            # not C-contiguous
    assert not kernels.fits(a.astype(np.float16))           # not float32/float64
    assert not kernels.fits(a.astype(np.int64))
    assert not kernels.fits(np.ones((0, 4), np.float32))    # empty
    assert not kernels.fits(np.ma.masked_array(a))          # a subclass


def test_ddp_cpu_kernels_0_turns_them_off():
    code = "from ddp import kernels; import numpy as np; print(kernels.enabled(), " \
           "kernels.fits(np.ones(3)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "DDP_CPU_KERNELS": "0"}, check=True).stdout
    assert out.split() == ["False", "False"]


def test_a_kernel_compiles_without_a_place_for_its_cache(monkeypatch):
    """Numba raises where no cache directory is writable (a read-only install and home); the
    kernel is then compiled in the process, uncached."""
    import numba
    real = numba.njit

    def njit(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        return real(*args, **kwargs)
    monkeypatch.setattr(numba, "njit", njit)

    @kernels.jit
    def double(a, out):
        for i in range(a.shape[0]):
            out[i] = 2 * a[i]
    out = np.empty(3)
    double(np.arange(3.0), out)
    assert out.tolist() == [0.0, 2.0, 4.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_sum_into_each_gives_every_array_the_sum_in_their_order(dtype, count):
    rng = np.random.default_rng(count)
    arrays = [rng.standard_normal(1001).astype(dtype) for _ in range(count)]
    arrays[0][3], arrays[-1][5] = np.inf, np.nan
    want = arrays[0].copy()
    for a in arrays[1:]:   # NumPy's rounding, added in the arrays' order
        want = want + a
    sums.sum_into_each(arrays)
    for a in arrays:
        np.testing.assert_array_equal(a, want)   # the same bits (NaN where NaN)

"""The matrix products behind the layers that stay above PyTorch's time (docs/performance.md):
NumPy's BLAS (OpenBLAS from the wheel) against Intel MKL's ``cblas_sgemm``, called through
ctypes, on the same arrays in the same run. One thread each (MKL's sequential layer).

    python benchmarks/bench_blas.py [--mkl PATH/libmkl_rt.so.3] [--repeats 51]

MKL is not a dependency of ddp: this looks for ``libmkl_rt`` in ``--mkl``, ``$DDP_MKL_RT`` or
this Python's ``lib`` folder (where ``pip install mkl`` puts it) and, without it, prints
OpenBLAS's figures alone. Prints per shape: ms (median), GFLOP/s, MKL / OpenBLAS, and the
largest difference between the two products.

Example (the shapes, FLOPs counted as 2 m k n):
    >>> [f"{2 * m * k * n / 1e6:.1f}" for _, m, k, n in SHAPES[:2]]
    ['51.4', '51.4']
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import os
import statistics
import sys
import timeit

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_THREADING_LAYER", "SEQUENTIAL")

import numpy as np  # noqa: E402

SHAPES = [  # (where, m, k, n): C (m, n) = A (m, k) @ B (k, n), float32
    ("conv_transpose2d backward, y's gradient", 32, 256, 3136),
    ("conv_transpose2d backward, w's gradient", 256, 3136, 32),
    ("conv_transpose2d forward (sub-pixel)", 64, 128, 3600),
    ("lstm step, h @ W_hh^T", 32, 256, 1024),
    ("lstm step backward, dgates @ W_hh", 32, 1024, 256),
    ("conv2d Winograd, one of 16 per block", 32, 16, 256),
    ("linear 784->1024 forward", 128, 784, 1024),
    ("linear backward, input's gradient", 128, 1024, 784),
]


def find_mkl(path=None):
    """The path of libmkl_rt, or None."""
    for candidate in [path, os.environ.get("DDP_MKL_RT")] + sorted(
            glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*"))):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def mkl_sgemm(path):
    """``f(a, b, out)``: out = a @ b by MKL's cblas_sgemm (row-major, C-contiguous float32)."""
    lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    lib.MKL_Set_Threading_Layer(ctypes.c_int(1))   # MKL_THREADING_SEQUENTIAL
    sgemm = lib.cblas_sgemm
    sgemm.restype = None
    sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int,
                                           ctypes.c_void_p, ctypes.c_int, ctypes.c_float,
                                           ctypes.c_void_p, ctypes.c_int]

    def product(a, b, out):
        (m, k), n = a.shape, b.shape[1]
        sgemm(101, 111, 111, m, n, k, 1.0, a.ctypes.data, k, b.ctypes.data, n, 0.0,
              out.ctypes.data, n)   # CblasRowMajor, CblasNoTrans, CblasNoTrans
    return product


def median_ms(fn, repeats):
    """Median ms of ``repeats`` calls of ``fn`` after one untimed call."""
    fn()
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeats)) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mkl", help="path of libmkl_rt.so (default: searched, see above)")
    p.add_argument("--repeats", type=int, default=51)
    args = p.parse_args(argv)
    path = find_mkl(args.mkl)
    mkl = mkl_sgemm(path) if path else None
    print(f"float32 products, one thread, ms (median of {args.repeats}); MKL: "
          f"{path or 'not found (pip install mkl, or --mkl PATH)'}")
    rng = np.random.default_rng(0)
    for where, m, k, n in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        out = np.empty((m, n), np.float32)
        gflop = 2 * m * k * n / 1e9
        t_np = median_ms(lambda: np.matmul(a, b, out=out), args.repeats)
        line = f"  {where:42} ({m},{k})@({k},{n})  OpenBLAS {t_np:7.3f} ({gflop / t_np * 1e3:5.1f} GFLOP/s)"
        if mkl is not None:
            want = a @ b
            t_mkl = median_ms(lambda: mkl(a, b, out), args.repeats)
            diff = float(np.abs(out - want).max() / np.abs(want).max())
            line += (f"  MKL {t_mkl:7.3f} ({gflop / t_mkl * 1e3:5.1f})  MKL/OpenBLAS "
                     f"{t_mkl / t_np:.2f}x  diff {diff:.0e}")
        print(line)


if __name__ == "__main__":
    main()

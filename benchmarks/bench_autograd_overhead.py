"""Per-op autograd overhead: a chain of 1,000 small (16x16) elementwise ops, forward + backward.

Prints microseconds per op (median of repeats) for ddp, for PyTorch's eager CPU mode when it is
installed (measured in the same run), and for the bare NumPy arithmetic of the same chain (the
floor: no graph at all). One BLAS thread.

    python benchmarks/bench_autograd_overhead.py [--ops 1000] [--repeats 15] [--clock cpu]

``--clock cpu`` times with the process's CPU time (steadier on a shared machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import ddp  # noqa: E402

clock = time.perf_counter


def chain(lib, n_ops, size=16):
    """x -> (x * w) -> tanh -> (+ b) -> ... : n_ops elementwise ops, then sum and backward."""
    x = lib.randn(size, size, requires_grad=True)
    w = lib.randn(size, size) * 0.1 + 1
    b = lib.randn(size, size) * 0.01
    t0 = clock()
    y = x
    for i in range(n_ops // 3):
        y = (y * w).tanh() + b
    y.sum().backward()
    return (clock() - t0) / (3 * (n_ops // 3)) * 1e6


def chain_numpy(n_ops, size=16):
    """The same arithmetic by hand in NumPy, forward and backward (no autograd machinery)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((size, size)).astype(np.float32)
    w = (rng.standard_normal((size, size)) * 0.1 + 1).astype(np.float32)
    b = (rng.standard_normal((size, size)) * 0.01).astype(np.float32)
    t0 = clock()
    saved = []
    y = x
    for i in range(n_ops // 3):
        saved.append(y)
        t = np.tanh(y * w)
        saved.append(t)
        y = t + b
    g = np.ones_like(y)
    for i in range(n_ops // 3 - 1, -1, -1):
        t = saved[2 * i + 1]
        g = g * (1 - t * t) * w
    return (clock() - t0) / (3 * (n_ops // 3)) * 1e6


def median_of(fn, repeats):
    fn()  # warm up
    return statistics.median(fn() for _ in range(repeats))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = p.parse_args(argv)
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    rows = [("ddp", median_of(lambda: chain(ddp, args.ops), args.repeats))]
    try:
        import torch
        torch.set_num_threads(1)
        rows.append(("torch", median_of(lambda: chain(torch, args.ops), args.repeats)))
    except ImportError:
        pass
    rows.append(("numpy by hand", median_of(lambda: chain_numpy(args.ops), args.repeats)))
    ref = dict(rows).get("torch")
    print(f"chain of {args.ops} elementwise ops on 16x16 float32, forward + backward; "
          f"median of {args.repeats}")
    for name, us in rows:
        ratio = f"  ({us / ref:.2f}x torch)" if ref else ""
        print(f"  {name:<14} {us:6.2f} us/op{ratio}")


if __name__ == "__main__":
    main()

"""Softmax and log-softmax along the last axis, forward + backward from a random upstream
gradient, ddp against PyTorch (when installed) in the same run; one BLAS thread, process CPU
time, medians.

    python benchmarks/bench_softmax.py [--repeats 100]
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

SHAPES = [(128, 1000), (16384, 128)]   # a classifier's logits; attention-like rows of 128


def step_time(lib, name, data, upstream, repeats):
    """Median ms of ``name(x, dim=-1).backward(upstream)``."""
    x = lib.tensor(data, requires_grad=True)
    g = lib.tensor(upstream)
    fn = getattr(lib.nn.functional, name)

    def step():
        x.grad = None
        t0 = time.process_time()
        fn(x, dim=-1).backward(g)
        return time.process_time() - t0
    step()
    return statistics.median(step() for _ in range(repeats)) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=100)
    args = p.parse_args(argv)
    libs = [ddp]
    try:
        import torch
        torch.set_num_threads(1)
        libs.append(torch)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        data = rng.standard_normal(shape).astype(np.float32)
        upstream = rng.standard_normal(shape).astype(np.float32)
        for name in ("softmax", "log_softmax"):
            ms = [step_time(lib, name, data, upstream, args.repeats) for lib in libs]
            ratio = f"  {ms[0] / ms[1]:.2f}x torch" if len(ms) > 1 else ""
            print(f"{name:12s} {str(shape):12s} ddp {ms[0]:7.3f} ms" +
                  (f"  torch {ms[1]:7.3f} ms" if len(ms) > 1 else "") + ratio)


if __name__ == "__main__":
    main()

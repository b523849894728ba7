"""Convolution against another tree's, in one process: forward + backward of conv2d and
conv_transpose2d, and the small-CNN training step, this tree's convolution functions and an
older ``_conv.py``'s swapped in turn per repetition, PyTorch's time taken in the same rounds, the
order rotated each round (the first one timed after another library runs slower). One BLAS
thread, the process's CPU time; medians (and the fastest) over the rounds.

    python benchmarks/bench_conv_against.py OLD_TREE [--rounds 30] [--only conv2d,cnn]

``OLD_TREE`` is a checkout (e.g. ``git worktree add --detach /tmp/old main``) or a
``_conv.py`` file; only its convolution functions are swapped in (the rest is this tree's).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import ddp  # noqa: E402
from ddp.nn.functional import _conv  # noqa: E402
import bench_layers  # noqa: E402  (its small-CNN step)

clock = time.process_time
# the module-level functions the ops call: swapping them swaps the whole convolution
SWAPPED = ("_conv_blocks", "_conv_grads", "_conv_matmul", "_conv_weight_grad",
           "_conv_matmul_adjoint")


def load_old(path, name="_conv"):
    """The module ``ddp.nn.functional.<name>`` of the tree at ``path`` (or the file ``path``), as
    ``ddp.nn.functional.<name>_old`` (its relative imports are this tree's)."""
    if os.path.isdir(path):
        path = os.path.join(path, "ddp", "nn", "functional", name + ".py")
    spec = importlib.util.spec_from_file_location(f"ddp.nn.functional.{name}_old", path)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    return old


def layer_case(lib, fn, x_shape, w_shape, b_len, **kw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(b_len).astype(np.float32)

    def step():
        xt, wt, bt = (lib.tensor(a, requires_grad=True) for a in (x, w, b))
        t0 = clock()
        y = getattr(lib.nn.functional, fn)(xt, wt, bt, **kw)
        y.backward(lib.ones(y.shape))
        return clock() - t0
    return step


CASES = {
    "conv2d 16->32 3x3 pad1, (32,16,28,28)":
        lambda lib: layer_case(lib, "conv2d", (32, 16, 28, 28), (32, 16, 3, 3), 32, padding=1),
    "conv2d 16->32 3x3 pad1, (128,16,14,14)":
        lambda lib: layer_case(lib, "conv2d", (128, 16, 14, 14), (32, 16, 3, 3), 32, padding=1),
    "conv_transpose2d 32->16 4x4 s2, (16,32,14,14)":
        lambda lib: layer_case(lib, "conv_transpose2d", (16, 32, 14, 14), (32, 16, 4, 4), 16,
                               stride=2, padding=1),
    "small CNN training step, batch 128": bench_layers.cnn_stepper,
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", help="older checkout or its _conv.py")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--only", default="", help="comma-separated substrings of case names")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    bench_layers.clock = clock
    old = load_old(args.old)
    sides = {"old": {k: getattr(old, k) for k in SWAPPED},
             "new": {k: getattr(_conv, k) for k in SWAPPED}}
    wanted = [w for w in args.only.split(",") if w]
    print(f"forward + backward, ms of CPU time, median (fastest) of {args.rounds} rounds")
    for case, make in CASES.items():
        if wanted and not any(w in case for w in wanted):
            continue
        steps = {"old": make(ddp), "new": make(ddp), "torch": make(torch)}
        times = {k: [] for k in steps}
        order = list(steps)
        for r in range(args.rounds + 1):
            for k in order[r % 3:] + order[:r % 3]:
                for name, fn in sides.get(k, {}).items():
                    setattr(_conv, name, fn)
                t = steps[k]()
                if r:   # the first round warms up
                    times[k].append(t)
        for name, fn in sides["new"].items():
            setattr(_conv, name, fn)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"  {case}")
        for k in ("old", "new", "torch"):
            print(f"    {k:<5} {med[k]:7.2f} ({min(times[k]) * 1e3:6.2f})  "
                  f"{med[k] / med['torch']:.2f}x PyTorch")


if __name__ == "__main__":
    main()

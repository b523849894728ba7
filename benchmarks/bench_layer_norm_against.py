"""Layer norm against another tree's, in one process: ``nn.LayerNorm`` forward + backward under
a ``sum()`` loss (as ``bench_layers.py``), this tree's op and an older ``_normalization.py``'s
swapped in turn, blocks of steps alternating with PyTorch's, the order rotated each round. One
BLAS thread, the process's CPU time; the median block (and the fastest), ms per step.

    python benchmarks/bench_layer_norm_against.py OLD_TREE [--blocks 40] [--per 25]
        [--shape 128,1024] [--upstream sum|array]

``OLD_TREE`` is a checkout (e.g. ``git worktree add --detach /tmp/old main``) or a
``_normalization.py`` file; only its ``_layer_norm`` is swapped in (the rest is this tree's).
``--upstream array``: ``y.backward(g)`` with a random ``g`` instead of ``y.sum()``.
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
import ddp.nn.normalization as nnorm  # noqa: E402  (nn.LayerNorm calls its _layer_norm)
from bench_conv_against import load_old  # noqa: E402

clock = time.process_time


def stepper(lib, shape, per, upstream):
    rng = np.random.default_rng(0)
    m = lib.nn.LayerNorm(shape[-1])
    x = lib.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    g = lib.tensor(rng.standard_normal(shape).astype(np.float32))

    def block():
        t0 = clock()
        for _ in range(per):
            if upstream == "sum":
                m(x).sum().backward()
            else:
                m(x).backward(g)
        return (clock() - t0) / per * 1e3
    return block


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("--blocks", type=int, default=40)
    p.add_argument("--per", type=int, default=25)
    p.add_argument("--shape", default="128,1024")
    p.add_argument("--upstream", choices=["sum", "array"], default="sum")
    args = p.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    old = load_old(args.old, "_normalization")
    new_fn = nnorm._layer_norm
    ours = stepper(ddp, shape, args.per, args.upstream)

    def old_block():
        nnorm._layer_norm = old._layer_norm
        try:
            return ours()
        finally:
            nnorm._layer_norm = new_fn
    runs = {"old": old_block, "new": ours}
    try:
        import torch
        torch.set_num_threads(1)
        runs["torch"] = stepper(torch, shape, args.per, args.upstream)
    except ImportError:
        pass
    for f in runs.values():
        f()
    times = {k: [] for k in runs}
    order = list(runs)
    for i in range(args.blocks):
        for k in order[i % len(order):] + order[:i % len(order)]:
            times[k].append(runs[k]())
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"layer_norm {shape}, {args.upstream}: " +
          "  ".join(f"{k} {med[k]:.3f} (fastest {min(times[k]):.3f})" for k in runs) +
          f"  new/old {med['new'] / med['old']:.3f}" +
          ("".join(f"  {k}/torch {med[k] / med['torch']:.2f}x" for k in ("old", "new"))
           if "torch" in med else ""))


if __name__ == "__main__":
    main()

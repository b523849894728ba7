"""How DDP hands the averaged gradients back to ``.grad``: as views of the buckets (the
default whenever nothing can tell the difference) against a copy out of the buckets (what
``Reducer.lend = False`` does). Both in the same job, alternating step by step. Run under the
launcher:

    python -m launcher -n 2 benchmarks/bench_ddp_grad_handover.py [--steps 60]

Prints, on rank 0, the median backward time (wall and process CPU) of the MLP
784-1024-1024-10 at batch 128 (7.1 MiB of gradients) with and without the copy.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.nn.parallel import DistributedDataParallel as DDP


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    dist.init_process_group()
    ddp.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                        nn.Linear(1024, 10))
    model = DDP(net)
    opt = ddp.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = ddp.randn(128, 784), ddp.randint(0, 10, (128,))
    loss_fn = nn.CrossEntropyLoss()
    times = {"views": [], "copy": []}
    for step in range(args.steps):
        for variant in ("views", "copy") if step % 2 else ("copy", "views"):  # no order bias
            model.reducer.lend = variant == "views"
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            dist.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            loss.backward()
            t1, c1 = time.perf_counter(), time.process_time()
            shared = all(any(np.shares_memory(p.grad._data, b.data) for b in model.reducer.buckets)
                         for p in model.parameters())
            assert shared == (variant == "views"), (variant, shared)
            opt.step()
            if step >= 4:   # after the layout's rebuild and the first steps' allocations
                times[variant].append((t1 - t0, c1 - c0))
    if dist.get_rank() == 0:
        for variant, label in (("copy", "copy out of the buckets"), ("views", "views of the buckets")):
            wall = statistics.median(t[0] for t in times[variant]) * 1e3
            cpu = statistics.median(t[1] for t in times[variant]) * 1e3
            print(f"{label:>24}: backward {wall:6.2f} ms wall, {cpu:6.2f} ms CPU "
                  f"(median of {len(times[variant])})")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

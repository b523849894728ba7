"""DDP's fixed cost per step: a model so small that a training step is all synchronisation —
the collectives DDP issues per step, their latency, and the Python around them. Run under the
launcher with 2 (or 4) ranks:

    python -m launcher -n 2 benchmarks/bench_ddp_overhead.py [--steps 300] [--buffers]

Prints the median over 7 rounds of the time per step (forward, backward, SGD step), and how many
collectives DDP issued per step on its communicator. ``--buffers`` adds a constant buffer (it
is broadcast before every forward unless DDP knows it did not change).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.nn.parallel import DistributedDataParallel as DDP


class Tiny(nn.Module):
    def __init__(self, buffers):
        super().__init__()
        self.lin = nn.Linear(8, 4)
        if buffers:
            self.register_buffer("scale", ddp.ones(4))

    def forward(self, x):
        y = self.lin(x)
        return y * self.scale if hasattr(self, "scale") else y


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--buffers", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("DDP_COMM_MODE", "nonblocking")  # one collective call per bucket
    dist.init_process_group()
    ddp.manual_seed(0)
    model = DDP(Tiny(args.buffers))
    opt = ddp.optim.SGD(model.parameters(), lr=0.01)
    x = ddp.randn(16, 8)
    comm, counted = model.comm, []
    for name in ("Allreduce", "Iallreduce", "Iallreduce_nonblocking", "Bcast"):
        method = getattr(comm, name)

        def wrapped(*a, _m=method, _n=name, **k):
            counted.append(_n)
            return _m(*a, **k)
        setattr(comm, name, wrapped)

    def step():
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    for _ in range(20):
        step()
    counted.clear()
    rounds = []
    for _ in range(7):
        dist.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        rounds.append((time.perf_counter() - start) / args.steps * 1e6)
    per_step = len(counted) / (7 * args.steps)
    if dist.get_rank() == 0:
        print(f"{dist.get_world_size()} ranks, buffers={args.buffers}: "
              f"{statistics.median(rounds):.0f} us per step (rounds {min(rounds):.0f}-"
              f"{max(rounds):.0f}), {per_step:.2f} collectives per step on DDP's communicator")


if __name__ == "__main__":
    main()

"""Compressed gradient communication and gradient accumulation, on 2 MPI ranks.

    python benchmarks/bench_amp_accum.py [--ranks 2] [--steps 15]

Runs itself under ``mpiexec -n RANKS`` and prints, for the MLP 784-1024-1024-10 (batch 64 per
rank, one BLAS thread per rank):
- bytes each rank sends per step in gradient allreduces, and the step time, with the plain
  float32 allreduce and with the fp16 / bf16 compression hooks (the MPI ring sends about
  2(n-1)/n of the buffer per rank; the table shows the buffer size);
- micro-batches/s and optimizer steps/s with GradientAccumulator k = 1, 2, 4 (communication
  only every k-th micro-batch).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def worker(steps):
    import numpy as np
    import ddp
    import ddp.distributed as dist
    import ddp.nn as nn
    from ddp.distributed.algorithms.ddp_comm_hooks import default_hooks
    from ddp.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group()
    rng = np.random.default_rng(dist.get_rank())
    x = ddp.tensor(rng.standard_normal((64, 784)).astype(np.float32))
    y = ddp.tensor(rng.integers(0, 10, 64))

    def build(hook=None):
        ddp.manual_seed(0)
        model = DDP(nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024),
                                  nn.ReLU(), nn.Linear(1024, 10)))
        if hook is not None:
            model.register_comm_hook(None, hook)
        return model, ddp.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def timed(fn, n):
        fn(), fn()
        times = []
        for _ in range(n):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    results = {"compression": [], "accumulation": []}
    for name, hook, itemsize in [("float32 allreduce", None, 4),
                                 ("fp16_compress_hook", default_hooks.fp16_compress_hook, 2),
                                 ("bf16_compress_hook", default_hooks.bf16_compress_hook, 2)]:
        model, opt = build(hook)

        def step():
            opt.zero_grad()
            nn.CrossEntropyLoss()(model(x), y).backward()
            opt.step()
        elements = sum(b.grads.size for b in model.reducer.buckets)
        results["compression"].append({"name": name, "bytes": elements * itemsize,
                                       "step_ms": timed(step, steps) * 1e3})
    for k in (1, 2, 4):
        model, opt = build()
        acc = ddp.GradientAccumulator(model, opt, steps=k)

        def group():
            for _ in range(k):
                with acc.accumulate():
                    acc.backward(nn.CrossEntropyLoss()(model(x), y))
        t = timed(group, max(3, steps // k))
        results["accumulation"].append({"k": k, "micro_per_s": k / t, "steps_per_s": 1 / t})
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps(results))
    dist.destroy_process_group()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.steps)
    mpiexec = shutil.which("mpiexec", path=sysconfig.get_path("scripts") + os.pathsep +
                           os.environ.get("PATH", ""))
    cmd = [mpiexec, "-n", str(args.ranks), sys.executable, os.path.abspath(__file__), "--worker",
           "--steps", str(args.steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
    print(f"MLP 784-1024-1024-10, batch 64 per rank, {args.ranks} ranks; medians")
    base = res["compression"][0]
    print("  gradient allreduce              buffer/step   step ms   vs float32")
    for r in res["compression"]:
        print(f"  {r['name']:<30} {r['bytes'] / 1e6:8.2f} MB  {r['step_ms']:8.2f}   "
              f"{r['step_ms'] / base['step_ms']:.2f}x time, {r['bytes'] / base['bytes']:.2f}x bytes")
    print("  accumulation k   micro-batches/s   optimizer steps/s")
    for r in res["accumulation"]:
        print(f"  {r['k']:>14}   {r['micro_per_s']:15.1f}   {r['steps_per_s']:17.1f}")


if __name__ == "__main__":
    main()

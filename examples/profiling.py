"""Profiling training steps of a small CNN on scikit-learn's bundled digits with
``ddp.profiler`` (PyTorch's ``torch.profiler`` API): every forward op and backward node timed,
regions for data, forward, backward and the optimizer, a schedule that skips the first steps,
the ``key_averages().table()`` summary, per-step timers, and optionally a Chrome trace.

    python examples/profiling.py [--trace trace.json]
"""
from __future__ import annotations

import argparse
import statistics
import time

import ddp
import ddp.nn as nn
from ddp.profiler import ProfilerActivity, profile, record_function, schedule

from common import bundled, loader, parse_args
from digits_cnn import small_cnn


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wait", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--active", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rows", type=int, default=12)
    p.add_argument("--trace", default=None, help="write a Chrome trace (chrome://tracing)")
    args = parse_args(p, argv)
    ddp.manual_seed(0)
    x_train, y_train, _, _ = bundled("digits")
    data = iter(loader(x_train.reshape(-1, 1, 8, 8), y_train, batch_size=args.batch_size))
    model = small_cnn()
    optimizer = ddp.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    steps = args.wait + args.warmup + args.active
    step_ms = []
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False,
                 schedule=schedule(wait=args.wait, warmup=args.warmup, active=args.active,
                                   repeat=1)) as prof:
        for _ in range(steps):
            start = time.perf_counter()
            with record_function("data"):
                xb, yb = next(data)
            with record_function("forward"):
                loss = loss_fn(model(xb), yb)
            with record_function("backward"):
                optimizer.zero_grad()
                loss.backward()
            with record_function("optimizer.step"):
                optimizer.step()
            step_ms.append((time.perf_counter() - start) * 1e3)
            prof.step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
    print(table)
    print(f"step times (ms): {', '.join(f'{t:.1f}' for t in step_ms)}; median of the profiled "
          f"steps {statistics.median(step_ms[args.wait + args.warmup:]):.1f} "
          f"(profiling adds a little per op)")
    if args.trace:
        prof.export_chrome_trace(args.trace)
        print(f"trace written to {args.trace}")
    return {"averages": {e.key: e for e in prof.key_averages()}, "table": table,
            "step_ms": step_ms}


if __name__ == "__main__":
    main()

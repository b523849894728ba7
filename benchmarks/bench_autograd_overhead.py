"""Per-op autograd overhead: a chain of 1,000 small (16x16) elementwise ops, forward + backward.

Prints microseconds per op (median of repeats) for ddp, for PyTorch's eager CPU mode when it is
installed (measured in the same run), and for the bare NumPy arithmetic of the same chain (the
floor: no graph at all), with the forward (recording) and backward parts separately. One BLAS
thread.

    python benchmarks/bench_autograd_overhead.py [--ops 1000] [--repeats 15] [--clock cpu]
    python benchmarks/bench_autograd_overhead.py --clock cpu --against OLD_TREE [--rounds 40]
    python benchmarks/bench_autograd_overhead.py --clock cpu --against OLD_TREE --each [--rounds 10]

``--clock cpu`` times with the process's CPU time (steadier on a shared machine).
``--against`` compares this tree's ddp with another checkout's (e.g. ``git worktree add
/tmp/old main``): two worker processes, one per tree, take turns timing one chain of ddp and
one of PyTorch each round, so both see the same load; it prints medians over the rounds.
``--each`` times single recorded ops instead (``x * w``, ``y.tanh()``, ...: 1,000 calls, the
fastest of 5, collector off, per round), where a change to one op's path shows.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
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
    s = y.sum()
    t1 = clock()
    s.backward()
    t2 = clock()
    n = 3 * (n_ops // 3)
    return (t2 - t0) / n * 1e6, (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


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
    t1 = clock()
    g = np.ones_like(y)
    for i in range(n_ops // 3 - 1, -1, -1):
        t = saved[2 * i + 1]
        g = g * (1 - t * t) * w
    t2 = clock()
    n = 3 * (n_ops // 3)
    return (t2 - t0) / n * 1e6, (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


def single_ops(lib, size=16):
    """``--each``: 1,000 calls of one recorded op (the forward only), by name."""
    x = lib.randn(size, size, requires_grad=True)
    w = lib.randn(size, size)
    b = lib.randn(size, size)
    y = x * w
    n = range(1000)
    return {"x * w": lambda: [x * w for _ in n], "y.tanh()": lambda: [y.tanh() for _ in n],
            "y + b": lambda: [y + b for _ in n], "y * 2.0": lambda: [y * 2.0 for _ in n],
            "y.relu()": lambda: [y.relu() for _ in n], "y.exp()": lambda: [y.exp() for _ in n],
            "y.sum()": lambda: [y.sum() for _ in n], "w * b (none)": lambda: [w * b for _ in n]}


def time_single(fn):
    """µs per call of one of single_ops: the fastest of 5 runs, the collector off."""
    fn()
    gc.disable()
    try:
        best = float("inf")
        for _ in range(5):
            t0 = clock()
            fn()
            best = min(best, clock() - t0)
    finally:
        gc.enable()
    return best * 1e3, 0.0, 0.0


def median_of(fn, repeats):
    """Medians of (total, forward, backward) over the repeats."""
    fn()  # warm up
    runs = [fn() for _ in range(repeats)]
    return tuple(statistics.median(r[i] for r in runs) for i in range(3))


def worker(ops):
    """``--worker``: time one chain per line read ("ddp" or "torch"), print its three figures;
    a line "ddp\tNAME" times the single op NAME (``--each``)."""
    import torch
    torch.set_num_threads(1)
    libs = {"ddp": ddp, "torch": torch}
    singles = {name: single_ops(lib) for name, lib in libs.items()}
    for lib in libs.values():
        chain(lib, ops)  # warm up
    for line in sys.stdin:
        lib, _, op = line.rstrip("\n").partition("\t")
        print(*(time_single(singles[lib][op]) if op else chain(libs[lib], ops)), flush=True)


def against(old_tree, ops, rounds, clock_name, each=False):
    """Old tree versus this one, alternating (see the module docstring)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"old": os.path.abspath(old_tree), "new": here}
    procs = {k: subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", "--ops", str(ops),
         "--clock", clock_name], cwd=tree, env=dict(os.environ, PYTHONPATH=tree),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for k, tree in trees.items()}
    runs: dict = {}
    for _ in range(rounds):
        for op in single_ops(ddp) if each else [""]:
            for k, proc in procs.items():
                for lib in ("ddp", "torch"):
                    proc.stdin.write(f"{lib}\t{op}\n")
                    proc.stdin.flush()
                    runs.setdefault((k, lib, op), []).append(
                        tuple(map(float, proc.stdout.readline().split())))
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    if each:
        print(f"single ops, 1,000 calls, fastest of 5, gc off; medians of {rounds} alternating "
              f"rounds, us per call (old / new: {trees['old']} / {trees['new']})")
        for op in single_ops(ddp):
            old, new, ref = (statistics.median(r[0] for r in runs[key]) for key in
                             (("old", "ddp", op), ("new", "ddp", op), ("new", "torch", op)))
            print(f"  {op:<13} old {old:6.2f}  new {new:6.2f}  torch {ref:6.2f}   "
                  f"{old / ref:.2f}x -> {new / ref:.2f}x torch")
        return
    runs = {key[:2]: r for key, r in runs.items()}
    med = [statistics.median(r[i] for k in trees for r in runs[(k, "torch")]) for i in range(3)]
    print(f"{ops} ops, {rounds} alternating rounds, medians (us/op: total = forward + backward)")
    print(f"  torch          {med[0]:6.2f} = {med[1]:5.2f} + {med[2]:5.2f}")
    for k in trees:
        m = [statistics.median(r[i] for r in runs[(k, "ddp")]) for i in range(3)]
        print(f"  ddp {k:<10} {m[0]:6.2f} = {m[1]:5.2f} + {m[2]:5.2f}  ({m[0] / med[0]:.2f}x torch)"
              f"  {trees[k]}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--against", metavar="OLD_TREE", help="compare with another checkout")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--each", action="store_true", help="with --against: single ops, not a chain")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.worker:
        return worker(args.ops)
    if args.against:
        return against(args.against, args.ops, args.rounds, args.clock, args.each)
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
    for name, (us, fwd, bwd) in rows:
        ratio = f"  ({us / ref[0]:.2f}x torch)" if ref else ""
        print(f"  {name:<14} {us:6.2f} us/op{ratio}   forward {fwd:5.2f}, backward {bwd:5.2f}")


if __name__ == "__main__":
    main()

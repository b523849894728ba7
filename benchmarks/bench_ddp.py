"""DistributedDataParallel on 2 ranks, one BLAS thread per rank: ddp (MPI) against PyTorch DDP
(gloo) in the same run, on the MLP 784-1024-1024-10 and the small CNN, batch 128 per rank.

    python benchmarks/bench_ddp.py [--steps 20] [--models mlp,cnn] [--reps 30] [--repeat 1]
                                   [--wait-idle 60]

The driver runs four jobs one after the other, ``--repeat`` times: ``mpiexec -n 1`` and
``mpiexec -n 2`` of this file with ``--worker ddp`` and ``--worker torch`` (each rank 0 writes
JSON to a temp file), then prints one report; with ``--repeat`` every figure is the median of
its per-run medians. Each command line is printed with the CPU that *other* processes used
meanwhile (from /proc/stat); ``--wait-idle S`` starts each job on an idle machine and reruns it
(up to 3 times) when others used more than 0.1 core. Inside a job the configurations are
timed round-robin, every step barrier-aligned, so they all see the same background load.

1. Step time (zero_grad, forward, loss, backward, SGD-momentum step), median over ``--steps``
   after 3 warm-ups, ms. ``1 rank``: the plain model alone. ``2 plain``: two processes each
   training the plain model, no communication (what sharing the machine costs). ``2 DDP``:
   the real thing (bucket_cap_mb=25). eff. = t(1 rank) / t(2 DDP) (weak scaling: same
   per-rank batch); comm eff. = t(2 plain) / t(2 DDP). ``cpu/wall``: process CPU time over
   wall time per step on rank 0 (below 1: the process waited or was preempted).
2. Exposed communication: median backward time with DDP sync minus median backward time inside
   ``model.no_sync()``. For ddp also with ``DDP_SYNC_COMM=1`` (bucket allreduces run
   synchronously in the gradient hook: no overlap).
3. Gradient-sync bandwidth (ddp, the model's reducer buckets after the first-iteration rebuild):
   a raw mpi4py ``COMM_WORLD.Allreduce(IN_PLACE, buf)`` of one float32 buffer of the same total
   bytes, against raw mpi4py per bucket, the ddp communicator's blocking ``Allreduce`` per
   bucket, ``Iallreduce`` per bucket on the communication thread then wait all (the reducer's
   path), and that plus the reducer's copy-in from ``.grad``, averaging and copy-out (variants
   interleaved, order rotated). ratio = raw time / time; GB/s = bytes / time.
4. Bucket-size sweep (MLP): ddp step time for bucket_cap_mb in 0.25, 1, 5, 25, 100, with the
   number of buckets and the exposed communication.

Caveats: 2 ranks on a 2-core machine leave no core for communication: a waiting MPI call
busy-polls (MPICH), so the communication thread competes with backward for the CPU; the
shared-memory allreduce is also bimodal here (depends on where the scheduler puts the ranks),
so only compare figures from the same run, and repeat runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
os.environ.update(ONE_THREAD)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train_step import mlp, small_cnn  # noqa: E402

MODELS = {"mlp": (mlp, (784,), "MLP 784-1024-1024-10"), "cnn": (small_cnn, (1, 28, 28), "small CNN")}
GOALS = {"mlp": 0.85, "cnn": 0.95}
BATCH, WARMUP, CAPS = 128, 3, (0.25, 1, 5, 25, 100)
median = statistics.median


# ------------------------------------------------------------------------------- worker side
def build(lib, name, rank, wrap=None):
    lib.manual_seed(0)
    fn, shape, _ = MODELS[name]
    model = fn(lib)
    model = wrap(model) if wrap else model
    opt = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(rank)
    x = lib.tensor(rng.standard_normal((BATCH,) + shape).astype(np.float32))
    y = lib.tensor(rng.integers(0, 10, BATCH))
    return model, opt, lib.nn.CrossEntropyLoss(), x, y


class Timer(dict):
    """Lists of wall seconds (and cpu/wall ratios) by label."""

    def add(self, label, wall, cpu=None):
        self.setdefault(label, []).append(wall)
        if cpu is not None:
            self.setdefault(label + "/cpu", []).append(cpu / wall)

    def medians(self):
        return {k: median(v) * (1 if k.endswith("/cpu") else 1e3) for k, v in self.items()}


def measure(configs, steps, barrier, timer):
    """Round-robin over ``configs`` (label -> parts, DDP or not) so that all of them see the
    same background load: per iteration a full step each, and for DDP models also a sync and
    a no_sync backward, every one started barrier-aligned."""
    for i in range(WARMUP + steps):
        for label, (model, opt, loss_fn, x, y) in configs.items():
            barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if i >= WARMUP:
                timer.add(label, wall, cpu)
            if not hasattr(model, "no_sync"):
                continue
            for sync in (True, False):
                opt.zero_grad()
                with (contextlib.nullcontext() if sync else model.no_sync()):
                    loss = loss_fn(model(x), y)
                    barrier()
                    t0 = time.perf_counter()
                    loss.backward()
                    if i >= WARMUP:
                        timer.add(f"{label}/bwd_{'sync' if sync else 'nosync'}",
                                  time.perf_counter() - t0)


def bandwidth(model, comm, reps):
    """Gradient sync of the reducer's buckets vs one raw mpi4py Allreduce of the same bytes
    (variants interleaved, each barrier-aligned)."""
    from mpi4py import MPI
    world, buckets = MPI.COMM_WORLD, model.reducer.buckets
    nbytes = sum(b.data.nbytes for b in buckets)
    flat = np.ones(nbytes // 4, np.float32)

    def full():  # what the reducer does around the wire, minus the autograd hooks
        works = []
        for b in buckets:
            for p, v in zip(b.params, b.views):
                v[...] = p.grad._data
            works.append(comm.Iallreduce(b.data, "sum"))
        for b, w in zip(buckets, works):
            w.wait()
            b.data *= 1.0 / comm.size
            for p, v in zip(b.params, b.views):
                p.grad._data[...] = v

    variants = {
        "raw mpi4py, one buffer": lambda: world.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM),
        "raw mpi4py, per bucket": lambda: [world.Allreduce(MPI.IN_PLACE, b.data, op=MPI.SUM)
                                           for b in buckets],
        "ddp comm.Allreduce, per bucket": lambda: [comm.Allreduce(b.data, "sum") for b in buckets],
        "ddp Iallreduce on comm thread": lambda: [w.wait() for w in
                                                  [comm.Iallreduce(b.data, "sum") for b in buckets]],
        "+ copy-in, average, copy-out": full,
    }
    timer = Timer()
    for i in range(WARMUP + reps):
        flat[...] = 1.0  # keep the sums finite
        for b in buckets:
            b.data[...] = 1.0
        items = list(variants.items())
        for name, fn in items[i % len(items):] + items[:i % len(items)]:  # no order bias
            world.Barrier()
            t0 = time.perf_counter()
            fn()
            if i >= WARMUP:
                timer.add(name, time.perf_counter() - t0)
    ms = timer.medians()
    return {"bytes": nbytes, "buckets": [int(b.data.nbytes) for b in buckets],
            "ms": {name: ms[name] for name in variants}}


def worker(args):
    size, rank = int(os.environ.get("PMI_SIZE", 1)), int(os.environ.get("PMI_RANK", 0))
    res, barrier = {}, lambda: None
    if args.worker == "torch":
        import torch as lib
        lib.set_num_threads(1)
        if size > 1:
            lib.distributed.init_process_group("gloo", rank=rank, world_size=size)
            barrier = lib.distributed.barrier
    else:
        import ddp as lib
        if size > 1:
            lib.distributed.init_process_group("mpi")
            comm = lib.distributed.get_communicator()
            barrier = comm.Barrier
    DDP = lib.nn.parallel.DistributedDataParallel
    for name in args.models.split(","):
        configs = {"plain": build(lib, name, rank)}
        if size > 1:
            caps = CAPS if name == "mlp" and args.worker == "ddp" else (25,)
            for cap in caps:
                configs[f"ddp{cap:g}"] = build(lib, name, rank,
                                               lambda m: DDP(m, bucket_cap_mb=cap))
            if args.worker == "ddp":
                os.environ["DDP_SYNC_COMM"] = "1"  # read when the Reducer is built
                configs["sync_comm"] = build(lib, name, rank, DDP)
                del os.environ["DDP_SYNC_COMM"]
        timer = Timer()
        measure(configs, args.steps, barrier, timer)
        res[name] = timer.medians()
        if size > 1 and args.worker == "ddp":
            res[name]["buckets"] = {k: len(p[0].reducer.buckets) for k, p in configs.items()
                                    if k != "plain"}
            res[name]["bandwidth"] = bandwidth(configs["ddp25"][0], comm, args.reps)
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump(res, f)


# ------------------------------------------------------------------------------- driver side
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def busy_cpu_s():
    """CPU seconds spent by the whole machine (all processes) so far, from /proc/stat."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def wait_idle(limit_s):
    """Wait (at most ``limit_s``) for two consecutive seconds in which the machine is idle."""
    quiet, end = 0, time.time() + limit_s
    while quiet < 2 and time.time() < end:
        b0 = busy_cpu_s()
        time.sleep(1)
        quiet = quiet + 1 if busy_cpu_s() - b0 < 0.15 else 0
    return quiet >= 2


def launch(kind, n, args):
    """Run one job; with --wait-idle, start it on an idle machine and run it again (up to 3
    times) when other processes used more than 0.1 core meanwhile."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = ["mpiexec", "-n", str(n), sys.executable, os.path.abspath(__file__), "--worker", kind,
           "--models", args.models, "--steps", str(args.steps), "--reps", str(args.reps),
           "--out", out]
    env = dict(os.environ, **ONE_THREAD, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    env.pop("DDP_SYNC_COMM", None)
    for attempt in range(3 if args.wait_idle else 1):
        if args.wait_idle and not wait_idle(args.wait_idle):
            print(f"(machine still busy after waiting {args.wait_idle:g} s)")
        print("$", " ".join(cmd[:3] + ["python"] + cmd[4:-2]), end="", flush=True)
        t0, busy0 = time.time(), busy_cpu_s()
        mine0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, env=env, check=True)
        wall, mine = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
        others = max(0.0, busy_cpu_s() - busy0 - (mine.ru_utime + mine.ru_stime
                                                  - mine0.ru_utime - mine0.ru_stime)) / wall
        print(f"   [{wall:.0f} s; other processes used {others:.2f} cores]", flush=True)
        if others <= 0.1:
            break
    with open(out) as f:
        res = json.load(f)
    os.unlink(out)
    res["background_cores"] = others
    return res


def median_of(runs):
    """Element-wise median of nested dicts of numbers (the runs of ``--repeat``)."""
    if isinstance(runs[0], dict):
        return {k: median_of([r[k] for r in runs]) for k in runs[0]}
    return median(runs) if isinstance(runs[0], (int, float)) else runs[0]


def report(res, runs, models):
    print(f"\n1. step time, ms (median), batch {BATCH} per rank, 1 BLAS thread per rank; "
          f"eff. = t1 / t2 DDP; comm eff. = t2 plain / t2 DDP")
    print(f"  {'model':<22}{'framework':<21}{'1 rank':>7}{'2 plain':>8}{'2 DDP':>7}{'eff.':>6}"
          f"{'goal':>6}{'comm eff.':>10}{'cpu/wall 1|DDP':>16}   eff. per run")
    rows = [("ddp (MPI)", "ddp", "ddp25"), ("ddp DDP_SYNC_COMM=1", "ddp", "sync_comm"),
            ("torch DDP (gloo)", "torch", "ddp25")]
    for m in models:
        for label, lib, key in rows:
            if (lib, 2) in res:
                one, two = res[lib, 1][m], res[lib, 2][m]
                t1, tp, t2 = one["plain"], two["plain"], two[key]
                each = " ".join(f"{r[lib, 1][m]['plain'] / r[lib, 2][m][key]:.0%}" for r in runs)
                print(f"  {MODELS[m][2]:<22}{label:<21}{t1:7.2f}{tp:8.2f}{t2:7.2f}{t1 / t2:6.0%}"
                      f"{GOALS[m]:6.0%}{tp / t2:10.0%}{one['plain/cpu']:10.2f}"
                      f"{two[key + '/cpu']:6.2f}   {each}")
    print("\n2. exposed communication = backward(DDP sync) - backward(no_sync), ms (median)")
    print(f"  {'model':<22}{'framework':<21}{'bwd sync':>9}{'no_sync':>9}{'exposed':>9}")
    for m in models:
        for label, lib, key in rows:
            if (lib, 2) in res:
                r = res[lib, 2][m]
                s, n = r[key + "/bwd_sync"], r[key + "/bwd_nosync"]
                print(f"  {MODELS[m][2]:<22}{label:<21}{s:9.2f}{n:9.2f}{s - n:9.2f}")
    print("\n3. gradient-sync bandwidth (ddp, 2 ranks); ratio = raw one-buffer time / this time "
          "(goal >= 90%)")
    for m in models:
        bw = res["ddp", 2][m]["bandwidth"]
        raw = bw["ms"]["raw mpi4py, one buffer"]
        print(f"  {MODELS[m][2]}: {bw['bytes'] / 2**20:.2f} MiB in {len(bw['buckets'])} buckets "
              f"({', '.join(f'{b / 2**20:.2f}' for b in bw['buckets'])} MiB)")
        for name, ms in bw["ms"].items():
            print(f"    {name:<34}{ms:8.3f} ms {bw['bytes'] / ms / 1e6:7.2f} GB/s {raw / ms:7.0%}")
    if "mlp" in models:
        r, t1 = res["ddp", 2]["mlp"], res["ddp", 1]["mlp"]["plain"]
        print("\n4. bucket size sweep, ddp MLP, 2 ranks (first bucket min(1 MiB, cap))")
        print(f"  {'bucket_cap_mb':>14}{'buckets':>9}{'step ms':>9}{'eff.':>7}{'exposed ms':>12}")
        for cap in CAPS:
            k = f"ddp{cap:g}"
            print(f"  {cap:>14g}{int(r['buckets'][k]):>9}{r[k]:9.2f}{t1 / r[k]:7.0%}"
                  f"{r[k + '/bwd_sync'] - r[k + '/bwd_nosync']:12.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--reps", type=int, default=30, help="repetitions of each bandwidth variant")
    p.add_argument("--repeat", type=int, default=1, help="run all jobs this many times")
    p.add_argument("--wait-idle", type=float, default=0, metavar="S",
                   help="before each job, wait up to S seconds for an idle machine")
    p.add_argument("--worker", choices=("ddp", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    try:
        import torch  # noqa: F401
        kinds = ("ddp", "torch")
    except ImportError:
        kinds = ("ddp",)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    runs = [{(k, n): launch(k, n, args) for k in kinds for n in (1, 2)}
            for _ in range(args.repeat)]
    res = {key: median_of([r[key] for r in runs]) for key in runs[0]}
    if args.repeat > 1:
        print(f"\n(every figure below: median over the {args.repeat} runs of its per-run median)")
    report(res, runs, args.models.split(","))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

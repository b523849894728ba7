"""Where DDP's CPU time goes: the MLP 784-1024-1024-10 training step (batch 128 per rank, SGD
with momentum) with DDP in each communication mode, against the same model without DDP, in
one job, configurations round-robin, every step barrier-aligned. Run under the launcher:

    python -m launcher -n 2 benchmarks/bench_ddp_cpu.py [--steps 40]

With 2 ranks on 2 cores each rank has one core, so every CPU second a rank spends on
communication comes out of its step: process CPU time (``time.process_time``, all threads) is
the figure to read on a shared machine, where wall time is noisy. Prints on rank 0, medians
per step in ms (each rank's own medians, then their mean):

- per configuration: process CPU and wall of the step and of its phases (``finalize`` is the
  end-of-backward wait for the allreduces), the communication thread's CPU (mode "thread"),
  the CPU inside the reducer's pieces (the gradient hooks' copy-in and bucket launches, the
  progress calls, the waits) and the stall inspector, and the step's CPU minus the plain one's;
- the pieces of the extra CPU, measured alone in the same job: a raw mpi4py ``Allreduce`` of
  the same 7.1 MiB (blocking, and ``Iallreduce`` + ``Wait``), the copy of the gradients into
  a flat buffer with the 1/world scaling, and (2 ranks on one machine) the same sum done
  through an MPI shared-memory window instead of by MPI (:class:`SharedSum`, a prototype).

``--model cnn`` times the small CNN instead; ``-n 1`` times the plain model alone (the
1-rank reference of weak scaling).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import time

import numpy as np

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.bench import models
from ddp.distributed import consistency, stall
from ddp.nn.parallel import DistributedDataParallel as DDP

PIECES = {"hooks: copy-in and launches (_fill)": ("Reducer", "_fill"),
          "launches (_launch)": ("Reducer", "_launch"),
          "progress() from hooks": ("MPICommunicator", "progress"),
          "wait for a request": ("_RequestWork", "wait"),
          "keep lent gradients": ("Reducer", "_keep_lent_gradients"),
          "global status": ("Reducer", "_global_status")}
# sync: DDP_SYNC_COMM=1, one blocking allreduce per bucket; no_sync: a DDP model's step inside
# model.no_sync() (DDP's forward and hooks, no copy-in or communication)
MODES = ("shared", "nonblocking", "thread", "sync", "no_sync")


class Meter:
    """Seconds of CPU time spent inside some functions (patched), while ``on``."""

    def __init__(self):
        self.cpu, self.calls, self.on = 0.0, 0, False

    def wrap(self, owner, name):
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            if not self.on:
                return fn(*args, **kwargs)
            c0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu += time.thread_time() - c0
                self.calls += 1
        setattr(owner, name, timed)


class SharedSum:
    """What a sum of two ranks' buffers costs without MPI moving the bytes (a prototype, not
    what DDP does): both buffers live in one MPI shared-memory window, each rank adds its half
    of the two and writes the sum into both, between two barriers. Usable when the two ranks
    share a machine."""

    def __init__(self, n):
        from mpi4py import MPI
        self.node = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
        self.usable = self.node.Get_size() == 2
        self.win = MPI.Win.Allocate_shared(n * 4 if self.usable else 0, 4, comm=self.node)
        if not self.usable:
            return
        me = self.node.Get_rank()
        mine, other = (np.frombuffer(self.win.Shared_query(r)[0], np.float32, n)
                       for r in (me, 1 - me))
        half = slice(0, n // 2) if me == 0 else slice(n // 2, n)
        self.mine, self.other = mine[half], other[half]
        mine[:] = 1.0
        self.win.Lock_all()

    def __call__(self):
        win, node = self.win, self.node
        win.Sync(), node.Barrier(), win.Sync()   # both buffers are complete
        np.add(self.mine, self.other, out=self.mine)
        self.other[...] = self.mine
        win.Sync(), node.Barrier(), win.Sync()   # both sums are written

    def free(self):
        if self.usable:
            self.win.Unlock_all()
        self.win.Free()
        self.node.Free()


def timed_finalize(reducer):
    """Make ``reducer.spent`` accumulate the CPU and wall seconds of its end-of-backward
    ``finalize`` (the wait for the allreduces, the status, the hand-over to ``.grad``)."""
    finalize, reducer.spent = reducer.finalize, [0.0, 0.0]

    def timed():
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            finalize()
        finally:
            reducer.spent[0] += time.process_time() - c0
            reducer.spent[1] += time.perf_counter() - t0
    reducer.finalize = timed


def thread_cpu(thread):
    """CPU seconds a thread has used so far (0 when it does not exist)."""
    if thread is None or not thread.is_alive():
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    from mpi4py import MPI
    barrier = MPI.COMM_WORLD.Barrier

    inspector = Meter()
    inspector.wrap(stall.StallInspector, "report")
    inspector.wrap(consistency, "call_site")
    # the reducer's pieces (CPU of the calling thread; _fill includes the launches it makes)
    from ddp.distributed import mpi as mpi_comm, reducer as red
    meters = [Meter() for _ in PIECES]
    owners = {"Reducer": red.Reducer, "MPICommunicator": mpi_comm.MPICommunicator,
              "_RequestWork": mpi_comm._RequestWork}
    for meter, (owner, attr) in zip(meters, PIECES.values()):
        meter.wrap(owners[owner], attr)

    rng = np.random.default_rng(rank)
    shape = (args.batch,) + models.INPUT_SHAPES[args.model]
    x = ddp.tensor(rng.standard_normal(shape).astype(np.float32))
    y = ddp.tensor(rng.integers(0, 10, args.batch))
    loss_fn = nn.CrossEntropyLoss()
    setups, saved = {}, {k: os.environ.get(k) for k in ("DDP_COMM_MODE", "DDP_SYNC_COMM")}
    for mode in ["plain"] + ([m for m in args.modes.split(",") if m] if world > 1 else []):
        ddp.manual_seed(0)
        model = models.build(ddp, args.model)
        if mode != "plain":
            os.environ["DDP_COMM_MODE"] = mode if mode in ("shared", "nonblocking", "thread") \
                else "auto"
            os.environ["DDP_SYNC_COMM"] = "1" if mode == "sync" else "0"
            model = DDP(model)
            timed_finalize(model.reducer)
        setups[mode] = (model, ddp.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    for k, v in saved.items():   # as they were (a mode is read when its DDP model is built)
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    times = {}

    def add(key, value):
        times.setdefault(key, []).append(value)

    def step(mode, keep):
        model, opt = setups[mode]
        reducer = getattr(model, "reducer", None)
        if reducer is not None:
            reducer.spent[:] = [0.0, 0.0]
        for m in meters + [inspector]:
            m.on, m.cpu = reducer is not None, 0.0
        comm_thread = getattr(getattr(model, "comm", None), "_thread", None)
        barrier()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0, c0, k0 = time.perf_counter(), time.process_time(), thread_cpu(comm_thread)
        opt.zero_grad()
        with model.no_sync() if mode == "no_sync" else contextlib.nullcontext():
            loss = loss_fn(model(x), y)
            t1, c1 = time.perf_counter(), time.process_time()
            loss.backward()
        t2, c2 = time.perf_counter(), time.process_time()
        opt.step()
        t3, c3 = time.perf_counter(), time.process_time()
        k3 = thread_cpu(comm_thread)
        r3 = resource.getrusage(resource.RUSAGE_SELF)
        for m in meters + [inspector]:
            m.on = False
        if not keep:
            return
        for name, m in zip(PIECES, meters):
            add((mode, name), m.cpu)
        add((mode, "inspector"), inspector.cpu)
        add((mode, "inspector calls"), inspector.calls / 1e3)
        inspector.calls = 0
        for name, wall, cpu in (("step", t3 - t0, c3 - c0), ("forward", t1 - t0, c1 - c0),
                                ("backward", t2 - t1, c2 - c1), ("optimizer", t3 - t2, c3 - c2)):
            add((mode, name + " CPU"), cpu)
            add((mode, name + " wall"), wall)
        if reducer is not None:
            add((mode, "finalize CPU"), reducer.spent[0])
            add((mode, "finalize wall"), reducer.spent[1])
        add((mode, "comm thread CPU"), k3 - k0 if comm_thread is not None else 0.0)
        add((mode, "system CPU"), r3.ru_stime - r0.ru_stime)
        add((mode, "page faults"), (r3.ru_minflt - r0.ru_minflt) / 1e3)

    # the pieces, alone: the raw allreduce of the same bytes, the copy-in with the scaling
    nbytes = sum(p._data.nbytes for p in setups["plain"][0].parameters())
    buf = np.ones(nbytes // 4, np.float32)
    grads = [np.ones(p._data.shape, np.float32) for p in setups["plain"][0].parameters()]
    flat = np.empty(sum(g.size for g in grads), np.float32)
    views, start = [], 0
    for g in grads:
        views.append(flat[start:start + g.size].reshape(g.shape))
        start += g.size

    window = SharedSum(buf.size) if world == 2 else None
    calls = [("raw Allreduce", lambda: MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, buf)),
             ("raw Iallreduce+Wait", lambda: MPI.COMM_WORLD.Iallreduce(MPI.IN_PLACE, buf).Wait())]
    if window is not None and window.usable:
        calls.append(("shared-window sum", window))

    def raw(keep):
        for name, call in calls:
            barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            call()
            t1, c1 = time.perf_counter(), time.process_time()
            if keep:
                add((name, "wall"), t1 - t0)
                add((name, "cpu"), c1 - c0)
        c0 = time.process_time()
        for g, v in zip(grads, views):
            np.multiply(g, 1.0 / world, out=v)
        if keep:
            add(("copy-in (scaled)", "cpu"), time.process_time() - c0)

    order = list(setups)
    for i in range(args.warmup + args.steps):
        keep = i >= args.warmup
        rot = order[i % len(order):] + order[:i % len(order)]   # no position bias
        for mode in rot:
            step(mode, keep)
        raw(keep)
    mine = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    if window is not None:
        window.free()
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    if rank == 0:
        report(everyone, order, f"{models.TITLES[args.model]}, batch {args.batch}")
    dist.destroy_process_group()


def report(everyone, order, title):
    def fmt(key):
        vals = [m.get(key) for m in everyone]
        if any(v is None for v in vals):
            return "–"
        return " / ".join(f"{v:.2f}" for v in vals) + (
            f" ({statistics.mean(vals):.2f})" if len(vals) > 1 else "")
    plain = statistics.mean(m[("plain", "step CPU")] for m in everyone)
    cols = [f"{phase} {clock}" for phase in ("step", "forward", "backward", "optimizer",
                                             "finalize") for clock in ("CPU", "wall")]
    cols += ["system CPU", "page faults", "comm thread CPU", "inspector",
             "inspector calls"] + list(PIECES)
    print(f"{title} per rank, {len(everyone)} ranks; median ms per step, "
          f"rank 0 / rank 1 ... (mean); CPU = process CPU time")
    for mode in order:
        print(f"\n{mode}:")
        for c in cols:
            if (mode, c) in everyone[0] and any(m[(mode, c)] for m in everyone):
                print(f"  {c:>36}: {fmt((mode, c))}")
        cpu = statistics.mean(m[(mode, "step CPU")] for m in everyone)
        print(f"  {'CPU - plain':>36}: {cpu - plain:+.2f} ({cpu / plain:.3f}x)")
    print("\npieces alone:")
    for name in ("raw Allreduce", "raw Iallreduce+Wait", "shared-window sum"):
        if (name, "wall") not in everyone[0]:
            continue
        print(f"  {name:>20}: wall {fmt((name, 'wall'))}, CPU {fmt((name, 'cpu'))}")
    print(f"  {'copy-in (scaled)':>20}: CPU {fmt(('copy-in (scaled)', 'cpu'))}")
    print("(inspector: CPU inside the stall inspector's report and call_site; 'inspector calls'"
          " counts them per step)")


if __name__ == "__main__":
    main()

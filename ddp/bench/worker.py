"""What every rank of a ``ddp-bench`` job runs (``launcher -n P -m ddp.bench.worker --spec
FILE --out FILE``, started by :mod:`ddp.bench.jobs`): the measurements, for ddp or for PyTorch
(DDP over gloo) with the same code; rank 0 writes the medians as JSON.

How it measures (so that figures from one job compare with each other):

- **step time**: ``zero_grad``, forward and loss, backward, optimizer step (SGD, momentum
  0.9), each phase timed, after warm-up steps, every step started barrier-aligned; medians.
  All configurations of a job (plain model and DDP, several batch sizes or bucket caps) are
  timed in rounds, each in a block of consecutive steps after an untimed one (as a user's
  single model runs: on warm caches), so all see the same background load;
- **exposed communication**: median barrier-aligned backward of the DDP model minus the same
  inside ``model.no_sync()`` (backward without gradient sync);
- **allreduce**: the same buffer reduced again and again, variants interleaved in a rotating
  order, barrier-aligned; medians per message size.

Example:
    >>> t = Timer(); t.add("step", 0.002); t.add("step", 0.004); t.medians()
    {'step': 3.0}
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np

from . import costmodel, models

median = statistics.median


class Timer(dict):
    """Lists of seconds (and cpu/wall ratios under ``label/cpu``) by label; medians in ms."""

    def add(self, label, wall, cpu=None):
        self.setdefault(label, []).append(wall)
        if cpu is not None:
            self.setdefault(label + "/cpu", []).append(cpu / wall)

    def medians(self):
        return {k: median(v) * (1 if k.endswith("/cpu") else 1e3) for k, v in self.items()}


@dataclass
class Setup:
    """One configuration timed in a job: a model (DDP-wrapped or not), its optimizer, a batch."""
    model: object
    optimizer: object
    loss_fn: object
    x: object
    y: object
    batch: int
    is_ddp: bool


def make_setup(lib, name, batch, rank, wrap=None):
    lib.manual_seed(0)
    model = models.build(lib, name)
    model = wrap(model) if wrap else model
    optimizer = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(rank)
    x = lib.tensor(rng.standard_normal((batch,) + models.INPUT_SHAPES[name]).astype(np.float32))
    y = lib.tensor(rng.integers(0, 10, batch))
    return Setup(model, optimizer, lib.nn.CrossEntropyLoss(), x, y, batch, wrap is not None)


BLOCK = 5   # consecutive timed steps of one configuration before the next one's turn


def train_step(s):
    """One full step of a configuration: (forward+loss, backward, optimizer) seconds, process
    CPU seconds, the loss."""
    t0, c0 = time.perf_counter(), time.process_time()
    s.optimizer.zero_grad()
    loss = s.loss_fn(s.model(s.x), s.y)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    s.optimizer.step()
    t3 = time.perf_counter()
    return (t1 - t0, t2 - t1, t3 - t2), time.process_time() - c0, loss


def timed_backward(s, sync, barrier):
    """Seconds of one barrier-aligned backward of a DDP model, with gradient sync or inside
    ``no_sync()`` (the forward untimed)."""
    s.optimizer.zero_grad()
    with (contextlib.nullcontext() if sync else s.model.no_sync()):
        loss = s.loss_fn(s.model(s.x), s.y)
        barrier()
        t0 = time.perf_counter()
        loss.backward()
        return time.perf_counter() - t0


def measure(setups, steps, warmup, barrier, bar=None, block=BLOCK):
    """Time every configuration in ``setups`` (label -> Setup): ``warmup`` untimed steps of
    each in turn, then rounds in which each configuration, in turn, takes one untimed step
    and up to ``block`` timed, barrier-aligned, phase-timed steps in a row; a DDP model then
    as many synced and ``no_sync`` backward pairs (after one untimed pair). ``steps`` timed
    steps of each in all. Returns label -> medians (ms; ``/cpu``: process CPU time over wall
    time).

    Why blocks: a user trains one model, whose weights and activations stay hot in cache from
    step to step. One step of each configuration in turn (what this did before) makes every
    step start on caches the other models filled, which costs the p-rank job (plain and DDP
    models) more than the 1-rank job (the plain model only) and so biased the efficiency down;
    the untimed step first lets each block start warm, while the rounds still spread all
    configurations over the same background load.
    """
    timer, loss = Timer(), None
    for _ in range(warmup):
        for s in setups.values():
            barrier()
            loss = train_step(s)[2]
        if bar is not None:
            bar.log(loss=float(loss.item()), samples=next(iter(setups.values())).batch)
    done = 0
    while done < steps:
        n = min(block, steps - done)
        for label, s in setups.items():
            train_step(s)                             # caches filled by this model
            for _ in range(n):
                barrier()
                phases, cpu, loss = train_step(s)
                timer.add(label, sum(phases), cpu)
                for phase, dt in zip(("forward", "backward", "optimizer"), phases):
                    timer.add(f"{label}/{phase}", dt)
            if not s.is_ddp:
                continue
            for i in range(n + 1):
                for sync in (True, False):
                    dt = timed_backward(s, sync, barrier)
                    if i:
                        timer.add(f"{label}/backward_{'sync' if sync else 'nosync'}", dt)
        done += n
        if bar is not None:
            for _ in range(n):
                bar.log(loss=float(loss.item()), samples=next(iter(setups.values())).batch)
    return timer.medians()


def summary(medians, label):
    """The figures of one configuration, by name."""
    out = {"step_ms": medians[label], "cpu_per_wall": medians[label + "/cpu"]}
    for phase in ("forward", "backward", "optimizer"):
        out[f"{phase}_ms"] = medians[f"{label}/{phase}"]
    if label + "/backward_sync" in medians:
        out["backward_sync_ms"] = medians[label + "/backward_sync"]
        out["backward_nosync_ms"] = medians[label + "/backward_nosync"]
        out["exposed_comm_ms"] = out["backward_sync_ms"] - out["backward_nosync_ms"]
    return out


def gradient_buckets(setup, cap_mb=25.0):
    """Bytes of each gradient bucket: ddp's reducer's own (after its first-iteration rebuild),
    else (PyTorch, or no DDP) the reducer's rule applied to the parameters in reverse order."""
    buckets = getattr(getattr(setup.model, "reducer", None), "buckets", None)  # torch's: none
    if buckets is not None:
        return [int(b.grads.nbytes) for b in buckets]   # gradients (not the status slots)
    params = [p for p in setup.model.parameters() if p.requires_grad]
    sizes = [p.numel() * p.element_size() for p in params][::-1]
    return costmodel.bucket_sizes(sizes, cap_mb * 2 ** 20)


# ------------------------------------------------------------------------------- allreduce
def timed_variants(variants, reps, warmup, barrier, reset=None):
    """Median seconds of each no-argument function in ``variants`` (name -> fn), interleaved
    in a rotating order, every call barrier-aligned."""
    timer, items = Timer(), list(variants.items())
    for i in range(warmup + reps):
        if reset is not None:
            reset()
        k = i % len(items)
        for name, fn in items[k:] + items[:k]:  # no order bias
            barrier()
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                timer.add(name, time.perf_counter() - t0)
    medians = timer.medians()
    return {name: medians[name] / 1e3 for name in variants}  # in the order given


def allreduce_sweep(variants_for, sizes, reps, warmup, barrier):
    """For each message size (bytes): median seconds of each variant that
    ``variants_for(buffer)`` returns (name -> fn) on a float32 buffer of that size."""
    out = []
    for nbytes in sizes:
        buf = np.ones(max(1, nbytes // 4), np.float32)
        seconds = timed_variants(variants_for(buf), reps, warmup, barrier,
                                 reset=lambda: buf.fill(1.0))  # keep the sums finite
        out.append({"bytes": int(buf.nbytes), "seconds": seconds})
    return out


def wire_variants(framework):
    """The raw allreduce a framework's gradients travel by: mpi4py's ``Allreduce`` for ddp,
    ``torch.distributed.all_reduce`` (gloo) for PyTorch."""
    if framework == "torch":
        import torch
        return lambda buf: {"gloo all_reduce": (lambda t=torch.from_numpy(buf):
                                                torch.distributed.all_reduce(t))}
    from mpi4py import MPI
    return lambda buf: {"raw mpi4py": lambda: MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, buf,
                                                                      op=MPI.SUM)}


def link_fit(framework, p, sizes, reps, warmup, barrier):
    """α, β of this job's wire, fit to a sweep of allreduce sizes."""
    sweep = allreduce_sweep(wire_variants(framework), sizes, reps, warmup, barrier)
    name = next(iter(sweep[0]["seconds"]))
    alpha, beta = costmodel.fit_alpha_beta([r["bytes"] for r in sweep],
                                           [r["seconds"][name] for r in sweep], p)
    return {"alpha_s": alpha, "beta_Bps": beta, "wire": name, "sweep": sweep}


def bucket_bandwidth(setup, comm, reps, warmup, barrier):
    """Gradient sync of a DDP model's buckets against one raw mpi4py Allreduce of the same
    bytes: raw per bucket, ddp's blocking Allreduce per bucket, the reducer's own reductions (on
    DDP's communicator, in the mode it chose: MPI's non-blocking allreduce, the thread, or sums
    in shared memory) then wait all, and that plus the copies the reducer makes of gradients
    into their buckets (with the 1/world scaling) — only of the gradients no op wrote there
    in the model's last backward (the ops with ``writes_grad_sinks`` write theirs in place:
    ``Node.gradient_sink``), and
    ``.grad`` gets views of the buckets back, no copy out."""
    from mpi4py import MPI
    world, reducer = MPI.COMM_WORLD, setup.model.reducer
    buckets = reducer.buckets
    nbytes = sum(b.grads.nbytes for b in buckets)   # the wire also carries 2 status slots
    flat = np.ones(nbytes // 4, np.float32)

    index = {id(p): i for i, p in enumerate(reducer.params)}
    copied = [[(np.ones_like(v), v) for v, p in zip(b.views, b.params)
               if not reducer._sunk[index[id(p)]]] for b in buckets]   # what backward computed

    def wait_all():
        for b in buckets:
            if b.work is not None:   # (summed in shared memory: only the last bucket's)
                b.work.wait()

    def reducers_allreduces():   # the reducer's own launches, in its mode
        for b in buckets:
            reducer._launch(b)
        wait_all()

    def with_copy_in():  # what the reducer does around the wire, minus the autograd hooks
        for b, pairs in zip(buckets, copied):
            for g, v in pairs:
                np.multiply(g, 1.0 / comm.size, out=v)
            reducer._launch(b)
        wait_all()

    def reset():
        flat.fill(1.0)
        for b in buckets:
            b.data.fill(1.0)

    variants = {
        "raw mpi4py, one buffer": lambda: world.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM),
        "raw mpi4py, per bucket": lambda: [world.Allreduce(MPI.IN_PLACE, b.data, op=MPI.SUM)
                                           for b in buckets],
        "ddp comm.Allreduce, per bucket": lambda: [comm.Allreduce(b.data, "sum") for b in buckets],
        f"DDP's allreduces ({reducer.comm_mode}), then wait all": reducers_allreduces,
        f"+ the copies into the buckets (scaled; {sum(map(len, copied))} of "
        f"{len(reducer.params)} gradients)": with_copy_in,
    }
    return {"bytes": int(nbytes), "buckets": [int(b.grads.nbytes) for b in buckets],
            "seconds": timed_variants(variants, reps, warmup, barrier, reset)}


# ------------------------------------------------------------------------------- tasks
def task_scaling(lib, spec, p, rank, barrier, comm, bar):
    """Per model: the plain model and (p > 1) DDP at every per-rank batch the driver asks for
    (the weak-scaling batch and the strong-scaling share of the global batch)."""
    DDP = lib.nn.parallel.DistributedDataParallel
    out = {"models": {}}
    for name in spec["models"]:
        setups = {}
        for batch in spec["batches"]:
            setups[f"plain/{batch}"] = make_setup(lib, name, batch, rank)
            if p > 1:
                setups[f"ddp/{batch}"] = make_setup(lib, name, batch, rank,
                                                    lambda m: DDP(m, bucket_cap_mb=25))
        medians = measure(setups, spec["steps"], spec["warmup"], barrier, bar)
        first = setups[f"{'ddp' if p > 1 else 'plain'}/{spec['batches'][0]}"]
        out["models"][name] = {
            "parameters": int(sum(q.numel() for q in first.model.parameters())),
            "buckets": gradient_buckets(first),
            "configs": {label: summary(medians, label) for label in setups}}
    if p > 1:
        out["link"] = link_fit(spec["framework"], p, spec["sizes"], spec["reps"],
                               spec["warmup"], barrier)
    return out


def task_sweep(lib, spec, p, rank, barrier, comm, bar):
    """One model at one batch: plain, then (p > 1) DDP at every bucket cap and with
    synchronous communication (``DDP_SYNC_COMM=1``: no overlap at all)."""
    DDP = lib.nn.parallel.DistributedDataParallel
    name, batch = spec["models"][0], spec["batches"][0]
    setups = {"plain": make_setup(lib, name, batch, rank)}
    if p > 1:
        for cap in spec["caps"]:
            setups[f"cap/{cap:g}"] = make_setup(lib, name, batch, rank,
                                                lambda m: DDP(m, bucket_cap_mb=cap))
        os.environ["DDP_SYNC_COMM"] = "1"  # read when the Reducer is built
        setups["sync"] = make_setup(lib, name, batch, rank, lambda m: DDP(m, bucket_cap_mb=25))
        del os.environ["DDP_SYNC_COMM"]
    medians = measure(setups, spec["steps"], spec["warmup"], barrier, bar)
    out = {"configs": {label: summary(medians, label) for label in setups},
           "buckets": {label: gradient_buckets(s) for label, s in setups.items()}}
    if p > 1:
        out["link"] = link_fit("ddp", p, spec["sizes"], spec["reps"], spec["warmup"],
                               barrier)
    return out


def task_bandwidth(lib, spec, p, rank, barrier, comm, bar):
    """Allreduce per message size: raw mpi4py against ddp's communicator (blocking, and the
    non-blocking path DDP uses); then each model's real buckets, copies included."""
    from mpi4py import MPI

    def variants(buf):
        return {"raw mpi4py": lambda: MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM),
                "ddp Allreduce": lambda: comm.Allreduce(buf, "sum"),
                "ddp Iallreduce+wait": lambda: comm.Iallreduce(buf, "sum").wait()}
    out = {"sizes": allreduce_sweep(variants, spec["sizes"], spec["reps"], spec["warmup"],
                                    barrier), "models": {}}
    DDP = lib.nn.parallel.DistributedDataParallel
    for name in spec["models"]:
        setup = make_setup(lib, name, spec["batches"][0], rank, DDP)
        measure({"ddp": setup}, 1, 1, barrier)  # gradients exist and buckets are rebuilt
        out["models"][name] = bucket_bandwidth(setup, comm, spec["reps"], spec["warmup"],
                                               barrier)
    return out


TASKS = {"scaling": task_scaling, "sweep": task_sweep, "bandwidth": task_bandwidth}


def main(argv=None):
    p = argparse.ArgumentParser(description="one rank of a ddp-bench job")
    p.add_argument("--spec", required=True, help="JSON file: what to measure")
    p.add_argument("--out", required=True, help="JSON file rank 0 writes")
    args = p.parse_args(argv)
    with open(args.spec) as f:
        spec = json.load(f)
    size, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    from mpi4py import MPI  # the launcher has initialised MPI; its barrier serves both libraries
    barrier = MPI.COMM_WORLD.Barrier if size > 1 else (lambda: None)
    comm = None
    if spec["framework"] == "torch":
        import torch as lib
        lib.set_num_threads(1)
        if size > 1:
            lib.distributed.init_process_group("gloo", rank=rank, world_size=size)
    else:
        import ddp as lib
        if size > 1:
            lib.distributed.init_process_group("mpi")
            # what DDP's gradients travel on: a duplicate without the per-collective
            # signature check (the world group's collectives pay one 16-byte allreduce each)
            comm = lib.distributed.get_communicator().dup(label="ddp-bench", checked=False)
    from ..progress import Progress
    steps = spec.get("steps", 0) + spec.get("warmup", 0)
    with Progress(total=steps * max(1, len(spec.get("models", [1]))) if steps else None,
                  desc=f"{spec['framework']} {spec['task']} {size} rank(s)",
                  unit="step") as bar:
        result = TASKS[spec["task"]](lib, spec, size, rank, barrier, comm, bar)
    if rank == 0:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()

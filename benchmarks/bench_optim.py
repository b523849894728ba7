"""Time of one ``optimizer.step()`` on the parameters of an MLP 784-1024-1024-10 (about 1.86M
float32 parameters in 6 tensors, random gradients), ddp against torch.optim (when installed) in
the same run, one thread on both sides. LBFGS steps with a closure whose gradient is a fixed
diagonal quadratic's (``g = h * p``), so the time is the optimizer's own: 5 iterations, history
10, the tolerances off so that no step stops early. SparseAdam is left out: ddp has no sparse
gradients to feed it yet; Muon too (it takes 2-D parameters only, the MLP has biases).

    python benchmarks/bench_optim.py [--repeats 15] [--steps 20]

Prints the median ms per step of each optimizer and the ratio ddp / PyTorch. PyTorch's CPU
optimizers run the single-tensor ("for-loop") implementation by default, the one ddp follows.
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

SHAPES = [(1024, 784), (1024,), (1024, 1024), (1024,), (10, 1024), (10,)]

CONFIGS = {
    "SGD momentum=0.9": lambda optim, params: optim.SGD(params, lr=0.01, momentum=0.9),
    "SGD momentum=0.9 nesterov wd=1e-4": lambda optim, params: optim.SGD(
        params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "Adam": lambda optim, params: optim.Adam(params, lr=1e-3),
    "AdamW wd=1e-2": lambda optim, params: optim.AdamW(params, lr=1e-3),
    "Adamax": lambda optim, params: optim.Adamax(params),
    "NAdam": lambda optim, params: optim.NAdam(params),
    "RAdam": lambda optim, params: optim.RAdam(params),
    "ASGD": lambda optim, params: optim.ASGD(params),
    "Rprop": lambda optim, params: optim.Rprop(params),
    "Adafactor": lambda optim, params: optim.Adafactor(params),
    "LBFGS max_iter=5 history=10": lambda optim, params: with_closure(
        optim.LBFGS(params, max_iter=5, history_size=10, tolerance_grad=-1,
                    tolerance_change=-1), params),
}


def with_closure(opt, params):
    """Give ``opt`` (LBFGS) the closure the timing calls ``step`` with: the gradient of
    ``sum(h * p**2) / 2`` for a fixed positive ``h`` per parameter, set without autograd."""
    lib = type(params[0]).__module__.split(".")[0]
    lib = __import__(lib)
    curvatures = [lib.tensor(np.random.default_rng(1).uniform(0.5, 2.0, tuple(p.shape))
                             .astype(np.float32)) for p in params]

    def closure():
        loss = 0.0
        for p, h in zip(params, curvatures):
            p.grad = p.detach() * h
            loss += float((p.grad * p.detach()).sum())
        return lib.tensor(loss / 2)

    opt.bench_closure = closure
    return opt


def make_params(lib, rng):
    """The MLP's parameters with random gradients set, as tensors of ``lib``."""
    params = []
    for shape in SHAPES:
        p = lib.nn.Parameter(lib.tensor(rng.standard_normal(shape).astype(np.float32)))
        p.grad = lib.tensor(rng.standard_normal(shape).astype(np.float32))
        params.append(p)
    return params


def time_steps(optimizers, steps, repeats):
    """Median over ``repeats`` runs of the mean ms per step over ``steps`` steps, for each
    optimizer. The optimizers take turns within each run, so machine load affects them alike."""
    steppers = [(lambda o=opt: o.step(o.bench_closure)) if hasattr(opt, "bench_closure")
                else opt.step for opt in optimizers]
    for step in steppers:
        step()  # create the state (and scratch buffers) outside the timing
    runs = [[] for _ in optimizers]
    for _ in range(repeats):
        for step, times in zip(steppers, runs):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times.append((time.perf_counter() - start) / steps * 1e3)
    return [statistics.median(times) for times in runs]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None

    n = sum(int(np.prod(s)) for s in SHAPES)
    print(f"optimizer.step() on MLP 784-1024-1024-10 ({n:,} params, {len(SHAPES)} tensors), "
          f"1 thread, median of {args.repeats} x {args.steps} steps")
    print(f"{'optimizer':<36} {'ddp ms':>8} {'torch ms':>9} {'ratio':>6}")
    for name, build in CONFIGS.items():
        optimizers = [build(ddp.optim, make_params(ddp, np.random.default_rng(0)))]
        if torch is not None:
            optimizers.append(build(torch.optim, make_params(torch, np.random.default_rng(0))))
        times = time_steps(optimizers, args.steps, args.repeats)
        if torch is not None:
            print(f"{name:<36} {times[0]:8.3f} {times[1]:9.3f} {times[0] / times[1]:6.2f}")
        else:
            print(f"{name:<36} {times[0]:8.3f} {'-':>9} {'-':>6}")

if __name__ == "__main__":
    main()

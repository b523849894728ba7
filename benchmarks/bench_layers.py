"""Forward + backward time of each layer type at a realistic size, and one training step of a
small CNN, ddp against PyTorch (when installed) in the same run. One BLAS thread.

    python benchmarks/bench_layers.py [--repeats 7] [--only conv2d,lstm] [--clock cpu]

``--clock cpu`` times with the process's CPU time instead of the wall clock: steadier on a
machine shared with other work (time spent waiting for a core is not counted).

The same code builds both sides: ``lib`` is ``ddp`` or ``torch`` (ddp's API is PyTorch's).
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
from bench_train_step import small_cnn  # noqa: E402  (the same model as the step benchmark)


def cases(lib):
    """name -> (module, input factory, loss on the output)."""
    nn = lib.nn
    rng = np.random.default_rng(0)

    def randn(*shape):
        return lib.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)

    def ints(high, *shape):
        return lib.tensor(rng.integers(0, high, shape))

    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    return {
        "linear 784->1024, batch 128": (nn.Linear(784, 1024), lambda: (randn(128, 784),), first),
        "conv2d 16->32 3x3 pad1, (32,16,28,28)": (nn.Conv2d(16, 32, 3, padding=1),
                                                 lambda: (randn(32, 16, 28, 28),), first),
        "conv_transpose2d 32->16 4x4 s2, (16,32,14,14)": (
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), lambda: (randn(16, 32, 14, 14),), first),
        "max_pool2d 2x2, (32,32,28,28)": (nn.MaxPool2d(2), lambda: (randn(32, 32, 28, 28),), first),
        "avg_pool2d 2x2, (32,32,28,28)": (nn.AvgPool2d(2), lambda: (randn(32, 32, 28, 28),), first),
        "batch_norm2d 32, (32,32,28,28)": (nn.BatchNorm2d(32), lambda: (randn(32, 32, 28, 28),), first),
        "group_norm 8, (32,32,28,28)": (nn.GroupNorm(8, 32), lambda: (randn(32, 32, 28, 28),), first),
        "instance_norm2d 32 affine, (32,32,28,28)": (nn.InstanceNorm2d(32, affine=True),
                                                     lambda: (randn(32, 32, 28, 28),), first),
        "layer_norm 1024, (128,1024)": (nn.LayerNorm(1024), lambda: (randn(128, 1024),), first),
        "dropout p=0.5, (128,1024)": (nn.Dropout(0.5), lambda: (randn(128, 1024),), first),
        "embedding 10000x128, (128,32)": (nn.Embedding(10000, 128), lambda: (ints(10000, 128, 32),), first),
        "lstm 128->256, (35 steps, batch 32)": (nn.LSTM(128, 256), lambda: (randn(35, 32, 128),), first),
        "gru 128->256, (35 steps, batch 32)": (nn.GRU(128, 256), lambda: (randn(35, 32, 128),), first),
        "cross_entropy (128,1000)": (nn.CrossEntropyLoss(), lambda: (randn(128, 1000), ints(1000, 128)),
                                     lambda out: out),
    }


clock = time.perf_counter


def time_case(lib, module, make_inputs, reduce, repeats):
    """Forward, then backward from a fixed random upstream gradient (the same values for both
    libraries): what a layer inside a network receives. ``out.sum().backward()`` would hand
    every layer one value broadcast (all strides 0), which no layer in a network sees."""
    inputs = make_inputs()
    out = reduce(module(*inputs))
    upstream = None
    if out.ndim:
        values = np.random.default_rng(1).standard_normal(tuple(out.shape))
        upstream = lib.tensor(values.astype(np.float32))

    def step():
        t0 = clock()
        out = reduce(module(*inputs))
        out.backward(upstream)
        return clock() - t0
    step()
    return statistics.median(step() for _ in range(repeats)) * 1e3


def cnn_step(lib, repeats, batch=128):
    """One SGD-momentum training step of the small CNN on a (batch,1,28,28) batch."""
    step = cnn_stepper(lib, batch)
    step()
    return statistics.median(step() for _ in range(repeats)) * 1e3


def cnn_stepper(lib, batch=128):
    """A function timing one step of :func:`cnn_step` (seconds of ``clock``)."""
    lib.manual_seed(0)
    model = small_cnn(lib)
    opt = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if hasattr(lib, "optim") and \
        hasattr(lib.optim, "SGD") else None
    rng = np.random.default_rng(0)
    x = lib.tensor(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32))
    y = lib.tensor(rng.integers(0, 10, batch))
    loss_fn = lib.nn.CrossEntropyLoss()

    def step():
        t0 = clock()
        for p in model.parameters():
            p.grad = None
        loss = loss_fn(model(x), y)
        loss.backward()
        if opt is not None:
            opt.step()
        else:  # before ddp.optim exists: the same update written out
            with lib.no_grad():
                for p in model.parameters():
                    p.sub_(0.01 * p.grad)
        return clock() - t0
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--only", default="", help="comma-separated substrings of case names")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = p.parse_args(argv)
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    libs = [("ddp", ddp)]
    try:
        import torch
        torch.set_num_threads(1)
        libs.append(("torch", torch))
    except ImportError:
        pass
    wanted = [w for w in args.only.split(",") if w]
    results = {}
    for name, lib in libs:
        lib.manual_seed(0)
        for case, (module, make, reduce) in cases(lib).items():
            if wanted and not any(w in case for w in wanted):
                continue
            results.setdefault(case, {})[name] = time_case(lib, module, make, reduce, args.repeats)
        if not wanted or any(w in "small cnn step" for w in wanted):
            results.setdefault("small CNN training step, batch 128", {})[name] = cnn_step(lib, args.repeats)
    print(f"forward + backward, ms (median of {args.repeats}, {args.clock} clock); "
          f"ratio = ddp / torch")
    for case, row in results.items():
        ratio = f"{row['ddp'] / row['torch']:.2f}x" if "torch" in row else "-"
        cols = "  ".join(f"{n} {row[n]:8.2f}" for n, _ in libs if n in row)
        print(f"  {case:<48} {cols}  {ratio}")


if __name__ == "__main__":
    main()

"""Peak memory of a training step, ddp against PyTorch: the small CNN (batch 128 of 1x28x28) and
an LSTM 128->256 over 35 steps (batch 32, a linear head), SGD with momentum.

    python benchmarks/bench_memory.py [--steps 3] [--runs 3]

Each (library, model) runs in a fresh process (Linux): after the imports, the model and the
data are made and the model has taken one step on 2 samples (what a library loads on its
first use: ddp's Numba kernels, about 130 MiB of compiler and code per process), the resident
set is read (``VmRSS``) and its peak reset (``/proc/self/clear_refs``); then ``--steps``
training steps on the whole batch run and the peak resident set (``VmHWM``) is read. The
figure is the peak minus that baseline: the gradients, the optimizer's state and the largest
set of arrays alive during a step (saved activations, temporaries), as the operating system
counts them. One BLAS thread. The figure moves between processes (PyTorch's by several MiB:
what its allocator and the C library's keep of the warm-up's memory), so each (library, model)
runs ``--runs`` times, the libraries taking turns: the median, and the range.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024   # kB -> bytes
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(lib_name, model, steps):
    """Runs in the fresh process: returns (baseline bytes, peak bytes)."""
    import numpy as np
    if lib_name == "torch":
        import torch as lib
        lib.set_num_threads(1)
    else:
        import ddp as lib   # the ddp on PYTHONPATH (PYTHONPATH=. from a checkout)
    sys.path.insert(0, HERE)
    from bench_train_step import small_cnn
    lib.manual_seed(0)
    rng = np.random.default_rng(0)
    nn = lib.nn
    if model == "cnn":
        net = small_cnn(lib)
        x = lib.tensor(rng.standard_normal((128, 1, 28, 28)).astype(np.float32))
        y = lib.tensor(rng.integers(0, 10, 128))

        def loss_of(n=128):
            return nn.functional.cross_entropy(net(x[:n]), y[:n])
    else:
        rnn, head = nn.LSTM(128, 256), nn.Linear(256, 10)
        net = nn.ModuleList([rnn, head])
        x = lib.tensor(rng.standard_normal((35, 32, 128)).astype(np.float32))
        y = lib.tensor(rng.integers(0, 10, 32))

        def loss_of(n=32):
            out, _ = rnn(x[:, :n])
            return nn.functional.cross_entropy(head(out[-1]), y[:n])
    opt = lib.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step(*n):
        opt.zero_grad()
        loss_of(*n).backward()
        opt.step()
    step(2)   # (the warm-up: see the docstring)
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:   # the peak from here on
        f.write("5")
    for _ in range(steps):
        step()
    return base, _status("VmHWM")


def measure(lib_name, model, steps):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", lib_name, model,
                          str(steps)], capture_output=True, text=True, check=True)
    base, peak = json.loads(out.stdout.strip().splitlines()[-1])
    return (peak - base) / 2 ** 20


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--runs", type=int, default=3, help="fresh processes per (library, model)")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        lib_name, model, steps = args.child
        print(json.dumps(_child(lib_name, model, int(steps))))
        return
    libs = ["ddp"]
    try:
        import importlib.util
        if importlib.util.find_spec("torch") is not None:
            libs.append("torch")
    except ImportError:
        pass
    print(f"peak resident memory above the baseline during {args.steps} training steps, MiB: "
          f"median (min-max) of {args.runs} processes")
    for model, label in (("cnn", "small CNN, batch 128"),
                         ("lstm", "LSTM 128->256, 35 steps, batch 32")):
        runs = {lib: [] for lib in libs}
        for _ in range(args.runs):
            for lib in libs:
                runs[lib].append(measure(lib, model, args.steps))
        row = {lib: statistics.median(v) for lib, v in runs.items()}
        ratio = f"{row['ddp'] / row['torch']:.2f}x" if "torch" in row else "-"
        cols = "  ".join(f"{k} {row[k]:5.1f} ({min(v):4.1f}-{max(v):4.1f})"
                         for k, v in runs.items())
        print(f"  {label:<34} {cols}  {ratio}")


if __name__ == "__main__":
    main()

"""One training step (forward, cross-entropy loss, backward, SGD-momentum update) of the MLP
784-1024-1024-10 at batch 128, and of the small CNN, with one BLAS thread: ddp against a
hand-written NumPy version of the same MLP step and against PyTorch (when installed), all in the
same run.

    python benchmarks/bench_train_step.py [--repeats 20]
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
from ddp.bench.models import mlp, small_cnn  # noqa: E402,F401  (the models ddp-bench times)

SIZES = (784, 1024, 1024, 10)


def framework_step(lib, model_fn, x_shape, batch=128):
    """A step function for ``lib`` (ddp or torch: the same PyTorch-style code)."""
    lib.manual_seed(0)
    model = model_fn(lib)
    opt = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = lib.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x = lib.tensor(rng.standard_normal((batch,) + x_shape).astype(np.float32))
    y = lib.tensor(rng.integers(0, 10, batch))

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return step


def numpy_mlp_step(batch=128, lr=0.01, momentum=0.9):
    """The MLP step written by hand in NumPy: the floor a framework on NumPy can reach."""
    rng = np.random.default_rng(0)
    ws = [(rng.standard_normal((i, o)) / np.sqrt(i)).astype(np.float32)
          for i, o in zip(SIZES[:-1], SIZES[1:])]
    bs = [np.zeros(o, np.float32) for o in SIZES[1:]]
    bufs = [np.zeros_like(p) for p in ws + bs]
    x = rng.standard_normal((batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, batch)

    def step():
        acts = [x]
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = acts[-1] @ w + b
            acts.append(np.maximum(h, 0) if i < len(ws) - 1 else h)
        logits = acts[-1]
        z = logits - logits.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        g = p
        g[np.arange(batch), y] -= 1
        g /= batch
        grads_w, grads_b = [], []
        for i in range(len(ws) - 1, -1, -1):
            grads_w.append(acts[i].T @ g)
            grads_b.append(g.sum(0))
            if i:
                g = (g @ ws[i].T) * (acts[i] > 0)
        grads = grads_w[::-1] + grads_b[::-1]
        for param, grad, buf in zip(ws + bs, grads, bufs):
            buf *= momentum
            buf += grad
            param -= lr * buf
    return step


def median_ms(step, repeats):
    step()
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    rows = [("MLP 784-1024-1024-10, batch 128", {
        "ddp": median_ms(framework_step(ddp, mlp, (784,)), args.repeats),
        "numpy by hand": median_ms(numpy_mlp_step(), args.repeats),
        **({"torch": median_ms(framework_step(torch, mlp, (784,)), args.repeats)} if torch else {}),
    }), ("small CNN, batch 128 of 1x28x28", {
        "ddp": median_ms(framework_step(ddp, small_cnn, (1, 28, 28)), max(5, args.repeats // 4)),
        **({"torch": median_ms(framework_step(torch, small_cnn, (1, 28, 28)),
                               max(5, args.repeats // 4))} if torch else {}),
    })]
    print("training step (forward, loss, backward, SGD momentum), ms, median")
    for name, row in rows:
        parts = [f"{k} {v:7.2f}" for k, v in row.items()]
        ratios = [f"ddp/{k} {row['ddp'] / row[k]:.2f}x" for k in row if k != "ddp"]
        print(f"  {name:<34} " + "  ".join(parts) + "   " + "  ".join(ratios))


if __name__ == "__main__":
    main()

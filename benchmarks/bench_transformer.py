"""A training step (forward, MSE loss, backward, Adam update) of a 2-layer TransformerEncoder —
d_model 256, 4 heads, dim_feedforward 2048 (PyTorch's default), dropout 0.1, sequence 128, batch
32 — in ddp and in PyTorch (when installed), one BLAS thread, in the same run; and the attention
itself, softmax(q kᵀ/√d) v forward + backward at the same shape, as ddp's fused op, as the same
step composed of ddp's existing ops, and as PyTorch's scaled_dot_product_attention.

    python benchmarks/bench_transformer.py [--repeats 7] [--only step|attention] [--clock cpu]

``--clock cpu`` times with the process's CPU time instead of the wall clock: steadier on a
machine that other work shares (both sides run one thread).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import ddp  # noqa: E402

D_MODEL, HEADS, SEQ, BATCH, LAYERS = 256, 4, 128, 32, 2


def encoder_step(lib, batch_first=True, dropout=0.1):
    """A step function for ``lib`` (ddp or torch: the same PyTorch code)."""
    nn = lib.nn
    lib.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, dropout=dropout, batch_first=batch_first)
    model = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
    model.train()
    opt = lib.optim.Adam(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    shape = (BATCH, SEQ, D_MODEL) if batch_first else (SEQ, BATCH, D_MODEL)
    x = lib.tensor(rng.standard_normal(shape).astype(np.float32))
    target = lib.tensor(rng.standard_normal(shape).astype(np.float32))

    def step():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
    return step


def composed_attention(q, k, v, dropout_p):
    """softmax(q kᵀ/√d) v from ddp's existing ops (the alternative to the fused op)."""
    F = ddp.nn.functional
    w = F.softmax((q @ k.transpose(-2, -1)) * (1 / math.sqrt(q.shape[-1])), dim=-1)
    return F.dropout(w, dropout_p) @ v


def attention_step(lib, fn, dropout_p):
    rng = np.random.default_rng(0)
    shape = (BATCH, HEADS, SEQ, D_MODEL // HEADS)
    q, k, v = (lib.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
               for _ in range(3))
    g = lib.tensor(rng.standard_normal(shape).astype(np.float32))

    def step():
        for t in (q, k, v):
            t.grad = None
        fn(q, k, v, dropout_p).backward(g)
    return step


def interleaved(steps, repeats, clock=time.perf_counter):
    """Medians of steps timed in turn (each repeat runs every step once), so the machine's load
    changes touch all of them alike."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = clock()
            step()
            times[name].append(clock() - t0)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def report(title, row):
    print(title)
    ref = row.get("torch")
    for name, ms in row.items():
        ratio = f"   {ms / ref:5.2f}x torch" if ref else ""
        print(f"  {name:<34} {ms:9.1f} ms{ratio}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--only", choices=["step", "attention"])
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = p.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    if args.only in (None, "attention"):
        F = ddp.nn.functional
        for dropout_p in (0.0, 0.1):
            steps = {"ddp fused op": attention_step(
                         ddp, lambda q, k, v, p: F.scaled_dot_product_attention(q, k, v,
                                                                                dropout_p=p),
                         dropout_p),
                     "ddp composed of existing ops": attention_step(ddp, composed_attention,
                                                                    dropout_p)}
            if torch is not None:
                steps["torch"] = attention_step(
                    torch, lambda q, k, v, p: torch.nn.functional.scaled_dot_product_attention(
                        q, k, v, dropout_p=p), dropout_p)
            row = interleaved(steps, args.repeats * 3, clock)
            report(f"attention forward+backward, (batch {BATCH}, heads {HEADS}, L=S={SEQ}, "
                   f"E={D_MODEL // HEADS}), dropout {dropout_p}, ms, median", row)
            print(f"  fused vs composed: {row['ddp fused op'] / row['ddp composed of existing ops']:.2f}x")
    if args.only in (None, "step"):
        for batch_first in (True, False):
            steps = {"ddp": encoder_step(ddp, batch_first)}
            if torch is not None:
                steps["torch"] = encoder_step(torch, batch_first)
            report(f"TransformerEncoder training step (2 layers, d_model {D_MODEL}, {HEADS} heads, "
                   f"ff 2048, seq {SEQ}, batch {BATCH}, batch_first={batch_first}, dropout 0.1, "
                   f"Adam), ms, median", interleaved(steps, args.repeats, clock))


if __name__ == "__main__":
    main()

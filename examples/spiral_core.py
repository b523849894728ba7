"""Train a two-layer network on a 3-class spiral using only ddp's core: tensors and autograd.

No nn, no optimizer: weights are plain tensors with requires_grad, the update is written out.
It shows the core carrying a real training loop; examples/ grows richer ones as the framework
does.

    python examples/spiral_core.py [--steps 300] [--seed 0]
"""
from __future__ import annotations

import argparse
import math

import numpy as np

import ddp
from ddp.progress import Progress

from common import parse_args


def spiral(n_per_class=200, classes=3, noise=0.2, seed=0):
    """Points on interleaved spiral arms (the classic non-linearly-separable toy set)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(classes):
        r = np.linspace(0.0, 1.0, n_per_class)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, n_per_class) + rng.normal(0, noise, n_per_class)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(n_per_class, c))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = parse_args(p, argv)

    ddp.manual_seed(args.seed)
    x_np, y_np = spiral(seed=args.seed)
    x, y = ddp.from_numpy(x_np), ddp.from_numpy(y_np)
    n, classes = x.shape[0], 3

    def param(*shape, fan_in):
        return (ddp.randn(*shape) / math.sqrt(fan_in)).requires_grad_()

    w1, b1 = param(2, args.hidden, fan_in=2), ddp.zeros(args.hidden, requires_grad=True)
    w2, b2 = param(args.hidden, classes, fan_in=args.hidden), ddp.zeros(classes, requires_grad=True)
    params = [w1, b1, w2, b2]

    bar = Progress(range(args.steps + 1), desc="train", unit="step")
    for step in bar:
        logits = (x @ w1 + b1).relu() @ w2 + b2
        log_probs = logits - logits.logsumexp(dim=1, keepdim=True)
        loss = -log_probs.gather(1, y.unsqueeze(1)).mean()
        for p_ in params:
            p_.grad = None
        loss.backward()
        with ddp.no_grad():
            for p_ in params:
                p_.sub_(args.lr * p_.grad)
        bar.log(loss=loss, samples=n)
        if step % 50 == 0:
            acc = (logits.argmax(dim=1) == y).float().mean().item()
            bar.write(f"step {step:4d}  loss {loss.item():.4f}  train accuracy {acc:.3f}")
    bar.close()
    acc = ((x @ w1 + b1).relu() @ w2 + b2).argmax(dim=1).eq(y).float().mean().item()
    print(f"final train accuracy {acc:.3f} on {n} points")
    return acc


if __name__ == "__main__":
    main()

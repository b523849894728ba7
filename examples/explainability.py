"""Explainability on scikit-learn's bundled digits: which pixels an MLP's decision rests on, by
input-gradient saliency and by integrated gradients (Sundararajan et al., 2017), both from
autograd. Integrated gradients are checked by their completeness axiom (the attributions add
up to f(x) - f(baseline)) and both by deletion: blanking the pixels they rank highest lowers the
class score more than blanking random pixels.

    python examples/explainability.py [--steps 64]
"""
from __future__ import annotations

import argparse


import ddp
import ddp.nn as nn
from ddp.metrics import accuracy

from common import bundled, loader, parse_args, predict, train_epoch


def saliency(model, x, target):
    """|d score_target / d x| per input pixel."""
    x = x.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return x.grad.abs()


def integrated_gradients(model, x, target, baseline, steps):
    """(x - baseline) times the mean gradient of the target score along the straight path from
    the baseline to x (midpoint rule, ``steps`` points, one batched forward/backward)."""
    alphas = (ddp.arange(steps) + 0.5) / steps                         # (steps,)
    path = baseline + alphas[:, None, None] * (x - baseline)[None]     # (steps, N, 64)
    path = path.reshape(-1, x.shape[1]).requires_grad_(True)
    scores = model(path).gather(1, target.repeat(steps)[:, None])
    grad, = ddp.autograd.grad(scores.sum(), path)
    return (x - baseline) * grad.reshape(steps, *x.shape).mean(0)


@ddp.no_grad()
def score(model, x, target):
    return model(x).gather(1, target[:, None]).squeeze(1)


def deletion_drop(model, x, target, baseline, ranking, k):
    """Mean drop of the target score when the ``k`` top-ranked pixels of each image are set
    to the baseline."""
    top = ranking.argsort(dim=1, descending=True)[:, :k]
    blanked = x.clone()
    rows = ddp.arange(x.shape[0])[:, None]
    blanked[rows, top] = baseline.expand_as(x)[rows, top]
    return (score(model, x, target) - score(model, blanked, target)).mean().item()


def heat_map(values):
    """An 8x8 attribution map in characters (darker: more evidence for the class)."""
    shades = " .:-=+*#%@"
    v = values.reshape(8, 8).clamp(min=0)
    v = (v / (v.max() + 1e-12) * (len(shades) - 1)).round().long()
    return "\n".join("".join(shades[i] * 2 for i in row.tolist()) for row in v)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=64, help="integration points")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--k", type=int, default=8, help="pixels blanked by the deletion check")
    p.add_argument("--seed", type=int, default=0)
    args = parse_args(p, argv)
    ddp.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = bundled("digits", seed=args.seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 10))
    optimizer = ddp.optim.Adam(model.parameters(), lr=3e-3)
    data = loader(x_train, y_train, seed=args.seed)
    for _ in range(args.epochs):
        train_epoch(model, data, nn.CrossEntropyLoss(), optimizer)
    model.eval()
    print(f"test accuracy {accuracy(predict(model, x_test).argmax(1), ddp.tensor(y_test)):.4f}")

    x = ddp.tensor(x_test[:args.images])
    target = predict(model, x_test[:args.images]).argmax(1)      # explain the predicted class
    baseline = ddp.tensor(x_train.mean(0))                         # the average digit
    sal = saliency(model, x, target)
    ig = integrated_gradients(model, x, target, baseline, args.steps)

    gap = score(model, x, target) - score(model, baseline.expand_as(x), target)
    completeness = ((ig.sum(1) - gap).abs() / gap.abs().clamp(min=1e-3)).max().item()
    print(f"integrated gradients, {args.steps} steps: attributions sum to f(x) - f(baseline) "
          f"within {100 * completeness:.3f} % (worst of {len(x)} images)")
    generator = ddp.Generator().manual_seed(args.seed)
    drops = {"integrated gradients": deletion_drop(model, x, target, baseline, ig, args.k),
             "saliency": deletion_drop(model, x, target, baseline, sal, args.k),
             "random pixels": deletion_drop(model, x, target, baseline,
                                            ddp.rand(*x.shape, generator=generator), args.k)}
    for name, drop in drops.items():
        print(f"blanking the {args.k} top pixels by {name:>20}: class score drops by {drop:.3f}")
    print(f"integrated gradients of test image 0 (predicted {target[0].item()}):")
    print(heat_map(ig[0]))
    return {"completeness": completeness, **drops}


if __name__ == "__main__":
    main()

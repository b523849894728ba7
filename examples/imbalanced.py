"""An imbalanced binary task: scikit-learn's breast-cancer data with the malignant class cut to
about 10% of the training set. Compares a plain loss, a weighted loss (``pos_weight``) and a
``WeightedRandomSampler`` by precision, recall and F1 of the rare class.

    python examples/imbalanced.py [--epochs 40]
"""
from __future__ import annotations

import argparse

import numpy as np

import ddp
import ddp.nn as nn
from ddp.metrics import f1_score, precision, recall
from ddp.utils.data import WeightedRandomSampler

from common import bundled, loader, parse_args, predict, train_epoch


def make_imbalanced(x, y, rare=0, fraction=0.1, seed=0):
    """Keep all of the common class and only enough of ``rare`` to make it ``fraction``."""
    rng = np.random.default_rng(seed)
    common_idx, rare_idx = np.flatnonzero(y != rare), np.flatnonzero(y == rare)
    keep = rng.choice(rare_idx, int(len(common_idx) * fraction / (1 - fraction)), replace=False)
    idx = rng.permutation(np.concatenate([common_idx, keep]))
    return x[idx], (y[idx] == rare).astype(np.float32)  # 1.0 marks the rare (malignant) class


def run(strategy, x_train, y_train, x_test, y_test, epochs, seed):
    ddp.manual_seed(seed)
    model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = ddp.optim.Adam(model.parameters(), lr=1e-3)
    positives = y_train.sum()
    pos_weight = ddp.tensor([(len(y_train) - positives) / positives]) if strategy == "pos_weight" \
        else None
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    sampler = None
    if strategy == "sampler":  # each class drawn with equal total probability
        w = np.where(y_train == 1, 0.5 / positives, 0.5 / (len(y_train) - positives))
        sampler = WeightedRandomSampler(w.tolist(), num_samples=len(y_train), replacement=True,
                                        generator=ddp.Generator().manual_seed(seed))
    data = loader(x_train, y_train.reshape(-1, 1), batch_size=32, seed=seed, sampler=sampler)
    for _ in range(epochs):
        train_epoch(model, data, loss_fn, optimizer)
    preds = (predict(model, x_test).reshape(-1) > 0).long()
    target = ddp.tensor(y_test.astype(np.int64))
    return (precision(preds, target, num_classes=2, average=None)[1],
            recall(preds, target, num_classes=2, average=None)[1],
            f1_score(preds, target, num_classes=2, average=None)[1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = parse_args(p, argv)
    x_train, y_train, x_test, y_test = bundled("breast_cancer", seed=args.seed)
    x_train, y_train = make_imbalanced(x_train, y_train, seed=args.seed)
    y_test = (y_test == 0).astype(np.float32)
    print(f"training set: {len(y_train)} samples, {int(y_train.sum())} of the rare class")
    results = {}
    for strategy in ("plain", "pos_weight", "sampler"):
        prec, rec, f1 = run(strategy, x_train, y_train, x_test, y_test, args.epochs, args.seed)
        results[strategy] = f1
        print(f"{strategy:>10}: rare-class precision {prec:.3f}  recall {rec:.3f}  F1 {f1:.3f}")
    return results


if __name__ == "__main__":
    main()

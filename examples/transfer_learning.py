"""Transfer learning on scikit-learn's bundled digits: pretrain a small CNN on the digits 0-4,
save it, then load its convolutional backbone from the checkpoint file, freeze it and train only
a new head for the digits 5-9 on a few of their images — against the whole network trained from
scratch on the same images, and the same head on a random frozen backbone. (Digits are easy:
a small CNN from scratch does about as well as the transferred features; the pretrained ones
beat random frozen ones. The mechanics — checkpoint, load, freeze, new head — are the point.)

    python examples/transfer_learning.py [--checkpoint pretrained.ddp]
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import ddp
import ddp.nn as nn
from ddp.metrics import accuracy

from common import bundled, loader, parse_args, predict


def backbone():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten())


FEATURES = 16 * 4 * 4


def digits(classes, seed):
    """Train and test images (N, 1, 8, 8) of the given digit classes, labels from 0."""
    x_train, y_train, x_test, y_test = bundled("digits", seed=seed)
    keep_train, keep_test = np.isin(y_train, classes), np.isin(y_test, classes)
    first = min(classes)
    return (x_train[keep_train].reshape(-1, 1, 8, 8), y_train[keep_train] - first,
            x_test[keep_test].reshape(-1, 1, 8, 8), y_test[keep_test] - first)


def fit(model, params, data, epochs, lr, frozen=None):
    """Train ``params`` of ``model``; a ``frozen`` submodule stays in eval mode (its batch
    norm statistics are part of what was transferred)."""
    optimizer = ddp.optim.Adam(params, lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        if frozen is not None:
            frozen.eval()
        for xb, yb in data:
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrain-epochs", type=int, default=4)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--train-fraction", type=float, default=0.1,
                   help="share of the 5-9 training images the new head sees (little data is "
                        "where transfer helps)")
    p.add_argument("--checkpoint", default=None, help="where the pretrained backbone is saved")
    p.add_argument("--seed", type=int, default=0)
    args = parse_args(p, argv)
    ddp.manual_seed(args.seed)
    checkpoint = args.checkpoint or os.path.join(tempfile.mkdtemp(), "pretrained.ddp")

    # 1. pretraining on 0-4, then the backbone (not the head) goes into a checkpoint file
    x, y, xt, yt = digits([0, 1, 2, 3, 4], args.seed)
    source = nn.Sequential(backbone(), nn.Linear(FEATURES, 5))
    fit(source, source.parameters(), loader(x, y, seed=args.seed), args.pretrain_epochs, 3e-3)
    pretrain_acc = accuracy(predict(source, xt).argmax(1), ddp.tensor(yt))
    ddp.save({"backbone": source[0].state_dict(), "classes": [0, 1, 2, 3, 4]}, checkpoint)
    print(f"pretrained on 0-4: test accuracy {pretrain_acc:.4f}; backbone saved to {checkpoint}")

    # 2. the target task, 5-9, with a fraction of its training data
    x, y, xt, yt = digits([5, 6, 7, 8, 9], args.seed)
    n = max(int(len(x) * args.train_fraction), 10)
    data = loader(x[:n], y[:n], seed=args.seed)
    results = {"pretrain": pretrain_acc}
    for name in ("transfer", "from_scratch", "random_backbone"):
        features = backbone()
        if name == "transfer":
            features.load_state_dict(ddp.load(checkpoint)["backbone"])
        head = nn.Linear(FEATURES, 5)                          # the new head
        model = nn.Sequential(features, head)
        if name == "from_scratch":
            fit(model, model.parameters(), data, args.epochs, 1e-2)
        else:
            for param in features.parameters():
                param.requires_grad_(False)                    # frozen
            fit(model, head.parameters(), data, args.epochs, 1e-2, frozen=features)
        results[name] = accuracy(predict(model, xt).argmax(1), ddp.tensor(yt))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"{name:>16}: {trainable:5d} parameters trained on {n} images of 5-9, "
              f"test accuracy {results[name]:.4f}")
    return results


if __name__ == "__main__":
    main()

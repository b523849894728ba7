"""A small CNN on scikit-learn's bundled handwritten digits (1x8x8 images), SGD with momentum
and a cosine learning-rate schedule.

    python examples/digits_cnn.py [--epochs 20]
"""
from __future__ import annotations

import argparse

import ddp
import ddp.nn as nn
from ddp.metrics import accuracy
from ddp.progress import Progress

from common import bundled, loader, parse_args, predict, train_epoch


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    args = parse_args(p, argv)

    ddp.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = bundled("digits", seed=args.seed)
    x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    model = small_cnn()
    optimizer = ddp.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    scheduler = ddp.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    data = loader(x_train, y_train, batch_size=64, seed=args.seed)

    bar = Progress(range(1, args.epochs + 1), desc="train", unit="epoch")
    for epoch in bar:
        loss = train_epoch(model, data, loss_fn, optimizer)
        scheduler.step()
        bar.log(loss=loss, samples=len(x_train))
        if epoch % 5 == 0 or epoch == args.epochs:
            acc = accuracy(predict(model, x_test).argmax(1), ddp.tensor(y_test))
            bar.write(f"epoch {epoch:3d}  lr {scheduler.get_last_lr()[0]:.4f}  "
                      f"train loss {loss:.4f}  test accuracy {acc:.4f}")
    bar.close()
    acc = accuracy(predict(model, x_test).argmax(1), ddp.tensor(y_test))
    print(f"final test accuracy {acc:.4f}")
    return acc


if __name__ == "__main__":
    main()

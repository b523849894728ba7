"""Regression on scikit-learn's bundled diabetes data: an MLP with AdamW and MSE, reporting
test RMSE and R² (coefficient of determination).

    python examples/regression_diabetes.py [--epochs 60]
"""
from __future__ import annotations

import argparse

import numpy as np

import ddp
import ddp.nn as nn
from ddp.progress import Progress

from common import bundled, loader, parse_args, predict, train_epoch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    args = parse_args(p, argv)

    ddp.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = bundled("diabetes", seed=args.seed)
    y_mean, y_std = y_train.mean(), y_train.std()
    scale = lambda y: ((y - y_mean) / y_std).astype(np.float32).reshape(-1, 1)  # noqa: E731
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = ddp.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    data = loader(x_train, scale(y_train), batch_size=32, seed=args.seed)
    bar = Progress(range(1, args.epochs + 1), desc="train", unit="epoch")
    for epoch in bar:
        loss = train_epoch(model, data, nn.MSELoss(), optimizer)
        bar.log(loss=loss, samples=len(x_train))
        if epoch % 20 == 0 or epoch == args.epochs:
            pred = predict(model, x_test).numpy().ravel() * y_std + y_mean
            rmse = float(np.sqrt(np.mean((pred - y_test) ** 2)))
            r2 = 1 - np.sum((pred - y_test) ** 2) / np.sum((y_test - y_test.mean()) ** 2)
            bar.write(f"epoch {epoch:4d}  train loss {loss:.4f}  test RMSE {rmse:.2f}  R2 {r2:.3f}")
    bar.close()
    return r2


if __name__ == "__main__":
    main()

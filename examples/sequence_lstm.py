"""An LSTM reading each 8x8 digit image row by row (a sequence of 8 steps of 8 features) and
classifying it from its last hidden state.

    python examples/sequence_lstm.py [--epochs 25]
"""
from __future__ import annotations

import argparse

import ddp
import ddp.nn as nn
from ddp.metrics import accuracy
from ddp.progress import Progress

from common import bundled, loader, parse_args, predict, train_epoch


class RowLSTM(nn.Module):
    """LSTM over image rows, then a linear classifier on the final hidden state."""

    def __init__(self, hidden=64, classes=10):
        super().__init__()
        self.lstm = nn.LSTM(input_size=8, hidden_size=hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        _, (h, _) = self.lstm(x.reshape(-1, 8, 8))
        return self.head(h[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--seed", type=int, default=0)
    args = parse_args(p, argv)

    ddp.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = bundled("digits", seed=args.seed)
    model = RowLSTM()
    optimizer = ddp.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    data = loader(x_train, y_train, batch_size=64, seed=args.seed)
    bar = Progress(range(1, args.epochs + 1), desc="train", unit="epoch")
    for epoch in bar:
        loss = train_epoch(model, data, loss_fn, optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        bar.log(loss=loss, samples=len(x_train))
        if epoch % 5 == 0 or epoch == args.epochs:
            acc = accuracy(predict(model, x_test).argmax(1), ddp.tensor(y_test))
            bar.write(f"epoch {epoch:3d}  train loss {loss:.4f}  test accuracy {acc:.4f}")
    bar.close()
    acc = accuracy(predict(model, x_test).argmax(1), ddp.tensor(y_test))
    print(f"final test accuracy {acc:.4f}")
    return acc


if __name__ == "__main__":
    main()

"""Hyperparameter search across ranks: a grid of learning rates and hidden sizes for an MLP on
scikit-learn's bundled digits, each rank training its share of the trials on its own (no
gradient exchange), the results gathered with ``all_gather_object`` so every rank knows the best.
Each trial is seeded by its index, so the results do not depend on the number of ranks.

    python examples/hyperparameter_search.py          # all trials in one process
    python -m launcher -n 4 examples/hyperparameter_search.py
"""
from __future__ import annotations

import argparse
import itertools
import time

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.metrics import accuracy

from common import bundled, loader, parse_args, predict, train_epoch


def run_trial(index, lr, hidden, epochs, data):
    """Train one configuration; returns its validation and test accuracy."""
    x_train, y_train, x_val, y_val, x_test, y_test = data
    ddp.manual_seed(index)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    optimizer = ddp.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    batches = loader(x_train, y_train, batch_size=64, seed=index)
    start = time.perf_counter()
    for _ in range(epochs):
        train_epoch(model, batches, nn.CrossEntropyLoss(), optimizer)
    return {"trial": index, "lr": lr, "hidden": hidden,
            "val": accuracy(predict(model, x_val).argmax(1), ddp.tensor(y_val)),
            "test": accuracy(predict(model, x_test).argmax(1), ddp.tensor(y_test)),
            "rank": dist.get_rank(), "seconds": time.perf_counter() - start}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lrs", default="0.3,0.1,0.03,0.003")
    p.add_argument("--hidden", default="16,128")
    args = parse_args(p, argv)
    dist.init_process_group()                  # MPI under the launcher; one rank otherwise
    rank, world = dist.get_rank(), dist.get_world_size()

    x_train, y_train, x_test, y_test = bundled("digits", seed=0)
    n_val = len(x_train) // 5                  # model selection on a validation split
    data = (x_train[n_val:], y_train[n_val:], x_train[:n_val], y_train[:n_val], x_test, y_test)
    grid = list(itertools.product([float(v) for v in args.lrs.split(",")],
                                  [int(v) for v in args.hidden.split(",")]))
    mine = [run_trial(i, lr, hidden, args.epochs, data)
            for i, (lr, hidden) in enumerate(grid) if i % world == rank]

    gathered = [None] * world
    dist.all_gather_object(gathered, mine)    # every rank gets every rank's list
    results = sorted((r for part in gathered for r in part), key=lambda r: r["trial"])
    best = max(results, key=lambda r: (r["val"], -r["trial"]))
    if rank == 0:
        print(f"{len(results)} trials on {world} rank(s)")
        print(" trial      lr  hidden  val acc  test acc  rank  seconds")
        for r in results:
            mark = "  <- best" if r is best else ""
            print(f"{r['trial']:6d} {r['lr']:7.3f} {r['hidden']:7d} {r['val']:8.4f} "
                  f"{r['test']:9.4f} {r['rank']:5d} {r['seconds']:8.2f}{mark}")
        print(f"best: lr {best['lr']} hidden {best['hidden']}: validation accuracy "
              f"{best['val']:.4f}, test accuracy {best['test']:.4f}")
    return best, results


if __name__ == "__main__":
    main()

"""Data-parallel training on scikit-learn's bundled digits: every rank trains a replica of the
MLP on its shard; gradients are averaged by DistributedDataParallel during backward.

    launcher -n 4 examples/ddp_digits.py          # 4 MPI ranks on the bundled MPICH
    python examples/ddp_digits.py                 # the same script as one rank (debug mode)

Evaluation covers exactly the test set once (an unpadded sampler and a sum of confusion counts
across ranks), and the checkpoint is written by rank 0 only.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.metrics import ConfusionMatrix
from ddp.nn.parallel import DistributedDataParallel as DDP
from ddp.utils.data import DataLoader, DistributedSampler, TensorDataset
from ddp.progress import Progress

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bundled, device, parse_args  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--checkpoint", default="")
    args = parse_args(p, argv)

    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    ddp.manual_seed(0)  # the same initial model everywhere (DDP also broadcasts rank 0's)
    x_train, y_train, x_test, y_test = bundled("digits")
    train_set = TensorDataset(ddp.tensor(x_train), ddp.tensor(y_train))
    test_set = TensorDataset(ddp.tensor(x_test), ddp.tensor(y_test))
    sampler = DistributedSampler(train_set, shuffle=True, seed=0)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
    # evaluation: each rank takes every world-th sample, no padding, so no sample counts twice
    test_loader = DataLoader(test_set, batch_size=256,
                             sampler=DistributedSampler(test_set, shuffle=False, pad=False))

    dev = device()                     # this rank's GPU when there is one, else the CPU
    model = DDP(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).to(dev))
    optimizer = ddp.optim.Adam(model.parameters(), lr=args.lr * world ** 0.5)
    loss_fn = nn.CrossEntropyLoss()
    if rank == 0:
        print(f"{world} rank(s), {len(train_set)} training samples, "
              f"{len(loader)} batches of {args.batch_size} per rank per epoch")

    bar = Progress(range(1, args.epochs + 1), desc="train", unit="epoch")  # rank 0 draws
    for epoch in bar:
        sampler.set_epoch(epoch)       # a new shuffle every epoch, the same on every rank
        model.train()
        total = ddp.zeros(2, dtype=ddp.float64)
        for xb, yb in loader:
            xb, yb = xb.to(dev), yb.to(dev)
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += ddp.tensor([loss.item() * len(xb), len(xb)], dtype=ddp.float64)
        dist.all_reduce(total)
        bar.log(loss=(total[0] / total[1]).item(), samples=len(train_set))
        accuracy = evaluate(model, test_loader)
        if rank == 0 and (epoch % 5 == 0 or epoch == args.epochs):
            bar.write(f"epoch {epoch:3d}  train loss {(total[0] / total[1]).item():.4f}  "
                      f"test accuracy {accuracy:.4f}")
    bar.close()
    if args.checkpoint:
        if rank == 0:
            ddp.save(model.module.state_dict(), args.checkpoint)
        dist.barrier()
    if rank == 0:
        print(f"final test accuracy {accuracy:.4f} over {len(test_set)} test samples")
    dist.destroy_process_group()
    return accuracy


@ddp.no_grad()
def evaluate(model, loader):
    model.eval()
    counts = ConfusionMatrix(10)
    dev = next(model.parameters()).device
    for xb, yb in loader:
        counts.update(model(xb.to(dev)).argmax(1), yb)
    summed = ddp.tensor(counts.counts.astype(np.float64))
    dist.all_reduce(summed)            # every test sample counted exactly once across ranks
    return float(np.trace(summed.numpy()) / summed.numpy().sum())


if __name__ == "__main__":
    main()

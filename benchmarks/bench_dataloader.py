"""DataLoader throughput: batches/s over a synthetic 28x28 float32 image dataset whose items cost
a small NumPy augmentation each (pad + random crop, random flip, normalise, noise), for
num_workers 0, 1, 2, with ddp's DataLoader and (when installed) PyTorch's on the same dataset.

    python benchmarks/bench_dataloader.py [--items 5120] [--batch-size 128] [--epochs 5]
                                          [--workers 0,1,2] [--persistent] [--cost 1]

Each figure is the median over ``--epochs`` epochs; an epoch includes starting its workers
unless ``--persistent``. ``--cost k`` repeats the augmentation k times per item.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import ddp  # noqa: E402
from ddp.utils.data import DataLoader, Dataset  # noqa: E402


class SyntheticImages(Dataset):
    """``n`` 1x28x28 float32 images with int labels; ``__getitem__`` augments with NumPy's
    global RNG (seeded per worker by the DataLoader)."""

    def __init__(self, n, cost=1):
        rng = np.random.default_rng(0)
        self.images = rng.random((n, 28, 28), dtype=np.float32)
        self.labels = rng.integers(0, 10, n)
        self.cost = cost

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        for _ in range(self.cost):
            padded = np.pad(img, 2, mode="reflect")
            dy, dx = np.random.randint(0, 5, size=2)
            out = padded[dy:dy + 28, dx:dx + 28]
            if np.random.rand() < 0.5:
                out = out[:, ::-1]
            out = (out - 0.1307) / 0.3081
            out = out + np.random.standard_normal(out.shape).astype(np.float32) * 0.01
        return out.astype(np.float32)[None], int(self.labels[i])


def epoch_rates(loader_cls, dataset, workers, batch_size, epochs, persistent, **extra):
    kw = dict(batch_size=batch_size, shuffle=True, num_workers=workers, **extra)
    if workers > 0 and persistent:
        kw["persistent_workers"] = True
    loader = loader_cls(dataset, **kw)
    rates = []
    for _ in range(epochs + 1):  # the first epoch warms up (imports, caches, pages)
        t0 = time.perf_counter()
        n = 0
        for x, y in loader:
            n += 1
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates[1:]), n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=5120)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--persistent", action="store_true")
    p.add_argument("--cost", type=int, default=1)
    args = p.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]

    ds = SyntheticImages(args.items, args.cost)
    t0 = time.perf_counter()
    for i in range(1000):
        ds[i % len(ds)]
    per_item_us = (time.perf_counter() - t0) / 1000 * 1e6

    libs = [("ddp", DataLoader, {"generator": ddp.Generator().manual_seed(0)})]
    try:
        import torch
        torch.set_num_threads(1)
        libs.append(("torch", torch.utils.data.DataLoader,
                     {"generator": torch.Generator().manual_seed(0)}))
    except ImportError:
        pass

    print(f"{args.items} items of 1x28x28 float32, batch {args.batch_size}, "
          f"{per_item_us:.0f} us/item of augmentation, {os.cpu_count()} CPUs, "
          f"{'persistent' if args.persistent else 'fresh'} workers; "
          f"batches/s, median of {args.epochs} epochs")
    header = "  workers " + "".join(f"{name:>12}" for name, _, _ in libs)
    print(header)
    for w in workers:
        cols = []
        for name, cls, extra in libs:
            rate, n = epoch_rates(cls, ds, w, args.batch_size, args.epochs, args.persistent,
                                  **extra)
            cols.append(f"{rate:12.1f}")
        print(f"  {w:>7} " + "".join(cols))


if __name__ == "__main__":
    main()

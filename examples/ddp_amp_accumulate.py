"""Mixed precision, gradient accumulation, compressed gradients and clipping on top of data
parallelism — the training step most large-batch recipes use:

    launcher -n 4 examples/ddp_amp_accumulate.py --accumulate 2
    python examples/ddp_amp_accumulate.py          # one rank, same code

autocast runs the matmuls in bfloat16 (CPU) or float16 (GPU) while parameters stay float32;
the GradScaler skips steps whose gradients overflowed on any rank; GradientAccumulator runs the
first k-1 micro-batches under no_sync() and steps once per k; the fp16 communication hook halves
the bytes each gradient allreduce sends; clip_grad_norm_ sees unscaled gradients.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.distributed.algorithms.ddp_comm_hooks import default_hooks
from ddp.nn.parallel import DistributedDataParallel as DDP
from ddp.utils.data import DataLoader, DistributedSampler, TensorDataset
from ddp.progress import Progress

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bundled, device, parse_args  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--micro-batch", type=int, default=16, help="per rank")
    p.add_argument("--accumulate", type=int, default=2, help="micro-batches per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--no-amp", action="store_true")
    args = parse_args(p, argv)

    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = device()                       # this rank's GPU when there is one, else the CPU
    device_type = dev.type
    amp_dtype = ddp.float16 if device_type == "cuda" else ddp.bfloat16
    ddp.manual_seed(0)
    x_train, y_train, x_test, y_test = bundled("digits")
    train_set = TensorDataset(ddp.tensor(x_train), ddp.tensor(y_train))
    sampler = DistributedSampler(train_set, seed=0)
    loader = DataLoader(train_set, batch_size=args.micro_batch, sampler=sampler,
                        pin_memory=device_type == "cuda")
    x_test, y_test = ddp.tensor(x_test, device=dev), ddp.tensor(y_test, device=dev)

    model = DDP(nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 10)).to(dev))
    model.register_comm_hook(None, default_hooks.fp16_compress_hook)
    optimizer = ddp.optim.AdamW(model.parameters(), lr=args.lr)
    steps_per_epoch = -(-len(loader) // args.accumulate)
    scheduler = ddp.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr * 3,
                                                   total_steps=args.epochs * steps_per_epoch)
    scaler = ddp.amp.GradScaler(device_type, enabled=not args.no_amp)
    accumulator = ddp.GradientAccumulator(model, optimizer, steps=args.accumulate, scaler=scaler,
                                          scheduler=scheduler, max_grad_norm=1.0)
    loss_fn = nn.CrossEntropyLoss()
    if rank == 0:
        print(f"{world} rank(s) x {args.accumulate} micro-batches of {args.micro_batch}: "
              f"effective batch {world * args.accumulate * args.micro_batch}, "
              f"autocast {'off' if args.no_amp else amp_dtype}")

    bar = Progress(range(1, args.epochs + 1), desc="train", unit="epoch")  # rank 0 draws
    for epoch in bar:
        sampler.set_epoch(epoch)
        model.train()
        for xb, yb in accumulator.micro_batches(loader):
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            with accumulator.accumulate():
                with ddp.autocast(device_type, dtype=amp_dtype, enabled=not args.no_amp):
                    loss = loss_fn(model(xb), yb)
                accumulator.backward(loss)
        bar.log(loss=loss, samples=len(train_set))  # the last micro-batch's loss on this rank
        if rank == 0 and (epoch % 5 == 0 or epoch == args.epochs):
            with ddp.no_grad():
                model.eval()
                acc = (model(x_test).argmax(1) == y_test).float().mean()
            bar.write(f"epoch {epoch:3d}  optimizer steps {accumulator.optimizer_steps}  "
                      f"scale {scaler.get_scale():g}  test accuracy {acc.item():.4f}")
    bar.close()
    final = ddp.tensor([0.0], device=dev)
    if rank == 0:
        with ddp.no_grad():
            model.eval()
            final = (model(x_test).argmax(1) == y_test).float().mean().reshape(1)
    dist.broadcast(final, src=0)
    params = np.concatenate([p.detach().cpu().numpy().ravel() for p in model.parameters()])
    checks = dist.get_communicator().allgather_obj(float(params.sum()))
    if rank == 0:
        print(f"final test accuracy {final.item():.4f}; parameters identical on all ranks: "
              f"{len(set(checks)) == 1}")
    dist.destroy_process_group()
    return final.item()


if __name__ == "__main__":
    main()

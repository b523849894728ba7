"""Early stopping on validation loss with a checkpoint every epoch, and resuming from it.

    python examples/early_stopping_resume.py --checkpoint /tmp/digits.ckpt [--epochs 60]
    python examples/early_stopping_resume.py --checkpoint /tmp/digits.ckpt --resume

Each epoch seeds its own random streams (shuffling, dropout) from (seed, epoch), so a run
resumed from the checkpoint of epoch k continues exactly as the uninterrupted run would have.
Checkpoints are written atomically by ``ddp.save``: a crash mid-write keeps the previous one.
"""
from __future__ import annotations

import argparse
import os

import ddp
import ddp.nn as nn

from common import bundled, loader, parse_args, predict, train_epoch


def build(lr):
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))
    optimizer = ddp.optim.Adam(model.parameters(), lr=lr)
    scheduler = ddp.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    return model, optimizer, scheduler


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--stop-after", type=int, default=0, help="stop after N epochs (to test resume)")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = parse_args(p, argv)

    x_train, y_train, x_val, y_val = bundled("digits", seed=args.seed)
    ddp.manual_seed(args.seed)
    model, optimizer, scheduler = build(args.lr)
    state = {"epoch": 0, "best_loss": float("inf"), "bad_epochs": 0}
    if args.resume and os.path.exists(args.checkpoint):
        ckpt = ddp.load(args.checkpoint)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = ckpt["progress"]
        print(f"resumed after epoch {state['epoch']} (best validation loss {state['best_loss']:.4f})")

    loss_fn = nn.CrossEntropyLoss()
    y_val_t = ddp.tensor(y_val)
    epochs_run = 0
    while state["epoch"] < args.epochs and state["bad_epochs"] < args.patience:
        epoch = state["epoch"] + 1
        ddp.manual_seed(args.seed * 1000 + epoch)
        data = loader(x_train, y_train, batch_size=64, seed=args.seed * 1000 + epoch)
        train_loss = train_epoch(model, data, loss_fn, optimizer)
        val_loss = loss_fn(predict(model, x_val), y_val_t).item()
        scheduler.step(val_loss)
        improved = val_loss < state["best_loss"] - 1e-4
        state.update(epoch=epoch, best_loss=min(val_loss, state["best_loss"]),
                     bad_epochs=0 if improved else state["bad_epochs"] + 1)
        ddp.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "progress": dict(state)}, args.checkpoint)
        print(f"epoch {epoch:3d}  train loss {train_loss:.4f}  validation loss {val_loss:.4f}"
              f"{'  (best)' if improved else ''}")
        epochs_run += 1
        if args.stop_after and epochs_run >= args.stop_after:
            print(f"stopping after {epochs_run} epochs as asked; resume with --resume")
            return model
    if state["bad_epochs"] >= args.patience:
        print(f"early stop: no improvement for {args.patience} epochs")
    acc = (predict(model, x_val).argmax(1) == y_val_t).float().mean().item()
    print(f"final validation accuracy {acc:.4f}")
    return model


if __name__ == "__main__":
    main()

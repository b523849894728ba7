"""What writing gradients into DDP's buckets saves: a DDP training step whose layers write
their parameters' gradients straight into the buckets (``Node.gradient_sink``) against the same
step with those layers' ops returning fresh gradients that the reducer then copies in, scaled
(the op's ``writes_grad_sinks`` switched off). Both in the same job, alternating step by step,
every step barrier-aligned. Run under the launcher:

    python -m launcher -n 2 benchmarks/bench_ddp_sinks.py [--model lstm|lstm256|deconv]
        [--steps 60] [--batch 64]

``lstm``: ddp-bench's LSTM 28->128 over the 28 rows of a 28x28 image and a Linear 128-10 head
(the recurrence's 4 gradients switched, 0.3 MiB); ``lstm256``: an LSTM 128->256 over 35
steps and the same head (1.5 MiB); ``deconv``: a decoder, Linear 10-1568, two
ConvTranspose2d 32->16->8 (4x4, stride 2) and a Linear 6272-10 head (the two transposed
convolutions' 4 gradients switched). Prints, on rank 0, the medians of the backward's and
the whole step's process CPU time (``time.process_time``: the figure to read on a shared
machine) and wall time, of the CPU inside the reducer's gradient hooks (``Reducer._fill``:
the copy-in and the bucket launches), and how many gradients were copied into the buckets.
"""
from __future__ import annotations

import argparse
import statistics
import time

import ddp
import ddp.distributed as dist
import ddp.nn as nn
from ddp.bench import models
from ddp.nn.functional._conv import ConvolutionTranspose
from ddp.nn.functional._rnn import Recurrence
from ddp.nn.parallel import DistributedDataParallel as DDP


class LastHidden(nn.Module):
    """An LSTM ``size`` -> ``hidden`` over a (batch, steps, size) input and a Linear head on
    its last hidden state."""

    def __init__(self, size, hidden):
        super().__init__()
        self.lstm = nn.LSTM(size, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.head(self.lstm(x)[1][0][-1])


def clock():
    """(process CPU, wall) seconds."""
    return time.process_time(), time.perf_counter()


def deconv():
    """The decoder of ``--model deconv`` (10 classes from a 10-wide input)."""
    return nn.Sequential(nn.Linear(10, 32 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (32, 7, 7)),
                         nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.ReLU(),
                         nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 28 * 28, 10))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lstm", choices=("lstm", "lstm256", "deconv"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64, help="samples per rank")
    args = parser.parse_args()
    dist.init_process_group()
    ddp.manual_seed(0)
    if args.model == "lstm":
        op, model, x = Recurrence, DDP(models.build(ddp, "lstm")), ddp.randn(args.batch, 28, 28)
    elif args.model == "lstm256":
        op, model, x = Recurrence, DDP(LastHidden(128, 256)), ddp.randn(args.batch, 35, 128)
    else:
        op, model, x = ConvolutionTranspose, DDP(deconv()), ddp.randn(args.batch, 10)
    y = ddp.randint(0, 10, (args.batch,))
    opt = ddp.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    times = {"copied": [], "sinks": []}
    copies = {}
    reducer = model.reducer
    fill, in_hooks = reducer._fill, [0.0]

    def timed_fill(*args):   # the reducer's hooks: copy-in (or not) and launches
        c = time.process_time()
        fill(*args)
        in_hooks[0] += time.process_time() - c
    reducer._fill = timed_fill
    for step in range(args.steps):
        for variant in ("sinks", "copied") if step % 2 else ("copied", "sinks"):  # no order bias
            op.writes_grad_sinks = variant == "sinks"
            in_hooks[0] = 0.0
            dist.barrier()
            start = clock()
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            forward = clock()
            loss.backward()
            backward = clock()
            opt.step()
            end = clock()
            copies[variant] = reducer._sunk.count(False)
            if step >= 4:   # after the layout's rebuild and the first steps' allocations
                times[variant].append([b - a for a, b in (*zip(forward, backward),
                                                          *zip(start, end))] + in_hooks)
    op.writes_grad_sinks = True
    if dist.get_rank() == 0:
        n = len(reducer.params)
        print(f"{args.model}, batch {args.batch} per rank, {dist.get_world_size()} ranks, "
              f"medians of {len(times['sinks'])} steps (ms)")
        print("| variant | gradients copied in | backward CPU | backward wall | step CPU | "
              "step wall | hooks CPU |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for variant in ("copied", "sinks"):
            med = [statistics.median(t[k] for t in times[variant]) * 1e3 for k in range(5)]
            print(f"| {variant} | {copies[variant]} of {n} | " +
                  " | ".join(f"{m:.2f}" for m in med) + " |")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

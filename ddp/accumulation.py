"""Gradient accumulation as a rank-aware wrapper: k micro-batches, one optimizer step.

The first k−1 micro-batches of each group run under DDP's ``no_sync()`` (no communication),
the k-th synchronises; each loss is scaled by 1/k so the step sees the mean gradient; the
optimizer — through the GradScaler when given, after optional gradient clipping — and the LR
scheduler step once per group. The last, partial group of an epoch is stepped too, with its
gradient rescaled to the mean over the micro-batches it really had. Every decision depends
only on the micro-batch count, so ranks whose loaders have the same length (DistributedSampler
guarantees it) skip and step together. A single process behaves the same way.

Example:
    >>> model = nn.Linear(4, 2)
    >>> optimizer = ddp.optim.SGD(model.parameters(), lr=0.1)
    >>> loader = [(ddp.randn(8, 4), ddp.randn(8, 2)) for _ in range(10)]
    >>> acc = ddp.GradientAccumulator(model, optimizer, steps=4, max_grad_norm=1.0)
    >>> for x, y in acc.micro_batches(loader):
    ...     with acc.accumulate():
    ...         acc.backward(F.mse_loss(model(x), y))
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

from .autograd.grad_mode import no_grad


class GradientAccumulator:
    """Accumulate gradients over ``steps`` micro-batches per optimizer step (see module doc).

    ``model`` may be a DistributedDataParallel (communication is skipped on the accumulating
    micro-batches) or a plain module. ``scaler`` (a GradScaler), ``scheduler`` (stepped once per
    optimizer step) and ``max_grad_norm`` (``clip_grad_norm_`` on unscaled gradients) are
    optional.
    """

    def __init__(self, model, optimizer, steps=1, scaler=None, scheduler=None, max_grad_norm=None):
        if int(steps) < 1:
            raise ValueError(f"GradientAccumulator: steps must be >= 1, got {steps}")
        self.model, self.optimizer = model, optimizer
        self.steps = int(steps)
        self.scaler, self.scheduler = scaler, scheduler
        self.max_grad_norm = max_grad_norm
        self.micro_step = 0          # micro-batches done in the current group
        self.optimizer_steps = 0     # groups stepped so far
        self._is_last = False        # the current micro-batch ends the epoch
        self._in_context = False

    # ---------------------------------------------------------------- the loop
    def micro_batches(self, iterable):
        """Yield the items of ``iterable``, knowing (one item ahead) which one is the last, so
        that the epoch's last micro-batch synchronises and steps even in a partial group."""
        it = iter(iterable)
        try:
            item = next(it)
        except StopIteration:
            return
        for following in it:
            self._is_last = False
            yield item
            item = following
        self._is_last = True
        yield item
        self._is_last = False

    @property
    def sync_gradients(self) -> bool:
        """True when the current micro-batch ends a group: its backward communicates and the
        optimizer steps after it."""
        return self.micro_step + 1 >= self.steps or self._is_last

    @contextmanager
    def accumulate(self, is_last=None):
        """Run one micro-batch: forward and :meth:`backward` go inside. On leaving, the
        optimizer steps if the group is complete (or ``is_last`` / the epoch ended)."""
        if is_last is not None:
            self._is_last = bool(is_last)
        sync = self.sync_gradients
        no_sync = getattr(self.model, "no_sync", None)
        self._in_context = True
        try:
            with (nullcontext() if sync or no_sync is None else no_sync()):
                yield self
        finally:
            self._in_context = False
        self.micro_step += 1
        if sync:
            self._step(self.micro_step)
            self.micro_step = 0

    def backward(self, loss, **kwargs):
        """``loss / steps`` backward (through the scaler when there is one)."""
        loss = loss / self.steps
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward(**kwargs)

    # ---------------------------------------------------------------- the step
    def _step(self, micro_batches):
        if micro_batches != self.steps:  # a partial last group: the mean over what it had
            with no_grad():
                for group in self.optimizer.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.mul_(self.steps / micro_batches)
        if self.max_grad_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            from .nn.utils import clip_grad_norm_
            clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                            self.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad()
        self.optimizer_steps += 1

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self):
        return {"steps": self.steps, "micro_step": self.micro_step,
                "optimizer_steps": self.optimizer_steps}

    def load_state_dict(self, state):
        if int(state["steps"]) != self.steps:
            raise ValueError(f"GradientAccumulator: the checkpoint accumulated over "
                             f"{state['steps']} micro-batches, this one over {self.steps}")
        self.micro_step = int(state["micro_step"])
        self.optimizer_steps = int(state["optimizer_steps"])

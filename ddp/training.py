"""``ddp.training.Checkpoint``: save every N steps and when the job is preempted, resume where
it left off.

One object holds what a run needs to continue exactly: the model, the optimizer, the learning
rate scheduler, the GradScaler, the epoch (handed to the sampler's ``set_epoch``), the position
in the epoch and every rank's random number generators (ddp's, NumPy's global one and
``random``'s). The loop reads::

    ckpt = Checkpoint("run/ckpt.pt", model=model, optimizer=opt, scheduler=sched,
                      scaler=scaler, sampler=sampler, every=100)   # resumes if the file exists
    for epoch in ckpt.epochs(10):          # from the saved epoch on; calls sampler.set_epoch
        for x, y in ckpt.batches(loader):  # skips the batches a resumed epoch already did
            loss = loss_fn(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
            ckpt.step()                    # saves every 100 steps; stops here on SIGTERM

**Preemption.** SIGTERM or SIGINT (Slurm's preemption and ``scancel``, a Ctrl-C, the
launcher passing either on) does not stop the program where it happens to be: that could be
inside a collective on one rank, while another rank has already left, and the rank that writes
the file (rank 0) would never get to write it. The Checkpoint notes the signal; at the end of
the current step all ranks agree (one 1-element ``all_reduce`` per step, so every rank stops at
the same step), rank 0 saves, and the signal is delivered again as it would have been (the
launcher's handler raises, so ``finally:`` blocks run; without one the process ends by the
signal). A second signal of the same kind stops at once.

**Files.** Rank 0 writes the file with ``ddp.save`` (atomic: a reader sees the old file or
the new one, never half of one); the RNG states of every rank travel to rank 0 through
``all_gather_object``. Every rank reads the file on resume. ``DistributedDataParallel``
keeps the model identical on every rank, so rank 0's model and optimizer stand for all.

**Exactness.** A run that is stopped and resumed computes the same numbers as one that was
not: the resumed epoch re-creates its data order from the RNG state of the epoch's start
(so a ``RandomSampler`` that draws its seed from the global generator draws the same one), the
batches already trained are skipped (loaded and dropped: data loading is repeated, training is
not), then the generators are set to their state at the saved step.

Example:
    >>> import os, tempfile
    >>> model = nn.Linear(2, 1); opt = ddp.optim.SGD(model.parameters(), lr=0.1)
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
    >>> ckpt = Checkpoint(path, model=model, optimizer=opt, every=2)
    >>> for epoch in ckpt.epochs(2):
    ...     for x in ckpt.batches([ddp.ones(1, 2)] * 3):
    ...         opt.zero_grad(); model(x).sum().backward(); opt.step(); ckpt.step()
    >>> ckpt.global_step, os.path.exists(path)
    (6, True)
    >>> again = Checkpoint(path, model=model, optimizer=opt, every=2)   # resumes
    >>> again.global_step, again.epoch, again.batch   # saved after batch 3 of epoch 1
    (6, 1, 3)
    >>> [e for e in again.epochs(2) for _ in again.batches([0] * 3)]   # nothing left to do
    []
"""
from __future__ import annotations

import os
import random
import signal
import threading

import numpy as np

from . import backend
from . import distributed as dist
from .serialization import load, save

__all__ = ["Checkpoint"]

FORMAT = 1


def _rng_state():
    return {"ddp": backend.get_rng_state(), "numpy": np.random.get_state(),
            "random": random.getstate()}


def _set_rng_state(state):
    backend.set_rng_state(state["ddp"])
    np.random.set_state(tuple(state["numpy"]))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))


class Checkpoint:
    """Saves and restores a training run; see the module docstring.

    Args:
        path: the checkpoint file (its folder is created).
        model, optimizer, scheduler, scaler: anything with ``state_dict``/``load_state_dict``
            (None: not saved). A DDP-wrapped model may be passed as is.
        sampler: its ``set_epoch(epoch)`` is called by :meth:`epochs` (a DistributedSampler).
        every: save every ``every`` steps (0: only on a signal and by :meth:`save`).
        resume: load ``path`` when it exists (default True).
        signals: the signals that stop the run at the next step end (default SIGTERM, SIGINT).
    """

    def __init__(self, path, model=None, optimizer=None, scheduler=None, scaler=None,
                 sampler=None, every=0, resume=True, signals=(signal.SIGTERM, signal.SIGINT)):
        if every < 0:
            raise ValueError(f"Checkpoint: every must be 0 or more, got {every}")
        self.path = os.fspath(path)
        self.objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler,
                        "scaler": scaler}
        self.sampler = sampler
        self.every = int(every)
        self.epoch = 0            # the epoch being trained (or the next one)
        self.batch = 0            # batches done in that epoch
        self.global_step = 0
        self.resumed = False
        self._epoch_rng = None    # every generator's state when this epoch started
        self._resume_rng = None   # this rank's generators at the saved step (until used)
        self._resume_epoch_rng = None
        self._stop = None         # the signal number to stop for
        self._previous = {}
        self._signals = tuple(signals)
        if resume and os.path.exists(self.path):
            self.load()

    # ------------------------------------------------------------------ signals
    def _install(self):
        """Catch the signals while the training loop runs (from the first :meth:`epochs` or
        :meth:`step` until the loop ends or :meth:`close`)."""
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        if self._stop is not None:   # the second one: stop now, as without a Checkpoint
            self._deliver(signum, frame)
            return
        self._stop = signum

    def _deliver(self, signum, frame=None):
        """Hand ``signum`` to the handler that was there before (the launcher's raises; the
        default one ends the process by the signal)."""
        previous = self._previous.get(signum, signal.SIG_DFL)
        self.close()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        raise SystemExit(128 + signum)  # a handler that returned: stop anyway

    def close(self):
        """Give the signals back to the handlers that were there before."""
        for sig, handler in self._previous.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, TypeError):
                pass
        self._previous = {}

    # ------------------------------------------------------------------ the loop
    def epochs(self, num_epochs):
        """The epochs still to train, from the saved one to ``num_epochs - 1``; each calls the
        sampler's ``set_epoch``."""
        self._install()
        try:
            while self.epoch < num_epochs:
                if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
                    self.sampler.set_epoch(self.epoch)
                yield self.epoch
                self.epoch += 1
                self.batch = 0
        finally:
            self.close()

    def batches(self, loader):
        """The batches of ``loader`` this epoch still has to train (all of them, except in the
        epoch a run resumes in)."""
        if self._resume_epoch_rng is not None:
            _set_rng_state(self._resume_epoch_rng)
            self._resume_epoch_rng = None
        self._epoch_rng = _rng_state()
        skip = self.batch
        iterator = iter(loader)
        for _ in range(skip):
            next(iterator, None)
        if self._resume_rng is not None:
            _set_rng_state(self._resume_rng)
            self._resume_rng = None
        for item in iterator:
            yield item

    def step(self):
        """One training step is done: count it, save every ``every`` steps, and stop (all
        ranks at this same step) after saving when a signal arrived."""
        self._install()
        self.global_step += 1
        self.batch += 1
        stop = self._agree_to_stop()
        if stop or (self.every and self.global_step % self.every == 0):
            self.save()
        if stop:
            self._deliver(stop)

    def _agree_to_stop(self):
        mine = 0 if self._stop is None else int(self._stop)
        if dist.get_world_size() == 1:
            return mine
        from .creation import tensor
        flag = tensor([float(mine)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.tolist()[0])

    # ------------------------------------------------------------------ files
    def state_dict(self):
        """Everything saved, with this rank's RNG states (rank 0 adds every rank's)."""
        state = {"format": FORMAT, "epoch": self.epoch, "batch": self.batch,
                 "global_step": self.global_step, "epoch_rng": self._epoch_rng}
        for name, obj in self.objects.items():
            if obj is not None:
                state[name] = obj.state_dict()
        return state

    def save(self):
        """Write the checkpoint now (collective: every rank calls it; rank 0 writes)."""
        rngs = [(_rng_state(), self._epoch_rng)]
        if dist.get_world_size() > 1:
            rngs = [None] * dist.get_world_size()
            dist.all_gather_object(rngs, (_rng_state(), self._epoch_rng))
        if dist.get_rank() != 0:
            return
        state = self.state_dict()
        state["rng"] = [r[0] for r in rngs]
        state["epoch_rng"] = [r[1] for r in rngs]
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        save(state, self.path)

    def load(self):
        """Restore everything from the file (every rank reads it)."""
        state = load(self.path)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise RuntimeError(f"Checkpoint: {self.path} is not a ddp.training.Checkpoint file")
        for name, obj in self.objects.items():
            if obj is None:
                continue
            if name not in state:
                raise RuntimeError(f"Checkpoint: {self.path} holds no {name} state (saved "
                                   f"keys: {', '.join(sorted(state))})")
            obj.load_state_dict(state[name])
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self.global_step = int(state["global_step"])
        rank = dist.get_rank()
        rngs, epoch_rngs = state["rng"], state["epoch_rng"]
        if len(rngs) != dist.get_world_size():
            raise RuntimeError(f"Checkpoint: {self.path} was saved by {len(rngs)} ranks and "
                               f"this job has {dist.get_world_size()}; resume with the same "
                               f"number of ranks")
        self._resume_rng = rngs[rank]
        self._resume_epoch_rng = epoch_rngs[rank]
        self.resumed = True
        return state

"""``DistributedSampler``: each rank reads its own shard of the dataset (``torch.utils.data``'s).

Training: every rank gets ``ceil(len(dataset) / num_replicas)`` indices (the first indices are
repeated to pad the last shards, or the tail is dropped with ``drop_last=True``), reshuffled
each epoch from ``seed + epoch`` identically on every rank, so the shards never overlap.
Call ``sampler.set_epoch(epoch)`` before each epoch, as in PyTorch: a shuffling sampler that is
iterated again without it warns once that the order repeats.

Evaluation: padding repeats samples, which biases metrics. ``pad=False`` (with ``shuffle=False``,
``drop_last=False``) gives rank ``r`` exactly the indices ``r, r + R, r + 2R, ...``: uneven
shards, every index exactly once over all ranks. ``ddp.distributed.helpers.gather_for_eval``
puts the per-rank predictions back into dataset order.

Example:
    >>> from ddp.utils.data import DataLoader, DistributedSampler
    >>> sampler = DistributedSampler(range(10), num_replicas=4, rank=1, shuffle=False)
    >>> list(sampler)                         # 10 indices padded to 12: rank 1 gets 1, 5, 9
    [1, 5, 9]
    >>> list(DistributedSampler(range(10), num_replicas=4, rank=3, shuffle=False))
    [3, 7, 1]
    >>> list(DistributedSampler(range(10), num_replicas=4, rank=3, shuffle=False, pad=False))
    [3, 7]
    >>> # training loop:
    >>> # for epoch in range(epochs):
    >>> #     sampler.set_epoch(epoch)
    >>> #     for x, y in DataLoader(dataset, batch_size=32, sampler=sampler): ...
"""
from __future__ import annotations

import math
import warnings

from ... import backend
from .sampler import Sampler

__all__ = ["DistributedSampler"]


class DistributedSampler(Sampler):
    """Restricts data loading to one rank's shard of ``dataset`` (PyTorch's DistributedSampler).

    ``num_replicas`` and ``rank`` default to ``ddp.distributed``'s world size and rank (1 and 0
    when no process group was initialised). With ``shuffle`` the order is a permutation drawn
    from a :class:`ddp.Generator` seeded with ``seed + epoch``: the same on every rank, so pass
    the same ``seed`` everywhere, and call :meth:`set_epoch` before each epoch.

    ``drop_last=False`` pads with the first indices of the (shuffled) order so every rank gets
    the same number of samples; ``drop_last=True`` drops the tail instead. ``pad=False`` (an
    extension; only with ``drop_last=False``) does neither: rank ``r`` gets positions
    ``r, r + R, ...`` of the order, so shard lengths differ by at most one and every sample is
    seen exactly once — the sampler for evaluation.

    Example:
        >>> s = DistributedSampler(range(7), num_replicas=2, rank=0, seed=3)
        >>> len(s), len(set(s) | set(DistributedSampler(range(7), num_replicas=2, rank=1, seed=3)))
        (4, 7)
        >>> s.set_epoch(1)                     # a new permutation, the same on every rank
        >>> ev = DistributedSampler(range(7), num_replicas=2, rank=1, shuffle=False, pad=False)
        >>> list(ev)
        [1, 3, 5]
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False, *, pad=True):
        if num_replicas is None or rank is None:
            from ... import distributed as dist
            if num_replicas is None:
                num_replicas = dist.get_world_size()
            if rank is None:
                rank = dist.get_rank()
        if num_replicas < 1:
            raise ValueError(f"num_replicas should be a positive integer, got {num_replicas}")
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.drop_last = drop_last
        self.pad = pad
        self.shuffle = shuffle
        self.seed = seed
        self._last_epoch_iterated = None   # for the "order repeats" warning
        self._warned = False

    # The dataset may change size after construction (as in PyTorch the sizes are read from it;
    # PyTorch fixes them in __init__, which gives the same numbers for a fixed dataset).
    @property
    def num_samples(self):
        """How many indices this rank yields per epoch."""
        n, r = len(self.dataset), self.num_replicas
        if self.drop_last and n % r != 0:
            return math.ceil((n - r) / r)      # = n // r
        if not self.pad:
            return len(range(self.rank, n, r))
        return math.ceil(n / r)

    @property
    def total_size(self):
        """Length of the whole (padded or trimmed) order split across the ranks."""
        n, r = len(self.dataset), self.num_replicas
        if not self.drop_last and not self.pad:
            return n
        return (n // r if self.drop_last and n % r else math.ceil(n / r)) * r

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            self._check_epoch_changed()
            g = backend.Generator().manual_seed(self.seed + self.epoch)
            indices = g.numpy.permutation(n).tolist()
        else:
            indices = list(range(n))
        total = self.total_size
        if total > n:                          # pad by repeating the first indices
            indices += (indices * math.ceil((total - n) / n))[:total - n]
        else:                                  # drop_last: trim the tail
            indices = indices[:total]
        mine = indices[self.rank:total:self.num_replicas]
        assert len(mine) == self.num_samples
        return iter(mine)

    def _check_epoch_changed(self):
        """Warn once when a shuffling sampler is iterated twice with the same epoch."""
        if self._last_epoch_iterated == self.epoch and not self._warned:
            self._warned = True
            warnings.warn(
                f"DistributedSampler is iterated again with epoch={self.epoch}: the order repeats "
                f"the previous one exactly. Call sampler.set_epoch(epoch) at the start of every "
                f"epoch to reshuffle.", UserWarning, stacklevel=3)
        self._last_epoch_iterated = self.epoch

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """Set the epoch that seeds the shuffle (``seed + epoch``); call it before each epoch
        on every rank so that every rank draws the same new permutation.

        Example:
            >>> from ddp.utils.data import DataLoader, DistributedSampler
            >>> sampler = DistributedSampler(range(10), num_replicas=2, rank=0)
            >>> loader = DataLoader(range(10), batch_size=5, sampler=sampler)
            >>> for epoch in range(3):
            ...     sampler.set_epoch(epoch)
            ...     for batch in loader:
            ...         pass                       # the epoch's training step
        """
        self.epoch = epoch

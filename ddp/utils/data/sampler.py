"""Samplers: iterables of dataset indices (or of lists of indices, for :class:`BatchSampler`) that
a :class:`~ddp.utils.data.DataLoader` draws from. Same API as ``torch.utils.data``.

Random samplers draw on a :class:`ddp.Generator`; without one they draw on
``ddp.default_generator``, so ``ddp.manual_seed`` makes them reproducible.

The distributed seam: ``DistributedSampler`` (``ddp/utils/data/distributed.py``, from the
distributed layer) is a :class:`Sampler` that gives each MPI rank its own shard and reshuffles
per ``set_epoch(epoch)``. As in PyTorch, the DataLoader never calls ``set_epoch`` itself: the
training loop calls ``sampler.set_epoch(epoch)`` before each epoch's ``for batch in loader``.

Example:
    >>> import ddp
    >>> list(BatchSampler(SequentialSampler(range(5)), batch_size=2, drop_last=False))
    [[0, 1], [2, 3], [4]]
    >>> sorted(RandomSampler(range(4), generator=ddp.Generator().manual_seed(0)))
    [0, 1, 2, 3]
"""
from __future__ import annotations

import numpy as np

from ... import backend
from ...creation import as_tensor, multinomial

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
           "WeightedRandomSampler", "BatchSampler"]


def _rng(generator):
    return (generator if generator is not None else backend.default_generator).numpy


class Sampler:
    """Base class of samplers: subclasses define ``__iter__`` (indices) and, if they can,
    ``__len__``.

    Example:
        >>> class Reversed(Sampler):
        ...     def __init__(self, n): self.n = n
        ...     def __iter__(self): return iter(range(self.n - 1, -1, -1))
        ...     def __len__(self): return self.n
        >>> list(Reversed(3))
        [2, 1, 0]
    """

    def __init__(self, data_source=None):
        pass  # accepted for compatibility; PyTorch deprecates and ignores it too

    def __iter__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    """Indices ``0 .. len(data_source) - 1`` in order.

    Example:
        >>> list(SequentialSampler("abc"))
        [0, 1, 2]
    """

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """Random indices: a fresh permutation per epoch, or ``num_samples`` draws with replacement.

    Without replacement, ``num_samples`` larger than the dataset chains whole permutations.
    Without a ``generator``, each ``iter()`` seeds a private generator from
    ``ddp.default_generator`` (as PyTorch does), so ``ddp.manual_seed`` fixes the order.

    Example:
        >>> s = RandomSampler(range(5), generator=ddp.Generator().manual_seed(1))
        >>> sorted(s) == [0, 1, 2, 3, 4]
        True
        >>> len(RandomSampler(range(5), replacement=True, num_samples=12))
        12
    """

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        if not isinstance(replacement, bool):
            raise TypeError("replacement should be a boolean value, but got "
                            f"replacement={replacement}")
        if not isinstance(self.num_samples, int) or isinstance(self.num_samples, bool) \
                or self.num_samples <= 0:
            raise ValueError("num_samples should be a positive integer value, but got "
                             f"num_samples={self.num_samples}")

    @property
    def num_samples(self):
        # The dataset may change size after construction: read its length each time.
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        n = len(self.data_source)
        if self.generator is None:
            seed = int(backend.default_generator.numpy.integers(0, 2 ** 63))
            rng = np.random.Generator(np.random.PCG64(seed))
        else:
            rng = self.generator.numpy
        if self.replacement:
            for _ in range(self.num_samples // 32):
                yield from rng.integers(0, n, 32).tolist()
            yield from rng.integers(0, n, self.num_samples % 32).tolist()
        else:
            for _ in range(self.num_samples // n):
                yield from rng.permutation(n).tolist()
            yield from rng.permutation(n).tolist()[:self.num_samples % n]

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given ``indices`` in a random order (a new one per epoch).

    Example:
        >>> sorted(SubsetRandomSampler([7, 3, 5]))
        [3, 5, 7]
    """

    def __init__(self, indices, generator=None):
        self.indices = indices
        self.generator = generator

    def __iter__(self):
        for i in _rng(self.generator).permutation(len(self.indices)).tolist():
            yield self.indices[i]

    def __len__(self):
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """``num_samples`` indices ``0 .. len(weights) - 1`` drawn with probability proportional to
    ``weights`` (need not sum to 1), with or without replacement.

    Example:
        >>> s = WeightedRandomSampler([0.0, 1.0, 0.0], num_samples=4)
        >>> list(s)
        [1, 1, 1, 1]
    """

    def __init__(self, weights, num_samples, replacement=True, generator=None):
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
            raise ValueError("num_samples should be a positive integer value, but got "
                             f"num_samples={num_samples}")
        if not isinstance(replacement, bool):
            raise ValueError("replacement should be a boolean value, but got "
                             f"replacement={replacement}")
        self.weights = as_tensor(weights, dtype=backend.float64)
        if self.weights.ndim != 1:
            raise ValueError("weights should be a 1d sequence but given "
                             f"weights have shape {tuple(self.weights.shape)}")
        self.num_samples = num_samples
        self.replacement = replacement
        self.generator = generator

    def __iter__(self):
        yield from multinomial(self.weights, self.num_samples, self.replacement,
                               generator=self.generator).tolist()

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Groups the indices of ``sampler`` into lists of ``batch_size``; the short last batch is
    kept unless ``drop_last``.

    Example:
        >>> list(BatchSampler(range(7), batch_size=3, drop_last=True))
        [[0, 1, 2], [3, 4, 5]]
        >>> len(BatchSampler(range(7), batch_size=3, drop_last=False))
        3
    """

    def __init__(self, sampler, batch_size, drop_last):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError("batch_size should be a positive integer value, but got "
                             f"batch_size={batch_size}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self):
        batch = []
        for idx in self.sampler:
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size

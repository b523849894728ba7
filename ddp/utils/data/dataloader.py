"""The :class:`DataLoader`: batches from a dataset, in the main process or in worker processes.

Same API and semantics as ``torch.utils.data.DataLoader``. How it works:

* The *index sampler* (a :class:`BatchSampler` when batching, else the plain sampler) says which
  items make each batch. A *fetcher* reads those items from the dataset and calls
  ``collate_fn`` on them.
* With ``num_workers=0`` this happens in the calling process.
* With ``num_workers > 0`` each worker process has its own index queue and all share one
  result queue. The main process keeps ``prefetch_factor * num_workers`` batches in flight,
  handing batch indices to the workers round-robin, and yields results in sampler order
  (a reorder buffer holds results that arrive early). Batches cross processes pickled (ddp
  tensors pickle as their NumPy arrays). Workers end when the iterator is exhausted, deleted or
  garbage-collected, or, with ``persistent_workers=True``, when the loader goes away.
* An exception in a worker is sent back and re-raised in the main process with the same type
  and a message holding the worker's traceback.

Randomness: each iterator draws a ``base_seed`` from the loader's ``generator`` (else from
``ddp.default_generator``); worker ``i`` seeds ``ddp`` and ``random`` with ``base_seed + i`` and
``numpy.random`` with a hash of it (NumPy's legacy seeding takes 32-bit words). So
``ddp.manual_seed`` (or a seeded ``generator``) makes shuffles and worker randomness
reproducible, and ``num_workers`` does not change which batches come out.

Processes and MPI: workers are started with ``multiprocessing_context`` ('fork' by default on
Linux, as in PyTorch; 'spawn' or 'forkserver' or a context object otherwise). Workers must never
touch MPI (or the GPU): a forked child shares the parent's MPI and CUDA state, and some MPI
stacks break when a process forks after ``MPI_Init`` (the bundled MPICH does not). If yours does,
use ``multiprocessing_context='forkserver'`` or 'spawn'. Those children re-import the main
script, so: the dataset, ``collate_fn`` and ``worker_init_fn`` must be picklable (defined at
module level), the script needs an ``if __name__ == "__main__":`` guard, and MPI calls belong
inside it. The DataLoader starts such children with ``MPI4PY_RC_INITIALIZE=false``, so a
top-level ``from mpi4py import MPI`` does not initialise MPI in them.

Distributed training: pass a ``DistributedSampler`` as ``sampler`` and call
``sampler.set_epoch(epoch)`` at the start of every epoch; the DataLoader does not call it.

Example:
    >>> import ddp
    >>> from ddp.utils.data import DataLoader, TensorDataset
    >>> ds = TensorDataset(ddp.arange(10).float(), ddp.arange(10))
    >>> g = ddp.Generator().manual_seed(0)
    >>> loader = DataLoader(ds, batch_size=4, shuffle=True, generator=g)
    >>> [y.shape[0] for x, y in loader]
    [4, 4, 2]
"""
from __future__ import annotations

import atexit
import collections.abc
import contextlib
import itertools
import multiprocessing
import multiprocessing.context
import multiprocessing.queues
import os
import pickle
import queue
import random
import sys
import traceback

import numpy as np

from ... import backend
from ...tensor import Tensor
from ._collate import default_collate, default_convert
from .dataset import IterableDataset
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler

__all__ = ["DataLoader", "get_worker_info", "WorkerInfo"]

# How often (seconds) a waiting worker checks that its parent lives, and a waiting main process
# checks that its workers live.
MP_STATUS_CHECK_INTERVAL = 5.0

_python_exit_status = False  # True once the interpreter is shutting down


def _set_python_exit_flag():
    global _python_exit_status
    _python_exit_status = True


atexit.register(_set_python_exit_flag)


# --------------------------------------------------------------------------- worker side

class WorkerInfo:
    """What :func:`get_worker_info` returns inside a worker: ``id``, ``num_workers``, ``seed``,
    ``dataset``. Read-only.

    Example:
        >>> info = WorkerInfo(id=0, num_workers=2, seed=7, dataset=None)
        >>> info.id, info.num_workers
        (0, 2)
    """

    __initialized = False

    def __init__(self, **kwargs):
        for k, v in kwargs.items():
            setattr(self, k, v)
        self.__keys = tuple(kwargs)
        self.__initialized = True

    def __setattr__(self, key, val):
        if self.__initialized:
            raise RuntimeError(f"Cannot assign attributes to {self.__class__.__name__} objects")
        super().__setattr__(key, val)

    def __repr__(self):
        items = ", ".join(f"{k}={getattr(self, k)}" for k in self.__keys)
        return f"{self.__class__.__name__}({items})"


_worker_info = None  # set in worker processes


def get_worker_info():
    """Information about the current DataLoader worker, or ``None`` in the main process.

    The result has ``id`` (0..num_workers-1), ``num_workers``, ``seed`` (the seed this worker's
    ``ddp``, ``random`` and ``numpy.random`` were seeded with) and ``dataset`` (this worker's
    copy of the dataset). Use it in ``IterableDataset.__iter__`` or a ``worker_init_fn`` to
    split the work between workers.

    Example:
        >>> get_worker_info() is None   # not inside a worker
        True
    """
    return _worker_info


class _KeyErrorMessage(str):
    """A KeyError prints ``repr`` of its message; this keeps the traceback readable."""

    def __repr__(self):
        return self


class ExceptionWrapper:
    """An exception caught in a worker, carried to the main process and re-raised there.

    Example:
        >>> try:
        ...     {}["missing"]
        ... except KeyError:
        ...     wrapped = ExceptionWrapper(where="in a test")
        >>> wrapped.exc_type.__name__
        'KeyError'
    """

    def __init__(self, exc_info=None, where="in background"):
        if exc_info is None:
            exc_info = sys.exc_info()
        self.exc_type = exc_info[0]
        self.exc_msg = "".join(traceback.format_exception(*exc_info))
        self.where = where
        try:  # the main process must be able to unpickle the type
            pickle.dumps(self.exc_type)
        except Exception:
            self.exc_type = RuntimeError

    def reraise(self):
        msg = f"Caught {self.exc_type.__name__} {self.where}.\nOriginal {self.exc_msg}"
        if self.exc_type is KeyError:
            msg = _KeyErrorMessage(msg)
        try:
            exception = self.exc_type(msg)
        except Exception:  # the type wants other constructor arguments
            raise RuntimeError(msg) from None
        try:
            raise exception
        finally:
            # No frame -> exception -> traceback -> frame cycle: the iterator (and its worker
            # processes) can then be freed as soon as the caller drops the exception.
            del exception


class _ResultQueue(multiprocessing.queues.Queue):
    """The workers' result queue. A batch is pickled by the queue's feeder thread, after
    ``put`` returned: a batch that cannot be pickled would only be printed in the worker while
    the main process waited for it forever. Here the worker sends that error in its place."""

    def __init__(self, ctx):
        super().__init__(ctx=ctx.get_context())

    def _on_queue_feeder_error(self, e, obj):
        if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], int)):
            return super()._on_queue_feeder_error(e, obj)
        reason = (f"{e} (the batch could not be sent to the main process: everything a "
                  "DataLoader worker returns must be picklable)")
        try:
            error = type(e)(reason)
        except Exception:  # the type wants other constructor arguments
            error = RuntimeError(reason)
        try:
            raise error from e
        except Exception:
            wrapped = ExceptionWrapper(where=f"in DataLoader worker process {_worker_info.id}")
        self.put((obj[0], wrapped))


class _DatasetKind:
    Map = 0
    Iterable = 1


class _MapDatasetFetcher:
    def __init__(self, dataset, auto_collation, collate_fn, drop_last):
        self.dataset, self.auto_collation, self.collate_fn = dataset, auto_collation, collate_fn

    def fetch(self, index):
        if self.auto_collation:
            getitems = getattr(self.dataset, "__getitems__", None)
            data = getitems(index) if getitems else [self.dataset[i] for i in index]
        else:
            data = self.dataset[index]
        return self.collate_fn(data)


class _IterableDatasetFetcher:
    def __init__(self, dataset, auto_collation, collate_fn, drop_last):
        self.dataset_iter = iter(dataset)
        self.auto_collation, self.collate_fn, self.drop_last = auto_collation, collate_fn, drop_last
        self.ended = False

    def fetch(self, index):
        if self.ended:
            raise StopIteration
        if self.auto_collation:
            data = []
            for _ in index:
                try:
                    data.append(next(self.dataset_iter))
                except StopIteration:
                    self.ended = True
                    break
            if not data or (self.drop_last and len(data) < len(index)):
                raise StopIteration
        else:
            data = next(self.dataset_iter)
        return self.collate_fn(data)


def _create_fetcher(kind, dataset, auto_collation, collate_fn, drop_last):
    cls = _MapDatasetFetcher if kind == _DatasetKind.Map else _IterableDatasetFetcher
    return cls(dataset, auto_collation, collate_fn, drop_last)


class _IterableDatasetStopIteration:
    """Sent by a worker whose iterable dataset is exhausted."""

    def __init__(self, worker_id):
        self.worker_id = worker_id


class _ResumeIteration:
    """Sent to persistent workers at the start of a new epoch (and echoed back)."""


def _seed_worker(seed):
    random.seed(seed)
    backend.manual_seed(seed)
    np.random.seed(np.random.SeedSequence(seed).generate_state(4))


def _worker_loop(dataset_kind, dataset, index_queue, data_queue, done_event, auto_collation,
                 collate_fn, drop_last, base_seed, init_fn, worker_id, num_workers):
    """The body of a worker process: take ``(task_idx, batch_indices)`` from ``index_queue``,
    put ``(task_idx, batch_or_exception)`` on ``data_queue``, until ``None`` arrives or the
    parent process dies. Never touches MPI."""
    global _worker_info
    try:
        seed = base_seed + worker_id
        _seed_worker(seed)
        _worker_info = WorkerInfo(id=worker_id, num_workers=num_workers, seed=seed,
                                  dataset=dataset)
        init_exception = None
        fetcher = None
        try:
            if init_fn is not None:
                init_fn(worker_id)
            fetcher = _create_fetcher(dataset_kind, dataset, auto_collation, collate_fn, drop_last)
        except Exception:
            init_exception = ExceptionWrapper(where=f"in DataLoader worker process {worker_id}")

        iteration_end = False  # this worker's iterable dataset is exhausted for this epoch
        parent = os.getppid()
        while os.getppid() == parent:
            try:
                r = index_queue.get(timeout=MP_STATUS_CHECK_INTERVAL)
            except queue.Empty:
                continue
            if isinstance(r, _ResumeIteration):  # a new epoch for a persistent worker
                data_queue.put((r, None))
                iteration_end = False
                fetcher = _create_fetcher(dataset_kind, dataset, auto_collation, collate_fn,
                                          drop_last)
                continue
            if r is None:  # the final signal
                break
            if done_event.is_set() or iteration_end:
                continue  # wait for the final signal
            idx, index = r
            if init_exception is not None:
                data, init_exception = init_exception, None
            else:
                try:
                    data = fetcher.fetch(index)
                except Exception as e:
                    if isinstance(e, StopIteration) and dataset_kind == _DatasetKind.Iterable:
                        data = _IterableDatasetStopIteration(worker_id)
                        iteration_end = True
                    else:
                        data = ExceptionWrapper(where=f"in DataLoader worker process {worker_id}")
            data_queue.put((idx, data))
            del data, idx, index, r
    except KeyboardInterrupt:
        pass  # the main process gets it too and shuts the workers down
    if done_event.is_set():
        data_queue.cancel_join_thread()  # exit without flushing results nobody will read
        data_queue.close()


# --------------------------------------------------------------------------- pinned memory

def _pin_tensor(t):
    if not isinstance(t._data, np.ndarray):
        return t  # already on the GPU
    buf = backend.pinned_empty(t._data.shape, t._data.dtype)
    buf[...] = t._data
    return Tensor._make(buf)


def _pin_memory(data):
    """Copy the CPU tensors in ``data`` (recursing into containers) into page-locked host memory
    (CuPy's pinned allocator), so that ``.to('cuda')`` copies faster."""
    if isinstance(data, Tensor):
        return _pin_tensor(data)
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, collections.abc.Mapping):
        pinned = {k: _pin_memory(v) for k, v in data.items()}
        try:
            return type(data)(pinned)
        except TypeError:
            return pinned
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(_pin_memory(x) for x in data))
    if isinstance(data, tuple):
        return [_pin_memory(x) for x in data]  # a list, as PyTorch
    if isinstance(data, list):
        return [_pin_memory(x) for x in data]
    if hasattr(data, "pin_memory"):
        return data.pin_memory()
    return data


# --------------------------------------------------------------------------- the loader

class _InfiniteConstantSampler(Sampler):
    """Yields ``None`` forever: the 'sampler' of an IterableDataset."""

    def __iter__(self):
        while True:
            yield None


@contextlib.contextmanager
def _children_skip_mpi_init(ctx):
    """While starting 'spawn' / 'forkserver' workers, tell mpi4py (``MPI4PY_RC_INITIALIZE``) not
    to initialise MPI in them: such a child re-imports the main module, and a top-level
    ``from mpi4py import MPI`` there would otherwise call ``MPI_Init`` with the launcher's
    environment and abort. A forked child inherits the parent's (unused) MPI state instead."""
    if ctx.get_start_method() == "fork":
        yield
        return
    saved = os.environ.get("MPI4PY_RC_INITIALIZE")
    os.environ["MPI4PY_RC_INITIALIZE"] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MPI4PY_RC_INITIALIZE", None)
        else:
            os.environ["MPI4PY_RC_INITIALIZE"] = saved


def _default_context():
    """'fork' on Linux (PyTorch's default there), the platform's default elsewhere."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


class DataLoader:
    """Iterate over a dataset in batches: shuffling, batching, collation, worker processes.

    Args:
        dataset: a map-style :class:`Dataset` (``__getitem__`` + ``__len__``) or an
            :class:`IterableDataset`.
        batch_size: items per batch (default 1); ``None`` turns batching off (each item goes
            through :func:`default_convert`).
        shuffle: reshuffle every epoch (a :class:`RandomSampler` on ``generator``).
        sampler: the order of items; excludes ``shuffle``. A ``DistributedSampler`` goes here
            (call its ``set_epoch(epoch)`` each epoch yourself).
        batch_sampler: yields lists of indices; excludes ``batch_size``, ``shuffle``,
            ``sampler`` and ``drop_last``.
        num_workers: worker processes (0: load in the main process).
        collate_fn: list of samples -> batch (default :func:`default_collate`).
        pin_memory: copy batches into page-locked host memory (CuPy pinned memory) for faster
            transfers to the GPU. Without CuPy and a GPU this is a no-op.
        drop_last: drop the last, short batch.
        timeout: seconds to wait for a batch from the workers before raising (0: forever).
        worker_init_fn: called as ``worker_init_fn(worker_id)`` in each worker after seeding.
        multiprocessing_context: 'fork' (default on Linux), 'spawn', 'forkserver', or a
            ``multiprocessing`` context. See the module notes on MPI.
        generator: a :class:`ddp.Generator` for the shuffle and the workers' base seed
            (default: ``ddp.default_generator``).
        prefetch_factor: batches loaded ahead per worker (default 2 when ``num_workers > 0``).
        persistent_workers: keep the workers alive across epochs.
        pin_memory_device: accepted for compatibility; ignored.

    Example:
        >>> from ddp.utils.data import DataLoader
        >>> [b.tolist() for b in DataLoader(range(5), batch_size=2)]
        [[0, 1], [2, 3], [4]]
        >>> len(DataLoader(range(5), batch_size=2, drop_last=True))
        2
    """

    __initialized = False

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
                 worker_init_fn=None, multiprocessing_context=None, generator=None, *,
                 prefetch_factor=None, persistent_workers=False, pin_memory_device=""):
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to "
                             "disable multiprocessing.")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("prefetch_factor option could only be specified in multiprocessing."
                             "let num_workers > 0 to enable multiprocessing, otherwise set "
                             "prefetch_factor to None.")
        if num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        elif prefetch_factor is not None and prefetch_factor < 0:
            raise ValueError("prefetch_factor option should be non-negative")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")

        self.dataset = dataset
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.pin_memory_device = pin_memory_device
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context

        if isinstance(dataset, IterableDataset):
            self._dataset_kind = _DatasetKind.Iterable
            if shuffle not in (False, None):
                raise ValueError("DataLoader with IterableDataset: expected unspecified shuffle "
                                 f"option, but got shuffle={shuffle}")
            if sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified sampler "
                                 f"option, but got sampler={sampler}")
            if batch_sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified "
                                 f"batch_sampler option, but got batch_sampler={batch_sampler}")
        else:
            shuffle = bool(shuffle)
            self._dataset_kind = _DatasetKind.Map

        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, "
                                 "shuffle, sampler, and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually "
                             "exclusive with drop_last")

        if sampler is None:
            if self._dataset_kind == _DatasetKind.Iterable:
                sampler = _InfiniteConstantSampler()
            elif shuffle:
                sampler = RandomSampler(dataset, generator=generator)
            else:
                sampler = SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.generator = generator
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self.persistent_workers = persistent_workers
        self.__initialized = True
        self._IterableDataset_len_called = None
        self._iterator = None

    # -- multiprocessing_context: validated like PyTorch's
    @property
    def multiprocessing_context(self):
        return self.__multiprocessing_context

    @multiprocessing_context.setter
    def multiprocessing_context(self, ctx):
        if ctx is not None:
            if self.num_workers == 0:
                raise ValueError("multiprocessing_context can only be used with multi-process "
                                 "loading (num_workers > 0), but got num_workers=0")
            if isinstance(ctx, str):
                valid = multiprocessing.get_all_start_methods()
                if ctx not in valid:
                    raise ValueError("multiprocessing_context option should specify a valid "
                                     f"start method in {valid!r}, but got "
                                     f"multiprocessing_context={ctx!r}")
                ctx = multiprocessing.get_context(ctx)
            if not isinstance(ctx, multiprocessing.context.BaseContext):
                raise TypeError("multiprocessing_context option should be a valid context object "
                                "or a string specifying the start method, but got "
                                f"multiprocessing_context={ctx}")
        self.__multiprocessing_context = ctx

    def __setattr__(self, attr, val):
        if self.__initialized and attr in ("batch_size", "batch_sampler", "sampler", "drop_last",
                                           "dataset", "persistent_workers"):
            raise ValueError(f"{attr} attribute should not be set after "
                             f"{self.__class__.__name__} is initialized")
        super().__setattr__(attr, val)

    @property
    def _auto_collation(self):
        return self.batch_sampler is not None

    @property
    def _index_sampler(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    def _get_iterator(self):
        if self.num_workers == 0:
            return _SingleProcessDataLoaderIter(self)
        return _MultiProcessingDataLoaderIter(self)

    def __iter__(self):
        """A new iterator per epoch, except with ``persistent_workers``: then the same one
        (and the same worker processes) restarts."""
        if self.persistent_workers and self.num_workers > 0:
            if self._iterator is None:
                self._iterator = self._get_iterator()
            else:
                self._iterator._reset(self)
            return self._iterator
        return self._get_iterator()

    def __len__(self):
        """Batches per epoch (for an IterableDataset: estimated from ``len(dataset)``)."""
        if self._dataset_kind == _DatasetKind.Iterable:
            length = self._IterableDataset_len_called = len(self.dataset)
            if self.batch_size is not None:
                if self.drop_last:
                    length = length // self.batch_size
                else:
                    length = -(-length // self.batch_size)
            return length
        return len(self._index_sampler)


class _BaseDataLoaderIter:
    def __init__(self, loader):
        self._dataset = loader.dataset
        self._dataset_kind = loader._dataset_kind
        self._IterableDataset_len_called = loader._IterableDataset_len_called
        self._auto_collation = loader._auto_collation
        self._drop_last = loader.drop_last
        self._index_sampler = loader._index_sampler
        self._num_workers = loader.num_workers
        self._prefetch_factor = loader.prefetch_factor
        # Pinning needs CuPy and a GPU; on a CPU-only machine pin_memory=True is a no-op.
        self._pin_memory = bool(loader.pin_memory) and backend.cuda_is_available()
        self._timeout = loader.timeout
        self._collate_fn = loader.collate_fn
        self._sampler_iter = iter(self._index_sampler)
        gen = loader.generator if loader.generator is not None else backend.default_generator
        self._base_seed = int(gen.numpy.integers(0, 2 ** 63))
        self._persistent_workers = loader.persistent_workers
        self._num_yielded = 0

    def __iter__(self):
        return self

    def _reset(self, loader, first_iter=False):
        self._sampler_iter = iter(self._index_sampler)
        self._num_yielded = 0
        self._IterableDataset_len_called = loader._IterableDataset_len_called

    def _next_index(self):
        return next(self._sampler_iter)  # may raise StopIteration

    def _next_data(self):
        raise NotImplementedError

    def __next__(self):
        data = self._next_data()
        self._num_yielded += 1
        return data

    def __len__(self):
        return len(self._index_sampler)

    def __getstate__(self):
        raise NotImplementedError(f"{self.__class__.__name__} cannot be pickled")


class _SingleProcessDataLoaderIter(_BaseDataLoaderIter):
    def __init__(self, loader):
        super().__init__(loader)
        self._dataset_fetcher = _create_fetcher(self._dataset_kind, self._dataset,
                                                self._auto_collation, self._collate_fn,
                                                self._drop_last)

    def _next_data(self):
        index = self._next_index()  # may raise StopIteration
        data = self._dataset_fetcher.fetch(index)  # may raise StopIteration
        return _pin_memory(data) if self._pin_memory else data


class _MultiProcessingDataLoaderIter(_BaseDataLoaderIter):
    """Workers with an index queue each and one shared result queue.

    Bookkeeping (as PyTorch's): task ``i`` is the ``i``-th batch of the epoch. ``_task_info[i]``
    is ``(worker_id,)`` while outstanding and ``(worker_id, data)`` once it arrived early.
    ``_send_idx`` is the next task to send, ``_rcvd_idx`` the next one to return.
    """

    def __init__(self, loader):
        super().__init__(loader)
        self._shutdown = True  # until the workers exist
        ctx = loader.multiprocessing_context or _default_context()
        self._worker_result_queue = _ResultQueue(ctx)
        self._workers_done_event = ctx.Event()
        self._index_queues = []
        self._workers = []
        self._shutdown = False
        try:
            with _children_skip_mpi_init(ctx):
                self._start_workers(ctx, loader)
            self._data_queue = self._worker_result_queue
            self._reset(loader, first_iter=True)
        except BaseException:
            self._workers_status = [True] * len(self._workers)
            self._shutdown_workers()
            raise

    def _start_workers(self, ctx, loader):
        """Start one process (with its own index queue) per worker."""
        for i in range(self._num_workers):
            index_queue = ctx.Queue()
            index_queue.cancel_join_thread()  # never block exit on a dead worker's queue
            w = ctx.Process(
                target=_worker_loop,
                args=(self._dataset_kind, self._dataset, index_queue,
                      self._worker_result_queue, self._workers_done_event,
                      self._auto_collation, self._collate_fn, self._drop_last,
                      self._base_seed, loader.worker_init_fn, i, self._num_workers),
                daemon=True)
            w.start()
            self._index_queues.append(index_queue)
            self._workers.append(w)

    def _reset(self, loader, first_iter=False):
        super()._reset(loader, first_iter)
        self._send_idx = 0
        self._rcvd_idx = 0
        self._task_info = {}
        self._tasks_outstanding = 0
        # Whether each worker still has work this epoch (False once its iterable is exhausted).
        self._workers_status = [True] * self._num_workers
        self._worker_queue_idx_cycle = itertools.cycle(range(self._num_workers))
        if not first_iter:  # persistent workers: restart them and drop last epoch's leftovers
            for q in self._index_queues:
                q.put(_ResumeIteration())
            pending = self._num_workers
            while pending > 0:
                idx, _ = self._get_data()
                if isinstance(idx, _ResumeIteration):
                    pending -= 1
        for _ in range(self._prefetch_factor * self._num_workers):
            self._try_put_index()

    def _try_get_data(self, timeout=MP_STATUS_CHECK_INTERVAL):
        """``(True, item)`` from the result queue, or ``(False, None)`` after ``timeout``;
        raises if a worker died."""
        try:
            return True, self._data_queue.get(timeout=timeout)
        except Exception as e:
            failed = [w for i, w in enumerate(self._workers)
                      if self._workers_status[i] and not w.is_alive()]
            if failed:
                pids = ", ".join(str(w.pid) for w in failed)
                codes = ", ".join(str(w.exitcode) for w in failed)
                raise RuntimeError(f"DataLoader worker (pid(s) {pids}) exited unexpectedly "
                                   f"(exit code(s) {codes})") from e
            if isinstance(e, queue.Empty):
                return False, None
            raise

    def _get_data(self):
        if self._timeout > 0:
            ok, data = self._try_get_data(self._timeout)
            if ok:
                return data
            raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds")
        while True:
            ok, data = self._try_get_data()
            if ok:
                return data

    def _next_data(self):
        while True:
            # Skip tasks of workers that ran out of (iterable) data.
            while self._rcvd_idx < self._send_idx:
                info = self._task_info.get(self._rcvd_idx)
                if info:
                    worker_id = info[0]
                    if len(info) == 2 or self._workers_status[worker_id]:
                        break
                    del self._task_info[self._rcvd_idx]
                self._rcvd_idx += 1
            else:  # nothing left to receive: the epoch is over
                if not self._persistent_workers:
                    self._shutdown_workers()
                raise StopIteration

            if len(self._task_info[self._rcvd_idx]) == 2:  # arrived earlier, out of order
                data = self._task_info.pop(self._rcvd_idx)[1]
                return self._process_data(data)

            idx, data = self._get_data()
            self._tasks_outstanding -= 1
            if isinstance(data, _IterableDatasetStopIteration):
                if self._persistent_workers:
                    self._workers_status[data.worker_id] = False
                else:
                    self._mark_worker_as_unavailable(data.worker_id)
                self._try_put_index()
                continue
            if idx != self._rcvd_idx:
                self._task_info[idx] += (data,)
            else:
                del self._task_info[idx]
                return self._process_data(data)

    def _try_put_index(self):
        """Send the next batch of indices to the next worker that still has work."""
        try:
            index = self._next_index()
        except StopIteration:
            return
        for _ in range(self._num_workers):
            worker_id = next(self._worker_queue_idx_cycle)
            if self._workers_status[worker_id]:
                break
        else:
            return  # every worker is done
        self._index_queues[worker_id].put((self._send_idx, index))
        self._task_info[self._send_idx] = (worker_id,)
        self._tasks_outstanding += 1
        self._send_idx += 1

    def _process_data(self, data):
        self._rcvd_idx += 1
        self._try_put_index()
        if isinstance(data, ExceptionWrapper):
            data.reraise()
        return _pin_memory(data) if self._pin_memory else data

    def _mark_worker_as_unavailable(self, worker_id):
        self._index_queues[worker_id].put(None)  # the worker exits when it reads this
        self._workers_status[worker_id] = False

    def _shutdown_workers(self):
        """Stop the workers: set the done event, send each the final ``None``, join them
        (terminating any that do not exit in time) and close the queues. Idempotent."""
        if _python_exit_status or getattr(self, "_shutdown", True):
            return  # at interpreter exit multiprocessing terminates the (daemonic) workers
        self._shutdown = True
        try:
            self._workers_done_event.set()
            for worker_id in range(len(self._workers)):
                if self._persistent_workers or self._workers_status[worker_id]:
                    self._mark_worker_as_unavailable(worker_id)
            for w in self._workers:
                w.join(timeout=MP_STATUS_CHECK_INTERVAL)
            for q in self._index_queues:
                q.cancel_join_thread()
                q.close()
            self._worker_result_queue.cancel_join_thread()
            self._worker_result_queue.close()
        finally:
            for w in self._workers:
                if w.is_alive():
                    w.terminate()

    def __del__(self):
        self._shutdown_workers()

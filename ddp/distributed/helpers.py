"""Rank-aware helpers for training scripts: print and log once, reduce metrics, checkpoint from
rank 0, and evaluate on exactly the dataset.

Every helper works in a single process too (no ``init_process_group``, or the single-rank
backend): there they are identities (``print0`` prints, ``all_reduce_metric`` returns the value,
``gather_for_eval`` returns the predictions...), so a script needs no ``if distributed:``.

Before ``init_process_group`` the rank comes from the launcher's environment
(``ddp.distributed.environment``: MPI's rank variables, else ``RANK``), so ``print0`` is already quiet on the
other ranks at start-up.

Exact evaluation (padding would count some samples twice): shard the test set with
``DistributedSampler(test_set, shuffle=False, pad=False)``, then either sum additive metric
state over the ranks (:func:`reduce_confusion_matrix`, or :func:`all_reduce_metric` of
``[sum, count]`` with ``op='sum'``), or collect every prediction in dataset order with
:func:`gather_for_eval` and compute the metric on it.

Example:
    >>> import ddp.distributed as dist
    >>> dist.init_process_group()
    >>> dist.print0("world size", dist.get_world_size())      # printed once
    world size 1
    >>> local_loss = 0.25                                      # this rank's
    >>> loss = dist.all_reduce_metric(local_loss, op="mean")   # the same on every rank
    >>> model = nn.Linear(2, 1)
    >>> dist.save_on_rank0(model.state_dict(), tmp_path / "ckpt.pt")   # every rank can read it
"""
from __future__ import annotations

import functools
import logging

import numpy as np

from .. import backend
from ..tensor import Tensor
from . import environment
from .process_group import get_communicator, get_rank, is_initialized

__all__ = ["is_main_process", "rank_zero_only", "print0", "RankFilter", "setup_rank_logging",
           "all_reduce_metric", "reduce_confusion_matrix", "save_on_rank0", "load_on_every_rank",
           "gather_for_eval"]


def _rank():
    """This process's global rank: from the process group, else from the launcher's env."""
    if is_initialized():
        return get_rank()
    return environment.detect().rank


def _comm(group=None):
    """The group's communicator, or None when there is nothing to communicate with."""
    if not is_initialized():
        return None
    comm = get_communicator(group)
    return comm if comm.size > 1 else None


# ------------------------------------------------------------------------- rank 0 only

def is_main_process() -> bool:
    """True on global rank 0 (and in a single process).

    Example:
        >>> if dist.is_main_process():
        ...     print("only rank 0 writes the log")
        only rank 0 writes the log
    """
    return _rank() == 0


def rank_zero_only(fn):
    """Decorator: ``fn`` runs on rank 0 and returns None elsewhere (the rank is read at each
    call, so functions can be decorated before ``init_process_group``).

    Example:
        >>> @dist.rank_zero_only
        ... def log(msg):
        ...     print(msg)
        >>> log("only once")
        only once
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _rank() == 0:
            return fn(*args, **kwargs)
        return None
    return wrapper


def print0(*args, **kwargs):
    """``print`` on rank 0 only (same arguments as ``print``).

    Example:
        >>> epoch, loss = 3, 0.12345
        >>> dist.print0(f"epoch {epoch}: loss {loss:.4f}")
        epoch 3: loss 0.1235
    """
    if _rank() == 0:
        print(*args, **kwargs)


class RankFilter(logging.Filter):
    """A logging filter that adds ``record.rank`` (for ``%(rank)d`` in the format) and, with
    ``rank_zero_only``, drops records below WARNING on ranks other than 0.

    Example:
        >>> handler = logging.StreamHandler()
        >>> handler.addFilter(RankFilter(rank_zero_only=True))
    """

    def __init__(self, rank_zero_only=True):
        super().__init__()
        self.rank_zero_only = rank_zero_only

    def filter(self, record):
        record.rank = _rank()
        return not (self.rank_zero_only and record.rank != 0 and record.levelno < logging.WARNING)


def setup_rank_logging(level=logging.INFO, rank_zero_only=True, logger=None,
                       fmt="[rank %(rank)d] %(asctime)s %(levelname)s %(name)s: %(message)s"):
    """Log to stderr with every record prefixed by its rank; with ``rank_zero_only`` the other
    ranks keep only warnings and errors. Configures ``logger`` (the root logger by default) and
    returns it; calling it again replaces the handler it installed before.

    Example:
        >>> log = dist.setup_rank_logging(logging.INFO, logger=logging.getLogger("train"))
        >>> log.info("step %d", 10)       # on stderr: "[rank 0] ... train: step 10", once
    """
    logger = logging.getLogger() if logger is None else logger
    for h in list(logger.handlers):
        if getattr(h, "_ddp_rank_handler", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler()
    handler._ddp_rank_handler = True
    handler.addFilter(RankFilter(rank_zero_only))
    handler.setFormatter(logging.Formatter(fmt))
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger


# ------------------------------------------------------------------------- metrics

_METRIC_OPS = {"mean": "sum", "avg": "sum", "sum": "sum", "max": "max", "min": "min"}


def all_reduce_metric(value, op="mean", group=None):
    """Reduce a metric across ranks: ``op`` is ``'mean'``, ``'sum'``, ``'max'`` or ``'min'``.

    ``value`` may be a Python number (a Python number comes back), a NumPy array or a ddp
    tensor (a new array / detached tensor comes back; the input is not modified). The result is
    the same on every rank. ``'mean'`` is the plain mean over ranks (weight it yourself, e.g.
    reduce ``[sum, count]`` with ``'sum'``, when shards differ in size).

    Example:
        >>> correct, total, shard = 45, 50, range(50)     # this rank's
        >>> acc = dist.all_reduce_metric(correct / total, op="mean")
        >>> n = dist.all_reduce_metric(len(shard), op="sum")
        >>> acc, n                                          # (one process here)
        (0.9, 50)
    """
    if op not in _METRIC_OPS:
        raise ValueError(f"all_reduce_metric: op must be one of {sorted(_METRIC_OPS)}, got {op!r}")
    mean = op in ("mean", "avg")
    if isinstance(value, Tensor):
        arr = value.detach()._data.copy()
    elif isinstance(value, np.ndarray) or backend.is_cuda_array(value):
        arr = value.copy()
    else:
        arr = np.asarray(value)
        if arr.dtype == np.bool_ or arr.dtype.kind not in "iuf":
            arr = arr.astype(np.float64)
    if mean and arr.dtype.kind not in "fV":
        arr = arr.astype(np.float64)
    comm = _comm(group)
    if comm is not None:
        arr = backend.get_array_module(arr).ascontiguousarray(arr)
        comm.Allreduce(arr, _METRIC_OPS[op])
        if mean:
            arr /= comm.size
    if isinstance(value, Tensor):
        return Tensor._make(arr)
    if isinstance(value, np.ndarray) or backend.is_cuda_array(value):
        return arr
    return arr.item()


def reduce_confusion_matrix(cm, group=None):
    """Sum a :class:`ddp.metrics.ConfusionMatrix`'s counts (or an ``Accuracy``/``F1Score``...
    built on it, or a ``MeanMetric``'s state) over the ranks, in place; returns ``cm``. Call it
    once, after the last ``update`` and before ``compute()``.

    Example:
        >>> model = nn.Linear(4, 3)
        >>> eval_loader = [(ddp.randn(8, 4), ddp.randint(0, 3, (8,))) for _ in range(2)]
        >>> cm = ddp.metrics.ConfusionMatrix(3)
        >>> for x, y in eval_loader: cm.update(model(x), y)
        >>> int(dist.reduce_confusion_matrix(cm).compute().sum())   # the whole dataset's counts
        16
    """
    comm = _comm(group)
    if comm is None:
        return cm

    def sum_over_ranks(array):
        array = np.array(array, copy=True)
        comm.Allreduce(array, "sum")
        return array
    cm.sync(sum_over_ranks)
    return cm


def gather_for_eval(tensor, dataset_len, group=None):
    """Every rank's predictions, in the sampler's order and without padding.

    ``tensor`` holds this rank's outputs for its shard of a :class:`DistributedSampler`, in the
    sampler's order (rows = samples; shards may differ in length, as with ``pad=False``). The
    shards are padded to a common length, all-gathered, interleaved back (position ``i`` of the
    order is row ``i // R`` of rank ``i % R``) and cut to ``dataset_len``, which also removes
    the samples that ``pad=True`` repeats. With ``shuffle=False`` the result is in dataset order.
    Every rank gets it. Returns the input's type (ddp tensor or NumPy/CuPy array).

    Example:
        >>> from ddp.utils.data import DataLoader, DistributedSampler, TensorDataset
        >>> ds, model = TensorDataset(ddp.randn(100, 4), ddp.zeros(100)), nn.Linear(4, 3)
        >>> sampler = DistributedSampler(ds, shuffle=False, pad=False)
        >>> preds = ddp.cat([model(x).argmax(1) for x, _ in DataLoader(ds, 64, sampler=sampler)])
        >>> all_preds = dist.gather_for_eval(preds, len(ds))    # len(ds) rows, dataset order
        >>> all_preds.shape
        ddp.Size([100])
    """
    arr = tensor.detach()._data if isinstance(tensor, Tensor) else tensor
    comm = _comm(group)
    if comm is None:
        out = arr[:dataset_len]
    else:
        xp = backend.get_array_module(arr)
        lengths = comm.allgather_obj(int(arr.shape[0]))
        if sum(lengths) < dataset_len:
            raise ValueError(f"gather_for_eval: the ranks hold {sum(lengths)} rows in all, fewer "
                             f"than dataset_len={dataset_len}")
        longest = max(lengths)
        padded = xp.zeros((longest,) + tuple(arr.shape[1:]), arr.dtype)
        padded[:arr.shape[0]] = arr
        gathered = xp.empty((comm.size,) + padded.shape, arr.dtype)
        comm.Allgather(padded, gathered)
        # (rank, row) -> (row, rank): flattening that order is the sampler's interleaving
        valid = np.arange(longest)[:, None] < np.asarray(lengths)[None, :]
        out = xp.swapaxes(gathered, 0, 1)[xp.asarray(valid)][:dataset_len]
    return Tensor._make(out) if isinstance(tensor, Tensor) else out


# ------------------------------------------------------------------------- checkpoints

def save_on_rank0(obj, path, group=None):
    """``ddp.save(obj, path)`` on rank 0; returns on every rank once the file is written (an
    error on rank 0 is raised on every rank instead of leaving them waiting).

    Example:
        >>> model, epoch = nn.Linear(2, 1), 3
        >>> dist.save_on_rank0({"model": model.state_dict(), "epoch": epoch}, tmp_path / "ckpt.pt")
        >>> state = dist.load_on_every_rank(tmp_path / "ckpt.pt")
        >>> state["epoch"]
        3
    """
    from ..serialization import save
    comm = _comm(group)
    if comm is None:
        save(obj, path)
        return
    error = None
    if comm.rank == 0:
        try:
            save(obj, path)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            comm.bcast_obj(error, 0)
            raise
    error = comm.bcast_obj(error, 0)     # also the barrier: nobody returns before the write
    if error is not None:
        raise RuntimeError(f"save_on_rank0: rank 0 could not save {path!s}: {error}")


def load_on_every_rank(path, map_location=None, group=None, **kwargs):
    """Wait for every rank (so a file written by :func:`save_on_rank0` or rank 0 is complete),
    then ``ddp.load(path, map_location)`` on each rank. Extra keywords go to ``ddp.load``.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> dist.save_on_rank0({"model": model.state_dict()}, tmp_path / "ckpt.pt")
        >>> model.load_state_dict(dist.load_on_every_rank(tmp_path / "ckpt.pt")["model"])
        <All keys matched successfully>
    """
    from ..serialization import load
    comm = _comm(group)
    if comm is not None:
        comm.Barrier()
    return load(path, map_location=map_location, **kwargs)

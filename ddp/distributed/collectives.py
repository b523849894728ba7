"""The collectives of ``ddp.distributed`` on tensors, in place, with PyTorch's signatures,
and the same for picklable Python objects. Each finds its group's communicator through
``process_group`` and calls one method of the :class:`~ddp.distributed.communicator.Communicator`
interface.

Example:
    >>> import ddp.distributed as dist
    >>> started = not dist.is_initialized()
    >>> if started: _ = dist.init_process_group("single")
    >>> t = ddp.ones(2)
    >>> dist.all_reduce(t); t.tolist()
    [1.0, 1.0]
    >>> if started: dist.destroy_process_group()
"""
from __future__ import annotations

import os

from ..backend import get_array_module
from ..tensor import Tensor
from .consistency import signature
from .process_group import ReduceOp, _group

__all__ = ["barrier", "all_reduce", "broadcast", "reduce", "all_gather", "all_gather_into_tensor",
           "reduce_scatter", "reduce_scatter_tensor", "gather", "scatter",
           "broadcast_object_list", "all_gather_object", "gather_object"]


def _array(tensor, name):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name}: expected a ddp Tensor, got {type(tensor).__name__}")
    return tensor._data


def _run(pg, async_op, fn, *args, what=None):
    """Run a collective now, or hand it to the communication thread when ``async_op``
    (``what``: its signature, for the stall inspector's reports)."""
    if async_op:
        if what is not None:
            def job():
                return fn(*args)
            job.signature = (what[0] + " (async)",) + what[1:]
            return pg.comm.submit(job)
        return pg.comm.submit(fn, *args)
    fn(*args)
    return None


def _check_debug(pg, name, *arrays):
    """The collective's signature. In debug mode (``DDP_DEBUG=1``, set by ``launcher --debug``)
    every rank also checks that all ranks call the same collective with the same shapes and
    dtypes, and errors otherwise (the communicator's own check, ``consistency``, covers the
    same in every mode with a 16-byte fingerprint; this one gathers every signature)."""
    sig = signature(name, *arrays)
    if os.environ.get("DDP_DEBUG") != "1" or pg.comm.size == 1:
        return sig
    sigs = pg.comm.allgather_obj(sig)
    if any(s != sigs[0] for s in sigs):
        lines = "\n".join(f"  rank {pg.ranks[r]}: {s}" for r, s in enumerate(sigs))
        raise RuntimeError(f"ranks called different collectives (or with different shapes):\n"
                           f"{lines}")
    return sig


def _divide_for_avg(arr, n):
    if arr.dtype.kind not in "fV":
        raise RuntimeError("all_reduce: ReduceOp.AVG needs a floating point tensor")
    arr /= n


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` across ranks in place; every rank gets the result.

    Example:
        >>> dist.init_process_group()
        >>> t = ddp.tensor([float(dist.get_rank())]); dist.all_reduce(t, op=dist.ReduceOp.MAX)
        >>> t.item() == dist.get_world_size() - 1      # the highest rank, on every rank
        True
    """
    pg = _group(group)
    arr = _array(tensor, "all_reduce")
    what = _check_debug(pg, "all_reduce", arr)

    def run():
        pg.comm.Allreduce(arr, "sum" if op == ReduceOp.AVG else op)
        if op == ReduceOp.AVG:
            _divide_for_avg(arr, pg.comm.size)
        return [tensor]  # a Work's value, as PyTorch's future gives
    return _run(pg, async_op, run, what=what)


def broadcast(tensor, src=0, group=None, async_op=False):
    """Copy ``tensor`` from global rank ``src`` to every rank of the group, in place."""
    pg = _group(group)
    arr = _array(tensor, "broadcast")
    what = _check_debug(pg, "broadcast", arr)
    root = pg.ranks.index(src)
    return _run(pg, async_op, pg.comm.Bcast, arr, root, what=what)


def reduce(tensor, dst=0, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` across ranks; only global rank ``dst`` gets the result."""
    pg = _group(group)
    arr = _array(tensor, "reduce")
    what = _check_debug(pg, "reduce", arr)
    root = pg.ranks.index(dst)

    def run():
        pg.comm.Reduce(arr, "sum" if op == ReduceOp.AVG else op, root)
        if op == ReduceOp.AVG and pg.comm.rank == root:
            _divide_for_avg(arr, pg.comm.size)
    return _run(pg, async_op, run, what=what)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """Fill ``tensor_list[r]`` with rank r's ``tensor`` on every rank."""
    pg = _group(group)
    arr = _array(tensor, "all_gather")
    if len(tensor_list) != pg.comm.size:
        raise ValueError(f"all_gather: tensor_list has {len(tensor_list)} entries for a group of "
                         f"{pg.comm.size} ranks")
    for t in tensor_list:
        if tuple(t.shape) != tuple(arr.shape) or t._data.dtype != arr.dtype:
            raise ValueError(f"all_gather: every output must have the input's shape "
                             f"{tuple(arr.shape)} and dtype, got {tuple(t.shape)} {t.dtype}")
    what = _check_debug(pg, "all_gather", arr)

    def run():
        recv = get_array_module(arr).empty((pg.comm.size,) + arr.shape, arr.dtype)
        pg.comm.Allgather(arr, recv)
        for t, part in zip(tensor_list, recv):
            t._data[...] = part
    return _run(pg, async_op, run, what=what)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
    """Concatenate every rank's ``input_tensor`` along dim 0 into ``output_tensor``."""
    pg = _group(group)
    arr, out = _array(input_tensor, "all_gather_into_tensor"), _array(output_tensor, "")
    if out.size != arr.size * pg.comm.size:
        raise ValueError(f"all_gather_into_tensor: output has {out.size} elements, expected "
                         f"{pg.comm.size} x {arr.size}")
    what = _check_debug(pg, "all_gather_into_tensor", arr)
    return _run(pg, async_op,
                lambda: pg.comm.Allgather(arr, out.reshape((pg.comm.size,) + arr.shape)),
                what=what)


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``input`` (world_size blocks along dim 0) across ranks; rank r keeps block r."""
    pg = _group(group)
    arr, out = _array(input, "reduce_scatter_tensor"), _array(output, "")
    if arr.size != out.size * pg.comm.size:
        raise ValueError(f"reduce_scatter_tensor: input has {arr.size} elements, expected "
                         f"{pg.comm.size} x {out.size}")
    what = _check_debug(pg, "reduce_scatter", arr)

    def run():
        pg.comm.Reduce_scatter(arr.reshape((pg.comm.size,) + out.shape), out,
                               "sum" if op == ReduceOp.AVG else op)
        if op == ReduceOp.AVG:
            _divide_for_avg(out, pg.comm.size)
    return _run(pg, async_op, run, what=what)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce the list ``input_list`` (one tensor per rank) across ranks; rank r keeps entry r."""
    from .._functions import stack
    pg = _group(group)
    if len(input_list) != pg.comm.size:
        raise ValueError(f"reduce_scatter: input_list has {len(input_list)} entries for a group of "
                         f"{pg.comm.size} ranks")
    return reduce_scatter_tensor(output, stack([t.detach() for t in input_list]), op, group,
                                 async_op)


def gather(tensor, gather_list=None, dst=0, group=None, async_op=False):
    """Global rank ``dst`` receives every rank's ``tensor`` into ``gather_list``."""
    pg = _group(group)
    arr = _array(tensor, "gather")
    root = pg.ranks.index(dst)
    if pg.comm.rank == root and (gather_list is None or len(gather_list) != pg.comm.size):
        raise ValueError(f"gather: the destination rank needs a gather_list of {pg.comm.size} "
                         f"tensors")
    what = _check_debug(pg, "gather", arr)

    def run():
        recv = get_array_module(arr).empty((pg.comm.size,) + arr.shape, arr.dtype) \
            if pg.comm.rank == root else None
        pg.comm.Gather(arr, recv, root)
        if recv is not None:
            for t, part in zip(gather_list, recv):
                t._data[...] = part
    return _run(pg, async_op, run, what=what)


def scatter(tensor, scatter_list=None, src=0, group=None, async_op=False):
    """Rank r receives ``scatter_list[r]`` of global rank ``src`` into ``tensor``."""
    from .._functions import stack
    pg = _group(group)
    arr = _array(tensor, "scatter")
    root = pg.ranks.index(src)
    send = None
    if pg.comm.rank == root:
        if scatter_list is None or len(scatter_list) != pg.comm.size:
            raise ValueError(f"scatter: the source rank needs a scatter_list of {pg.comm.size} "
                             f"tensors")
        send = stack([t.detach() for t in scatter_list])._data
    what = _check_debug(pg, "scatter", arr)
    return _run(pg, async_op, lambda: pg.comm.Scatter(send, arr, root), what=what)


def barrier(group=None, async_op=False, device_ids=None):
    """Wait until every rank of the group has reached this call."""
    pg = _group(group)
    return _run(pg, async_op, pg.comm.Barrier)


# ---------------------------------------------------------------------- Python objects

def broadcast_object_list(object_list, src=0, group=None, device=None):
    """Replace ``object_list``'s items on every rank by global rank ``src``'s (picklable)."""
    pg = _group(group)
    objs = pg.comm.bcast_obj(list(object_list) if pg.comm.rank == pg.ranks.index(src) else None,
                             pg.ranks.index(src))
    object_list[:] = objs


def all_gather_object(object_list, obj, group=None):
    """Fill ``object_list`` with every rank's ``obj`` (picklable), in rank order."""
    pg = _group(group)
    gathered = pg.comm.allgather_obj(obj)
    if len(object_list) != len(gathered):
        raise ValueError(f"all_gather_object: object_list has {len(object_list)} entries for a "
                         f"group of {len(gathered)} ranks")
    object_list[:] = gathered


def gather_object(obj, object_gather_list=None, dst=0, group=None):
    """Global rank ``dst`` receives every rank's ``obj`` into ``object_gather_list``."""
    pg = _group(group)
    gathered = pg.comm.gather_obj(obj, pg.ranks.index(dst))
    if pg.comm.rank == pg.ranks.index(dst):
        object_gather_list[:] = gathered

"""``ddp.distributed``: process groups and collectives with PyTorch's API, over MPI.

``init_process_group()`` picks MPI when the script was started by an MPI launcher with more
than one rank, and a single-rank communicator otherwise, so the same script runs as
``python train.py`` (debug mode: collectives are no-ops) and ``mpirun -n 4 launcher train.py``.
Collectives work in place on tensors (CPU, or CUDA staged through host memory), like
``torch.distributed``'s; they are not recorded by autograd.

Example:
    >>> import ddp.distributed as dist
    >>> dist.init_process_group()
    >>> t = ddp.ones(3) * dist.get_rank()
    >>> dist.all_reduce(t, op=dist.ReduceOp.SUM)   # every rank now holds the sum of ranks
"""
from __future__ import annotations

import os
import warnings

from ..backend import get_array_module
from ..tensor import Tensor
from .communicator import Communicator, SingleCommunicator, Work

__all__ = ["ReduceOp", "ProcessGroup", "GroupMember", "Work", "init_process_group",
           "is_initialized", "is_available", "is_mpi_available", "is_nccl_available",
           "destroy_process_group", "get_rank", "get_world_size", "get_local_rank",
           "get_local_world_size", "get_backend", "new_group", "barrier", "all_reduce",
           "broadcast", "reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter",
           "reduce_scatter_tensor", "gather", "scatter", "broadcast_object_list",
           "all_gather_object", "gather_object", "get_communicator"]


class ReduceOp:
    """Reduction operations for :func:`all_reduce` and friends (PyTorch's names)."""
    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"


class ProcessGroup:
    """A set of ranks with its communicator; ``ranks`` are global ranks in group order."""

    def __init__(self, comm: Communicator, ranks, backend_name):
        self.comm = comm
        self.ranks = list(ranks)
        self.backend = backend_name

    def rank(self):
        return self.comm.rank

    def size(self):
        return self.comm.size

    def __repr__(self):
        return f"ProcessGroup(backend={self.backend!r}, ranks={self.ranks})"


class GroupMember:
    WORLD = None                      # means "the default group" where a group is expected
    NON_GROUP_MEMBER = object()       # what new_group returns on ranks outside the group


_world: ProcessGroup | None = None


def is_available() -> bool:
    return True


def is_mpi_available() -> bool:
    try:
        import mpi4py  # noqa: F401
        return True
    except ImportError:
        return False


def is_nccl_available() -> bool:
    return False


def _mpi_already_running():
    import sys
    MPI = sys.modules.get("mpi4py.MPI")
    return MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized() \
        and MPI.COMM_WORLD.Get_size() > 1


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1,
                       store=None, group_name="", pg_options=None, device_id=None):
    """Create the default process group.

    ``backend``: None or 'auto' (MPI when launched by an MPI launcher with several ranks, else a
    single-rank group), 'mpi', or 'single'. PyTorch's 'gloo' means MPI here; 'nccl' uses MPI
    with host staging until the NCCL communicator lands (with a warning).

    Example:
        >>> dist.init_process_group()          # same line under mpirun and under plain python
    """
    global _world
    if _world is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    name = (backend or "auto").lower()
    if name == "nccl":
        warnings.warn("the NCCL backend is not available yet; using MPI with host staging",
                      stacklevel=2)
        name = "mpi"
    if name == "gloo":
        name = "mpi"
    if name == "auto":
        from .mpi import launched_by_mpi
        name = "mpi" if (launched_by_mpi() or _mpi_already_running()) else "single"
    if name == "mpi":
        from .mpi import MPICommunicator
        comm = MPICommunicator()
    elif name == "single":
        comm = SingleCommunicator()
    else:
        raise ValueError(f"init_process_group: unknown backend {backend!r}; expected 'mpi', "
                         f"'single', 'gloo', 'nccl' or None")
    if world_size not in (-1, comm.size):
        raise ValueError(f"init_process_group: world_size={world_size} but the launcher started "
                         f"{comm.size} ranks")
    if rank not in (-1, comm.rank):
        raise ValueError(f"init_process_group: rank={rank} but MPI gave this process rank "
                         f"{comm.rank}")
    _world = ProcessGroup(comm, range(comm.size), name)
    return _world


def is_initialized() -> bool:
    """True once :func:`init_process_group` has run (and before ``destroy_process_group``)."""
    return _world is not None


def _group(group) -> ProcessGroup:
    if _world is None:
        raise RuntimeError("Default process group has not been initialized, please make sure to "
                           "call init_process_group.")
    if group is None or group is GroupMember.WORLD:
        return _world
    if group is GroupMember.NON_GROUP_MEMBER:
        raise RuntimeError("this rank is not a member of the group")
    return group


def get_communicator(group=None) -> Communicator:
    """The communicator behind a group (for the DDP reducer and advanced use)."""
    return _group(group).comm


def destroy_process_group(group=None):
    """Release a group (the default group and everything else when ``group`` is None)."""
    global _world
    if group is None or group is _world:
        if _world is not None:
            _world.comm.free()
        _world = None
    elif group is not GroupMember.NON_GROUP_MEMBER:
        group.comm.free()


def get_rank(group=None) -> int:
    """This process's rank in ``group`` (0 when no group was initialised, as a single rank)."""
    if _world is None and group is None:
        return 0
    if group is GroupMember.NON_GROUP_MEMBER:
        return -1
    return _group(group).comm.rank


def get_world_size(group=None) -> int:
    if _world is None and group is None:
        return 1
    if group is GroupMember.NON_GROUP_MEMBER:
        return -1
    return _group(group).comm.size


def get_local_rank() -> int:
    """This process's rank among the ranks on its machine (from MPI's shared-memory split)."""
    return 0 if _world is None else _world.comm.local_rank


def get_local_world_size() -> int:
    return 1 if _world is None else _world.comm.local_size


def get_backend(group=None) -> str:
    return _group(group).backend


def get_global_rank(group, group_rank) -> int:
    return _group(group).ranks[group_rank]


def get_group_rank(group, global_rank) -> int:
    return _group(group).ranks.index(global_rank)


def new_group(ranks=None, timeout=None, backend=None, pg_options=None, use_local_synchronization=False):
    """A sub-group of the default group; every rank must call it with the same ``ranks``.
    Ranks outside it get ``GroupMember.NON_GROUP_MEMBER``.

    Example:
        >>> evens = dist.new_group([r for r in range(dist.get_world_size()) if r % 2 == 0])
    """
    world = _group(None)
    ranks = sorted(set(range(world.comm.size) if ranks is None else ranks))
    for r in ranks:
        if not 0 <= r < world.comm.size:
            raise ValueError(f"new_group: rank {r} is not in the world of size {world.comm.size}")
    comm = world.comm.split(ranks)
    if comm is None:
        return GroupMember.NON_GROUP_MEMBER
    return ProcessGroup(comm, ranks, world.backend)


# ---------------------------------------------------------------------- collectives

def _array(tensor, name):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name}: expected a ddp Tensor, got {type(tensor).__name__}")
    return tensor._data


def _run(pg, async_op, fn, *args):
    """Run a collective now, or hand it to the communication thread when ``async_op``."""
    if async_op:
        return pg.comm.submit(fn, *args)
    fn(*args)
    return None


def _check_debug(pg, name, *arrays):
    """In debug mode (``DDP_DEBUG=1``, set by ``launcher --debug``) every rank checks that all
    ranks call the same collective with the same shapes and dtypes, and errors otherwise."""
    if os.environ.get("DDP_DEBUG") != "1" or pg.comm.size == 1:
        return
    sig = (name,) + tuple((tuple(a.shape), str(a.dtype)) for a in arrays if a is not None)
    sigs = pg.comm.allgather_obj(sig)
    if any(s != sigs[0] for s in sigs):
        lines = "\n".join(f"  rank {pg.ranks[r]}: {s}" for r, s in enumerate(sigs))
        raise RuntimeError(f"ranks called different collectives (or with different shapes):\n"
                           f"{lines}")


def _divide_for_avg(arr, n):
    if arr.dtype.kind not in "fV":
        raise RuntimeError("all_reduce: ReduceOp.AVG needs a floating point tensor")
    arr /= n


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` across ranks in place; every rank gets the result.

    Example:
        >>> t = ddp.tensor([float(dist.get_rank())]); dist.all_reduce(t, op=dist.ReduceOp.MAX)
    """
    pg = _group(group)
    arr = _array(tensor, "all_reduce")
    _check_debug(pg, "all_reduce", arr)

    def run():
        pg.comm.Allreduce(arr, "sum" if op == ReduceOp.AVG else op)
        if op == ReduceOp.AVG:
            _divide_for_avg(arr, pg.comm.size)
        return [tensor]  # a Work's value, as PyTorch's future gives
    return _run(pg, async_op, run)


def broadcast(tensor, src=0, group=None, async_op=False):
    """Copy ``tensor`` from global rank ``src`` to every rank of the group, in place."""
    pg = _group(group)
    arr = _array(tensor, "broadcast")
    _check_debug(pg, "broadcast", arr)
    root = pg.ranks.index(src)
    return _run(pg, async_op, pg.comm.Bcast, arr, root)


def reduce(tensor, dst=0, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` across ranks; only global rank ``dst`` gets the result."""
    pg = _group(group)
    arr = _array(tensor, "reduce")
    _check_debug(pg, "reduce", arr)
    root = pg.ranks.index(dst)

    def run():
        pg.comm.Reduce(arr, "sum" if op == ReduceOp.AVG else op, root)
        if op == ReduceOp.AVG and pg.comm.rank == root:
            _divide_for_avg(arr, pg.comm.size)
    return _run(pg, async_op, run)


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
    _check_debug(pg, "all_gather", arr)

    def run():
        recv = get_array_module(arr).empty((pg.comm.size,) + arr.shape, arr.dtype)
        pg.comm.Allgather(arr, recv)
        for t, part in zip(tensor_list, recv):
            t._data[...] = part
    return _run(pg, async_op, run)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
    """Concatenate every rank's ``input_tensor`` along dim 0 into ``output_tensor``."""
    pg = _group(group)
    arr, out = _array(input_tensor, "all_gather_into_tensor"), _array(output_tensor, "")
    if out.size != arr.size * pg.comm.size:
        raise ValueError(f"all_gather_into_tensor: output has {out.size} elements, expected "
                         f"{pg.comm.size} x {arr.size}")
    _check_debug(pg, "all_gather_into_tensor", arr)
    return _run(pg, async_op, lambda: pg.comm.Allgather(arr, out.reshape((pg.comm.size,) + arr.shape)))


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``input`` (world_size blocks along dim 0) across ranks; rank r keeps block r."""
    pg = _group(group)
    arr, out = _array(input, "reduce_scatter_tensor"), _array(output, "")
    if arr.size != out.size * pg.comm.size:
        raise ValueError(f"reduce_scatter_tensor: input has {arr.size} elements, expected "
                         f"{pg.comm.size} x {out.size}")
    _check_debug(pg, "reduce_scatter", arr)

    def run():
        pg.comm.Reduce_scatter(arr.reshape((pg.comm.size,) + out.shape), out,
                               "sum" if op == ReduceOp.AVG else op)
        if op == ReduceOp.AVG:
            _divide_for_avg(out, pg.comm.size)
    return _run(pg, async_op, run)


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
    _check_debug(pg, "gather", arr)

    def run():
        recv = get_array_module(arr).empty((pg.comm.size,) + arr.shape, arr.dtype) \
            if pg.comm.rank == root else None
        pg.comm.Gather(arr, recv, root)
        if recv is not None:
            for t, part in zip(gather_list, recv):
                t._data[...] = part
    return _run(pg, async_op, run)


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
    _check_debug(pg, "scatter", arr)
    return _run(pg, async_op, lambda: pg.comm.Scatter(send, arr, root))


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


from . import algorithms  # noqa: E402,F401  (ddp_comm_hooks; they use the functions above)

from .helpers import (is_main_process, rank_zero_only, print0, RankFilter, setup_rank_logging, all_reduce_metric, reduce_confusion_matrix, save_on_rank0, load_on_every_rank, gather_for_eval)  # noqa: E402,F401  rank-aware helpers

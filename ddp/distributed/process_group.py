"""The process groups: the default group (``init_process_group``), sub-groups, ranks.

The state of ``ddp.distributed`` lives here, in one module: the collectives
(``collectives.py``) and the rank-aware helpers (``helpers.py``) read it through
:func:`get_communicator`/:func:`is_initialized`, and ``ddp.distributed`` hands the names on.

Example:
    >>> from ddp.distributed import process_group
    >>> process_group.get_world_size() >= 1
    True
"""
from __future__ import annotations


from . import environment
from .communicator import Communicator, backend_names, new_communicator

__all__ = ["ReduceOp", "ProcessGroup", "GroupMember", "init_process_group", "is_initialized",
           "is_available", "is_mpi_available", "is_nccl_available", "destroy_process_group",
           "get_rank", "get_world_size", "get_local_rank", "get_local_world_size", "get_backend",
           "get_global_rank", "get_group_rank", "new_group", "get_communicator"]


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


def _nccl_communicator(device_id=None, explicit=True) -> Communicator:
    """The communicator of ``backend="nccl"`` (the registry's "nccl" entry). Refuses a process
    without a GPU: NCCL moves CUDA memory only."""
    from .. import backend
    if not backend.cuda_is_available():
        raise RuntimeError("init_process_group(backend='nccl'): NCCL needs a CUDA GPU and this "
                           "process sees none (ddp.cuda.is_available() is False); on CPU use "
                           "backend='gloo' or 'mpi', or leave backend unset")
    from . import nccl
    return nccl.create(device_id, explicit=explicit)


def _rank_has_a_gpu(device_id):
    """Whether this rank was given a GPU of its own: by ``device_id`` or by the launcher's
    pinning (``DDP_DEVICE=cuda:N``). NCCL is then the default for its CUDA tensors."""
    import os
    from .. import backend
    pinned = device_id is not None or os.environ.get("DDP_DEVICE", "").startswith("cuda")
    return pinned and backend.cuda_is_available()


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1,
                       store=None, group_name="", pg_options=None, device_id=None):
    """Create the default process group.

    ``backend``: None or 'auto' (MPI when launched by an MPI launcher with several ranks, and
    NCCL for CUDA tensors when the launcher pinned this rank to a GPU of its own; else a
    single-rank group), 'mpi', 'gloo' (PyTorch's CPU backend: MPI here, no warning), 'nccl'
    (ddp.distributed.nccl; needs a GPU, an error without one; ranks that share a GPU fall back
    to MPI with a warning), 'single', or a name given to
    ``communicator.register_backend``. A process that the environment describes as one of
    several ranks outside an MPI job (started by ``torchrun``: ``WORLD_SIZE=2``, no MPI), or
    whose ``WORLD_SIZE`` differs from MPI's, is refused with an error that says to use
    ``launcher`` (``ddp.distributed.environment.check``): it would otherwise train alone.

    Example:
        >>> dist.init_process_group()          # same line under mpirun and under plain python
    """
    global _world
    if _world is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    name = (backend or "auto").lower()
    if name == "gloo":
        name = "mpi"
    if name not in ("auto", *backend_names()):
        raise ValueError(f"init_process_group: unknown backend {backend!r}; expected 'mpi', "
                         f"'single', 'gloo', 'nccl' or None")
    job = environment.check()
    explicit = name == "nccl"
    if name == "auto":
        name = "mpi" if (job.in_mpi_job or _mpi_already_running()) else "single"
        if name == "mpi" and _rank_has_a_gpu(device_id):
            name = "nccl"   # PyTorch's default: NCCL for CUDA tensors (MPI for the rest)
    comm = _nccl_communicator(device_id, explicit) if name == "nccl" else new_communicator(name)
    environment.check(mpi_size=comm.size)
    if world_size not in (-1, comm.size):
        raise ValueError(f"init_process_group: world_size={world_size} but the launcher started "
                         f"{comm.size} ranks")
    if rank not in (-1, comm.rank):
        raise ValueError(f"init_process_group: rank={rank} but MPI gave this process rank "
                         f"{comm.rank}")
    _world = ProcessGroup(comm, range(comm.size),
                          "gloo" if (backend or "").lower() == "gloo" else name)
    # returns None, as torch.distributed.init_process_group does


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
        >>> dist.init_process_group()
        >>> evens = dist.new_group([r for r in range(dist.get_world_size()) if r % 2 == 0])
        >>> dist.get_world_size(evens) == (dist.get_world_size() + 1) // 2
        True
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

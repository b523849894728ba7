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
    >>> t.tolist() == [float(sum(range(dist.get_world_size())))] * 3
    True
"""
from .communicator import Communicator, SingleCommunicator, Work, register_backend  # noqa: F401
from .process_group import (ReduceOp, ProcessGroup, GroupMember, init_process_group,  # noqa: F401
                            is_initialized, is_available, is_mpi_available, is_nccl_available,
                            destroy_process_group, get_rank, get_world_size, get_local_rank,
                            get_local_world_size, get_backend, get_global_rank, get_group_rank,
                            new_group, get_communicator)
from .collectives import (barrier, all_reduce, broadcast, reduce, all_gather,  # noqa: F401
                          all_gather_into_tensor, reduce_scatter, reduce_scatter_tensor, gather,
                          scatter, broadcast_object_list, all_gather_object, gather_object)
from . import algorithms  # noqa: E402,F401  (ddp_comm_hooks, Join)
from .helpers import (is_main_process, rank_zero_only, print0, RankFilter,  # noqa: F401
                      setup_rank_logging, all_reduce_metric, reduce_confusion_matrix,
                      save_on_rank0, load_on_every_rank, gather_for_eval)

__all__ = ["ReduceOp", "ProcessGroup", "GroupMember", "Work", "init_process_group",
           "is_initialized", "is_available", "is_mpi_available", "is_nccl_available",
           "destroy_process_group", "get_rank", "get_world_size", "get_local_rank",
           "get_local_world_size", "get_backend", "new_group", "barrier", "all_reduce",
           "broadcast", "reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter",
           "reduce_scatter_tensor", "gather", "scatter", "broadcast_object_list",
           "all_gather_object", "gather_object", "get_communicator"]

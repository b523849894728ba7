"""Algorithms on top of the collectives: ``ddp_comm_hooks`` (DDP communication hooks) and
``Join`` (training with uneven inputs)."""
from . import ddp_comm_hooks  # noqa: F401
from .join import Join, Joinable, JoinHook  # noqa: F401

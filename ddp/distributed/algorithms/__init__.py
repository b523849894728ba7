"""Algorithms on top of the collectives (``ddp_comm_hooks``: DDP communication hooks)."""
from . import ddp_comm_hooks  # noqa: F401

"""Training with uneven inputs: PyTorch's generic join context manager.

When ranks hold different numbers of batches, a rank that runs out would leave the others
blocked in their next collective. Inside ``with Join([model, ...]):`` a rank that has left its
loop *joins*: until every rank has joined it keeps entering, once per iteration of the others,
the collectives they issue (each :class:`Joinable` says which through its :class:`JoinHook`),
so they finish their batches; then every hook's ``post_hook`` runs (DDP's copies the model of a
rank that joined last to every rank, so training ends with identical parameters).

The protocol (as ``torch.distributed.algorithms.join``): at the start of each iteration every
rank that has not joined calls :meth:`Join.notify_join_context` (DDP does, from its forward),
an allreduce of 1; joined ranks allreduce 0 in the same place and learn how many ranks still
train. With ``throw_on_early_termination=True`` the first rank to run out makes every rank
raise instead (for loops with collectives the hooks do not know about, e.g. SyncBatchNorm).

Example:
    >>> dist.init_process_group()
    >>> model = nn.parallel.DistributedDataParallel(nn.Linear(4, 2))
    >>> opt = ddp.optim.SGD(model.parameters(), lr=0.1)
    >>> my_batches = [(ddp.randn(8, 4), ddp.randn(8, 2))] * (2 + dist.get_rank())
    >>> with Join([model]):                  # or: with model.join():
    ...     for x, y in my_batches:          # a different number on every rank
    ...         F.mse_loss(model(x), y).backward(); opt.step(); opt.zero_grad()
"""
from __future__ import annotations

import abc
import warnings
from typing import Any, NamedTuple

from ...creation import ones, zeros
from ..collectives import all_reduce
from ..process_group import get_rank

__all__ = ["JoinHook", "Joinable", "Join"]


class JoinHook:
    """What a joined rank does for one :class:`Joinable`: ``main_hook()`` once per iteration of
    the ranks still training (enter the collectives of one forward, backward and step), and
    ``post_hook(is_last_joiner)`` once every rank has joined."""

    def main_hook(self) -> None:
        """Shadow the collectives of one training iteration of the ranks still training."""

    def post_hook(self, is_last_joiner: bool) -> None:
        """Called once all ranks have joined; ``is_last_joiner`` is True on the ranks that
        joined last."""


class _JoinConfig(NamedTuple):
    enable: bool
    throw_on_early_termination: bool
    is_first_joinable: bool

    @staticmethod
    def construct_disabled_join_config():
        return _JoinConfig(enable=False, throw_on_early_termination=False,
                           is_first_joinable=False)


class Joinable(abc.ABC):
    """A class that takes part in :class:`Join`: it gives a :meth:`join_hook`, the device and
    the process group of the join bookkeeping, and calls :meth:`Join.notify_join_context`
    before its per-iteration collectives."""

    @abc.abstractmethod
    def __init__(self):
        super().__init__()
        self._join_config = _JoinConfig.construct_disabled_join_config()

    @abc.abstractmethod
    def join_hook(self, **kwargs) -> JoinHook:
        """The :class:`JoinHook` for this joinable (``kwargs`` are the Join's keywords)."""

    @property
    @abc.abstractmethod
    def join_device(self):
        """The device of the tensors the join bookkeeping allreduces."""

    @property
    @abc.abstractmethod
    def join_process_group(self) -> Any:
        """The process group of the join bookkeeping (that of the joinable's collectives)."""


class Join:
    """The join context manager (PyTorch's ``torch.distributed.algorithms.Join``).

    ``joinables``: the participating :class:`Joinable` objects (their hooks run in this order;
    they must share one process group). ``enable=False`` turns it into a no-op (inputs known
    to be even). ``throw_on_early_termination=True``: every rank raises ``RuntimeError`` as
    soon as one runs out of inputs. Other keywords go to each ``join_hook`` (DDP's:
    ``divide_by_initial_world_size``).

    Example:
        >>> dist.init_process_group()
        >>> model = nn.parallel.DistributedDataParallel(nn.Linear(3, 1))
        >>> batches_of_this_rank = [ddp.randn(5, 3) for _ in range(3 + dist.get_rank())]
        >>> with Join([model], throw_on_early_termination=False):
        ...     for batch in batches_of_this_rank:
        ...         model(batch).sum().backward()
    """

    def __init__(self, joinables, enable=True, throw_on_early_termination=False, **kwargs):
        if len(joinables) == 0:
            raise ValueError("The join context manager requires at least one joinable")
        self._joinables = list(joinables)
        self._join_hooks = [j.join_hook(**kwargs) for j in self._joinables]
        self._enable = enable
        self._throw_on_early_termination = throw_on_early_termination
        self._set_joinable_configs()
        self._extract_dist_info()

    def _set_joinable_configs(self):
        first = True
        for joinable in self._joinables:
            joinable._join_config = _JoinConfig(enable=self._enable,
                                                throw_on_early_termination=
                                                self._throw_on_early_termination,
                                                is_first_joinable=first)
            first = False

    def _extract_dist_info(self):
        process_group = device = None
        for joinable in self._joinables:
            if process_group is None:
                process_group = joinable.join_process_group
            elif process_group is not joinable.join_process_group:
                raise ValueError("Using join context manager with multiple process groups")
            if device is None:
                device = joinable.join_device
        self._process_group = process_group
        self._rank = get_rank(process_group)
        self._device = device

    def __enter__(self):
        return None

    def __exit__(self, type, value, traceback):
        """Run the main hooks until every rank has joined, then the post-hooks."""
        try:
            if not self._enable or type:
                return  # an exception propagates as it is
            all_joined, is_last_joiner, i = False, True, 0
            while not all_joined:
                if i > 1000:
                    warnings.warn(f"Detected uneven input skew of greater than 1000. This means "
                                  f"that rank {self._rank} has at least 1000 fewer inputs than "
                                  f"other currently-active ranks. This level of skew could lead "
                                  f"to performance degradation during training.", stacklevel=2)
                if self._get_num_nonjoined_procs() == 0:
                    all_joined = True
                else:
                    if self._throw_on_early_termination:
                        self._notify_procs_to_terminate()
                    for hook in self._join_hooks:
                        hook.main_hook()
                    is_last_joiner = False
                    i += 1
            for hook in self._join_hooks:
                hook.post_hook(is_last_joiner)
        finally:
            for joinable in self._joinables:  # outside the context DDP does no bookkeeping
                joinable._join_config = _JoinConfig.construct_disabled_join_config()

    def _get_num_nonjoined_procs(self):
        count = zeros(1, device=self._device)
        all_reduce(count, group=self._process_group)
        return int(count.item())

    def _notify_procs_to_terminate(self):
        all_reduce(ones(1, device=self._device), group=self._process_group)
        raise RuntimeError(f"Rank {self._rank} exhausted all inputs.")

    @staticmethod
    def notify_join_context(joinable):
        """Tell the join context that this rank has not joined: an allreduce of 1 (only the
        first joinable of a context issues it). With ``throw_on_early_termination``, raises
        ``RuntimeError`` on every rank once some rank has run out of inputs. Returns the
        allreduce's :class:`Work`, or None when there is nothing to do."""
        if not hasattr(joinable, "_join_config"):
            raise AssertionError(f"Check that the {type(joinable)} constructor calls the "
                                 f"``Joinable`` constructor")
        config = joinable._join_config
        if not config.is_first_joinable or not config.enable:
            return None
        device, group = joinable.join_device, joinable.join_process_group
        work = all_reduce(ones(1, device=device), group=group, async_op=True)
        if config.throw_on_early_termination:
            flag = zeros(1, device=device)
            all_reduce(flag, group=group)
            if flag.item():
                raise RuntimeError("Detected at least one rank that exhausted inputs. Throwing "
                                   "across all ranks.")
        return work

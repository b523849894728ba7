"""``DistributedDataParallel``: data parallelism over the ranks of a process group."""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager


from ... import backend
from ...autograd.grad_mode import is_grad_enabled, no_grad
from ...creation import tensor as _tensor
from ...distributed.algorithms.join import Join, JoinHook, Joinable
from ...distributed.collectives import all_reduce
from ...distributed.process_group import ProcessGroup, ReduceOp, _group, is_initialized
from ...distributed.reducer import Reducer
from ...tensor import Tensor
from ..module import Module
from ..parameter import is_lazy


class DistributedDataParallel(Module, Joinable):
    """Wraps ``module`` so that every rank trains the same model on its own shard of the data.

    The contract, as PyTorch's:

    - **Same start**: at construction rank 0's parameters and buffers are broadcast to every
      rank (after checking that all ranks hold the same parameter names, shapes and dtypes —
      a mismatch is an error naming the first difference on every rank).
    - **Same parameter order** on every rank (the same model code).
    - **Averaged gradients**: during ``loss.backward()`` gradients are packed into buckets
      whose allreduces start as soon as each bucket is complete, overlapping the rest of
      backward; when backward returns, every parameter's ``.grad`` holds the mean over ranks,
      so identical optimizers take identical steps.
    - ``no_sync()`` skips the communication (gradients accumulate locally) until the next
      synchronised backward; parameters with ``requires_grad=False`` are left out;
      ``find_unused_parameters=True`` allows parameters that get no gradient in an iteration;
      buffers (e.g. BatchNorm running stats) are broadcast from rank 0 before a forward
      when ``broadcast_buffers`` and some rank's buffers changed since the last broadcast
      (every training forward for BatchNorm; never for constant buffers), as learnt from the
      last backward's status. Buffers changed between a backward and the next forward on some
      ranks only are not noticed.
    - ``state_dict()`` has PyTorch's ``module.`` prefix, and loading accepts checkpoints with
      or without it (and the unwrapped module accepts both too).
    - Uneven inputs: inside ``with model.join():`` ranks that run out of batches shadow the
      collectives of the others until all are done (see :meth:`join`).
    - Its collectives travel on a private duplicate of the group's communicator, so a
      collective of the user's can never be matched with a gradient bucket's allreduce (a
      rank in one and a rank in the other wait, and the stall inspector names both).

    Example:
        >>> dist.init_process_group()
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> model = DistributedDataParallel(net)
        >>> optimizer = ddp.optim.SGD(model.parameters(), lr=0.1)
        >>> x_shard, y_shard = ddp.randn(16, 4), ddp.randn(16, 2)       # this rank's batch
        >>> loss = F.mse_loss(model(x_shard), y_shard); loss.backward(); optimizer.step()
    """

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=25.0, find_unused_parameters=False,
                 check_reduction=False, gradient_as_bucket_view=False, static_graph=False):
        super().__init__()
        Joinable.__init__(self)
        if not is_initialized():
            raise RuntimeError("DistributedDataParallel: the default process group has not been "
                               "initialized; call ddp.distributed.init_process_group() first")
        for name, p in module.named_parameters():
            if is_lazy(p):   # PyTorch's message, plus which parameter it is
                raise RuntimeError("Modules with uninitialized parameters can't be used with "
                                   "`DistributedDataParallel`. Run a dummy forward pass to "
                                   f"correctly initialize the modules (parameter {name!r})")
        self.module = module
        self.process_group = process_group
        group = _group(process_group)
        # a communicator of its own: its collectives never match a user's (every rank dups)
        # (unchecked: its shapes are fixed by the model, checked at construction and once per
        # bucket layout, so the gradient allreduces pay no per-collective check)
        self._pg = ProcessGroup(group.comm.dup(label="DDP's communicator", checked=False),
                                group.ranks, group.backend)
        self.comm = self._pg.comm
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view = gradient_as_bucket_view
        self.static_graph = static_graph
        self._divide_by_initial_world_size = True
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError("DistributedDataParallel is not needed when a module doesn't have "
                               "any parameter that requires a gradient.")
        self._check_same_model_everywhere()
        self._sync_from_rank0([p for _, p in module.named_parameters()] +
                              [b for _, b in module.named_buffers()])
        self.reducer = Reducer(named, self.comm, bucket_cap_mb, find_unused_parameters,
                               gradient_as_bucket_view)
        self._buffer_copies = None
        if broadcast_buffers and self.comm.size > 1 and any(True for _ in module.buffers()):
            self._save_buffers()
            self.reducer.buffers_changed = self._buffers_changed
        self._iteration = 0

    # ---------------------------------------------------------------- construction checks
    def _check_same_model_everywhere(self):
        """Every rank must hold the same parameters and buffers: compare with rank 0's."""
        mine = [(n, tuple(t.shape), t.dtype.name, "parameter", t.requires_grad) for n, t in
                self.module.named_parameters()] + \
               [(n, tuple(t.shape), t.dtype.name, "buffer", False)
                for n, t in self.module.named_buffers()]
        if self.comm.size == 1:
            return
        everyone = self.comm.allgather_obj(mine)
        reference = everyone[0]
        for rank, theirs in enumerate(everyone):
            if theirs == reference:
                continue
            for k in range(max(len(theirs), len(reference))):
                a = reference[k] if k < len(reference) else None
                b = theirs[k] if k < len(theirs) else None
                if a != b and a is not None and b is not None and a[:4] == b[:4]:
                    state = lambda e: "requires grad" if e[4] else "is frozen"  # noqa: E731
                    raise RuntimeError(
                        f"DistributedDataParallel: the model differs between ranks: parameter "
                        f"'{a[0]}' {state(a)} on rank 0 but {state(b)} on rank {rank}. Every "
                        f"rank must freeze the same parameters before wrapping the model.")
                if a != b:
                    describe = lambda e: "nothing" if e is None else \
                        f"{e[3]} '{e[0]}' of shape {e[1]} and dtype {e[2]}"  # noqa: E731
                    raise RuntimeError(
                        f"DistributedDataParallel: the model differs between ranks: at position "
                        f"{k}, rank 0 has {describe(a)} but rank {rank} has {describe(b)}. Every "
                        f"rank must build the same model.")

    def _sync_from_rank0(self, tensors, src=0):
        """Broadcast tensors from rank ``src`` (0), packed into one buffer per dtype."""
        if self.comm.size == 1 or not tensors:
            return
        by_dtype = OrderedDict()
        for t in tensors:
            by_dtype.setdefault((t._data.dtype, backend.device_of(t._data)), []).append(t)
        for group in by_dtype.values():
            xp = backend.get_array_module(group[0]._data)
            flat = xp.concatenate([t._data.reshape(-1) for t in group])
            self.comm.Bcast(flat, src)
            start = 0
            with no_grad():
                for t in group:
                    n = t._data.size
                    t._data[...] = flat[start:start + n].reshape(t._data.shape)
                    start += n

    # ---------------------------------------------------------------- forward
    def forward(self, *inputs, **kwargs):
        will_sync = is_grad_enabled() and self.reducer.require_sync
        if self._join_config.enable:
            work = Join.notify_join_context(self)
            if work is not None and not self._divide_by_initial_world_size:
                self.reducer.divisor = int(work.result()[0].item())  # ranks still training
            self._join_flag(will_sync)
        self._pre_forward_collectives(will_sync, joined=False)
        output = self.module(*inputs, **kwargs)
        if will_sync:
            tensors = [t for t in _tensors_in(output) if t.requires_grad]
            unused = self._unused_parameters(tensors) if self.find_unused_parameters else ()
            self.reducer.prepare_for_backward(unused)
            # the first gradient of backward (at an output) arms the end-of-backward callback,
            # even on a rank whose loss reaches no parameter at all
            for t in tensors:
                if t.grad_fn is not None:
                    t.register_hook(self._start_backward)
            self._iteration += 1
        return output

    def _pre_forward_collectives(self, will_sync, joined):
        """The collectives of a forward, entered alike by the ranks that train and (under
        :meth:`join`) by the joined ones: the one-time layout rebuild, then the buffers from
        rank 0 (under join: from the highest rank still training, whose buffers are current)."""
        if will_sync and self._iteration == 1 and not self.static_graph:
            self.reducer.rebuild_from_arrivals()
        buffers = [b for _, b in self.module.named_buffers()]
        if self.broadcast_buffers and self.comm.size > 1 and buffers:
            # only when some rank's buffers changed since the last broadcast (the last
            # backward's status says; the same decision on every rank)
            if self.reducer.buffers_dirty:
                src = self._find_common_rank(not joined) if self._join_config.enable else 0
                self._sync_from_rank0(buffers, src)
                self._save_buffers()
            self.reducer.buffers_dirty = True  # until a synchronised backward says otherwise

    def _save_buffers(self):
        self._buffer_copies = [b._data.copy() for b in self.module.buffers()]

    def _buffers_changed(self):
        """Whether this rank's buffers differ from what the last broadcast left (contents, not
        version counters: any in-place write counts). Buffers are small next to gradients."""
        buffers = list(self.module.buffers())
        if self._buffer_copies is None or len(buffers) != len(self._buffer_copies):
            return True
        for b, c in zip(buffers, self._buffer_copies):
            if b._data.shape != c.shape or b._data.dtype != c.dtype or \
                    not bool(backend.get_array_module(c).array_equal(b._data, c)):
                return True
        return False

    # ---------------------------------------------------------------- uneven inputs
    def join(self, divide_by_initial_world_size=True, enable=True,
             throw_on_early_termination=False):
        """A context manager for training with uneven inputs (PyTorch's ``DDP.join``): a rank
        that leaves its loop early keeps entering the collectives of every forward and backward
        of the others (its gradients count as zeros) until all ranks are done; then the model
        of a rank that finished last is copied to every rank, so all end identical.

        ``divide_by_initial_world_size``: average gradients over the initial world size (every
        sample weighs the same) or, if False, over the ranks still training.
        ``throw_on_early_termination``: raise on every rank as soon as one runs out instead
        (for loops with collectives DDP does not know about, such as SyncBatchNorm's or
        GradScaler's found-inf check across ranks).

        Example:
            >>> dist.init_process_group()
            >>> model = DistributedDataParallel(nn.Linear(4, 2))
            >>> opt = ddp.optim.SGD(model.parameters(), lr=0.1)
            >>> batches = [(ddp.randn(8, 4), ddp.randn(8, 2))] * (2 + dist.get_rank())
            >>> with model.join():
            ...     for x, y in batches:            # ranks may hold different numbers
            ...         F.mse_loss(model(x), y).backward(); opt.step(); opt.zero_grad()
        """
        return Join([self], enable, throw_on_early_termination,
                    divide_by_initial_world_size=divide_by_initial_world_size)

    def join_hook(self, **kwargs):
        """The hook a joined rank runs (keyword: ``divide_by_initial_world_size``)."""
        return _DDPJoinHook(self, kwargs.get("divide_by_initial_world_size", True))

    @property
    def join_device(self):
        for p in self.module.parameters():
            return p.device
        return None

    @property
    def join_process_group(self):
        return self._pg

    def _join_flag(self, will_sync):
        """Under join, tell the joined ranks whether a synchronised backward follows this
        forward; returns whether any rank will run one."""
        flag = _tensor([1.0 if will_sync else 0.0], device=self.join_device)
        all_reduce(flag, group=self._pg)
        return flag.item() > 0

    def _find_common_rank(self, candidate):
        """The highest rank among those for which ``candidate`` is true (one MAX allreduce)."""
        rank = _tensor([float(self.comm.rank) if candidate else -1.0])
        all_reduce(rank, op=ReduceOp.MAX, group=self._pg)
        if rank.item() < 0:
            raise RuntimeError("DistributedDataParallel: no rank qualified as the source of the "
                               "model under join (a bug)")
        return int(rank.item())

    def _sync_final_model(self, is_last_joiner):
        src = self._find_common_rank(is_last_joiner)
        self._sync_from_rank0([p for _, p in self.module.named_parameters()] +
                              [b for _, b in self.module.named_buffers()], src)

    def _start_backward(self, grad):
        self.reducer.begin_backward()
        return None

    def _unused_parameters(self, outputs):
        """Parameters the autograd graph of ``outputs`` does not reach (their index)."""
        reached, stack, seen = set(), [t.grad_fn for t in outputs if t.grad_fn is not None], set()
        for t in outputs:
            if t.grad_fn is None:
                reached.add(id(t))
        while stack:
            node = stack.pop()
            for edge in node.next_edges:
                if edge is None:
                    continue
                target, nr = edge[0], edge[1]
                if nr < 0:
                    reached.add(id(target))
                elif id(target) not in seen:
                    seen.add(id(target))
                    stack.append(target)
        return [i for i, p in enumerate(self.reducer.params) if id(p) not in reached]

    @contextmanager
    def no_sync(self):
        """Inside, backward passes accumulate gradients locally without communication; the
        first backward after it synchronises the accumulated gradients.

        Example:
            >>> dist.init_process_group()
            >>> model = DistributedDataParallel(nn.Linear(4, 2))
            >>> (x1, y1), (x2, y2) = [(ddp.randn(8, 4), ddp.randn(8, 2)) for _ in range(2)]
            >>> with model.no_sync():
            ...     F.mse_loss(model(x1), y1).backward()
            >>> F.mse_loss(model(x2), y2).backward()   # averages the sum of both micro-batches
        """
        previous = self.reducer.require_sync
        self.reducer.require_sync = False
        try:
            yield
        finally:
            self.reducer.require_sync = previous

    def register_comm_hook(self, state, hook):
        """Replace the bucket allreduce by ``hook(state, bucket) -> Work`` whose value is the
        bucket's averaged gradients (see ``ddp.distributed.algorithms.ddp_comm_hooks``).

        Example:
            >>> from ddp.distributed.algorithms.ddp_comm_hooks import default_hooks
            >>> dist.init_process_group()
            >>> model = DistributedDataParallel(nn.Linear(4, 2))
            >>> model.register_comm_hook(None, default_hooks.fp16_compress_hook)
        """
        if self.reducer.comm_hook is not None:
            raise RuntimeError("register_comm_hook can only be called once")
        self.reducer.comm_hook, self.reducer.comm_state = hook, state

    # ---------------------------------------------------------------- checkpoints
    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Accepts keys with PyTorch's ``module.`` prefix or without it."""
        if state_dict and not any(k.startswith("module.") for k in state_dict):
            state_dict = OrderedDict(("module." + k, v) for k, v in state_dict.items())
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class _DDPJoinHook(JoinHook):
    """What a joined rank does for DDP in each iteration of the ranks still training."""

    def __init__(self, ddp, divide_by_initial_world_size):
        self.ddp = ddp
        ddp._divide_by_initial_world_size = divide_by_initial_world_size

    def main_hook(self):
        """Enter the collectives of one forward and backward of the others, in their order."""
        ddp = self.ddp
        should_sync = ddp._join_flag(False)
        ddp._pre_forward_collectives(should_sync, joined=True)
        if should_sync:
            ddp.reducer.shadow_backward()
            ddp._iteration += 1

    def post_hook(self, is_last_joiner):
        """Every rank takes the model of a rank that joined last."""
        self.ddp._sync_final_model(is_last_joiner)
        self.ddp.reducer.divisor = self.ddp.reducer.world


def _tensors_in(obj):
    """The tensors inside a (nested) output: tensor, list, tuple, dict."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors_in(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors_in(o)

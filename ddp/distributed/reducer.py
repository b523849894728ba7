"""The reducer behind DistributedDataParallel: gradient buckets whose allreduces start during
backward.

1. Parameters that require grad are packed, in reverse registration order (the order backward
   tends to produce their gradients), into flat per-dtype buckets: a small first bucket
   (1 MiB), then ``bucket_cap_mb`` each.
2. Each parameter's post-accumulate-grad hook copies its final ``.grad`` into its bucket —
   unless the op that made it wrote it there already: each parameter offers the autograd
   engine its bucket view as a gradient sink (``Node.gradient_sink``; linear, embedding,
   convolution, recurrent and normalisation layers use it: ops with ``writes_grad_sinks``),
   scaled on the way. When a
   bucket's last gradient arrives, the bucket is launched: an asynchronous allreduce (on the
   communicator's ordered thread, or MPI's non-blocking allreduce advanced from the hooks —
   see ``_choose_comm_mode``), while backward goes on. The copy also divides by the world size,
   so the allreduced sum is already the mean. Buckets launch strictly in index
   order on every rank (a bucket ready early waits for its predecessors), so the sequence of
   collectives is identical everywhere whatever order gradients arrive in.
3. An end-of-backward callback launches any bucket still waiting (parameters that got no
   gradient, zero-filled), waits for all of them, and hands the result to ``.grad``: as a
   view of the bucket, with no copy, whenever nothing outside can tell (see
   :meth:`Reducer.finalize`). The ranks compare notes through a few
   status slots at the end of the last bucket, reduced with its gradients (no collective of
   their own): a parameter that got no gradient on some rank is an error naming it on every
   rank, not a hang; with ``find_unused_parameters`` a parameter unused on every rank keeps
   ``grad is None``; and DDP learns whether any rank's buffers changed, so it broadcasts them
   before the next forward only then.
4. After the first iteration the bucket layout may be rebuilt once from the order gradients
   actually arrived in, rank 0's order broadcast to all.

Example:
    >>> dist.init_process_group()
    >>> model = ddp.nn.parallel.DistributedDataParallel(nn.Linear(4, 2))   # builds a Reducer
    >>> F.mse_loss(model(ddp.randn(8, 4)), ddp.randn(8, 2)).backward()     # buckets allreduced
"""
from __future__ import annotations

import os
import sys

import numpy as np

from .. import backend
from ..tensor import Tensor
from . import environment

FIRST_BUCKET_BYTES = 1024 * 1024


def _choose_comm_mode(comm):
    """How bucket allreduces overlap backward (``DDP_COMM_MODE`` overrides):

    - "thread": a blocking allreduce on the communicator's own thread — true overlap, when a
      core is free for it;
    - "nonblocking": MPI_Iallreduce, advanced by tests from each gradient hook — no extra
      thread, for when every core already runs a rank. Measured on 2 cores with 2 ranks (MLP
      784-1024-1024-10): exposed communication 2.0 ms against 2.6 ms with the thread, whose
      busy-polling competes with backward for the cores;
    - "shared": all ranks on one machine, every core running a rank: the float buckets live in
      memory all the ranks map and are summed there once all are complete (``shared_sum``:
      nothing to overlap with, and one pair of barriers instead of one per bucket), no MPI
      copies — on the same MLP 2.6 ms less CPU per step than "nonblocking" (see
      docs/performance.md); other buckets as "nonblocking".
    """
    mode = os.environ.get("DDP_COMM_MODE", "auto")
    shared = comm.has_shared_sum
    if mode == "auto":
        # the cores this job may use (a cluster's cpuset), not the machine's
        spare_core = environment.usable_cores() > comm.local_size
        mode = "thread" if spare_core else "shared" if shared else "nonblocking"
    if mode == "shared" and not shared:
        mode = "nonblocking"   # ranks on several machines, or a single rank
    if mode == "nonblocking" and not comm.has_nonblocking:
        mode = "thread"  # e.g. the single-rank communicator: nothing to overlap anyway
    if mode not in ("thread", "nonblocking", "shared"):
        raise ValueError(f"DDP_COMM_MODE must be 'auto', 'thread', 'nonblocking' or 'shared', "
                         f"got {mode!r}")
    return mode


def _refcount(obj):
    """References to ``obj``, for comparing with :data:`_ONE_HOLDER`."""
    return sys.getrefcount(obj)


def _one_holder_count():
    probe = object()
    holders = [probe]   # the one holder
    count = _refcount(probe)
    holders.clear()
    return count


# What _refcount gives, from a local name, for an object that exactly one other place holds
# (measured rather than assumed: the interpreter's own references differ between versions)
_ONE_HOLDER = _one_holder_count()


def _unseen(grad):
    """Whether only its parameter holds the tensor ``grad`` and only ``grad`` its array (which
    owns its memory): replacing it by a view of the bucket then changes nothing anyone can see."""
    data = grad._data
    return (_refcount(grad) <= _ONE_HOLDER + 1   # the parameter, and the caller's name for it
            and getattr(data, "base", 0) is None and _refcount(data) <= _ONE_HOLDER)


class GradBucket:
    """What a communication hook sees (PyTorch's ``GradBucket``): the flat buffer of one
    bucket's gradients and the parameters it holds."""

    def __init__(self, bucket, is_last):
        self._bucket = bucket
        self._is_last = is_last

    def index(self):
        return self._bucket.index

    def buffer(self) -> Tensor:
        """The bucket's flat gradient buffer as a tensor (shares memory)."""
        return Tensor._make(self._bucket.grads)

    def gradients(self):
        return [Tensor._make(v) for v in self._bucket.views]

    def parameters(self):
        return list(self._bucket.params)

    def is_last(self):
        return self._is_last

    def set_buffer(self, tensor):
        self._bucket.grads[...] = tensor._data


class Bucket:
    """A flat buffer holding the gradients of ``params`` (all of one dtype and device), then
    ``tail`` status slots (the last bucket: see ``Reducer._local_status``)."""

    def __init__(self, index, params, xp, tail=0):
        self.index = index
        self.params = params
        self._xp, self._tail_size = xp, tail
        self.shared = None   # its shared_sum.SharedBuffer, in mode "shared"
        self.allocate()
        self.pending = len(params)
        self.work = None

    @property
    def size(self):
        return sum(p._data.size for p in self.params) + self._tail_size

    def allocate(self, memory=None):
        """Fresh memory for the bucket (what an earlier one held stays with whoever holds it):
        zeros, or ``memory`` (zero-filled, :attr:`size` elements)."""
        sizes = [p._data.size for p in self.params]
        data = self._xp.zeros(self.size, dtype=self.params[0]._data.dtype) if memory is None \
            else memory
        self.data = data
        self.grads = data[:sum(sizes)]   # what views and communication hooks see
        self.tail = data[sum(sizes):]
        self.views, start = [], 0
        for p, n in zip(self.params, sizes):
            self.views.append(data[start:start + n].reshape(p._data.shape))
            start += n
        # what the communicator is handed: a view of its own, so that what it keeps of a
        # finished allreduce (a Work's result, its thread's last item) holds ``wire``, never
        # ``data`` itself
        self.wire = data[:]
        # our own references to the flat buffer (attribute, and the base of grads, tail, wire
        # and each view): one more means an array made from a lent gradient is alive somewhere
        self.data_refs = _refcount(data)

    def lent_elsewhere(self):
        """Whether something besides the parameters' own ``.grad`` holds part of this bucket: a
        gradient tensor of an earlier step kept after ``zero_grad``, an array or view of one."""
        data = self.data
        if _refcount(data) > self.data_refs:
            return True
        views, params = self.views, self.params
        for k in range(len(views)):   # (a zip's tuple would hold the view too)
            view, grad = views[k], params[k].grad
            own = grad is not None and grad._data is view
            if _refcount(view) > _ONE_HOLDER + own:   # the one holder: self.views
                return True
        return False

    def reset(self):
        self.pending = len(self.params)
        self.work = None


class Reducer:
    """Buckets, hooks and the end-of-backward synchronisation for one DDP model."""

    def __init__(self, named_params, comm, bucket_cap_mb=25.0, find_unused_parameters=False,
                 gradient_as_bucket_view=False):
        self.comm = comm
        self.world = comm.size
        self.divisor = comm.size     # gradients are averaged over this many ranks (see join)
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.cap_bytes = int(bucket_cap_mb * 1024 * 1024)
        self.find_unused = find_unused_parameters
        self.as_view = gradient_as_bucket_view
        # without gradient_as_bucket_view, .grad still becomes a view of its bucket (no copy
        # out) whenever no one can tell the difference; False: copy out always, as before
        self.lend = not gradient_as_bucket_view
        self.sync_comm = os.environ.get("DDP_SYNC_COMM") == "1"  # launcher --debug
        self.comm_mode = _choose_comm_mode(comm)
        self.comm_hook = None
        self.comm_state = None
        self.require_sync = True
        self._arrivals = []          # parameter indices in the order gradients arrived
        self._record_arrivals = True
        self._rebuilt = False
        self._in_backward = False
        self._unused = ()
        self._none = []              # parameters filled with zeros (no gradient) this backward
        # the status every backward shares (missing gradients, buffers changed, parameters
        # used): carried in the last bucket's allreduce, not a collective of its own
        self.status_size = 2 + (len(self.params) if find_unused_parameters else 0)
        self.buffers_changed = None  # DDP's check: did this rank's buffers change since sync?
        self.buffers_dirty = True    # some rank's buffers changed: broadcast before a forward
        self._build(list(range(len(self.params)))[::-1])
        self._handles = [p.register_post_accumulate_grad_hook(self._make_hook(i))
                         for i, p in enumerate(self.params)]
        for i, p in enumerate(self.params):
            p._grad_sink = self._make_sink(i)

    # ---------------------------------------------------------------- buckets
    def _build(self, order):
        """Buckets over parameter indices ``order``: per dtype/device, small first bucket."""
        self.buckets, self.where, groups = [], {}, []
        open_by_kind, size_by_kind, closed = {}, {}, set()
        for i in order:
            p = self.params[i]
            kind = (p._data.dtype, backend.device_of(p._data))
            group = open_by_kind.setdefault(kind, [])
            cap = self.cap_bytes if kind in closed else min(FIRST_BUCKET_BYTES, self.cap_bytes)
            if group and size_by_kind[kind] + p._data.nbytes > cap:
                groups.append(group)
                closed.add(kind)
                open_by_kind[kind] = group = []
            if not group:
                size_by_kind[kind] = 0
            group.append(i)
            size_by_kind[kind] += p._data.nbytes
        groups += [group for group in open_by_kind.values() if group]
        for k, group in enumerate(groups):
            last = k == len(groups) - 1
            self._close(group, tail=self.status_size if last and self.world > 1 else 0)
        self.next_launch = 0
        self._ready = [False] * len(self.params)
        self._sunk = [False] * len(self.params)
        self._check_layout()
        if self.comm_mode == "shared" and not self.sync_comm:   # (after the check: every
            # rank maps the same sizes)
            self._share_buckets()

    def _share_buckets(self):
        """Mode "shared": the float buckets move into memory every rank maps (collective; the
        same buckets on every rank, as their layout is). A bucket a rank later re-allocates
        (:meth:`_keep_lent_gradients`) moves to fresh shared memory on its own."""
        from .shared_sum import DTYPES
        floats = [b for b in self.buckets if b.data.dtype in DTYPES]
        buffers = self.comm.shared_buffers([(b.size, b.data.dtype) for b in floats]) \
            if floats else None
        for bucket, buffer in zip(floats, buffers or ()):
            bucket.shared = buffer
            bucket.allocate(buffer.mine)
        self._shared = floats if buffers else []

    def _check_layout(self):
        """Once per bucket layout (not per step): every rank must hold the same buckets, or
        their allreduces would mix different gradients (e.g. ``bucket_cap_mb`` differing
        between ranks). An error naming each rank's layout, on every rank."""
        if self.world == 1:
            return
        mine = [(str(b.data.dtype), int(b.data.size)) for b in self.buckets]
        everyone = self.comm.allgather_obj(mine)
        if any(layout != everyone[0] for layout in everyone):
            lines = "\n".join(f"  rank {r}: " + ", ".join(f"{n} x {d}" for d, n in layout)
                              for r, layout in enumerate(everyone))
            raise RuntimeError(f"DistributedDataParallel: the gradient buckets differ between "
                               f"ranks (the same model, bucket_cap_mb and find_unused_parameters "
                               f"are needed everywhere):\n{lines}")

    def _close(self, indices, tail=0):
        xp = backend.get_array_module(self.params[indices[0]]._data)
        bucket = Bucket(len(self.buckets), [self.params[i] for i in indices], xp, tail)
        for slot, i in enumerate(indices):
            self.where[i] = (bucket, slot)
        self.buckets.append(bucket)

    def rebuild_from_arrivals(self):
        """Rebuild the buckets once, in the order gradients arrived in the first iteration
        (rank 0's order, broadcast so every rank builds the same layout).

        Every rank enters the broadcast, also one that saw no gradient at all: whether to
        rebuild depends only on state that is the same everywhere (``_rebuilt``), never on
        this rank's arrivals, so no rank waits in a collective the others skipped."""
        if self._rebuilt:
            return
        seen = dict.fromkeys(self._arrivals)
        order = list(seen) + [i for i in range(len(self.params))[::-1] if i not in seen]
        order = self.comm.bcast_obj(order, 0)
        self._build(order)
        self._rebuilt = True
        self._record_arrivals = False

    # ---------------------------------------------------------------- backward
    def _make_hook(self, i):
        def hook(param):
            self.mark_ready(i)
        return hook

    def _make_sink(self, i):
        def sink():
            return self.sink_for(i)
        return sink

    def sink_for(self, i):
        """Parameter ``i``'s gradient sink for the autograd engine (``Node.gradient_sink``):
        its bucket view and the averaging scale, so that an op that writes there (one with
        ``writes_grad_sinks``: linear's weight and bias, ...) leaves nothing to copy into the
        bucket. None when this backward does
        not synchronise (``no_sync``) or the gradient came already."""
        if not self.require_sync:
            return None
        if not self._in_backward:
            self.begin_backward()   # before anything is written into a bucket
        if self._ready[i]:
            return None
        self._sunk[i] = True   # (False again in _fill if the op did not write there)
        bucket, slot = self.where[i]
        return bucket.views[slot], self._scale()

    def _scale(self):
        """What a gradient is multiplied by on its way into its bucket: averaging folded into
        the copy (or the sink); communication hooks average themselves."""
        return 1.0 if self.comm_hook is not None or self.divisor == 1 else 1.0 / self.divisor

    def prepare_for_backward(self, unused=()):
        """Called by DDP's forward: which parameters will get no gradient (find_unused)."""
        self._unused = tuple(unused)

    def begin_backward(self):
        """The first gradient of a backward pass has arrived: arm the final callback."""
        if self._in_backward or not self.require_sync:
            return
        from ..autograd import queue_callback
        self._in_backward = True
        for b in self.buckets:
            b.reset()
        self._keep_lent_gradients()
        self.next_launch = 0
        self._ready = [False] * len(self.params)
        self._sunk = [False] * len(self.params)   # offered a sink this backward
        self._none = []
        queue_callback(self.finalize)
        for i in self._unused:  # their gradient stays zero in the bucket
            self._fill(i, None)

    def mark_ready(self, i):
        if not self.require_sync:
            return
        if not self._in_backward:
            self.begin_backward()
        if self._record_arrivals:
            self._arrivals.append(i)
        self._fill(i, self.params[i].grad)
        if self.comm_mode != "thread":
            self.comm.progress()

    def _fill(self, i, grad):
        if self._ready[i]:
            raise RuntimeError(
                f"DistributedDataParallel: parameter '{self.names[i]}' got its gradient twice in "
                f"one backward pass (used in several forward passes, or marked unused but used); "
                f"DDP supports one backward per forward")
        self._ready[i] = True
        bucket, slot = self.where[i]
        view = bucket.views[slot]
        scale = self._scale()
        if grad is None:
            view[...] = 0
            self._none.append(i)
        elif grad._data is view:   # written into its sink (scaled), or accumulated into a lent view
            if scale != 1.0 and not self._sunk[i]:
                view *= scale
        else:   # copied in (a sink offered was not used: _sunk says what was written there)
            self._sunk[i] = False
            if scale != 1.0:
                backend.get_array_module(view).multiply(grad._data, scale, out=view)
            else:
                view[...] = grad._data
        bucket.pending -= 1
        if bucket.pending == 0:
            self._launch_ready()

    def _launch_ready(self):
        """Launch buckets whose gradients are all in, strictly in index order."""
        while self.next_launch < len(self.buckets) and self.buckets[self.next_launch].pending == 0:
            self._launch(self.buckets[self.next_launch])
            self.next_launch += 1

    def _launch(self, bucket, joined=False):
        if bucket.tail.size and self.comm_hook is None:
            # the last bucket launches only once every gradient is in (buckets go in index
            # order), so this rank's status is complete now
            xp = backend.get_array_module(bucket.tail)
            bucket.tail[...] = xp.asarray(self._local_status(joined), dtype=bucket.tail.dtype)
        if self.comm_hook is not None:
            bucket.work = self.comm_hook(self.comm_state,
                                         GradBucket(bucket, bucket.index == len(self.buckets) - 1))
        elif self.sync_comm:
            self.comm.Allreduce(bucket.wire, "sum")
        elif bucket.shared is not None:
            # no core is spare to overlap the sums with backward: they wait for the last
            # shared bucket, then run between one pair of barriers (each pair waits for the
            # slowest rank: the MLP's 40 KiB bucket synchronised the ranks mid-backward)
            if bucket is self._shared[-1]:
                bucket.work = self.comm.Allreduce_shared(*[b.shared for b in self._shared])
        elif self.comm_mode in ("nonblocking", "shared"):
            bucket.work = self.comm.Iallreduce_nonblocking(bucket.wire, "sum")
        else:
            bucket.work = self.comm.Iallreduce(bucket.wire, "sum")

    def finalize(self):
        """End of backward: launch what is left, wait, and hand the averaged gradients to
        ``.grad``. Without a copy, as views of the buckets, unless someone may see the
        difference: a ``.grad`` that existed before (``zero_grad(set_to_none=False)``, or one
        the user keeps, or an array of it) receives a copy into its own memory, as PyTorch's
        reducer gives it; the next backward makes sure no lent view is overwritten while
        anything still holds it (:meth:`_keep_lent_gradients`)."""
        self._in_backward = False
        missing = [i for i, ready in enumerate(self._ready) if not ready]
        for i in missing:
            self._fill(i, None)
        for bucket in self.buckets:
            if bucket.work is not None:
                bucket.work.wait()
                if self.comm_hook is not None:
                    self._take_hook_result(bucket, bucket.work.result())
        status = self._global_status()
        unused_everywhere = set()
        if self.find_unused:
            unused_everywhere = {id(self.params[i]) for i in np.flatnonzero(status[2:] == 0)}
        elif status[0]:
            self._raise_missing(missing)
        for bucket in self.buckets:
            for p, view in zip(bucket.params, bucket.views):
                if id(p) in unused_everywhere:
                    continue  # PyTorch: no rank produced a gradient, so .grad stays untouched
                grad = p.grad
                if grad is not None and grad._data is view:
                    continue
                if self.as_view or self.lend and (grad is None or _unseen(grad)):
                    p.grad = Tensor._make(view)
                elif grad is None:
                    p.grad = Tensor._make(view.copy())
                else:
                    grad._data[...] = view

    def _keep_lent_gradients(self):
        """Before a backward writes into the buckets: a bucket part of which something still
        holds — a ``.grad`` lent by an earlier step and kept after ``zero_grad``, or an array or
        view of one — gets fresh memory, so the holder keeps its values as it would with
        PyTorch's copies. A training loop that keeps nothing pays one reference count per
        parameter. (With ``gradient_as_bucket_view=True`` sharing is what the user asked for.)"""
        if not self.lend:
            return
        for bucket in self.buckets:
            if bucket.lent_elsewhere():
                bucket.allocate(bucket.shared.fresh() if bucket.shared is not None else None)

    def shadow_backward(self):
        """A rank that has joined (``DDP.join``): enter the collectives of one backward of the
        ranks still training, in the same order, contributing zero gradients and no missing or
        used parameters; this rank's ``.grad`` are left alone (with gradient_as_bucket_view
        they live in the buckets: kept aside and put back)."""
        self._keep_lent_gradients()
        kept = [b.grads.copy() for b in self.buckets] if self.as_view or self.lend else None
        for bucket in self.buckets:
            bucket.reset()
            bucket.data[...] = 0
        for bucket in self.buckets:
            self._launch(bucket, joined=True)
        for bucket in self.buckets:
            if bucket.work is not None:
                bucket.work.wait()
        status = self._global_status(joined=True)
        if kept is not None:
            for bucket, grads in zip(self.buckets, kept):
                bucket.grads[...] = grads
        if not self.find_unused and status[0]:
            self._raise_missing([])

    # ---------------------------------------------------------------- the shared status
    def _local_status(self, joined=False):
        """This rank's part of the status, summed over the ranks: [ranks that missed
        gradients, ranks whose buffers changed since the last broadcast, then (with
        find_unused_parameters) one use count per parameter]. Small integers: exact in any
        float dtype a bucket has (float16 to 2048 ranks), and only zero/non-zero matters."""
        status = np.zeros(self.status_size)
        if joined:
            return status
        if self.find_unused:
            status[2:] = 1.0
            status[[2 + i for i in self._none]] = 0.0
        elif self._none:
            status[0] = 1.0
        if self.buffers_changed is not None and self.buffers_changed():
            status[1] = 1.0
        return status

    def _global_status(self, joined=False):
        """The status summed over the ranks: read from the last bucket's allreduce, or (with a
        communication hook, which may transform the buffer) from an allreduce of its own.
        Records whether the buffers need a broadcast before the next forward."""
        last = self.buckets[-1]
        if self.world == 1:
            status = self._local_status(joined)
        elif self.comm_hook is None:
            status = np.asarray(backend.to_host(last.tail), dtype=np.float64)
        else:
            status = self._local_status(joined)
            self.comm.Allreduce(status, "sum")
        self.buffers_dirty = bool(status[1])
        return status

    def _raise_missing(self, missing):
        """Some rank finished backward with parameters lacking a gradient: every rank (a
        joined one too) learns which, on which rank, and raises the same error."""
        mine = [self.names[i] for i in missing]
        everyone = self.comm.allgather_obj(mine) if self.world > 1 else [mine]
        where = "; ".join(f"rank {r}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
                          for r, names in enumerate(everyone) if names)
        raise RuntimeError(
            f"DistributedDataParallel: some parameters received no gradient ({where}). Every "
            f"parameter that requires grad must take part in the loss on every rank; pass "
            f"find_unused_parameters=True to DistributedDataParallel if some parameters are "
            f"legitimately unused in some iterations, or set requires_grad=False on frozen "
            f"ones.")

    @staticmethod
    def _take_hook_result(bucket, result):
        out = result[0] if isinstance(result, (list, tuple)) else result
        if out is not None:
            data = out._data if isinstance(out, Tensor) else out
            if data is not bucket.grads:
                bucket.grads[...] = data

    def remove_hooks(self):
        for h in self._handles:
            h.remove()
        self._handles = []
        for p in self.params:
            p.__dict__.pop("_grad_sink", None)

"""``SyncBatchNorm``: batch normalisation whose batch statistics cover the batches of every rank.

With DistributedDataParallel each rank sees only its shard of the global batch; BatchNorm would
normalise with per-shard statistics. SyncBatchNorm reduces them across the ranks of a process
group instead, so the ranks together compute exactly what BatchNorm computes on the whole batch:

* forward: one all_reduce of ``[sum(x), sum(x * x), count]`` per channel (in float64, from
  each rank's two-pass moments), giving the global mean and biased variance; shards may have
  different sizes, even zero rows. The running statistics use the global count (unbiased
  ``running_var``), so they are identical on every rank.
* backward: one all_reduce of ``[sum(dy), sum(dy * x_hat)]`` per channel, which the input
  gradient needs. ``weight``/``bias`` get this rank's contribution only, like every other
  parameter: DDP's gradient all-reduce combines them into the gradient of the global batch.

Unlike PyTorch it runs on CPU as well as on GPU (one code path; collectives stage device arrays
through host memory). In a single process, in eval mode, or without an initialised process group
it is ordinary BatchNorm (the same function, bit for bit), as in PyTorch.

Example:
    >>> import ddp.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    >>> model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    >>> model[1]
    SyncBatchNorm(8, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd.grad_mode import no_grad
from .functional._normalization import _Normalize, _batch_norm, _moments, update_running_stats
from .normalization import _BatchNorm

__all__ = ["SyncBatchNorm"]


def _channel_axes(ndim):
    return (0,) + tuple(range(2, ndim))


def _global_moments(x, comm):
    """Mean and biased variance per channel (float64, shape (C,)) of the batch made of every
    rank's ``x`` (N_r, C, *), and the global number of values per channel.

    One all_reduce of ``[sum, sum of squares, count]`` per channel, in float64. Each rank
    derives its sums from its own two-pass mean and variance (as BatchNorm computes them, with
    no float64 copy of the input), so only the spread between the ranks' means goes through
    ``E[x^2] - E[x]^2``."""
    xp = backend.get_array_module(x)
    c = x.shape[1]
    n = x.size // c if c else 0
    buf = xp.zeros(2 * c + 1, dtype=np.float64)
    if n:
        mean, var = _moments(x, _channel_axes(x.ndim))
        mean, var = mean.reshape(c).astype(np.float64), var.reshape(c).astype(np.float64)
        buf[:c] = n * mean
        buf[c:2 * c] = n * (var + mean * mean)
        buf[2 * c] = n
    comm.Allreduce(buf, "sum")
    count = buf[2 * c]   # a 0-d array: on a GPU it stays there (reading it would sync)
    denom = xp.maximum(count, 1.0)
    mean = buf[:c] / denom
    var = xp.maximum(buf[c:2 * c] / denom - mean * mean, 0.0)
    return mean, var, count


class SyncBatchNormOp(_Normalize):
    """Batch normalisation with the global batch statistics ``mean``/``invstd`` ((C,), in
    ``x``'s dtype): BatchNorm's forward and closed-form backward, whose two means over the
    batch (of ``dy`` and ``dy * x_hat``, weight applied) are all-reduced sums over ``count``,
    the global number of values per channel; ``comm`` is the communicator of the group. The
    backward issues a collective, so it runs on every rank of the group or on none
    (``once_differentiable``: no create_graph).
    """
    once_differentiable = True

    @staticmethod
    def forward(ctx, x, weight, bias, mean=None, invstd=None, count=None, comm=None):
        affine = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        ctx.sync = (count, comm)
        return _Normalize.forward(ctx, x, weight, bias, mean=mean.reshape(affine),
                                  invstd=invstd.reshape(affine), group_shape=x.shape,
                                  axes=_channel_axes(x.ndim), affine_shape=affine)

    @staticmethod
    def batch_means(ctx, gxhat, xh, axes):
        count, comm = ctx.sync
        c = gxhat.shape[1]
        # this rank's sums in float64, one all_reduce of both, then the global means
        buf = ctx.xp.concatenate([gxhat.sum(axis=axes, dtype=np.float64).reshape(c),
                                  (gxhat * xh).sum(axis=axes, dtype=np.float64).reshape(c)])
        comm.Allreduce(buf, "sum")
        shape = (1, c) + (1,) * (gxhat.ndim - 2)
        return ((buf[:c] / count).astype(gxhat.dtype).reshape(shape),
                (buf[c:] / count).astype(gxhat.dtype).reshape(shape))


def _sync_batch_norm(input, running_mean, running_var, weight, bias, momentum, eps, comm):
    """Training-mode batch norm with statistics over every rank of ``comm``; updates the running
    statistics (when given) with the global mean and unbiased variance."""
    x = input._data
    mean, var, count = _global_moments(x, comm)
    if backend.validates(x) and count <= 1:   # a value check: on a GPU only under --debug
        raise ValueError(f"SyncBatchNorm: expected more than 1 value per channel when training, "
                         f"got {int(count)} over all ranks (input of shape {tuple(input.shape)} "
                         f"on this rank)")
    xp = backend.get_array_module(x)
    invstd = (1.0 / xp.sqrt(var + eps)).astype(x.dtype)
    out = SyncBatchNormOp.apply(input, weight, bias, mean=mean.astype(x.dtype), invstd=invstd,
                                count=count, comm=comm)
    update_running_stats(running_mean, running_var, mean, var, count, momentum)
    return out


class SyncBatchNorm(_BatchNorm):
    """Batch normalisation of (N, C, *) input with statistics over the whole global batch,
    i.e. over the batches of every rank of ``process_group`` (the default group when None).

    Same arguments, parameters, buffers and state dict as ``BatchNorm1d/2d/3d`` (any input of
    2 or more dimensions). In training each forward and backward issues one all_reduce, so
    every rank of the group must run it the same number of times; in eval mode (running
    statistics) it communicates nothing. Shards may have different sizes.

    Example:
        >>> bn = nn.SyncBatchNorm(16)              # under mpiexec: statistics of all ranks
        >>> y = bn(ddp.randn(8, 16, 4, 4))
        >>> bn.running_mean.shape
        ddp.Size([16])
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, device=None, dtype=None, *,
                 bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)
        self.process_group = process_group

    def _check_input_dim(self, input):
        if input.ndim < 2:
            raise ValueError(f"expected at least 2D input (got {input.ndim}D input)")

    def forward(self, input):
        from .. import distributed as dist
        self._check_input_dim(input)
        running_mean, running_var, use_batch_stats, factor = self._step_statistics()
        comm = None
        if use_batch_stats and self.training and dist.is_initialized():
            comm = dist.get_communicator(self.process_group)
        if comm is None or comm.size == 1:
            return _batch_norm(type(self).__name__, input, running_mean, running_var,
                               self.weight, self.bias, use_batch_stats, factor, self.eps)
        return _sync_batch_norm(input, running_mean, running_var, self.weight, self.bias, factor,
                                self.eps, comm)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Replace every ``BatchNorm*d`` in ``module`` (recursively, ``module`` itself included)
        by a :class:`SyncBatchNorm` sharing its parameters and buffers, as PyTorch does;
        returns the converted module (the same object unless ``module`` is itself a BatchNorm).

        Example:
            >>> model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
            >>> model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            >>> type(model[1]).__name__
            'SyncBatchNorm'
        """
        out = module
        if isinstance(module, _BatchNorm):
            out = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, process_group,
                      bias=getattr(module, "bias", None) is not None or not module.affine)
            if module.affine:
                with no_grad():
                    out.weight = module.weight
                    out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return out

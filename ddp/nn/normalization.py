"""Normalisation layers: ``BatchNorm1d/2d/3d``, ``InstanceNorm1d/2d/3d``, ``LayerNorm``,
``GroupNorm``.

Example:
    >>> import ddp.nn as nn
    >>> nn.BatchNorm2d(8)
    BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
    >>> nn.LayerNorm(4)
    LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)
"""
from __future__ import annotations

import numbers
import warnings

from .. import backend, creation
from . import init
from .functional._normalization import _batch_norm, _group_norm, _instance_norm, _layer_norm
from ..autograd import no_grad
from .lazy import LazyModuleMixin
from .module import Module
from .parameter import Parameter, UninitializedBuffer, UninitializedParameter

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d",
           "InstanceNorm3d", "LayerNorm", "GroupNorm", "LazyBatchNorm1d", "LazyBatchNorm2d",
           "LazyBatchNorm3d", "LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d"]


def _affine_parameters(module, affine, bias, shape, device, dtype):
    """Register ``weight`` (and ``bias`` unless ``bias`` is False) of ``shape``, or None."""
    if affine:
        module.weight = Parameter(creation.empty(shape, device=device, dtype=dtype))
        if bias:
            module.bias = Parameter(creation.empty(shape, device=device, dtype=dtype))
        else:
            module.register_parameter("bias", None)
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


def _reset_affine(module):
    """Weight to ones, bias to zeros (those that exist)."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


class _NormBase(Module):
    """The per-channel parameters and running statistics of batch and instance norm (PyTorch's
    ``_NormBase``): ``affine`` adds a per-channel ``weight`` and (unless ``bias=False``)
    ``bias``; ``track_running_stats`` the buffers ``running_mean``, ``running_var`` and
    ``num_batches_tracked``."""
    _version = 2

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        _affine_parameters(self, affine, bias, num_features, device, dtype)
        if track_running_stats:
            self.register_buffer("running_mean", creation.zeros(num_features, device=device,
                                                                dtype=dtype))
            self.register_buffer("running_var", creation.ones(num_features, device=device,
                                                              dtype=dtype))
            self.register_buffer("num_batches_tracked", creation.tensor(0, dtype=backend.int64,
                                                                        device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        _reset_affine(self)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # checkpoints before version 2 have no num_batches_tracked: start it at 0
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats \
                and key not in state_dict:
            state_dict[key] = self.num_batches_tracked if self.num_batches_tracked is not None \
                else creation.tensor(0, dtype=backend.int64)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class _BatchNorm(_NormBase):
    """Batch normalisation over the channel dimension (1) of (N, C, *) input.

    In training it normalises with the batch statistics and, with ``track_running_stats``,
    updates ``running_mean`` and (unbiased) ``running_var``: ``running = (1 - momentum) *
    running + momentum * batch``, or a cumulative average when ``momentum`` is None; in eval it
    uses the running statistics. ``num_batches_tracked`` counts training batches.
    ``affine`` adds a per-channel ``weight`` and (unless ``bias=False``) ``bias``.
    """
    _expected_dims = ()  # the accepted input ranks

    def _check_input_dim(self, input):
        if input.ndim not in self._expected_dims:
            raise ValueError(f"{type(self).__name__}: expected "
                             f"{' or '.join(f'{d}-D' for d in self._expected_dims)} input, got "
                             f"input of shape {tuple(input.shape)}")

    def _step_statistics(self):
        """Count this batch and say how to normalise it, as PyTorch's BatchNorm does:
        ``(running_mean, running_var, use_batch_stats, factor)``, where ``factor`` is the
        weight of this batch in the running statistics (momentum, or 1/n when momentum is None:
        a cumulative average)."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        return (self.running_mean if keep else None, self.running_var if keep else None,
                use_batch_stats, factor)

    def forward(self, input):
        self._check_input_dim(input)
        running_mean, running_var, use_batch_stats, factor = self._step_statistics()
        return _batch_norm(type(self).__name__, input, running_mean, running_var, self.weight,
                           self.bias, use_batch_stats, factor, self.eps)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) input.

    Example:
        >>> m = nn.BatchNorm1d(3)
        >>> y = m(ddp.randn(16, 3))
        >>> m.num_batches_tracked
        tensor(1)
    """
    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) input, per channel.

    Example:
        >>> m = nn.BatchNorm2d(3, momentum=None).eval()
        >>> m(ddp.ones(2, 3, 4, 4)).shape
        ddp.Size([2, 3, 4, 4])
    """
    _expected_dims = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch normalisation of (N, C, D, H, W) input, per channel.

    Example:
        >>> nn.BatchNorm3d(2)(ddp.randn(2, 2, 3, 3, 3)).shape
        ddp.Size([2, 2, 3, 3, 3])
    """
    _expected_dims = (5,)


class _InstanceNorm(_NormBase):
    """Instance normalisation: each channel of each sample of (N, C, *) input (or unbatched (C,
    *)) over its spatial dimensions, with the instance statistics in training and in eval
    unless ``track_running_stats``, which keeps (in training) their running mean over batches
    and uses it in eval. ``num_features`` is only checked (a warning without ``affine``)."""
    _no_batch_dim = 0   # the rank of an unbatched input

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, bias=bias)

    def _check_input_dim(self, input):
        if input.ndim not in (self._no_batch_dim, self._no_batch_dim + 1):
            raise ValueError(f"expected {self._no_batch_dim}D or {self._no_batch_dim + 1}D "
                             f"input (got {input.ndim}D input)")

    def forward(self, input):
        self._check_input_dim(input)
        feature_dim = input.ndim - self._no_batch_dim
        if input.shape[feature_dim] != self.num_features:
            if self.affine:
                raise ValueError(f"expected input's size at dim={feature_dim} to match "
                                 f"num_features ({self.num_features}), but got: "
                                 f"{input.shape[feature_dim]}.")
            warnings.warn(f"input's size at dim={feature_dim} does not match num_features. "
                          "You can silence this warning by not passing in num_features, which "
                          "is not used because affine=False", stacklevel=2)
        unbatched = input.ndim == self._no_batch_dim
        out = _instance_norm(type(self).__name__, input.unsqueeze(0) if unbatched else input,
                             self.running_mean, self.running_var, self.weight, self.bias,
                             self.training or not self.track_running_stats,
                             0.0 if self.momentum is None else self.momentum, self.eps)
        return out.squeeze(0) if unbatched else out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # checkpoints before 0.4.0 (no version) kept running statistics that are not tracked
        if local_metadata.get("version", None) is None and not self.track_running_stats:
            keys = [prefix + k for k in ("running_mean", "running_var")
                    if prefix + k in state_dict]
            if keys:
                klass = type(self).__name__
                names = " and ".join(f'"{k}"' for k in keys)
                error_msgs.append(
                    f"Unexpected running stats buffer(s) {names} for {klass} with "
                    f"track_running_stats=False. If state_dict is a "
                    f"checkpoint saved before 0.4.0, this may be expected because {klass} does "
                    f"not track running stats by default since 0.4.0. Please remove these keys "
                    f"from state_dict. If the running stats are actually needed, instead set "
                    f"track_running_stats=True in {klass} to enable them. See the documentation "
                    f"of {klass} for details.")
                for k in keys:
                    state_dict.pop(k)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class InstanceNorm1d(_InstanceNorm):
    """Instance normalisation of (N, C, L) or unbatched (C, L) input.

    Example:
        >>> m = nn.InstanceNorm1d(3)
        >>> m
        InstanceNorm1d(3, eps=1e-05, momentum=0.1, affine=False, bias=False, track_running_stats=False)
        >>> m(ddp.randn(2, 3, 5)).shape
        ddp.Size([2, 3, 5])
    """
    _no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm):
    """Instance normalisation of (N, C, H, W) or unbatched (C, H, W) input.

    Example:
        >>> m = nn.InstanceNorm2d(3, affine=True, track_running_stats=True)
        >>> list(m.state_dict())
        ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
        >>> m(ddp.randn(3, 4, 4)).shape
        ddp.Size([3, 4, 4])
    """
    _no_batch_dim = 3


class InstanceNorm3d(_InstanceNorm):
    """Instance normalisation of (N, C, D, H, W) or unbatched (C, D, H, W) input.

    Example:
        >>> nn.InstanceNorm3d(2)(ddp.randn(1, 2, 3, 3, 3)).shape
        ddp.Size([1, 2, 3, 3, 3])
    """
    _no_batch_dim = 4


class _LazyNormBase(LazyModuleMixin, _NormBase):
    """Batch or instance norm whose ``num_features`` is the first input's ``shape[1]``
    (PyTorch's, also for unbatched instance-norm input). ``affine`` and
    ``track_running_stats`` default to True, for the lazy instance norms too, as in PyTorch."""

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        # no parameters or buffers yet: the placeholders stand in for them
        super().__init__(0, eps, momentum, False, False, device, dtype, bias=False)
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = UninitializedParameter(device=device, dtype=dtype)
            if bias:
                self.bias = UninitializedParameter(device=device, dtype=dtype)
        if track_running_stats:
            self.running_mean = UninitializedBuffer(device=device, dtype=dtype)
            self.running_var = UninitializedBuffer(device=device, dtype=dtype)
            self.num_batches_tracked = creation.tensor(0, dtype=backend.int64, device=device)

    def reset_parameters(self):
        if not self.has_uninitialized_params() and self.num_features != 0:
            super().reset_parameters()

    def initialize_parameters(self, input):
        """Infer ``num_features`` from ``input.shape[1]`` and initialise."""
        if self.has_uninitialized_params():
            self.num_features = input.shape[1]
            with no_grad():
                for t in (self.weight, self.bias, self.running_mean, self.running_var):
                    if t is not None:
                        t.materialize((self.num_features,))
                self.reset_parameters()


class LayerNorm(Module):
    """Normalise each sample over its last dimensions (``normalized_shape``), then apply an
    elementwise ``weight`` and ``bias`` (``elementwise_affine``; ``bias=False`` drops the bias).

    Example:
        >>> m = nn.LayerNorm((2, 3))
        >>> m.weight.shape, m(ddp.randn(4, 2, 3)).shape
        (ddp.Size([2, 3]), ddp.Size([4, 2, 3]))
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _affine_parameters(self, elementwise_affine, bias, self.normalized_shape, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return _layer_norm("LayerNorm", input, self.normalized_shape, self.weight, self.bias,
                           self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class GroupNorm(Module):
    """Normalise each of ``num_groups`` groups of channels of each sample of (N, C, *) input,
    then scale and shift per channel (``affine``; ``bias=False`` drops the shift).

    Example:
        >>> nn.GroupNorm(2, 4)(ddp.randn(3, 4, 5, 5)).shape
        ddp.Size([3, 4, 5, 5])
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None,
                 dtype=None, *, bias=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels={num_channels} must be divisible by "
                             f"num_groups={num_groups}")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        _affine_parameters(self, affine, bias, num_channels, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return _group_norm("GroupNorm", input, self.num_groups, self.weight, self.bias,
                           self.eps)[0]

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")



class LazyBatchNorm1d(_LazyNormBase, BatchNorm1d):
    """``BatchNorm1d`` with ``num_features`` inferred from the first
    input's ``shape[1]``: ``LazyBatchNorm1d(eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, bias=True)``.

    Example:
        >>> m = nn.LazyBatchNorm1d()
        >>> _ = m(ddp.randn(8, 3))
        >>> m
        BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
    """
    cls_to_become = BatchNorm1d


class LazyBatchNorm2d(_LazyNormBase, BatchNorm2d):
    """``BatchNorm2d`` with ``num_features`` inferred from the first
    input's ``shape[1]``.

    Example:
        >>> m = nn.LazyBatchNorm2d(affine=False)
        >>> _ = m(ddp.randn(2, 5, 3, 3))
        >>> type(m).__name__, m.running_mean.shape
        ('BatchNorm2d', ddp.Size([5]))
    """
    cls_to_become = BatchNorm2d


class LazyBatchNorm3d(_LazyNormBase, BatchNorm3d):
    """``BatchNorm3d`` with ``num_features`` inferred from the first
    input's ``shape[1]``.

    Example:
        >>> m = nn.LazyBatchNorm3d()
        >>> m(ddp.randn(2, 4, 2, 2, 2)).shape, m.num_features
        (ddp.Size([2, 4, 2, 2, 2]), 4)
    """
    cls_to_become = BatchNorm3d


class LazyInstanceNorm1d(_LazyNormBase, InstanceNorm1d):
    """``InstanceNorm1d`` with ``num_features`` inferred from
    the first input's ``shape[1]``; ``affine`` and ``track_running_stats`` default to True.

    Example:
        >>> m = nn.LazyInstanceNorm1d()
        >>> _ = m(ddp.randn(2, 3, 5))
        >>> m.weight.shape, m.running_var.shape
        (ddp.Size([3]), ddp.Size([3]))
    """
    cls_to_become = InstanceNorm1d


class LazyInstanceNorm2d(_LazyNormBase, InstanceNorm2d):
    """``InstanceNorm2d`` with ``num_features`` inferred from
    the first input's ``shape[1]``.

    Example:
        >>> m = nn.LazyInstanceNorm2d()   # (affine=False: nothing to infer, a warning)
        >>> m(ddp.randn(2, 3, 4, 4)).shape, type(m).__name__
        (ddp.Size([2, 3, 4, 4]), 'InstanceNorm2d')
    """
    cls_to_become = InstanceNorm2d


class LazyInstanceNorm3d(_LazyNormBase, InstanceNorm3d):
    """``InstanceNorm3d`` with ``num_features`` inferred from
    the first input's ``shape[1]``.

    Example:
        >>> m = nn.LazyInstanceNorm3d()
        >>> _ = m(ddp.randn(1, 2, 3, 3, 3))
        >>> list(m.state_dict())
        ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
    """
    cls_to_become = InstanceNorm3d

"""Loss modules (``nn.CrossEntropyLoss``, ``nn.MSELoss``, ...): ``forward(input, target)`` calls
the function of ``ddp.nn.functional`` with the module's settings, as PyTorch's.

Example:
    >>> import ddp.nn as nn
    >>> nn.MSELoss(reduction="sum")(ddp.tensor([1.0, 2.0]), ddp.zeros(2))
    tensor(5.)
"""
from __future__ import annotations

from .functional import _losses as F
from .module import Module

__all__ = ["L1Loss", "MSELoss", "SmoothL1Loss", "HuberLoss", "NLLLoss", "CrossEntropyLoss",
           "BCELoss", "BCEWithLogitsLoss", "KLDivLoss"]


class _Loss(Module):
    """Holds ``reduction`` (``'none' | 'mean' | 'sum'``, or what the deprecated
    ``size_average``/``reduce`` flags ask for)."""

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        self.reduction = F._legacy_reduction(size_average, reduce, reduction)


class _WeightedLoss(_Loss):
    """A loss with a ``weight`` buffer (saved in the state_dict when given)."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class L1Loss(_Loss):
    """Mean (or sum) absolute error ``|x - y|``.

    Example:
        >>> L1Loss()(ddp.tensor([1.0, -1.0]), ddp.zeros(2))
        tensor(1.)
    """

    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class MSELoss(_Loss):
    """Mean (or sum) squared error ``(x - y)^2``.

    Example:
        >>> MSELoss()(ddp.tensor([1.0, -1.0]), ddp.zeros(2))
        tensor(1.)
    """

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    """Squared error below ``beta``, absolute error beyond (scaled by ``1/beta``).

    Example:
        >>> SmoothL1Loss()(ddp.tensor([0.5]), ddp.zeros(1))
        tensor(0.1250)
    """

    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    """Squared error below ``delta``, ``delta``-scaled absolute error beyond.

    Example:
        >>> HuberLoss(delta=0.5)(ddp.tensor([2.0]), ddp.zeros(1))
        tensor(0.8750)
    """

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input, target):
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class NLLLoss(_WeightedLoss):
    """Negative log likelihood of log-probabilities against class indices.

    Example:
        >>> NLLLoss()(ddp.tensor([[-0.5, -1.0]]), ddp.tensor([0]))
        tensor(0.5000)
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """Cross entropy of logits against class indices or class probabilities, with class
    weights, ``ignore_index`` and ``label_smoothing``.

    Example:
        >>> CrossEntropyLoss()(ddp.tensor([[0.0, 0.0]]), ddp.tensor([1]))
        tensor(0.6931)
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class BCELoss(_WeightedLoss):
    """Binary cross entropy of probabilities.

    Example:
        >>> BCELoss()(ddp.tensor([0.5]), ddp.tensor([0.0]))
        tensor(0.6931)
    """

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross entropy of ``sigmoid(logits)``, stable; ``pos_weight`` scales the positive
    term (one value per class, broadcast along the last dimension).

    Example:
        >>> BCEWithLogitsLoss()(ddp.tensor([0.0]), ddp.tensor([1.0]))
        tensor(0.6931)
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight,
                                                  pos_weight=self.pos_weight,
                                                  reduction=self.reduction)


class KLDivLoss(_Loss):
    """KL divergence of log-probabilities ``input`` from ``target`` (``log_target``: given as
    log-probabilities); use ``reduction='batchmean'`` for the mathematical KL divergence.

    Example:
        >>> KLDivLoss(reduction="batchmean")(ddp.tensor([[-0.5]]), ddp.tensor([[0.0]]))
        tensor(0.)
    """

    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input, target):
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)

"""Stochastic weight averaging and exponential moving averages of a model, as
``torch.optim.swa_utils``: :class:`AveragedModel`, :class:`SWALR`, :func:`update_bn` and the
averaging functions.

Example:
    >>> model = ddp.nn.Linear(2, 1)
    >>> swa = ddp.optim.swa_utils.AveragedModel(model)
    >>> opt = ddp.optim.SGD(model.parameters(), lr=0.1)
    >>> for _ in range(3):
    ...     opt.zero_grad(); model(ddp.ones(1, 2)).sum().backward(); opt.step()
    ...     swa.update_parameters(model)
    >>> int(swa.n_averaged)
    3
"""
from __future__ import annotations

import itertools
import math
import warnings
from copy import deepcopy

from .. import backend, creation
from ..autograd.grad_mode import no_grad
from ..nn.module import Module
from ..nn.normalization import _BatchNorm
from .lr_scheduler import LRScheduler, _per_group

__all__ = ["AveragedModel", "update_bn", "SWALR", "get_ema_multi_avg_fn",
           "get_swa_multi_avg_fn", "get_ema_avg_fn", "get_swa_avg_fn"]


def _check_decay(decay):
    if decay < 0.0 or decay > 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in "
                         "[0,1] range.")


def get_ema_multi_avg_fn(decay=0.999):
    """An exponential moving average over lists of tensors, for ``AveragedModel``'s
    ``multi_avg_fn``: ``ema = ema + (1 - decay) * (param - ema)`` (a lerp), in place.

    Example:
        >>> ema, p = [ddp.zeros(2)], [ddp.ones(2)]
        >>> get_ema_multi_avg_fn(0.75)(ema, p, 1); ema[0]
        tensor([0.2500, 0.2500])
    """
    _check_decay(decay)

    @no_grad()
    def ema_update(ema_param_list, current_param_list, _):
        if ema_param_list[0].is_floating_point():
            for p_ema, p_model in zip(ema_param_list, current_param_list, strict=True):
                p_ema.lerp_(p_model, 1 - decay)
        else:
            for p_ema, p_model in zip(ema_param_list, current_param_list, strict=True):
                p_ema.copy_(p_ema * decay + p_model * (1 - decay))

    return ema_update


def get_swa_multi_avg_fn():
    """The running mean over lists of tensors, for ``AveragedModel``'s ``multi_avg_fn``:
    ``avg = avg + (param - avg) / (n + 1)`` (a lerp by ``1 / (n + 1)``), in place.

    Example:
        >>> avg, p = [ddp.zeros(2)], [ddp.full((2,), 3.0)]
        >>> get_swa_multi_avg_fn()(avg, p, 2); avg[0]
        tensor([1., 1.])
    """
    @no_grad()
    def swa_update(averaged_param_list, current_param_list, num_averaged):
        if averaged_param_list[0].is_floating_point():
            weight = 1 / (float(num_averaged) + 1)
            for p_avg, p_model in zip(averaged_param_list, current_param_list, strict=True):
                p_avg.lerp_(p_model, weight)
        else:
            for p_avg, p_model in zip(averaged_param_list, current_param_list, strict=True):
                p_avg.add_((p_model - p_avg) / (num_averaged + 1))

    return swa_update


def get_ema_avg_fn(decay=0.999):
    """An exponential moving average of one tensor, for ``AveragedModel``'s ``avg_fn``:
    returns ``decay * ema + (1 - decay) * param``.

    Example:
        >>> get_ema_avg_fn(0.5)(ddp.zeros(1), ddp.ones(1), 3)
        tensor([0.5000])
    """
    _check_decay(decay)

    @no_grad()
    def ema_update(ema_param, current_param, num_averaged):
        return decay * ema_param + (1 - decay) * current_param

    return ema_update


def get_swa_avg_fn():
    """The running mean of one tensor, for ``AveragedModel``'s ``avg_fn``: returns
    ``avg + (param - avg) / (n + 1)``.

    Example:
        >>> get_swa_avg_fn()(ddp.zeros(1), ddp.full((1,), 3.0), ddp.tensor(2))
        tensor([1.])
    """
    @no_grad()
    def swa_update(averaged_param, current_param, num_averaged):
        return averaged_param + (current_param - averaged_param) / (num_averaged + 1)

    return swa_update


class AveragedModel(Module):
    """A copy of ``model`` whose parameters (and, with ``use_buffers``, buffers) hold an average
    of ``model``'s over the calls of :meth:`update_parameters`: the running mean (SWA) by
    default, or ``avg_fn`` / ``multi_avg_fn`` (e.g. :func:`get_ema_multi_avg_fn` for an EMA).

    Args:
        model: the model to average (deep-copied).
        device: where the copy lives (default: where ``model`` is).
        avg_fn: ``avg_fn(averaged, current, n_averaged) -> new averaged``, one tensor at a time.
        multi_avg_fn: ``multi_avg_fn(averaged_list, current_list, n_averaged)``, in place.
        use_buffers: average the buffers too (instead of copying ``model``'s).

    Its state_dict holds ``n_averaged`` and the copy's entries under ``module.``.

    Example:
        >>> model = ddp.nn.Linear(2, 1)
        >>> ema = ddp.optim.swa_utils.AveragedModel(
        ...     model, multi_avg_fn=ddp.optim.swa_utils.get_ema_multi_avg_fn(0.99))
        >>> list(ema.state_dict())
        ['n_averaged', 'module.weight', 'module.bias']
    """

    def __init__(self, model, device=None, avg_fn=None, multi_avg_fn=None, use_buffers=False):
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self.module = deepcopy(model)
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer("n_averaged", creation.tensor(0, dtype=backend.int64, device=device))
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers

    def forward(self, *args, **kwargs):
        """Run the averaged copy."""
        return self.module(*args, **kwargs)

    @no_grad()
    def update_parameters(self, model):
        """Fold ``model``'s current parameters (and buffers, with ``use_buffers``) into the
        average: the first call copies them."""
        if self.use_buffers:
            self_param = itertools.chain(self.module.parameters(), self.module.buffers())
            model_param = itertools.chain(model.parameters(), model.buffers())
        else:
            self_param, model_param = self.parameters(), model.parameters()
        averaged, current = [], []
        copy_param = bool(self.n_averaged == 0)
        for p_averaged, p_model in zip(self_param, model_param):
            p_model_ = p_model.detach().to(p_averaged.device)
            averaged.append(p_averaged.detach())
            current.append(p_model_)
            if copy_param:
                p_averaged.detach().copy_(p_model_)

        if self.n_averaged > 0:
            if self.avg_fn is not None and self.multi_avg_fn is None:
                for p_averaged, p_model in zip(averaged, current):
                    p_averaged.copy_(self.avg_fn(p_averaged, p_model,
                                                 self.n_averaged.to(p_averaged.device)))
            else:
                # lists of one device and dtype each (an integer buffer is averaged apart from
                # the float parameters), as PyTorch groups them
                groups = {}
                for p_averaged, p_model in zip(averaged, current):
                    key = (str(p_averaged.device), p_averaged.dtype)
                    groups.setdefault(key, ([], []))
                    groups[key][0].append(p_averaged)
                    groups[key][1].append(p_model)
                mean = get_swa_avg_fn()
                for (device, _), (self_params, model_params) in groups.items():
                    n_averaged = self.n_averaged.to(device)
                    if self.multi_avg_fn is not None:
                        self.multi_avg_fn(self_params, model_params, n_averaged)
                    elif device.startswith("cuda"):  # PyTorch's default: a foreach lerp
                        get_swa_multi_avg_fn()(self_params, model_params, n_averaged)
                    else:                             # and the running-mean formula on CPU
                        for p_averaged, p_model in zip(self_params, model_params):
                            p_averaged.copy_(mean(p_averaged, p_model, n_averaged))

        if not self.use_buffers:
            # without averaging the buffers, keep them in sync with the model's
            for b_swa, b_model in zip(self.module.buffers(), model.buffers(), strict=True):
                b_swa.detach().copy_(b_model.detach().to(b_swa.device))
        self.n_averaged += 1


@no_grad()
def update_bn(loader, model, device=None):
    """Recompute the BatchNorm running statistics of ``model`` over one pass of ``loader``
    (the cumulative average over its batches), e.g. for an :class:`AveragedModel`, whose
    averaged weights the old statistics do not describe. A batch that is a list or tuple
    contributes its first element.

    Example:
        >>> net = ddp.nn.Sequential(ddp.nn.Linear(2, 3), ddp.nn.BatchNorm1d(3))
        >>> ddp.optim.swa_utils.update_bn([ddp.randn(8, 2) for _ in range(4)], net)
        >>> int(net[1].num_batches_tracked)
        4
    """
    momenta = {}
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.reset_running_stats()
            momenta[module] = module.momentum
    if not momenta:
        return
    was_training = model.training
    model.train()
    for module in momenta:
        module.momentum = None  # None: the cumulative average over the batches
    for input in loader:
        if isinstance(input, (list, tuple)):
            input = input[0]
        if device is not None:
            input = input.to(device)
        model(input)
    for module, momentum in momenta.items():
        module.momentum = momentum
    model.train(was_training)


class SWALR(LRScheduler):
    """Anneals each group's rate to ``swa_lr`` over ``anneal_epochs`` steps (cosine or linear),
    then holds it: the schedule of the SWA phase.

    Example:
        >>> opt = ddp.optim.SGD([ddp.nn.Parameter(ddp.ones(1))], lr=1.0)
        >>> s = ddp.optim.swa_utils.SWALR(opt, swa_lr=0.1, anneal_epochs=2,
        ...                               anneal_strategy="linear")
        >>> lrs = []
        >>> for _ in range(4):
        ...     lrs.append(round(s.get_last_lr()[0], 6)); opt.step(); s.step()
        >>> lrs
        [1.0, 0.55, 0.1, 0.1]
    """

    def __init__(self, optimizer, swa_lr, anneal_epochs=10, anneal_strategy="cos",
                 last_epoch=-1):
        swa_lrs = _per_group("swa_lr", optimizer, swa_lr)
        for value, group in zip(swa_lrs, optimizer.param_groups, strict=True):
            group["swa_lr"] = value
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError("anneal_strategy must be one of 'cos' or 'linear', instead got "
                             f"{anneal_strategy}")
        self._anneal_strategy = anneal_strategy
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    def anneal_func(self, t):
        """The fraction of the way to ``swa_lr`` at fraction ``t`` of the annealing."""
        if self._anneal_strategy == "cos":
            return (1 - math.cos(math.pi * t)) / 2
        return t

    @staticmethod
    def _get_initial_lr(lr, swa_lr, alpha):
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def get_lr(self):
        if not getattr(self, "_get_lr_called_within_step", False):
            warnings.warn("To get the last learning rate computed by the scheduler, please use "
                          "`get_last_lr()`.", UserWarning, stacklevel=2)
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        # undo the previous step's blend to find the rate the annealing started from
        prev_t = max(0, min(1, (step - 1) / max(1, self.anneal_epochs)))
        prev_alpha = self.anneal_func(prev_t)
        prev_lrs = [self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha)
                    for group in self.optimizer.param_groups]
        t = max(0, min(1, step / max(1, self.anneal_epochs)))
        alpha = self.anneal_func(t)
        return [group["swa_lr"] * alpha + lr * (1 - alpha)
                for group, lr in zip(self.optimizer.param_groups, prev_lrs, strict=True)]

"""Adam and AdamW (Adam with decoupled weight decay), with AMSGrad and maximize.

Example:
    >>> w = ddp.nn.Parameter(ddp.tensor([1.0]))
    >>> opt = ddp.optim.Adam([w], lr=0.1)
    >>> (w * w).sum().backward(); opt.step()
    >>> round(w.item(), 6)                   # Adam's first step moves by lr (times sign of grad)
    0.9
"""
from __future__ import annotations

from .. import backend, kernels
from ..kernels import optim as _kernels
from ..tensor import Tensor
from .optimizer import (Optimizer, advance_step, check_hyperparameters, grad_for_update, lerp_,
                        step_counter, zeros_state)

__all__ = ["Adam", "AdamW", "adam_update"]


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, *, lr, beta1, beta2, eps,
                weight_decay, amsgrad, maximize, decoupled_weight_decay, scratch=None):
    """One Adam/AdamW step on arrays, in place (PyTorch's single-tensor formulas and order)::

        param *= 1 - lr * weight_decay             (decoupled, AdamW)
        g = ±grad [+ weight_decay * param]         (coupled, Adam)
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
        max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)          (amsgrad)
        denom = sqrt(exp_avg_sq or max_exp_avg_sq) / sqrt(1 - beta2**step) + eps
        param += -(lr / (1 - beta1**step)) * exp_avg / denom

    ``step`` is the step number after incrementing (1 on the first step). ``max_exp_avg_sq`` is
    ``None`` unless ``amsgrad``. ``scratch`` is two arrays shaped like ``param``.

    Example:
        >>> p, z = np.ones(1, np.float32), np.zeros(1, np.float32)
        >>> adam_update(p, np.ones(1, np.float32), z, z.copy(), None, 1, lr=0.1, beta1=0.9,
        ...             beta2=0.999, eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
        ...             decoupled_weight_decay=False); p.round(6)
        array([0.9], dtype=float32)
    """
    if kernels.fits(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq):
        # one pass (ddp.kernels.optim), the same roundings: the MLP's 1.86M float32
        # parameters 7.25 -> 6.00 ms
        _kernels.adam_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1,
                       beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay)
        return
    xp = backend.get_array_module(param)
    t1, t2 = scratch if scratch is not None else (xp.empty_like(param), xp.empty_like(param))
    if weight_decay != 0 and decoupled_weight_decay:
        param *= 1 - lr * weight_decay
        weight_decay = 0
    g = grad_for_update(param, grad, weight_decay, maximize, t1)

    lerp_(exp_avg, g, 1 - beta1, t2)
    exp_avg_sq *= beta2
    xp.multiply(g, 1 - beta2, out=t2)
    t2 *= g
    exp_avg_sq += t2

    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
    step_size = lr / bias_correction1
    second = exp_avg_sq
    if amsgrad:
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second = max_exp_avg_sq
    denom = xp.sqrt(second, out=t2)
    denom /= bias_correction2_sqrt
    denom += eps
    update = xp.multiply(exp_avg, -step_size, out=t1)  # g (maybe in t1) is no longer needed
    update /= denom
    param += update


class Adam(Optimizer):
    """Adam (Kingma & Ba), as ``torch.optim.Adam``.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-3).
        betas: decay rates of the first and second moment averages (default (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default 1e-8).
        weight_decay: L2 penalty added to the gradient (default 0).
        amsgrad: use the maximum of past second moments (AMSGrad).
        maximize: maximize the objective instead of minimizing it.
        decoupled_weight_decay: decay the weights directly, as AdamW does.
        foreach, fused, capturable: accepted for compatibility; there is one implementation.
        differentiable: must be False.

    State per parameter: ``step`` (0-d float tensor), ``exp_avg``, ``exp_avg_sq`` and, with
    AMSGrad, ``max_exp_avg_sq``.

    Example:
        >>> model = ddp.nn.Linear(3, 1)
        >>> opt = ddp.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        check_hyperparameters(lr, eps=eps, betas=betas, weight_decay=weight_decay,
                              differentiable=differentiable)
        if not (all(isinstance(b, float) for b in betas)
                or all(isinstance(b, Tensor) for b in betas)):
            raise ValueError("betas must be either both floats or both Tensors")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _options(self, group):
        beta1, beta2 = group["betas"]
        return dict(lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                    eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                    amsgrad=bool(group["amsgrad"]), maximize=bool(group["maximize"]),
                    decoupled_weight_decay=bool(group["decoupled_weight_decay"]))

    def _update(self, p, options):
        state = self.state[p]
        if not state:
            state["step"] = step_counter()
            state["exp_avg"] = zeros_state(p)
            state["exp_avg_sq"] = zeros_state(p)
            if options["amsgrad"]:
                state["max_exp_avg_sq"] = zeros_state(p)
        step = advance_step(state["step"])
        max_sq = state["max_exp_avg_sq"]._data if options["amsgrad"] else None
        adam_update(p._data, p.grad._data, state["exp_avg"]._data, state["exp_avg_sq"]._data,
                    max_sq, step, scratch=self._scratch(p, 2), **options)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter): Adam whose weight decay shrinks the weights directly
    (``param *= 1 - lr * weight_decay``) instead of entering the gradient; default decay 1e-2.

    Takes the arguments of :class:`Adam` (without ``decoupled_weight_decay``).

    Example:
        >>> model = ddp.nn.Linear(3, 1)
        >>> opt = ddp.optim.AdamW(model.parameters(), lr=1e-3)
        >>> opt.param_groups[0]["weight_decay"]
        0.01
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=True)

    def _options(self, group):
        return dict(super()._options(group), decoupled_weight_decay=True)

"""NAdam (Adam with Nesterov momentum) and RAdam (Adam with a rectified adaptive step).

Example:
    >>> w = ddp.nn.Parameter(ddp.tensor([1.0]))
    >>> opt = ddp.optim.NAdam([w], lr=0.1)
    >>> (w * w).sum().backward(); opt.step()
    >>> w.item() < 1.0
    True
"""
from __future__ import annotations

from .. import backend
from .optimizer import (Optimizer, advance_step, check_hyperparameters, grad_for_update, lerp_,
                        step_counter, zeros_state)

__all__ = ["NAdam", "RAdam", "nadam_update", "radam_update"]


def _moments(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay, maximize,
             decoupled_weight_decay, t1, t2):
    """The part NAdam and RAdam share with Adam: weight decay (decoupled or into the gradient),
    then ``exp_avg.lerp_(g, 1 - beta1)`` and ``exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) g²``.
    Returns the gradient used (``grad`` itself or ``t1``); ``t2`` is scratch."""
    xp = backend.get_array_module(param)
    if weight_decay != 0 and decoupled_weight_decay:
        param *= 1 - lr * weight_decay
        weight_decay = 0
    g = grad_for_update(param, grad, weight_decay, maximize, t1)
    lerp_(exp_avg, g, 1 - beta1, t2)
    exp_avg_sq *= beta2
    xp.multiply(g, 1 - beta2, out=t2)
    t2 *= g
    exp_avg_sq += t2
    return g


def nadam_update(param, grad, exp_avg, exp_avg_sq, mu_product, step, *, lr, beta1, beta2, eps,
                 weight_decay, momentum_decay, decoupled_weight_decay, maximize, scratch=None):
    """One NAdam step on arrays, in place (PyTorch's single-tensor formulas and order)::

        mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay)),  mu_{t+1} likewise
        mu_product *= mu_t                          (a 0-d array, kept in its own dtype)
        (moments as Adam's)
        denom = sqrt(exp_avg_sq / (1 - beta2**t)) + eps
        param += -lr (1 - mu_t) / (1 - mu_product) * g / denom
        param += -lr mu_{t+1} / (1 - mu_product * mu_{t+1}) * exp_avg / denom

    ``step`` is the step number after incrementing; ``scratch`` two arrays shaped like ``param``.

    Example:
        >>> p, z = np.ones(1, np.float32), np.zeros(1, np.float32)
        >>> nadam_update(p, np.ones(1, np.float32), z, z.copy(), np.ones((), np.float32), 1,
        ...              lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0,
        ...              momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False)
        >>> p.round(4)
        array([0.8944], dtype=float32)
    """
    xp = backend.get_array_module(param)
    t1, t2 = scratch if scratch is not None else (xp.empty_like(param), xp.empty_like(param))
    bias_correction2 = 1 - beta2 ** step
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
    mu_product *= mu
    mu_product_value = float(mu_product)
    g = _moments(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay, maximize,
                 decoupled_weight_decay, t1, t2)

    denom = xp.divide(exp_avg_sq, bias_correction2, out=t2)
    xp.sqrt(denom, out=denom)
    denom += eps
    update = xp.multiply(g, -lr * (1.0 - mu) / (1.0 - mu_product_value), out=t1)
    update /= denom
    param += update
    update = xp.multiply(exp_avg, (-lr * mu_next) / (1.0 - mu_product_value * mu_next), out=t1)
    update /= denom
    param += update


def radam_update(param, grad, exp_avg, exp_avg_sq, step, *, lr, beta1, beta2, eps, weight_decay,
                 decoupled_weight_decay, maximize, scratch=None):
    """One RAdam step on arrays, in place (PyTorch's single-tensor formulas and order)::

        (moments as Adam's)
        rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)
        rho_t > 5:  param -= exp_avg / (1 - beta1**t) * lr * adaptive * rect, with
                    adaptive = sqrt(1 - beta2**t) / (sqrt(exp_avg_sq) + eps) and
                    rect = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        otherwise:  param -= exp_avg / (1 - beta1**t) * lr

    ``step`` is the step number after incrementing; ``scratch`` two arrays shaped like ``param``.

    Example:
        >>> p, z = np.ones(1, np.float32), np.zeros(1, np.float32)
        >>> radam_update(p, np.ones(1, np.float32), z, z.copy(), 1, lr=0.1, beta1=0.9,
        ...              beta2=0.999, eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
        ...              maximize=False); p.round(6)        # rho_1 = 1: an SGD-with-momentum step
        array([0.9], dtype=float32)
    """
    xp = backend.get_array_module(param)
    t1, t2 = scratch if scratch is not None else (xp.empty_like(param), xp.empty_like(param))
    _moments(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay, maximize,
             decoupled_weight_decay, t1, t2)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    update = xp.divide(exp_avg, bias_correction1, out=t1)
    update *= lr
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
    if rho_t > 5.0:
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        adaptive = xp.sqrt(exp_avg_sq, out=t2)
        adaptive += eps
        # PyTorch computes scalar / tensor as reciprocal(tensor) * scalar: the same roundings
        xp.reciprocal(adaptive, out=adaptive)
        adaptive *= bias_correction2 ** 0.5
        update *= adaptive
        update *= rect
    param -= update


class NAdam(Optimizer):
    """NAdam (Dozat): Adam with Nesterov momentum and a momentum schedule, as
    ``torch.optim.NAdam``.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 2e-3).
        betas: decay rates of the moment averages (default (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default 1e-8).
        weight_decay: L2 penalty (default 0).
        momentum_decay: the momentum schedule's decay psi (default 4e-3).
        decoupled_weight_decay: decay the weights directly, as AdamW does (NAdamW).
        maximize: maximize the objective instead of minimizing it.
        foreach, capturable: accepted for compatibility; there is one implementation.
        differentiable: must be False.

    State per parameter: ``step`` and ``mu_product`` (0-d float tensors on the CPU),
    ``exp_avg``, ``exp_avg_sq``.

    Example:
        >>> opt = ddp.optim.NAdam(ddp.nn.Linear(3, 1).parameters(), momentum_decay=4e-3)
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False):
        check_hyperparameters(lr, eps=eps, betas=betas, weight_decay=weight_decay,
                              momentum_decay=momentum_decay, differentiable=differentiable)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                        foreach=foreach, capturable=capturable, differentiable=differentiable)
        super().__init__(params, defaults)

    def _options(self, group):
        beta1, beta2 = group["betas"]
        return dict(lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                    eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                    momentum_decay=float(group["momentum_decay"]),
                    decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
                    maximize=bool(group["maximize"]))

    def _update(self, p, options):
        state = self.state[p]
        if not state:
            state["step"] = step_counter()
            state["mu_product"] = step_counter(1.0)
            state["exp_avg"] = zeros_state(p)
            state["exp_avg_sq"] = zeros_state(p)
        step = advance_step(state["step"])
        nadam_update(p._data, p.grad._data, state["exp_avg"]._data, state["exp_avg_sq"]._data,
                     state["mu_product"]._data, step, scratch=self._scratch(p, 2), **options)


class RAdam(Optimizer):
    """RAdam (Liu et al.): Adam whose adaptive step is rectified by the variance of its
    estimate (plain momentum SGD while that estimate is unreliable), as ``torch.optim.RAdam``.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-3).
        betas: decay rates of the moment averages (default (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default 1e-8).
        weight_decay: L2 penalty (default 0).
        decoupled_weight_decay: decay the weights directly, as AdamW does (RAdamW).
        maximize: maximize the objective instead of minimizing it.
        foreach, capturable: accepted for compatibility; there is one implementation.
        differentiable: must be False.

    State per parameter: ``step`` (0-d float tensor on the CPU), ``exp_avg``, ``exp_avg_sq``.

    Example:
        >>> opt = ddp.optim.RAdam(ddp.nn.Linear(3, 1).parameters(), lr=1e-3)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False):
        check_hyperparameters(lr, eps=eps, betas=betas, weight_decay=weight_decay,
                              differentiable=differentiable)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        maximize=maximize, foreach=foreach, capturable=capturable,
                        decoupled_weight_decay=decoupled_weight_decay,
                        differentiable=differentiable)
        super().__init__(params, defaults)

    def _options(self, group):
        beta1, beta2 = group["betas"]
        return dict(lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                    eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                    decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
                    maximize=bool(group["maximize"]))

    def _update(self, p, options):
        state = self.state[p]
        if not state:
            state["step"] = step_counter()
            state["exp_avg"] = zeros_state(p)
            state["exp_avg_sq"] = zeros_state(p)
        step = advance_step(state["step"])
        radam_update(p._data, p.grad._data, state["exp_avg"]._data, state["exp_avg_sq"]._data,
                     step, scratch=self._scratch(p, 2), **options)

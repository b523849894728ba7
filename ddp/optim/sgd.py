"""Stochastic gradient descent, with momentum, dampening, Nesterov momentum and weight decay.

Example:
    >>> w = ddp.nn.Parameter(ddp.tensor([1.0]))
    >>> opt = ddp.optim.SGD([w], lr=0.1, momentum=0.9)
    >>> for _ in range(2):
    ...     opt.zero_grad(); (w * w).sum().backward(); opt.step()
    >>> round(w.item(), 4)                      # 1 - 0.2 = 0.8, then 0.8 - 0.1 * (0.9*2 + 1.6)
    0.46
"""
from __future__ import annotations

from .. import backend, kernels
from ..kernels import optim as _kernels
from ..tensor import Tensor
from .optimizer import Optimizer, check_hyperparameters, grad_for_update

__all__ = ["SGD", "sgd_update"]


def sgd_update(param, grad, momentum_buffer, *, lr, momentum, dampening, nesterov,
               weight_decay, maximize, scratch=None):
    """One SGD step on arrays, in place (PyTorch's single-tensor formulas and order)::

        g = ±grad + weight_decay * param
        buf = g (first step), else buf = momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf           (when momentum != 0)
        param -= lr * g

    ``momentum_buffer`` is ``None`` before the first step; the buffer is returned (a new array
    then). ``scratch`` is two arrays shaped like ``param`` (allocated when ``None``).

    Example:
        >>> p = np.ones(2, np.float32)
        >>> buf = sgd_update(p, np.ones(2, np.float32), None, lr=0.5, momentum=0.9, dampening=0,
        ...                  nesterov=False, weight_decay=0, maximize=False)
        >>> p, buf
        (array([0.5, 0.5], dtype=float32), array([1., 1.], dtype=float32))
    """
    if kernels.fits(param, grad, momentum_buffer) and (momentum == 0 or
                                                       momentum_buffer is not None):
        # one pass (ddp.kernels.optim): the MLP's 1.86M float32 parameters 2.14 -> 0.89 ms
        _kernels.sgd_(param, grad, momentum_buffer, lr, momentum, dampening, nesterov,
                      weight_decay, maximize)
        return momentum_buffer
    xp = backend.get_array_module(param)
    t1, t2 = scratch if scratch is not None else (xp.empty_like(param), xp.empty_like(param))
    g = grad_for_update(param, grad, weight_decay, maximize, t1)
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = g.copy()
        else:
            momentum_buffer *= momentum
            if dampening == 0:
                momentum_buffer += g
            else:
                xp.multiply(g, 1 - dampening, out=t2)
                momentum_buffer += t2
        if nesterov:
            xp.multiply(momentum_buffer, momentum, out=t2)
            g = xp.add(g, t2, out=t2)
        else:
            g = momentum_buffer
    # param + (-lr) * g, as param - lr * g (negation is exact, so the rounding is the same)
    xp.multiply(g, lr, out=t2)
    param -= t2
    return momentum_buffer


class SGD(Optimizer):
    """Stochastic gradient descent (optionally with momentum), as ``torch.optim.SGD``.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-3).
        momentum: momentum factor (default 0).
        dampening: dampening of the momentum (default 0).
        weight_decay: L2 penalty added to the gradient (default 0).
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        maximize: maximize the objective instead of minimizing it.
        foreach, fused: accepted for compatibility; there is one implementation.
        differentiable: must be False (the update runs outside autograd).

    State per parameter: ``momentum_buffer`` (only when ``momentum != 0``).

    Example:
        >>> model = ddp.nn.Linear(3, 1)
        >>> opt = ddp.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False, foreach=None, differentiable=False, fused=None):
        check_hyperparameters(lr, momentum=momentum, weight_decay=weight_decay,
                              differentiable=differentiable)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach,
                        differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)

    def _options(self, group):
        return dict(lr=float(group["lr"]), momentum=float(group["momentum"]),
                    dampening=float(group["dampening"]), nesterov=bool(group["nesterov"]),
                    weight_decay=float(group["weight_decay"]), maximize=bool(group["maximize"]))

    def _update(self, p, options):
        # As in PyTorch, parameters get a state entry only when momentum is used.
        if options["momentum"] == 0:
            sgd_update(p._data, p.grad._data, None, scratch=self._scratch(p, 2), **options)
            return
        state = self.state[p]
        buf = state.get("momentum_buffer")
        new = sgd_update(p._data, p.grad._data, None if buf is None else buf._data,
                         scratch=self._scratch(p, 2), **options)
        if buf is None:
            state["momentum_buffer"] = Tensor._make(new)

